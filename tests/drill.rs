//! Restore drills (issue 12) against a real etcd holding Kubernetes-like data whose secrets
//! and configmaps are encrypted exactly as kube-apiserver writes them (aescbc, aesgcm), with
//! the matching EncryptionConfiguration in the static resources, as on OpenShift.

mod common;

use std::path::Path;
use std::time::Duration;

use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use common::fixture::Fixture;
use common::*;

const CBC_KEY: [u8; 32] = [0x11; 32];
const GCM_KEY: [u8; 32] = [0x22; 32];

/// `k8s:enc:<provider>:v1:<name>:` + ciphertext, as kube-apiserver stores a value.
fn seal(provider: &str, name: &str, key: &[u8; 32], etcd_key: &str, plain: &[u8]) -> Vec<u8> {
    let mut out = format!("k8s:enc:{provider}:v1:{name}:").into_bytes();
    let seed = etcd_key.len() as u8;
    match provider {
        "aescbc" => {
            let iv = [seed; 16];
            out.extend_from_slice(&iv);
            out.extend(
                cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
                    .unwrap()
                    .encrypt_padded_vec_mut::<Pkcs7>(plain),
            );
        }
        "aesgcm" => {
            let nonce = [seed; 12];
            out.extend_from_slice(&nonce);
            let payload = Payload {
                msg: plain,
                aad: etcd_key.as_bytes(),
            };
            out.extend(
                aes_gcm::Aes256Gcm::new_from_slice(key)
                    .unwrap()
                    .encrypt(aes_gcm::Nonce::from_slice(&nonce), payload)
                    .unwrap(),
            );
        }
        other => panic!("{other}"),
    }
    out
}

fn encryption_config(cbc_key: &[u8; 32]) -> String {
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    format!(
        "{{\"kind\":\"EncryptionConfiguration\",\"apiVersion\":\"apiserver.config.k8s.io/v1\",\"resources\":[{{\"resources\":[\"secrets\",\"configmaps\"],\"providers\":[{{\"aescbc\":{{\"keys\":[{{\"name\":\"key1\",\"secret\":\"{}\"}}]}}}},{{\"aesgcm\":{{\"keys\":[{{\"name\":\"gcm1\",\"secret\":\"{}\"}}]}}}},{{\"identity\":{{}}}}]}}]}}",
        b64(cbc_key),
        b64(&GCM_KEY)
    )
}

/// OpenShift's place for the running kube-apiserver's EncryptionConfiguration.
fn write_encryption_config(fx: &Fixture, cbc_key: &[u8; 32]) {
    let dir = fx.static_dir.join("secrets");
    let _ = std::fs::remove_file(dir.join("encryption-config"));
    std::fs::create_dir_all(dir.join("encryption-config")).unwrap();
    std::fs::write(
        dir.join("encryption-config/encryption-config"),
        encryption_config(cbc_key),
    )
    .unwrap();
}

/// Kubernetes-like data: plain objects, and encrypted secrets and configmaps.
fn load_cluster(etcd: &EtcdServer) {
    etcd.load_with(400, 300, "/kubernetes.io/pods/", 1);
    for i in 0..12 {
        let key = format!("/kubernetes.io/secrets/ns{}/secret-{i}", i % 3);
        let object = format!("k8s\0\n\x0c\n\x02v1\x12\x06Secret\x12secret-{i}");
        etcd.put(
            &key,
            seal("aescbc", "key1", &CBC_KEY, &key, object.as_bytes()),
        );
        let key = format!("/kubernetes.io/configmaps/ns{}/cm-{i}", i % 3);
        let object = format!("{{\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"cm-{i}\"}}}}");
        etcd.put(
            &key,
            seal("aesgcm", "gcm1", &GCM_KEY, &key, object.as_bytes()),
        );
    }
    // Keys around the prefix boundaries the count's skip scan jumps over: one sorting just
    // before `/kubernetes.io/pods/`, one that is exactly the end of that range, and keys
    // outside the `/<root>/<resource>/…` shape, several in a row.
    for key in [
        "/kubernetes.io/pods-extra/a",
        "/kubernetes.io/pods0",
        "/kubernetes.io/ranges/serviceips",
        "/kubernetes.io/~tilde/x", // past `z`, where the key search stops going letter by letter
        "/short",
        "plain-1",
        "plain-2",
        "plain-3",
    ] {
        etcd.put(key, b"x");
    }
    // A resource name that is not UTF-8 (etcd keys are bytes), sorting after every
    // `/kubernetes.io/<ascii>` prefix: counted under "(other)", and the scan still ends.
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"/kubernetes.io/\xff\xfe/x");
    run_ok(etcd.etcdctl().args(["put", "--"]).arg(odd).arg("x"));
}

fn drill_cmd(fx: &Fixture, config: &Path, id: Option<&str>) -> std::process::Command {
    let mut cmd = fx.cmd(config);
    cmd.arg("drill")
        .args(id.map_or(vec!["--latest"], |id| vec![id]));
    cmd.arg("--json")
        .arg("--scratch-dir")
        .arg(fx.path("scratch"))
        .args(fx.identity_args());
    cmd
}

fn drill(fx: &Fixture, config: &Path, id: Option<&str>) -> std::process::Output {
    run(&mut drill_cmd(fx, config, id))
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", describe_output(out)))
}

fn check<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {record}"))
}

#[test]
fn a_drill_proves_the_backup_restores_and_its_keys_open_the_data() {
    drill_proves_the_backup(EtcdVersion::V34);
}

#[test]
fn a_drill_of_an_etcd_35_backup_runs_its_tools_and_warns_about_older_ones() {
    drill_proves_the_backup(EtcdVersion::V35);
}

/// Backup of a Kubernetes-like etcd of `version`, drilled with that release's tools.
fn drill_proves_the_backup(version: EtcdVersion) {
    let etcd = EtcdServer::start_version(version, false);
    load_cluster(&etcd);
    let fx = Fixture::new();
    write_encryption_config(&fx, &CBC_KEY);
    std::fs::create_dir_all(fx.path("scratch")).unwrap();
    let (target, config) = fx.dir_config(&etcd, "");
    let backup_prom = fx.path("backup.prom");
    let manifest: serde_json::Value = serde_json::from_slice(
        &run_ok(
            fx.cmd(&config)
                .args(["backup", "--json", "--metrics-textfile"])
                .arg(&backup_prom),
        )
        .stdout,
    )
    .unwrap();
    let metrics = prometheus_samples(&backup_prom);
    assert_eq!(
        metrics["etcd_offsite_backups_total{cluster=test,result=success}"], 1.0,
        "{metrics:?}"
    );
    assert_eq!(
        metrics["etcd_offsite_last_run_success{cluster=test,command=backup}"],
        1.0
    );
    assert_eq!(
        metrics["etcd_offsite_backups_complete{cluster=test,command=backup}"],
        1.0
    );
    let finished =
        chrono::DateTime::parse_from_rfc3339(manifest["finished_at"].as_str().unwrap()).unwrap();
    let last = metrics["etcd_offsite_last_success_timestamp_seconds{cluster=test,command=backup}"];
    assert!(
        (last - finished.timestamp_millis() as f64 / 1000.0).abs() < 0.01,
        "{last} vs {finished}"
    );
    let content = &manifest["content"];
    assert_eq!(
        content["prefixes"]["/kubernetes.io/secrets"], 12,
        "{content}"
    );
    assert_eq!(content["prefixes"]["/kubernetes.io/pods"], 400, "{content}");
    assert_eq!(
        content["prefixes"]["/kubernetes.io/pods-extra"], 1,
        "{content}"
    );
    assert_eq!(content["prefixes"]["/kubernetes.io/ranges"], 1, "{content}");
    assert_eq!(content["prefixes"]["/kubernetes.io/~tilde"], 1, "{content}");
    assert_eq!(content["prefixes"]["(other)"], 6, "{content}");
    assert_eq!(content["keys"], 400 + 12 + 12 + 9, "{content}");
    let uses: Vec<String> = content["encryption"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            format!(
                "{}:{}",
                u["provider"].as_str().unwrap(),
                u["key"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(uses, ["aescbc:key1", "aesgcm:gcm1"], "{content}");

    // Every check holds: exit 0, the counts and the decrypted sample reported.
    let drill_prom = fx.path("drill.prom");
    let out = run(drill_cmd(&fx, &config, None)
        .arg("--metrics-textfile")
        .arg(&drill_prom)
        .arg("--etcd-bin-dir")
        .arg(version.bin_dir()));
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let record = json(&out);
    assert_eq!(record["ok"], true, "{record}");
    let served_by = manifest["source"]["etcd_version"].as_str().unwrap();
    assert_eq!(record["etcd_version"], served_by, "{record}");
    assert!(record.get("warnings").is_none(), "{record}");
    let metrics = prometheus_samples(&drill_prom);
    assert_eq!(
        metrics["etcd_offsite_drills_total{cluster=test,result=success}"], 1.0,
        "{metrics:?}"
    );
    let at = chrono::DateTime::parse_from_rfc3339(record["at"].as_str().unwrap()).unwrap();
    assert!(
        (metrics["etcd_offsite_last_drill_success_timestamp_seconds{cluster=test,command=drill}"]
            - at.timestamp_millis() as f64 / 1000.0)
            .abs()
            < 0.01,
        "{metrics:?}"
    );
    assert_eq!(check(&record, "key counts")["ok"], true, "{record}");
    assert!(
        record["decrypted"]["aescbc:key1"].as_u64().unwrap() >= 1,
        "{record}"
    );
    assert!(
        record["decrypted"]["aesgcm:gcm1"].as_u64().unwrap() >= 1,
        "{record}"
    );
    assert_eq!(record["restored"]["keys"], content["keys"]);
    // Nothing left in the scratch directory, the scratch etcd is gone.
    assert_eq!(std::fs::read_dir(fx.path("scratch")).unwrap().count(), 0);
    // The record is stored beside the manifest; list and status show it.
    let id = manifest["id"].as_str().unwrap();
    let records: Vec<_> = std::fs::read_dir(target.join("test").join(id))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("drill-"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let listed: serde_json::Value =
        serde_json::from_slice(&run_ok(fx.cmd(&config).args(["list", "--json"])).stdout).unwrap();
    assert_eq!(listed[0]["drill"]["ok"], true, "{listed}");
    run_ok(
        fx.cmd(&config)
            .args(["status", "--max-age", "1h", "--max-drill-age", "1h"]),
    );

    if version == EtcdVersion::V35 {
        // PATH's etcd 3.4 restores a 3.5 snapshot silently: the drill passes, says which
        // release it ran and warns that it is older than the snapshot's server.
        let out = drill(&fx, &config, None);
        assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
        let record = json(&out);
        assert!(
            record["etcd_version"].as_str().unwrap().starts_with("3.4."),
            "{record}"
        );
        let warning = record["warnings"][0].as_str().unwrap_or_default();
        assert!(
            warning.contains(&format!("older than the etcd {served_by}"))
                && warning.contains("--etcd-bin-dir"),
            "{record}"
        );
        assert!(
            stderr_str(&out).contains("older than the etcd"),
            "{}",
            describe_output(&out)
        );
        // A tools directory with etcd but no restore tool: the drill cannot run (exit 1)
        // and names what it needs.
        let tools = fx.path("only-etcd");
        std::fs::create_dir_all(&tools).unwrap();
        std::os::unix::fs::symlink(version.tool("etcd"), tools.join("etcd")).unwrap();
        let out = run(drill_cmd(&fx, &config, None)
            .arg("--etcd-bin-dir")
            .arg(&tools));
        assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
        assert!(
            stderr_str(&out).contains("neither `etcdutl` nor `etcdctl` is in")
                && stderr_str(&out).contains("etcdutl snapshot restore"),
            "{}",
            describe_output(&out)
        );
        return;
    }

    // The recorded counts differ from what the snapshot restores to (a test-only edit of
    // the unsigned manifest): exit 3, naming the prefix.
    let manifest_path = target.join("test").join(id).join("manifest.json");
    let mut altered: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    altered["content"]["prefixes"]["/kubernetes.io/secrets"] = serde_json::json!(13);
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&altered).unwrap()).unwrap();
    let out = drill(&fx, &config, Some(id));
    assert_eq!(exit_code(&out), 3, "{}", describe_output(&out));
    let record = json(&out);
    let counts = check(&record, "key counts");
    assert_eq!(counts["ok"], false, "{record}");
    assert!(
        counts["detail"]
            .as_str()
            .unwrap()
            .contains("/kubernetes.io/secrets: 12, recorded 13"),
        "{counts}"
    );
    // Its failed drill is the newest; status still finds the older successful one.
    run_ok(fx.cmd(&config).args(["status", "--max-drill-age", "1h"]));
}

#[test]
fn key_counts_are_taken_after_the_stream_at_the_snapshots_revision_or_left_out_when_compacted() {
    counts_after_the_stream(EtcdVersion::V34);
}

#[test]
fn key_counts_after_the_stream_and_a_compacted_revision_on_etcd_35() {
    counts_after_the_stream(EtcdVersion::V35);
}

/// A backup counts the keys after its stream, at the revision the member reported before
/// it: keys written while the snapshot streams are not counted (the snapshot holds them,
/// the drill counts at the recorded revision). When compaction removes that revision
/// meanwhile, the backup still commits, without counts, and says why; its drill checks
/// the rest and says that no counts were recorded.
fn counts_after_the_stream(version: EtcdVersion) {
    let etcd = EtcdServer::start_version(version, false);
    load_cluster(&etcd);
    // About 4 MB at 1 MiB/s: a stream of a few seconds.
    etcd.load_with(4000, 1000, "/kubernetes.io/events/", 2);
    let fx = Fixture::new();
    write_encryption_config(&fx, &CBC_KEY);
    std::fs::create_dir_all(fx.path("scratch")).unwrap();
    let (dir, url) = fx.file_url("backups");
    let source = fx.etcd_source_for(&etcd).replacen(
        "    timeout: 5s\n",
        "    timeout: 5s\n    read_rate_limit: 1MiB\n",
        1,
    );
    let config = fx.write_config(
        "config.yaml",
        &source,
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        "",
    );
    let expected_keys = 400 + 12 + 12 + 9 + 4000;
    // Runs a backup and, once its snapshot streams, `during`; returns its output.
    let backup_with = |during: &dyn Fn()| {
        let before = relative_files(&dir);
        let mut child = spawn(fx.cmd(&config).args(["backup", "--json", "--no-prune"]));
        let streaming = wait_until(std::time::Duration::from_secs(60), || {
            relative_files(&dir)
                .difference(&before)
                .any(|f| f.contains("snapshot.db.zst.age"))
                || child.try_wait().ok().flatten().is_some()
        });
        assert!(streaming, "the snapshot never started streaming");
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "the backup ended before the writes"
        );
        during();
        wait_within(child, std::time::Duration::from_secs(120), "backup")
    };

    // Keys written during the stream, in a prefix of their own and in a counted one.
    let out = backup_with(&|| {
        for i in 0..5 {
            etcd.put(&format!("/kubernetes.io/late/k{i}"), b"x");
            etcd.put(&format!("/kubernetes.io/pods/late-{i}"), b"x");
        }
    });
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let content = &manifest["content"];
    assert_eq!(
        content["revision"], manifest["source"]["revision"],
        "{manifest}"
    );
    assert_eq!(content["keys"], expected_keys, "{content}");
    assert_eq!(content["prefixes"]["/kubernetes.io/pods"], 400, "{content}");
    assert_eq!(
        content["prefixes"]["/kubernetes.io/events"], 4000,
        "{content}"
    );
    assert!(
        content["prefixes"].get("/kubernetes.io/late").is_none(),
        "{content}"
    );
    assert!(
        stderr_str(&out).contains("key counts read"),
        "{}",
        describe_output(&out)
    );
    // The snapshot holds the late keys; the drill counts at the recorded revision.
    let out = run(drill_cmd(&fx, &config, None)
        .arg("--etcd-bin-dir")
        .arg(version.bin_dir()));
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let record = json(&out);
    assert_eq!(check(&record, "key counts")["ok"], true, "{record}");
    assert_eq!(record["restored"]["keys"], expected_keys, "{record}");

    // Compacted past the snapshot's revision while it streams.
    let out = backup_with(&|| {
        etcd.put("/kubernetes.io/late/k0", b"y");
        let revision = etcd.revision();
        run_ok(etcd.etcdctl().args(["compact", &revision.to_string()]));
    });
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(manifest["content"].is_null(), "{manifest}");
    let stderr = stderr_str(&out);
    assert!(
        stderr.contains(&format!(
            "revision {} was compacted while the snapshot streamed",
            manifest["source"]["revision"]
        )) && stderr.contains("the snapshot is complete"),
        "{}",
        describe_output(&out)
    );
    let out = run(drill_cmd(&fx, &config, None)
        .arg("--etcd-bin-dir")
        .arg(version.bin_dir()));
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let record = json(&out);
    let counts = check(&record, "key counts");
    assert!(counts["ok"].is_null(), "{record}");
    assert!(
        counts["detail"]
            .as_str()
            .unwrap()
            .contains("compacted before its keys were counted"),
        "{record}"
    );
}

#[test]
fn a_keys_archive_with_another_key_fails_the_drill() {
    let etcd = EtcdServer::start(false);
    load_cluster(&etcd);
    let fx = Fixture::new();
    // Rotated, or taken from another cluster: a key named key1, but not the one in use.
    write_encryption_config(&fx, &[0x33; 32]);
    std::fs::create_dir_all(fx.path("scratch")).unwrap();
    let (_, config) = fx.dir_config(&etcd, "");
    run_ok(fx.cmd(&config).arg("backup"));
    let out = drill(&fx, &config, None);
    assert_eq!(exit_code(&out), 3, "{}", describe_output(&out));
    let record = json(&out);
    let keys = check(&record, "keys archive opens the encrypted values");
    assert_eq!(keys["ok"], false, "{record}");
    let detail = keys["detail"].as_str().unwrap();
    assert!(
        detail.contains("aescbc key key1 does not decrypt it"),
        "{detail}"
    );
    // The restore itself was fine.
    assert_eq!(check(&record, "key counts")["ok"], true, "{record}");
    assert!(
        stderr_str(&out).contains("drill of backup"),
        "{}",
        describe_output(&out)
    );
    // No drill tools: the drill cannot run (exit 1), and says what to install.
    let out = run(&mut drill_without_tools(&fx, &config));
    assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
    assert!(
        stderr_str(&out).contains("no `etcd` binary on PATH"),
        "{}",
        describe_output(&out)
    );
    let out = run_code(fx.cmd(&config).args(["status", "--max-drill-age", "1d"]), 5);
    assert!(
        stderr_str(&out).contains("no successful drill"),
        "{}",
        describe_output(&out)
    );
}

fn drill_without_tools(fx: &Fixture, config: &Path) -> std::process::Command {
    let mut cmd = fx.cmd(config);
    cmd.env("PATH", "/nonexistent")
        .args(["drill", "--latest", "--scratch-dir"])
        .arg(fx.path("scratch"))
        .args(fx.identity_args());
    cmd
}

// ------------------------------------------------------------------ issue 18: drills at the host boundary

/// The etcd a running drill started under `scratch`: its pid and client URL, found by its
/// `--data-dir` in /proc.
fn scratch_etcd(scratch: &Path) -> Option<(u32, String)> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let inside = value("--data-dir").is_some_and(|d| Path::new(&d).starts_with(scratch));
        if inside && args.first().is_some_and(|a| a.ends_with("etcd")) {
            return Some((pid, value("--listen-client-urls")?));
        }
    }
    None
}

/// `kill -SIG PID`.
fn signal(pid: u32, sig: &str) {
    run_ok(
        std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string()),
    );
}

/// A process that is gone (or a zombie nobody waits for: not running either way).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn a_stopped_or_killed_drill_leaves_no_etcd_and_no_data() {
    stopped_or_killed_drill(EtcdVersion::V34);
}

#[test]
fn a_stopped_or_killed_etcd_35_drill_leaves_no_etcd_and_no_data() {
    stopped_or_killed_drill(EtcdVersion::V35);
}

/// A drill is paused once its scratch etcd runs: that etcd refuses plain and
/// certificate-less connections and has none of the drill's environment; SIGTERM then
/// stops the drill with 143, its etcd gone within seconds and the scratch directory empty.
/// A SIGKILLed drill's etcd dies with it (PR_SET_PDEATHSIG) and the next drill removes the
/// scratch directory it left.
fn stopped_or_killed_drill(version: EtcdVersion) {
    let etcd = EtcdServer::start_version(version, false);
    load_cluster(&etcd);
    let fx = Fixture::new();
    write_encryption_config(&fx, &CBC_KEY);
    let scratch = fx.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (_, config) = fx.dir_config(&etcd, "");
    run_ok(fx.cmd(&config).args(["backup", "--no-prune"]));
    let start_drill = || {
        let mut cmd = drill_cmd(&fx, &config, None);
        cmd.arg("--etcd-bin-dir")
            .arg(version.bin_dir())
            .env("AWS_SECRET_ACCESS_KEY", "planted-secret-of-the-drill-host");
        let child = spawn(&mut cmd);
        let mut found = None;
        assert!(
            wait_until(Duration::from_secs(60), || {
                found = scratch_etcd(&scratch);
                found.is_some()
            }),
            "no scratch etcd started"
        );
        signal(child.id(), "STOP");
        (child, found.unwrap())
    };

    let (child, (etcd_pid, url)) = start_drill();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let port = url.rsplit(':').next().unwrap();
    for (endpoint, extra) in [
        (format!("http://127.0.0.1:{port}"), vec![]),
        (url.clone(), vec!["--insecure-skip-tls-verify"]),
    ] {
        let out = run(version
            .etcdctl()
            .args([
                "--endpoints",
                &endpoint,
                "--dial-timeout",
                "2s",
                "--command-timeout",
                "3s",
            ])
            .args(extra)
            .args(["get", "/kubernetes.io/secrets/", "--prefix", "--keys-only"]));
        assert_ne!(
            exit_code(&out),
            0,
            "{endpoint} answered:\n{}",
            describe_output(&out)
        );
        assert!(
            !stdout_str(&out).contains("secret-"),
            "{}",
            describe_output(&out)
        );
    }
    let environ = std::fs::read(format!("/proc/{etcd_pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("planted-secret"),
        "the scratch etcd inherited the drill's environment"
    );
    signal(child.id(), "TERM");
    signal(child.id(), "CONT");
    let out = wait_within(child, Duration::from_secs(20), "SIGTERM to a drill");
    assert_eq!(exit_code(&out), 143, "{}", describe_output(&out));
    assert!(
        stderr_str(&out).contains("stopped by SIGTERM"),
        "{}",
        describe_output(&out)
    );
    assert!(!stderr_str(&out).contains("panicked"));
    assert!(
        wait_until(Duration::from_secs(5), || gone(etcd_pid)),
        "etcd {etcd_pid} still runs"
    );
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch left after SIGTERM"
    );

    let (mut child, (etcd_pid, _)) = start_drill();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || gone(etcd_pid)),
        "etcd {etcd_pid} outlived its SIGKILLed drill"
    );
    let mut cmd = drill_cmd(&fx, &config, None);
    let out = run(cmd.arg("--etcd-bin-dir").arg(version.bin_dir()));
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "the killed drill's scratch directory was not removed by the next drill"
    );
}

#[test]
fn an_auth_enabled_etcd_is_backed_up_by_password_and_drilled() {
    auth_enabled_backup_and_drill(EtcdVersion::V34);
}

#[test]
fn an_auth_enabled_etcd_35_is_backed_up_by_password_and_drilled() {
    auth_enabled_backup_and_drill(EtcdVersion::V35);
}

/// etcd with `auth enable`: a backup as `root` by `source.etcd.username` and
/// `password_file` works and its drill passes (the scratch etcd keeps auth on and is asked
/// with a client certificate whose CN is `root`). A wrong password fails naming
/// `password_file`, no credentials fail saying what to set, and the password is never in
/// any output.
fn auth_enabled_backup_and_drill(version: EtcdVersion) {
    const PASSWORD: &str = "Corr3ct-h0rse-battery";
    let etcd = EtcdServer::start_version(version, false);
    load_cluster(&etcd);
    let ctl = |args: &[&str]| {
        run_ok(etcd.etcdctl().args(args));
    };
    ctl(&["user", "add", "root", "--new-user-password", PASSWORD]);
    ctl(&["auth", "enable"]);
    let fx = Fixture::new();
    write_encryption_config(&fx, &CBC_KEY);
    std::fs::create_dir_all(fx.path("scratch")).unwrap();
    let password_file = fx.path("etcd-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let wrong_file = fx.path("wrong-password");
    std::fs::write(&wrong_file, "not-the-password\n").unwrap();
    let (_, url) = fx.file_url("backups");
    let targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let source = |credentials: &str| {
        fx.etcd_source_for(&etcd).replace(
            "    timeout: 5s\n",
            &format!("    timeout: 5s\n{credentials}"),
        )
    };
    let with = |file: &Path| {
        format!(
            "    username: root\n    password_file: {}\n",
            file.display()
        )
    };
    let good = fx.write_config("good.yaml", &source(&with(&password_file)), &targets, "");
    let wrong = fx.write_config("wrong.yaml", &source(&with(&wrong_file)), &targets, "");
    let none = fx.write_config("none.yaml", &source(""), &targets, "");

    let out = run(fx.cmd(&good).args(["-vv", "backup", "--no-prune"]));
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    assert!(
        !describe_output(&out).contains(PASSWORD),
        "the password was printed"
    );
    let out = run(drill_cmd(&fx, &good, None)
        .arg("--etcd-bin-dir")
        .arg(version.bin_dir()));
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let record = json(&out);
    assert_eq!(check(&record, "key counts")["ok"], true, "{record}");

    let out = run(fx.cmd(&wrong).args(["backup", "--no-prune"]));
    assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
    let err = stderr_str(&out);
    assert!(
        err.contains("source.etcd.password_file") && err.contains("authentication failed"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password") && !err.contains(PASSWORD),
        "{err}"
    );

    let out = run(fx.cmd(&none).args(["backup", "--no-prune"]));
    assert_ne!(exit_code(&out), 0, "{}", describe_output(&out));
    assert!(
        stderr_str(&out).contains("source.etcd.username"),
        "{}",
        describe_output(&out)
    );
    // The config check does not read the password either.
    let out = run(fx.cmd(&good).args(["config", "check", "--connect"]));
    assert!(!describe_output(&out).contains(PASSWORD));
}
