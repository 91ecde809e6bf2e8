//! A per-cluster lock object so that runs from several control-plane hosts produce one backup.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::layout::LOCK_OBJECT;
use super::{StoreError, StoreErrorKind, Target};
use crate::error::Refused;

/// A lock older than this is taken to belong to a crashed run and is broken.
pub const LOCK_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(2);

#[derive(Debug, Serialize, Deserialize)]
struct LockRecord {
    host: String,
    pid: u32,
    /// Tells this run's lock from a later one, so a release never deletes another's.
    #[serde(default)]
    token: u64,
    acquired_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// A held lock; call [`BackupLock::release`] when done (a lost lock expires after [`LOCK_TTL`]).
#[must_use = "a lock must be released"]
pub struct BackupLock {
    target: Target,
    key: String,
    token: u64,
}

/// Takes the lock of `cluster` in `target`, breaking an expired one.
/// A lock held by another run is a [`Refused`] error; store failures are [`StoreError`]s.
pub async fn acquire(target: &Target, cluster: &str) -> anyhow::Result<BackupLock> {
    let key = format!("{cluster}/{LOCK_OBJECT}");
    for _ in 0..2 {
        let now = Utc::now();
        let token = rand::random::<u64>();
        let record = LockRecord {
            host: hostname(),
            pid: std::process::id(),
            token,
            acquired_at: now,
            expires_at: now + LOCK_TTL,
        };
        let body = serde_json::to_vec(&record).expect("lock record serializes");
        if target.create(&key, Bytes::from(body)).await? {
            return Ok(BackupLock {
                target: target.clone(),
                key,
                token,
            });
        }
        let holder = match target.read(&key).await {
            Ok(bytes) => serde_json::from_slice::<LockRecord>(&bytes).ok(),
            Err(e) if e.kind == StoreErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        match holder {
            Some(h) if h.expires_at > Utc::now() => {
                return Err(Refused(format!(
                    "backup lock {}/{key} is held by {} (pid {}) since {}: another host is taking this backup. If that run died, the lock expires at {} or can be deleted by hand",
                    target.url(),
                    h.host,
                    h.pid,
                    h.acquired_at.to_rfc3339(),
                    h.expires_at.to_rfc3339()
                ))
                .into());
            }
            stale => {
                tracing::warn!(lock = %key, holder = ?stale.map(|h| h.host), "breaking an expired or unreadable backup lock");
                target.delete(&key).await?;
            }
        }
    }
    Err(Refused(format!("backup lock {key} is contended; try again")).into())
}

/// Who holds the unexpired lock of `cluster`, if anyone.
pub async fn holder(target: &Target, cluster: &str) -> Result<Option<String>, StoreError> {
    match target.read(&format!("{cluster}/{LOCK_OBJECT}")).await {
        Ok(bytes) => Ok(serde_json::from_slice::<LockRecord>(&bytes)
            .ok()
            .filter(|r| r.expires_at > Utc::now())
            .map(|r| format!("{} (pid {})", r.host, r.pid))),
        Err(e) if e.kind == StoreErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl BackupLock {
    pub async fn release(self) {
        // After an expiry another run may hold the lock now: only ours is deleted.
        let ours = match self.target.read(&self.key).await {
            Ok(bytes) => {
                serde_json::from_slice::<LockRecord>(&bytes).is_ok_and(|r| r.token == self.token)
            }
            Err(_) => false,
        };
        if !ours {
            tracing::warn!(lock = %self.key, "the backup lock is no longer ours (expired and taken over?); left alone");
            return;
        }
        if let Err(e) = self.target.delete(&self.key).await {
            tracing::warn!(error = %e, "could not release the backup lock; it expires by itself");
        }
    }
}

/// This host's name, for lock and progress records.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
