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
