//! The catalog: one trusted view of a cluster's backups, built from one listing and each
//! manifest read once, for every command.
//!
//! Each backup directory is classified once ([`Standing`]): trusted, future-dated,
//! untrusted, damaged or incomplete. Only trusted entries count: for retention, `--latest`,
//! skip checks, `status`, the metrics and the upgrade trigger. The catalog keeps a short
//! [`Summary`] of each manifest, never the manifest, so memory does not grow with what a
//! store holds (a planted 1 MiB manifest costs a few hundred bytes once read).

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::layout::{Layout, is_drill_record, is_manifest, name_of};
use super::trust::{Signature, Trust};
use crate::ids::id_time;
use crate::manifest::{Manifest, SourceInfo, UpgradeInfo};
use crate::store::{StoreError, StoreErrorKind, StoredObject, Target};

/// Manifests read at once while a catalog is built: enough to hide a store's latency,
/// few enough that memory stays small with manifests near the 1 MiB cap.
const LOADS_IN_FLIGHT: usize = 4;

/// How one backup directory counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// A complete backup this repository trusts (signed by an allowed signer, or signing
    /// not enforced), started at a believable time.
    Trusted,
    /// Complete and trusted, but its start time lies beyond now plus the clock tolerance
    /// (a host whose clock was ahead, or planted): its age is unknown, so it never counts.
    FutureDated,
    /// A readable manifest that an allowed signer did not sign: why.
    Untrusted(String),
    /// A manifest that cannot be read or used: why.
    Damaged(String),
    /// No manifest: a backup being written, or an interrupted one.
    Incomplete,
}

impl Standing {
    /// The name used in `list --json` and reports (a backup that counts is `complete`;
    /// with signing enforced that means signed by an allowed signer).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Trusted => "complete",
            Self::FutureDated => "future_dated",
            Self::Untrusted(_) => "untrusted",
            Self::Damaged(_) => "damaged",
            Self::Incomplete => "incomplete",
        }
    }
}

/// What listings and decisions need of a manifest (its short texts are capped by
/// [`Manifest::validate`]).
#[derive(Debug, Clone)]
pub struct Summary {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub host: String,
    pub platform_version: Option<String>,
    pub upgrade: Option<UpgradeInfo>,
    pub dirty: bool,
    /// Bytes stored by both artifacts.
    pub stored_size: u64,
    pub snapshot_size: u64,
    pub static_resources_size: Option<u64>,
    /// For shipped cluster-backup.sh files: the pair's timestamp.
    pub backup_dir_timestamp: Option<String>,
    /// Stored bytes of the snapshot artifact, as recorded.
    pub snapshot_stored_size: u64,
    /// Stored bytes of the keys archive, as recorded.
    pub static_resources_stored_size: Option<u64>,
    /// The etcd server version of a live snapshot (capped like the other short texts).
    pub etcd_version: Option<String>,
    /// The snapshot's age recipients as recorded (public keys; at most
    /// [`MAX_RECIPIENTS_KEPT`], each capped).
    pub snapshot_recipients: Vec<String>,
    /// The keys archive's age recipients, kept the same way.
    pub static_resources_recipients: Vec<String>,
}

/// Recipients kept per summary: enough for any real keys archive, bounded for a planted one.
pub const MAX_RECIPIENTS_KEPT: usize = 16;

/// An artifact's recipients as a summary keeps them.
fn recipients(artifact: Option<&crate::manifest::Artifact>) -> Vec<String> {
    artifact
        .iter()
        .flat_map(|a| &a.encryption.recipients)
        .take(MAX_RECIPIENTS_KEPT)
        .map(|r| short(r))
        .collect()
}

/// A short text from a manifest as a summary keeps it: whole when it is short, else cut
/// at [`crate::manifest::MAX_SHORT_TEXT`] bytes (on a character boundary) with an ellipsis.
fn short(text: &str) -> String {
    let max = crate::manifest::MAX_SHORT_TEXT;
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl Summary {
    fn of(manifest: &Manifest) -> Self {
        Self {
            started_at: manifest.started_at,
            finished_at: manifest.finished_at,
            host: manifest.host.clone(),
            platform_version: manifest.platform_version.clone(),
            upgrade: manifest.upgrade.clone(),
            dirty: manifest.dirty,
            stored_size: manifest.stored_size(),
            snapshot_size: manifest.artifacts.snapshot.plaintext.size,
            static_resources_size: manifest
                .artifacts
                .static_resources
                .as_ref()
                .map(|a| a.plaintext.size),
            backup_dir_timestamp: match &manifest.source {
                SourceInfo::BackupDir { timestamp, .. } => Some(timestamp.clone()),
                SourceInfo::Etcd { .. } => None,
            },
            snapshot_stored_size: manifest.artifacts.snapshot.stored.size,
            static_resources_stored_size: manifest
                .artifacts
                .static_resources
                .as_ref()
                .map(|a| a.stored.size),
            etcd_version: match &manifest.source {
                SourceInfo::Etcd { etcd_version, .. } => Some(short(etcd_version)),
                SourceInfo::BackupDir { .. } => None,
            },
            snapshot_recipients: recipients(Some(&manifest.artifacts.snapshot)),
            static_resources_recipients: recipients(manifest.artifacts.static_resources.as_ref()),
        }
    }
}

/// One backup directory of the snapshot target.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    /// The snapshot target's objects of this directory.
    pub objects: Vec<StoredObject>,
    pub standing: Standing,
    /// Of the manifest, when it reads (trusted, future-dated or untrusted).
    pub summary: Option<Summary>,
}

impl Entry {
    fn listed(id: String, objects: Vec<StoredObject>) -> Self {
        Self {
            id,
            objects,
            standing: Standing::Incomplete,
            summary: None,
        }
    }

    /// A trusted backup: the only kind that counts.
    pub fn counts(&self) -> bool {
        self.standing == Standing::Trusted
    }

    /// The directory holds a manifest object (usable or not).
    pub fn has_manifest(&self) -> bool {
        self.objects.iter().any(|o| is_manifest(&o.key))
    }

    /// Start time from the manifest, else from the id.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.summary
            .as_ref()
            .map(|s| s.started_at)
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

    /// Bytes the snapshot target holds for this directory.
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }

    /// Keys of this backup's drill records, newest first (their names sort in time order).
    pub fn drill_records(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .objects
            .iter()
            .map(|o| o.key.as_str())
            .filter(|k| is_drill_record(k))
            .collect();
        keys.sort_unstable_by(|a, b| name_of(b).cmp(name_of(a)));
        keys
    }
}

/// The backups of one cluster in one target, newest first.
#[derive(Debug)]
pub struct Catalog {
    entries: Vec<Entry>,
    /// The lock's generations, from the same listing.
    lock: Vec<StoredObject>,
    /// The newest modification time of anything listed (a lower bound of the store's now).
    newest_modified: Option<DateTime<Utc>>,
}

impl Catalog {
    /// Every backup directory, newest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The trusted backups, newest first.
    pub fn trusted(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.counts())
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The lock's generations as listed.
    pub fn lock_objects(&self) -> &[StoredObject] {
        &self.lock
    }

    /// The newest modification time of any listed object.
    pub fn newest_modified(&self) -> Option<DateTime<Utc>> {
        self.newest_modified
    }
}

/// What one listing of a cluster holds, before any manifest is read.
pub(super) struct Listing {
    pub entries: Vec<Entry>,
    pub lock: Vec<StoredObject>,
    pub newest_modified: Option<DateTime<Utc>>,
}

/// Lists the cluster once: backup directories (newest first) and the lock's generations;
/// objects that are neither are skipped.
pub(super) async fn list(target: &Target, layout: &Layout) -> Result<Listing, StoreError> {
    let objects = target.list(layout.cluster()).await?;
    Ok(group(objects, layout))
}

/// Groups a listing of a cluster by backup id; keys outside the layout are skipped.
pub(super) fn group(objects: Vec<StoredObject>, layout: &Layout) -> Listing {
    let newest_modified = objects.iter().map(|o| o.last_modified).max();
    let mut by_id: std::collections::BTreeMap<String, Vec<StoredObject>> = Default::default();
    let mut lock = Vec::new();
    for object in objects {
        if let Some((id, _)) = layout.backup_object(&object.key) {
            by_id.entry(id.to_string()).or_default().push(object);
        } else if layout.generation_of(&object.key).is_some() {
            lock.push(object);
        }
    }
    Listing {
        entries: by_id
            .into_iter()
            .rev()
            .map(|(id, objects)| Entry::listed(id, objects))
            .collect(),
        lock,
        newest_modified,
    }
}

/// Reads every manifest of a listing and classifies its entries.
pub(super) async fn build(
    listing: Listing,
    target: &Target,
    layout: &Layout,
    trust: &Trust,
    now: DateTime<Utc>,
) -> Catalog {
    let entries = futures::stream::iter(listing.entries)
        .map(|mut entry| async move {
            classify(&mut entry, target, layout, trust, now).await;
            entry
        })
        .buffered(LOADS_IN_FLIGHT)
        .collect()
        .await;
    Catalog {
        entries,
        lock: listing.lock,
        newest_modified: listing.newest_modified,
    }
}

/// A start time beyond `now` plus the clock tolerance.
pub fn future_dated(at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    at > now + super::clock::tolerance()
}

/// Reads the manifest of an entry that has one and sets its standing and summary.
pub(super) async fn classify(
    entry: &mut Entry,
    target: &Target,
    layout: &Layout,
    trust: &Trust,
    now: DateTime<Utc>,
) {
    if !entry.has_manifest() {
        return;
    }
    let read = match read_manifest(target, layout, trust, &entry.id).await {
        Ok(read) => read,
        // Deleted between the listing and the read (a prune): not a backup any more.
        Err(ManifestProblem::Store(e)) if e.kind == StoreErrorKind::NotFound => return,
        Err(ManifestProblem::Store(e)) => {
            entry.standing = Standing::Damaged(format!("manifest cannot be read: {e}"));
            return;
        }
        Err(problem) => {
            entry.standing = Standing::Damaged(problem.to_string());
            return;
        }
    };
    let summary = Summary::of(&read.manifest);
    entry.standing = match read.signature {
        Signature::Untrusted(why) => Standing::Untrusted(why),
        _ if future_dated(summary.started_at, now)
            || id_time(&entry.id).is_some_and(|t| future_dated(t, now)) =>
        {
            Standing::FutureDated
        }
        _ => Standing::Trusted,
    };
    entry.summary = Some(summary);
}

/// A manifest as read, with the judgement of its signature over those exact bytes.
pub struct ReadManifest {
    pub manifest: Manifest,
    pub signature: Signature,
}

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestProblem {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("manifest {key} is unreadable: {reason}")]
    Invalid { key: String, reason: String },
}

/// Reads and checks the manifest of backup `id` (it must describe that backup, with its
/// artifacts where the layout puts them) and judges its signature. A signature that cannot
/// be read for lack of an answer makes the backup untrusted, not the read an error.
pub(super) async fn read_manifest(
    target: &Target,
    layout: &Layout,
    trust: &Trust,
    id: &str,
) -> Result<ReadManifest, ManifestProblem> {
    let key = layout.manifest(id);
    let bytes = target.read(&key).await?;
    let invalid = |reason: String| ManifestProblem::Invalid {
        key: key.clone(),
        reason,
    };
    let manifest = Manifest::from_json(&bytes).map_err(invalid)?;
    manifest
        .validate(layout.cluster(), id)
        .and_then(|()| layout.check_artifact_keys(&manifest))
        .map_err(invalid)?;
    let signature = trust
        .judge(target, &key, &bytes)
        .await
        .unwrap_or_else(|e| Signature::Untrusted(format!("its signature cannot be read: {e}")));
    Ok(ReadManifest {
        manifest,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::FaultyStore;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_listing_groups_backups_and_the_lock_and_skips_the_rest() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        let layout = Layout::new("c");
        for key in [
            "c/20261123T104649Z/manifest.json",
            "c/20261123T104649Z/snapshot.db.zst.age",
            "c/20261124T104649Z/in-progress.json",
            "c/lock/0000000000000003",
            "c/.clock-00",
            "c/not-an-id/manifest.json",
            "cc/20261125T104649Z/manifest.json",
        ] {
            target.create(key, Bytes::from("x")).await.unwrap();
        }
        let listing = list(&target, &layout).await.unwrap();
        let ids: Vec<&str> = listing.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["20261124T104649Z", "20261123T104649Z"]);
        assert_eq!(listing.lock.len(), 1);
        let catalog = build(listing, &target, &layout, &Trust::none(), Utc::now()).await;
        assert_eq!(catalog.entries()[0].standing, Standing::Incomplete);
        assert!(matches!(
            catalog.entries()[1].standing,
            Standing::Damaged(_)
        ));
        assert!(catalog.trusted().next().is_none());
    }
}
