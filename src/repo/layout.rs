//! The storage layout of the contract: the only place object keys are composed.
//!
//! ```text
//! <cluster>/<id>/snapshot.db.zst.age              (snapshot target)
//! <cluster>/<id>/static_kuberesources.tar.zst.age (static resources target)
//! <cluster>/<id>/manifest.json                    (both; the snapshot side's is the commit point)
//! <cluster>/<id>/manifest.json.sig                (with signing, written before the manifest)
//! <cluster>/<id>/drill-<time>-<n>.json[.sig]      (drill records, create-only)
//! <cluster>/<id>/in-progress.json                 (while a backup is written)
//! <cluster>/lock/<n>                              (the lock's generations)
//! ```
//!
//! Everything is below the cluster's prefix, so one listing of `<cluster>` sees a cluster
//! whole, and clusters sharing a target are told apart by their first key segment.

use chrono::{DateTime, Utc};

use crate::ids::{compact_time, id_time};
use crate::manifest::{ArtifactKind, Manifest};

/// Encrypted, compressed etcd snapshot.
pub const SNAPSHOT_OBJECT: &str = "snapshot.db.zst.age";
/// Encrypted, compressed tar of the static Kubernetes resources.
pub const STATIC_OBJECT: &str = "static_kuberesources.tar.zst.age";
/// The commit point: a backup exists only when the snapshot target's manifest does.
pub const MANIFEST_OBJECT: &str = "manifest.json";
/// Claims an id while a backup is being written; removed after the commit.
pub const IN_PROGRESS_OBJECT: &str = "in-progress.json";
/// What a signature's name adds to the name of the record it signs.
const SIGNATURE_SUFFIX: &str = ".sig";
/// Drill records, `drill-<YYYYMMDDTHHMMSSZ>-<n>.json`, one per drill (create-only).
const DRILL_PREFIX: &str = "drill-";
/// One per cluster: the backup lock's generations (`<cluster>/lock/<n>`), see [`super::lock`].
const LOCK_DIR: &str = "lock";

/// Where the objects of one cluster are, in any target (primary or replica).
#[derive(Debug, Clone)]
pub struct Layout {
    cluster: String,
}

impl Layout {
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The object `name` of backup `id`.
    fn object(&self, id: &str, name: &str) -> String {
        format!("{}/{id}/{name}", self.cluster)
    }

    /// The directory of backup `id` (what a claim checks is empty).
    pub fn backup_dir(&self, id: &str) -> String {
        format!("{}/{id}", self.cluster)
    }

    pub fn manifest(&self, id: &str) -> String {
        self.object(id, MANIFEST_OBJECT)
    }

    pub fn in_progress(&self, id: &str) -> String {
        self.object(id, IN_PROGRESS_OBJECT)
    }

    pub fn artifact(&self, id: &str, kind: ArtifactKind) -> String {
        self.object(
            id,
            match kind {
                ArtifactKind::Snapshot => SNAPSHOT_OBJECT,
                ArtifactKind::StaticResources => STATIC_OBJECT,
            },
        )
    }

    /// The `n`th drill record of backup `id` made at `at`.
    pub fn drill_record(&self, id: &str, at: DateTime<Utc>, n: u32) -> String {
        self.object(
            id,
            &format!("{DRILL_PREFIX}{}-{n:04}.json", compact_time(at)),
        )
    }

    /// The directory of the lock's generations.
    pub fn lock_dir(&self) -> String {
        format!("{}/{LOCK_DIR}", self.cluster)
    }

    /// Generation `n` of the lock (zero-padded, so names sort as numbers).
    pub fn lock_generation(&self, generation: u64) -> String {
        format!("{}/{generation:016}", self.lock_dir())
    }

    /// The lock generation a key names, when it is one.
    pub fn generation_of(&self, key: &str) -> Option<u64> {
        let name = key.strip_prefix(&self.lock_dir())?.strip_prefix('/')?;
        let generation = name
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| name.parse::<u64>().ok())??;
        (key == self.lock_generation(generation)).then_some(generation)
    }

    /// A small object a run writes to read the store's clock (never a backup's, never the lock's).
    pub fn clock_probe(&self, token: u64) -> String {
        format!("{}/.clock-{token:016x}", self.cluster)
    }

    /// A probe `config check --connect` writes to test permissions and create-only writes.
    pub fn permission_probe(&self, token: u64) -> String {
        format!("{}/.probe-{token:016x}", self.cluster)
    }

    /// The backup id and object name of a key `<cluster>/<id>/<name>`, when `id` is an id.
    pub fn backup_object<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(&self.cluster)?.strip_prefix('/')?;
        let (id, name) = rest.split_once('/')?;
        (id_time(id).is_some() && !name.is_empty()).then_some((id, name))
    }

    /// Where the manifest of a backup says its artifacts are must be where this layout
    /// puts them: a manifest pointing elsewhere (another backup's objects, a path out of
    /// the target) is damaged, signed or not.
    pub fn check_artifact_keys(&self, manifest: &Manifest) -> Result<(), String> {
        for (kind, artifact) in manifest.artifacts.iter() {
            let key = self.artifact(&manifest.id, kind);
            if artifact.key != key {
                return Err(format!(
                    "artifacts.{}.key is {:?}, not {key:?}",
                    kind.as_str(),
                    artifact.key
                ));
            }
        }
        Ok(())
    }
}

/// The signature object of a record (`manifest.json.sig`, `drill-….json.sig`).
pub fn signature_of(record_key: &str) -> String {
    format!("{record_key}{SIGNATURE_SUFFIX}")
}

/// The last segment of a key.
pub fn name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

pub fn is_manifest(key: &str) -> bool {
    name_of(key) == MANIFEST_OBJECT
}

pub fn is_in_progress(key: &str) -> bool {
    name_of(key) == IN_PROGRESS_OBJECT
}

/// A drill record (not its signature).
pub fn is_drill_record(key: &str) -> bool {
    let name = name_of(key);
    name.starts_with(DRILL_PREFIX) && name.ends_with(".json")
}

/// The time a drill record's name carries (`drill-<YYYYMMDDTHHMMSSZ>-<n>.json`), so a
/// reader can pick records by time without reading them; None for another name.
pub fn drill_record_time(key: &str) -> Option<DateTime<Utc>> {
    let time = name_of(key).strip_prefix(DRILL_PREFIX)?.get(..16)?;
    crate::ids::id_time(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_their_parts() {
        let layout = Layout::new("prod");
        let at = DateTime::parse_from_rfc3339("2026-11-23T10:46:49Z")
            .unwrap()
            .to_utc();
        let id = "20261123T104649Z";
        assert_eq!(layout.manifest(id), "prod/20261123T104649Z/manifest.json");
        assert_eq!(
            signature_of(&layout.manifest(id)),
            "prod/20261123T104649Z/manifest.json.sig"
        );
        let record = layout.drill_record(id, at, 3);
        assert_eq!(
            record,
            "prod/20261123T104649Z/drill-20261123T104649Z-0003.json"
        );
        assert!(is_drill_record(&record) && !is_drill_record(&signature_of(&record)));
        assert_eq!(drill_record_time(&record), Some(at));
        assert_eq!(
            drill_record_time("prod/20261123T104649Z/drill-x.json"),
            None
        );
        assert_eq!(
            layout.backup_object(&record),
            Some((id, "drill-20261123T104649Z-0003.json"))
        );
        assert_eq!(layout.backup_object("prod/lock/0000000000000001"), None);
        assert_eq!(layout.backup_object("production/20261123T104649Z/x"), None);
        assert_eq!(layout.generation_of(&layout.lock_generation(7)), Some(7));
        assert_eq!(layout.generation_of("prod/lock/7"), None);
        assert_eq!(layout.generation_of("prod/lock/probe"), None);
        assert_eq!(layout.backup_object(&layout.clock_probe(1)), None);
    }
}
