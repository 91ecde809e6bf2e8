//! Issue 11: hardening. Keys archives that are never silently broken, no secret in any
//! output, a metrics endpoint that idle connections cannot starve, and durations out of
//! range as config errors instead of panics.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fixture::Fixture;
use common::*;

/// Runs `cmd`, killing it after `limit` (a command that should fail fast must not hang the suite).
fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe_cmd(cmd)));
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "`{}` still running after {limit:?}\n{}",
                describe_cmd(cmd),
                describe_output(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

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
