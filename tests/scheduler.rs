//! `run`: scheduled backups, a backup after every platform upgrade, Prometheus metrics.

mod common;

use std::process::Command;
use std::time::Duration;

use common::fixture::Fixture;
use common::openshift::{set_cluster_version, settle_operators};
use common::*;

fn list_ids(fx: &Fixture, config: &std::path::Path) -> Vec<serde_json::Value> {
    let out = run_ok(fx.cmd(config).args(["list", "--json"]));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

fn start(fx: &Fixture, config: &std::path::Path, metrics_port: u16) -> Scheduler {
    Scheduler::start(fx.cmd(config), metrics_port, &fx.path("run.log"))
}

#[test]
fn scheduled_backups_run_and_metrics_are_served() {
    let etcd = EtcdServer::start(false);
    etcd.load(100, 100);
    let fx = Fixture::new();
    let (_, config) = fx.dir_config(
        &etcd,
        // Once a minute is the most a cron may fire (`config check` refuses more).
        "schedule: { cron: \"* * * * *\" }\nretention: { keep_last: 2 }\n",
    );
    let port = free_port();
    let mut scheduler = start(&fx, &config, port);
    let enough = wait_until(Duration::from_secs(150), || {
        list_ids(&fx, &config)
            .iter()
            .filter(|b| b["complete"] == true)
            .count()
            >= 2
    });
    assert!(
        enough,
        "two scheduled backups within 150 s:\n{}",
        tail(&fx.path("run.log"), 30)
    );
    let metrics = http("GET", &format!("http://127.0.0.1:{port}/metrics"), &[], b"");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains("etcd_offsite_backups_total{cluster=\"test\",result=\"success\"}"),
        "{text}"
    );
    assert!(
        text.contains("etcd_offsite_last_success_timestamp_seconds"),
        "{text}"
    );
    // Prune runs after each backup.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        list_ids(&fx, &config).len() <= 3,
        "pruned to keep_last 2 (+1 in flight)"
    );
    // SIGTERM stops it cleanly.
    run_ok(Command::new("kill").args(["-TERM", &scheduler.0.id().to_string()]));
    let status = scheduler.0.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

#[test]
fn an_upgrade_triggers_a_backup() {
    let etcd = EtcdServer::start(false);
    settle_operators(&etcd);
    set_cluster_version(&etcd, &[("Completed", "4.14.7", 24 * 300)]);
    let fx = Fixture::new();
    // The cron never fires during the test: only upgrades cause backups.
    let (_, config) = fx.dir_config(
        &etcd,
        "schedule: { cron: \"0 3 1 1 *\", upgrade_check: 1s }\n",
    );
    let _scheduler = start(&fx, &config, free_port());
    let versions = || -> Vec<String> {
        list_ids(&fx, &config)
            .iter()
            .filter_map(|b| b["platform_version"].as_str().map(str::to_string))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || versions() == ["4.14.7"]),
        "first backup of 4.14.7: {:?}\n{}",
        versions(),
        tail(&fx.path("run.log"), 30)
    );
    // No new version: no new backup; nor while the upgrade is under way (Partial).
    set_cluster_version(
        &etcd,
        &[
            ("Partial", "4.14.8", 24 * 30),
            ("Completed", "4.14.7", 24 * 300),
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(versions(), ["4.14.7"]);
    set_cluster_version(
        &etcd,
        &[
            ("Completed", "4.14.8", 24 * 30),
            ("Completed", "4.14.7", 24 * 300),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(20), || versions()
            == ["4.14.8", "4.14.7"]),
        "a backup after the upgrade: {:?}\n{}",
        versions(),
        tail(&fx.path("run.log"), 30)
    );
}

/// `schedule.drill`: `run` drills the newest backup on its own cron, stores the record,
/// and a restart seeds the gauges from the store (the drill's time survives it).
#[test]
fn scheduled_drills_run_and_survive_a_restart_in_the_metrics() {
    let etcd = EtcdServer::start(false);
    etcd.load(100, 100);
    let fx = Fixture::new();
    let scratch = fx.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (_, config) = fx.dir_config(
        &etcd,
        &format!(
            "schedule:\n  cron: \"0 3 1 1 *\"\n  drill:\n    cron: \"* * * * *\"\n    identities: [\"{}\", \"{}\"]\n    scratch_dir: {}\n",
            fx.snapshot_key.display(),
            fx.static_key.display(),
            scratch.display()
        ),
    );
    run_ok(fx.cmd(&config).arg("backup"));
    let port = free_port();
    let scheduler = start(&fx, &config, port);
    let drilled = wait_until(Duration::from_secs(100), || {
        list_ids(&fx, &config)[0]["drill"]["ok"] == true
    });
    assert!(
        drilled,
        "a scheduled drill within 100 s:\n{}",
        tail(&fx.path("run.log"), 30)
    );
    let scrape = || http("GET", &format!("http://127.0.0.1:{port}/metrics"), &[], b"").text();
    assert!(
        wait_until(Duration::from_secs(10), || scrape().contains(
            "etcd_offsite_drills_total{cluster=\"test\",result=\"success\"}"
        )),
        "{}",
        scrape()
    );
    drop(scheduler);

    // Restarted (the drill cron far away): the gauges come from the store at once.
    let config = fx.write_config(
        "config-restart.yaml",
        &fx.etcd_source_for(&etcd),
        &format!(
            "  snapshot: {{ url: \"file://{}\" }}\n",
            fx.path("backups").display()
        ),
        "schedule: { cron: \"0 3 1 1 *\" }\n",
    );
    let port = free_port();
    let _scheduler = start(&fx, &config, port);
    let seeded = wait_until(Duration::from_secs(20), || {
        if !port_open(port) {
            return false;
        }
        let text = http("GET", &format!("http://127.0.0.1:{port}/metrics"), &[], b"").text();
        text.lines().any(|l| {
            l.starts_with(
                "etcd_offsite_last_drill_success_timestamp_seconds{cluster=\"test\",command=\"run\"} ",
            )
        })
    });
    assert!(seeded, "{}", tail(&fx.path("run.log"), 30));
}
