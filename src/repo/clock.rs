//! The host's clock against the store's. Decisions by time (prune's windows, breaking a
//! lock, skip checks, freshness) are only as good as the clock they use: a host a day
//! ahead would prune what it should keep and break a live backup's lock.
//!
//! A run that decides by time writes a small object and reads back the modification time
//! the store gave it (on file://, the kernel's, on NFS the server's). When that time is
//! outside the moments just before and after the write by more than [`TOLERANCE`], the
//! clocks are apart and the run is refused (exit 4), naming both. A reader that must not
//! write (`status` with read-only credentials) can still tell a host clock that is behind:
//! no object can have been modified after the store's now.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};

use super::layout::Layout;
use crate::error::{Refusal, Refused};
use crate::store::{StoreError, Target};

/// How far the host's clock and the store's may differ. NTP keeps hosts within
/// milliseconds; S3 itself refuses requests signed more than 15 minutes off, and Kerberos
/// allows 5 minutes. Five minutes is far above honest drift and far below any retention
/// window, lock timeout or freshness limit that matters.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// A start time beyond the store's now plus [`TOLERANCE`] is future-dated.
pub fn tolerance() -> TimeDelta {
    TimeDelta::from_std(TOLERANCE).unwrap_or(TimeDelta::MAX)
}

/// The store's time as measured by a write of this run, and the host's around it.
#[derive(Debug, Clone, Copy)]
pub struct StoreClock {
    /// The store's time minus the host's (positive: the host is behind).
    offset: TimeDelta,
}

impl StoreClock {
    /// The store's time now, as the host's clock plus the measured offset: what ages of
    /// stored objects (lock generations) are judged by.
    pub fn now(&self) -> DateTime<Utc> {
        let host = Utc::now();
        host.checked_add_signed(self.offset).unwrap_or(host)
    }

    /// A clock that agrees with the host (unit tests over an in-memory store).
    #[cfg(test)]
    pub fn agreeing() -> Self {
        Self {
            offset: TimeDelta::zero(),
        }
    }
}

/// Writes a probe object, reads its modification time back and removes it (best effort:
/// a store that keeps deleted objects keeps one small probe per run).
pub async fn measure(target: &Target, layout: &Layout) -> anyhow::Result<StoreClock> {
    let key = layout.clock_probe(rand::random::<u64>());
    let before = Utc::now();
    target
        .create(&key, Bytes::from_static(b"etcd-offsite clock probe\n"))
        .await?;
    let after = Utc::now();
    let stored = target.head(&key).await;
    if let Err(e) = target.delete(&key).await {
        tracing::debug!(error = %e, "the clock probe stays (the store keeps it)");
    }
    let Some(stored) = stored? else {
        return Err(StoreError {
            kind: crate::store::StoreErrorKind::NotFound,
            op: "head",
            location: format!("{}/{key}", target.url()),
            reason: "the clock probe just written is not there".into(),
        }
        .into());
    };
    judge(target.url(), before, after, stored.last_modified)
}

/// The clocks agree when the store stamped the probe between `before` and `after` (the
/// host's times around the write), give or take [`TOLERANCE`].
fn judge(
    url: &str,
    before: DateTime<Utc>,
    after: DateTime<Utc>,
    stored: DateTime<Utc>,
) -> anyhow::Result<StoreClock> {
    let tolerance = tolerance();
    let apart = stored < before - tolerance || stored > after + tolerance;
    let middle = before + (after - before) / 2;
    if apart {
        return Err(clocks_apart(url, after, stored, stored - middle).into());
    }
    Ok(StoreClock {
        offset: stored - middle,
    })
}

/// A reader's check without writing: no object in `newest_modified` (the newest
/// modification time in a listing) can be later than the store's now, so a host clock
/// behind it by more than [`TOLERANCE`] is wrong. A host clock ahead is not seen this way;
/// it only makes backups look older than they are.
pub fn check_not_behind(url: &str, newest_modified: Option<DateTime<Utc>>) -> Result<(), Refused> {
    let now = Utc::now();
    match newest_modified {
        Some(modified) if modified > now + tolerance() => {
            Err(clocks_apart(url, now, modified, modified - now))
        }
        _ => Ok(()),
    }
}

fn clocks_apart(
    url: &str,
    host: DateTime<Utc>,
    store: DateTime<Utc>,
    offset: TimeDelta,
) -> Refused {
    let secs = (offset.num_milliseconds().unsigned_abs() + 500) / 1000;
    let apart = humantime::format_duration(Duration::from_secs(secs));
    Refused::new(
        Refusal::ClocksApart,
        format!(
            "this host's clock says {}, the store {url} says {}: they are {apart} apart, more than the {} tolerance, and decisions by time (retention windows, breaking a lock, skip checks, freshness) would be wrong; set this host's time right (chrony or NTP) and run again",
            host.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            store.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            humantime::format_duration(TOLERANCE)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::refusal;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn clocks_within_the_tolerance_agree_and_others_are_refused() {
        let before = at("2026-11-23T10:00:00Z");
        let after = at("2026-11-23T10:00:01Z");
        let clock = judge("mem://t", before, after, at("2026-11-23T10:04:00Z")).unwrap();
        assert!(clock.offset > TimeDelta::minutes(3));
        judge("mem://t", before, after, at("2026-11-23T09:56:00Z")).unwrap();
        for store in ["2026-11-25T10:00:00Z", "2026-11-21T10:00:00Z"] {
            let err = judge("mem://t", before, after, at(store)).unwrap_err();
            assert_eq!(refusal(&err), Some(Refusal::ClocksApart));
            let text = err.to_string();
            assert!(
                text.contains("2026-11-23T10:00:01Z") && text.contains(&store[..19]),
                "{text}"
            );
            assert!(text.contains("2days"), "{text}");
        }
    }

    #[test]
    fn a_reader_sees_a_clock_behind_the_newest_object() {
        check_not_behind("mem://t", None).unwrap();
        check_not_behind("mem://t", Some(Utc::now())).unwrap();
        let err = check_not_behind("mem://t", Some(Utc::now() + TimeDelta::hours(48))).unwrap_err();
        assert_eq!(err.cause, Refusal::ClocksApart);
    }

    #[tokio::test]
    async fn a_probe_measures_the_store_and_leaves_nothing() {
        let store = crate::store::testing::FaultyStore::new();
        let target = store.target("mem://t");
        let clock = measure(&target, &Layout::new("c")).await.unwrap();
        assert!(clock.offset.num_seconds().abs() < 5);
        assert!(store.keys().await.is_empty());
    }
}
