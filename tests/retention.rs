//! Issue 6: retention and prune against real targets (a directory and S3 on moto).
//!
//! After `prune`, `list` and the raw object listing of every target agree with the
//! policy; `--dry-run` deletes nothing; a half-deleted backup (what an interrupted prune
//! leaves) is never listed as complete and is collected after `incomplete_grace`; a delete
//! the store refuses leaves that whole backup in place while the others are pruned.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::fixture::{Fixture, s3_target};
use common::*;
use serde_json::Value;

const ARTIFACTS: [&str; 3] = [
    "manifest.json",
    "snapshot.db.zst.age",
    "static_kuberesources.tar.zst.age",
];

/// A tiny etcd, so that a backup takes well under a second.
fn tiny_etcd() -> EtcdServer {
    let etcd = EtcdServer::start(false);
    etcd.load(20, 100);
    etcd
}

/// Writes a config with a live etcd source, the given `targets:` body and top-level `extra`.
fn config(fx: &Fixture, etcd: &EtcdServer, name: &str, targets: &str, extra: &str) -> PathBuf {
    fx.write_config(name, &fx.etcd_source_for(etcd), targets, extra)
}

/// Snapshots and keys in two new directories: (snapshot dir, keys dir, `targets:` body).
fn split_targets(fx: &Fixture) -> (PathBuf, PathBuf, String) {
    let (snap_dir, snap_url) = fx.file_url("snapshots");
    let (keys_dir, keys_url) = fx.file_url("keys");
    let targets = format!(
        "  snapshot: {{ url: \"{snap_url}\" }}\n  static_resources: {{ url: \"{keys_url}\" }}\n"
    );
    (snap_dir, keys_dir, targets)
}

/// Two configs for `targets` keeping the last `keep_last`: (default incomplete grace, 1 s grace).
fn grace_configs(
    fx: &Fixture,
    etcd: &EtcdServer,
    targets: &str,
    keep_last: usize,
) -> (PathBuf, PathBuf) {
    let retention = |grace: &str| format!("retention: {{ keep_last: {keep_last}{grace} }}\n");
    (
        config(fx, etcd, "c.yaml", targets, &retention("")),
        config(
            fx,
            etcd,
            "short.yaml",
            targets,
            &retention(", incomplete_grace: 1s"),
        ),
    )
}

/// One `backup` (with `--no-prune` unless `prune`); returns the id (last line of stdout).
fn backup(fx: &Fixture, config: &Path, prune: bool) -> String {
    let mut cmd = fx.cmd(config);
    cmd.arg("backup");
    if !prune {
        cmd.arg("--no-prune");
    }
    let out = run_ok(&mut cmd);
    stdout_str(&out)
        .lines()
        .last()
        .expect("backup prints the id")
        .to_string()
}

/// `n` backups without pruning, oldest first.
fn backups(fx: &Fixture, config: &Path, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|_| backup(fx, config, false)).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids sort in time order");
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        n,
        "ids are unique: {ids:?}"
    );
    ids
}

/// Ids `list` shows as complete, newest first.
fn complete_ids(fx: &Fixture, config: &Path) -> Vec<String> {
    common::complete_ids(&list_json(fx, config))
}

/// `prune --json` with the expected exit code, parsed.
fn prune_json(fx: &Fixture, config: &Path, extra: &[&str], code: i32) -> Value {
    let out = run_code(fx.cmd(config).arg("prune").arg("--json").args(extra), code);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("prune --json: {e}\n{}", describe_output(&out)))
}

/// Every file below `dir`, as paths relative to it, except the lock's generations
/// (`test/lock/<n>`: the released lock's last one always stays; tests/locking.rs checks them).
fn files(dir: &Path) -> BTreeSet<String> {
    let mut out = relative_files(dir);
    out.retain(|k| !k.starts_with("test/lock/"));
    out
}

/// Names of the directories in `dir` (the lock's directory aside).
fn subdirs(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir() && e.file_name() != "lock")
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The keys a complete backup has in one target (`prefix` is `test/` or `offsite/test/`).
fn backup_keys(prefix: &str, ids: &[&String], names: &[&str]) -> BTreeSet<String> {
    ids.iter()
        .flat_map(|id| names.iter().map(move |n| format!("{prefix}{id}/{n}")))
        .collect()
}

/// The stdout line of `prune` (text) about `id`; exactly one must exist.
fn line_about<'a>(stdout: &'a str, id: &str) -> &'a str {
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == id))
        .collect();
    assert_eq!(lines.len(), 1, "one line about {id} in:\n{stdout}");
    lines[0]
}

/// True when some whitespace-separated word of `text` is `id` (ids can prefix each other).
fn mentions(text: &str, id: &str) -> bool {
    text.split_whitespace().any(|w| w == id)
}

/// Checks the JSON report's per-backup shape and returns (id, action) newest first.
fn decisions(report: &Value) -> Vec<(String, String)> {
    report["decisions"]
        .as_array()
        .expect("decisions array")
        .iter()
        .map(|d| {
            let id = d["id"].as_str().expect("decision id").to_string();
            let verdict = &d["verdict"];
            assert!(
                verdict.get("keep").is_some_and(Value::is_array) || verdict.get("delete").is_some(),
                "verdict of {id} is keep or delete: {d}"
            );
            assert!(
                d["reasons"].as_array().is_some_and(|r| !r.is_empty()),
                "{id} has reasons: {d}"
            );
            (id, d["action"].as_str().expect("action").to_string())
        })
        .collect()
}

#[test]
fn dir_target_prune_follows_the_policy_and_dry_run_deletes_nothing() {
    let etcd = tiny_etcd();
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, "retention: { keep_last: 2 }\n");
    let ids = backups(&fx, &config, 6);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(complete_ids(&fx, &config), newest_first);
    let all_refs: Vec<&String> = ids.iter().collect();
    let before = files(&dir);
    assert_eq!(
        before,
        backup_keys("test/", &all_refs, &ARTIFACTS),
        "six whole backups and nothing else (no lock, no in-progress marker)"
    );

    // Dry run: every backup with its verdict and reason, nothing deleted.
    let out = run_ok(fx.cmd(&config).args(["prune", "--dry-run"]));
    let text = stdout_str(&out);
    for (i, id) in newest_first.iter().enumerate() {
        let line = line_about(&text, id);
        if i < 2 {
            assert!(line.starts_with("keep "), "{line}");
            assert!(line.contains("keep_last"), "{line}");
        } else {
            assert!(line.starts_with("would delete "), "{line}");
            assert!(line.contains("no rule matched"), "{line}");
        }
    }
    assert!(
        line_about(&text, &newest_first[0]).contains("newest backup is always kept"),
        "{text}"
    );
    assert_eq!(files(&dir), before, "--dry-run deleted nothing");
    let report = prune_json(&fx, &config, &["--dry-run"], 0);
    assert_eq!(report["dry_run"], true);
    let actions = decisions(&report);
    assert_eq!(
        actions,
        newest_first
            .iter()
            .enumerate()
            .map(|(i, id)| (
                id.clone(),
                if i < 2 { "kept" } else { "would_delete" }.to_string()
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(files(&dir), before, "--dry-run --json deleted nothing");
    assert_eq!(complete_ids(&fx, &config), newest_first);

    // The real prune.
    let report = prune_json(&fx, &config, &[], 0);
    assert_eq!(report["dry_run"], false);
    let actions = decisions(&report);
    for (i, (id, action)) in actions.iter().enumerate() {
        assert_eq!(id, &newest_first[i]);
        let d = &report["decisions"][i];
        if i < 2 {
            assert_eq!(action, "kept");
            let keep = d["verdict"]["keep"].as_array().unwrap();
            assert!(keep.contains(&Value::from("last")), "{d}");
        } else {
            assert_eq!(action, "deleted");
            assert_eq!(d["verdict"]["delete"], "no_rule_matched", "{d}");
            assert!(d["error"].is_null(), "{d}");
        }
    }
    assert_eq!(report["failures"], serde_json::json!([]));
    assert_eq!(report["leftovers"], serde_json::json!([]));

    // list and the raw directory agree with the policy.
    let kept: Vec<&String> = newest_first[..2].iter().collect();
    assert_eq!(complete_ids(&fx, &config), newest_first[..2].to_vec());
    assert_eq!(
        list_json(&fx, &config).len(),
        2,
        "nothing incomplete listed"
    );
    assert_eq!(
        files(&dir),
        backup_keys("test/", &kept, &ARTIFACTS),
        "exactly the two newest backups, whole"
    );
    assert_eq!(
        subdirs(&dir.join("test")),
        newest_first[..2].iter().cloned().collect(),
        "the deleted backups' directories are gone"
    );

    // Again: nothing left to do.
    let out = run_ok(fx.cmd(&config).arg("prune"));
    let text = stdout_str(&out);
    for id in &newest_first[..2] {
        assert!(line_about(&text, id).starts_with("keep "), "{text}");
    }
    assert!(text.contains("2 kept, 0 deleted, 0 failed"), "{text}");
    assert_eq!(
        files(&dir),
        backup_keys("test/", &kept, &ARTIFACTS),
        "a second prune changes nothing"
    );
}

#[test]
fn split_targets_lose_both_halves_of_each_pruned_backup() {
    let etcd = tiny_etcd();
    let fx = Fixture::new();
    let (snap_dir, keys_dir, targets) = split_targets(&fx);
    let config = config(
        &fx,
        &etcd,
        "c.yaml",
        &targets,
        "retention: { keep_last: 1 }\n",
    );
    let ids = backups(&fx, &config, 4);
    let all: Vec<&String> = ids.iter().collect();
    let snap_names = ["manifest.json", "snapshot.db.zst.age"];
    let keys_names = ["manifest.json", "static_kuberesources.tar.zst.age"];
    assert_eq!(files(&snap_dir), backup_keys("test/", &all, &snap_names));
    assert_eq!(files(&keys_dir), backup_keys("test/", &all, &keys_names));

    let out = run_ok(fx.cmd(&config).arg("prune"));
    let text = stdout_str(&out);
    let newest = ids.last().unwrap();
    assert!(line_about(&text, newest).starts_with("keep "), "{text}");
    for id in &ids[..3] {
        assert!(line_about(&text, id).starts_with("deleted "), "{text}");
    }
    assert_eq!(complete_ids(&fx, &config), vec![newest.clone()]);
    assert_eq!(list_json(&fx, &config).len(), 1);
    assert_eq!(
        files(&snap_dir),
        backup_keys("test/", &[newest], &snap_names),
        "snapshot side: only the kept backup"
    );
    assert_eq!(
        files(&keys_dir),
        backup_keys("test/", &[newest], &keys_names),
        "keys side: only the kept backup, manifest copies of the others gone too"
    );
}

#[test]
fn backup_prunes_afterwards_unless_told_not_to() {
    let etcd = tiny_etcd();
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, "retention: { keep_last: 2 }\n");
    let ids = backups(&fx, &config, 3);
    assert_eq!(complete_ids(&fx, &config).len(), 3);
    // --no-prune: the count grows past the policy.
    let fourth = backup(&fx, &config, false);
    assert_eq!(complete_ids(&fx, &config).len(), 4);
    // A plain backup prunes: the new one and the one before it stay.
    let fifth = backup(&fx, &config, true);
    assert_eq!(
        complete_ids(&fx, &config),
        vec![fifth.clone(), fourth.clone()]
    );
    assert_eq!(
        files(&dir),
        backup_keys("test/", &[&fifth, &fourth], &ARTIFACTS)
    );
    for id in &ids {
        assert!(!dir.join("test").join(id).exists(), "{id} pruned");
    }
    // Without a retention policy, backup never prunes (same directory target).
    let targets = format!("  snapshot: {{ url: \"file://{}\" }}\n", dir.display());
    let no_policy = self::config(&fx, &etcd, "none.yaml", &targets, "");
    for _ in 0..2 {
        backup(&fx, &no_policy, true);
    }
    assert_eq!(complete_ids(&fx, &config).len(), 4);
    let out = run_code(fx.cmd(&no_policy).arg("prune"), 2);
    assert!(
        stderr_str(&out).contains("`retention`"),
        "{}",
        describe_output(&out)
    );
}

/// Issue 20: prune keeps the proof. With `schedule.drill` set, `keep_drilled` defaults to 1:
/// `keep_last: 3` and three newer backups leave the drilled one in place, and `status
/// --max-drill-age 8d` right after still finds its drill; with `keep_drilled: 0` the same
/// prune deletes it and status exits 5.
#[test]
fn prune_keeps_the_newest_drilled_backup_and_status_still_finds_the_drill() {
    let etcd = tiny_etcd();
    let fx = Fixture::new();
    let scratch = fx.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (dir, url) = fx.file_url("backups");
    let targets = format!("  snapshot: {{ url: \"{url}\" }}\n");
    let identities = fx
        .identity_args()
        .into_iter()
        .filter(|a| a != "--identity")
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let schedule = format!(
        "schedule:\n  cron: \"0 3 * * *\"\n  drill: {{ cron: \"30 5 * * 0\", identities: [{identities}], scratch_dir: \"{}\" }}\n",
        scratch.display()
    );
    let drills = config(
        &fx,
        &etcd,
        "drills.yaml",
        &targets,
        &format!("retention: {{ keep_last: 3 }}\n{schedule}"),
    );
    let off = config(
        &fx,
        &etcd,
        "off.yaml",
        &targets,
        &format!("retention: {{ keep_last: 3, keep_drilled: 0 }}\n{schedule}"),
    );

    let drilled = backup(&fx, &drills, false);
    let out = run(fx
        .cmd(&drills)
        .args(["drill", "--latest", "--scratch-dir"])
        .arg(&scratch)
        .args(fx.identity_args()));
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    // Three newer backups, each pruning afterwards as a nightly job does.
    let newer: Vec<String> = (0..3).map(|_| backup(&fx, &drills, true)).collect();
    let mut want = newer.clone();
    want.reverse();
    want.push(drilled.clone());
    assert_eq!(complete_ids(&fx, &drills), want, "the drilled backup stays");
    assert!(
        relative_files(&dir)
            .iter()
            .any(|k| k.starts_with(&format!("test/{drilled}/drill-"))),
        "its drill record stays with it"
    );
    let report = prune_json(&fx, &drills, &["--dry-run"], 0);
    let d = decision(&report, &drilled);
    assert_eq!(d["verdict"]["keep"], serde_json::json!(["drilled"]), "{d}");
    assert_eq!(
        d["reasons"][0], "keep_drilled (a drill proved it restores)",
        "{d}"
    );
    let out = run_ok(fx.cmd(&drills).arg("prune"));
    assert!(
        line_about(&stdout_str(&out), &drilled).contains("keep_drilled"),
        "{}",
        describe_output(&out)
    );
    let out = run_ok(fx.cmd(&drills).args(["status", "--max-drill-age", "8d"]));
    assert!(
        stdout_str(&out).contains(&format!("newest successful drill: of {drilled}")),
        "{}",
        describe_output(&out)
    );

    // Turned off, the same policy deletes the proof and status says so.
    let report = prune_json(&fx, &off, &[], 0);
    assert_eq!(decision(&report, &drilled)["action"], "deleted", "{report}");
    assert!(!dir.join("test").join(&drilled).exists());
    let out = run_code(fx.cmd(&off).args(["status", "--max-drill-age", "8d"]), 5);
    assert!(
        stderr_str(&out).contains("no successful drill"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn half_deleted_backups_are_never_listed_and_are_collected_after_the_grace_period() {
    let etcd = tiny_etcd();
    let fx = Fixture::new();
    let (snap_dir, keys_dir, targets) = split_targets(&fx);
    // keep_last is generous: only the incomplete directories are prune's business here.
    let (default_grace, short_grace) = grace_configs(&fx, &etcd, &targets, 10);
    let ids = backups(&fx, &default_grace, 5);
    // What an interrupted prune leaves (it deletes the snapshot-side manifest, the
    // manifest copy, the keys archive, the snapshot): after the first delete…
    let first_step = &ids[1];
    std::fs::remove_file(snap_dir.join("test").join(first_step).join("manifest.json")).unwrap();
    // …and after the manifest copy too.
    let copy_gone = &ids[2];
    std::fs::remove_file(snap_dir.join("test").join(copy_gone).join("manifest.json")).unwrap();
    std::fs::remove_file(keys_dir.join("test").join(copy_gone).join("manifest.json")).unwrap();
    // A keys half with its manifest copy whose snapshot half is not in this snapshot
    // target (removed by hand, or this config points elsewhere): never prune's to remove.
    let other_half = &ids[3];
    std::fs::remove_dir_all(snap_dir.join("test").join(other_half)).unwrap();
    let whole: Vec<String> = vec![ids[4].clone(), ids[0].clone()];
    let leftovers_ids = [first_step, copy_gone];

    for entry in list_json(&fx, &default_grace) {
        let id = entry["id"].as_str().unwrap();
        if leftovers_ids.iter().any(|l| *l == id) {
            assert_eq!(entry["complete"], false, "{entry}");
        } else {
            assert!(whole.iter().any(|w| w == id), "unexpected entry {entry}");
            assert_eq!(entry["complete"], true, "{entry}");
        }
    }
    assert_eq!(complete_ids(&fx, &default_grace), whole);
    let out = run_ok(fx.cmd(&default_grace).args(["verify", "--all"]));
    let text = stdout_str(&out);
    for id in &whole {
        assert!(text.lines().any(|l| l == format!("{id} OK")), "{text}");
    }
    assert!(
        [first_step, copy_gone, other_half]
            .iter()
            .all(|id| !mentions(&text, id)),
        "verify --all ignores directories without a manifest:\n{text}"
    );

    // Default grace (24 h): the leftovers stay, and prune says so.
    let snap_before = files(&snap_dir);
    let keys_before = files(&keys_dir);
    let out = run_ok(fx.cmd(&default_grace).arg("prune"));
    let text = stdout_str(&out);
    for id in leftovers_ids {
        let line = line_about(&text, id);
        assert!(line.starts_with("incomplete "), "{line}");
        assert!(line.contains("left alone until"), "{line}");
    }
    let line = line_about(&text, other_half);
    assert!(
        line.starts_with("unusable ") && line.contains("keys half"),
        "{line}"
    );
    assert_eq!(files(&snap_dir), snap_before);
    assert_eq!(files(&keys_dir), keys_before);

    // A short grace period that has passed: both leftovers go, on both targets; the
    // other half stays.
    std::thread::sleep(Duration::from_secs(2));
    let report = prune_json(&fx, &short_grace, &["--dry-run"], 0);
    let leftovers = report["leftovers"].as_array().unwrap();
    assert_eq!(leftovers.len(), 3, "{report}");
    let action_of = |report: &Value, id: &str| -> String {
        report["leftovers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["id"] == id)
            .map(|l| l["action"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    for id in leftovers_ids {
        assert_eq!(action_of(&report, id), "would_remove", "{report}");
    }
    assert_eq!(action_of(&report, other_half), "kept", "{report}");
    assert_eq!(
        files(&snap_dir),
        snap_before,
        "--dry-run removes no leftover"
    );
    let report = prune_json(&fx, &short_grace, &[], 0);
    for id in leftovers_ids {
        assert_eq!(action_of(&report, id), "removed", "{report}");
    }
    assert_eq!(action_of(&report, other_half), "kept", "{report}");
    let leftovers = report["leftovers"].as_array().unwrap();
    let first_step_leftover = leftovers
        .iter()
        .find(|l| l["id"] == first_step.as_str())
        .unwrap();
    assert_eq!(first_step_leftover["targets"].as_array().unwrap().len(), 2);
    assert_eq!(
        first_step_leftover["objects"], 3,
        "snapshot + keys archive + manifest copy"
    );
    assert!(
        decisions(&report).iter().all(|(_, a)| a == "kept"),
        "complete backups untouched: {report}"
    );
    let whole_refs: Vec<&String> = whole.iter().collect();
    assert_eq!(
        files(&snap_dir),
        backup_keys(
            "test/",
            &whole_refs,
            &["manifest.json", "snapshot.db.zst.age"]
        )
    );
    let mut keys_left = whole_refs.clone();
    keys_left.push(other_half);
    assert_eq!(
        files(&keys_dir),
        backup_keys(
            "test/",
            &keys_left,
            &["manifest.json", "static_kuberesources.tar.zst.age"]
        )
    );
    assert_eq!(list_json(&fx, &default_grace).len(), 2);
    run_ok(fx.cmd(&default_grace).args(["verify", "--all"]));
}

/// Makes a path refuse unlinks of what it holds (a directory) or of itself (a file):
/// the immutable attribute, or for a directory without CAP_LINUX_IMMUTABLE mode 0555.
/// Undone on drop, so the temporary directory can be removed even after a failure.
struct Immutable {
    path: PathBuf,
    chattr: bool,
}

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let chattr = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .is_ok_and(|o| o.status.success());
        if !chattr {
            assert!(
                path.is_dir(),
                "chattr +i {} failed (needs root and a filesystem with the immutable flag)",
                path.display()
            );
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        Immutable {
            path: path.to_path_buf(),
            chattr,
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        if self.chattr {
            let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// True when `path`'s parent directory really refuses to let `path` be unlinked: a probe
/// file next to it is created before locking; it proves the lock works without touching
/// the backup itself.
fn probe_refuses_unlink(probe: &Path) -> bool {
    std::fs::remove_file(probe).is_err()
}

#[test]
fn a_refused_delete_leaves_that_backup_whole_and_prune_goes_on() {
    let etcd = tiny_etcd();
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, "retention: { keep_last: 1 }\n");
    let ids = backups(&fx, &config, 4);
    let locked_id = &ids[1];
    let locked_dir = dir.join("test").join(locked_id);
    let locked_files: BTreeSet<String> = backup_keys("test/", &[locked_id], &ARTIFACTS);

    // The filesystem refuses to unlink anything in that backup's directory. A probe file
    // (outside any backup id, so prune never sees it) shows the refusal is real.
    let probe_dir = dir.join("probe");
    std::fs::create_dir_all(&probe_dir).unwrap();
    std::fs::write(probe_dir.join("probe"), b"x").unwrap();
    {
        let _probe_lock = Immutable::set(&probe_dir);
        assert!(
            probe_refuses_unlink(&probe_dir.join("probe")),
            "the immutable flag must stop unlinks here (is this running with permissions that bypass it?)"
        );
    }
    std::fs::remove_dir_all(&probe_dir).unwrap();
    let lock = Immutable::set(&locked_dir);

    let out = run_code(fx.cmd(&config).arg("prune"), 1);
    let text = stdout_str(&out);
    let line = line_about(&text, locked_id);
    assert_refused_whole(line);
    assert!(
        line.contains("manifest.json"),
        "the refused object is named: {line}"
    );
    for id in [&ids[0], &ids[2]] {
        assert!(line_about(&text, id).starts_with("deleted "), "{text}");
    }
    assert!(line_about(&text, &ids[3]).starts_with("keep "), "{text}");
    assert!(
        stderr_str(&out).contains(&format!("backup {locked_id}:")),
        "the error names the backup: {}",
        describe_output(&out)
    );

    // Every object of the refused backup is still there, the manifest too, and it is
    // still a complete backup; the others were pruned.
    let newest: Vec<&String> = vec![&ids[3]];
    let mut expected = backup_keys("test/", &newest, &ARTIFACTS);
    expected.extend(locked_files.iter().cloned());
    assert_eq!(files(&dir), expected);
    assert_eq!(
        complete_ids(&fx, &config),
        vec![ids[3].clone(), locked_id.clone()]
    );

    // The JSON report says the same, and the exit code stays 1 while the lock holds.
    let report = prune_json(&fx, &config, &[], 1);
    assert_denied(&decision(&report, locked_id), true);
    assert_eq!(report["failures"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(files(&dir), expected);

    // Once the lock is lifted, the next prune deletes it.
    drop(lock);
    run_ok(fx.cmd(&config).arg("prune"));
    assert_eq!(complete_ids(&fx, &config), vec![ids[3].clone()]);
    assert_eq!(files(&dir), backup_keys("test/", &newest, &ARTIFACTS));
}

/// Single immutable files: a refused manifest leaves the artifacts beside it alone (no
/// listed backup loses its snapshot); a refused artifact after the manifest went leaves an
/// unlisted leftover that a later prune collects.
#[test]
fn refused_single_objects_never_leave_a_listed_half_backup() {
    let etcd = tiny_etcd();
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, "retention: { keep_last: 1, incomplete_grace: 1s }\n");
    let ids = backups(&fx, &config, 3);
    let (half, whole, newest) = (&ids[0], &ids[1], &ids[2]);
    // Only the snapshot object of `half` refuses deletion: its manifest goes, the snapshot stays.
    let snapshot_lock = Immutable::set(&dir.join("test").join(half).join("snapshot.db.zst.age"));
    // Only the manifest of `whole` refuses deletion: nothing of it may go.
    let manifest_lock = Immutable::set(&dir.join("test").join(whole).join("manifest.json"));
    assert!(
        snapshot_lock.chattr && manifest_lock.chattr,
        "this case needs chattr +i on files"
    );

    let report = prune_json(&fx, &config, &[], 1);
    // (backup, left whole, the refused object)
    for (id, left_whole, refused) in [
        (whole, true, "manifest.json"),
        (half, false, "snapshot.db.zst.age"),
    ] {
        let d = decision(&report, id);
        assert_denied(&d, left_whole);
        assert!(
            d["error"]["key"].as_str().unwrap().ends_with(refused),
            "{d}"
        );
    }
    assert_eq!(report["failures"].as_array().unwrap().len(), 2, "{report}");
    assert!(
        !dir.join("test").join(half).join("manifest.json").exists(),
        "manifest deleted first"
    );
    let on_disk = files(&dir);
    assert!(
        backup_keys("test/", &[whole, newest], &ARTIFACTS).is_subset(&on_disk),
        "the backup whose manifest was refused is whole: {on_disk:?}"
    );
    // `half` is never listed as a complete backup; verify ignores it.
    assert_eq!(
        complete_ids(&fx, &config),
        vec![newest.clone(), whole.clone()]
    );
    assert_half_hidden(&fx, &config, half);

    // Lifted: `whole` is deleted and the leftover of `half` (quiet for longer than the
    // 1 s grace) is collected.
    drop(snapshot_lock);
    drop(manifest_lock);
    std::thread::sleep(Duration::from_secs(2));
    let report = prune_json(&fx, &config, &[], 0);
    assert_leftover_removed(&report, half);
    assert_eq!(by_id_action(&report, whole), "deleted");
    assert_eq!(files(&dir), backup_keys("test/", &[newest], &ARTIFACTS));
}

/// The JSON report's decision about `id`.
fn decision(report: &Value, id: &str) -> Value {
    report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no decision about {id}: {report}"))
        .clone()
}

/// A decision whose delete the store refused, with whether the backup was left whole.
fn assert_denied(d: &Value, left_whole: bool) {
    assert_eq!(d["action"], "failed", "{d}");
    assert_eq!(d["error"]["kind"], "denied", "{d}");
    assert_eq!(d["error"]["backup_left_whole"], left_whole, "{d}");
}

/// The `prune` text line about a backup whose delete was refused and that stayed whole.
fn assert_refused_whole(line: &str) {
    assert!(line.starts_with("NOT deleted "), "{line}");
    assert!(line.contains("denied"), "{line}");
    assert!(line.contains("the backup is left whole"), "{line}");
}

/// A half-deleted backup `half` is never listed as complete and `verify --all` ignores it.
fn assert_half_hidden(fx: &Fixture, config: &Path, half: &str) {
    assert!(
        list_json(fx, config)
            .iter()
            .filter(|b| b["id"] == half)
            .all(|b| b["complete"] == false)
    );
    let out = run_ok(fx.cmd(config).args(["verify", "--all"]));
    assert!(!mentions(&stdout_str(&out), half), "{}", stdout_str(&out));
}

/// The report's first leftover is `half`, removed.
fn assert_leftover_removed(report: &Value, half: &str) {
    assert_eq!(report["leftovers"][0]["id"], half, "{report}");
    assert_eq!(report["leftovers"][0]["action"], "removed", "{report}");
}

fn by_id_action(report: &Value, id: &str) -> String {
    decisions(report)
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("no decision about {id}: {report}"))
}

#[test]
fn s3_prune_follows_the_policy_and_collects_half_deleted_backups() {
    let etcd = tiny_etcd();
    let moto = Moto::start();
    moto.create_bucket("etcd");
    let fx = Fixture::new();
    let targets = format!("  snapshot: {}\n", s3_target(&moto, "etcd", "offsite"));
    let (config, short_grace) = grace_configs(&fx, &etcd, &targets, 2);
    let ids = backups(&fx, &config, 5);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    let keys = || {
        moto.list_keys("etcd", "offsite/")
            .into_iter()
            .filter(|k| !k.starts_with("offsite/test/lock/"))
            .collect::<BTreeSet<_>>()
    };
    let all: Vec<&String> = ids.iter().collect();
    let before = keys();
    assert_eq!(before, backup_keys("offsite/test/", &all, &ARTIFACTS));

    let out = run_ok(fx.cmd(&config).args(["prune", "--dry-run"]));
    let text = stdout_str(&out);
    for (i, id) in newest_first.iter().enumerate() {
        let want = if i < 2 { "keep " } else { "would delete " };
        assert!(line_about(&text, id).starts_with(want), "{text}");
    }
    assert_eq!(keys(), before, "--dry-run deleted nothing");

    let report = prune_json(&fx, &config, &[], 0);
    let actions = decisions(&report);
    assert_eq!(actions.len(), 5);
    assert!(actions[..2].iter().all(|(_, a)| a == "kept"), "{report}");
    assert!(actions[2..].iter().all(|(_, a)| a == "deleted"), "{report}");
    assert_eq!(complete_ids(&fx, &config), newest_first[..2].to_vec());
    assert_eq!(list_json(&fx, &config).len(), 2);
    let kept: Vec<&String> = newest_first[..2].iter().collect();
    assert_eq!(keys(), backup_keys("offsite/test/", &kept, &ARTIFACTS));

    // An interrupted prune of the older one: only its manifest went.
    let half = &newest_first[1];
    moto.delete_object("etcd", &format!("offsite/test/{half}/manifest.json"));
    assert_eq!(complete_ids(&fx, &config), vec![newest_first[0].clone()]);
    assert_half_hidden(&fx, &config, half);
    // Within the default grace it stays…
    let report = prune_json(&fx, &config, &[], 0);
    assert_eq!(report["leftovers"][0]["action"], "waiting", "{report}");
    assert_eq!(
        keys()
            .iter()
            .filter(|k| k.contains(&format!("/{half}/")))
            .count(),
        2
    );
    // …after a passed 1 s grace it goes.
    std::thread::sleep(Duration::from_secs(2));
    let report = prune_json(&fx, &short_grace, &[], 0);
    assert_leftover_removed(&report, half);
    assert_eq!(
        keys(),
        backup_keys("offsite/test/", &[&newest_first[0]], &ARTIFACTS)
    );
    assert_eq!(complete_ids(&fx, &config), vec![newest_first[0].clone()]);
}

/// Form-encodes one value (RFC 3986 unreserved characters stay).
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
    xml[start..end].to_string()
}

/// One IAM query-API call against moto (unauthenticated while moto's auth is off).
fn moto_iam(moto: &Moto, params: &[(&str, &str)]) -> String {
    let body = params
        .iter()
        .chain(&[("Version", "2010-05-08")])
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let r = http(
        "POST",
        &format!("{}/", moto.endpoint()),
        &[
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00",
            ),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "moto IAM {params:?}: {}", r.text());
    r.text()
}

/// moto checks signatures and IAM policies on every request after the first `free` ones
/// (`/moto-api/reset-auth`); "inf" turns the checks off again.
fn moto_auth(moto: &Moto, free: &str) {
    let r = http(
        "POST",
        &format!("{}/moto-api/reset-auth", moto.endpoint()),
        &[],
        free.as_bytes(),
    );
    assert_eq!(r.status, 200, "moto reset-auth: {}", r.text());
}

/// S3 refuses a delete with 403 AccessDenied (an IAM Deny on one backup's keys, as an
/// object-lock or compliance policy would): that backup stays whole, the others go.
#[test]
fn s3_access_denied_on_delete_leaves_that_backup_whole() {
    let etcd = tiny_etcd();
    let moto = Moto::start();
    moto.create_bucket("etcd");
    let fx = Fixture::new();
    let target = s3_target(&moto, "etcd", "offsite");
    let retention = "retention: { keep_last: 1 }\n";
    let config = config(
        &fx,
        &etcd,
        "c.yaml",
        &format!("  snapshot: {target}\n"),
        retention,
    );
    let ids = backups(&fx, &config, 3);
    let locked_id = &ids[1];

    // A principal that may do anything in S3 except delete the objects of one backup.
    moto_iam(&moto, &[("Action", "CreateUser"), ("UserName", "pruner")]);
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            { "Effect": "Allow", "Action": "s3:*", "Resource": "*" },
            { "Effect": "Deny", "Action": "s3:DeleteObject",
              "Resource": format!("arn:aws:s3:::etcd/offsite/test/{locked_id}/*") }
        ]
    });
    moto_iam(
        &moto,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", "pruner"),
            ("PolicyName", "no-delete"),
            ("PolicyDocument", &policy.to_string()),
        ],
    );
    let key = moto_iam(
        &moto,
        &[("Action", "CreateAccessKey"), ("UserName", "pruner")],
    );
    // moto checks IAM policies per key on single-object DELETEs only, not inside a bulk
    // DeleteObjects (object_store's default), so this principal deletes one object at a time.
    let pruner_target = target.replace(
        "aws_access_key_id: test, aws_secret_access_key: test",
        &format!(
            "aws_access_key_id: {}, aws_secret_access_key: \"{}\", aws_disable_bulk_delete: \"true\"",
            xml_value(&key, "AccessKeyId"),
            xml_value(&key, "SecretAccessKey")
        ),
    );
    assert_ne!(pruner_target, target);
    let pruner = self::config(
        &fx,
        &etcd,
        "pruner.yaml",
        &format!("  snapshot: {pruner_target}\n"),
        retention,
    );

    // moto 5 miscomputes signatures of list requests whose prefix holds a '/', so prune's
    // one listing goes unchecked (with the clock probe before it: put, head and delete of
    // `<cluster>/.clock-<n>`, four requests); its manifest reads and every delete are
    // signature- and policy-checked.
    moto_auth(&moto, "4");
    let out = run(fx.cmd(&pruner).arg("prune"));
    moto_auth(&moto, "inf");
    assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
    let text = stdout_str(&out);
    let line = line_about(&text, locked_id);
    assert_refused_whole(line);
    assert!(line_about(&text, &ids[0]).starts_with("deleted "), "{text}");
    assert!(line_about(&text, &ids[2]).starts_with("keep "), "{text}");

    let keys: BTreeSet<String> = moto
        .list_keys("etcd", "offsite/")
        .into_iter()
        .filter(|k| !k.starts_with("offsite/test/lock/"))
        .collect();
    assert_eq!(
        keys,
        backup_keys("offsite/test/", &[&ids[2], locked_id], &ARTIFACTS),
        "the refused backup is whole (manifest included), the other old one is gone"
    );
    assert_eq!(
        complete_ids(&fx, &config),
        vec![ids[2].clone(), locked_id.clone()]
    );
}

/// object_store's local store stages uploads as `<name>#<n>` and never lists them: a run
/// killed mid-upload would leak them on the NFS share forever without this sweep.
#[test]
fn staging_files_of_killed_runs_are_swept_after_the_grace_period() {
    let etcd = tiny_etcd();
    let fx = Fixture::new();
    let (dir, config) = fx.dir_config(&etcd, "retention: { keep_last: 2, incomplete_grace: 1h }\n");
    run_ok(fx.cmd(&config).args(["backup", "--no-prune"]));
    let killed = dir.join("test/20200101T000000Z");
    std::fs::create_dir_all(&killed).unwrap();
    let old = killed.join("snapshot.db.zst.age#3");
    let fresh = killed.join("static_kuberesources.tar.zst.age#4");
    std::fs::write(&old, vec![0u8; 4096]).unwrap();
    std::fs::write(&fresh, vec![0u8; 4096]).unwrap();
    run_ok(Command::new("touch").args(["-d", "2 hours ago"]).arg(&old));
    let out = run_ok(fx.cmd(&config).arg("prune"));
    assert!(
        !old.exists(),
        "an unfinished upload older than the grace period is removed"
    );
    assert!(
        fresh.exists(),
        "a recent one may belong to a running backup"
    );
    assert!(
        stdout_str(&out).contains("test/20200101T000000Z/snapshot.db.zst.age#3"),
        "{}",
        describe_output(&out)
    );
    // Dry runs touch nothing.
    run_ok(
        Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(&fresh),
    );
    run_ok(fx.cmd(&config).args(["prune", "--dry-run"]));
    assert!(fresh.exists());
}
