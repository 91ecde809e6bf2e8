//! Many clusters in one target (issue 22): `status --all-clusters` finds every cluster by
//! one delimiter listing, names the stale ones (exit 5), and reads each cluster only as far
//! as its newest backup and drill need.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::fixture::{Fixture, s3_target};
use common::*;
use serde_json::Value;

/// A config of cluster `cluster` backing up `etcd` into `targets` (YAML under `targets:`).
fn cluster_config(fx: &Fixture, etcd: &EtcdServer, cluster: &str, targets: &str) -> PathBuf {
    let path = fx.write_config(
        &format!("{cluster}.yaml"),
        &fx.etcd_source_for(etcd),
        targets,
        "",
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("cluster: test\n", &format!("cluster: {cluster}\n"));
    std::fs::write(&path, text).unwrap();
    path
}

fn fleet_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", describe_output(out)))
}

fn names(fleet: &Value) -> Vec<String> {
    fleet["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap().to_string())
        .collect()
}

fn cluster<'a>(fleet: &'a Value, name: &str) -> &'a Value {
    fleet["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == name)
        .unwrap_or_else(|| panic!("no cluster {name} in {fleet}"))
}

fn age(fleet: &Value, name: &str) -> i64 {
    cluster(fleet, name)["newest_age_seconds"].as_i64().unwrap()
}

/// `status --all-clusters ARGS` through the counting proxy.
fn fleet_status(fx: &Fixture, config: &Path, proxy: &CountingProxy, args: &[&str]) -> Output {
    let mut cmd: Command = fx.cmd(config);
    cmd.args(["status", "--all-clusters"]).args(args);
    run(with_proxy_env(&mut cmd, &proxy.url(), None))
}

/// (S3 list calls, all requests) logged by the proxy from line `from` on.
fn requests_since(proxy: &CountingProxy, from: usize) -> (usize, usize) {
    let lines = proxy.lines();
    let new = &lines[from..];
    (
        new.iter().filter(|l| l.contains("list-type=2")).count(),
        new.len(),
    )
}

#[test]
fn two_and_three_clusters_in_one_bucket_the_stale_one_named_and_listing_bounded() {
    let moto = Moto::start();
    moto.create_bucket("fleet");
    let proxy = CountingProxy::start();
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let fx = Fixture::new();
    let targets = format!("  snapshot: {}\n", s3_target(&moto, "fleet", "etcd"));
    let old = cluster_config(&fx, &etcd, "old", &targets);
    let east = cluster_config(&fx, &etcd, "east", &targets);
    let west = cluster_config(&fx, &etcd, "west", &targets);
    run_ok(fx.cmd(&old).arg("backup"));
    std::thread::sleep(Duration::from_secs(8));
    run_ok(fx.cmd(&east).arg("backup"));
    // Prefixes are untrusted: names that cannot be clusters are not read, and a prefix
    // without backups or a lock (another tool's files) is not a cluster.
    moto.put_object(
        "fleet",
        "etcd/has space/20261123T104649Z/manifest.json",
        b"{}",
    );
    moto.put_object("fleet", "etcd/.hidden/x", b"x");
    moto.put_object("fleet", "etcd/notes/readme.txt", b"x");

    // Two clusters.
    let seen = proxy.lines().len();
    let out = fleet_status(&fx, &east, &proxy, &["--json"]);
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let fleet = fleet_json(&out);
    assert_eq!(names(&fleet), ["east", "old"], "{fleet}");
    assert_eq!(fleet["ignored_prefixes"], 2, "{fleet}");
    assert_eq!(cluster(&fleet, "east")["signature"], "not_checked");
    assert!(
        cluster(&fleet, "east")["newest_stored_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    let (lists_two, requests_two) = requests_since(&proxy, seen);
    // The root by delimiter, then one listing per prefix named like a cluster (east, notes, old).
    assert_eq!(lists_two, 4, "{:?}", &proxy.lines()[seen..]);
    let (age_east, age_old) = (age(&fleet, "east"), age(&fleet, "old"));
    assert!(age_old >= age_east + 8, "{fleet}");

    let limit = format!("{}s", age_east + 4);
    let out = fleet_status(&fx, &east, &proxy, &["--max-age", &limit]);
    assert_eq!(exit_code(&out), 5, "{}", describe_output(&out));
    let stderr = stderr_str(&out);
    assert!(
        stderr.contains("1 of 2 cluster(s)")
            && stderr.contains("old (no complete backup started within"),
        "{stderr}"
    );
    assert!(!stderr.contains("east ("), "{stderr}");
    let stdout = stdout_str(&out);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{stdout}"))
            .to_string()
    };
    assert!(
        line("old").contains("STALE: no complete backup"),
        "{stdout}"
    );
    assert!(line("east").ends_with(" ok"), "{stdout}");

    // More backups per cluster: the same listing calls and the same requests in all.
    run_ok(fx.cmd(&east).arg("backup"));
    run_ok(fx.cmd(&east).arg("backup"));
    let seen = proxy.lines().len();
    let out = fleet_status(&fx, &east, &proxy, &["--json"]);
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    assert_eq!(cluster(&fleet_json(&out), "east")["directories"], 3);
    assert_eq!(
        requests_since(&proxy, seen),
        (lists_two, requests_two),
        "three backups of east cost what one did: {:?}",
        &proxy.lines()[seen..]
    );

    // A third cluster: one listing more.
    run_ok(fx.cmd(&west).arg("backup"));
    let out = fleet_status(&fx, &east, &proxy, &["--json"]);
    let fleet = fleet_json(&out);
    assert_eq!(names(&fleet), ["east", "old", "west"], "{fleet}");
    let age_old = age(&fleet, "old");
    assert!(age_old >= age(&fleet, "east").max(age(&fleet, "west")) + 6);
    let limit = format!("{}s", age_old - 3);
    let prom = fx.path("fleet.prom");
    let seen = proxy.lines().len();
    let out = fleet_status(
        &fx,
        &east,
        &proxy,
        &[
            "--json",
            "--max-age",
            &limit,
            "--metrics-textfile",
            prom.to_str().unwrap(),
        ],
    );
    assert_eq!(exit_code(&out), 5, "{}", describe_output(&out));
    let fleet = fleet_json(&out);
    assert_eq!(fleet["stale"], serde_json::json!(["old"]), "{fleet}");
    assert_eq!(cluster(&fleet, "west")["fresh"], true);
    assert_eq!(requests_since(&proxy, seen).0, lists_two + 1);
    assert!(stderr_str(&out).contains("1 of 3 cluster(s)"));

    // One series per cluster of the bucket under the names of one cluster's figures, so
    // the per-cluster rules of examples/monitoring/prometheusrule.yaml hold for them too.
    let metrics = prometheus_samples(&prom);
    let of = |name: &str, cluster: &str| {
        metrics
            .get(&format!("{name}{{cluster={cluster},command=status}}"))
            .copied()
    };
    assert_eq!(of("etcd_offsite_stale", "old"), Some(1.0), "{metrics:?}");
    assert_eq!(of("etcd_offsite_stale", "east"), Some(0.0));
    assert_eq!(of("etcd_offsite_stale", "west"), Some(0.0));
    assert_eq!(of("etcd_offsite_backup_recorded", "old"), Some(1.0));
    assert_eq!(of("etcd_offsite_drill_recorded", "west"), Some(0.0));
    assert_eq!(
        of("etcd_offsite_last_drill_success_timestamp_seconds", "west"),
        None
    );
    assert_eq!(
        metrics["etcd_offsite_last_run_success{cluster=east,command=status}"],
        1.0
    );
    let finished = chrono::DateTime::parse_from_rfc3339(
        cluster(&fleet, "west")["newest_finished_at"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let last = of("etcd_offsite_last_success_timestamp_seconds", "west").unwrap();
    assert!((last - finished.timestamp_millis() as f64 / 1000.0).abs() < 0.01);
    assert!(of("etcd_offsite_last_stored_bytes", "west").unwrap() > 0.0);
    // What Prometheus itself reads (promtool's parser and lint).
    promtool_check_metrics(&prom);
}

#[test]
fn clusters_in_a_directory_with_drills_and_a_planted_link() {
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let fx = Fixture::new();
    let (dir, url) = fx.file_url("fleet");
    let targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let drilled = cluster_config(&fx, &etcd, "drilled", &targets);
    let undrilled = cluster_config(&fx, &etcd, "undrilled", &targets);
    let id = last_line(&run_ok(fx.cmd(&drilled).arg("backup")));
    run_ok(fx.cmd(&undrilled).arg("backup"));
    std::fs::create_dir_all(fx.path("scratch")).unwrap();
    run_ok(
        fx.cmd(&drilled)
            .args(["drill", "--latest", "--scratch-dir"])
            .arg(fx.path("scratch"))
            .args(fx.identity_args()),
    );
    // A link to another target's cluster is never followed.
    let (elsewhere, elsewhere_url) = fx.file_url("elsewhere");
    let planted = cluster_config(
        &fx,
        &etcd,
        "planted",
        &format!("  snapshot: {{ url: \"{elsewhere_url}\" }}\n"),
    );
    run_ok(fx.cmd(&planted).arg("backup"));
    std::os::unix::fs::symlink(elsewhere.join("planted"), dir.join("planted")).unwrap();

    let status = |args: &[&str]| {
        run(fx
            .cmd(&drilled)
            .args(["status", "--all-clusters"])
            .args(args))
    };
    let out = status(&["--json", "--max-age", "1h", "--max-drill-age", "1h"]);
    assert_eq!(exit_code(&out), 5, "{}", describe_output(&out));
    let fleet = fleet_json(&out);
    assert_eq!(names(&fleet), ["drilled", "undrilled"], "{fleet}");
    assert_eq!(fleet["stale"], serde_json::json!(["undrilled"]), "{fleet}");
    assert_eq!(cluster(&fleet, "drilled")["newest_drill_id"], id.as_str());
    assert_eq!(cluster(&fleet, "drilled")["drill_fresh"], true);
    assert_eq!(cluster(&fleet, "undrilled")["fresh"], true);
    assert!(
        stderr_str(&out).contains("undrilled (no successful drill within 1h)"),
        "{}",
        describe_output(&out)
    );

    let out = status(&["--max-age", "1h"]);
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let stdout = stdout_str(&out);
    assert_eq!(
        stdout.lines().count(),
        3,
        "a header and one line each:\n{stdout}"
    );
    assert!(stdout.lines().next().unwrap().starts_with("CLUSTER"));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("drilled ") && l.contains(" ago") && l.ends_with(" ok")),
        "{stdout}"
    );
}

/// The fleet's PrometheusRule is valid, and each alert fires when it should and not
/// otherwise (tests/support/fleet_alerts_test.yaml).
#[test]
fn the_fleet_prometheus_rules_fire_when_they_should_and_only_then() {
    promtool_test_rules(
        "examples/monitoring/fleet-prometheusrule.yaml",
        "fleet_alerts_test.yaml",
    );
}

/// A bucket root with thousands of prefixes: the delimiter listing pages itself and stops
/// past its cap (three pages of 1,000) instead of reading every page, and the error names
/// the problem and the fix.
#[test]
fn a_root_with_thousands_of_prefixes_is_refused_after_a_bounded_listing() {
    let moto = Moto::start();
    moto.create_bucket("crowded");
    let proxy = CountingProxy::start();
    let etcd = EtcdServer::start(false);
    let fx = Fixture::new();
    let targets = format!("  snapshot: {}\n", s3_target(&moto, "crowded", "etcd"));
    let config = cluster_config(&fx, &etcd, "east", &targets);
    // 5,200 prefixes: reading them all would take six pages.
    for n in 0..5200 {
        moto.put_object("crowded", &format!("etcd/c{n:05}/x"), b"x");
    }
    let seen = proxy.lines().len();
    let out = fleet_status(&fx, &config, &proxy, &["--json"]);
    assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
    let stderr = stderr_str(&out);
    assert!(
        stderr.contains("holds more than 2000 prefixes")
            && stderr.contains("point targets.snapshot at the prefix"),
        "{stderr}"
    );
    let (lists, requests) = requests_since(&proxy, seen);
    assert_eq!(lists, 3, "{:?}", &proxy.lines()[seen..]);
    assert_eq!(
        requests,
        3,
        "only the root's pages: {:?}",
        &proxy.lines()[seen..]
    );
}
