//! `prune`: apply retention pair-safely (manifest first), then collect old leftovers.

use std::collections::BTreeSet;

use anyhow::anyhow;
use chrono::Utc;
use serde::Serialize;

use super::Targets;
use crate::cli::PruneArgs;
use crate::config::Config;
use crate::retention::{BackupSummary, Decision, RetentionPolicy, decide};
use crate::store::catalog::{BackupEntry, list_backups};
use crate::store::layout::MANIFEST_OBJECT;
use crate::store::{StoreError, StoreErrorKind, Target};

/// What prune did (or would do).
#[derive(Debug, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub decisions: Vec<Decision>,
    /// Directories without a manifest older than the grace period, removed.
    pub leftovers: Vec<Leftover>,
    /// Deletions the store refused; those backups are left whole.
    pub failures: Vec<DeleteFailure>,
}

#[derive(Debug, Serialize)]
pub struct Leftover {
    pub target: String,
    pub id: String,
    pub objects: usize,
}

#[derive(Debug, Serialize)]
pub struct DeleteFailure {
    pub id: String,
    pub key: String,
    /// `denied` (permissions, object lock or retention) or `failed`.
    pub kind: &'static str,
    pub reason: String,
}

pub async fn run(config: &Config, args: &PruneArgs) -> anyhow::Result<()> {
    let policy = config.retention.clone().ok_or_else(|| {
        crate::error::ConfigError::new(
            "retention",
            "missing: prune needs a retention policy, e.g. `retention: { keep_daily: 7 }`",
        )
    })?;
    let targets = Targets::open(config)?;
    let report = apply(config, &targets, &policy, args.dry_run).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "{} object(s) could not be deleted; those backups were left whole (see above)",
            report.failures.len()
        ))
    }
}

fn print_report(report: &PruneReport) {
    let verb = if report.dry_run {
        "would delete"
    } else {
        "delete"
    };
    for d in &report.decisions {
        match &d.verdict {
            crate::retention::Verdict::Keep(reasons) => {
                let reasons: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                println!("keep          {}  {}", d.id, reasons.join(", "));
            }
            crate::retention::Verdict::Delete(reason) => {
                println!("{verb:<13} {}  {reason}", d.id);
            }
        }
    }
    for l in &report.leftovers {
        println!(
            "{:<13} {}  incomplete leftover ({} objects in {})",
            if report.dry_run {
                "would remove"
            } else {
                "removed"
            },
            l.id,
            l.objects,
            l.target
        );
    }
    for f in &report.failures {
        println!("FAILED        {}  {} {}: {}", f.id, f.kind, f.key, f.reason);
    }
}

/// Decides with the retention function and deletes what it says, unless `dry_run`.
pub async fn apply(
    config: &Config,
    targets: &Targets,
    policy: &RetentionPolicy,
    dry_run: bool,
) -> anyhow::Result<PruneReport> {
    let now = Utc::now();
    let entries = list_backups(&targets.snapshot, &config.cluster).await?;
    let summaries: Vec<BackupSummary> = entries
        .iter()
        .filter_map(|e| {
            e.manifest.as_ref().map(|m| BackupSummary {
                id: e.id.clone(),
                created_at: m.started_at,
                size: m.stored_size(),
            })
        })
        .collect();
    let decisions = decide(&summaries, policy, now);
    let mut failures = Vec::new();
    if !dry_run {
        for decision in decisions.iter().filter(|d| !d.keep()) {
            let entry = entries
                .iter()
                .find(|e| e.id == decision.id)
                .expect("decisions are made about listed entries");
            if let Err(failure) = delete_backup(targets, &config.cluster, entry).await {
                tracing::warn!(id = %entry.id, reason = %failure.reason, "backup not deleted");
                failures.push(failure);
            } else {
                tracing::info!(id = %entry.id, "backup deleted");
            }
        }
    }

    // Leftovers: directories without a (snapshot-side) manifest, quiet for the grace period.
    let grace =
        chrono::TimeDelta::from_std(policy.incomplete_grace()).unwrap_or(chrono::TimeDelta::MAX);
    let complete: BTreeSet<&str> = summaries.iter().map(|s| s.id.as_str()).collect();
    let mut leftovers = Vec::new();
    let mut scan = vec![(&targets.snapshot, entries.clone())];
    if targets.static_resources.url() != targets.snapshot.url() {
        scan.push((
            &targets.static_resources,
            list_backups(&targets.static_resources, &config.cluster).await?,
        ));
    }
    for (target, listed) in scan {
        for entry in listed {
            let abandoned = !complete.contains(entry.id.as_str())
                && entry.problem.is_none()
                && now - entry.last_activity() > grace;
            if !abandoned {
                continue;
            }
            if !dry_run && let Err(failure) = delete_objects(target, &entry).await {
                failures.push(failure);
                continue;
            }
            leftovers.push(Leftover {
                target: target.url().to_string(),
                id: entry.id.clone(),
                objects: entry.objects.len(),
            });
        }
    }
    Ok(PruneReport {
        dry_run,
        decisions,
        leftovers,
        failures,
    })
}

fn failure(id: &str, err: StoreError) -> DeleteFailure {
    DeleteFailure {
        id: id.to_string(),
        kind: if err.kind == StoreErrorKind::Denied {
            "denied"
        } else {
            "failed"
        },
        key: err.location.clone(),
        reason: err.reason,
    }
}

/// The snapshot manifest first (the backup stops existing), then every other object of the pair.
async fn delete_backup(
    targets: &Targets,
    cluster: &str,
    entry: &BackupEntry,
) -> Result<(), DeleteFailure> {
    let manifest_key = format!("{cluster}/{}/{MANIFEST_OBJECT}", entry.id);
    targets
        .snapshot
        .delete(&manifest_key)
        .await
        .map_err(|e| failure(&entry.id, e))?;
    delete_objects(&targets.snapshot, entry).await?;
    if targets.static_resources.url() != targets.snapshot.url() {
        let dir = format!("{cluster}/{}", entry.id);
        let objects = targets
            .static_resources
            .list(&dir)
            .await
            .map_err(|e| failure(&entry.id, e))?;
        for object in objects {
            targets
                .static_resources
                .delete(&object.key)
                .await
                .map_err(|e| failure(&entry.id, e))?;
        }
    }
    Ok(())
}

/// Every listed object of a backup directory in one target, manifest first.
async fn delete_objects(target: &Target, entry: &BackupEntry) -> Result<(), DeleteFailure> {
    let mut keys: Vec<&str> = entry.objects.iter().map(|o| o.key.as_str()).collect();
    keys.sort_by_key(|k| !k.ends_with(MANIFEST_OBJECT));
    for key in keys {
        target
            .delete(key)
            .await
            .map_err(|e| failure(&entry.id, e))?;
    }
    Ok(())
}
