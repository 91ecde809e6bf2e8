//! The repository of one cluster over one or two targets: which target holds what, how
//! an id is claimed, how a manifest is committed, and in which order a backup's objects
//! are deleted. Commands call it; they never compose keys or delete orders themselves.

use anyhow::{Context, anyhow};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::layout::{IN_PROGRESS_OBJECT, MANIFEST_OBJECT, backup_id};
use super::{StoreError, StoreErrorKind, StoredObject, Target, lock, same_location};
use crate::config::Config;

/// The snapshot target and the static resources target (often the same store).
pub struct Targets {
    pub snapshot: Target,
    pub static_resources: Target,
    /// The two are different locations (URL or options differ).
    split: bool,
}

impl Targets {
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        Self::open_targets(&config.targets)
    }

    /// Opens the configured targets; one location (same URL and options) is opened once.
    pub fn open_targets(config: &crate::config::Targets) -> anyhow::Result<Self> {
        let snapshot = Target::open(&config.snapshot).context("snapshot target")?;
        let split = !same_location(&config.snapshot, &config.static_resources);
        let static_resources = if split {
            Target::open(&config.static_resources).context("static resources target")?
        } else {
            snapshot.clone()
        };
        Ok(Self {
            snapshot,
            static_resources,
            split,
        })
    }

    /// Two given targets; `split` says whether they are different locations.
    #[cfg(test)]
    pub(crate) fn new(snapshot: Target, static_resources: Target, split: bool) -> Self {
        Self {
            snapshot,
            static_resources,
            split,
        }
    }

    /// The keys archive lives in another location than the snapshot (so a manifest copy
    /// goes there too). One definition: same URL and same options is the same location.
    pub fn split(&self) -> bool {
        self.split
    }

    /// The target that holds an artifact of a manifest.
    pub fn for_artifact(&self, name: &str) -> &Target {
        if name == "snapshot" {
            &self.snapshot
        } else {
            &self.static_resources
        }
    }
}

/// The key of an object of backup `id`.
pub fn object_key(cluster: &str, id: &str, name: &str) -> String {
    format!("{cluster}/{id}/{name}")
}

/// Claims the id for `started_at` (with a suffix when that second is taken) via a
/// create-only in-progress marker. A marker that a retried create already wrote is
/// recognised as this run's by its token.
pub async fn claim_id(
    target: &Target,
    cluster: &str,
    started_at: DateTime<Utc>,
) -> anyhow::Result<String> {
    let token = rand::random::<u64>();
    let marker = Bytes::from(
        serde_json::json!({
            "host": lock::hostname(),
            "pid": std::process::id(),
            "started_at": started_at,
            "token": token,
        })
        .to_string(),
    );
    for attempt in 0..100 {
        let id = backup_id(started_at, attempt);
        let key = object_key(cluster, &id, IN_PROGRESS_OBJECT);
        if !target.list(&format!("{cluster}/{id}")).await?.is_empty() {
            continue;
        }
        let created = target.create(&key, marker.clone()).await;
        if matches!(created, Ok(true)) {
            return Ok(id);
        }
        // "Exists" or an error: ours if the stored marker is (a retry that had landed).
        match target.read(&key).await {
            Ok(stored) if stored == marker => return Ok(id),
            Ok(_) => continue,
            Err(e) if e.kind == StoreErrorKind::NotFound => created.map(|_| ())?,
            Err(e) => return Err(created.err().unwrap_or(e).into()),
        }
    }
    Err(anyhow!(
        "could not claim a backup id for {started_at}: 100 backups in one second?"
    ))
}

/// Why a manifest was not committed.
#[derive(Debug)]
pub enum CommitError {
    /// Another run's manifest is there.
    Taken(anyhow::Error),
    /// The write failed and the store says the manifest is not there: not committed.
    Failed(anyhow::Error),
    /// The write failed or was retried, and the stored state could not be read back.
    Unknown(anyhow::Error),
}

impl CommitError {
    pub fn into_inner(self) -> anyhow::Error {
        match self {
            Self::Taken(e) | Self::Failed(e) | Self::Unknown(e) => e,
        }
    }
}

/// Writes a manifest create-only. When the outcome is unclear (an error after the request
/// was sent, or "exists" after a retried request), the stored manifest is read back: an
/// identical one counts as written, none at all as not written (a full disk, a refused
/// write), and only a read that fails too leaves the outcome unknown.
pub async fn commit(target: &Target, key: &str, body: Bytes) -> Result<(), CommitError> {
    let written = target.create(key, body.clone()).await;
    if matches!(written, Ok(true)) {
        return Ok(());
    }
    let location = format!("{}/{key}", target.url());
    match (target.read(key).await, written) {
        (Ok(stored), _) if stored == body => Ok(()),
        (Ok(_), _) => Err(CommitError::Taken(anyhow!(
            "{location} already exists: another run wrote this backup id; nothing was overwritten"
        ))),
        (Err(read), Err(e)) if read.kind == StoreErrorKind::NotFound => {
            Err(CommitError::Failed(e.into()))
        }
        (Err(_), Err(e)) => Err(CommitError::Unknown(e.into())),
        (Err(read), Ok(_)) => Err(CommitError::Unknown(read.into())),
    }
}

/// A delete that did not happen.
#[derive(Debug, Clone)]
pub struct DeleteError {
    /// The object (target URL without credentials, plus key).
    pub location: String,
    pub kind: DeleteErrorKind,
    pub reason: String,
    /// True when nothing of the backup was deleted; false when its manifest already was.
    pub backup_left_whole: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteErrorKind {
    /// The store refused (permissions, object lock, retention, immutability).
    Denied,
    /// The store answered success but still holds the object (a retention policy that
    /// keeps objects, a bucket that ignores deletes).
    Retained,
    Failed,
}

impl DeleteErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Retained => "retained",
            Self::Failed => "failed",
        }
    }
}

fn is_manifest(key: &str) -> bool {
    key.rsplit('/').next() == Some(MANIFEST_OBJECT)
}

/// Deletes a complete backup: the snapshot target's manifest (the commit point) first,
/// then the manifest copy on the keys side, then the keys side's other objects, then the
/// snapshot side's. Until the copy is gone the snapshot side still holds objects of the
/// backup, so an interrupted delete never leaves a keys half that looks like the other
/// half of a backup this target cannot see. Stops at the first failure.
pub async fn delete_backup(
    targets: &Targets,
    snapshot_objects: &[StoredObject],
    static_objects: &[StoredObject],
) -> Result<(), DeleteError> {
    let mut plan: Vec<(&Target, &str)> = Vec::new();
    let (manifests, rest): (Vec<&StoredObject>, Vec<&StoredObject>) =
        snapshot_objects.iter().partition(|o| is_manifest(&o.key));
    plan.extend(
        manifests
            .iter()
            .map(|o| (&targets.snapshot, o.key.as_str())),
    );
    if targets.split() {
        plan.extend(keys_side_order(static_objects).map(|k| (&targets.static_resources, k)));
    }
    plan.extend(rest.iter().map(|o| (&targets.snapshot, o.key.as_str())));
    delete_in_order(&plan, true).await
}

/// Deletes a directory without a snapshot-side manifest (an interrupted backup or
/// prune): the keys side first (its manifest copy first), then the snapshot side, so an
/// interruption never strands a manifest copy without its snapshot half.
pub async fn delete_leftover(
    targets: &Targets,
    snapshot_objects: &[StoredObject],
    static_objects: &[StoredObject],
) -> Result<(), DeleteError> {
    let mut plan: Vec<(&Target, &str)> = Vec::new();
    if targets.split() {
        plan.extend(keys_side_order(static_objects).map(|k| (&targets.static_resources, k)));
    }
    plan.extend(
        snapshot_objects
            .iter()
            .map(|o| (&targets.snapshot, o.key.as_str())),
    );
    delete_in_order(&plan, false).await
}

fn keys_side_order(objects: &[StoredObject]) -> impl Iterator<Item = &str> {
    let mut keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    keys.sort_by_key(|k| !is_manifest(k));
    keys.into_iter()
}

/// Deletes in order, stopping at the first failure. With `check_first`, the first delete
/// (the commit point) is confirmed by looking the object up again: a store that answers
/// success but keeps the object leaves the backup whole and says so.
async fn delete_in_order(plan: &[(&Target, &str)], check_first: bool) -> Result<(), DeleteError> {
    for (i, (target, key)) in plan.iter().enumerate() {
        let left_whole = i == 0;
        let fail = |kind: DeleteErrorKind, location: String, reason: String| DeleteError {
            location,
            kind,
            reason,
            backup_left_whole: left_whole,
        };
        if let Err(err) = target.delete(key).await {
            let kind = if err.kind == StoreErrorKind::Denied {
                DeleteErrorKind::Denied
            } else {
                DeleteErrorKind::Failed
            };
            return Err(fail(kind, err.location, err.reason));
        }
        if check_first && i == 0 {
            match target.exists(key).await {
                Ok(false) => {}
                Ok(true) => {
                    return Err(fail(
                        DeleteErrorKind::Retained,
                        format!("{}/{key}", target.url()),
                        "the store answered the delete but still holds the object (retained by a retention policy or object lock until it expires)".into(),
                    ));
                }
                Err(StoreError {
                    location, reason, ..
                }) => return Err(fail(DeleteErrorKind::Failed, location, reason)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::layout::{SNAPSHOT_OBJECT, STATIC_OBJECT};
    use crate::store::testing::{Fault, FaultyStore, Op};
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 46, 49).unwrap()
    }

    #[test]
    fn one_url_with_other_options_is_another_location() {
        let s3 = |endpoint: &str| crate::config::TargetConfig {
            url: "s3://bucket/etcd".into(),
            options: [
                ("aws_region".to_string(), "eu-west-1".to_string()),
                ("aws_endpoint".to_string(), endpoint.to_string()),
            ]
            .into(),
        };
        let targets = |a, b| crate::config::Targets {
            snapshot: a,
            static_resources: b,
            lock_stale_after: std::time::Duration::from_secs(180),
        };
        let same = Targets::open_targets(&targets(s3("http://a:9000"), s3("http://a:9000")));
        assert!(!same.unwrap().split());
        let other = Targets::open_targets(&targets(s3("http://a:9000"), s3("http://b:9000")));
        assert!(
            other.unwrap().split(),
            "same URL, another endpoint: two stores"
        );
    }

    #[tokio::test]
    async fn claim_takes_the_next_free_second_suffix_and_recognises_its_own_retry() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        assert_eq!(
            claim_id(&target, "c", at()).await.unwrap(),
            "20261123T104649Z"
        );
        assert_eq!(
            claim_id(&target, "c", at()).await.unwrap(),
            "20261123T104649Z-01"
        );
        store.inject(Op::Put, 1, Fault::SucceedButFail);
        assert_eq!(
            claim_id(&target, "c", at()).await.unwrap(),
            "20261123T104649Z-02"
        );
        store.inject(Op::Put, 1, Fault::Fail);
        store.inject(Op::Get, 1, Fault::Fail);
        assert!(claim_id(&target, "c", at()).await.is_err());
    }

    #[tokio::test]
    async fn commit_outcomes_are_committed_taken_failed_or_unknown() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        commit(&target, "c/1/manifest.json", Bytes::from("a"))
            .await
            .unwrap();
        // The same body again (a retried request that had landed): committed.
        commit(&target, "c/1/manifest.json", Bytes::from("a"))
            .await
            .unwrap();
        assert!(matches!(
            commit(&target, "c/1/manifest.json", Bytes::from("b")).await,
            Err(CommitError::Taken(_))
        ));
        store.inject(Op::Put, 1, Fault::SucceedButFail);
        commit(&target, "c/2/manifest.json", Bytes::from("x"))
            .await
            .unwrap();
        store.inject(Op::Put, 1, Fault::SucceedButFail);
        store.inject(Op::Get, 1, Fault::Fail);
        assert!(matches!(
            commit(&target, "c/3/manifest.json", Bytes::from("y")).await,
            Err(CommitError::Unknown(_))
        ));
        store.inject(Op::Put, 1, Fault::Fail);
        store.inject(Op::Get, 1, Fault::Fail);
        assert!(matches!(
            commit(&target, "c/4/manifest.json", Bytes::from("z")).await,
            Err(CommitError::Unknown(_))
        ));
        // A write that failed (a full disk) and a manifest that is not there: not committed.
        store.inject(Op::Put, 1, Fault::Fail);
        assert!(matches!(
            commit(&target, "c/5/manifest.json", Bytes::from("w")).await,
            Err(CommitError::Failed(_))
        ));
        assert!(store.keys().await.iter().all(|k| !k.starts_with("c/5/")));
    }

    async fn split_backup(store: &FaultyStore) -> (Targets, Vec<StoredObject>, Vec<StoredObject>) {
        let snap = store.target("mem://snap");
        // Both sides in one in-memory store, under different cluster prefixes.
        let keys = store.target("mem://keys");
        for key in [
            format!("s/1/{MANIFEST_OBJECT}"),
            format!("s/1/{SNAPSHOT_OBJECT}"),
            format!("k/1/{MANIFEST_OBJECT}"),
            format!("k/1/{STATIC_OBJECT}"),
        ] {
            assert!(snap.create(&key, Bytes::from("x")).await.unwrap());
        }
        let s = snap.list("s").await.unwrap();
        let k = keys.list("k").await.unwrap();
        (Targets::new(snap, keys, true), s, k)
    }

    #[tokio::test]
    async fn delete_order_keeps_every_interruption_safe() {
        let expected = [
            format!("s/1/{MANIFEST_OBJECT}"),
            format!("k/1/{MANIFEST_OBJECT}"),
            format!("k/1/{STATIC_OBJECT}"),
            format!("s/1/{SNAPSHOT_OBJECT}"),
        ];
        for failing in 1..=4 {
            let store = FaultyStore::new();
            let (targets, s, k) = split_backup(&store).await;
            store.inject(Op::Delete, failing, Fault::Fail);
            let err = delete_backup(&targets, &s, &k).await.unwrap_err();
            assert_eq!(err.kind, DeleteErrorKind::Failed);
            assert_eq!(err.backup_left_whole, failing == 1, "step {failing}");
            let left = store.keys().await;
            let mut want: Vec<String> = expected[failing - 1..].to_vec();
            want.sort();
            assert_eq!(left, want, "step {failing}");
            // A manifest copy never outlives every snapshot-side object.
            if left.iter().any(|k| k == &format!("k/1/{MANIFEST_OBJECT}")) {
                assert!(left.iter().any(|k| k.starts_with("s/1/")));
            }
        }
        let store = FaultyStore::new();
        let (targets, s, k) = split_backup(&store).await;
        delete_backup(&targets, &s, &k).await.unwrap();
        assert!(store.keys().await.is_empty());
    }

    #[tokio::test]
    async fn refused_and_retained_deletes_leave_the_backup_whole() {
        let store = FaultyStore::new();
        let (targets, s, k) = split_backup(&store).await;
        store.inject(Op::Delete, 1, Fault::Refuse);
        let err = delete_backup(&targets, &s, &k).await.unwrap_err();
        assert_eq!(
            (err.kind, err.backup_left_whole),
            (DeleteErrorKind::Denied, true)
        );
        store.keep_deleted(true);
        let err = delete_backup(&targets, &s, &k).await.unwrap_err();
        assert_eq!(
            (err.kind, err.backup_left_whole),
            (DeleteErrorKind::Retained, true)
        );
        assert_eq!(store.keys().await.len(), 4);
    }

    #[tokio::test]
    async fn leftovers_lose_their_keys_side_first() {
        let store = FaultyStore::new();
        let (targets, s, k) = split_backup(&store).await;
        let s: Vec<StoredObject> = s.into_iter().filter(|o| !is_manifest(&o.key)).collect();
        store.inject(Op::Delete, 2, Fault::Fail);
        delete_leftover(&targets, &s, &k).await.unwrap_err();
        assert_eq!(
            store.keys().await,
            [
                format!("k/1/{STATIC_OBJECT}"),
                format!("s/1/{MANIFEST_OBJECT}"),
                format!("s/1/{SNAPSHOT_OBJECT}")
            ]
        );
    }
}
