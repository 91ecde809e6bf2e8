//! Retention applied (for `prune`, after each `backup`, and by the scheduler): plan with
//! the retention function over the catalog, then delete through the repository in the
//! safe order (manifest first), then collect old leftovers.
//!
//! A backup is its snapshot-target manifest plus the objects beside it: the snapshot,
//! and the keys archive with its manifest copy (in the static resources target when that
//! differs). Deleting one removes the snapshot target's manifest first, so from that
//! moment it is no longer listed; the snapshot side's other objects follow, then the
//! static side's (manifest copy first). An interrupted prune therefore leaves only
//! directories without a manifest, which readers ignore and a later prune collects.
//!
//! Directories without a snapshot-side manifest (interrupted backups, interrupted prunes)
//! never count towards retention. They are removed, on both targets, once nothing in
//! them (on either side) has changed for `retention.incomplete_grace` (default 24 h).
//! Directories whose manifest exists but cannot be used are reported and never removed.
//!
//! Only trusted backups count: with `signing.allowed_signers`, a backup no listed key
//! signed (planted, unsigned, foreign-signed, unreadable signature) is reported as kept
//! (`{"keep": ["untrusted"]}`) and never deleted, and one dated in the future is kept
//! the same way (`{"keep": ["future_timestamp"]}`); neither counts for any rule, cap or
//! `min_keep`. Prune decides by time, so it first checks this host's clock against the
//! store's and refuses (exit 4) when they are apart.
//!
//! A delete the store refuses (permissions, object lock, retention, immutability) is
//! reported as `denied` with the store's message (which carries the retain-until date
//! when the store gives one), the rest of that backup is left alone, prune goes on with
//! the other backups, and the command exits 1.
//!
//! # JSON output (`prune --json`)
//!
//! One object, stable in shape (new fields may be added, none removed or renamed):
//!
//! ```json
//! {
//!   "dry_run": false,
//!   "decisions": [
//!     {
//!       "id": "20261123T104649Z",
//!       "created_at": "2026-11-23T10:46:49Z",
//!       "size": 123456,
//!       "verdict": { "keep": ["last", "newest"] },
//!       "action": "kept",
//!       "reasons": ["keep_last", "newest backup is always kept"],
//!       "error": null
//!     },
//!     {
//!       "id": "20261122T104649Z", "created_at": "2026-11-22T10:46:49Z", "size": 120000,
//!       "verdict": { "delete": "no_rule_matched" },
//!       "action": "failed",
//!       "reasons": ["no rule matched"],
//!       "error": { "id": "20261122T104649Z", "key": "s3://bucket/etcd/prod/20261122T104649Z/manifest.json",
//!                  "kind": "denied", "reason": "…", "backup_left_whole": true }
//!     }
//!   ],
//!   "leftovers": [
//!     { "id": "20261121T030000Z", "targets": ["file:///mnt/nfs/etcd"], "objects": 2,
//!       "last_activity": "2026-11-21T03:04:00Z", "action": "removed",
//!       "reason": "no manifest, untouched for longer than incomplete_grace (1day)", "error": null }
//!   ],
//!   "failures": [ /* every refused or failed delete, as in "error" above */ ]
//! }
//! ```
//!
//! - `decisions`: every backup with a readable manifest (trusted or not), newest first, as [`crate::retention::decide`]
//!   decided. `verdict` is `{"keep": [KeepReason…]}` or `{"delete": DeleteReason}` in
//!   snake_case (`{"delete": {"max_count": {"limit": 30}}}` for the caps); `reasons` is
//!   the same in words. `action` is `kept`, `deleted`, `would_delete` (`--dry-run`) or
//!   `failed` (then `error` says why).
//! - `leftovers`: every backup directory that is not a complete backup. `action` is
//!   `removed`, `would_remove` (`--dry-run`), `waiting` (inside the grace period),
//!   `kept` (a manifest is there but unusable: left for a human) or `failed`.
//! - `error.kind` is `denied` (permissions, object lock, retention, immutability) or
//!   `failed`; `backup_left_whole` is false when the manifest was already deleted, so what
//!   is left is a leftover that the next prune removes.

use std::collections::BTreeSet;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::id_time;
use crate::repo::layout::is_manifest;
use crate::repo::{Catalog, DeleteError, Repository, Standing, StoreClock};
use crate::retention::{BackupSummary, Decision, RetentionPolicy, Verdict, decide};
use crate::store::StoredObject;

/// What prune did (or would do). Serialized as documented in the module docs.
#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Every complete backup, newest first, with its verdict and what was done.
    pub decisions: Vec<Outcome>,
    /// Backup directories that are not complete backups, and what was done with them.
    pub leftovers: Vec<Leftover>,
    /// Every delete that failed; the backups they belong to are left as described.
    pub failures: Vec<DeleteFailure>,
    /// Unfinished uploads of killed runs (file:// staging files) older than the grace period, removed.
    pub stale_uploads: Vec<String>,
}

/// One complete backup: the retention decision and what prune did about it.
#[derive(Debug, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub decision: Decision,
    pub action: Action,
    /// The verdict's reasons in words.
    pub reasons: Vec<String>,
    pub error: Option<DeleteFailure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Kept,
    Deleted,
    WouldDelete,
    Failed,
}

/// A backup directory without a usable snapshot-side manifest.
#[derive(Debug, Serialize)]
pub struct Leftover {
    pub id: String,
    /// The targets holding objects of this directory.
    pub targets: Vec<String>,
    pub objects: usize,
    /// Newest modification of any of its objects, on any target.
    pub last_activity: DateTime<Utc>,
    pub action: LeftoverAction,
    pub reason: String,
    pub error: Option<DeleteFailure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftoverAction {
    Removed,
    WouldRemove,
    Waiting,
    Kept,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeleteFailure {
    pub id: String,
    /// The object whose delete failed (target URL without credentials, plus key).
    pub key: String,
    /// `denied` (the store refused: permissions, object lock, immutability), `retained`
    /// (the store answered the delete but keeps the object) or `failed`.
    pub kind: &'static str,
    pub reason: String,
    /// True when nothing of the backup was deleted; false when its manifest already was.
    pub backup_left_whole: bool,
}

/// Retention's decisions over `catalog` at `now`: the one call of [`decide`], which prune
/// applies and `report` shows. Every backup with a readable manifest is decided; only
/// trusted ones are counted; `keep_drilled` reads the drill records it needs.
pub async fn plan(
    repo: &Repository,
    catalog: &Catalog,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let keep_drilled = policy.keep_drilled.unwrap_or(0) as usize;
    let drilled = repo.drilled(catalog, now, keep_drilled).await;
    let summaries: Vec<BackupSummary> = catalog
        .entries()
        .iter()
        .filter_map(|e| {
            e.summary.as_ref().map(|m| BackupSummary {
                id: e.id.clone(),
                created_at: m.started_at,
                size: m.stored_size,
                trusted: !matches!(e.standing, Standing::Untrusted(_)),
                drilled: drilled.contains(&e.id),
            })
        })
        .collect();
    decide(&summaries, policy, now)
}

/// A verdict's reasons in words (as prune prints them).
pub fn verdict_words(verdict: &Verdict) -> Vec<String> {
    match verdict {
        Verdict::Keep(reasons) => reasons.iter().map(ToString::to_string).collect(),
        Verdict::Delete(reason) => vec![reason.to_string()],
    }
}

/// Prune's plan and its execution: checks the clocks, decides with the retention
/// function over the catalog and deletes what it says, unless `dry_run`.
pub async fn apply(
    repo: &Repository,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> anyhow::Result<PruneReport> {
    let clock = repo.check_clock().await?;
    apply_at(repo, policy, dry_run, &clock).await
}

/// [`apply`] with a clock already measured.
pub async fn apply_at(
    repo: &Repository,
    policy: &RetentionPolicy,
    dry_run: bool,
    clock: &StoreClock,
) -> anyhow::Result<PruneReport> {
    let now = Utc::now();
    // One listing serves the catalog and the lock (prune reads nothing else to decide).
    let catalog = repo.catalog(now).await?;
    let entries = catalog.entries();
    let static_dirs = repo.keys_side().await?;
    let no_objects: &[StoredObject] = &[];
    let static_objects =
        |id: &str| -> &[StoredObject] { static_dirs.get(id).map_or(no_objects, Vec::as_slice) };

    let mut failures = Vec::new();
    let mut decisions = Vec::new();
    for decision in plan(repo, &catalog, policy, now).await {
        let mut reasons = verdict_words(&decision.verdict);
        if let Some(Standing::Untrusted(why)) = catalog.get(&decision.id).map(|e| &e.standing) {
            reasons.push(why.clone());
        }
        let (action, error) = if decision.keep() {
            (Action::Kept, None)
        } else if dry_run {
            (Action::WouldDelete, None)
        } else {
            let Some(entry) = catalog.get(&decision.id) else {
                continue;
            };
            match repo
                .delete_backup(entry, static_objects(&entry.id))
                .await
                .map_err(|e| failure(&entry.id, e))
            {
                Ok(()) => {
                    tracing::info!(id = %entry.id, reasons = %reasons.join(", "), "backup deleted");
                    (Action::Deleted, None)
                }
                Err(failure) => {
                    tracing::warn!(id = %entry.id, kind = failure.kind, reason = %failure.reason, "backup not deleted");
                    failures.push(failure.clone());
                    (Action::Failed, Some(failure))
                }
            }
        };
        decisions.push(Outcome {
            decision,
            action,
            reasons,
            error,
        });
    }

    // Everything that is not a complete backup. A directory whose snapshot-side manifest
    // exists but is unusable is never removed: it may be a backup someone needs.
    let grace = policy.incomplete_grace();
    let grace_delta = chrono::TimeDelta::from_std(grace).unwrap_or(chrono::TimeDelta::MAX);
    let grace_text = humantime::format_duration(grace);
    let has_manifest: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.standing != Standing::Incomplete)
        .map(|e| e.id.as_str())
        .collect();
    let mut leftover_ids: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.summary.is_none())
        .map(|e| e.id.as_str())
        .collect();
    leftover_ids.extend(
        static_dirs
            .keys()
            .map(String::as_str)
            .filter(|id| !has_manifest.contains(id)),
    );
    // A backup that is running right now (the lock is held) keeps its directory, however
    // long it has been quiet: its multipart parts are invisible until they complete.
    let running = repo.lock_holder(&catalog, clock).await?;
    let mut leftovers = Vec::new();
    // Newest first, like everything else prune prints.
    for id in leftover_ids.into_iter().rev() {
        let entry = catalog.get(id);
        let snapshot_objects = entry.map_or(no_objects, |e| e.objects.as_slice());
        let sides = [
            (repo.url(), snapshot_objects),
            (repo.keys_url(), static_objects(id)),
        ];
        let sides: Vec<(&str, &[StoredObject])> = sides
            .into_iter()
            .filter(|(_, objects)| !objects.is_empty())
            .collect();
        let last_activity = entry
            .map(|e| e.last_activity())
            .into_iter()
            .chain(static_objects(id).iter().map(|o| o.last_modified))
            .max()
            .or_else(|| id_time(id))
            .unwrap_or_default();
        let mut leftover = Leftover {
            id: id.to_string(),
            targets: sides.iter().map(|(url, _)| url.to_string()).collect(),
            objects: sides.iter().map(|(_, objects)| objects.len()).sum(),
            last_activity,
            action: LeftoverAction::Waiting,
            reason: String::new(),
            error: None,
        };
        if let Some(Standing::Damaged(problem)) = entry.map(|e| &e.standing) {
            leftover.action = LeftoverAction::Kept;
            leftover.reason = format!("not a usable backup ({problem}); never removed by prune");
        } else if snapshot_objects.is_empty()
            && static_objects(id).iter().any(|o| is_manifest(&o.key))
        {
            // The run got as far as the manifest copy, and nothing of it is in the snapshot
            // target: its other half may be where this config does not look.
            leftover.action = LeftoverAction::Kept;
            leftover.reason = format!(
                "the keys half of a backup whose snapshot half is not in {}: it is never removed by prune (remove it by hand if that backup is gone)",
                repo.url()
            );
        } else if let Some(holder) = running.as_ref().filter(|_| {
            snapshot_objects
                .iter()
                .any(|o| crate::repo::layout::is_in_progress(&o.key))
        }) {
            leftover.reason =
                format!("a backup in progress ({holder} holds the backup lock), left alone");
        } else if now.signed_duration_since(last_activity) <= grace_delta {
            let until = last_activity.checked_add_signed(grace_delta).map_or_else(
                || "never".to_string(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            leftover.reason = format!(
                "no manifest (a backup in progress or interrupted), left alone until {until} (incomplete_grace {grace_text})"
            );
        } else {
            leftover.reason =
                format!("no manifest, untouched for longer than incomplete_grace ({grace_text})");
            leftover.action = if dry_run {
                LeftoverAction::WouldRemove
            } else {
                match repo
                    .delete_leftover(snapshot_objects, static_objects(id))
                    .await
                    .map_err(|e| failure(id, e))
                {
                    Ok(()) => {
                        tracing::info!(%id, "incomplete backup directory removed");
                        LeftoverAction::Removed
                    }
                    Err(failure) => {
                        tracing::warn!(%id, kind = failure.kind, reason = %failure.reason, "incomplete backup directory not removed");
                        failures.push(failure.clone());
                        leftover.error = Some(failure);
                        LeftoverAction::Failed
                    }
                }
            };
        }
        leftovers.push(leftover);
    }
    let mut stale_uploads = Vec::new();
    if !dry_run && let Some(before) = now.checked_sub_signed(grace_delta) {
        stale_uploads = repo.remove_stale_uploads(before)?;
        for key in &stale_uploads {
            tracing::info!(%key, "removed an unfinished upload of a killed run");
        }
    }
    Ok(PruneReport {
        dry_run,
        decisions,
        leftovers,
        failures,
        stale_uploads,
    })
}

fn failure(id: &str, err: DeleteError) -> DeleteFailure {
    DeleteFailure {
        id: id.to_string(),
        kind: err.kind.as_str(),
        key: err.location,
        reason: err.reason,
        backup_left_whole: err.backup_left_whole,
    }
}

/// Retention after a backup, when a policy is configured (a failed delete is reported as
/// an error, the backup stays committed).
pub async fn after_backup(
    policy: Option<&RetentionPolicy>,
    repo: &Repository,
    id: &str,
) -> anyhow::Result<()> {
    let Some(policy) = policy else {
        return Ok(());
    };
    let report = apply(repo, policy, false)
        .await
        .with_context(|| format!("backup {id} completed, but pruning failed"))?;
    match report.failures.first() {
        None => Ok(()),
        Some(first) => Err(anyhow::anyhow!(
            "backup {id} completed, but {} object(s) could not be pruned: {}",
            report.failures.len(),
            first.reason
        )),
    }
}
