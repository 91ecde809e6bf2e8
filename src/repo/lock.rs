//! The per-cluster backup lock, so that runs from several control-plane hosts produce one
//! backup, built from create-only writes alone.
//!
//! The lock is a series of generations, `<cluster>/lock/<n>` (n zero-padded, so names sort
//! as numbers), each a small JSON record written create-only; the highest generation is
//! the lock's state. Taking the lock, renewing it, breaking a dead holder's lock and
//! releasing it all mean creating generation n+1 after reading generation n: of several
//! hosts doing so at once exactly one create succeeds, on every store that refuses a
//! second create of one key (local files, S3, GCS, Azure). No step needs an overwrite, a
//! conditional update or a delete, so the lock also works on stores that refuse deletes
//! (object lock, retention policies, immutable files); older generations are deleted
//! where the store allows it, best effort.
//!
//! A holder renews every third of `lock_stale_after` by writing the next generation; a
//! held generation older than that belongs to a dead or cut-off run and is broken. Ages
//! are the store's: the generation's modification time against the store's now, as this
//! run measured it ([`StoreClock`]), so a host whose clock is wrong never breaks a live
//! run's lock. A holder on this host that is provably gone (same host
//! name, boot id and pid namespace, and its pid no longer runs the process that wrote
//! the record) is broken at once. A holder that finds the next generation written by
//! someone else has lost the lock and must not commit.
//!
//! Records are untrusted input: one above the small-object cap, with a `stale_after_secs`
//! beyond [`MAX_STALE_AFTER`], or otherwise garbled counts as unreadable (held until it is
//! stale by its modification time, then broken); generation numbers from
//! [`MAX_GENERATION`] on are not this lock's and are ignored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::clock::StoreClock;
use super::layout::Layout;
use crate::error::{Refusal, Refused};
use crate::ids::hostname;
use crate::store::{StoreError, StoreErrorKind, StoredObject, Target};

/// The longest `lock_stale_after` a record may promise, and the config may set: a lock
/// that a dead run holds for more than a day stops a day of backups.
pub use crate::config::MAX_LOCK_STALE_AFTER as MAX_STALE_AFTER;

/// Generations at or beyond this are not this lock's (at one generation a minute, two
/// billion years away): a planted huge number could not be followed by another.
pub const MAX_GENERATION: u64 = 999_999_999_999_999;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LockState {
    Held,
    Free,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockRecord {
    state: LockState,
    host: String,
    #[serde(default)]
    boot_id: String,
    /// Inode of the writer's pid namespace: pids only mean something within one.
    #[serde(default)]
    pid_ns: u64,
    pid: u32,
    /// The writer's start time (clock ticks since boot), which tells a reused pid apart.
    #[serde(default)]
    pid_start: u64,
    /// One per run: tells this run's generations from any other's.
    token: u64,
    acquired_at: DateTime<Utc>,
    written_at: DateTime<Utc>,
    /// The holder renews well within this; other hosts wait at least this long.
    stale_after_secs: u64,
}

/// Who this process is, as far as telling a dead holder on this host goes.
#[derive(Debug, Clone, Default)]
struct ProcessIdentity {
    host: String,
    boot_id: String,
    pid_ns: u64,
    pid: u32,
    pid_start: u64,
}

impl ProcessIdentity {
    fn current() -> Self {
        use std::os::unix::fs::MetadataExt;
        let pid = std::process::id();
        Self {
            host: hostname(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            pid_ns: std::fs::metadata("/proc/self/ns/pid")
                .map(|m| m.ino())
                .unwrap_or(0),
            pid,
            pid_start: process_start(pid).unwrap_or(0),
        }
    }

    /// True only when the record's writer ran on this host, in this boot and pid
    /// namespace, and that process is gone (its pid is free or runs another process).
    fn proves_dead(&self, record: &LockRecord) -> bool {
        let same_place = !self.boot_id.is_empty()
            && record.host == self.host
            && record.boot_id == self.boot_id
            && self.pid_ns != 0
            && record.pid_ns == self.pid_ns;
        if !same_place || record.pid == self.pid {
            return false;
        }
        match process_start(record.pid) {
            None => true,
            Some(start) => record.pid_start != 0 && start != record.pid_start,
        }
    }
}

/// Start time of a running process, from `/proc/<pid>/stat` (field 22); None when it is gone.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The lock's generations among listed objects, lowest first; numbers from
/// [`MAX_GENERATION`] on are ignored with a warning.
fn generations_in(listed: &[StoredObject], layout: &Layout) -> Vec<(u64, StoredObject)> {
    let mut found: Vec<(u64, StoredObject)> = listed
        .iter()
        .filter_map(|o| Some((layout.generation_of(&o.key)?, o.clone())))
        .filter(|(generation, o)| {
            let ours = *generation < MAX_GENERATION;
            if !ours {
                tracing::warn!(lock = %o.key, "ignored: a lock generation this high was not written by etcd-offsite");
            }
            ours
        })
        .collect();
    found.sort_by_key(|(generation, _)| *generation);
    found
}

/// The lock's generations, lowest first.
async fn generations(
    target: &Target,
    layout: &Layout,
) -> Result<Vec<(u64, StoredObject)>, StoreError> {
    let listed = target.list(&layout.lock_dir()).await?;
    Ok(generations_in(&listed, layout))
}

/// A record, or why it is unusable (`Ok(Err(reason))`): garbled, too large, or with a
/// promise to renew that no run makes.
async fn read_record(target: &Target, key: &str) -> Result<Result<LockRecord, String>, StoreError> {
    let bytes = match target.read(key).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind == StoreErrorKind::TooLarge => return Ok(Err(e.reason)),
        Err(e) => return Err(e),
    };
    Ok(serde_json::from_slice::<LockRecord>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|record| {
            if record.stale_after_secs > MAX_STALE_AFTER.as_secs() {
                Err(format!(
                    "stale_after_secs {} is beyond the {} that any run promises",
                    record.stale_after_secs,
                    humantime::format_duration(MAX_STALE_AFTER)
                ))
            } else {
                Ok(record)
            }
        }))
}

enum Created {
    Ours,
    Theirs,
}

/// Creates a generation; an "exists" answer or an error after which the stored record is
/// this run's (a retried request that had landed) counts as created.
async fn create_generation(
    target: &Target,
    key: &str,
    record: &LockRecord,
) -> Result<Created, StoreError> {
    let body = serde_json::to_vec(record).map_err(|e| StoreError {
        kind: StoreErrorKind::Other,
        op: "create",
        location: format!("{}/{key}", target.url()),
        reason: format!("the lock record does not serialize: {e}"),
    })?;
    let written = target.create(key, Bytes::from(body)).await;
    if matches!(written, Ok(true)) {
        return Ok(Created::Ours);
    }
    match read_record(target, key).await {
        Ok(Ok(stored)) if stored.token == record.token => Ok(Created::Ours),
        Ok(_) => Ok(Created::Theirs),
        Err(read) => match written {
            Err(e) => Err(e),
            Ok(_) if read.kind == StoreErrorKind::NotFound => Ok(Created::Theirs),
            Ok(_) => Err(read),
        },
    }
}

/// Deletes generations below `keep`, best effort (a store may refuse deletes).
async fn delete_below(target: &Target, layout: &Layout, keep: u64, known: &[u64]) {
    for generation in known.iter().filter(|g| **g < keep) {
        if let Err(e) = target.delete(&layout.lock_generation(*generation)).await {
            tracing::debug!(error = %e, "an old lock generation stays (the store keeps it)");
        }
    }
}

struct Shared {
    generation: AtomicU64,
    lost: AtomicBool,
    stop: tokio::sync::Notify,
}

/// A held lock, renewed in the background; call [`BackupLock::release`] when done.
#[must_use = "a lock must be released"]
pub struct BackupLock {
    target: Target,
    layout: Layout,
    record: LockRecord,
    shared: Arc<Shared>,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

/// Takes the lock of the layout's cluster in `target`, breaking a stale or provably dead
/// holder's (stale by the store's `clock`). A live holder is a [`Refused`] error; store
/// failures are [`StoreError`]s.
pub async fn acquire(
    target: &Target,
    layout: &Layout,
    stale_after: Duration,
    clock: &StoreClock,
) -> anyhow::Result<BackupLock> {
    let stale_after = stale_after.min(MAX_STALE_AFTER);
    let me = ProcessIdentity::current();
    let now = Utc::now();
    let mut record = LockRecord {
        state: LockState::Held,
        host: me.host.clone(),
        boot_id: me.boot_id.clone(),
        pid_ns: me.pid_ns,
        pid: me.pid,
        pid_start: me.pid_start,
        token: rand::random::<u64>(),
        acquired_at: now,
        written_at: now,
        stale_after_secs: stale_after.as_secs().max(1),
    };
    for _ in 0..3 {
        let known = generations(target, layout).await?;
        let next = match known.last() {
            None => 1,
            Some((generation, object)) => {
                match judge(target, &me, object, stale_after, clock).await? {
                    Judgement::Free => generation + 1,
                    Judgement::Gone => continue,
                    Judgement::Held(why) => {
                        return Err(Refused::new(
                            Refusal::LockHeld,
                            format!(
                                "backup lock {}/{} {why}: another run is taking this backup",
                                target.url(),
                                object.key
                            ),
                        )
                        .into());
                    }
                }
            }
        };
        record.written_at = Utc::now();
        if let Created::Ours =
            create_generation(target, &layout.lock_generation(next), &record).await?
        {
            let known: Vec<u64> = known.iter().map(|(g, _)| *g).collect();
            delete_below(target, layout, next, &known).await;
            return Ok(BackupLock::start(
                target.clone(),
                layout.clone(),
                record,
                next,
                stale_after,
            ));
        }
        // Another run created that generation first: judge it like any other.
    }
    Err(Refused::new(
        Refusal::LockHeld,
        format!(
            "backup lock {}/{} is contended: other runs took it while this one tried; try again",
            target.url(),
            layout.lock_dir()
        ),
    )
    .into())
}

enum Judgement {
    /// Released, stale, unreadable for long enough, or its holder provably died.
    Free,
    /// Vanished while read (deleted by hand or by a holder cleaning up): look again.
    Gone,
    /// Held by a live run: why it counts as held, for the refusal.
    Held(String),
}

async fn judge(
    target: &Target,
    me: &ProcessIdentity,
    object: &StoredObject,
    stale_after: Duration,
    clock: &StoreClock,
) -> Result<Judgement, StoreError> {
    let age = clock.now() - object.last_modified;
    let record = match read_record(target, &object.key).await {
        Ok(record) => record,
        Err(e) if e.kind == StoreErrorKind::NotFound => return Ok(Judgement::Gone),
        Err(e) => return Err(e),
    };
    let record = match record {
        Ok(record) => record,
        Err(reason) => {
            let wait = delta(stale_after);
            return Ok(if age > wait {
                tracing::warn!(lock = %object.key, %reason, "breaking an unreadable backup lock record");
                Judgement::Free
            } else {
                Judgement::Held(format!(
                    "is unreadable ({reason}); it counts as held until {}",
                    later(object.last_modified, wait)
                ))
            });
        }
    };
    if record.state == LockState::Free {
        return Ok(Judgement::Free);
    }
    if me.proves_dead(&record) {
        tracing::warn!(lock = %object.key, pid = record.pid, "breaking the backup lock of a run on this host that no longer exists");
        return Ok(Judgement::Free);
    }
    // The holder promised to renew within its own stale_after: wait for the longer one.
    let wait = delta(stale_after.max(Duration::from_secs(record.stale_after_secs)));
    if age > wait {
        tracing::warn!(lock = %object.key, host = %record.host, pid = record.pid, last_renewed = %object.last_modified.to_rfc3339(), "breaking a backup lock that was not renewed in time");
        return Ok(Judgement::Free);
    }
    Ok(Judgement::Held(format!(
        "is held by {} (pid {}) since {}, last renewed {}; if that run died, the lock is broken from {} on",
        record.host,
        record.pid,
        record.acquired_at.to_rfc3339(),
        object.last_modified.to_rfc3339(),
        later(object.last_modified, wait)
    )))
}

fn delta(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// `at + wait` in words, without overflowing.
fn later(at: DateTime<Utc>, wait: chrono::TimeDelta) -> String {
    at.checked_add_signed(wait)
        .map_or_else(|| "never".to_string(), |t| t.to_rfc3339())
}

/// Who holds the lock right now, if a live run does, from a listing the caller already
/// has (of the cluster or of its lock).
pub async fn holder_in(
    target: &Target,
    layout: &Layout,
    listed: &[StoredObject],
    stale_after: Duration,
    clock: &StoreClock,
) -> Result<Option<String>, StoreError> {
    let me = ProcessIdentity::current();
    let known = generations_in(listed, layout);
    let Some((_, object)) = known.last() else {
        return Ok(None);
    };
    let record = match read_record(target, &object.key).await {
        Ok(Ok(record)) => record,
        Ok(Err(_)) => return Ok(None),
        Err(e) if e.kind == StoreErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(
        match judge(target, &me, object, stale_after.min(MAX_STALE_AFTER), clock).await? {
            Judgement::Held(_) => Some(format!("{} (pid {})", record.host, record.pid)),
            Judgement::Free | Judgement::Gone => None,
        },
    )
}

impl BackupLock {
    fn start(
        target: Target,
        layout: Layout,
        record: LockRecord,
        generation: u64,
        stale_after: Duration,
    ) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(generation),
            lost: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
        });
        let renewal = tokio::spawn(renew(
            target.clone(),
            layout.clone(),
            record.clone(),
            Arc::clone(&shared),
            stale_after / 3,
        ));
        Self {
            target,
            layout,
            record,
            shared,
            renewal: Some(renewal),
        }
    }

    /// The generation this run holds now.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::SeqCst)
    }

    /// Fails when another run has taken the lock over (this run could not renew in
    /// time): checked right before the commit, so such a run never commits.
    pub async fn ensure_held(&self) -> anyhow::Result<()> {
        let lost = || {
            anyhow::anyhow!(
                "the backup lock {}/{} was taken over by another run (this run could not renew it in time); this run is abandoned without a commit",
                self.target.url(),
                self.layout.lock_dir()
            )
        };
        if self.shared.lost.load(Ordering::SeqCst) {
            return Err(lost());
        }
        let known = generations(&self.target, &self.layout).await?;
        match known.last() {
            Some((generation, _)) if *generation > self.generation() => {
                let key = self.layout.lock_generation(*generation);
                match read_record(&self.target, &key).await? {
                    Ok(r) if r.token == self.record.token => Ok(()),
                    _ => Err(lost()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Stops renewing and writes a released generation (deleting older ones where allowed).
    pub async fn release(mut self) {
        self.shared.stop.notify_one();
        if let Some(renewal) = self.renewal.take() {
            let _ = renewal.await;
        }
        if self.shared.lost.load(Ordering::SeqCst) {
            return;
        }
        let current = self.generation();
        let mut record = self.record.clone();
        record.state = LockState::Free;
        record.written_at = Utc::now();
        let Some(next) = current.checked_add(1).filter(|n| *n < MAX_GENERATION) else {
            tracing::warn!(
                "the backup lock is at its last generation; other runs break it once it is stale"
            );
            return;
        };
        match create_generation(&self.target, &self.layout.lock_generation(next), &record).await {
            Ok(Created::Ours) => delete_below(&self.target, &self.layout, next, &[current]).await,
            Ok(Created::Theirs) => {
                tracing::warn!("the backup lock is no longer ours (taken over?); left alone")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not release the backup lock; other runs break it once it is stale")
            }
        }
    }
}

impl Drop for BackupLock {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

async fn renew(
    target: Target,
    layout: Layout,
    mut record: LockRecord,
    shared: Arc<Shared>,
    interval: Duration,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shared.stop.notified() => return,
        }
        let current = shared.generation.load(Ordering::SeqCst);
        record.written_at = Utc::now();
        let Some(next) = current.checked_add(1).filter(|n| *n < MAX_GENERATION) else {
            tracing::error!(
                "the backup lock is at its last generation and cannot be renewed; this run will not commit"
            );
            shared.lost.store(true, Ordering::SeqCst);
            return;
        };
        match create_generation(&target, &layout.lock_generation(next), &record).await {
            Ok(Created::Ours) => {
                shared.generation.store(next, Ordering::SeqCst);
                delete_below(&target, &layout, next, &[current]).await;
            }
            Ok(Created::Theirs) => {
                tracing::error!(lock = %layout.lock_generation(next), "another run took the backup lock over; this run will not commit");
                shared.lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the backup lock; trying again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{Fault, FaultyStore, Op};

    const C: &str = "c";

    fn layout() -> Layout {
        Layout::new(C)
    }

    fn generation_key(_cluster: &str, generation: u64) -> String {
        layout().lock_generation(generation)
    }

    async fn take(target: &Target, stale_after: Duration) -> anyhow::Result<BackupLock> {
        acquire(target, &layout(), stale_after, &StoreClock::agreeing()).await
    }

    /// Who holds the lock, judged from a fresh listing.
    async fn holder(
        target: &Target,
        _cluster: &str,
        stale_after: Duration,
    ) -> Result<Option<String>, StoreError> {
        let listed = target.list(&layout().lock_dir()).await?;
        holder_in(
            target,
            &layout(),
            &listed,
            stale_after,
            &StoreClock::agreeing(),
        )
        .await
    }

    fn forged(token: u64, host: &str, pid: u32) -> LockRecord {
        let me = ProcessIdentity::current();
        LockRecord {
            state: LockState::Held,
            host: host.to_string(),
            boot_id: me.boot_id,
            pid_ns: me.pid_ns,
            pid,
            pid_start: 1,
            token,
            acquired_at: Utc::now(),
            written_at: Utc::now(),
            stale_after_secs: 1,
        }
    }

    async fn put(target: &Target, generation: u64, record: &LockRecord) {
        let body = Bytes::from(serde_json::to_vec(record).unwrap());
        assert!(
            target
                .create(&generation_key(C, generation), body)
                .await
                .unwrap()
        );
    }

    fn refused(err: &anyhow::Error) -> bool {
        err.chain().any(|e| e.is::<Refused>())
    }

    #[tokio::test]
    async fn take_release_take_leaves_one_free_generation() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        let lock = take(&target, Duration::from_secs(60)).await.unwrap();
        let err = take(&target, Duration::from_secs(60)).await.err().unwrap();
        assert!(refused(&err), "{err:#}");
        lock.release().await;
        assert_eq!(store.keys().await, [generation_key(C, 2)]);
        let again = take(&target, Duration::from_secs(60)).await.unwrap();
        assert_eq!(again.generation(), 3);
        again.release().await;
        assert_eq!(store.keys().await, [generation_key(C, 4)]);
    }

    #[tokio::test]
    async fn a_live_holder_elsewhere_refuses_and_a_stale_one_is_broken() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        put(&target, 7, &forged(1, "other-host", 1)).await;
        let err = take(&target, Duration::from_secs(1)).await.err().unwrap();
        assert!(
            refused(&err) && format!("{err:#}").contains("other-host"),
            "{err:#}"
        );
        assert!(
            holder(&target, C, Duration::from_secs(1))
                .await
                .unwrap()
                .is_some()
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            holder(&target, C, Duration::from_secs(1))
                .await
                .unwrap()
                .is_none()
        );
        let lock = take(&target, Duration::from_secs(1)).await.unwrap();
        assert_eq!(lock.generation(), 8);
        lock.release().await;
    }

    #[tokio::test]
    async fn a_dead_holder_on_this_host_is_broken_at_once() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let mut record = forged(1, &hostname(), dead_pid);
        record.stale_after_secs = 3600;
        put(&target, 1, &record).await;
        let lock = take(&target, Duration::from_secs(3600)).await.unwrap();
        assert_eq!(lock.generation(), 2);
        lock.release().await;

        // A live process of this host (this one's parent) is not provably dead.
        let mut record = forged(2, &hostname(), std::os::unix::process::parent_id());
        record.pid_start = process_start(record.pid).unwrap();
        record.stale_after_secs = 3600;
        put(&target, 4, &record).await;
        let err = take(&target, Duration::from_secs(3600))
            .await
            .err()
            .unwrap();
        assert!(refused(&err), "{err:#}");
    }

    #[tokio::test]
    async fn a_retried_create_that_landed_is_recognised_as_ours() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        store.inject(Op::Put, 1, Fault::SucceedButFail);
        let lock = take(&target, Duration::from_secs(60)).await.unwrap();
        assert_eq!(lock.generation(), 1);
        lock.ensure_held().await.unwrap();
        lock.release().await;
    }

    #[tokio::test]
    async fn racers_breaking_a_stale_lock_get_exactly_one_winner() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        put(&target, 3, &forged(1, "crashed-host", 1)).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let stale = Duration::from_secs(1);
        let (a, b, c) = tokio::join!(
            take(&target, stale),
            take(&target, stale),
            take(&target, stale)
        );
        let results = [a, b, c];
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1);
        for r in &results {
            if let Err(e) = r {
                assert!(refused(e), "{e:#}");
            }
        }
        for r in results.into_iter().flatten() {
            r.release().await;
        }
    }

    #[tokio::test]
    async fn a_holder_renews_and_notices_a_takeover() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        let stale = Duration::from_millis(600);
        let lock = take(&target, stale).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(lock.generation() >= 3, "renewed: {}", lock.generation());
        // Renewed: not stale for others even though it was taken long ago.
        assert!(take(&target, stale).await.is_err());
        lock.ensure_held().await.unwrap();
        // Another run writes a later generation (as after missed renewals).
        let later = lock.generation() + 5;
        put(&target, later, &forged(9, "other-host", 1)).await;
        assert!(lock.ensure_held().await.is_err());
        lock.release().await;
        assert!(store.keys().await.contains(&generation_key(C, later)));
    }

    #[tokio::test]
    async fn a_store_that_refuses_deletes_still_locks_and_releases() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        for _ in 0..20 {
            store.inject(Op::Delete, 1, Fault::Refuse);
        }
        store.keep_deleted(true);
        for round in 0..3u64 {
            let lock = take(&target, Duration::from_secs(60)).await.unwrap();
            assert_eq!(lock.generation(), round * 2 + 1);
            lock.release().await;
        }
        assert_eq!(store.keys().await.len(), 6, "nothing could be deleted");
    }

    /// Records with extreme values are garbled (held until stale by their time, then
    /// broken), huge generations are ignored: never a panic, never a wrap.
    #[tokio::test]
    async fn extreme_lock_records_are_bounded() {
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        let mut record = forged(1, "other-host", 1);
        record.stale_after_secs = u64::MAX;
        put(&target, 5, &record).await;
        let err = take(&target, Duration::from_secs(1)).await.err().unwrap();
        assert!(
            refused(&err) && format!("{err:#}").contains("stale_after_secs"),
            "{err:#}"
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let lock = take(&target, Duration::from_secs(1)).await.unwrap();
        assert_eq!(lock.generation(), 6);
        lock.release().await;

        // u64::MAX and the cap itself are not this lock's: ignored, the lock goes on.
        put(&target, u64::MAX, &forged(2, "other-host", 1)).await;
        put(&target, MAX_GENERATION, &forged(3, "other-host", 1)).await;
        let lock = take(&target, Duration::from_secs(60)).await.unwrap();
        assert_eq!(lock.generation(), 8);
        lock.ensure_held().await.unwrap();
        lock.release().await;

        // An oversized record is a garbled one, not a failure of every run.
        let big = Bytes::from(vec![b' '; (crate::store::SMALL_OBJECT_CAP + 1) as usize]);
        assert!(target.create(&generation_key(C, 20), big).await.unwrap());
        let err = take(&target, Duration::from_secs(1)).await.err().unwrap();
        assert!(refused(&err), "{err:#}");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let lock = take(&target, Duration::from_secs(1)).await.unwrap();
        assert_eq!(lock.generation(), 21);
        lock.release().await;
    }
}
