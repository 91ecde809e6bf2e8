//! Issue 11: hardening. Keys archives that are never silently broken, no secret in any
//! output, a metrics endpoint that idle connections cannot starve, and durations out of
//! range as config errors instead of panics.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::fixture::Fixture;
use common::*;

/// Asserts exit code 2 (never 101, a panic) and that stderr names `key`.
fn assert_config_error(out: &Output, key: &str) {
    assert_eq!(exit_code(out), 2, "{}", describe_output(out));
    assert!(
        stderr_str(out).contains(key),
        "stderr does not name `{key}`\n{}",
        describe_output(out)
    );
    assert!(
        !stderr_str(out).contains("panicked"),
        "{}",
        describe_output(out)
    );
}

// ------------------------------------------------------------------ durations

#[test]
fn durations_out_of_range_are_config_errors_not_panics() {
    let etcd = EtcdServer::start(false);
    etcd.put("/registry/configmaps/default/a", "a");
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, "");
    let limit = Duration::from_secs(60);

    let out = run_within(
        fx.cmd(&config)
            .args(["backup", "--skip-if-newer-than", "300000y"]),
        limit,
    );
    assert_config_error(&out, "--skip-if-newer-than");

    let source = fx.etcd_source_for(&etcd);
    let (_, url) = fx.file_url("backups");
    let targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let cases: [(&str, String, &[&str]); 6] = [
        (
            "retention.incomplete_grace",
            "retention: { keep_last: 2, incomplete_grace: 300000y }\n".into(),
            &["backup"],
        ),
        (
            "retention.incomplete_grace",
            "retention: { keep_last: 2, incomplete_grace: 300000y }\n".into(),
            &["prune"],
        ),
        (
            "retention.keep_within",
            "retention: { keep_within: 300000y }\n".into(),
            &["prune", "--dry-run"],
        ),
        (
            "schedule.jitter",
            "schedule: { cron: \"0 3 * * *\", jitter: 300000y }\n".into(),
            &["run", "--metrics-listen", "127.0.0.1:0"],
        ),
        (
            "schedule.upgrade_check",
            "schedule: { cron: \"0 3 * * *\", upgrade_check: 300000y }\n".into(),
            &["run", "--metrics-listen", "127.0.0.1:0"],
        ),
        ("source.etcd.timeout", String::new(), &["backup"]),
    ];
    for (key, extra, args) in cases {
        let source = if key == "source.etcd.timeout" {
            source.replace("timeout: 5s", "timeout: 300000y")
        } else {
            source.clone()
        };
        let config = fx.write_config("durations.yaml", &source, &targets, &extra);
        let out = run_within(fx.cmd(&config).args(args), limit);
        assert_config_error(&out, key);
    }
    // Nothing was committed by any of them (the grace used to panic after the commit).
    let listed: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(listed.is_empty(), "backups written: {listed:?}");
}

// ------------------------------------------------------------------ secrets

/// Asserts that none of `secrets` (nor their upper- or lower-case forms) is in stdout or stderr.
fn assert_no_secret(out: &Output, secrets: &[&str], context: &str) {
    let text = format!("{}\n{}", stdout_str(out), stderr_str(out));
    let folded = text.to_ascii_lowercase();
    for secret in secrets {
        assert!(
            !folded.contains(&secret.to_ascii_lowercase()),
            "{context}: secret {secret:.12}… printed\n{}",
            describe_output(out)
        );
    }
}

/// The identity's secret line, and the part of it after the fixed prefix.
fn secret_of(identity_file: &Path) -> String {
    std::fs::read_to_string(identity_file)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .expect("an identity line")
        .to_string()
}

#[test]
fn identities_in_recipients_exit_2_without_the_secret() {
    let etcd = EtcdServer::start(false);
    let fx = Fixture::new();
    let secret = secret_of(&fx.snapshot_key);
    let body = secret["AGE-SECRET-KEY-1".len()..].to_string();
    let lower = secret.to_ascii_lowercase();
    let (_, url) = fx.file_url("backups");
    let targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let source = fx.etcd_source_for(&etcd);
    let template = fx.write_config("template.yaml", &source, &targets, "");
    let template = std::fs::read_to_string(template).unwrap();
    let recipient_line = format!("recipients: [\"{}\"]", fx.snapshot_recipient);
    assert!(template.contains(&recipient_line));

    // In the recipients list: upper and lower case, a byte-order mark, quotes, whitespace.
    let inline = [
        secret.clone(),
        lower.clone(),
        format!("\\ufeff{secret}"),
        format!("\\ufeff{lower}"),
        format!("\\\"{lower}\\\""),
        format!("'{secret}'"),
        format!("  {lower}\\t "),
    ];
    for (i, variant) in inline.iter().enumerate() {
        let text = template.replace(
            &recipient_line,
            &format!("recipients: [\"{}\", \"{variant}\"]", fx.snapshot_recipient),
        );
        let config = fx.path(&format!("inline-{i}.yaml"));
        std::fs::write(&config, text).unwrap();
        for args in [
            &["backup"][..],
            &["config", "check"][..],
            &["-v", "--log-format", "json", "backup"][..],
        ] {
            let out = run_within(fx.cmd(&config).args(args), Duration::from_secs(60));
            assert_config_error(&out, "encryption.snapshot.recipients[1]");
            assert_no_secret(&out, &[&body], &format!("inline case {i} {args:?}"));
        }
    }

    // In a recipients file: the age-keygen output itself, a BOM, quotes, and a PEM key.
    let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";
    let files = [
        (std::fs::read_to_string(&fx.snapshot_key).unwrap(), "line 3"),
        (format!("\u{feff}{lower}\n"), "line 1"),
        (format!("# keys\n\"{secret}\"\n"), "line 2"),
        (format!("{}\n{pem}", fx.snapshot_recipient), "line 2"),
    ];
    for (i, (content, line)) in files.iter().enumerate() {
        let file = fx.path(&format!("recipients-{i}.txt"));
        std::fs::write(&file, content).unwrap();
        let text = template.replace(
            &recipient_line,
            &format!("recipients_file: {}", file.display()),
        );
        let config = fx.path(&format!("file-{i}.yaml"));
        std::fs::write(&config, text).unwrap();
        let out = run_within(fx.cmd(&config).arg("backup"), Duration::from_secs(60));
        assert_config_error(&out, "encryption.snapshot.recipients_file");
        assert!(stderr_str(&out).contains(line), "{}", describe_output(&out));
        assert_no_secret(
            &out,
            &[&body, "b3BlbnNzaC1rZXkt"],
            &format!("file case {i}"),
        );
    }
}

// ------------------------------------------------------------------ keys archive

/// Complete backups listed by `list --json`.
fn listed_complete(fx: &Fixture, config: &Path) -> Vec<String> {
    let out = run_ok(fx.cmd(config).args(["list", "--json"]));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .unwrap()
        .iter()
        .filter(|b| b["complete"] == true)
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// `age -d | zstd -d` of a backup's keys archive, then `tar -t` over it: the member names.
fn keys_archive_members(fx: &Fixture, dir: &Path, id: &str) -> Result<Vec<String>, String> {
    let stored = dir
        .join("test")
        .join(id)
        .join("static_kuberesources.tar.zst.age");
    let plain = fx.path(&format!("{id}.tar"));
    age_zstd_decrypt(&fx.static_key, &stored, &plain)?;
    let out = run(Command::new("tar").arg("-tf").arg(&plain));
    if !out.status.success() {
        return Err(describe_output(&out));
    }
    Ok(stdout_str(&out).lines().map(str::to_string).collect())
}

#[test]
fn a_file_appended_to_during_backups_never_yields_a_broken_listed_keys_archive() {
    let etcd = EtcdServer::start(false);
    etcd.load(200, 200);
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, "");
    // A log-like file under the static resources that a writer keeps appending to, in bursts
    // (so a re-read can land in a quiet moment) and shrinking now and then.
    let growing = fx.static_dir.join("secrets/audit.log");
    std::fs::write(&growing, vec![b'a'; 1 << 20]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, growing) = (stop.clone(), growing.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&growing)
                .unwrap();
            let mut appends = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let burst = Instant::now();
                while burst.elapsed() < Duration::from_millis(100) {
                    file.write_all(&[b'b'; 8192]).unwrap();
                    appends += 1;
                    if file.metadata().unwrap().len() > 4 << 20 {
                        file.set_len(1 << 20).unwrap();
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            appends
        })
    };
    let (mut outcomes, mut rereads) = (Vec::new(), 0);
    for _ in 0..8 {
        let out = run_within(
            fx.cmd(&config).args(["-v", "backup", "--no-prune"]),
            Duration::from_secs(120),
        );
        rereads += stderr_str(&out).matches("reading it again").count();
        match exit_code(&out) {
            0 => outcomes.push(true),
            1 => {
                // A failed backup says which file and why, and lists nothing.
                assert!(
                    stderr_str(&out).contains("audit.log")
                        && stderr_str(&out).contains("kept changing"),
                    "{}",
                    describe_output(&out)
                );
                outcomes.push(false);
            }
            _ => panic!("unexpected exit\n{}", describe_output(&out)),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appends = writer.join().unwrap();
    assert!(appends > 100, "the writer barely ran ({appends} appends)");

    eprintln!(
        "backups under the writer: {outcomes:?} (true = listed), {rereads} re-reads, {appends} appends"
    );
    let listed = listed_complete(&fx, &config);
    let succeeded = outcomes.iter().filter(|ok| **ok).count();
    assert_eq!(
        listed.len(),
        succeeded,
        "listed {listed:?}, outcomes {outcomes:?}"
    );
    assert!(
        succeeded > 0,
        "no backup succeeded under the writer: {outcomes:?}"
    );
    for id in &listed {
        let members = keys_archive_members(&fx, &dir, id)
            .unwrap_or_else(|e| panic!("keys archive of listed backup {id} does not read: {e}"));
        assert!(
            members.iter().any(|m| m.ends_with("secrets/audit.log")),
            "{id}: {members:?}"
        );
        assert!(
            members
                .iter()
                .any(|m| m.ends_with("secrets/encryption-config")),
            "{id}: {members:?}"
        );
    }
    // The tool's own deep verify agrees.
    let mut verify = fx.cmd(&config);
    verify.args(["verify", "--all"]).args(fx.identity_args());
    run_ok(&mut verify);
}

// ------------------------------------------------------------------ metrics endpoint

/// Open descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
}

/// The server has closed this never-used connection (EOF, reset, or a final error reply).
fn closed_by_server(mut stream: &std::net::TcpStream) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        // EOF (0) or a final reply before the close: either way the server let go.
        Ok(0 | 1..) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn idle_connections_cannot_starve_the_metrics_endpoint() {
    let etcd = EtcdServer::start(false);
    let fx = Fixture::new();
    let (_, config) = fx.dir_config(&etcd, "schedule: { cron: \"0 3 1 1 *\" }\n");
    let port = free_port();
    let mut cmd = fx.cmd(&config);
    cmd.args(["run", "--metrics-listen", &format!("127.0.0.1:{port}")]);
    let mut service = Service::spawn("etcd-offsite run", cmd, &fx.path("run.log"));
    service.wait_ready(Duration::from_secs(30), "the metrics endpoint", || {
        port_open(port)
    });
    let pid = service.pid().expect("running");
    let url = format!("http://127.0.0.1:{port}/metrics");
    assert_eq!(http("GET", &url, &[], b"").status, 200);
    let fds_before = fd_count(pid);

    // 200 clients that connect and never send a byte.
    let flood_started = Instant::now();
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let fds_during = fd_count(pid);
    assert!(
        fds_during <= fds_before + 64 + 4,
        "the endpoint holds {} descriptors more than before the flood (limit 64)",
        fds_during - fds_before
    );
    let open_now = idle.iter().filter(|s| !closed_by_server(s)).count();
    assert!(open_now <= 64, "{open_now} idle connections held, limit 64");

    // The held ones are closed after the header timeout (5 s), not kept forever.
    let all_closed = wait_until(Duration::from_secs(15), || {
        idle.iter().all(closed_by_server)
    });
    assert!(
        all_closed,
        "idle connections still open after {:?}",
        flood_started.elapsed()
    );
    drop(idle);

    // Afterwards /metrics answers promptly, and the descriptors are back.
    let asked = Instant::now();
    let response = http("GET", &url, &[], b"");
    assert_eq!(response.status, 200);
    assert!(
        response
            .text()
            .contains("etcd_offsite_backups_complete{cluster=\"test\",command=\"run\"} 0"),
        "{}",
        response.text()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "/metrics took {:?}",
        asked.elapsed()
    );
    assert!(
        fd_count(pid) <= fds_before + 2,
        "descriptors not released: {} before, {} after",
        fds_before,
        fd_count(pid)
    );
    assert_eq!(
        http("GET", &format!("http://127.0.0.1:{port}/"), &[], b"").status,
        404
    );
    assert!(service.is_running(), "{}", service.log_tail(20));
}

// ------------------------------------------------------------------ secret scan

/// Every regular file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push((path.clone(), read(&path)));
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[test]
fn no_planted_secret_in_any_output_and_no_plaintext_in_any_stored_object() {
    let etcd = EtcdServer::start(true);
    let tls = etcd.tls().expect("tls").clone();
    let moto = Moto::start();
    moto.create_bucket("keys");
    let fx = Fixture::new();

    // Plaintext markers: in etcd (key and value) and in the static resources.
    let etcd_marker = "PLAINTEXT-MARKER-ETCD-7f3a9c";
    let static_marker = "PLAINTEXT-MARKER-STATIC-51bd20";
    etcd.load(300, 200);
    etcd.put(
        &format!("/registry/secrets/default/{etcd_marker}"),
        etcd_marker,
    );
    std::fs::write(
        fx.static_dir.join("secrets/encryption-config"),
        format!("kind: EncryptionConfiguration\nsecret: {static_marker}\n"),
    )
    .unwrap();

    // Secrets: both age identities, a cloud secret in the target options, the etcd client key.
    let cloud_secret = "FAKE-CLOUD-SECRET-0c1d2e3f4a5b6c7d8e9f";
    let client_key = std::fs::read_to_string(&tls.client_key).unwrap();
    let key_lines: Vec<String> = client_key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(str::to_string)
        .collect();
    assert!(!key_lines.is_empty(), "client key PEM has a body");
    let snapshot_secret = secret_of(&fx.snapshot_key);
    let static_secret = secret_of(&fx.static_key);
    let mut secrets: Vec<&str> = vec![
        &snapshot_secret["AGE-SECRET-KEY-1".len()..],
        &static_secret["AGE-SECRET-KEY-1".len()..],
        cloud_secret,
    ];
    secrets.extend(key_lines.iter().map(String::as_str));

    let s3 = |bucket: &str| {
        format!(
            "{{ url: \"s3://{bucket}/etcd\", options: {{ aws_endpoint: \"{}\", aws_allow_http: \"true\", aws_region: us-east-1, aws_access_key_id: AKIDPLANTED, aws_secret_access_key: \"{cloud_secret}\", aws_virtual_hosted_style_request: \"false\" }} }}",
            moto.endpoint()
        )
    };
    let (dir, url) = fx.file_url("backups");
    let source = fx.etcd_source_for(&etcd);
    let targets = format!(
        "  snapshot: {{ url: \"{url}\" }}\n  static_resources: {}\n",
        s3("keys")
    );
    let config = fx.write_config("config.yaml", &source, &targets, "");
    let missing_bucket = fx.write_config(
        "missing-bucket.yaml",
        &source,
        &format!(
            "  snapshot: {{ url: \"{url}\" }}\n  static_resources: {}\n",
            s3("no-such-bucket")
        ),
        "",
    );
    let dead_etcd = fx.write_config(
        "dead-etcd.yaml",
        &source.replace(
            &etcd.endpoint(),
            &format!("https://127.0.0.1:{}", free_port()),
        ),
        &targets,
        "",
    );
    let (wrong_key, _) = age_keygen(&fx.path(""), "wrong");
    let restore_to = fx.path("restored");

    let id_args = fx.identity_args();
    let logs: [&[&str]; 3] = [&["-v"], &["-vv"], &["-v", "--log-format", "json"]];
    let mut outputs: Vec<(String, Output)> = Vec::new();
    let record = |outputs: &mut Vec<(String, Output)>,
                  what: &str,
                  config: &Path,
                  args: &[&str],
                  expect: Option<i32>| {
        for log in logs {
            let mut cmd = fx.cmd(config);
            cmd.args(log).args(args);
            let out = run_within(&mut cmd, Duration::from_secs(120));
            if let Some(code) = expect {
                assert_eq!(exit_code(&out), code, "{what}\n{}", describe_output(&out));
            }
            assert_ne!(
                exit_code(&out),
                101,
                "{what} panicked\n{}",
                describe_output(&out)
            );
            outputs.push((format!("{what} {log:?}"), out));
        }
    };
    record(&mut outputs, "backup", &config, &["backup"], Some(0));
    record(
        &mut outputs,
        "backup --json",
        &config,
        &["backup", "--json", "--no-prune"],
        Some(0),
    );
    record(
        &mut outputs,
        "config check --connect",
        &config,
        &["config", "check", "--connect"],
        Some(0),
    );
    record(&mut outputs, "list", &config, &["list"], Some(0));
    record(
        &mut outputs,
        "prune --dry-run",
        &config,
        &["prune", "--dry-run"],
        None,
    );
    record(
        &mut outputs,
        "list --json",
        &config,
        &["list", "--json"],
        Some(0),
    );
    let verify: Vec<&str> = ["verify", "--all"]
        .into_iter()
        .chain(id_args.iter().map(String::as_str))
        .collect();
    record(&mut outputs, "verify", &config, &verify, Some(0));
    let restore_args = |to: &Path| -> Vec<String> {
        let mut args: Vec<String> = vec!["restore".into(), "--latest".into(), "--to".into()];
        args.push(to.display().to_string());
        args.extend(id_args.iter().cloned());
        args
    };
    for (i, log) in logs.iter().enumerate() {
        let to = restore_to.join(i.to_string());
        let mut cmd = fx.cmd(&config);
        cmd.args(*log).args(restore_args(&to));
        let out = run_within(&mut cmd, Duration::from_secs(120));
        assert_eq!(exit_code(&out), 0, "restore\n{}", describe_output(&out));
        outputs.push((format!("restore {log:?}"), out));
    }
    // Error paths.
    let wrong = wrong_key.display().to_string();
    record(
        &mut outputs,
        "verify, wrong identity",
        &config,
        &["verify", "--latest", "--identity", &wrong],
        None,
    );
    let only_snapshot = fx.snapshot_key.display().to_string();
    let to = restore_to.join("partial").display().to_string();
    record(
        &mut outputs,
        "restore, keys identity missing",
        &config,
        &[
            "restore",
            "--latest",
            "--to",
            &to,
            "--identity",
            &only_snapshot,
        ],
        None,
    );
    let secret_as_identity = fx.path("secret-as-identity.txt");
    std::fs::write(&secret_as_identity, format!("\"{snapshot_secret}\"\n")).unwrap();
    let bad_identity = secret_as_identity.display().to_string();
    record(
        &mut outputs,
        "verify, quoted identity",
        &config,
        &["verify", "--latest", "--identity", &bad_identity],
        Some(2),
    );
    record(
        &mut outputs,
        "backup, missing bucket",
        &missing_bucket,
        &["backup"],
        Some(1),
    );
    record(
        &mut outputs,
        "backup, etcd down",
        &dead_etcd,
        &["backup"],
        Some(1),
    );

    for (what, out) in &outputs {
        assert_no_secret(out, &secrets, what);
    }
    // The scan reads real output: the manifests printed by `backup --json` name the public keys.
    assert!(
        outputs
            .iter()
            .any(|(_, out)| stdout_str(out).contains(&fx.static_recipient)),
        "no output names the keys recipient"
    );

    // No plaintext marker in any stored object, on either target.
    let mut stored = files_under(&dir);
    for key in moto.list_keys("keys", "") {
        let bytes = moto.get_object("keys", &key).expect("listed object");
        stored.push((key.into(), bytes));
    }
    assert!(
        stored.len() >= 6,
        "{:?}",
        stored.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    for (path, bytes) in &stored {
        for needle in [etcd_marker, static_marker].iter().chain(secrets.iter()) {
            assert!(
                !contains(bytes, needle),
                "{} holds {needle:.24}…",
                path.display()
            );
        }
    }
    // The markers were really backed up: they come back after decryption.
    let restored = files_under(&restore_to.join("0"));
    assert!(
        restored.iter().any(|(_, b)| contains(b, etcd_marker)),
        "etcd marker restored"
    );
}

// ------------------------------------------------------------------ signed manifests

/// `ssh-keygen -t ed25519` in `dir`: (private key file, public key line).
fn backup_id(fx: &Fixture, config: &Path) -> String {
    let out = run_ok(fx.cmd(config).args(["backup", "--no-prune"]));
    stdout_str(&out).lines().last().unwrap().to_string()
}

fn manifest_json(dir: &Path, id: &str) -> serde_json::Value {
    serde_json::from_slice(&read(&dir.join("test").join(id).join("manifest.json"))).unwrap()
}

#[test]
fn signed_manifests_verify_with_ssh_keygen_and_planted_backups_are_refused() {
    let etcd = EtcdServer::start(false);
    etcd.load(100, 100);
    let fx = Fixture::new();
    let (key, public) = ssh_keypair(fx.dir.path(), "signer");
    let (other_key, _) = ssh_keypair(fx.dir.path(), "intruder");
    let allowed = fx.path("allowed_signers");
    std::fs::write(&allowed, format!("backups@prod {public}\n")).unwrap();
    let (dir, url) = fx.file_url("backups");
    let source = fx.etcd_source_for(&etcd);
    let targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let signing = |key: Option<&Path>| {
        let key = key.map_or(String::new(), |k| format!("key: {}, ", k.display()));
        format!(
            "signing: {{ {key}allowed_signers: {} }}\n",
            allowed.display()
        )
    };
    let signed = fx.write_config("signed.yaml", &source, &targets, &signing(Some(&key)));
    let reader_only = fx.write_config("reader.yaml", &source, &targets, &signing(None));
    let intruder = fx.write_config(
        "intruder.yaml",
        &source,
        &targets,
        &signing(Some(&other_key)),
    );
    let trusting = fx.write_config("trusting.yaml", &source, &targets, "");
    let ids = fx.identity_args();
    let verify = |config: &Path, id: &str, code: i32| -> Output {
        let mut cmd = fx.cmd(config);
        cmd.args(["verify", id]).args(&ids);
        run_code(&mut cmd, code)
    };

    let a = backup_id(&fx, &signed);
    etcd.put("/registry/configmaps/default/later", "later");
    let b = backup_id(&fx, &signed);
    let a_dir = dir.join("test").join(&a);
    assert!(a_dir.join("manifest.json.sig").is_file());

    // Stock OpenSSH accepts the signature; the wrong principal or namespace does not.
    let ssh_verify = |principal: &str, namespace: &str| {
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-Y", "verify", "-f"])
            .arg(&allowed)
            .args(["-I", principal, "-n", namespace, "-s"])
            .arg(a_dir.join("manifest.json.sig"));
        exit_code(&run_with_stdin(
            &mut cmd,
            &read(&a_dir.join("manifest.json")),
        ))
    };
    assert_eq!(ssh_verify("backups@prod", "etcd-offsite"), 0);
    assert_ne!(ssh_verify("backups@prod", "git"), 0);
    assert_ne!(ssh_verify("someone@else", "etcd-offsite"), 0);

    verify(&signed, &a, 0);
    verify(&reader_only, &b, 0);

    // Planted 1: a copy of a genuine manifest under another (newer) id, signature copied too.
    let planted = "20991231T235959Z";
    let planted_dir = dir.join("test").join(planted);
    std::fs::create_dir_all(&planted_dir).unwrap();
    let mut copied = manifest_json(&dir, &a);
    copied["id"] = planted.into();
    // Self-consistent: the artifacts copied too, and the keys rewritten to the planted id
    // (a manifest whose keys point into another backup is damaged without any signature).
    for artifact in ["snapshot", "static_resources"] {
        let key = copied["artifacts"][artifact]["key"]
            .as_str()
            .unwrap()
            .to_string();
        let name = key.rsplit('/').next().unwrap().to_string();
        std::fs::copy(a_dir.join(&name), planted_dir.join(&name)).unwrap();
        copied["artifacts"][artifact]["key"] = format!("test/{planted}/{name}").into();
    }
    std::fs::write(
        planted_dir.join("manifest.json"),
        serde_json::to_vec_pretty(&copied).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        a_dir.join("manifest.json.sig"),
        planted_dir.join("manifest.json.sig"),
    )
    .unwrap();
    // Without trusted keys the plant is self-consistent: that is the threat.
    verify(&trusting, planted, 0);
    let out = verify(&reader_only, planted, 3);
    assert!(
        stdout_str(&out).contains("does not match"),
        "{}",
        describe_output(&out)
    );
    let to = fx.path("restore-latest");
    let mut restore = fx.cmd(&reader_only);
    restore
        .args(["restore", "--latest", "--force", "--to"])
        .arg(&to)
        .args(&ids);
    // --latest skips the planted backup (with a warning naming it) and restores the newest
    // trusted one; naming the planted one is refused.
    let out = run_ok(&mut restore);
    assert!(
        stderr_str(&out).contains(planted) && stderr_str(&out).contains("untrusted"),
        "{}",
        describe_output(&out)
    );
    let b_ts = manifest_json(&dir, &b)["started_at"]
        .as_str()
        .unwrap()
        .to_string();
    let b_stamp = format!("{}_{}", &b_ts[..10], b_ts[11..19].replace(':', ""));
    assert!(
        to.join(format!("snapshot_{b_stamp}.db")).is_file(),
        "expected backup {b} ({b_stamp}) restored\n{}",
        describe_output(&out)
    );
    let mut named = fx.cmd(&reader_only);
    named
        .args(["restore", planted, "--force", "--to"])
        .arg(fx.path("restore-planted"))
        .args(&ids);
    run_code(&mut named, 3);
    assert!(
        !fx.path("restore-planted").exists()
            || std::fs::read_dir(fx.path("restore-planted"))
                .unwrap()
                .next()
                .is_none(),
        "nothing restored from a planted backup"
    );
    std::fs::remove_dir_all(&planted_dir).unwrap();

    // Planted 2: a genuine id whose manifest now describes other objects (digests rewritten).
    // Self-consistent: b's snapshot object put in a's place, a's manifest describing it.
    let original = read(&a_dir.join("manifest.json"));
    let snapshot_object = a_dir.join("snapshot.db.zst.age");
    let original_snapshot = read(&snapshot_object);
    let mut rewritten = manifest_json(&dir, &a);
    let a_key = rewritten["artifacts"]["snapshot"]["key"].clone();
    rewritten["artifacts"]["snapshot"] = manifest_json(&dir, &b)["artifacts"]["snapshot"].clone();
    rewritten["artifacts"]["snapshot"]["key"] = a_key;
    std::fs::copy(
        dir.join("test").join(&b).join("snapshot.db.zst.age"),
        &snapshot_object,
    )
    .unwrap();
    std::fs::write(
        a_dir.join("manifest.json"),
        serde_json::to_vec_pretty(&rewritten).unwrap(),
    )
    .unwrap();
    verify(&trusting, &a, 0);
    verify(&reader_only, &a, 3);
    let mut restore = fx.cmd(&reader_only);
    restore
        .args(["restore", &a, "--force", "--to"])
        .arg(fx.path("restore-a"))
        .args(&ids);
    run_code(&mut restore, 3);
    std::fs::write(a_dir.join("manifest.json"), original).unwrap();
    std::fs::write(&snapshot_object, original_snapshot).unwrap();
    verify(&reader_only, &a, 0);
    // A signature made by stock OpenSSH is accepted too.
    std::fs::remove_file(a_dir.join("manifest.json.sig")).unwrap();
    run_ok(
        Command::new("ssh-keygen")
            .args(["-Y", "sign", "-q", "-n", "etcd-offsite", "-f"])
            .arg(&key)
            .arg(a_dir.join("manifest.json")),
    );
    verify(&reader_only, &a, 0);

    // Unsigned, and signed by a key that allowed_signers does not list.
    let unsigned = backup_id(&fx, &reader_only);
    assert!(
        !dir.join("test")
            .join(&unsigned)
            .join("manifest.json.sig")
            .exists()
    );
    let out = verify(&reader_only, &unsigned, 3);
    assert!(
        stdout_str(&out).contains("no signature"),
        "{}",
        describe_output(&out)
    );
    let foreign = backup_id(&fx, &intruder);
    let out = verify(&reader_only, &foreign, 3);
    assert!(
        stdout_str(&out).contains("does not list"),
        "{}",
        describe_output(&out)
    );
    let mut all = fx.cmd(&reader_only);
    all.args(["verify", "--all"]).args(&ids);
    run_code(&mut all, 3);

    // `list` marks them.
    let out = run_ok(fx.cmd(&reader_only).args(["list", "--json"]));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let trusted = |id: &str| {
        listed.iter().find(|b| b["id"] == id).unwrap()["trusted"]
            .as_bool()
            .unwrap()
    };
    assert!(trusted(&a) && trusted(&b));
    assert!(!trusted(&unsigned) && !trusted(&foreign));
    let out = run_ok(fx.cmd(&reader_only).arg("list"));
    assert_eq!(
        stdout_str(&out).matches("UNTRUSTED").count(),
        2,
        "{}",
        stdout_str(&out)
    );
    let out = run_ok(fx.cmd(&trusting).args(["list", "--json"]));
    assert!(
        !stdout_str(&out).contains("trusted"),
        "no marks without allowed_signers"
    );
}

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_the_metrics_endpoint_backs_off_instead_of_spinning() {
    let etcd = EtcdServer::start(false);
    let fx = Fixture::new();
    let (_, config) = fx.dir_config(&etcd, "schedule: { cron: \"0 3 1 1 *\" }\n");
    let port = free_port();
    // Few descriptors, so that idle clients exhaust them before the connection limit.
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=48")
        .arg(env!("CARGO_BIN_EXE_etcd-offsite"))
        .env("ETCD_OFFSITE_CONFIG", &config)
        .args(["run", "--metrics-listen", &format!("127.0.0.1:{port}")]);
    let mut service = Service::spawn("etcd-offsite run (48 fds)", cmd, &fx.path("run.log"));
    service.wait_ready(Duration::from_secs(30), "the metrics endpoint", || {
        port_open(port)
    });
    let pid = service.pid().expect("running");
    let url = format!("http://127.0.0.1:{port}/metrics");
    assert_eq!(http("GET", &url, &[], b"").status, 200);

    let idle: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let exhausted = fd_count(pid);
    let ticks_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu_ticks(pid) - ticks_before;
    // A loop retrying accept at once would burn ~300 ticks (3 s of one core).
    assert!(
        spent < 60,
        "{spent} CPU ticks in 3 s with {exhausted} descriptors open: accept errors spin\n{}",
        service.log_tail(10)
    );
    assert!(
        service.log_tail(200).contains("cannot accept"),
        "the descriptor limit was not reached ({exhausted} open)\n{}",
        service.log_tail(10)
    );
    drop(idle);
    // Once the clients are gone, the endpoint recovers by itself.
    let recovered = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http("GET", &url, &[], b"").status == 200
    });
    assert!(
        recovered,
        "/metrics did not recover\n{}",
        service.log_tail(20)
    );
    assert!(service.is_running(), "{}", service.log_tail(20));
}
