//! The stock CLIs (age, zstd) and file helpers tests share.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::*;

// ------------------------------------------------------------------ age / zstd CLIs

/// `age-keygen -o DIR/NAME.key`; returns (identity file, `age1...` recipient).
pub fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.key"));
    let _ = fs::remove_file(&path);
    run_ok(Command::new("age-keygen").arg("-o").arg(&path));
    let text = fs::read_to_string(&path).expect("read age identity");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap_or_else(|| panic!("no public key line in {}", path.display()))
        .trim()
        .to_string();
    assert!(
        recipient.starts_with("age1"),
        "unexpected recipient {recipient}"
    );
    (path, recipient)
}

/// `ssh-keygen -t ed25519 -f DIR/NAME` (no passphrase); returns (private key file, public
/// key line), for signing.
pub fn ssh_keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path),
    );
    let public = fs::read_to_string(path.with_extension("pub")).expect("read the public key");
    (path, public.trim().to_string())
}

/// Decrypts and decompresses with the stock CLIs: `age -d -i ID INPUT | zstd -d -o OUTPUT`.
/// Err carries both programs' exit codes and stderr.
pub fn age_zstd_decrypt(identity: &Path, input: &Path, output: &Path) -> Result<(), String> {
    let mut age = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run age: {e}"))?;
    let age_out = age.stdout.take().unwrap();
    let zstd = Command::new("zstd")
        .args(["-d", "-q", "-f", "-o"])
        .arg(output)
        .stdin(Stdio::from(age_out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run zstd: {e}"))?;
    let zstd_out = zstd.wait_with_output().map_err(|e| format!("zstd: {e}"))?;
    let age_res = age.wait_with_output().map_err(|e| format!("age: {e}"))?;
    if age_res.status.success() && zstd_out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "age -d exit {} stderr: {}\nzstd -d exit {} stderr: {}",
            status_code(&age_res.status),
            String::from_utf8_lossy(&age_res.stderr).trim(),
            status_code(&zstd_out.status),
            String::from_utf8_lossy(&zstd_out.stderr).trim()
        ))
    }
}

/// `age -d -i ID INPUT -o OUTPUT` (no decompression).
pub fn age_decrypt(identity: &Path, input: &Path, output: &Path) -> Result<(), String> {
    let out = run(Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg("-o")
        .arg(output)
        .arg(input));
    if out.status.success() {
        Ok(())
    } else {
        Err(describe_output(&out))
    }
}

/// Reads a whole file (panics with the path on error).
pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Creates a file with `len` deterministic pseudo-random bytes.
pub fn write_pseudo_random(path: &Path, len: usize, seed: u64) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut buf = Vec::with_capacity(1 << 16);
    let mut left = len;
    while left > 0 {
        buf.clear();
        while buf.len() < (1 << 16).min(left) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.extend_from_slice(&x.to_le_bytes());
        }
        buf.truncate((1 << 16).min(left));
        f.write_all(&buf).unwrap();
        left -= buf.len();
    }
}

// ------------------------------------------------------------------ the tool's output and targets

/// `list --json` of `config`, parsed.
pub fn list_json(fx: &super::fixture::Fixture, config: &Path) -> Vec<serde_json::Value> {
    let out = run_ok(fx.cmd(config).args(["list", "--json"]));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("list --json: {e}\n{}", describe_output(&out)))
}

/// Ids that a `list --json` output shows as complete, in its order (newest first).
pub fn complete_ids(listed: &[serde_json::Value]) -> Vec<String> {
    listed
        .iter()
        .filter(|b| b["complete"] == true)
        .map(|b| b["id"].as_str().expect("an id").to_string())
        .collect()
}

/// The last line of stdout, trimmed: the id that `backup` prints.
pub fn last_line(out: &std::process::Output) -> String {
    stdout_str(out)
        .lines()
        .last()
        .expect("the command prints a last line")
        .trim()
        .to_string()
}

/// Every regular file below `dir`, sorted; symbolic links are neither followed nor listed.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                out.extend(files_below(&entry.path()));
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// [`files_below`] as paths relative to `dir` (object keys of a file:// target).
pub fn relative_files(dir: &Path) -> std::collections::BTreeSet<String> {
    files_below(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Every `manifest.json` below `dir`.
pub fn manifests_below(dir: &Path) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| p.ends_with("manifest.json"))
        .collect()
}

// ------------------------------------------------------------------ proxies and metrics

/// The command with the proxy environment replaced.
pub fn with_proxy_env<'c>(
    cmd: &'c mut Command,
    proxy: &str,
    no_proxy: Option<&str>,
) -> &'c mut Command {
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HTTPS_PROXY", proxy).env("HTTP_PROXY", proxy);
    if let Some(no_proxy) = no_proxy {
        cmd.env("NO_PROXY", no_proxy);
    }
    cmd
}

/// A metrics textfile read by Prometheus' own text parser (as node_exporter reads it):
/// `name{label=value,...}` to value.
pub fn prometheus_samples(path: &Path) -> std::collections::BTreeMap<String, f64> {
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\nfor f in text_string_to_metric_families(open(sys.argv[1]).read()):\n    for s in f.samples:\n        labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n        print(s.name + ('{' + labels + '}' if labels else ''), s.value)\n";
    let out = run_ok(
        std::process::Command::new("python3")
            .args(["-c", script])
            .arg(path),
    );
    stdout_str(&out)
        .lines()
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// `promtool check metrics` reads the text format 0.0.4 with Prometheus' parser and lints
/// it (counter names, HELP lines); it must pass without a word.
pub fn promtool_check_metrics(path: &Path) {
    let text = std::fs::read(path).unwrap();
    let out = run_with_stdin(
        std::process::Command::new("promtool").args(["check", "metrics"]),
        &text,
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics {}:\n{}\n{}",
        path.display(),
        describe_output(&out),
        String::from_utf8_lossy(&text)
    );
}

/// `promtool check rules` on the PrometheusRule at `rules` (relative to the crate), then
/// `promtool test rules` with `tests/support/CASES_FILE` (which loads it as `rules.yaml`):
/// every alert must be tested firing and not firing.
pub fn promtool_test_rules(rules: &str, cases_file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rules)).unwrap();
    let resource: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(resource["kind"], "PrometheusRule");
    let mut spec = resource["spec"].clone();
    let full = dir.path().join("full.yaml");
    std::fs::write(&full, serde_yaml_ng::to_string(&spec).unwrap()).unwrap();
    run_ok(
        std::process::Command::new("promtool")
            .args(["check", "rules"])
            .arg(&full),
    );
    let groups = spec["groups"].as_sequence_mut().unwrap();
    let mut alerts = Vec::new();
    for group in groups {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            alerts.push(rule["alert"].as_str().unwrap().to_string());
            rule.as_mapping_mut().unwrap().remove("annotations");
        }
    }
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml_ng::to_string(&spec).unwrap(),
    )
    .unwrap();
    let tests = support_dir().join(cases_file);
    let cases = std::fs::read_to_string(&tests).unwrap();
    // Every alert is tested both ways: expected somewhere, and `exp_alerts: []` somewhere.
    for alert in &alerts {
        assert!(
            cases.contains(&format!("alertname: {alert}\n"))
                && cases.contains(&format!("alertname: {alert}, exp_alerts: []")),
            "{alert} is not tested firing and not firing in {}",
            tests.display()
        );
    }
    std::fs::copy(&tests, dir.path().join(cases_file)).unwrap();
    let out = run(std::process::Command::new("promtool")
        .args(["test", "rules", cases_file])
        .current_dir(dir.path()));
    assert!(out.status.success(), "{}", describe_output(&out));
    assert!(
        stdout_str(&out).contains("SUCCESS"),
        "{}",
        describe_output(&out)
    );
}
