//! `drill`: restore a backup into a scratch etcd and prove it holds what was recorded;
//! the outcome is stored as a drill record next to the manifest.

use anyhow::Context;
use bytes::Bytes;

use super::Targets;
use crate::cli::DrillArgs;
use crate::config::Config;
use crate::drill::{self, DrillHost, DrillInputs, DrillRecord};
use crate::error::{IntegrityError, UsageError};
use crate::pipeline::Identities;
use crate::store::layout::drill_record_name;

pub async fn run(config: &Config, args: &DrillArgs) -> anyhow::Result<()> {
    let targets = Targets::open(config)?;
    let (record, stored) = execute(
        config,
        &targets,
        args.selection.id.as_deref(),
        &args.identities,
        &DrillHost {
            scratch_dir: args.scratch_dir.clone(),
            etcd_bin_dir: args.etcd_bin_dir.clone(),
        },
    )
    .await?;
    print(&record, args.json)?;
    let key = stored.context("the drill ran, but its record could not be stored")?;
    tracing::info!(
        id = %record.backup_id,
        record = %key,
        ok = record.ok,
        peak_rss_bytes = crate::telemetry::peak_rss_bytes(),
        "drill finished"
    );
    outcome(&record)
}

/// The exit class of a drill: 0 when every check held, an integrity failure (3) naming the
/// failed checks otherwise.
pub fn outcome(record: &DrillRecord) -> anyhow::Result<()> {
    if record.ok {
        return Ok(());
    }
    let failed: Vec<String> = record
        .checks
        .iter()
        .filter(|c| c.ok == Some(false))
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    Err(IntegrityError(format!(
        "drill of backup {} failed: {}",
        record.backup_id,
        failed.join("; ")
    ))
    .into())
}

/// Drills backup `id` (or the newest trusted one) and stores the record; returns the
/// record and where it was stored (or why it could not be).
pub async fn execute(
    config: &Config,
    targets: &Targets,
    id: Option<&str>,
    identity_files: &[std::path::PathBuf],
    host: &DrillHost,
) -> anyhow::Result<(DrillRecord, anyhow::Result<String>)> {
    let identities = Identities::load(identity_files)?;
    let manifest = super::verify::select_trusted(config, targets, id).await?;
    let snapshot_identity = identities
        .for_artifact(&manifest.artifacts.snapshot)
        .ok_or_else(|| {
            UsageError(format!(
                "no --identity opens the snapshot of {}: it is encrypted to {}",
                manifest.id,
                manifest.artifacts.snapshot.encryption.recipients.join(", ")
            ))
        })?;
    let keys = match &manifest.artifacts.static_resources {
        Some(artifact) => Some((
            &targets.static_resources,
            identities.for_artifact(artifact).ok_or_else(|| {
                UsageError(format!(
                    "no --identity opens the keys archive of {} (encrypted to {}): a drill checks that its keys open the data; pass that identity too",
                    manifest.id,
                    artifact.encryption.recipients.join(", ")
                ))
            })?,
        )),
        None => None,
    };
    tracing::info!(id = %manifest.id, scratch = %host.scratch_dir.display(), "drill started");
    let record = drill::run(
        DrillInputs {
            manifest: &manifest,
            snapshot_target: &targets.snapshot,
            snapshot_identity,
            keys,
        },
        host,
    )
    .await?;
    let stored = store(targets, &manifest.cluster, &record).await;
    Ok((record, stored))
}

/// Stores the record create-only beside the manifest; returns its key.
async fn store(targets: &Targets, cluster: &str, record: &DrillRecord) -> anyhow::Result<String> {
    let body = Bytes::from(serde_json::to_vec_pretty(record)?);
    for n in 0..100 {
        let key = format!(
            "{cluster}/{}/{}",
            record.backup_id,
            drill_record_name(record.at, n)
        );
        if targets.snapshot.create(&key, body.clone()).await? {
            return Ok(key);
        }
    }
    anyhow::bail!(
        "100 drill records of backup {} in one second?",
        record.backup_id
    )
}

fn print(record: &DrillRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(record)?);
        return Ok(());
    }
    println!(
        "drill of {}: {}",
        record.backup_id,
        if record.ok { "OK" } else { "FAILED" }
    );
    if let Some(version) = &record.etcd_version {
        println!("  {:<42} {:<6} {version}", "etcd release used", "");
    }
    for warning in &record.warnings {
        println!("  warning: {warning}");
    }
    for check in &record.checks {
        let outcome = match check.ok {
            Some(true) => "ok",
            Some(false) => "FAILED",
            None => "n/a",
        };
        println!("  {:<42} {outcome:<6} {}", check.name, check.detail);
    }
    Ok(())
}
