//! The commit-point record: written last, deleted first, describes every artifact.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::source::content::ContentFacts;

/// Manifest format version; readers refuse newer formats.
pub const FORMAT_VERSION: u32 = 1;

/// cluster-backup.sh's mark on a pair taken with `--force` past its guards.
pub const DIRTY_SUFFIX: &str = "__POSSIBLY_DIRTY__";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub id: String,
    pub cluster: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub tool_version: String,
    /// The host that took the backup.
    #[serde(default)]
    pub host: String,
    pub source: SourceInfo,
    pub platform_version: Option<String>,
    /// Set when the backup was taken while the platform was upgrading (ClusterVersion's
    /// newest history entry not Completed): it belongs to neither release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeInfo>,
    /// Taken past a guard (`--force` while operators were progressing, or a
    /// `__POSSIBLY_DIRTY__` pair from cluster-backup.sh): it may not restore cleanly.
    #[serde(default)]
    pub dirty: bool,
    /// Why the backup is dirty, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirty_reasons: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What the snapshot holds (live etcd sources): checked by `drill` against a restored copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentFacts>,
    pub artifacts: Artifacts,
}

/// An upgrade in progress when the backup was taken (from ClusterVersion `status.history`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpgradeInfo {
    /// The newest Completed version before the upgrade (None on a cluster still installing).
    pub from: Option<String>,
    pub to: String,
    /// The history entry's state (`Partial`).
    pub state: String,
}

/// What the snapshot was taken from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceInfo {
    Etcd {
        endpoint: String,
        /// Hex, as `etcdctl member list -w table` prints it.
        member_id: String,
        etcd_version: String,
        revision: i64,
        db_size: u64,
    },
    BackupDir {
        /// `<ts>` of the pair as cluster-backup.sh named it.
        #[serde(default)]
        timestamp: String,
        snapshot_file: String,
        static_file: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifacts {
    pub snapshot: Artifact,
    pub static_resources: Option<Artifact>,
}

impl Artifacts {
    /// Both artifacts with their names, the snapshot first.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Artifact)> {
        std::iter::once(("snapshot", &self.snapshot)).chain(
            self.static_resources
                .as_ref()
                .map(|a| ("static_resources", a)),
        )
    }
}

/// One stored object and everything needed to check it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    /// Target URL without credentials.
    pub target: String,
    /// Key relative to the target URL.
    pub key: String,
    pub plaintext: Digest,
    pub stored: Digest,
    pub compression: CompressionInfo,
    pub encryption: EncryptionInfo,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    #[serde(with = "hex_digest")]
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CompressionInfo {
    pub algorithm: String,
    pub level: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptionInfo {
    pub algorithm: String,
    pub recipients: Vec<String>,
}

impl Manifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serializes")
    }

    /// Parses a stored manifest, refusing formats this version does not know.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a manifest: {e}"))?;
        if manifest.format_version > FORMAT_VERSION {
            return Err(format!(
                "manifest format {} is newer than this etcd-offsite understands ({FORMAT_VERSION}); upgrade etcd-offsite",
                manifest.format_version
            ));
        }
        Ok(manifest)
    }

    /// `<ts>` of restored file names: the pair's own for cluster-backup.sh files (when it
    /// has that shape: the manifest is untrusted input), else the start time; with
    /// cluster-backup.sh's `__POSSIBLY_DIRTY__` suffix for a dirty backup.
    pub fn restore_timestamp(&self) -> String {
        let ts = match &self.source {
            SourceInfo::BackupDir { timestamp, .. }
                if crate::store::layout::parse_restore_timestamp(timestamp).is_some() =>
            {
                timestamp.clone()
            }
            _ => crate::store::layout::restore_timestamp(self.started_at),
        };
        if self.dirty {
            format!("{ts}{DIRTY_SUFFIX}")
        } else {
            ts
        }
    }

    /// Bytes stored for this backup across both targets.
    pub fn stored_size(&self) -> u64 {
        self.artifacts.iter().map(|(_, a)| a.stored.size).sum()
    }
}

/// Largest artifact size a manifest may claim (16 TiB): anything larger is not real.
const MAX_ARTIFACT_SIZE: u64 = 16 << 40;

/// Checks on a manifest read from a store: it is untrusted until every field a reader
/// uses is known to be well-formed.
impl Manifest {
    /// Ok when this manifest describes backup `cluster`/`id` and every field used by
    /// readers (object keys, sizes, the timestamp in restored file names) is well-formed.
    pub fn validate(&self, cluster: &str, id: &str) -> Result<(), String> {
        use crate::store::layout::{SNAPSHOT_OBJECT, STATIC_OBJECT, id_time};
        if self.id != id || self.cluster != cluster {
            return Err(format!(
                "it describes backup {}/{}, not {cluster}/{id}",
                self.cluster.escape_debug(),
                self.id.escape_debug()
            ));
        }
        if id_time(&self.id).is_none() {
            return Err(format!("id {:?} is not a backup id", self.id));
        }
        let expect = |name: &str, artifact: &Artifact, object: &str| {
            let key = format!("{cluster}/{id}/{object}");
            if artifact.key != key {
                return Err(format!(
                    "artifacts.{name}.key is {:?}, not {key:?}",
                    artifact.key
                ));
            }
            for (what, digest) in [
                ("plaintext", &artifact.plaintext),
                ("stored", &artifact.stored),
            ] {
                if digest.size > MAX_ARTIFACT_SIZE {
                    return Err(format!(
                        "artifacts.{name}.{what}.size {} is not a real size",
                        digest.size
                    ));
                }
            }
            Ok(())
        };
        expect("snapshot", &self.artifacts.snapshot, SNAPSHOT_OBJECT)?;
        if let Some(artifact) = &self.artifacts.static_resources {
            expect("static_resources", artifact, STATIC_OBJECT)?;
        }
        if let SourceInfo::BackupDir { timestamp, .. } = &self.source
            && !timestamp.is_empty()
            && !is_backup_timestamp(timestamp)
        {
            return Err(format!(
                "source.backup_dir.timestamp {:?} is not cluster-backup.sh's YYYY-MM-DD_HHMMSS",
                timestamp
            ));
        }
        Ok(())
    }
}

/// `YYYY-MM-DD_HHMMSS` (the dirty mark is the manifest's `dirty`, not part of it).
fn is_backup_timestamp(text: &str) -> bool {
    crate::store::layout::parse_restore_timestamp(text).is_some()
}

mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(digest: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(digest))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let digest = Digest {
            size: 10,
            sha256: [0; 32],
        };
        let artifact = |key: &str| Artifact {
            target: "file:///t".into(),
            key: key.into(),
            plaintext: digest,
            stored: digest,
            compression: CompressionInfo {
                algorithm: "zstd".into(),
                level: 3,
            },
            encryption: EncryptionInfo {
                algorithm: "age".into(),
                recipients: vec![],
            },
        };
        Manifest {
            format_version: FORMAT_VERSION,
            id: "20261123T104649Z".into(),
            cluster: "c".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            tool_version: "0".into(),
            host: "h".into(),
            source: SourceInfo::BackupDir {
                timestamp: "2026-11-23_104649".into(),
                snapshot_file: "s".into(),
                static_file: "t".into(),
            },
            platform_version: None,
            upgrade: None,
            dirty: true,
            dirty_reasons: vec!["cluster-backup.sh --force".into()],
            labels: BTreeMap::new(),
            content: None,
            artifacts: Artifacts {
                snapshot: artifact("c/20261123T104649Z/snapshot.db.zst.age"),
                static_resources: Some(artifact(
                    "c/20261123T104649Z/static_kuberesources.tar.zst.age",
                )),
            },
        }
    }

    #[test]
    fn untrusted_fields_are_checked() {
        let good = manifest();
        good.validate("c", "20261123T104649Z").unwrap();
        assert!(good.validate("c", "20261123T104650Z").is_err());
        assert!(good.validate("d", "20261123T104649Z").is_err());
        let mut m = good.clone();
        m.artifacts.snapshot.key = "c/20261123T104649Z/../../etc/passwd".into();
        assert!(
            m.validate("c", "20261123T104649Z")
                .unwrap_err()
                .contains("artifacts.snapshot.key")
        );
        let mut m = good.clone();
        m.artifacts.static_resources.as_mut().unwrap().stored.size = u64::MAX;
        assert!(m.validate("c", "20261123T104649Z").is_err());
        for bad in [
            "../../x",
            "2026-11-23_104649/..",
            "2026-13-23_104649",
            "2026-11-23_104649__X__",
        ] {
            let mut m = good.clone();
            m.source = SourceInfo::BackupDir {
                timestamp: bad.into(),
                snapshot_file: "s".into(),
                static_file: "t".into(),
            };
            assert!(m.validate("c", "20261123T104649Z").is_err(), "{bad}");
        }
    }
}
