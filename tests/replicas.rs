//! Replicas and `copy` (issue 22): backups copied from a directory to S3 (moto) verify
//! deeply there with the original identities, carry their drill records, are skipped once
//! complete, finish after an interrupted copy, and restore from the replica alone.

mod common;

use std::path::Path;

use common::fixture::{Fixture, s3_target};
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
