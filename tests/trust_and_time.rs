//! Issue 17: what a hostile or skewed store cannot do. One catalog, classified once, serves
//! every command: planted (unsigned, oversized or symlinked signatures) and future-dated
//! backups are reported and never counted, deleted or chosen; a host whose clock is wrong
//! is refused before it decides by time; drill records count only when signed; lock
//! records are bounded; memory does not grow with the manifests a store holds.
//!
//! The skewed host is a real process under Debian's `faketime` (libfaketime): its clock
//! moves, the store's (the kernel's file times, moto's own clock) does not.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::fixture::{Fixture, s3_target};
use common::openshift::{set_cluster_version, settle_operators};
use common::*;
use serde_json::Value;

const CLUSTER: &str = "test";

/// A signing key and the allowed_signers that lists it, as `signing:` YAML.
fn signing(fx: &Fixture) -> String {
    let (key, public) = ssh_keypair(fx.dir.path(), "signer");
    let allowed = fx.path("allowed_signers");
    std::fs::write(&allowed, format!("backups@test {public}\n")).unwrap();
    format!(
        "signing: {{ key: {}, allowed_signers: {} }}\n",
        key.display(),
        allowed.display()
    )
}

/// `restore --latest --to DIR` with both identities.
fn restore_latest(fx: &Fixture, config: &Path, to: &Path) -> Output {
    run(fx
        .cmd(config)
        .args(["restore", "--latest", "--to"])
        .arg(to)
        .args(fx.identity_args()))
}

fn backup(fx: &Fixture, config: &Path) -> String {
    last_line(&run_ok(fx.cmd(config).args(["backup", "--no-prune"])))
}

/// `etcd-offsite` under faketime: its clock is `offset` (e.g. `+48 hours`) from the real one.
fn skewed(config: &Path, offset: &str) -> Command {
    let mut cmd = Command::new("faketime");
    cmd.arg(offset)
        .arg(env!("CARGO_BIN_EXE_etcd-offsite"))
        .env("ETCD_OFFSITE_CONFIG", config);
    cmd
}

/// Where the backups of a test live: a directory, or a bucket on moto.
enum Store<'a> {
    Dir(PathBuf),
    S3 { moto: &'a Moto, bucket: String },
}

impl Store<'_> {
    fn key(&self, id: &str, name: &str) -> String {
        match self {
            Store::Dir(_) => format!("{CLUSTER}/{id}/{name}"),
            Store::S3 { .. } => format!("etcd/{CLUSTER}/{id}/{name}"),
        }
    }

    fn get(&self, id: &str, name: &str) -> Option<Vec<u8>> {
        match self {
            Store::Dir(dir) => std::fs::read(dir.join(self.key(id, name))).ok(),
            Store::S3 { moto, bucket } => moto.get_object(bucket, &self.key(id, name)),
        }
    }

    fn put(&self, id: &str, name: &str, bytes: &[u8]) {
        match self {
            Store::Dir(dir) => {
                let path = dir.join(self.key(id, name));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
            Store::S3 { moto, bucket } => moto.put_object(bucket, &self.key(id, name), bytes),
        }
    }

    /// Removes every object of backup `id`.
    fn remove(&self, id: &str) {
        match self {
            Store::Dir(dir) => std::fs::remove_dir_all(dir.join(CLUSTER).join(id)).unwrap(),
            Store::S3 { moto, bucket } => {
                for key in moto.list_keys(bucket, &format!("etcd/{CLUSTER}/{id}/")) {
                    moto.delete_object(bucket, &key);
                }
            }
        }
    }

    fn has_manifest(&self, id: &str) -> bool {
        self.get(id, "manifest.json").is_some()
    }

    /// A self-consistent copy of backup `from` under `id`, started at `started_at`, with
    /// no signature: what someone who can write to the bucket, but has no key, can plant.
    fn plant(&self, from: &str, id: &str, started_at: &str, platform: Option<&str>) {
        let mut m: Value =
            serde_json::from_slice(&self.get(from, "manifest.json").unwrap()).unwrap();
        m["id"] = id.into();
        m["started_at"] = started_at.into();
        m["finished_at"] = started_at.into();
        if let Some(platform) = platform {
            m["platform_version"] = platform.into();
        }
        for artifact in ["snapshot", "static_resources"] {
            if m["artifacts"][artifact].is_null() {
                continue;
            }
            let key = m["artifacts"][artifact]["key"]
                .as_str()
                .unwrap()
                .to_string();
            let name = key.rsplit('/').next().unwrap().to_string();
            self.put(id, &name, &self.get(from, &name).unwrap());
            m["artifacts"][artifact]["key"] = format!("{CLUSTER}/{id}/{name}").into();
        }
        self.put(id, "manifest.json", &serde_json::to_vec_pretty(&m).unwrap());
    }
}

fn prune_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("prune --json: {e}\n{}", describe_output(out)))
}

fn decision<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no decision for {id}: {report:#}"))
}

// ------------------------------------------------------------------ planted backups

/// With signing: two unsigned manifests planted under newer ids. Prune keeps the signed
/// backups its rules keep and reports the planted ones instead of deleting anything for
/// them; `restore --latest` restores the newest signed one. On file:// and on moto.
#[test]
fn planted_unsigned_backups_are_reported_never_deleted_and_never_restored() {
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let moto = Moto::start();
    moto.create_bucket("trust");
    let fx = Fixture::new();
    let signing = signing(&fx);
    let extra = format!("{signing}retention: {{ keep_last: 2 }}\n");
    let (dir, url) = fx.file_url("backups");
    let stores = [
        (
            Store::Dir(dir),
            format!("  snapshot: {{ url: \"{url}\" }}\n"),
        ),
        (
            Store::S3 {
                moto: &moto,
                bucket: "trust".into(),
            },
            format!("  snapshot: {}\n", s3_target(&moto, "trust", "etcd")),
        ),
    ];
    for (n, (store, targets)) in stores.iter().enumerate() {
        let config = fx.write_config(
            &format!("planted-{n}.yaml"),
            &fx.etcd_source_for(&etcd),
            targets,
            &extra,
        );
        let signed: Vec<String> = (0..3).map(|_| backup(&fx, &config)).collect();
        // Newer than every signed one and dated so: only the missing signature tells
        // them apart.
        let planted: Vec<String> = [1, 2]
            .map(|m| {
                let at = chrono::Utc::now() + chrono::TimeDelta::minutes(m);
                let id = at.format("%Y%m%dT%H%M%SZ").to_string();
                store.plant(&signed[0], &id, &at.to_rfc3339(), None);
                id
            })
            .into();
        let out = run_ok(fx.cmd(&config).args(["prune", "--json"]));
        let report = prune_json(&out);
        for id in &planted {
            let d = decision(&report, id);
            assert_eq!(d["action"], "kept", "{d:#}");
            assert_eq!(
                d["verdict"]["keep"],
                serde_json::json!(["untrusted"]),
                "{d:#}"
            );
            assert!(store.has_manifest(id), "{id} is reported, not deleted");
        }
        assert_eq!(decision(&report, &signed[0])["action"], "deleted");
        assert!(!store.has_manifest(&signed[0]));
        for id in &signed[1..] {
            assert_eq!(decision(&report, id)["action"], "kept");
            assert!(store.has_manifest(id), "signed {id} survives");
        }
        let out = run_ok(fx.cmd(&config).arg("prune"));
        assert!(
            stdout_str(&out).contains("not signed by an allowed signer"),
            "{}",
            describe_output(&out)
        );

        let to = fx.path(&format!("restore-{n}"));
        let out = restore_latest(&fx, &config, &to);
        assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
        assert!(
            stderr_str(&out).contains("skipping an untrusted backup"),
            "{}",
            describe_output(&out)
        );
        let restored: Vec<String> = std::fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let newest: Value =
            serde_json::from_slice(&store.get(&signed[2], "manifest.json").unwrap()).unwrap();
        let ts = newest["started_at"].as_str().unwrap();
        let stamp = format!("{}_{}", &ts[..10], ts[11..19].replace(':', ""));
        assert!(
            restored.contains(&format!("snapshot_{stamp}.db")),
            "{restored:?} is not backup {} ({stamp})",
            signed[2]
        );
        // The backup after a prune also reports and keeps them.
        let out = run_ok(fx.cmd(&config).arg("backup"));
        for id in &planted {
            assert!(store.has_manifest(id), "{}", describe_output(&out));
        }
    }
}

// ------------------------------------------------------------------ future-dated

/// A backup dated 2099 (a host whose clock was far ahead, or planted; signing off): it is
/// flagged by `list`, never fresh for `status`, never satisfies `--skip-if-newer-than`,
/// `--latest`, `min_keep` or `max_count`, and `run` neither skips its slots for it nor
/// reports it as the last success, nor loops on its platform version.
#[test]
fn a_future_dated_backup_counts_for_nothing() {
    let etcd = EtcdServer::start(false);
    settle_operators(&etcd);
    set_cluster_version(&etcd, &[("Completed", "4.14.7", 24 * 300)]);
    etcd.load(20, 100);
    let moto = Moto::start();
    moto.create_bucket("future");
    let fx = Fixture::new();
    let (dir, url) = fx.file_url("backups");
    future_dated_on(
        &fx,
        &etcd,
        &Store::Dir(dir.clone()),
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        "dir",
    );
    future_dated_on(
        &fx,
        &etcd,
        &Store::S3 {
            moto: &moto,
            bucket: "future".into(),
        },
        &format!("  snapshot: {}\n", s3_target(&moto, "future", "etcd")),
        "s3",
    );

    // The scheduler: an upgrade check compares with the newest real backup (4.14.7), not
    // the planted 4.14.3, so it takes no backup in a loop; the metrics report the real one.
    let run_config = fx.write_config(
        "run.yaml",
        &fx.etcd_source_for(&etcd),
        &format!("  snapshot: {{ url: \"file://{}\" }}\n", dir.display()),
        "schedule: { cron: \"0 3 1 1 *\", upgrade_check: 1s }\n",
    );
    let port = free_port();
    let mut scheduler = start_run(&fx, &run_config, port);
    std::thread::sleep(Duration::from_secs(6));
    let complete = list_json(&fx, &run_config)
        .iter()
        .filter(|b| b["standing"] == "complete")
        .count();
    assert_eq!(complete, 2, "{}", tail(&fx.path("run.log"), 30));
    let text = http("GET", &format!("http://127.0.0.1:{port}/metrics"), &[], b"").text();
    let last_success = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "etcd_offsite_last_success_timestamp_seconds{cluster=\"test\",command=\"run\"} ",
            )
        })
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        last_success < now + 60.0 && last_success > now - 3600.0,
        "last success {last_success} is not the real newest backup\n{text}"
    );
    scheduler.stop();

    // Scheduled slots are not skipped for it either.
    let slots = fx.write_config(
        "slots.yaml",
        &fx.etcd_source_for(&etcd),
        &format!("  snapshot: {{ url: \"file://{}\" }}\n", dir.display()),
        // Once a minute is the most a cron may fire.
        "schedule: { cron: \"* * * * *\" }\n",
    );
    let before = complete;
    let mut scheduler = start_run(&fx, &slots, free_port());
    let took = wait_until(Duration::from_secs(100), || {
        list_json(&fx, &slots)
            .iter()
            .filter(|b| b["standing"] == "complete")
            .count()
            > before
    });
    assert!(
        took,
        "no scheduled backup:\n{}",
        tail(&fx.path("run.log"), 30)
    );
    scheduler.stop();
}

/// The future-dated checks on one store: only a 2099 backup (planted from a real one,
/// whose objects then go) makes `status` stale, `--latest` find nothing and the skip check
/// take a backup; `min_keep` and `max_count` count only the real ones.
fn future_dated_on(fx: &Fixture, etcd: &EtcdServer, store: &Store, targets: &str, name: &str) {
    let config = fx.write_config(
        &format!("future-{name}.yaml"),
        &fx.etcd_source_for(etcd),
        targets,
        "retention: { keep_last: 1, min_keep: 2, max_count: 2 }\n",
    );
    let first = backup(fx, &config);
    let future = "20990101T000000Z";
    store.plant(&first, future, "2099-01-01T00:00:00Z", Some("4.14.3"));
    store.remove(&first);

    // Only the future-dated one: status is stale and says why; list flags it.
    let out = run_code(fx.cmd(&config).args(["status", "--max-age", "26h"]), 5);
    assert!(
        stderr_str(&out).contains(future) && stderr_str(&out).contains("in the future"),
        "{name}: {}",
        describe_output(&out)
    );
    let listed = list_json(fx, &config);
    assert_eq!(listed[0]["id"], future);
    assert_eq!(listed[0]["future_dated"], true);
    assert_eq!(listed[0]["standing"], "future_dated");
    assert!(stdout_str(&run_ok(fx.cmd(&config).arg("list"))).contains("FUTURE-DATED"));
    // --latest has nothing to restore.
    let out = restore_latest(fx, &config, &fx.path(&format!("restore-none-{name}")));
    assert_eq!(exit_code(&out), 2, "{name}: {}", describe_output(&out));
    // The skip check does not see it: a backup is taken.
    let out = run_ok(
        fx.cmd(&config)
            .args(["backup", "--skip-if-newer-than", "30m", "--no-prune"]),
    );
    let real = last_line(&out);
    run_ok(fx.cmd(&config).args(["status", "--max-age", "26h"]));
    let to = fx.path(&format!("restore-latest-{name}"));
    let out = restore_latest(fx, &config, &to);
    assert_eq!(exit_code(&out), 0, "{name}: {}", describe_output(&out));
    assert!(
        std::fs::read_dir(&to).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("2099")),
        "{name}: the future-dated backup was restored"
    );
    // min_keep 2 and max_count 2 count only real backups: two of them stay, and it too.
    let second = backup(fx, &config);
    let third = backup(fx, &config);
    let report = prune_json(&run_ok(fx.cmd(&config).args(["prune", "--json"])));
    assert_eq!(
        decision(&report, future)["verdict"]["keep"],
        serde_json::json!(["future_timestamp"])
    );
    let kept: Vec<&str> = report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == "kept")
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, [future, third.as_str(), second.as_str()], "{name}");
    assert!(!store.has_manifest(&real), "{name}");
    assert!(store.has_manifest(future), "{name}");
}

/// `run` with `config`, once its metrics endpoint answers.
fn start_run(fx: &Fixture, config: &Path, port: u16) -> Scheduler {
    let scheduler = Scheduler::start(fx.cmd(config), port, &fx.path("run.log"));
    assert!(
        wait_until(Duration::from_secs(20), || port_open(port)),
        "run did not start:\n{}",
        tail(&fx.path("run.log"), 30)
    );
    scheduler
}

// ------------------------------------------------------------------ skewed clocks

/// A prune from a host whose clock is 48 h ahead, while another host's backup streams:
/// refused (exit 4, naming both clocks) before it decides anything; the backup commits
/// whole. A host 48 h behind is refused too, and `status` there cannot call an old
/// backup fresh. On file:// and on moto.
#[test]
fn a_host_with_a_skewed_clock_is_refused_and_a_running_backup_commits_whole() {
    let etcd = EtcdServer::start(false);
    etcd.load(8_000, 1000);
    let moto = Moto::start();
    moto.create_bucket("skew");
    let fx = Fixture::new();
    let (_, url) = fx.file_url("backups");
    let targets = [
        format!("  snapshot: {{ url: \"{url}\" }}\n"),
        format!("  snapshot: {}\n", s3_target(&moto, "skew", "etcd")),
    ];
    for (n, targets) in targets.iter().enumerate() {
        let slow = fx.write_config(
            &format!("slow-{n}.yaml"),
            &fx.etcd_source_for(&etcd).replacen(
                "    timeout: 5s\n",
                "    timeout: 5s\n    read_rate_limit: 1MiB\n",
                1,
            ),
            targets,
            "",
        );
        let pruner = fx.write_config(
            &format!("prune-{n}.yaml"),
            &fx.etcd_source_for(&etcd),
            targets,
            "retention: { keep_within: 48h, incomplete_grace: 1h }\n",
        );
        let old = backup(&fx, &pruner);
        let mut child = fx
            .cmd(&slow)
            .args(["backup", "--no-prune"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until it holds the lock and streams.
        std::thread::sleep(Duration::from_secs(2));
        for offset in ["+48 hours", "-48 hours"] {
            let out = run_within(
                skewed(&pruner, offset).args(["prune"]),
                Duration::from_secs(60),
            );
            assert_eq!(exit_code(&out), 4, "{offset}: {}", describe_output(&out));
            let err = stderr_str(&out);
            assert!(
                err.contains("this host's clock says") && err.contains("apart"),
                "{offset}: {err}"
            );
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup was still streaming while the skewed prunes ran"
        );
        // A host far behind cannot find an old backup fresh either.
        let out = run_within(
            skewed(&pruner, "-48 hours").args(["status", "--max-age", "1h"]),
            Duration::from_secs(60),
        );
        assert_eq!(exit_code(&out), 4, "{}", describe_output(&out));
        // And a skewed host takes no backup: it would decide its lock by a wrong clock.
        let out = run_within(
            skewed(&pruner, "+48 hours").args(["backup"]),
            Duration::from_secs(60),
        );
        assert_eq!(exit_code(&out), 4, "{}", describe_output(&out));

        let out = wait_within(child, Duration::from_secs(120), "the streaming backup");
        assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
        let id = last_line(&out);
        run_ok(
            fx.cmd(&pruner)
                .args(["verify", &id])
                .args(fx.identity_args()),
        );
        // The unskewed prune keeps both (keep_within 48h).
        let report = prune_json(&run_ok(fx.cmd(&pruner).args(["prune", "--json"])));
        for id in [&old, &id] {
            assert_eq!(decision(&report, id)["action"], "kept", "{report:#}");
        }
    }
}

/// The keys archive of a running backup vanishes (what a prune from a skewed host used to
/// do): the backup checks both artifacts right before its manifest and does not commit.
#[test]
fn a_backup_whose_keys_archive_vanished_is_not_committed() {
    let etcd = EtcdServer::start(false);
    etcd.load(6_000, 1000);
    let fx = Fixture::new();
    let (dir, url) = fx.file_url("backups");
    let slow = fx.write_config(
        "slow.yaml",
        &fx.etcd_source_for(&etcd).replacen(
            "    timeout: 5s\n",
            "    timeout: 5s\n    read_rate_limit: 1MiB\n",
            1,
        ),
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        "",
    );
    let child = fx
        .cmd(&slow)
        .args(["backup", "--no-prune"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The keys archive is written first; then the snapshot streams for seconds.
    let found = wait_until(Duration::from_secs(30), || {
        relative_files(&dir)
            .iter()
            .any(|f| f.ends_with("snapshot.db.zst.age") || f.contains("snapshot.db.zst.age#"))
    });
    assert!(
        found,
        "the snapshot did not start streaming: {:?}",
        relative_files(&dir)
    );
    let keys: Vec<String> = relative_files(&dir)
        .into_iter()
        .filter(|f| f.ends_with("static_kuberesources.tar.zst.age"))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    std::fs::remove_file(dir.join(&keys[0])).unwrap();
    let out = wait_within(child, Duration::from_secs(120), "the backup");
    assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
    assert!(
        stderr_str(&out).contains("is not committed") && stderr_str(&out).contains("is gone"),
        "{}",
        describe_output(&out)
    );
    assert!(manifests_below(&dir).is_empty(), "nothing was committed");
    assert!(complete_ids(&list_json(&fx, &slow)).is_empty());
}

// ------------------------------------------------------------------ hostile signatures

/// With signing: the newest backup's `manifest.json.sig` is larger than 1 MiB, then a
/// symbolic link. `restore --latest`, `drill --latest` and `verify --latest` pass over it
/// to the older signed backup; `verify --all` reports it as failed (exit 3), never exit 1.
#[test]
fn oversized_and_symlinked_signatures_are_passed_over() {
    let etcd = EtcdServer::start(false);
    etcd.load(20, 100);
    let fx = Fixture::new();
    let signing_yaml = signing(&fx);
    let (dir, config) = fx.dir_config(&etcd, &signing_yaml);
    let older = backup(&fx, &config);
    let newest = backup(&fx, &config);
    let sig = dir.join(CLUSTER).join(&newest).join("manifest.json.sig");
    let original = std::fs::read(&sig).unwrap();
    let scratch = fx.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    for what in ["oversized", "symlinked"] {
        if what == "oversized" {
            let mut big = original.clone();
            big.resize(1024 * 1024 + 10, b'\n');
            std::fs::write(&sig, big).unwrap();
        } else {
            let real = fx.path("real.sig");
            std::fs::write(&real, &original).unwrap();
            let _ = std::fs::remove_file(&sig);
            std::os::unix::fs::symlink(&real, &sig).unwrap();
        }
        let out = restore_latest(&fx, &config, &fx.path(&format!("restore-{what}")));
        assert_eq!(exit_code(&out), 0, "{what}: {}", describe_output(&out));
        assert!(
            stderr_str(&out).contains(&newest) && stderr_str(&out).contains("untrusted"),
            "{what}: {}",
            describe_output(&out)
        );
        let out = run_ok(
            fx.cmd(&config)
                .args(["verify", "--latest", "--json"])
                .args(fx.identity_args()),
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report[0]["id"], older.as_str(), "{what}");
        let out = run_code(fx.cmd(&config).args(["verify", "--all", "--json"]), 3);
        let report: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let ok = |id: &str| report.iter().find(|r| r["id"] == id).unwrap()["ok"].clone();
        assert_eq!(
            (ok(&older), ok(&newest)),
            (true.into(), false.into()),
            "{what}"
        );
        let out = run_ok(
            fx.cmd(&config)
                .args(["drill", "--latest", "--json", "--scratch-dir"])
                .arg(&scratch)
                .args(fx.identity_args()),
        );
        let record: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(record["backup_id"], older.as_str(), "{what}");
        let listed = list_json(&fx, &config);
        let entry = listed.iter().find(|b| b["id"] == newest.as_str()).unwrap();
        assert_eq!(entry["trusted"], false, "{what}: {entry:#}");
        let _ = std::fs::remove_file(&sig);
    }

    // On S3 (moto) an oversized signature is passed over the same way.
    let moto = Moto::start();
    moto.create_bucket("sigs");
    let s3 = fx.write_config(
        "s3.yaml",
        &fx.etcd_source_for(&etcd),
        &format!("  snapshot: {}\n", s3_target(&moto, "sigs", "etcd")),
        &signing_yaml,
    );
    let store = Store::S3 {
        moto: &moto,
        bucket: "sigs".into(),
    };
    let older = backup(&fx, &s3);
    let newest = backup(&fx, &s3);
    store.put(&newest, "manifest.json.sig", &vec![b'-'; 1024 * 1024 + 10]);
    let out = restore_latest(&fx, &s3, &fx.path("restore-s3"));
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    assert!(
        stderr_str(&out).contains(&newest),
        "{}",
        describe_output(&out)
    );
    let out = run_code(fx.cmd(&s3).args(["verify", "--all", "--json"]), 3);
    let report: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.len(), 2);
    assert!(
        report
            .iter()
            .any(|r| r["id"] == older.as_str() && r["ok"] == true)
    );
}

// ------------------------------------------------------------------ drill records

/// With signing: a planted `drill-20991231T000000Z-0000.json` saying ok, and an unsigned
/// one dated now, make no drill fresh; a drill this tool ran (and signed) does.
#[test]
fn planted_drill_records_do_not_count_and_real_ones_are_signed() {
    let etcd = EtcdServer::start(false);
    etcd.load(20, 100);
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, &signing(&fx));
    let id = backup(&fx, &config);
    let backup_dir = dir.join(CLUSTER).join(&id);
    let now = chrono::Utc::now().to_rfc3339();
    for (name, at) in [
        ("drill-20991231T000000Z-0000.json", "2099-12-31T00:00:00Z"),
        ("drill-20261201T000000Z-0000.json", now.as_str()),
    ] {
        std::fs::write(
            backup_dir.join(name),
            format!("{{\"format_version\":1,\"backup_id\":\"{id}\",\"at\":\"{at}\",\"host\":\"x\",\"tool_version\":\"0\",\"ok\":true,\"checks\":[]}}"),
        )
        .unwrap();
    }
    let out = run_code(
        fx.cmd(&config)
            .args(["status", "--json", "--max-drill-age", "8d"]),
        5,
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status["newest_drill_id"].is_null(), "{status:#}");
    assert!(list_json(&fx, &config)[0]["drill"].is_null());

    let scratch = fx.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    run_ok(
        fx.cmd(&config)
            .args(["drill", "--latest", "--scratch-dir"])
            .arg(&scratch)
            .args(fx.identity_args()),
    );
    let signed: Vec<String> = std::fs::read_dir(&backup_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("drill-") && n.ends_with(".json.sig"))
        .collect();
    assert_eq!(signed.len(), 1, "the drill's record is signed: {signed:?}");
    let out = run_ok(
        fx.cmd(&config)
            .args(["status", "--json", "--max-drill-age", "8d"]),
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["newest_drill_id"], id.as_str(), "{status:#}");
    // ssh-keygen verifies the drill record's signature as it does the manifest's.
    let record = signed[0].trim_end_matches(".sig");
    let mut verify = Command::new("ssh-keygen");
    verify
        .args(["-Y", "verify", "-f"])
        .arg(fx.path("allowed_signers"))
        .args(["-I", "backups@test", "-n", "etcd-offsite", "-s"])
        .arg(backup_dir.join(&signed[0]));
    assert_eq!(
        exit_code(&run_with_stdin(
            &mut verify,
            &read(&backup_dir.join(record))
        )),
        0
    );
}

// ------------------------------------------------------------------ memory

/// Peak RSS (KiB) of a command, from GNU time.
fn peak_rss_kib(cmd: &mut Command, fx: &Fixture, what: &str) -> (u64, Output) {
    let report = fx.path(&format!("{what}.time"));
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(cmd.get_program());
    timed.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            timed.env(k, v);
        }
    }
    let out = run(&mut timed);
    let text = std::fs::read_to_string(&report).unwrap();
    let kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{what}: no RSS in {text:?}\n{}", describe_output(&out)));
    (kib, out)
}

/// 400 planted manifests of 1 MiB each (unsigned, with signing on): `list`, `status` and
/// `prune` keep summaries, not manifests, and stay under 64 MiB at their peak.
#[test]
fn four_hundred_planted_one_mib_manifests_keep_memory_small() {
    let etcd = EtcdServer::start(false);
    etcd.load(20, 100);
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(
        &etcd,
        &format!("{}retention: {{ keep_last: 2 }}\n", signing(&fx)),
    );
    let real = backup(&fx, &config);
    let mut m: Value =
        serde_json::from_slice(&read(&dir.join(CLUSTER).join(&real).join("manifest.json")))
            .unwrap();
    let start = chrono::Utc::now() - chrono::TimeDelta::days(30);
    for i in 0..400 {
        let at = start + chrono::TimeDelta::minutes(i);
        let id = at.format("%Y%m%dT%H%M%SZ").to_string();
        m["id"] = id.clone().into();
        m["started_at"] = at.to_rfc3339().into();
        for artifact in ["snapshot", "static_resources"] {
            let key = m["artifacts"][artifact]["key"]
                .as_str()
                .unwrap()
                .to_string();
            let name = key.rsplit('/').next().unwrap().to_string();
            m["artifacts"][artifact]["key"] = format!("{CLUSTER}/{id}/{name}").into();
        }
        let mut text = serde_json::to_vec(&m).unwrap();
        // Padded in a label to just under the 1 MiB cap of a small object.
        let pad = 1024 * 1024 - 200 - text.len();
        m["labels"]["padding"] = "x".repeat(pad).into();
        text = serde_json::to_vec(&m).unwrap();
        m["labels"] = serde_json::json!({});
        assert!(text.len() < 1024 * 1024 && text.len() > 1000 * 1000);
        let backup_dir = dir.join(CLUSTER).join(&id);
        std::fs::create_dir_all(&backup_dir).unwrap();
        std::fs::write(backup_dir.join("manifest.json"), text).unwrap();
    }
    const LIMIT_KIB: u64 = 64 * 1024;
    let (list_kib, out) = peak_rss_kib(fx.cmd(&config).args(["list", "--json"]), &fx, "list");
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 401);
    assert_eq!(listed.iter().filter(|b| b["trusted"] == false).count(), 400);
    let (status_kib, out) = peak_rss_kib(fx.cmd(&config).args(["status", "--json"]), &fx, "status");
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let (prune_kib, out) = peak_rss_kib(fx.cmd(&config).args(["prune", "--json"]), &fx, "prune");
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let report = prune_json(&out);
    assert_eq!(
        report["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["action"] == "kept")
            .count(),
        401,
        "nothing is deleted for planted manifests"
    );
    eprintln!("peak RSS: list {list_kib} KiB, status {status_kib} KiB, prune {prune_kib} KiB");
    for (what, kib) in [
        ("list", list_kib),
        ("status", status_kib),
        ("prune", prune_kib),
    ] {
        assert!(kib < LIMIT_KIB, "{what} peaked at {kib} KiB");
    }
}

// ------------------------------------------------------------------ lock records

/// Lock records with extreme values: `stale_after_secs` of u64::MAX, a generation of
/// u64::MAX, an oversized record; `lock_stale_after: 300000y` in the config. No panic
/// (exit 101) anywhere: each has a clear outcome.
#[test]
fn lock_record_extremes_have_a_clear_outcome() {
    let etcd = EtcdServer::start(false);
    etcd.load(20, 100);
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, "retention: { keep_last: 5 }\n");
    let lock_dir = dir.join(CLUSTER).join("lock");
    std::fs::create_dir_all(&lock_dir).unwrap();
    let record = |stale: &str| {
        format!(
            "{{\"state\":\"held\",\"host\":\"elsewhere\",\"pid\":1,\"token\":7,\"acquired_at\":\"2026-01-01T00:00:00Z\",\"written_at\":\"2026-01-01T00:00:00Z\",\"stale_after_secs\":{stale}}}"
        )
    };
    let age = |path: &Path| {
        run_ok(Command::new("touch").args(["-d", "1 hour ago"]).arg(path));
    };
    let no_panic = |out: &Output, what: &str| {
        assert_ne!(
            exit_code(out),
            101,
            "{what} panicked: {}",
            describe_output(out)
        );
        assert!(
            !stderr_str(out).contains("panicked"),
            "{what}: {}",
            describe_output(out)
        );
    };

    // stale_after_secs = u64::MAX, written just now: a garbled record, held for our own
    // lock_stale_after (exit 4 saying so), then broken.
    let generation = lock_dir.join("0000000000000009");
    std::fs::write(&generation, record("18446744073709551615")).unwrap();
    for args in [&["backup"][..], &["prune"][..]] {
        let out = run_within(fx.cmd(&config).args(args), Duration::from_secs(60));
        no_panic(&out, args[0]);
    }
    let out = run_code(fx.cmd(&config).arg("backup"), 4);
    assert!(
        stderr_str(&out).contains("stale_after_secs"),
        "{}",
        describe_output(&out)
    );
    age(&generation);
    run_ok(fx.cmd(&config).arg("backup"));

    // A generation of u64::MAX is not this lock's: ignored, backups go on, twice.
    std::fs::write(lock_dir.join("18446744073709551615"), record("60")).unwrap();
    for _ in 0..2 {
        let out = run_within(fx.cmd(&config).arg("backup"), Duration::from_secs(60));
        no_panic(&out, "backup");
        assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    }

    // An oversized record is garbled too: held while fresh, broken once stale.
    let mut names: Vec<String> = std::fs::read_dir(&lock_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 16)
        .collect();
    names.sort();
    let next: u64 = names.last().unwrap().parse::<u64>().unwrap() + 1;
    let big = lock_dir.join(format!("{next:016}"));
    std::fs::write(&big, vec![b' '; 2 * 1024 * 1024]).unwrap();
    let out = run_code(fx.cmd(&config).arg("backup"), 4);
    no_panic(&out, "backup");
    age(&big);
    run_ok(fx.cmd(&config).arg("backup"));
    let out = run_within(fx.cmd(&config).arg("prune"), Duration::from_secs(60));
    no_panic(&out, "prune");
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));

    // In the config: a config error naming the key, for `config check` and every command.
    let huge = fx.write_config(
        "huge-lock.yaml",
        &fx.etcd_source_for(&etcd),
        &format!(
            "  snapshot: {{ url: \"file://{}\" }}\n  lock_stale_after: 300000y\n",
            dir.display()
        ),
        "",
    );
    for args in [&["config", "check"][..], &["backup"][..], &["prune"][..]] {
        let out = run_code(fx.cmd(&huge).args(args), 2);
        assert!(
            stderr_str(&out).contains("targets.lock_stale_after"),
            "{}",
            describe_output(&out)
        );
    }
}
