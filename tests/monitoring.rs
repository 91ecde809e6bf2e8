//! Monitoring as the stack reads it: the textfiles one-shot commands write, checked by
//! Prometheus' `promtool` and scraped by a real node_exporter (Debian
//! `prometheus-node-exporter`) on loopback; the PrometheusRule in examples/monitoring
//! unit-tested with `promtool test rules`, each alert firing and not firing.

mod common;

use std::time::{Duration, Instant};

use common::fixture::Fixture;
use common::*;

/// The value of the one sample `name{labels}` (labels exactly as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn textfiles_pass_promtool_and_node_exporter_scrapes_them() {
    let etcd = EtcdServer::start(false);
    etcd.load(200, 200);
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.path("scratch")).unwrap();
    let textfiles = fx.path("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    let (_, config) = fx.dir_config(&etcd, "");
    let prom = |name: &str| textfiles.join(format!("etcd-offsite-{name}.prom"));

    // An empty target: `status` fails (5) and says so; no backup timestamp is invented.
    run_code(
        fx.cmd(&config)
            .args(["status", "--max-age", "26h", "--metrics-textfile"])
            .arg(prom("status")),
        5,
    );
    let status = std::fs::read_to_string(prom("status")).unwrap();
    assert_eq!(
        sample(
            &status,
            "etcd_offsite_backups_complete{cluster=\"test\",command=\"status\"}"
        ),
        Some(0.0),
        "{status}"
    );
    assert!(
        !status.contains("etcd_offsite_last_success_timestamp_seconds")
            && !status.contains("etcd_offsite_last_drill_success_timestamp_seconds"),
        "{status}"
    );
    assert_eq!(
        sample(
            &status,
            "etcd_offsite_last_run_success{cluster=\"test\",command=\"status\"}"
        ),
        Some(0.0)
    );

    // A backup: its real duration, the counter under its 0.0.4 name, and no drill yet
    // (distinguishable from an old drill: recorded 0 and no timestamp at all).
    let started = Instant::now();
    run_ok(
        fx.cmd(&config)
            .args(["backup", "--metrics-textfile"])
            .arg(prom("backup")),
    );
    let wall = started.elapsed().as_secs_f64();
    let backup = std::fs::read_to_string(prom("backup")).unwrap();
    assert!(!backup.contains("# EOF"), "{backup}");
    assert!(
        backup.contains("# TYPE etcd_offsite_backups_total counter\n"),
        "{backup}"
    );
    for (result, n) in [("success", 1.0), ("failure", 0.0), ("skipped", 0.0)] {
        assert_eq!(
            sample(
                &backup,
                &format!("etcd_offsite_backups_total{{cluster=\"test\",result=\"{result}\"}}")
            ),
            Some(n),
            "{backup}"
        );
    }
    let took = sample(
        &backup,
        "etcd_offsite_last_run_duration_seconds{cluster=\"test\",command=\"backup\"}",
    )
    .unwrap_or_else(|| panic!("{backup}"));
    assert!(
        took > 0.0 && took < wall,
        "backup took {took} s of {wall} s"
    );
    assert_eq!(
        sample(
            &backup,
            "etcd_offsite_drill_recorded{cluster=\"test\",command=\"backup\"}"
        ),
        Some(0.0),
        "{backup}"
    );
    assert!(
        !backup.contains("etcd_offsite_last_drill_success_timestamp_seconds"),
        "{backup}"
    );
    let newest = sample(
        &backup,
        "etcd_offsite_last_success_timestamp_seconds{cluster=\"test\",command=\"backup\"}",
    )
    .unwrap_or_else(|| panic!("{backup}"));
    assert!((chrono::Utc::now().timestamp() as f64 - newest).abs() < 120.0);

    // A drill: recorded, with the time of this drill.
    let out = run(fx
        .cmd(&config)
        .args(["drill", "--latest", "--scratch-dir"])
        .arg(fx.path("scratch"))
        .args(fx.identity_args())
        .arg("--metrics-textfile")
        .arg(prom("drill")));
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let drill = std::fs::read_to_string(prom("drill")).unwrap();
    assert_eq!(
        sample(
            &drill,
            "etcd_offsite_drills_total{cluster=\"test\",result=\"success\"}"
        ),
        Some(1.0),
        "{drill}"
    );
    assert_eq!(
        sample(
            &drill,
            "etcd_offsite_drill_recorded{cluster=\"test\",command=\"drill\"}"
        ),
        Some(1.0),
        "{drill}"
    );
    let drilled = sample(
        &drill,
        "etcd_offsite_last_drill_success_timestamp_seconds{cluster=\"test\",command=\"drill\"}",
    )
    .unwrap_or_else(|| panic!("{drill}"));
    assert!(
        drilled > newest,
        "drill {drilled} after the backup {newest}"
    );
    assert!(
        sample(
            &drill,
            "etcd_offsite_last_run_duration_seconds{cluster=\"test\",command=\"drill\"}"
        )
        .is_some_and(|d| d > 0.0),
        "{drill}"
    );

    for name in ["status", "backup", "drill"] {
        promtool_check_metrics(&prom(name));
    }

    // node_exporter reads the three files of one host side by side: no parse error, no
    // series collected twice (it would drop one and log it), and our series served.
    let port = free_port();
    let mut cmd = std::process::Command::new("prometheus-node-exporter");
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.disable-defaults")
        .arg("--collector.textfile")
        .arg(format!(
            "--collector.textfile.directory={}",
            textfiles.display()
        ));
    let log = fx.path("node_exporter.log");
    let mut exporter = Service::spawn("node_exporter", cmd, &log);
    exporter.wait_ready(Duration::from_secs(20), "its listener", || port_open(port));
    let scraped = http("GET", &format!("http://127.0.0.1:{port}/metrics"), &[], b"");
    assert_eq!(scraped.status, 200);
    let text = scraped.text();
    assert_eq!(
        sample(&text, "node_textfile_scrape_error"),
        Some(0.0),
        "{text}"
    );
    for file in ["status", "backup", "drill"] {
        let series = format!(
            "node_textfile_mtime_seconds{{file=\"{}\"}}",
            prom(file).display()
        );
        assert!(sample(&text, &series).is_some(), "{series} in\n{text}");
    }
    for series in [
        "etcd_offsite_backups_total{cluster=\"test\",result=\"success\"}",
        "etcd_offsite_drills_total{cluster=\"test\",result=\"success\"}",
        "etcd_offsite_last_success_timestamp_seconds{cluster=\"test\",command=\"backup\"}",
        "etcd_offsite_last_success_timestamp_seconds{cluster=\"test\",command=\"drill\"}",
        "etcd_offsite_drill_recorded{cluster=\"test\",command=\"drill\"}",
        "etcd_offsite_last_run_success{cluster=\"test\",command=\"status\"}",
    ] {
        assert!(sample(&text, series).is_some(), "{series} in\n{text}");
    }
    assert_eq!(
        sample(
            &text,
            "etcd_offsite_backups_total{cluster=\"test\",result=\"success\"}"
        ),
        Some(1.0)
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("collected before") && !logged.contains("level=error"),
        "{logged}"
    );
}

/// `run`'s endpoint serves the same format, with the matching content type.
#[test]
fn the_scheduler_serves_the_text_format_promtool_reads() {
    let etcd = EtcdServer::start(false);
    let fx = Fixture::new();
    // Once a minute is the most a cron may fire.
    let (_, config) = fx.dir_config(&etcd, "schedule: { cron: \"* * * * *\" }\n");
    let port = free_port();
    let mut scheduler = Scheduler::start(fx.cmd(&config), port, &fx.path("run.log"));
    let url = format!("http://127.0.0.1:{port}/metrics");
    let served = wait_until(Duration::from_secs(100), || {
        port_open(port)
            && http("GET", &url, &[], b"").text().contains(
                "etcd_offsite_last_run_duration_seconds{cluster=\"test\",command=\"backup\"}",
            )
    });
    assert!(served, "{}", tail(&fx.path("run.log"), 30));
    let response = http("GET", &url, &[], b"");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let path = fx.path("scraped.prom");
    std::fs::write(&path, response.text()).unwrap();
    promtool_check_metrics(&path);
    scheduler.stop();
}

/// The shipped PrometheusRule's groups are valid rules, and each alert fires when it
/// should and not otherwise (tests/support/alerts_test.yaml). Annotations are left out
/// of the unit test (promtool compares them verbatim); `promtool check rules` checks
/// their templates.
#[test]
fn the_prometheus_rules_fire_when_they_should_and_only_then() {
    promtool_test_rules(
        "examples/monitoring/prometheusrule.yaml",
        "alerts_test.yaml",
    );
}
