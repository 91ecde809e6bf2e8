//! Issue 3: one-pass backups from a real etcd (plain and TLS) to a directory target,
//! read back with the stock `age` and `zstd` CLIs and restored into a real etcd.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::fixture::Fixture;
use common::*;

/// Backs up `etcd` into a fresh directory target; returns (target dir, backup id).
fn backup_to_dir(fx: &Fixture, etcd: &EtcdServer) -> (PathBuf, String) {
    let (dir, config) = fx.dir_config(etcd, "");
    let out = run_ok(fx.cmd(&config).arg("backup"));
    let id = stdout_str(&out)
        .lines()
        .last()
        .expect("backup prints the id")
        .to_string();
    (dir, id)
}

/// Asserts the command's stderr contains `needle`.
fn assert_stderr_has(out: &Output, needle: &str) {
    assert!(stderr_str(out).contains(needle), "{}", describe_output(out));
}

/// A config backing up the members at `endpoints`, tried in order, into a new `backups`
/// directory; returns (that directory, config path).
fn members_config(fx: &Fixture, endpoints: &[String]) -> (PathBuf, PathBuf) {
    let (dir, url) = fx.file_url("backups");
    let config = fx.write_config(
        "config.yaml",
        &fx.etcd_source(endpoints, None),
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        "",
    );
    (dir, config)
}

/// `backup --json` with `config`: the manifest.
fn backup_json(fx: &Fixture, config: &Path) -> serde_json::Value {
    let out = run_ok(fx.cmd(config).args(["backup", "--json"]));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn round_trip(version: EtcdVersion, tls: bool) {
    let etcd = EtcdServer::start_version(version, tls);
    etcd.load(3000, 300);
    etcd.put(
        "/registry/secrets/kube-system/bootstrap",
        b"\x00binary\xffvalue",
    );
    let before = etcd.dump();
    let fx = Fixture::new();
    let (dir, id) = backup_to_dir(&fx, &etcd);
    let backup = dir.join("test").join(&id);
    assert!(backup.join("manifest.json").is_file(), "manifest written");

    // Stock tools: age -d | zstd -d gives a snapshot etcdctl accepts and restores.
    let snapshot = fx.path("snapshot.db");
    age_zstd_decrypt(
        &fx.snapshot_key,
        &backup.join("snapshot.db.zst.age"),
        &snapshot,
    )
    .expect("age -d | zstd -d");
    snapshot_restore_check_with(version, &snapshot).expect("the stock restore tool accepts it");
    let restored = EtcdServer::start_version_from_snapshot(version, &snapshot);
    assert_eq!(
        restored.dump(),
        before,
        "restored etcd holds the same keys and values"
    );

    // The manifest records the member and both artifacts' digests.
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&backup.join("manifest.json"))).unwrap();
    assert_eq!(manifest["id"], id.as_str());
    assert_eq!(manifest["source"]["kind"], "etcd");
    let etcd_version = manifest["source"]["etcd_version"].as_str().unwrap();
    assert!(
        etcd_version.starts_with(&format!("{}.", version.minor())),
        "{etcd_version}"
    );
    assert_eq!(
        manifest["source"]["revision"].as_i64(),
        Some(etcd.revision())
    );
    assert_eq!(
        manifest["artifacts"]["snapshot"]["plaintext"]["sha256"],
        sha256_file(&snapshot).as_str()
    );
    assert_eq!(
        manifest["artifacts"]["snapshot"]["stored"]["sha256"],
        sha256_file(&backup.join("snapshot.db.zst.age")).as_str()
    );
}

#[test]
fn plain_etcd_round_trips_through_stock_tools() {
    round_trip(EtcdVersion::V34, false);
}

#[test]
fn tls_etcd_round_trips_through_stock_tools() {
    round_trip(EtcdVersion::V34, true);
}

#[test]
fn plain_etcd_35_round_trips_through_stock_tools() {
    round_trip(EtcdVersion::V35, false);
}

#[test]
fn tls_etcd_35_round_trips_through_stock_tools() {
    round_trip(EtcdVersion::V35, true);
}

#[test]
fn static_archive_opens_only_with_its_own_identity() {
    let etcd = EtcdServer::start(false);
    etcd.load(100, 100);
    let fx = Fixture::new();
    let (dir, id) = backup_to_dir(&fx, &etcd);
    let archive = dir
        .join("test")
        .join(&id)
        .join("static_kuberesources.tar.zst.age");
    let out = fx.path("static.tar");
    let err = age_decrypt(&fx.snapshot_key, &archive, &out)
        .expect_err("the snapshot identity must not open the keys archive");
    assert!(err.contains("no identity matched"), "{err}");
    age_zstd_decrypt(&fx.static_key, &archive, &out).expect("its own identity opens it");
    let listing = run_ok(Command::new("tar").arg("tf").arg(&out));
    let names = stdout_str(&listing);
    for member in [
        "static-pod-resources/kube-apiserver-pod-7/secrets/encryption-config",
        "static-pod-resources/kube-apiserver-pod-7/configmaps/config/config.yaml",
    ] {
        assert!(
            names.lines().any(|l| l == member),
            "{member} missing from:\n{names}"
        );
    }
}

#[test]
fn a_dead_first_endpoint_fails_over_to_the_next() {
    dead_first_endpoint(EtcdVersion::V34);
}

#[test]
fn a_dead_first_endpoint_fails_over_to_the_next_on_etcd_35() {
    dead_first_endpoint(EtcdVersion::V35);
}

fn dead_first_endpoint(version: EtcdVersion) {
    let etcd = EtcdServer::start_version(version, false);
    etcd.load(200, 100);
    let fx = Fixture::new();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (dir, config) = members_config(&fx, &[dead, etcd.endpoint()]);
    let manifest = backup_json(&fx, &config);
    assert_eq!(manifest["source"]["endpoint"], etcd.endpoint().as_str());
    assert!(
        dir.join("test")
            .join(manifest["id"].as_str().unwrap())
            .join("manifest.json")
            .is_file()
    );
}

#[test]
fn etcd_killed_mid_snapshot_leaves_no_manifest() {
    killed_mid_snapshot(EtcdVersion::V34);
}

#[test]
fn etcd_35_killed_mid_snapshot_leaves_no_manifest() {
    killed_mid_snapshot(EtcdVersion::V35);
}

fn killed_mid_snapshot(version: EtcdVersion) {
    let mut etcd = EtcdServer::start_version(version, false);
    // Large enough that the stream is still running when etcd dies.
    etcd.load(1500, 100_000);
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, "");
    // Slow the read so the kill lands mid-stream.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "    timeout: 5s\n",
        "    timeout: 5s\n    read_rate_limit: 20MiB\n",
    );
    std::fs::write(&config, text).unwrap();
    let child = fx
        .cmd(&config)
        .arg("backup")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    etcd.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
    assert_stderr_has(&out, "snapshot");
    let manifests = manifests_below(&dir);
    assert!(
        manifests.is_empty(),
        "no manifest after a failed backup: {manifests:?}"
    );
    assert!(
        list_json(&fx, &config)
            .iter()
            .all(|b| b["complete"] == false)
    );
    // Only the released lock's last generation stays (the lock always keeps one).
    let leftovers: Vec<_> = files_below(&dir)
        .into_iter()
        .filter(|p| !p.starts_with(dir.join("test/lock")))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the failed run cleaned up after itself: {leftovers:?}"
    );
}

#[test]
fn a_stalled_member_times_out_and_the_next_one_serves() {
    let first = EtcdServer::start(false);
    first.load(300, 1000);
    let second = EtcdServer::start(false);
    second.load(300, 1000);
    let fx = Fixture::new();
    let (dir, config) = members_config(&fx, &[first.endpoint(), second.endpoint()]);
    // Frozen before connect: status times out and the second member serves.
    first.pause();
    let manifest = backup_json(&fx, &config);
    first.resume();
    assert_eq!(manifest["source"]["endpoint"], second.endpoint().as_str());
    assert_eq!(manifests_below(&dir).len(), 1);
}

/// Each bad config exits 2 and the message names the key (and the secret never shows).
#[test]
fn bad_configs_exit_2_naming_the_key() {
    let fx = Fixture::new();
    let (_, url) = fx.file_url("backups");
    let good_source = fx.etcd_source(&["http://127.0.0.1:1".to_string()], None);
    let good_targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let secret_key_line = std::fs::read_to_string(&fx.snapshot_key)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "overlapping recipients",
            good_source.clone(),
            good_targets.clone(),
            "encryption.static_resources.recipients",
        ),
        (
            "malformed recipient",
            good_source.clone(),
            good_targets.clone(),
            "encryption.snapshot.recipients[0]",
        ),
        (
            "secret key as recipient",
            good_source.clone(),
            good_targets.clone(),
            "encryption.snapshot.recipients[0]",
        ),
        (
            "missing target",
            good_source.clone(),
            String::new(),
            "targets",
        ),
        (
            "bad url",
            good_source.clone(),
            "  snapshot: { url: \"ftp://host/x\" }\n".into(),
            "targets.snapshot.url",
        ),
        (
            "unreadable TLS file",
            good_source.replace(
                "    timeout: 5s\n",
                "    timeout: 5s\n    cacert: /nonexistent/ca.crt\n",
            ),
            good_targets.clone(),
            "source.etcd.cacert",
        ),
        (
            "missing static paths",
            good_source.replace(
                &fx.static_dir.display().to_string(),
                &fx.base_dir
                    .join("static-pod-resources/nope")
                    .display()
                    .to_string(),
            ),
            good_targets.clone(),
            "source.static_resources.paths[0]",
        ),
        (
            "unknown key",
            good_source.replace("    timeout: 5s\n", "    timeuot: 5s\n"),
            good_targets.clone(),
            "source.etcd.timeuot",
        ),
    ];
    for (name, source, targets, key) in cases {
        let path = fx.write_config("bad.yaml", &source, &targets, "");
        let mut text = std::fs::read_to_string(&path).unwrap();
        match name {
            "overlapping recipients" => {
                text = text.replace(&fx.static_recipient, &fx.snapshot_recipient)
            }
            "malformed recipient" => text = text.replacen(&fx.snapshot_recipient, "age1bogus", 1),
            "secret key as recipient" => {
                text = text.replacen(&fx.snapshot_recipient, &secret_key_line, 1)
            }
            "missing target" => text = text.replace("targets:\n", ""),
            _ => {}
        }
        std::fs::write(&path, text).unwrap();
        for args in [&["config", "check"][..], &["backup"][..]] {
            let out = run(fx.cmd(&path).args(args));
            let stderr = stderr_str(&out);
            assert_eq!(exit_code(&out), 2, "{name}: {}", describe_output(&out));
            assert!(
                stderr.contains(&format!("`{key}`")),
                "{name}: key {key} not named in {stderr}"
            );
            assert!(!stderr.contains(&secret_key_line), "{name}: secret echoed");
        }
    }
}

#[test]
fn config_check_connect_reaches_etcd_and_the_target() {
    let etcd = EtcdServer::start(true);
    let fx = Fixture::new();
    let (_, config) = fx.dir_config(&etcd, "");
    let out = run_ok(fx.cmd(&config).args(["config", "check", "--connect"]));
    let text = stdout_str(&out);
    assert!(
        text.contains(&format!("etcd {}: ok", etcd.endpoint())),
        "{text}"
    );
    assert!(
        text.contains("(list, write, delete; a second create of one key is refused)"),
        "{text}"
    );
    // A target directory that is not there (an unmounted NFS share) is a runtime failure.
    let missing = fx.write_config(
        "missing.yaml",
        &fx.etcd_source_for(&etcd),
        "  snapshot: { url: \"file:///nonexistent/etcd-offsite\" }\n",
        "",
    );
    let out = run_code(fx.cmd(&missing).arg("backup"), 1);
    assert_stderr_has(&out, "mount the NFS share");
}

#[test]
fn a_second_host_is_refused_while_the_lock_is_held() {
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, "");
    let lock_dir = dir.join("test/lock");
    std::fs::create_dir_all(&lock_dir).unwrap();
    // master-1 holds generation 5 of the lock, last renewed `age` ago.
    let write_lock = |age: &str| {
        let lock = serde_json::json!({
            "state": "held", "host": "master-1", "pid": 1, "token": 1,
            "acquired_at": chrono_now(-60), "written_at": chrono_now(-60),
            "stale_after_secs": 180,
        });
        let path = lock_dir.join("0000000000000005");
        std::fs::write(&path, lock.to_string()).unwrap();
        run_ok(Command::new("touch").arg("-d").arg(age).arg(&path));
    };
    write_lock("10 seconds ago");
    let out = run_code(fx.cmd(&config).arg("backup"), 4);
    assert_stderr_has(&out, "held by master-1");
    // Not renewed for longer than lock_stale_after (3 min): its run is dead; broken.
    write_lock("5 minutes ago");
    run_ok(fx.cmd(&config).arg("backup"));
    let generations: Vec<String> = std::fs::read_dir(&lock_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        generations.len(),
        1,
        "one generation left, the released one: {generations:?}"
    );
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lock_dir.join(&generations[0])).unwrap()).unwrap();
    assert_eq!(last["state"], "free", "lock released after the backup");
}

/// RFC 3339 time `offset` seconds from now, via `date` (no chrono in the tests).
fn chrono_now(offset: i64) -> String {
    let out = run_ok(Command::new("date").args([
        "-u",
        "-d",
        &format!("{offset} seconds"),
        "+%Y-%m-%dT%H:%M:%SZ",
    ]));
    stdout_str(&out).trim().to_string()
}

/// The same job on every control-plane host: one backup per slot, the others exit 4.
#[test]
fn a_recent_backup_makes_the_next_one_unnecessary() {
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let fx = Fixture::new();
    let (_, config) = fx.dir_config(&etcd, "");
    run_ok(
        fx.cmd(&config)
            .args(["backup", "--skip-if-newer-than", "30m"]),
    );
    let out = run_code(
        fx.cmd(&config)
            .args(["backup", "--skip-if-newer-than", "30m"]),
        4,
    );
    assert_stderr_has(&out, "nothing to do");
    run_ok(fx.cmd(&config).arg("backup"));
    assert_eq!(list_json(&fx, &config).len(), 2);
}

/// A recovery host has the config but not the control plane's certificates: reading
/// backups must still work there, and only taking one needs them.
#[test]
fn backups_can_be_read_where_the_source_files_are_missing() {
    let etcd = EtcdServer::start(true);
    etcd.load(50, 100);
    let fx = Fixture::new();
    let (_, config) = fx.dir_config(&etcd, "");
    run_ok(fx.cmd(&config).arg("backup"));
    let tls = etcd.tls().unwrap();
    std::fs::remove_file(&tls.client_key).unwrap();
    std::fs::remove_dir_all(&fx.static_dir).unwrap();
    run_ok(fx.cmd(&config).arg("list"));
    let mut restore = fx.cmd(&config);
    restore
        .args(["restore", "--latest", "--to"])
        .arg(fx.path("restored"));
    run_ok(restore.args(fx.identity_args()));
    let out = run_code(fx.cmd(&config).arg("backup"), 2);
    assert_stderr_has(&out, "`source.etcd.key`");
}

/// cluster-backup.sh stopped writing: the same pair is not shipped again as a new backup.
#[test]
fn a_backup_dir_pair_is_shipped_once() {
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let fx = Fixture::new();
    let src = fx.path("assets-backup");
    std::fs::create_dir_all(&src).unwrap();
    etcd.snapshot_save(&src.join("snapshot_2026-11-21_030000.db"));
    fx.tar_static(&src, "2026-11-21_030000", "static-pod-resources");
    let (_, url) = fx.file_url("backups");
    let config = fx.write_config(
        "config.yaml",
        &format!("source:\n  backup_dir: {}\n", src.display()),
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        "",
    );
    run_ok(fx.cmd(&config).arg("backup"));
    let out = run_code(fx.cmd(&config).arg("backup"), 4);
    assert_stderr_has(&out, "already shipped");
    etcd.snapshot_save(&src.join("snapshot_2026-11-22_030000.db"));
    std::fs::copy(
        src.join("static_kuberesources_2026-11-21_030000.tar.gz"),
        src.join("static_kuberesources_2026-11-22_030000.tar.gz"),
    )
    .unwrap();
    run_ok(fx.cmd(&config).arg("backup"));
}

/// `config check --offline` passes on every shipped config, off-host (none of their
/// certificates, recipients files or directories exist here), while a plain `config check`
/// still reads them, and an offline check still refuses what is wrong in the text itself.
#[test]
fn config_check_offline_passes_every_shipped_example() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = Vec::new();
    for dir in ["examples", "config"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if path.extension().is_none_or(|e| e != "yaml") || !text.contains("\nversion: 1") {
                continue;
            }
            let mut cmd = common::tool();
            cmd.arg("--config")
                .arg(&path)
                .args(["config", "check", "--offline"]);
            let out = common::run_ok(&mut cmd);
            assert!(
                common::stdout_str(&out).contains(": valid (cluster ")
                    && common::stdout_str(&out).contains("offline"),
                "{}",
                common::describe_output(&out)
            );
            checked.push(path);
        }
    }
    assert!(checked.len() >= 7, "only {checked:?}");
    let s3 = root.join("examples/s3.yaml");
    let out = common::run_code(
        common::tool()
            .arg("--config")
            .arg(&s3)
            .args(["config", "check"]),
        2,
    );
    assert!(
        common::stderr_str(&out).contains("config error at `source.etcd.discover`"),
        "the host check reads the host: {}",
        common::describe_output(&out)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&s3)
            .unwrap()
            .replace("s3://acme-etcd-backups/", "s3://Etcd_BK/"),
    )
    .unwrap();
    let out = common::run_code(
        common::tool()
            .arg("--config")
            .arg(&bad)
            .args(["config", "check", "--offline"]),
        2,
    );
    assert!(
        common::stderr_str(&out).contains("targets.snapshot.url"),
        "{}",
        common::describe_output(&out)
    );
}
