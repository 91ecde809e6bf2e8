//! Delete orders: a backup goes manifest first (the commit point), so that whatever an
//! interruption leaves is a directory without a manifest, which readers ignore and a
//! later prune collects; a leftover goes keys side first.

use super::Sides;
use super::layout::is_manifest;
use crate::store::{StoreError, StoreErrorKind, StoredObject, Target};

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

/// Deletes a complete backup: the snapshot target's manifest (the commit point) first,
/// then the manifest copy on the keys side, then the keys side's other objects, then the
/// snapshot side's. Until the copy is gone the snapshot side still holds objects of the
/// backup, so an interrupted delete never leaves a keys half that looks like the other
/// half of a backup this target cannot see. Stops at the first failure.
pub(super) async fn delete_backup(
    targets: &Sides,
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
pub(super) async fn delete_leftover(
    targets: &Sides,
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
    use crate::repo::layout::{MANIFEST_OBJECT, SNAPSHOT_OBJECT, STATIC_OBJECT};
    use crate::store::testing::{Fault, FaultyStore, Op};
    use bytes::Bytes;

    async fn split_backup(store: &FaultyStore) -> (Sides, Vec<StoredObject>, Vec<StoredObject>) {
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
        (Sides::new(snap, keys, true), s, k)
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
