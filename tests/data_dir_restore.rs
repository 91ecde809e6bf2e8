//! `restore --data-dir` (issue 22): an etcd member data directory written by the stock
//! `etcdutl snapshot restore` (`etcdctl` on 3.4) from the verified snapshot, which a real
//! etcd then starts on with the recorded revision and keys.

mod common;

use std::path::Path;
use std::process::Command;

use common::fixture::Fixture;
use common::*;
use serde_json::Value;

fn restore_cmd(fx: &Fixture, config: &Path, data_dir: &Path, version: EtcdVersion) -> Command {
    let peer = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = fx.cmd(config);
    cmd.args(["restore", "--latest", "--data-dir"])
        .arg(data_dir)
        .args(["--name", "m1", "--initial-cluster"])
        .arg(format!("m1={peer}"))
        .arg("--initial-advertise-peer-urls")
        .arg(&peer)
        .arg("--etcd-bin-dir")
        .arg(version.bin_dir())
        .arg("--identity")
        .arg(&fx.snapshot_key);
    cmd
}

/// What the fixture's directory holds besides its own files: leftovers of a restore.
fn leftovers(fx: &Fixture) -> Vec<String> {
    std::fs::read_dir(fx.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("etcd-offsite"))
        .collect()
}

#[test]
fn a_data_dir_restore_on_etcd_34_starts_with_the_recorded_revision_and_keys() {
    restores_into_a_data_dir(EtcdVersion::V34);
}

#[test]
fn a_data_dir_restore_on_etcd_35_starts_with_the_recorded_revision_and_keys() {
    restores_into_a_data_dir(EtcdVersion::V35);
}

fn restores_into_a_data_dir(version: EtcdVersion) {
    let etcd = EtcdServer::start_version(version, false);
    etcd.load(300, 200);
    let fx = Fixture::new();
    let (_, config) = fx.dir_config(&etcd, "");
    let manifest: Value =
        serde_json::from_slice(&run_ok(fx.cmd(&config).args(["backup", "--json"])).stdout).unwrap();
    let recorded_revision = manifest["source"]["revision"].as_i64().unwrap();
    let recorded_keys = manifest["content"]["keys"].as_u64().unwrap();
    let original = etcd.dump();
    assert_eq!(original.len() as u64, recorded_keys);

    // A non-empty directory is refused before anything is read or written.
    let busy = fx.path("busy");
    std::fs::create_dir_all(busy.join("member")).unwrap();
    let out = run(&mut restore_cmd(&fx, &config, &busy, version));
    assert_eq!(exit_code(&out), 4, "{}", describe_output(&out));
    assert!(
        stderr_str(&out).contains("is not empty (it holds member)"),
        "{}",
        describe_output(&out)
    );
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
    assert!(leftovers(&fx).is_empty(), "{:?}", leftovers(&fx));

    // An empty directory (a mount point) is filled in place.
    let data = fx.path("member-data");
    std::fs::create_dir_all(&data).unwrap();
    let out = run_ok(&mut restore_cmd(&fx, &config, &data, version));
    assert_eq!(last_line(&out), data.display().to_string());
    assert!(data.join("member/snap/db").is_file());
    assert!(data.join("member/wal").is_dir());
    assert!(
        leftovers(&fx).is_empty(),
        "the decoded snapshot and the work directory are gone: {:?}",
        leftovers(&fx)
    );

    let restored = EtcdServer::start_version_on_data_dir(version, "m1", &data);
    assert_eq!(restored.dump(), original, "every key and value");
    assert_eq!(restored.dump().len() as u64, recorded_keys);
    // etcd counts the restore's own membership entries in its raft log, not in the key
    // revision: the store's revision is the recorded one.
    assert_eq!(restored.revision(), recorded_revision);
}

#[test]
fn bump_revision_needs_a_tool_that_has_it_and_mark_compacted() {
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let fx = Fixture::new();
    let (_, config) = fx.dir_config(&etcd, "");
    run_ok(fx.cmd(&config).arg("backup"));
    let data = fx.path("member-data");

    // etcd takes --bump-revision only with --mark-compacted: said before anything runs.
    let out =
        run(restore_cmd(&fx, &config, &data, EtcdVersion::V35).args(["--bump-revision", "1000"]));
    assert_eq!(exit_code(&out), 2, "{}", describe_output(&out));
    assert!(
        stderr_str(&out).contains("--mark-compacted"),
        "{}",
        describe_output(&out)
    );

    // 3.4.23 and 3.5.1 predate the flags (3.4.27, 3.5.10): refused, naming the releases.
    for version in EtcdVersion::ALL {
        let out = run(restore_cmd(&fx, &config, &data, version).args([
            "--bump-revision",
            "1000",
            "--mark-compacted",
        ]));
        assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
        let stderr = stderr_str(&out);
        assert!(
            stderr.contains("has no --bump-revision") && stderr.contains("3.5.10"),
            "{stderr}"
        );
        assert!(!data.exists(), "nothing written");
        assert!(leftovers(&fx).is_empty(), "{:?}", leftovers(&fx));
    }
}
