//! Replicas and `copy` (issue 22): backups copied from a directory to S3 (moto) and from
//! S3 to Azure (Azurite) verify deeply there with the original identities, carry their
//! drill records, are skipped once complete, finish after an interrupted or SIGKILLed
//! copy, and restore from the replica alone.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fixture::{Fixture, azure_target, s3_target, s3_target_at};
use common::*;
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", describe_output(out)))
}

fn listed<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {list:?}"))
}

fn replica_list(fx: &Fixture, config: &Path) -> Vec<Value> {
    json(&run_ok(fx.cmd(config).args([
        "list",
        "--json",
        "--replica",
        "dr",
    ])))
    .as_array()
    .unwrap()
    .clone()
}

#[test]
fn copies_to_a_replica_verify_skip_resume_and_restore_without_the_primary() {
    let moto = Moto::start();
    moto.create_bucket("dr-backups");
    let etcd = EtcdServer::start(false);
    etcd.load(100, 200);
    let fx = Fixture::new();
    let (primary, url) = fx.file_url("backups");
    let config = fx.write_config(
        "config.yaml",
        &fx.etcd_source_for(&etcd),
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        &format!(
            "replicas:\n  - name: dr\n    snapshot: {}\n",
            s3_target(&moto, "dr-backups", "etcd")
        ),
    );
    let first = last_line(&run_ok(fx.cmd(&config).arg("backup")));
    let second = last_line(&run_ok(fx.cmd(&config).arg("backup")));
    std::fs::create_dir_all(fx.path("scratch")).unwrap();
    run_ok(
        fx.cmd(&config)
            .args(["drill", &second, "--scratch-dir"])
            .arg(fx.path("scratch"))
            .args(fx.identity_args()),
    );

    let out = run_ok(fx.cmd(&config).args(["copy", "--all", "--to", "dr"]));
    assert_eq!(
        stdout_str(&out).lines().collect::<Vec<_>>(),
        [
            format!("{first} copied to dr"),
            format!("{second} copied to dr")
        ]
    );
    // Deep verify at the replica with the original identities; the drill record came along.
    let mut verify = fx.cmd(&config);
    verify
        .args(["verify", "--all", "--replica", "dr"])
        .args(fx.identity_args());
    run_ok(&mut verify);
    let list = replica_list(&fx, &config);
    assert_eq!(listed(&list, &first)["complete"], true);
    assert_eq!(listed(&list, &second)["drill"]["ok"], true, "{list:?}");

    // Complete copies are skipped.
    let out = run_ok(
        fx.cmd(&config)
            .args(["copy", "--all", "--to", "dr", "--json"]),
    );
    let report = json(&out);
    assert!(
        report
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["result"] == "already_complete"),
        "{report}"
    );

    // What an interrupted copy leaves: an artifact cut short and no manifest. Readers of
    // the replica pass it over; the next copy finishes it.
    let third = last_line(&run_ok(fx.cmd(&config).arg("backup")));
    let snapshot_key = format!("etcd/test/{third}/snapshot.db.zst.age");
    let whole = std::fs::read(primary.join(format!("test/{third}/snapshot.db.zst.age"))).unwrap();
    moto.put_object("dr-backups", &snapshot_key, &whole[..whole.len() / 2]);
    let list = replica_list(&fx, &config);
    assert_ne!(listed(&list, &third)["complete"], true, "{list:?}");
    let out = run_ok(fx.cmd(&config).args(["copy", "--latest", "--to", "dr"]));
    assert_eq!(last_line(&out), format!("{third} copied to dr"));
    assert_eq!(moto.get_object("dr-backups", &snapshot_key).unwrap(), whole);
    run_ok(&mut verify);

    // A replica name that is not configured is a usage error.
    let out = run(fx
        .cmd(&config)
        .args(["copy", "--latest", "--to", "elsewhere"]));
    assert_eq!(exit_code(&out), 2, "{}", describe_output(&out));
    assert!(
        stderr_str(&out).contains("its replicas: dr"),
        "{}",
        describe_output(&out)
    );

    // The primary gone: restore, status and list read the replica alone.
    std::fs::rename(&primary, fx.path("primary-gone")).unwrap();
    std::fs::create_dir_all(&primary).unwrap();
    let out = run_ok(
        fx.cmd(&config)
            .args(["restore", "--latest", "--replica", "dr", "--to"])
            .arg(fx.path("restored"))
            .args(fx.identity_args()),
    );
    let restored: Vec<String> = stdout_str(&out).lines().map(str::to_string).collect();
    assert_eq!(restored.len(), 2, "{restored:?}");
    assert!(restored.iter().all(|p| Path::new(p).is_file()));
    run_ok(
        fx.cmd(&config)
            .args(["status", "--replica", "dr", "--max-age", "1h"]),
    );
    let out = run(fx.cmd(&config).args(["status", "--max-age", "1h"]));
    assert_eq!(
        exit_code(&out),
        5,
        "the primary is empty: {}",
        describe_output(&out)
    );
}

/// A copy SIGKILLed while an artifact streams to a slow replica (every part upload held
/// 4 s by the fault proxy) leaves no manifest there, so the replica does not list the
/// backup as complete; the rerun gives one complete copy that verifies deeply with the
/// original identities, and writes the manifest only after both artifacts are complete.
#[test]
fn a_copy_killed_mid_artifact_leaves_no_manifest_and_the_rerun_completes_it() {
    let moto = Moto::start();
    moto.create_bucket("dr-backups");
    let proxy = FaultProxy::start(&moto);
    let etcd = EtcdServer::start(false);
    // About 40 MB of k8s-like values: the artifact spans two 6 MiB parts.
    etcd.load(20_000, 2_000);
    let fx = Fixture::new();
    let (primary, url) = fx.file_url("backups");
    let config = fx.write_config(
        "config.yaml",
        &fx.etcd_source_for(&etcd),
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        &format!(
            "replicas:\n  - name: dr\n    snapshot: {}\n",
            s3_target_at(&proxy.endpoint(), "dr-backups", "etcd")
        ),
    );
    let id = last_line(&run_ok(fx.cmd(&config).arg("backup")));
    let snapshot = format!("/dr-backups/etcd/test/{id}/snapshot.db.zst.age");
    let stored = std::fs::metadata(primary.join(format!("test/{id}/snapshot.db.zst.age")))
        .unwrap()
        .len();
    assert!(stored > 6 << 20, "{stored} bytes: one part only");

    proxy.configure_delays(&["PUT ", "partNumber="], 4_000);
    let mut child = fx
        .cmd(&config)
        .args(["copy", &id, "--to", "dr"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let part_in_flight = || {
        proxy
            .requests()
            .iter()
            .any(|l| l.starts_with("delay PUT ") && l.ends_with(&snapshot))
    };
    assert!(
        wait_until(Duration::from_secs(60), part_in_flight),
        "no part of the snapshot artifact reached the proxy: {}",
        proxy.requests_tail(20)
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let keys = moto.list_keys("dr-backups", &format!("etcd/test/{id}/"));
    assert!(
        !keys.iter().any(|k| k.ends_with("manifest.json")),
        "a manifest before the artifacts were complete: {keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.ends_with("snapshot.db.zst.age")),
        "the artifact looks whole after a kill mid-upload: {keys:?}"
    );
    let list = replica_list(&fx, &config);
    assert!(
        list.iter().all(|b| b["complete"] != true),
        "the replica lists a killed copy as complete: {list:?}"
    );

    proxy.set(0, 0.0, &[]);
    let seen = proxy.requests().len();
    let out = run_ok(fx.cmd(&config).args(["copy", &id, "--to", "dr"]));
    assert_eq!(last_line(&out), format!("{id} copied to dr"));
    let rerun = proxy.requests()[seen..].to_vec();
    let position = |pred: &dyn Fn(&str) -> bool| rerun.iter().rposition(|l| pred(l));
    let manifest_put = position(&|l| l.starts_with("ok PUT ") && l.ends_with("/manifest.json"))
        .unwrap_or_else(|| panic!("no manifest written: {rerun:?}"));
    for artifact in ["snapshot.db.zst.age", "static_kuberesources.tar.zst.age"] {
        // The upload's completion (CompleteMultipartUpload, or a single PUT).
        let done = position(&|l| {
            l.ends_with(&format!("/{id}/{artifact}"))
                && (l.starts_with("ok POST ") || l.starts_with("ok PUT "))
        })
        .unwrap_or_else(|| panic!("{artifact} not written: {rerun:?}"));
        assert!(
            done < manifest_put,
            "{artifact} after the manifest: {rerun:?}"
        );
    }

    let list = replica_list(&fx, &config);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(listed(&list, &id)["complete"], true);
    run_ok(
        fx.cmd(&config)
            .args(["verify", &id, "--replica", "dr"])
            .args(fx.identity_args()),
    );
    let keys = moto.list_keys("dr-backups", &format!("etcd/test/{id}/"));
    assert_eq!(
        keys.iter()
            .filter(|k| k.ends_with("snapshot.db.zst.age"))
            .count(),
        1,
        "{keys:?}"
    );
}

/// From one provider to another: S3 (moto, keys in a bucket of their own) to Azure
/// (Azurite, keys in a container of their own). The copies verify deeply with the original
/// identities, the keys side describes itself there too, and with moto stopped the replica
/// alone lists, reports and restores.
#[test]
fn copies_from_moto_to_azurite_verify_and_restore_with_the_primary_down() {
    let mut moto = Moto::start();
    moto.create_bucket("backups");
    moto.create_bucket("keys");
    let azurite = Azurite::start();
    azurite.create_container("dr-snap");
    azurite.create_container("dr-kv");
    let etcd = EtcdServer::start(false);
    etcd.load(300, 500);
    let fx = Fixture::new();
    let config = fx.write_config(
        "config.yaml",
        &fx.etcd_source_for(&etcd),
        &format!(
            "  snapshot: {}\n  static_resources: {}\n",
            s3_target(&moto, "backups", "etcd"),
            s3_target(&moto, "keys", "etcd")
        ),
        &format!(
            "replicas:\n  - name: dr\n    snapshot: {}\n    static_resources: {}\n",
            azure_target(&azurite, "dr-snap", "etcd"),
            azure_target(&azurite, "dr-kv", "etcd")
        ),
    );
    let first = last_line(&run_ok(fx.cmd(&config).arg("backup")));
    let second = last_line(&run_ok(fx.cmd(&config).arg("backup")));

    let out = run_ok(fx.cmd(&config).args(["copy", "--all", "--to", "dr"]));
    assert_eq!(
        stdout_str(&out).lines().collect::<Vec<_>>(),
        [
            format!("{first} copied to dr"),
            format!("{second} copied to dr")
        ]
    );
    run_ok(
        fx.cmd(&config)
            .args(["verify", "--all", "--replica", "dr"])
            .args(fx.identity_args()),
    );
    let keys_side = azurite.list_blobs("dr-kv", "etcd/");
    for id in [&first, &second] {
        for name in ["static_kuberesources.tar.zst.age", "manifest.json"] {
            let blob = format!("etcd/test/{id}/{name}");
            assert!(keys_side.contains(&blob), "{blob} not in {keys_side:?}");
        }
    }
    let snapshot_side = azurite.list_blobs("dr-snap", "etcd/");
    assert!(
        !snapshot_side
            .iter()
            .any(|b| b.ends_with("static_kuberesources.tar.zst.age")),
        "the keys archive beside the snapshot: {snapshot_side:?}"
    );
    let primary_snapshot = moto
        .get_object(
            "backups",
            &format!("etcd/test/{second}/snapshot.db.zst.age"),
        )
        .unwrap();
    assert_eq!(
        azurite
            .download(
                "dr-snap",
                &format!("etcd/test/{second}/snapshot.db.zst.age")
            )
            .unwrap(),
        primary_snapshot,
        "the copy is the same object"
    );

    // The primary store down: the replica alone.
    moto.kill();
    let list = replica_list(&fx, &config);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|b| b["complete"] == true), "{list:?}");
    run_ok(
        fx.cmd(&config)
            .args(["status", "--replica", "dr", "--max-age", "1h"]),
    );
    let out = run_ok(
        fx.cmd(&config)
            .args(["restore", "--latest", "--replica", "dr", "--to"])
            .arg(fx.path("restored"))
            .args(fx.identity_args()),
    );
    let restored: Vec<String> = stdout_str(&out).lines().map(str::to_string).collect();
    assert_eq!(restored.len(), 2, "{restored:?}");
    assert!(
        restored.iter().all(|p| Path::new(p).is_file()),
        "{restored:?}"
    );
    let db = restored.iter().find(|p| p.ends_with(".db")).unwrap();
    let out = run_ok(
        std::process::Command::new("etcdctl")
            .args(["snapshot", "status", "-w", "json"])
            .arg(db),
    );
    assert!(
        stdout_str(&out).contains("\"revision\""),
        "{}",
        describe_output(&out)
    );
    let out = run(fx.cmd(&config).args(["list"]));
    assert_eq!(
        exit_code(&out),
        1,
        "the primary is down: {}",
        describe_output(&out)
    );
}
