//! Writing a backup: claim an id, record what is written (so a failed run removes it),
//! and commit the manifest last, create-only, after checking what it commits.

use anyhow::anyhow;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::Sides;
use super::layout::{Layout, signature_of};
use super::lock::BackupLock;
use crate::ids::{backup_id, hostname};
use crate::manifest::{ArtifactKind, Manifest};
use crate::signing::Signer;
use crate::store::{StoreErrorKind, Target};

/// Which target an object was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Snapshot,
    Keys,
}

/// A claimed backup id and every object this run has written for it.
#[must_use = "a claim must be settled"]
pub struct Claim {
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// The in-progress marker first, then each object in the order it was started.
    written: Vec<(Side, String)>,
    /// The manifest may have been written although its write failed: keep everything.
    keep_all: bool,
}

impl Claim {
    pub(super) fn record(&mut self, side: Side, key: String) {
        // A retried upload (another etcd member) writes the same key again.
        if !self.written.iter().any(|(s, k)| *s == side && *k == key) {
            self.written.push((side, key));
        }
    }
}

/// Claims the id for `started_at` (with a suffix when that second is taken) via a
/// create-only in-progress marker. A marker that a retried create already wrote is
/// recognised as this run's by its token.
pub(super) async fn claim(
    target: &Target,
    layout: &Layout,
    started_at: DateTime<Utc>,
) -> anyhow::Result<Claim> {
    let token = rand::random::<u64>();
    let marker = Bytes::from(
        serde_json::json!({
            "host": hostname(),
            "pid": std::process::id(),
            "started_at": started_at,
            "token": token,
        })
        .to_string(),
    );
    for attempt in 0..100 {
        let id = backup_id(started_at, attempt);
        let key = layout.in_progress(&id);
        if !target.list(&layout.backup_dir(&id)).await?.is_empty() {
            continue;
        }
        let created = target.create(&key, marker.clone()).await;
        let ours = match created {
            Ok(true) => true,
            // "Exists" or an error: ours if the stored marker is (a retry that had landed).
            _ => match target.read(&key).await {
                Ok(stored) => stored == marker,
                Err(e) if e.kind == StoreErrorKind::NotFound => {
                    created?;
                    false
                }
                Err(e) => return Err(created.err().unwrap_or(e).into()),
            },
        };
        if ours {
            return Ok(Claim {
                id,
                started_at,
                written: vec![(Side::Snapshot, key)],
                keep_all: false,
            });
        }
    }
    Err(anyhow!(
        "could not claim a backup id for {started_at}: 100 backups in one second?"
    ))
}

/// Removes the in-progress marker, and on failure everything the run wrote (unless the
/// manifest may have landed).
pub(super) async fn settle(sides: &Sides, claim: Claim, committed: bool) {
    let remove: &[(Side, String)] = if committed || claim.keep_all {
        &claim.written[..1]
    } else {
        &claim.written[..]
    };
    for (side, key) in remove {
        if let Err(e) = sides.of(*side).delete(key).await {
            tracing::warn!(error = %e, "cleanup failed; prune removes leftovers after the grace period");
        }
    }
}

/// Why a manifest was not committed.
#[derive(Debug)]
pub(super) enum CommitError {
    /// Another run's manifest is there.
    Taken(anyhow::Error),
    /// The write failed and the store says the manifest is not there: not committed.
    Failed(anyhow::Error),
    /// The write failed or was retried, and the stored state could not be read back.
    Unknown(anyhow::Error),
}

impl CommitError {
    fn into_inner(self) -> anyhow::Error {
        match self {
            Self::Taken(e) | Self::Failed(e) | Self::Unknown(e) => e,
        }
    }
}

/// Writes a small record create-only. When the outcome is unclear (an error after the
/// request was sent, or "exists" after a retried request), the stored record is read
/// back: an identical one counts as written, none at all as not written (a full disk, a
/// refused write), and only a read that fails too leaves the outcome unknown.
pub(super) async fn write_once(target: &Target, key: &str, body: Bytes) -> Result<(), CommitError> {
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

/// Commits `manifest`: its signature first (a committed backup is never unsigned), then,
/// immediately before the manifest, a check that both artifacts are there with the sizes
/// just written and that the lock is still this run's; then the keys side's copy, then
/// the commit point.
pub(super) async fn commit(
    sides: &Sides,
    layout: &Layout,
    claim: &mut Claim,
    manifest: &Manifest,
    signer: Option<&Signer>,
    lock: &BackupLock,
) -> anyhow::Result<()> {
    let id = claim.id.clone();
    let manifest_key = layout.manifest(&id);
    let body = Bytes::from(manifest.to_json());
    if let Some(signer) = signer {
        let signature_key = signature_of(&manifest_key);
        let signature = signer.sign(&body)?;
        claim.record(Side::Snapshot, signature_key.clone());
        write_once(&sides.snapshot, &signature_key, Bytes::from(signature))
            .await
            .map_err(CommitError::into_inner)?;
    }
    check_artifacts(sides, layout, manifest).await?;
    // A run whose lock was taken over (it could not renew in time) must not commit.
    lock.ensure_held().await?;
    if manifest.artifacts.static_resources.is_some() && sides.split() {
        // Before the commit, an unclear outcome is simply a failure: cleanup removes the copy.
        claim.record(Side::Keys, manifest_key.clone());
        write_once(&sides.static_resources, &manifest_key, body.clone())
            .await
            .map_err(CommitError::into_inner)?;
    }
    // The commit point: written last, create-only.
    match write_once(&sides.snapshot, &manifest_key, body).await {
        Ok(()) => Ok(()),
        Err(CommitError::Unknown(e)) => {
            // The manifest may have landed: deleting the artifacts could leave a listed
            // backup without them. Leave everything for verify (or prune) to judge.
            claim.keep_all = true;
            Err(e.context(format!(
                "committing backup {id}: whether its manifest was written is unknown; the artifacts are kept. Run `etcd-offsite verify {id}`"
            )))
        }
        Err(e) => Err(e.into_inner()),
    }
}

/// Both artifacts exist with the stored sizes the manifest records: a run whose objects
/// were removed or replaced while it wrote (a prune from a host with a wrong clock) must
/// not commit a backup that does not restore.
async fn check_artifacts(
    sides: &Sides,
    layout: &Layout,
    manifest: &Manifest,
) -> anyhow::Result<()> {
    for (kind, artifact) in manifest.artifacts.iter() {
        let target = match kind {
            ArtifactKind::Snapshot => &sides.snapshot,
            ArtifactKind::StaticResources => &sides.static_resources,
        };
        let key = layout.artifact(&manifest.id, kind);
        let found = target.head(&key).await?;
        let problem = match found {
            None => "is gone".to_string(),
            Some(o) if o.size != artifact.stored.size => format!(
                "holds {} bytes, not the {} just written",
                o.size, artifact.stored.size
            ),
            Some(_) => continue,
        };
        return Err(anyhow!(
            "backup {} is not committed: its {} {}/{key} {problem} (removed or replaced while this run wrote it; a prune from a host whose clock is wrong?)",
            manifest.id,
            kind.as_str(),
            target.url()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{Fault, FaultyStore, Op};
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 46, 49).unwrap()
    }

    #[tokio::test]
    async fn claim_takes_the_next_free_second_suffix_and_recognises_its_own_retry() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        let layout = Layout::new("c");
        assert_eq!(
            claim(&target, &layout, at()).await.unwrap().id,
            "20261123T104649Z"
        );
        assert_eq!(
            claim(&target, &layout, at()).await.unwrap().id,
            "20261123T104649Z-01"
        );
        store.inject(Op::Put, 1, Fault::SucceedButFail);
        assert_eq!(
            claim(&target, &layout, at()).await.unwrap().id,
            "20261123T104649Z-02"
        );
        store.inject(Op::Put, 1, Fault::Fail);
        store.inject(Op::Get, 1, Fault::Fail);
        assert!(claim(&target, &layout, at()).await.is_err());
    }

    #[tokio::test]
    async fn commit_outcomes_are_committed_taken_failed_or_unknown() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        write_once(&target, "c/1/manifest.json", Bytes::from("a"))
            .await
            .unwrap();
        // The same body again (a retried request that had landed): committed.
        write_once(&target, "c/1/manifest.json", Bytes::from("a"))
            .await
            .unwrap();
        assert!(matches!(
            write_once(&target, "c/1/manifest.json", Bytes::from("b")).await,
            Err(CommitError::Taken(_))
        ));
        store.inject(Op::Put, 1, Fault::SucceedButFail);
        write_once(&target, "c/2/manifest.json", Bytes::from("x"))
            .await
            .unwrap();
        store.inject(Op::Put, 1, Fault::SucceedButFail);
        store.inject(Op::Get, 1, Fault::Fail);
        assert!(matches!(
            write_once(&target, "c/3/manifest.json", Bytes::from("y")).await,
            Err(CommitError::Unknown(_))
        ));
        store.inject(Op::Put, 1, Fault::Fail);
        store.inject(Op::Get, 1, Fault::Fail);
        assert!(matches!(
            write_once(&target, "c/4/manifest.json", Bytes::from("z")).await,
            Err(CommitError::Unknown(_))
        ));
        // A write that failed (a full disk) and a manifest that is not there: not committed.
        store.inject(Op::Put, 1, Fault::Fail);
        assert!(matches!(
            write_once(&target, "c/5/manifest.json", Bytes::from("w")).await,
            Err(CommitError::Failed(_))
        ));
        assert!(store.keys().await.iter().all(|k| !k.starts_with("c/5/")));
    }
}
