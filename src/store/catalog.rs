//! The backups in a target, read from one listing plus their manifests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::layout::{DRILL_PREFIX, MANIFEST_OBJECT, id_time};
use super::{StoreError, StoreErrorKind, StoredObject, Target};
use crate::manifest::Manifest;

/// One backup directory in a target.
#[derive(Debug, Clone)]
pub struct BackupEntry {
    pub id: String,
    /// The manifest, when the backup is complete.
    pub manifest: Option<Manifest>,
    /// Objects in this target under the backup's directory.
    pub objects: Vec<StoredObject>,
    /// Why a directory with a manifest still does not count as a backup.
    pub problem: Option<String>,
}

impl BackupEntry {
    pub fn complete(&self) -> bool {
        self.manifest.is_some()
    }

    /// Start time from the manifest, else from the id.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.manifest
            .as_ref()
            .map(|m| m.started_at)
            .or_else(|| id_time(&self.id))
            .unwrap_or_default()
    }

    /// When anything in this directory last changed (for the leftover grace period).
    pub fn last_activity(&self) -> DateTime<Utc> {
        self.objects
            .iter()
            .map(|o| o.last_modified)
            .max()
            .unwrap_or_else(|| self.started_at())
    }

    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    /// Keys of this backup's drill records, newest first.
    pub fn drill_records(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .objects
            .iter()
            .map(|o| o.key.as_str())
            .filter(|k| {
                k.rsplit('/')
                    .next()
                    .is_some_and(|name| name.starts_with(DRILL_PREFIX) && name.ends_with(".json"))
            })
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys
    }
}

/// A drill record in short: when, and whether every check held.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrillSummary {
    pub at: DateTime<Utc>,
    pub ok: bool,
}

/// Drill records are a few KiB; a larger object is not one.
const DRILL_RECORD_CAP: usize = 1024 * 1024;

/// The drill record at `key`, or None when it is unreadable or not a drill record
/// (stored objects are untrusted: a damaged record never fails a listing).
pub async fn read_drill(target: &Target, key: &str) -> Option<DrillSummary> {
    #[derive(serde::Deserialize)]
    struct Record {
        at: DateTime<Utc>,
        ok: bool,
    }
    let bytes = target.read(key).await.ok()?;
    if bytes.len() > DRILL_RECORD_CAP {
        return None;
    }
    serde_json::from_slice::<Record>(&bytes)
        .ok()
        .map(|r| DrillSummary { at: r.at, ok: r.ok })
}

/// Objects of a cluster listing grouped by backup id (`<cluster>/<id>/<name>`); others are skipped.
pub fn group_by_id(objects: Vec<StoredObject>) -> BTreeMap<String, Vec<StoredObject>> {
    let mut by_id: BTreeMap<String, Vec<StoredObject>> = BTreeMap::new();
    for object in objects {
        let mut parts = object.key.splitn(3, '/');
        if let (Some(_cluster), Some(id), Some(_name)) = (parts.next(), parts.next(), parts.next())
            && id_time(id).is_some()
        {
            by_id.entry(id.to_string()).or_default().push(object);
        }
    }
    by_id
}

/// Backup directories of `cluster` in `target`, newest first; names that are not ids are skipped.
pub async fn list_backups(target: &Target, cluster: &str) -> Result<Vec<BackupEntry>, StoreError> {
    let by_id = group_by_id(target.list(cluster).await?);
    let mut entries = Vec::with_capacity(by_id.len());
    for (id, objects) in by_id.into_iter().rev() {
        let has_manifest = objects
            .iter()
            .any(|o| o.key.ends_with(&format!("/{MANIFEST_OBJECT}")));
        let (manifest, problem) = if has_manifest {
            match read_manifest(target, cluster, &id).await {
                Ok(m) => (Some(m), None),
                Err(ManifestProblem::Store(e)) if e.kind != StoreErrorKind::NotFound => {
                    return Err(e);
                }
                Err(problem) => (None, Some(problem.to_string())),
            }
        } else {
            (None, None)
        };
        entries.push(BackupEntry {
            id,
            manifest,
            objects,
            problem,
        });
    }
    Ok(entries)
}

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestProblem {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("manifest {key} is unreadable: {reason}")]
    Invalid { key: String, reason: String },
}

/// Reads and checks the manifest of backup `id` (it must describe that backup).
pub async fn read_manifest(
    target: &Target,
    cluster: &str,
    id: &str,
) -> Result<Manifest, ManifestProblem> {
    let key = format!("{cluster}/{id}/{MANIFEST_OBJECT}");
    let bytes = target.read(&key).await?;
    let manifest = Manifest::from_json(&bytes).map_err(|reason| ManifestProblem::Invalid {
        key: key.clone(),
        reason,
    })?;
    if manifest.id != id || manifest.cluster != cluster {
        return Err(ManifestProblem::Invalid {
            key,
            reason: format!(
                "it describes backup {}/{}, not {cluster}/{id}",
                manifest.cluster, manifest.id
            ),
        });
    }
    Ok(manifest)
}
