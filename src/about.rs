//! What the binary tells about itself, from the build (build.rs) and the command-line
//! definition alone: `version`, `completions bash|zsh|fish` and `man`. None reads a config.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use serde::Serialize;

use crate::cli::{AboutCommand, Cli, CompletionShell};
use crate::telemetry::outln;

/// The build facts `version` prints (set by build.rs).
#[derive(Debug, Serialize)]
struct BuildInfo {
    version: &'static str,
    commit: &'static str,
    build_date: &'static str,
    etcd_client: &'static str,
    object_store: &'static str,
    age: &'static str,
}

const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    commit: env!("ETCD_OFFSITE_GIT_COMMIT"),
    build_date: env!("ETCD_OFFSITE_BUILD_DATE"),
    etcd_client: env!("ETCD_OFFSITE_ETCD_CLIENT_VERSION"),
    object_store: env!("ETCD_OFFSITE_OBJECT_STORE_VERSION"),
    age: env!("ETCD_OFFSITE_AGE_VERSION"),
};

/// The binary's name, as the command-line definition spells it.
const BIN: &str = "etcd-offsite";

/// Runs one of the commands that need no settings.
pub fn run(command: &AboutCommand) -> anyhow::Result<()> {
    match command {
        AboutCommand::Version { json } => {
            version(*json);
            Ok(())
        }
        AboutCommand::Completions { shell } => completions(*shell),
        AboutCommand::Man { out_dir: None } => {
            let page = render_page(Cli::command().disable_help_subcommand(true))?;
            write_stdout(&page)
        }
        AboutCommand::Man { out_dir: Some(dir) } => {
            for path in write_man_pages(dir)? {
                outln!("{}", path.display());
            }
            Ok(())
        }
    }
}

fn version(json: bool) {
    if json {
        match serde_json::to_string(&BUILD) {
            Ok(line) => outln!("{line}"),
            Err(e) => tracing::error!(error = %e, "cannot print the build facts as JSON"),
        }
        return;
    }
    let b = &BUILD;
    outln!("{BIN} {}", b.version);
    outln!("commit:       {}", b.commit);
    outln!("build date:   {}", b.build_date);
    outln!("etcd-client:  {}", b.etcd_client);
    outln!("object_store: {}", b.object_store);
    outln!("age:          {}", b.age);
}

fn completions(shell: CompletionShell) -> anyhow::Result<()> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut script);
    if shell == clap_complete::Shell::Bash {
        script = bash_hyphen_fix(&script);
    }
    write_stdout(&script)
}

/// clap_complete's bash script (4.6.12) spells a subcommand's state `etcd__offsite__subcmd__X`
/// where it is computed and `etcd__subcmd__offsite__subcmd__X` where it is matched, so no
/// subcommand's options ever complete for a binary with a hyphen in its name
/// (clap-rs/clap#6421): the matching side is spelled the way it is computed.
fn bash_hyphen_fix(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("etcd__subcmd__offsite", "etcd__offsite")
        .into_bytes()
}

/// The whole of `bytes` on stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

/// One page in roff, dated with the build date and naming this version.
fn render_page(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .date(BUILD.build_date)
        .source(format!("{BIN} {}", BUILD.version))
        .manual("etcd-offsite manual")
        .render(&mut page)
        .context("cannot render the man page")?;
    let page = String::from_utf8(page).context("the rendered man page is not UTF-8")?;
    Ok(portable_roff(&page).into_bytes())
}

/// clap_mangen's roff made clean for mandoc's and groff's warning levels: the break-blank-break
/// it puts before "Possible values" becomes one `.sp`, and non-ASCII characters (the `→` in
/// the description) become `\[uXXXX]` escapes, which groff reads without `preconv`.
fn portable_roff(page: &str) -> String {
    let page = page
        .replace("\n.br\n\n.br\n", "\n.sp\n")
        .replace("\n\n.br\n", "\n.sp\n");
    let mut out = String::with_capacity(page.len());
    for c in page.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

/// Every page (the program's and one per subcommand, `etcd-offsite-config-check.1` for
/// nested ones) into `dir`, each written under a temporary name and renamed into place,
/// so a reader never sees half a page. Returns the paths written.
fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create {}: name a directory this user can write with -o",
            dir.display()
        )
    })?;
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    collect_pages(root, &mut pages);
    let mut written = Vec::new();
    for cmd in pages {
        let name = format!("{}.1", cmd.get_display_name().unwrap_or(cmd.get_name()));
        let page = render_page(cmd)?;
        let path = dir.join(&name);
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::write(&partial, &page)
            .and_then(|()| std::fs::rename(&partial, &path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&partial);
            })
            .with_context(|| {
                format!(
                    "cannot write {}: name a directory this user can write with -o",
                    path.display()
                )
            })?;
        written.push(path);
    }
    Ok(written)
}

/// The command and its visible subcommands, depth first, parents before children.
fn collect_pages(cmd: clap::Command, pages: &mut Vec<clap::Command>) {
    let subcommands: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    pages.push(cmd);
    for sub in subcommands {
        collect_pages(sub, pages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_gets_a_page_named_after_its_path() {
        let dir = crate::scratch_dir();
        let written = write_man_pages(dir.path()).expect("pages written");
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "etcd-offsite.1",
            "etcd-offsite-backup.1",
            "etcd-offsite-config.1",
            "etcd-offsite-config-check.1",
            "etcd-offsite-version.1",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        // Nothing half-written is left beside them.
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn roff_is_ascii_without_doubled_breaks() {
        let page = portable_roff("a → b\nLog\n.br\n\n.br\nPossible\n<X>\n\n.br\nnext\n");
        assert_eq!(page, "a \\[u2192] b\nLog\n.sp\nPossible\n<X>\n.sp\nnext\n");
    }

    #[test]
    fn build_facts_are_filled_in() {
        assert!(!BUILD.commit.is_empty());
        assert_eq!(BUILD.build_date.len(), 10, "{}", BUILD.build_date);
        assert!(
            BUILD.object_store.starts_with("0."),
            "{}",
            BUILD.object_store
        );
    }
}
