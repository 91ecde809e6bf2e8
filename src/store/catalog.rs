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

    /// The directory holds a manifest object (usable or not).
    pub fn has_manifest(&self) -> bool {
        self.objects
            .iter()
            .any(|o| o.key.rsplit('/').next() == Some(MANIFEST_OBJECT))
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

/// The newest successful drill of any complete backup in `entries`: its backup id and
/// summary. Records are read newest first (their names sort in time order), only as far
/// as needed.
pub async fn newest_successful_drill(
    target: &Target,
    entries: &[BackupEntry],
) -> Option<(String, DrillSummary)> {
    let name = |key: &str| key.rsplit('/').next().unwrap_or(key).to_string();
    let mut records: Vec<(String, &str, &str)> = entries
        .iter()
        .filter(|e| e.complete())
        .flat_map(|e| {
            e.drill_records()
                .into_iter()
                .map(move |k| (name(k), k, e.id.as_str()))
        })
        .collect();
    records.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    for (_, key, id) in records {
        if let Some(drill) = read_drill(target, key).await.filter(|d| d.ok) {
            return Some((id.to_string(), drill));
        }
    }
    None
}

/// The drill record at `key`, or None when it is unreadable or not a drill record
/// (stored objects are untrusted: a damaged record never fails a listing).
pub async fn read_drill(target: &Target, key: &str) -> Option<DrillSummary> {
    #[derive(serde::Deserialize)]
    struct Record {
        at: DateTime<Utc>,
        ok: bool,
    }
    // `read` refuses objects above the small-object cap.
    let bytes = target.read(key).await.ok()?;
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

/// Backup directories of `cluster` in `target`, newest first, from one listing and without
/// reading any manifest; names that are not ids are skipped.
pub async fn list_entries(target: &Target, cluster: &str) -> Result<Vec<BackupEntry>, StoreError> {
    Ok(entries_from(target.list(cluster).await?))
}

/// Backup directories, newest first, in a listing of a cluster (manifests not read).
pub fn entries_from(listing: Vec<StoredObject>) -> Vec<BackupEntry> {
    group_by_id(listing)
        .into_iter()
        .rev()
        .map(|(id, objects)| BackupEntry {
            id,
            manifest: None,
            objects,
            problem: None,
        })
        .collect()
}

/// Backup directories of `cluster` in `target`, newest first, with their manifests read.
/// A manifest that cannot be read or used (damaged, garbled, archived, forbidden) makes
/// its entry damaged (`problem`); it never fails the listing.
pub async fn list_backups(target: &Target, cluster: &str) -> Result<Vec<BackupEntry>, StoreError> {
    let mut entries = list_entries(target, cluster).await?;
    for entry in &mut entries {
        load(target, cluster, entry).await;
    }
    Ok(entries)
}

/// The manifest of the newest backup directory that has one, read alone. When that one
/// cannot be used, a warning says so and None is returned: callers treat it as unknown.
pub async fn newest_manifest(
    target: &Target,
    cluster: &str,
) -> Result<Option<Manifest>, StoreError> {
    let entries = list_entries(target, cluster).await?;
    let Some(mut newest) = entries.into_iter().find(BackupEntry::has_manifest) else {
        return Ok(None);
    };
    load(target, cluster, &mut newest).await;
    if let Some(problem) = &newest.problem {
        tracing::warn!(id = %newest.id, %problem, "the newest backup's manifest is not usable; going on as if it were not there");
    }
    Ok(newest.manifest)
}

/// Reads the manifest of an entry that has one; a problem is recorded on the entry.
pub async fn load(target: &Target, cluster: &str, entry: &mut BackupEntry) {
    if !entry.has_manifest() || entry.manifest.is_some() {
        return;
    }
    match read_manifest(target, cluster, &entry.id).await {
        Ok(m) => entry.manifest = Some(m),
        // Deleted between the listing and the read (a prune): not a backup any more.
        Err(ManifestProblem::Store(e)) if e.kind == StoreErrorKind::NotFound => {}
        Err(ManifestProblem::Store(e)) => {
            entry.problem = Some(format!("manifest cannot be read: {e}"));
        }
        Err(problem) => entry.problem = Some(problem.to_string()),
    }
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
    manifest
        .validate(cluster, id)
        .map_err(|reason| ManifestProblem::Invalid { key, reason })?;
    Ok(manifest)
}
