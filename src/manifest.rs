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
        /// The bbolt file's storage version, where etcd reports it (3.6+).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storage_version: Option<String>,
        revision: i64,
        db_size: u64,
        /// How the read was paced, and etcd's latency before and during it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pacing: Option<crate::source::pace::PacingFacts>,
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

/// The two artifacts of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// The encrypted, compressed etcd snapshot.
    Snapshot,
    /// The encrypted, compressed tar of the static resources (the keys archive).
    StaticResources,
}

impl ArtifactKind {
    /// The artifact's name in the manifest and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::StaticResources => "static_resources",
        }
    }
}

impl Artifacts {
    /// Both artifacts with their kinds, the snapshot first.
    pub fn iter(&self) -> impl Iterator<Item = (ArtifactKind, &Artifact)> {
        std::iter::once((ArtifactKind::Snapshot, &self.snapshot)).chain(
            self.static_resources
                .as_ref()
                .map(|a| (ArtifactKind::StaticResources, a)),
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
                if crate::ids::parse_restore_timestamp(timestamp).is_some() =>
            {
                timestamp.clone()
            }
            _ => crate::ids::restore_timestamp(self.started_at),
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

/// Longest text kept from a manifest for listings (host, platform version, upgrade): a
/// manifest near the 1 MiB cap must not make every summary of it large.
pub const MAX_SHORT_TEXT: usize = 256;

/// Checks on a manifest read from a store: it is untrusted until every field a reader
/// uses is known to be well-formed. Where its artifacts must be is the repository's
/// layout to check.
impl Manifest {
    /// Ok when this manifest describes backup `cluster`/`id` and every field used by
    /// readers (sizes, the timestamp in restored file names, the short texts shown in
    /// listings) is well-formed.
    pub fn validate(&self, cluster: &str, id: &str) -> Result<(), String> {
        if self.id != id || self.cluster != cluster {
            return Err(format!(
                "it describes backup {}/{}, not {cluster}/{id}",
                self.cluster.escape_debug(),
                self.id.escape_debug()
            ));
        }
        if crate::ids::id_time(&self.id).is_none() {
            return Err(format!("id {:?} is not a backup id", self.id));
        }
        for (kind, artifact) in self.artifacts.iter() {
            for (what, digest) in [
                ("plaintext", &artifact.plaintext),
                ("stored", &artifact.stored),
            ] {
                if digest.size > MAX_ARTIFACT_SIZE {
                    return Err(format!(
                        "artifacts.{}.{what}.size {} is not a real size",
                        kind.as_str(),
                        digest.size
                    ));
                }
            }
        }
        let upgrade = self.upgrade.as_ref();
        let texts = [
            ("host", Some(self.host.as_str())),
            ("platform_version", self.platform_version.as_deref()),
            ("upgrade.from", upgrade.and_then(|u| u.from.as_deref())),
            ("upgrade.to", upgrade.map(|u| u.to.as_str())),
            ("upgrade.state", upgrade.map(|u| u.state.as_str())),
        ];
        for (field, text) in texts {
            if text.is_some_and(|t| t.len() > MAX_SHORT_TEXT) {
                return Err(format!(
                    "{field} is longer than {MAX_SHORT_TEXT} bytes, which no backup writes"
                ));
            }
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
    crate::ids::parse_restore_timestamp(text).is_some()
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

/// An artifact record of `size` bytes at `key`, for tests.
#[cfg(test)]
pub(crate) fn sample_artifact(key: &str, size: u64) -> Artifact {
    let digest = Digest {
        size,
        sha256: [0; 32],
    };
    Artifact {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let artifact = |key: &str| sample_artifact(key, 10);
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
        m.platform_version = Some("4".repeat(MAX_SHORT_TEXT + 1));
        assert!(
            m.validate("c", "20261123T104649Z")
                .unwrap_err()
                .contains("platform_version")
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

    /// Property tests: whatever a store hands back, parsing and checking it never panics,
    /// and what this version writes it reads back unchanged.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Every reader's path over an untrusted manifest: parse, check, then use.
        fn read_untrusted(bytes: &[u8], cluster: &str, id: &str) {
            if let Ok(m) = Manifest::from_json(bytes)
                && m.validate(cluster, id).is_ok()
            {
                let _ = m.restore_timestamp();
                let _ = m.stored_size();
                let _ = m.to_json();
            }
        }

        /// A JSON value of any shape, a few levels deep.
        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                any::<String>().prop_map(serde_json::Value::from),
                prop_oneof![
                    Just("../../etc/passwd"),
                    Just("c/20261123T104649Z/snapshot.db.zst.age"),
                    Just("2026-11-23_104649"),
                    Just("20261123T104649Z"),
                    Just("2026-11-23T10:46:49Z"),
                    Just("00"),
                ]
                .prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// One change to a JSON document: the value at a (wrapped) path index is replaced
        /// or removed.
        #[derive(Debug, Clone)]
        enum Edit {
            Replace(usize, serde_json::Value),
            Remove(usize),
        }

        fn edit() -> impl Strategy<Value = Edit> {
            prop_oneof![
                (any::<usize>(), json_value()).prop_map(|(i, v)| Edit::Replace(i, v)),
                any::<usize>().prop_map(Edit::Remove),
            ]
        }

        /// Every (object key path) in a document, depth first.
        fn paths(v: &serde_json::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            if let serde_json::Value::Object(map) = v {
                for (k, child) in map {
                    prefix.push(k.clone());
                    out.push(prefix.clone());
                    paths(child, prefix, out);
                    prefix.pop();
                }
            }
        }

        fn apply(doc: &mut serde_json::Value, edit: &Edit) {
            let mut all = Vec::new();
            paths(doc, &mut Vec::new(), &mut all);
            let index = match edit {
                Edit::Replace(i, _) | Edit::Remove(i) => *i,
            };
            let Some(path) = all.get(index % all.len().max(1)) else {
                return;
            };
            let (last, parents) = path.split_last().expect("paths are not empty");
            let mut node = &mut *doc;
            for key in parents {
                node = &mut node[key.as_str()];
            }
            if let serde_json::Value::Object(map) = node {
                match edit {
                    Edit::Replace(_, value) => {
                        map.insert(last.clone(), value.clone());
                    }
                    Edit::Remove(_) => {
                        map.remove(last);
                    }
                }
            }
        }

        prop_compose! {
            fn digest()(size in 0u64..=MAX_ARTIFACT_SIZE, sha256 in any::<[u8; 32]>()) -> Digest {
                Digest { size, sha256 }
            }
        }

        prop_compose! {
            fn artifact(key: String)(
                target in "[a-z]{2,5}://[a-z0-9./-]{0,20}",
                plaintext in digest(),
                stored in digest(),
                level in 1i32..=19,
                recipients in prop::collection::vec("age1[a-z0-9]{10,58}", 0..3),
            ) -> Artifact {
                Artifact {
                    target,
                    key: key.clone(),
                    plaintext,
                    stored,
                    compression: CompressionInfo { algorithm: "zstd".into(), level },
                    encryption: EncryptionInfo { algorithm: "age".into(), recipients },
                }
            }
        }

        /// A manifest as `backup` writes it, with arbitrary contents in every free field.
        fn any_manifest() -> impl Strategy<Value = Manifest> {
            let times = (0i64..4_000_000_000, 0u32..1_000_000_000, 0i64..100_000);
            let source = prop_oneof![
                (
                    any::<String>(),
                    "[0-9a-f]{1,16}",
                    any::<String>(),
                    any::<i64>(),
                    any::<u64>(),
                    proptest::option::of("3\\.[0-9]\\.0"),
                )
                    .prop_map(
                        |(
                            endpoint,
                            member_id,
                            etcd_version,
                            revision,
                            db_size,
                            storage_version,
                        )| {
                            SourceInfo::Etcd {
                                endpoint,
                                member_id,
                                etcd_version,
                                storage_version,
                                revision,
                                db_size,
                                pacing: None,
                            }
                        }
                    ),
                (any::<String>(), any::<String>()).prop_map(|(snapshot_file, static_file)| {
                    SourceInfo::BackupDir {
                        timestamp: "2026-11-23_104649".into(),
                        snapshot_file,
                        static_file,
                    }
                }),
            ];
            (
                "[a-z0-9][a-z0-9._-]{0,20}",
                times,
                source,
                (
                    proptest::option::of("[ -~]{0,64}"),
                    any::<bool>(),
                    prop::collection::vec(any::<String>(), 0..3),
                    prop::collection::btree_map(any::<String>(), any::<String>(), 0..3),
                ),
                any::<String>(),
            )
                .prop_flat_map(
                    |(cluster, (secs, nanos, took), source, extra, host)| {
                        let started_at = DateTime::from_timestamp(secs, nanos).expect("in range");
                        let id = crate::ids::backup_id(started_at, 0);
                        let snapshot = artifact(format!("{cluster}/{id}/snapshot.db.zst.age"));
                        let keys = proptest::option::of(artifact(format!(
                            "{cluster}/{id}/static_kuberesources.tar.zst.age"
                        )));
                        (snapshot, keys).prop_map(move |(snapshot, static_resources)| {
                            let (platform_version, dirty, dirty_reasons, labels) = extra.clone();
                            Manifest {
                                format_version: FORMAT_VERSION,
                                id: id.clone(),
                                cluster: cluster.clone(),
                                started_at,
                                finished_at: started_at + chrono::TimeDelta::seconds(took),
                                tool_version: env!("CARGO_PKG_VERSION").into(),
                                host: host.clone(),
                                source: source.clone(),
                                platform_version,
                                upgrade: None,
                                dirty,
                                dirty_reasons,
                                labels,
                                content: None,
                                artifacts: Artifacts {
                                    snapshot,
                                    static_resources,
                                },
                            }
                        })
                    },
                )
        }

        proptest! {
            #![proptest_config(crate::property_config())]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                read_untrusted(&bytes, "c", "20261123T104649Z");
            }

            #[test]
            fn arbitrary_json_never_panics(value in json_value()) {
                read_untrusted(value.to_string().as_bytes(), "c", "20261123T104649Z");
            }

            #[test]
            fn a_written_manifest_reads_back_unchanged_and_validates(m in any_manifest()) {
                let json = m.to_json();
                let back = Manifest::from_json(json.as_bytes()).expect("reads back");
                prop_assert_eq!(&back, &m);
                prop_assert_eq!(back.validate(&m.cluster, &m.id), Ok(()));
            }

            #[test]
            fn mutated_manifests_never_panic(
                m in any_manifest(),
                edits in prop::collection::vec(edit(), 1..4),
                cut in any::<prop::sample::Index>(),
                flip in any::<prop::sample::Index>(),
            ) {
                let mut doc: serde_json::Value =
                    serde_json::from_str(&m.to_json()).expect("a manifest is JSON");
                for e in &edits {
                    apply(&mut doc, e);
                }
                let bytes = serde_json::to_vec(&doc).expect("JSON");
                read_untrusted(&bytes, &m.cluster, &m.id);
                // Truncated at any byte, and with any byte flipped.
                let json = m.to_json().into_bytes();
                read_untrusted(&json[..cut.index(json.len() + 1)], &m.cluster, &m.id);
                let mut flipped = json.clone();
                let at = flip.index(flipped.len());
                flipped[at] ^= 0x41;
                read_untrusted(&flipped, &m.cluster, &m.id);
            }
        }
    }
}
