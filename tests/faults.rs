//! Issue 11: the fault suite. Whatever fails — the object store (errors, resets, lost
//! answers, delays), the etcd member serving the snapshot (SIGKILL mid-stream), the disk of
//! a file:// target (full) — a backup either succeeds or fails cleanly: a non-zero exit and
//! nothing listed as complete; every backup that was reported done verifies. Bad inputs get
//! their documented exit code and a message, never a panic.
//!
//! Each fault test prints one line of figures for `scripts/faults.sh`:
//! `FAULTS kind=<kind> tried=N survived=N clean_failures=N lost=N ...`.
//! `ETCD_OFFSITE_FAULTS_LONG=1` runs five times as many cases (a number N > 1: N times).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::fixture::{Fixture, s3_target, s3_target_at};
use common::*;

/// How many times the bounded case counts are multiplied (`ETCD_OFFSITE_FAULTS_LONG`).
fn scale() -> usize {
    let value = std::env::var("ETCD_OFFSITE_FAULTS_LONG").unwrap_or_default();
    match value.trim() {
        "" | "0" | "false" | "no" => 1,
        other => match other.parse::<usize>() {
            Ok(n) if n > 1 => n,
            _ => 5,
        },
    }
}

/// The figures of one fault kind.
struct Figures {
    kind: &'static str,
    tried: usize,
    /// The backup succeeded (exit 0), is listed and verifies.
    survived: usize,
    /// Non-zero exit, nothing listed, nothing under a final name.
    clean_failures: usize,
    /// Reported done but not listed complete, or not verifying. Must stay 0.
    lost: usize,
    /// What went wrong, for the failure message.
    problems: Vec<String>,
}

impl Figures {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            tried: 0,
            survived: 0,
            clean_failures: 0,
            lost: 0,
            problems: Vec::new(),
        }
    }

    /// Prints the parseable line and fails the test on any lost backup or problem.
    fn report(&self, extra: &str) {
        let line = format!(
            "FAULTS kind={} tried={} survived={} clean_failures={} lost={}{extra}",
            self.kind, self.tried, self.survived, self.clean_failures, self.lost
        );
        println!("{line}");
        eprintln!("{line}");
        assert!(
            self.problems.is_empty() && self.lost == 0,
            "{}: {} problem(s), {} lost:\n{}",
            self.kind,
            self.problems.len(),
            self.lost,
            self.problems.join("\n\n")
        );
        assert_eq!(
            self.tried,
            self.survived + self.clean_failures,
            "{}: every case either survived or failed cleanly",
            self.kind
        );
    }
}

/// Ids listed complete now and not in `before`.
fn new_complete(fx: &Fixture, config: &Path, before: &[String]) -> Vec<String> {
    complete_ids(&list_json(fx, config))
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect()
}

/// Deep verify (both identities) of one backup; Err with the output when it fails.
fn verify_deep(fx: &Fixture, config: &Path, id: &str) -> Result<(), String> {
    let out = run(fx
        .cmd(config)
        .arg("verify")
        .arg(id)
        .args(fx.identity_args()));
    if exit_code(&out) == 0 {
        Ok(())
    } else {
        Err(describe_output(&out))
    }
}

/// The last `error:` line of stderr (what a failed run said), or nothing.
fn last_error(out: &Output) -> String {
    stderr_str(out)
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_string()
}

/// Object names under which only finished objects ever appear.
const FINAL_NAMES: &[&str] = &[
    "snapshot.db.zst.age",
    "static_kuberesources.tar.zst.age",
    "manifest.json",
    "manifest.json.sig",
];

// ------------------------------------------------------------------ 1. a faulty S3 front

/// Backups through a front that answers 500/503, resets connections (before and after the
/// request reached the store), truncates answers and delays a seeded share of requests.
#[test]
fn backups_through_a_faulty_s3_front_succeed_or_fail_cleanly() {
    let etcd = EtcdServer::start(false);
    etcd.load(2000, 1000);
    let moto = Moto::start();
    moto.create_bucket("faults");
    let proxy = FaultProxy::start(&moto);
    let fx = Fixture::new();
    let source = fx.etcd_source_for(&etcd);
    let via_proxy = fx.write_config(
        "via-proxy.yaml",
        &source,
        &format!(
            "  snapshot: {}\n",
            s3_target_at(&proxy.endpoint(), "faults", "etcd")
        ),
        "",
    );
    // Listing and verifying go to moto directly: the faults are the backup's alone.
    let direct = fx.write_config(
        "direct.yaml",
        &source,
        &format!("  snapshot: {}\n", s3_target(&moto, "faults", "etcd")),
        "",
    );

    let rates = [0.05, 0.1, 0.2, 0.3, 0.5, 0.8];
    let cases = 12 * scale();
    let mut figures = Figures::new("s3-proxy");
    let mut done: Vec<String> = Vec::new();
    let mut injected = 0u64;
    let mut unclear = 0usize;
    for case in 0..cases {
        let rate = rates[case % rates.len()];
        // Every kind together, and each kind alone.
        let kinds: Vec<&str> = if case % 2 == 0 {
            FAULT_KINDS.to_vec()
        } else {
            vec![FAULT_KINDS[(case / 2) % FAULT_KINDS.len()]]
        };
        let before = complete_ids(&list_json(&fx, &direct));
        proxy.set(case as u64 + 1, rate, &kinds);
        let out = run_within(
            fx.cmd(&via_proxy).args(["backup", "--no-prune"]),
            Duration::from_secs(300),
        );
        let counters = proxy.counters();
        proxy.set(0, 0.0, &[]);
        let faults: u64 = counters["injected"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0);
        injected += faults;
        let new = new_complete(&fx, &direct, &before);
        let code = exit_code(&out);
        eprintln!(
            "s3-proxy case {case}: rate {rate} kinds {kinds:?}: exit {code}, {} requests, {faults} faults {} {}",
            counters["requests"],
            counters["injected"],
            last_error(&out)
        );
        figures.tried += 1;
        let context = || {
            format!(
                "case {case} (rate {rate}, kinds {kinds:?}, faults {})\n{}\n--- proxy log tail ---\n{}",
                counters["injected"],
                describe_output(&out),
                proxy.requests_tail(30)
            )
        };
        match code {
            0 => {
                let id = last_line(&out);
                if new == [id.clone()] {
                    figures.survived += 1;
                    done.push(id);
                } else {
                    figures.lost += 1;
                    figures.problems.push(format!(
                        "reported {id} done, but the new complete backups are {new:?}: {}",
                        context()
                    ));
                }
            }
            1 if new.is_empty() => figures.clean_failures += 1,
            1 if stderr_str(&out).contains("is unknown") => {
                // The store's answer to the commit was lost and could not be read back: the
                // tool says so and keeps the artifacts; the backup must verify below.
                unclear += 1;
                figures.survived += 1;
                done.extend(new);
            }
            1 => figures.problems.push(format!(
                "failed, yet listed complete: {new:?}: {}",
                context()
            )),
            _ => figures.problems.push(format!(
                "exit {code} (a store fault is a runtime failure, exit 1): {}",
                context()
            )),
        }
        if code != 0 {
            let stderr = stderr_str(&out);
            if !stderr.contains("error:") || stderr.contains("panicked") {
                figures
                    .problems
                    .push(format!("no clear error message: {}", context()));
            }
        }
    }

    // Once the faults stop, a backup goes through (no lock or leftover stands in the way).
    let out = run_within(
        fx.cmd(&via_proxy).args(["backup", "--no-prune"]),
        Duration::from_secs(120),
    );
    assert_eq!(
        exit_code(&out),
        0,
        "after the faults: {}",
        describe_output(&out)
    );
    done.push(last_line(&out));

    // Every backup reported done is listed complete and verifies with both identities.
    let listed = complete_ids(&list_json(&fx, &direct));
    let out = run(fx
        .cmd(&direct)
        .args(["verify", "--all"])
        .args(fx.identity_args()));
    let stdout = stdout_str(&out);
    if exit_code(&out) != 0 {
        figures
            .problems
            .push(format!("verify --all failed: {}", describe_output(&out)));
    }
    for id in &done {
        if !listed.contains(id) || !stdout.contains(&format!("{id} OK")) {
            figures.lost += 1;
            figures
                .problems
                .push(format!("{id} not listed or not verified:\n{stdout}"));
        }
    }
    figures.report(&format!(" injected={injected} unclear={unclear}"));
}

/// The store completes a multipart upload, but its answer is lost: the retried completion
/// finds no such upload and the backup fails. What the store did complete goes with the
/// rest of the failed run: nothing stays under a final name.
#[test]
fn a_lost_answer_to_an_upload_completion_fails_cleanly_and_leaves_nothing_behind() {
    let etcd = EtcdServer::start(false);
    etcd.load(200, 500);
    let moto = Moto::start();
    moto.create_bucket("lost");
    let proxy = FaultProxy::start(&moto);
    let fx = Fixture::new();
    let config = fx.write_config(
        "via-proxy.yaml",
        &fx.etcd_source_for(&etcd),
        &format!(
            "  snapshot: {}\n",
            s3_target_at(&proxy.endpoint(), "lost", "etcd")
        ),
        "",
    );
    for object in ["static_kuberesources.tar.zst.age", "snapshot.db.zst.age"] {
        let completion = format!("{object}?uploadId=");
        proxy.set_only(&["POST ", &completion], 1, 1.0, &["lost"]);
        let out = run_within(
            fx.cmd(&config).args(["backup", "--no-prune"]),
            Duration::from_secs(120),
        );
        let counters = proxy.counters();
        proxy.set(0, 0.0, &[]);
        assert_eq!(exit_code(&out), 1, "{object}: {}", describe_output(&out));
        assert!(
            counters["injected"]["lost"].as_u64() >= Some(1),
            "{object}: no completion was answered: {counters}"
        );
        let finals: Vec<String> = moto
            .list_keys("lost", "etcd/test/")
            .into_iter()
            .filter(|k| FINAL_NAMES.iter().any(|n| k.ends_with(&format!("/{n}"))))
            .collect();
        assert!(
            finals.is_empty(),
            "{object}: objects under final names after the failed run: {finals:?}\n{}",
            describe_output(&out)
        );
        assert!(complete_ids(&list_json(&fx, &config)).is_empty());
    }
    run_ok(fx.cmd(&config).args(["backup", "--no-prune"]));
    println!("FAULTS kind=s3-lost-completion tried=2 survived=0 clean_failures=2 lost=0");
}

// ------------------------------------------------------------------ 2. a member killed

/// A 3-member cluster; the member serving the snapshot is SIGKILLed while it streams (the
/// read rate limit stretches the stream). The backup fails over to another member or
/// fails cleanly; a backup that succeeds restores with `etcdctl snapshot restore`.
#[test]
fn a_serving_member_killed_mid_stream_fails_over_or_fails_cleanly() {
    let mut cluster = EtcdCluster::start(3);
    cluster.load(5000, 1000);
    let fx = Fixture::new();
    let (dir, url) = fx.file_url("backups");
    let targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let mut figures = Figures::new("etcd-member-kill");
    let mut failed_over = 0usize;
    let (mut leader_kills, mut leader_survived) = (0usize, 0usize);
    let cases = 3 * scale();
    for case in 0..cases {
        // Each member serves in turn (the first endpoint listed), the leader first.
        let leader = cluster.leader().expect("the cluster has a leader");
        let serving = (leader + case) % cluster.member_count();
        let endpoints: Vec<String> = (0..cluster.member_count())
            .map(|k| cluster.endpoint((serving + k) % cluster.member_count()))
            .collect();
        let source = fx.etcd_source(&endpoints, None).replacen(
            "    timeout: 5s\n",
            "    timeout: 5s\n    read_rate_limit: 1MiB\n",
            1,
        );
        let config = fx.write_config(&format!("case-{case}.yaml"), &source, &targets, "");
        let before = complete_ids(&list_json(&fx, &config));
        let files_before = relative_files(&dir);
        let mut child = spawn(fx.cmd(&config).args(["backup", "--no-prune"]));
        let streaming = wait_until(Duration::from_secs(60), || {
            relative_files(&dir)
                .difference(&files_before)
                .any(|f| f.contains("snapshot.db.zst.age"))
                || child.try_wait().ok().flatten().is_some()
        });
        assert!(
            streaming,
            "case {case}: the snapshot never started streaming"
        );
        // A spread of moments within the first seconds of the stream.
        std::thread::sleep(Duration::from_millis(200 + (case as u64 * 733) % 1500));
        let killed = cluster.endpoint(serving);
        let still_running = child.try_wait().ok().flatten().is_none();
        cluster.kill(serving);
        let out = wait_within(child, Duration::from_secs(300), "backup");
        let code = exit_code(&out);
        let new = new_complete(&fx, &config, &before);
        eprintln!(
            "etcd-member-kill case {case}: killed m{serving} ({killed}{}) {}: exit {code} {}",
            if serving == leader {
                ", the leader"
            } else {
                ""
            },
            if still_running {
                "while the backup ran"
            } else {
                "after the run ended"
            },
            last_error(&out)
        );
        figures.tried += 1;
        if serving == leader && still_running {
            leader_kills += 1;
        }
        match code {
            0 => {
                let id = last_line(&out);
                let manifest: serde_json::Value = serde_json::from_slice(&read(
                    &dir.join("test").join(&id).join("manifest.json"),
                ))
                .expect("manifest JSON");
                let endpoint = manifest["source"]["endpoint"].as_str().unwrap_or_default();
                if endpoint != killed {
                    failed_over += 1;
                }
                if serving == leader && still_running {
                    leader_survived += 1;
                }
                match restores_with_etcdctl(&fx, &config, &id) {
                    Ok(()) if new == [id.clone()] => figures.survived += 1,
                    Ok(()) => {
                        figures.lost += 1;
                        figures
                            .problems
                            .push(format!("case {case}: {id} done but listed {new:?}"));
                    }
                    Err(e) => {
                        figures.lost += 1;
                        figures
                            .problems
                            .push(format!("case {case}: {id} does not restore: {e}"));
                    }
                }
            }
            1 if new.is_empty() => {
                figures.clean_failures += 1;
                if !stderr_str(&out).contains("error:") {
                    figures.problems.push(format!(
                        "case {case}: no error message\n{}",
                        describe_output(&out)
                    ));
                }
            }
            _ => figures.problems.push(format!(
                "case {case}: exit {code}, new complete backups {new:?}\n{}",
                describe_output(&out)
            )),
        }
        cluster.restart(serving);
    }
    if figures.survived > 0 {
        let out = run(fx
            .cmd(&targets_config(&fx, &targets))
            .args(["verify", "--all"]));
        if exit_code(&out) != 0 {
            figures
                .problems
                .push(format!("verify --all: {}", describe_output(&out)));
        }
    }
    figures.report(&format!(
        " failed_over={failed_over} leader_kills={leader_kills} leader_survived={leader_survived}"
    ));
    // The others elect a new leader within a second or two: a backup whose serving leader
    // is killed fails over (or had its snapshot already).
    assert_eq!(
        leader_survived, leader_kills,
        "every backup whose serving leader was killed survives"
    );
}

/// A 3-member cluster whose leader serves the snapshot; the two other members are killed
/// while it streams. The leader loses its quorum (and, a moment later, its leadership): its
/// latency probes fail, the stream stops, and no backup is committed (exit 1, naming the
/// lost quorum). Its snapshot would otherwise be taken from a member cut off from the cluster.
#[test]
fn a_member_that_loses_its_quorum_mid_stream_is_not_committed() {
    quorum_lost_mid_stream(EtcdVersion::V34);
}

#[test]
fn an_etcd_35_member_that_loses_its_quorum_mid_stream_is_not_committed() {
    quorum_lost_mid_stream(EtcdVersion::V35);
}

fn quorum_lost_mid_stream(version: EtcdVersion) {
    let mut cluster = EtcdCluster::start_version(version, 3);
    cluster.load(5000, 1000);
    let fx = Fixture::new();
    let (dir, url) = fx.file_url("backups");
    let targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let leader = cluster.leader().expect("the cluster has a leader");
    let n = cluster.member_count();
    let endpoints: Vec<String> = (0..n).map(|k| cluster.endpoint((leader + k) % n)).collect();
    // 5 MB at 1 MiB/s: a stream of about five seconds.
    let source = fx.etcd_source(&endpoints, None).replacen(
        "    timeout: 5s\n",
        "    timeout: 5s\n    read_rate_limit: 1MiB\n",
        1,
    );
    let config = fx.write_config("config.yaml", &source, &targets, "");
    let mut child = spawn(fx.cmd(&config).args(["backup", "--no-prune"]));
    let streaming = wait_until(Duration::from_secs(60), || {
        relative_files(&dir)
            .iter()
            .any(|f| f.contains("snapshot.db.zst.age"))
            || child.try_wait().ok().flatten().is_some()
    });
    assert!(streaming, "the snapshot never started streaming");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().ok().flatten().is_none(),
        "the backup ended before the members were killed"
    );
    for k in 1..n {
        cluster.kill((leader + k) % n);
    }
    let out = wait_within(child, Duration::from_secs(120), "backup");
    assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
    let stderr = stderr_str(&out);
    assert!(
        stderr.contains("quorum") || stderr.contains("no leader"),
        "the error names the lost quorum:\n{}",
        describe_output(&out)
    );
    assert!(!stderr.contains("panicked"), "{}", describe_output(&out));
    assert!(
        manifests_below(&dir).is_empty(),
        "nothing committed: {:?}",
        manifests_below(&dir)
    );
    assert!(
        list_json(&fx, &config)
            .iter()
            .all(|b| b["complete"] == false),
        "no complete backup listed"
    );
}

/// A reader's config for the snapshot target `targets` (no live source needed).
fn targets_config(fx: &Fixture, targets: &str) -> PathBuf {
    fx.write_config(
        "reader.yaml",
        &fx.etcd_source(&["http://127.0.0.1:1".to_string()], None),
        targets,
        "",
    )
}

/// `restore ID` with both identities, then `etcdctl snapshot restore` of the snapshot.
fn restores_with_etcdctl(fx: &Fixture, config: &Path, id: &str) -> Result<(), String> {
    let to = fx.path(&format!("restored-{id}"));
    let out = run(fx
        .cmd(config)
        .args(["restore", id, "--to"])
        .arg(&to)
        .args(fx.identity_args()));
    if exit_code(&out) != 0 {
        return Err(describe_output(&out));
    }
    let snapshot = fs::read_dir(&to)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("snapshot_"))
        })
        .ok_or_else(|| format!("no snapshot_*.db in {}", to.display()))?;
    snapshot_restore_check(&snapshot)
}

// ------------------------------------------------------------------ 3. a full disk

/// A tmpfs mounted for the test and unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount(8)'s syntax) at `dir`. A machine where that is not
    /// allowed fails the test with the reason: it is never skipped.
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir));
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs at {} (the full-disk fault test needs root or \
             CAP_SYS_ADMIN; it is not skipped): {}",
            dir.display(),
            describe_output(&out)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Bytes available to an unprivileged write (`df --output=avail`).
    fn available(&self) -> u64 {
        let out = run_ok(
            Command::new("df")
                .args(["-B1", "--output=avail"])
                .arg(&self.dir),
        );
        stdout_str(&out)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the available bytes")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = run(Command::new("umount").arg(&self.dir));
        if !out.status.success() {
            let _ = run(Command::new("umount").arg("-l").arg(&self.dir));
        }
    }
}

const PAGE: u64 = 4096;

/// Bytes the files of one backup take on the tmpfs (whole pages).
fn pages_of(dir: &Path) -> u64 {
    files_below(dir)
        .iter()
        .map(|f| fs::metadata(f).map_or(0, |m| m.len().div_ceil(PAGE) * PAGE))
        .sum()
}

/// Fills the file system at `tmpfs` up to `free` available bytes with a ballast file.
fn leave_free(tmpfs: &Tmpfs, ballast: &Path, free: u64) {
    let _ = fs::remove_file(ballast);
    let size = tmpfs.available().saturating_sub(free);
    let mut f = fs::File::create(ballast).expect("create the ballast");
    let block = vec![0x5au8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).expect("write the ballast");
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

/// A file:// target on an 8 MiB tmpfs, filled by a ballast to a sweep of free sizes around
/// what one backup needs: each backup succeeds (and verifies) or fails with exit 1, nothing
/// listed and no file under a final name; with the ballast gone the next backup succeeds.
#[test]
fn a_full_file_target_fails_cleanly_and_the_next_backup_succeeds_after_space_is_freed() {
    let etcd = EtcdServer::start(false);
    // Incompressible values: the stored snapshot is as large as the database.
    for i in 0..3 {
        let value = fx_random(1024 * 1024, i + 1);
        etcd.put(&format!("/registry/secrets/default/big-{i}"), &value);
    }
    etcd.load(200, 500);
    let fx = Fixture::new();
    let mount_dir = fx.path("small");
    let tmpfs = Tmpfs::mount(&mount_dir, "8m");
    let target = mount_dir.join("backups");
    fs::create_dir_all(&target).unwrap();
    let ballast = mount_dir.join("ballast");
    let config = fx.write_config(
        "config.yaml",
        &fx.etcd_source_for(&etcd),
        &format!("  snapshot: {{ url: \"file://{}\" }}\n", target.display()),
        "",
    );
    let mut figures = Figures::new("disk-full");

    // What one backup takes, from a first backup with the whole space free.
    let out = run_code(fx.cmd(&config).args(["backup", "--no-prune"]), 0);
    let id = last_line(&out);
    let needed = pages_of(&target.join("test").join(&id));
    verify_deep(&fx, &config, &id).unwrap_or_else(|e| panic!("first backup: {e}"));
    fs::remove_dir_all(target.join("test").join(&id)).unwrap();
    assert!(
        needed > 2 * 1024 * 1024 && needed + 64 * 1024 < tmpfs.available(),
        "the database does not suit the 8 MiB file system: a backup takes {needed} bytes"
    );

    // Free space: nothing, a little, half, then page by page around what a backup takes.
    let mut sweep: Vec<u64> = vec![0, 16 * 1024, needed / 2];
    let steps: Vec<i64> = if scale() > 1 {
        (-4..=16).collect()
    } else {
        vec![-3, -2, -1, 0, 1, 2, 3, 4, 6, 10]
    };
    sweep.extend(
        steps
            .iter()
            .map(|k| (needed as i64 + k * PAGE as i64).max(0) as u64),
    );
    for (case, free) in sweep.iter().enumerate() {
        leave_free(&tmpfs, &ballast, *free);
        let before = complete_ids(&list_json(&fx, &config));
        let out = run_within(
            fx.cmd(&config).args(["backup", "--no-prune"]),
            Duration::from_secs(120),
        );
        let code = exit_code(&out);
        let new = new_complete(&fx, &config, &before);
        eprintln!(
            "disk-full case {case}: {free} bytes free: exit {code} {}",
            last_error(&out)
        );
        figures.tried += 1;
        let context = || format!("case {case}, {free} bytes free\n{}", describe_output(&out));
        match code {
            0 => {
                let id = last_line(&out);
                match verify_deep(&fx, &config, &id) {
                    Ok(()) if new == [id.clone()] => figures.survived += 1,
                    Ok(()) => {
                        figures.lost += 1;
                        figures
                            .problems
                            .push(format!("{id} done, listed {new:?}: {}", context()));
                    }
                    Err(e) => {
                        figures.lost += 1;
                        figures
                            .problems
                            .push(format!("{id} does not verify: {e}\n{}", context()));
                    }
                }
                let _ = fs::remove_dir_all(target.join("test").join(&id));
            }
            1 if new.is_empty() => {
                figures.clean_failures += 1;
                let stderr = stderr_str(&out);
                if !stderr.contains("No space left on device") {
                    figures.problems.push(format!(
                        "the message does not say the disk is full: {}",
                        context()
                    ));
                }
                let final_names: Vec<String> = relative_files(&target)
                    .into_iter()
                    .filter(|f| FINAL_NAMES.iter().any(|n| f.ends_with(&format!("/{n}"))))
                    .collect();
                if !final_names.is_empty() {
                    figures.problems.push(format!(
                        "objects under final names after a failure: {final_names:?}: {}",
                        context()
                    ));
                }
                // Whatever the run left (a lock it could not release, staging files) goes,
                // so that the next case starts from the same free space.
                let leftovers: Vec<String> = relative_files(&target)
                    .into_iter()
                    .filter(|f| !f.starts_with("test/lock/"))
                    .collect();
                if !leftovers.is_empty() {
                    eprintln!("disk-full case {case}: left behind {leftovers:?}");
                }
                for f in leftovers {
                    let _ = fs::remove_file(target.join(f));
                }
            }
            _ => figures.problems.push(format!(
                "exit {code}, new complete backups {new:?}: {}",
                context()
            )),
        }
    }

    // Space freed: the next backup succeeds, is listed and verifies.
    fs::remove_file(&ballast).unwrap();
    let out = run_within(
        fx.cmd(&config).args(["backup", "--no-prune"]),
        Duration::from_secs(120),
    );
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    let id = last_line(&out);
    assert!(complete_ids(&list_json(&fx, &config)).contains(&id));
    verify_deep(&fx, &config, &id).unwrap_or_else(|e| panic!("after freeing space: {e}"));
    figures.report(&format!(" needed_bytes={needed}"));
    drop(tmpfs);
}

/// `len` deterministic pseudo-random bytes.
fn fx_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ------------------------------------------------------------------ 4. bad inputs

/// One bad input: what runs, the exit code it must give and a fragment of its message.
struct BadInput {
    name: &'static str,
    code: i32,
    fragment: String,
    out: Output,
}

/// Writes `bytes` to `path` for the duration of `f`, then puts the original back.
fn with_file<T>(path: &Path, bytes: &[u8], f: impl FnOnce() -> T) -> T {
    let original = fs::read(path).ok();
    fs::write(path, bytes).unwrap();
    let result = f();
    match original {
        Some(b) => fs::write(path, b).unwrap(),
        None => {
            let _ = fs::remove_file(path);
        }
    }
    result
}

/// At least 30 bad inputs — configs, manifests, identities, recipients, objects swapped
/// between backups and clusters — each with its documented exit code and a message that
/// names the problem; never a panic (101).
#[test]
fn bad_inputs_give_their_exit_code_and_a_clear_message_never_a_panic() {
    let etcd = EtcdServer::start(false);
    etcd.load(300, 500);
    let fx = Fixture::new();
    let (dir, url) = fx.file_url("backups");
    let targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let source = fx.etcd_source_for(&etcd);
    let good = fx.write_config("good.yaml", &source, &targets, "");
    let good_text = fs::read_to_string(&good).unwrap();
    let other_cluster = fx.path("other.yaml");
    fs::write(
        &other_cluster,
        good_text.replace("cluster: test\n", "cluster: other\n"),
    )
    .unwrap();
    let a = last_line(&run_ok(fx.cmd(&good).args(["backup", "--no-prune"])));
    std::thread::sleep(Duration::from_millis(1100));
    etcd.put("/registry/configmaps/default/changed", "b");
    let b = last_line(&run_ok(fx.cmd(&good).args(["backup", "--no-prune"])));
    let c = last_line(&run_ok(
        fx.cmd(&other_cluster).args(["backup", "--no-prune"]),
    ));
    let backup_dir = |cluster: &str, id: &str| dir.join(cluster).join(id);
    let manifest_b = backup_dir("test", &b).join("manifest.json");
    let snapshot_b = backup_dir("test", &b).join("snapshot.db.zst.age");
    let manifest_b_bytes = read(&manifest_b);
    let (wrong_key, _) = age_keygen(fx.dir.path(), "stranger");
    let not_an_identity = fx.path("not-an-identity.txt");
    fs::write(&not_an_identity, "hello, I am not a key\n").unwrap();
    let secret_line = fs::read_to_string(&fx.snapshot_key)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();

    let mut cases: Vec<BadInput> = Vec::new();
    let mut case = |name: &'static str, code: i32, fragment: &str, out: Output| {
        cases.push(BadInput {
            name,
            code,
            fragment: fragment.to_string(),
            out,
        })
    };

    // ---- configs (exit 2, the key named)
    let config_case = |text: String| -> Output {
        let path = fx.path("bad.yaml");
        fs::write(&path, text).unwrap();
        run(fx.cmd(&path).args(["config", "check"]))
    };
    let replaced = |from: &str, to: &str| -> String {
        assert!(good_text.contains(from), "the good config has {from:?}");
        good_text.replacen(from, to, 1)
    };
    case(
        "YAML syntax error",
        2,
        "config error at `",
        config_case(replaced("cluster: test\n", "cluster: \"test\n")),
    );
    case(
        "tab-indented YAML",
        2,
        "cannot start any token",
        config_case(replaced("  etcd:\n", "\tetcd:\n")),
    );
    case(
        "empty file",
        2,
        "missing field `version`",
        config_case(String::new()),
    );
    case(
        "not a mapping",
        2,
        "invalid type: sequence",
        config_case("- just\n- a list\n".into()),
    );
    case(
        "version is a string",
        2,
        "`version`",
        config_case(replaced("version: 1\n", "version: one\n")),
    );
    case(
        "unsupported version",
        2,
        "`version`",
        config_case(replaced("version: 1\n", "version: 2\n")),
    );
    case(
        "unknown top-level key",
        2,
        "`clustr`",
        config_case(replaced("cluster: test\n", "cluster: test\nclustr: x\n")),
    );
    case(
        "unknown nested key",
        2,
        "`source.etcd.timeuot`",
        config_case(replaced("    timeout: 5s\n", "    timeuot: 5s\n")),
    );
    case(
        "missing cluster",
        2,
        "missing field `cluster`",
        config_case(replaced("cluster: test\n", "")),
    );
    case(
        "cluster name with a slash",
        2,
        "`cluster`",
        config_case(replaced("cluster: test\n", "cluster: a/b\n")),
    );
    case(
        "compression level is a string",
        2,
        "`compression.level`",
        config_case(format!("{good_text}compression: {{ level: high }}\n")),
    );
    case(
        "compression level out of range",
        2,
        "`compression.level`",
        config_case(format!("{good_text}compression: {{ level: 25 }}\n")),
    );
    case(
        "timeout not a duration",
        2,
        "`source.etcd.timeout`",
        config_case(replaced("    timeout: 5s\n", "    timeout: soon\n")),
    );
    case(
        "timeout zero",
        2,
        "`source.etcd.timeout`",
        config_case(replaced("    timeout: 5s\n", "    timeout: 0s\n")),
    );
    case(
        "timeout over a day",
        2,
        "`source.etcd.timeout`",
        config_case(replaced("    timeout: 5s\n", "    timeout: 25h\n")),
    );
    case(
        "read rate limit too low",
        2,
        "`source.etcd.read_rate_limit`",
        config_case(replaced(
            "    timeout: 5s\n",
            "    timeout: 5s\n    read_rate_limit: 1KiB\n",
        )),
    );
    case(
        "keep_within out of range",
        2,
        "`retention.keep_within`",
        config_case(format!(
            "{good_text}retention: {{ keep_within: 300000y }}\n"
        )),
    );
    case(
        "retention without a rule",
        2,
        "`retention`",
        config_case(format!("{good_text}retention: {{}}\n")),
    );
    case(
        "lock_stale_after too short",
        2,
        "`targets.lock_stale_after`",
        config_case(format!("{good_text}  lock_stale_after: 1s\n")),
    );
    case(
        "bad cron",
        2,
        "`schedule.cron`",
        config_case(format!("{good_text}schedule: {{ cron: \"every day\" }}\n")),
    );
    case(
        "cron that never fires",
        2,
        "no occurrence within the next year",
        config_case(format!("{good_text}schedule: {{ cron: \"0 0 30 2 *\" }}\n")),
    );
    case(
        "cron every second",
        2,
        "more often than once a minute",
        config_case(format!(
            "{good_text}schedule: {{ cron: \"* * * * * *\" }}\n"
        )),
    );
    case(
        "drill cron every ten seconds",
        2,
        "`schedule.drill.cron`",
        config_case(format!(
            "{good_text}schedule: {{ cron: \"0 3 * * *\", drill: {{ cron: \"*/10 * * * * *\", identities: [\"{}\"] }} }}\n",
            fx.snapshot_key.display()
        )),
    );
    case(
        "etcd username without a password file",
        2,
        "`source.etcd.password_file`",
        config_case(replaced(
            "    timeout: 5s\n",
            "    timeout: 5s\n    username: root\n",
        )),
    );
    case(
        "empty signing section",
        2,
        "`signing`",
        config_case(format!("{good_text}signing: {{}}\n")),
    );
    case(
        "endpoint not a URL",
        2,
        "`source.etcd.endpoints[0]`",
        config_case(replaced(&etcd.endpoint(), "not a url")),
    );
    case(
        "https endpoint without a CA",
        2,
        "`source.etcd.cacert`",
        config_case(replaced("http://127.0.0.1", "https://127.0.0.1")),
    );
    case(
        "target scheme not supported",
        2,
        "`targets.snapshot.url`",
        config_case(replaced(&url, "ftp://host/x")),
    );
    case(
        "target URL not a URL",
        2,
        "`targets.snapshot.url`",
        config_case(replaced(&url, "backups here")),
    );
    case(
        "s3 URL without a bucket",
        2,
        "`targets.snapshot.url`",
        config_case(replaced(&url, "s3:///etcd")),
    );
    case(
        "file target with options",
        2,
        "`targets.snapshot.options.aws_region`",
        config_case(replaced(
            &format!("url: \"{url}\" }}"),
            &format!("url: \"{url}\", options: {{ aws_region: x }} }}"),
        )),
    );
    case(
        "unknown s3 option",
        2,
        "`targets.snapshot.options.aws_no_such_option`",
        config_case(replaced(
            &format!("url: \"{url}\" }}"),
            "url: \"s3://bucket/etcd\", options: { aws_no_such_option: x } }",
        )),
    );
    case(
        "overlapping recipients",
        2,
        "`encryption.static_resources.recipients`",
        config_case(good_text.replace(&fx.static_recipient, &fx.snapshot_recipient)),
    );
    case(
        "recipient that does not parse",
        2,
        "`encryption.snapshot.recipients[0]`",
        config_case(replaced(&fx.snapshot_recipient, "age1notarecipient")),
    );
    let secret_case = config_case(replaced(&fx.snapshot_recipient, &secret_line));
    assert!(
        !format!("{}{}", stdout_str(&secret_case), stderr_str(&secret_case))
            .contains(&secret_line[16..]),
        "a secret key in the recipients was echoed"
    );
    case(
        "secret key as a recipient",
        2,
        "looks like a secret key",
        secret_case,
    );
    case(
        "no recipients",
        2,
        "`encryption.snapshot.recipients`",
        config_case(replaced(&format!("[\"{}\"]", fx.snapshot_recipient), "[]")),
    );
    case(
        "recipients file missing",
        2,
        "`encryption.snapshot.recipients_file`",
        config_case(replaced(
            &format!("recipients: [\"{}\"]", fx.snapshot_recipient),
            "recipients_file: /nonexistent/recipients.txt",
        )),
    );
    case(
        "keys archive without recipients",
        2,
        "`encryption.static_resources`",
        config_case(replaced(
            &format!(
                "  static_resources:\n    recipients: [\"{}\"]\n",
                fx.static_recipient
            ),
            "",
        )),
    );
    case(
        "config file missing",
        2,
        "`--config`",
        run(tool()
            .arg("--config")
            .arg(fx.path("nowhere.yaml"))
            .arg("list")),
    );

    // ---- manifests (exit 3 for a damaged or foreign backup)
    let verify_b = || run(fx.cmd(&good).args(["verify", b.as_str()]));
    let half = &manifest_b_bytes[..manifest_b_bytes.len() / 2];
    case(
        "truncated manifest",
        3,
        "unreadable",
        with_file(&manifest_b, half, verify_b),
    );
    case(
        "empty manifest",
        3,
        "unreadable",
        with_file(&manifest_b, b"", verify_b),
    );
    let mut garbled = manifest_b_bytes.clone();
    for i in (0..garbled.len()).step_by(7) {
        garbled[i] ^= 0x20;
    }
    case(
        "garbled manifest",
        3,
        "unreadable",
        with_file(&manifest_b, &garbled, verify_b),
    );
    case(
        "manifest that is not UTF-8",
        3,
        "unreadable",
        with_file(&manifest_b, &[0xff, 0xfe, 0x00, 0x7b], verify_b),
    );
    let edit = |f: &dyn Fn(&mut serde_json::Value)| -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&manifest_b_bytes).unwrap();
        f(&mut v);
        serde_json::to_vec_pretty(&v).unwrap()
    };
    case(
        "manifest of a newer format",
        3,
        "newer",
        with_file(
            &manifest_b,
            &edit(&|m| m["format_version"] = 99.into()),
            verify_b,
        ),
    );
    case(
        "manifest with a field of the wrong type",
        3,
        "unreadable",
        with_file(
            &manifest_b,
            &edit(&|m| m["artifacts"]["snapshot"]["stored"]["size"] = "big".into()),
            verify_b,
        ),
    );
    case(
        "manifest digest not hex",
        3,
        "unreadable",
        with_file(
            &manifest_b,
            &edit(&|m| m["artifacts"]["snapshot"]["stored"]["sha256"] = "zz".into()),
            verify_b,
        ),
    );
    case(
        "manifest key pointing out of its backup",
        3,
        "artifacts.snapshot.key",
        with_file(
            &manifest_b,
            &edit(&|m| m["artifacts"]["snapshot"]["key"] = "../../../etc/passwd".into()),
            verify_b,
        ),
    );
    case(
        "manifest with an impossible size",
        3,
        "not a real size",
        with_file(
            &manifest_b,
            &edit(&|m| m["artifacts"]["snapshot"]["stored"]["size"] = u64::MAX.into()),
            verify_b,
        ),
    );
    case(
        "manifest copied from another backup",
        3,
        "describes backup",
        with_file(
            &manifest_b,
            &read(&backup_dir("test", &a).join("manifest.json")),
            verify_b,
        ),
    );
    case(
        "manifest copied from another cluster",
        3,
        "describes backup",
        with_file(
            &manifest_b,
            &read(&backup_dir("other", &c).join("manifest.json")),
            verify_b,
        ),
    );
    case(
        "digest rewritten in the manifest",
        3,
        "stored SHA-256",
        with_file(
            &manifest_b,
            &edit(&|m| m["artifacts"]["snapshot"]["stored"]["sha256"] = "00".repeat(32).into()),
            verify_b,
        ),
    );

    // ---- objects swapped between backups and clusters (exit 3)
    case(
        "snapshot swapped with another backup's",
        3,
        "snapshot.db.zst.age: stored",
        with_file(
            &snapshot_b,
            &read(&backup_dir("test", &a).join("snapshot.db.zst.age")),
            verify_b,
        ),
    );
    case(
        "snapshot swapped with another cluster's",
        3,
        "snapshot.db.zst.age: stored",
        with_file(
            &snapshot_b,
            &read(&backup_dir("other", &c).join("snapshot.db.zst.age")),
            verify_b,
        ),
    );
    let static_b = backup_dir("test", &b).join("static_kuberesources.tar.zst.age");
    case(
        "keys archive swapped with another backup's",
        3,
        "static_kuberesources.tar.zst.age: stored",
        with_file(
            &static_b,
            &read(&backup_dir("test", &a).join("static_kuberesources.tar.zst.age")),
            verify_b,
        ),
    );
    case(
        "snapshot truncated",
        3,
        "truncated or replaced",
        with_file(&snapshot_b, &read(&snapshot_b)[..100], verify_b),
    );
    let restore_to = fx.path("restore-target");
    case(
        "restore of a backup whose snapshot is another backup's",
        3,
        "restoring snapshot",
        with_file(
            &snapshot_b,
            &read(&backup_dir("test", &a).join("snapshot.db.zst.age")),
            || {
                run(fx
                    .cmd(&good)
                    .args(["restore", b.as_str(), "--to"])
                    .arg(&restore_to)
                    .args(fx.identity_args()))
            },
        ),
    );
    case("snapshot missing", 3, "missing", {
        let bytes = read(&snapshot_b);
        fs::remove_file(&snapshot_b).unwrap();
        let out = verify_b();
        fs::write(&snapshot_b, bytes).unwrap();
        out
    });

    case("snapshot replaced by a zstd bomb", 3, "stored size is", {
        let bomb = run_ok(
            Command::new("sh")
                .arg("-c")
                .arg("head -c 64M /dev/zero | zstd -q -c | age -r \"$1\"")
                .arg("sh")
                .arg(&fx.snapshot_recipient),
        )
        .stdout;
        with_file(&snapshot_b, &bomb, || {
            run(fx
                .cmd(&good)
                .args(["restore", b.as_str(), "--to"])
                .arg(fx.path("restore-bomb"))
                .args(fx.identity_args()))
        })
    });
    case(
        "cluster directory linked out of a file:// target",
        1,
        "is a symbolic link",
        {
            let (linked_dir, linked_url) = fx.file_url("linked-target");
            let outside = fx.path("outside-target");
            fs::create_dir_all(&outside).unwrap();
            std::os::unix::fs::symlink(&outside, linked_dir.join("test")).unwrap();
            let linked = fx.write_config(
                "linked.yaml",
                &source,
                &format!("  snapshot: {{ url: \"{linked_url}\" }}\n"),
                "",
            );
            let out = run(fx.cmd(&linked).args(["backup", "--no-prune"]));
            assert!(files_below(&outside).is_empty(), "written through the link");
            out
        },
    );

    // ---- identities
    let verify_with = |ids: &[&Path]| {
        let mut c = fx.cmd(&good);
        c.args(["verify", b.as_str()]);
        for id in ids {
            c.arg("--identity").arg(id);
        }
        run(&mut c)
    };
    case(
        "wrong identity",
        2,
        "none of the --identity files",
        verify_with(&[wrong_key.as_path()]),
    );
    case(
        "identity file missing",
        2,
        "cannot read identity file",
        verify_with(&[fx.path("no-such-key.txt").as_path()]),
    );
    case(
        "identity file that is not an identity",
        2,
        "identity file",
        verify_with(&[not_an_identity.as_path()]),
    );
    case("recipient file given as identity", 2, "identity file", {
        let recipient_file = fx.path("recipient.txt");
        fs::write(&recipient_file, format!("{}\n", fx.snapshot_recipient)).unwrap();
        verify_with(&[recipient_file.as_path()])
    });
    case(
        "restore without an identity",
        2,
        "--identity <IDENTITIES>",
        run(fx
            .cmd(&good)
            .args(["restore", b.as_str(), "--to"])
            .arg(fx.path("restore-none"))),
    );
    case(
        "restore with the snapshot identity only",
        2,
        "no --identity opens the static resources",
        run(fx
            .cmd(&good)
            .args(["restore", b.as_str(), "--to"])
            .arg(fx.path("restore-half"))
            .arg("--identity")
            .arg(&fx.snapshot_key)),
    );

    // ---- ids and directories
    case(
        "backup that does not exist",
        2,
        "does not exist",
        run(fx.cmd(&good).args(["verify", "20000101T000000Z"])),
    );
    case(
        "malformed backup id",
        2,
        "is not a backup id",
        run(fx.cmd(&good).args(["verify", "../../etc"])),
    );
    let occupied = fx.path("occupied");
    fs::create_dir_all(&occupied).unwrap();
    fs::write(occupied.join("snapshot_2020-01-01_000000.db"), b"x").unwrap();
    case(
        "restore into a directory holding another pair",
        4,
        "snapshot_2020-01-01_000000.db",
        run(fx
            .cmd(&good)
            .args(["restore", b.as_str(), "--to"])
            .arg(&occupied)
            .args(fx.identity_args())),
    );

    // Every case: its code, its message, no panic.
    let mut failures = Vec::new();
    for c in &cases {
        let text = format!("{}\n{}", stdout_str(&c.out), stderr_str(&c.out));
        let code = exit_code(&c.out);
        eprintln!(
            "bad input: {}: exit {code}: {}",
            c.name,
            stderr_str(&c.out).lines().next().unwrap_or_default()
        );
        if code != c.code || !text.contains(&c.fragment) || text.contains("panicked") {
            failures.push(format!(
                "{}: expected exit {} with {:?}\n{}",
                c.name,
                c.code,
                c.fragment,
                describe_output(&c.out)
            ));
        }
    }
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    println!(
        "FAULTS kind=bad-inputs tried={} survived=0 clean_failures={} lost=0",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(cases.len() >= 30, "only {} bad inputs", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs misbehaved:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    // The backups themselves are untouched by all of this.
    run_ok(
        fx.cmd(&good)
            .args(["verify", "--all"])
            .args(fx.identity_args()),
    );
}
