//! Issue 20: what an installed binary tells about itself. `version` and `-V` name the
//! commit and the build date; the completion scripts load in bash, zsh and fish and
//! complete subcommands and their options; the man pages render with mandoc, groff and
//! man without a warning and name every subcommand. None of them reads a config.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The visible subcommands, as `--help` lists them (clap's own `help` left out).
fn subcommands() -> Vec<String> {
    let out = run_ok(tool().arg("--help"));
    let help = stdout_str(&out);
    let section = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_else(|| panic!("no Commands: section in --help:\n{help}"));
    let names: Vec<String> = section
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 12, "{names:?}");
    names
}

/// Runs `program` (a Debian package's tool that setup.sh installs); its absence fails.
fn installed(program: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{program}` is not installed: run `bash scripts/setup.sh` (Debian package of {program})"
    );
    Command::new(program)
}

/// `version`, `--version` and `-V` name the version, the commit this checkout is at and
/// the build date, read no config (a missing one is no error) and say the same in JSON.
#[test]
fn version_names_the_commit_and_build_date_without_a_config() {
    let missing = Path::new("/nonexistent/etcd-offsite.yaml");
    let out = run_ok(tool().arg("--config").arg(missing).arg("version"));
    let text = stdout_str(&out);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.starts_with(&format!("etcd-offsite {version}\n")),
        "{text}"
    );
    for label in [
        "commit:",
        "build date:",
        "etcd-client:",
        "object_store:",
        "age:",
    ] {
        assert!(text.contains(label), "{label} in {text}");
    }

    let json = run_ok(tool().args(["version", "--json"]));
    let facts: serde_json::Value = serde_json::from_slice(&json.stdout).expect("version --json");
    assert_eq!(facts["version"], version);
    let commit = facts["commit"].as_str().unwrap().to_owned();
    let date = facts["build_date"].as_str().unwrap().to_owned();
    assert!(
        chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").is_ok(),
        "{date}"
    );
    assert!(
        facts["object_store"]
            .as_str()
            .is_some_and(|v| v.starts_with("0.")),
        "{facts}"
    );
    // Built from this git checkout, the binary names the commit the checkout was at when
    // it was built: `git rev-parse --short` of HEAD (tests build after the last commit).
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output()
        .expect("git");
    if head.status.success() {
        assert_eq!(commit, stdout_str(&head).trim(), "the commit built in");
    } else {
        assert_eq!(commit, "unknown");
    }

    for flag in ["--version", "-V"] {
        let out = run_ok(tool().arg(flag));
        assert_eq!(
            stdout_str(&out).trim(),
            format!("etcd-offsite {version} (commit {commit}, built {date})")
        );
    }
}

/// The bash script loads in a clean bash, registers itself for `etcd-offsite`, and
/// completes a subcommand from its prefix, a nested one, a subcommand's own options
/// (the hyphenated-name bug of clap_complete fixed) and the shells `completions` takes.
#[test]
fn bash_completion_loads_and_completes_subcommands_and_their_options() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("etcd-offsite.bash");
    std::fs::write(&script, run_ok(tool().args(["completions", "bash"])).stdout).unwrap();
    // `complete_at WORDS...`: what TAB offers for the last word.
    let probe = format!(
        r#"source {script}
complete_at() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
  _etcd__offsite etcd-offsite "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
  echo "$*: ${{COMPREPLY[*]}}"; }}
complete -p etcd-offsite
complete_at etcd-offsite dri
complete_at etcd-offsite config ''
complete_at etcd-offsite drill --scr
complete_at etcd-offsite completions ''
complete_at etcd-offsite --log-format ''
"#,
        script = script.display()
    );
    let out = run_ok(installed("bash").args(["--norc", "--noprofile", "-c", &probe]));
    let lines: Vec<String> = stdout_str(&out).lines().map(str::to_owned).collect();
    assert!(
        lines[0].contains("-F _etcd__offsite") && lines[0].ends_with(" etcd-offsite"),
        "{lines:?}"
    );
    assert_eq!(lines[1], "etcd-offsite dri: drill");
    assert!(lines[2].ends_with(" check help"), "{lines:?}");
    assert_eq!(lines[3], "etcd-offsite drill --scr: --scratch-dir");
    assert!(lines[4].ends_with(" bash zsh fish"), "{lines:?}");
    assert_eq!(lines[5], "etcd-offsite --log-format : text json");
}

/// The zsh script parses (`zsh -n`) and compinit registers it for `etcd-offsite` from an
/// fpath directory, as a user installs it; the fish script parses (`fish -n`) and fish
/// completes a subcommand and an option from it.
#[test]
fn zsh_and_fish_completions_parse_and_register() {
    let dir = tempfile::tempdir().unwrap();
    let zsh = dir.path().join("_etcd-offsite");
    std::fs::write(&zsh, run_ok(tool().args(["completions", "zsh"])).stdout).unwrap();
    run_ok(installed("zsh").arg("-n").arg(&zsh));
    let out = run_ok(installed("zsh").args([
        "-f",
        "-c",
        &format!(
            "fpath=({} $fpath); autoload -Uz compinit; compinit -u -d {}/zcompdump; print -r -- $_comps[etcd-offsite]",
            dir.path().display(),
            dir.path().display()
        ),
    ]));
    assert_eq!(
        stdout_str(&out).trim(),
        "_etcd-offsite",
        "{}",
        describe_output(&out)
    );

    let fish = dir.path().join("etcd-offsite.fish");
    std::fs::write(&fish, run_ok(tool().args(["completions", "fish"])).stdout).unwrap();
    run_ok(installed("fish").arg("-n").arg(&fish));
    let out = run_ok(installed("fish").args([
        "--no-config",
        "-c",
        &format!(
            "source {}; complete -C'etcd-offsite dri'; complete -C'etcd-offsite drill --scr'",
            fish.display()
        ),
    ]));
    let text = stdout_str(&out);
    assert!(text.lines().any(|l| l.starts_with("drill\t")), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("--scratch-dir")),
        "{text}"
    );
}

/// `man -o DIR` writes etcd-offsite.1 and one page per subcommand; every page passes
/// `mandoc -T lint -W warning` and `groff -man -ww` without a message, `man -l` renders it
/// quietly, the main page names every subcommand, and `man` alone prints the main page.
#[test]
fn man_pages_render_without_warnings_and_name_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let out = run_ok(tool().arg("man").arg("-o").arg(&out_dir));
    let mut pages: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(
        stdout_str(&out).lines().count(),
        pages.len(),
        "one path printed per page"
    );
    let names = subcommands();
    for name in &names {
        assert!(
            pages.contains(&format!("etcd-offsite-{name}.1")),
            "{name} in {pages:?}"
        );
    }
    assert!(pages.contains(&"etcd-offsite.1".to_owned()));
    assert!(pages.contains(&"etcd-offsite-config-check.1".to_owned()));

    for page in &pages {
        let path = out_dir.join(page);
        let lint = run(installed("mandoc")
            .args(["-T", "lint", "-W", "warning"])
            .arg(&path));
        assert!(
            lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
            "mandoc on {page}:\n{}",
            describe_output(&lint)
        );
        let groff = run(installed("groff").args(["-man", "-ww", "-z"]).arg(&path));
        assert!(
            groff.status.success() && groff.stderr.is_empty(),
            "groff on {page}:\n{}",
            describe_output(&groff)
        );
        let man = run(installed("man")
            .arg("-l")
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0"));
        assert!(
            man.status.success() && man.stderr.is_empty() && !man.stdout.is_empty(),
            "man -l {page}:\n{}",
            describe_output(&man)
        );
    }

    let main = run_ok(
        installed("man")
            .arg("-l")
            .arg(out_dir.join("etcd-offsite.1"))
            .env("MANWIDTH", "200"),
    );
    let rendered = stdout_str(&main);
    for name in &names {
        assert!(
            rendered.contains(&format!("etcd-offsite-{name}(1)")),
            "the main page names {name}:\n{rendered}"
        );
    }
    let printed = run_ok(tool().arg("man"));
    assert_eq!(
        printed.stdout,
        std::fs::read(out_dir.join("etcd-offsite.1")).unwrap(),
        "`man` prints the page `man -o` writes"
    );
}
