//! A drill (for `drill` and the scheduler): restore a backup into a scratch etcd, prove
//! it holds what was recorded, and store the outcome as a (signed) drill record.

use bytes::Bytes;

use crate::drill::{self, DrillHost, DrillInputs, DrillRecord};
use crate::error::{IntegrityError, UsageError};
use crate::pipeline::Identities;
use crate::repo::{Repository, Selection};

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

/// Drills the selected backup (`Latest`: the newest trusted one) and stores the record;
/// returns the record and where it was stored (or why it could not be).
pub async fn execute(
    repo: &Repository,
    selection: &Selection,
    identities: &Identities,
    host: &DrillHost,
) -> anyhow::Result<(DrillRecord, anyhow::Result<String>)> {
    let manifest = repo.select(selection).await?;
    let snapshot_identity = identities
        .for_artifact(&manifest.artifacts.snapshot)
        .ok_or_else(|| {
            UsageError(format!(
                "no --identity opens the snapshot of {}: it is encrypted to {}",
                manifest.id,
                manifest.artifacts.snapshot.encryption.recipients.join(", ")
            ))
        })?;
    let keys_identity = match &manifest.artifacts.static_resources {
        Some(artifact) => Some(identities.for_artifact(artifact).ok_or_else(|| {
            UsageError(format!(
                "no --identity opens the keys archive of {} (encrypted to {}): a drill checks that its keys open the data; pass that identity too",
                manifest.id,
                artifact.encryption.recipients.join(", ")
            ))
        })?),
        None => None,
    };
    tracing::info!(id = %manifest.id, scratch = %host.scratch_dir.display(), "drill started");
    let record = drill::run(
        DrillInputs {
            manifest: &manifest,
            repo,
            snapshot_identity,
            keys_identity,
        },
        host,
    )
    .await?;
    let stored = store(repo, &record).await;
    Ok((record, stored))
}

/// Stores the record create-only beside the manifest; returns its key.
async fn store(repo: &Repository, record: &DrillRecord) -> anyhow::Result<String> {
    let body = Bytes::from(serde_json::to_vec_pretty(record)?);
    repo.store_drill_record(&record.backup_id, record.at, body)
        .await
}
