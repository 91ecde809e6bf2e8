//! Retention: which complete backups to keep and which to delete, and why.
//!
//! [`decide`] is a pure function of the backups, the policy and the current time (no I/O,
//! no clock reads), modelled on rustic_core's `KeepOptions`. Its rules, in order:
//!
//! 1. **Order.** Input may come in any order. Output is newest first, sorted by
//!    `(created_at desc, id desc)`; ids (`YYYYMMDDTHHMMSSZ`, `-NN` suffix for a second
//!    backup in the same second) sort as strings in time order, so the id breaks ties.
//! 2. **What is not counted.** A backup that is not trusted (`trusted: false`: with
//!    `signing.allowed_signers`, one no listed key signed) is kept with
//!    [`KeepReason::Untrusted`], and one created after `now` (a host whose clock was
//!    ahead, or planted) with [`KeepReason::FutureTimestamp`], and nothing else: neither
//!    is ever deleted, and no rule, cap or `min_keep` counts it, so planted or
//!    future-dated backups can push no real one out. The rules below see the others.
//! 3. **Keep rules** (restic/rustic semantics) over the counted backups, newest to oldest. A
//!    backup is kept iff at least one rule matches, and lists every rule that matched:
//!    - `keep_last: N`: the N newest.
//!    - `keep_hourly`/`keep_daily`/`keep_weekly`/`keep_monthly`/`keep_yearly: N`: the
//!      newest backup of each distinct UTC hour/day/ISO week/month/year, until N distinct
//!      periods have been kept. ISO weeks belong to their ISO year, so 2020-12-31 and
//!      2021-01-01 share week 2020-W53.
//!    - `keep_within: D`: `created_at >= now - D`.
//!    - `keep_drilled: N`: the N newest backups with a successful drill (`drilled`), the
//!      proof that a backup restores. It protects, and is not a rule of its own: a policy
//!      with only `keep_drilled` still counts as having no rule.
//!
//!    A policy with no `keep_*` rule and no `keep_within` keeps every backup with
//!    [`KeepReason::NoRules`]; the caps below still apply. The others are deleted with
//!    [`DeleteReason::NoRuleMatched`].
//! 4. **Newest.** The newest counted backup (the one a run has just written) gets
//!    [`KeepReason::Newest`] appended to its reasons and is kept whatever any rule or cap
//!    says: CoreOS etcd-operator once deleted the backup it had just taken. If none is
//!    counted, none gets `Newest` (all are kept anyway).
//! 5. **Caps**, over the kept backups newest first: `max_count: N` keeps at most N;
//!    `max_total_size: S` keeps the newest backups whose sizes add up to at most S (exactly
//!    S fits). The first backup that would break a cap (count checked before size) and
//!    every older kept backup are deleted with that cap's reason, even when a smaller
//!    older one would still fit. The `Newest` backup and those kept by `keep_drilled` count
//!    towards the caps but are never removed by them (deleting the proof would leave
//!    `status --max-drill-age` with no drill to find).
//! 6. **`min_keep: M`** is a floor under everything above: while fewer than M counted
//!    backups are kept, the newest deleted backup is kept again with only
//!    [`KeepReason::MinKeep`].

use std::fmt;
use std::time::Duration;

use bytesize::ByteSize;
use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// How long a backup directory without a manifest is left alone when the policy does not say.
const DEFAULT_INCOMPLETE_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// One complete backup as retention sees it.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    /// Backup id, `YYYYMMDDTHHMMSSZ` with an optional `-NN` suffix.
    pub id: String,
    /// UTC start time of the backup.
    pub created_at: DateTime<Utc>,
    /// Stored size in bytes, counted by `max_total_size`.
    pub size: u64,
    /// False for a backup that `signing.allowed_signers` does not trust: it is kept and
    /// reported, never counted and never deleted.
    pub trusted: bool,
    /// A drill of this backup succeeded (a drill record that counts says so).
    pub drilled: bool,
}

/// The `retention:` section of the config (YAML). All fields optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the N newest backups.
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N UTC hours that have one.
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the last N UTC days that have one.
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N ISO weeks that have one.
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N UTC months that have one.
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the last N UTC years that have one.
    pub keep_yearly: Option<u32>,
    /// Keep every backup younger than this (e.g. "48h").
    #[serde(default, with = "humantime_serde")]
    pub keep_within: Option<Duration>,
    /// Keep the N newest backups whose drill succeeded (default 1 when `schedule.drill`
    /// is set, else 0; set by the config loader).
    pub keep_drilled: Option<u32>,
    /// Keep at most this many backups.
    pub max_count: Option<u32>,
    /// Keep at most this many bytes of backups (e.g. "50GiB").
    pub max_total_size: Option<ByteSize>,
    /// Never keep fewer backups than this, whatever the other rules say.
    pub min_keep: Option<u32>,
    /// How long a backup directory without a manifest (an interrupted run) is left alone
    /// before prune removes it. Not used by `decide`. Default 24h via a method.
    #[serde(default, with = "humantime_serde")]
    pub incomplete_grace: Option<Duration>,
}

impl RetentionPolicy {
    /// The grace period for incomplete backups, 24h unless configured.
    pub fn incomplete_grace(&self) -> Duration {
        self.incomplete_grace.unwrap_or(DEFAULT_INCOMPLETE_GRACE)
    }

    /// True when no keep rule, cap or floor is set (`incomplete_grace` is not a rule).
    pub fn is_empty(&self) -> bool {
        !self.has_keep_rule()
            && self.max_count.is_none()
            && self.max_total_size.is_none()
            && self.min_keep.is_none()
    }

    /// Rejects settings that are pointless or contradictory, naming every offending key.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let counts = [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ];
        for (key, value) in counts {
            if value == Some(0) {
                problems.push(format!(
                    "retention.{key} is 0, which keeps nothing: remove the key to turn the rule off"
                ));
            }
        }
        if self.keep_within == Some(Duration::ZERO) {
            problems.push(
                "retention.keep_within is 0s, which keeps nothing: remove the key to turn the rule off"
                    .to_owned(),
            );
        }
        if self.min_keep == Some(0) {
            problems.push(
                "retention.min_keep is 0, which guarantees nothing: remove the key".to_owned(),
            );
        }
        if self.max_count == Some(0) {
            problems.push(
                "retention.max_count is 0, but the newest backup is always kept: set it to at least 1, or remove the key for no limit"
                    .to_owned(),
            );
        }
        if self.max_total_size == Some(ByteSize(0)) {
            problems.push(
                "retention.max_total_size is 0 B, but the newest backup is always kept: set a real limit such as 50GiB, or remove the key for no limit"
                    .to_owned(),
            );
        }
        if let (Some(min_keep), Some(max_count)) = (self.min_keep, self.max_count)
            && min_keep > max_count
        {
            problems.push(format!(
                "retention.min_keep ({min_keep}) is greater than retention.max_count ({max_count}), so max_count could never be met: lower min_keep or raise max_count"
            ));
        }
        if self.incomplete_grace == Some(Duration::ZERO) {
            problems.push(
                "retention.incomplete_grace is 0s, so prune could delete a backup another run is still writing: set it longer than the slowest backup, or remove the key for the 24h default"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn has_keep_rule(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// The newest backup (not in the future) is always kept.
    Newest,
    /// Matched `keep_last`.
    Last,
    /// Matched `keep_hourly`.
    Hourly,
    /// Matched `keep_daily`.
    Daily,
    /// Matched `keep_weekly`.
    Weekly,
    /// Matched `keep_monthly`.
    Monthly,
    /// Matched `keep_yearly`.
    Yearly,
    /// Matched `keep_within`.
    Within,
    /// Matched `keep_drilled`: one of the newest backups a drill proved.
    Drilled,
    /// Kept again to honour `min_keep`.
    MinKeep,
    /// Created after `now`, so its age is unknown: kept, never counted.
    FutureTimestamp,
    /// Not signed by a key in `signing.allowed_signers`: kept and reported, never counted.
    Untrusted,
    /// The policy has no keep rule, so everything is kept (caps still apply).
    NoRules,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Newest => "newest backup is always kept",
            Self::Last => "keep_last",
            Self::Hourly => "keep_hourly",
            Self::Daily => "keep_daily",
            Self::Weekly => "keep_weekly",
            Self::Monthly => "keep_monthly",
            Self::Yearly => "keep_yearly",
            Self::Within => "keep_within",
            Self::Drilled => "keep_drilled (a drill proved it restores)",
            Self::MinKeep => "min_keep",
            Self::FutureTimestamp => {
                "created in the future (clock skew, or planted): never counted, never deleted"
            }
            Self::Untrusted => {
                "not signed by an allowed signer (planted?): never counted, never deleted"
            }
            Self::NoRules => "no keep rule configured",
        })
    }
}

/// Why a backup is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// No keep rule matched.
    NoRuleMatched,
    /// Newer kept backups already reach `max_count`.
    MaxCount {
        /// The configured `max_count`.
        limit: u32,
    },
    /// Newer kept backups plus this one exceed `max_total_size`.
    MaxTotalSize {
        /// The configured `max_total_size`.
        limit: ByteSize,
    },
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRuleMatched => f.write_str("no rule matched"),
            Self::MaxCount { limit } => write!(f, "max_count ({limit})"),
            Self::MaxTotalSize { limit } => write!(f, "max_total_size ({limit})"),
        }
    }
}

/// The outcome for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Kept, with every reason that applied.
    Keep(Vec<KeepReason>),
    /// Deleted, with the rule that decided.
    Delete(DeleteReason),
}

/// One backup with its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Backup id.
    pub id: String,
    /// UTC start time of the backup.
    pub created_at: DateTime<Utc>,
    /// Stored size in bytes.
    pub size: u64,
    /// Keep or delete, and why.
    pub verdict: Verdict,
}

impl Decision {
    /// True when the backup is kept.
    pub fn keep(&self) -> bool {
        matches!(self.verdict, Verdict::Keep(_))
    }
}

/// Decide keep/delete for each complete backup, newest first, each with the rule(s) that decided.
pub fn decide(
    backups: &[BackupSummary],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut sorted: Vec<&BackupSummary> = backups.iter().collect();
    sorted.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    // What is kept and reported without being counted, and why.
    let uncounted = |b: &BackupSummary| {
        if !b.trusted {
            Some(KeepReason::Untrusted)
        } else if b.created_at > now {
            Some(KeepReason::FutureTimestamp)
        } else {
            None
        }
    };
    let counted: Vec<&BackupSummary> = sorted
        .iter()
        .copied()
        .filter(|b| uncounted(b).is_none())
        .collect();

    let mut reasons = keep_rule_reasons(&counted, policy, now);
    // Spared by the caps: the newest, and the drilled ones `keep_drilled` keeps.
    let mut protected = vec![false; counted.len()];
    let drilled = counted.iter().enumerate().filter(|(_, b)| b.drilled);
    for (i, _) in drilled.take(policy.keep_drilled.unwrap_or(0) as usize) {
        reasons[i].push(KeepReason::Drilled);
        protected[i] = true;
    }
    if let Some(newest) = reasons.first_mut() {
        newest.push(KeepReason::Newest);
        protected[0] = true;
    }
    let mut verdicts: Vec<Verdict> = reasons
        .into_iter()
        .map(|r| {
            if r.is_empty() {
                Verdict::Delete(DeleteReason::NoRuleMatched)
            } else {
                Verdict::Keep(r)
            }
        })
        .collect();
    apply_caps(&counted, &mut verdicts, &protected, policy);
    if let Some(min_keep) = policy.min_keep {
        apply_min_keep(&mut verdicts, min_keep);
    }

    let mut counted_verdicts = verdicts.into_iter();
    sorted
        .into_iter()
        .map(|b| {
            let verdict = match uncounted(b) {
                Some(reason) => Verdict::Keep(vec![reason]),
                None => counted_verdicts
                    .next()
                    .unwrap_or(Verdict::Keep(vec![KeepReason::Newest])),
            };
            Decision {
                id: b.id.clone(),
                created_at: b.created_at,
                size: b.size,
                verdict,
            }
        })
        .collect()
}

/// A calendar period that `keep_hourly` and friends keep one backup of.
#[derive(Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    /// Equal for two times in the same UTC period.
    fn key(self, t: DateTime<Utc>) -> (i32, u32, u32) {
        match self {
            Self::Hour => (t.year(), t.ordinal(), t.hour()),
            Self::Day => (t.year(), t.ordinal(), 0),
            Self::Week => {
                let week = t.iso_week();
                (week.year(), week.week(), 0)
            }
            Self::Month => (t.year(), t.month(), 0),
            Self::Year => (t.year(), 0, 0),
        }
    }
}

/// The keep rules' reasons for each backup of `past` (newest first, none in the future).
fn keep_rule_reasons(
    past: &[&BackupSummary],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Vec<Vec<KeepReason>> {
    if !policy.has_keep_rule() {
        return vec![vec![KeepReason::NoRules]; past.len()];
    }
    let mut reasons = vec![Vec::new(); past.len()];
    if let Some(n) = policy.keep_last {
        for r in reasons.iter_mut().take(n as usize) {
            r.push(KeepReason::Last);
        }
    }
    let periodic = [
        (policy.keep_hourly, Period::Hour, KeepReason::Hourly),
        (policy.keep_daily, Period::Day, KeepReason::Daily),
        (policy.keep_weekly, Period::Week, KeepReason::Weekly),
        (policy.keep_monthly, Period::Month, KeepReason::Monthly),
        (policy.keep_yearly, Period::Year, KeepReason::Yearly),
    ];
    for (limit, period, reason) in periodic {
        let Some(mut remaining) = limit else { continue };
        let mut previous = None;
        for (backup, r) in past.iter().zip(&mut reasons) {
            if remaining == 0 {
                break;
            }
            // Newest first, so the first backup seen in a period is its newest.
            let key = period.key(backup.created_at);
            if previous != Some(key) {
                r.push(reason);
                remaining -= 1;
                previous = Some(key);
            }
        }
    }
    if let Some(within) = policy.keep_within {
        // A window too long to represent reaches back before any backup.
        let cutoff = TimeDelta::from_std(within)
            .ok()
            .and_then(|d| now.checked_sub_signed(d));
        for (backup, r) in past.iter().zip(&mut reasons) {
            if cutoff.is_none_or(|c| backup.created_at >= c) {
                r.push(KeepReason::Within);
            }
        }
    }
    reasons
}

/// Deletes the oldest kept backups beyond `max_count`/`max_total_size`, sparing the
/// `protected` entries but counting them.
fn apply_caps(
    sorted: &[&BackupSummary],
    verdicts: &mut [Verdict],
    protected: &[bool],
    policy: &RetentionPolicy,
) {
    let (mut count, mut total) = (0u32, 0u64);
    let mut cut: Option<DeleteReason> = None;
    for (i, (backup, verdict)) in sorted.iter().zip(verdicts.iter_mut()).enumerate() {
        if !matches!(verdict, Verdict::Keep(_)) {
            continue;
        }
        let with_this = total.saturating_add(backup.size);
        if !protected[i] && cut.is_none() {
            cut = match (policy.max_count, policy.max_total_size) {
                (Some(limit), _) if count >= limit => Some(DeleteReason::MaxCount { limit }),
                (_, Some(limit)) if with_this > limit.as_u64() => {
                    Some(DeleteReason::MaxTotalSize { limit })
                }
                _ => None,
            };
        }
        match cut {
            Some(reason) if !protected[i] => *verdict = Verdict::Delete(reason),
            _ => {
                count = count.saturating_add(1);
                total = with_this;
            }
        }
    }
}

/// Keeps the newest deleted backups again until `min_keep` are kept or none is left.
fn apply_min_keep(verdicts: &mut [Verdict], min_keep: u32) {
    let kept = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Keep(_)))
        .count();
    let missing = (min_keep as usize).saturating_sub(kept);
    for verdict in verdicts
        .iter_mut()
        .filter(|v| matches!(v, Verdict::Delete(_)))
        .take(missing)
    {
        *verdict = Verdict::Keep(vec![KeepReason::MinKeep]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeepReason::*;

    const GIB: u64 = 1 << 30;

    /// The fixed clock: Monday 2026-06-15 12:00 UTC.
    fn now() -> DateTime<Utc> {
        at("2026-06-15T12:00:00Z")
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("test timestamp")
            .with_timezone(&Utc)
    }

    fn backup(created_at: DateTime<Utc>, size: u64) -> BackupSummary {
        BackupSummary {
            id: created_at.format("%Y%m%dT%H%M%SZ").to_string(),
            created_at,
            size,
            trusted: true,
            drilled: false,
        }
    }

    /// One backup every `step` going back from `newest`, newest first.
    fn series(newest: DateTime<Utc>, step: TimeDelta, n: i32, size: u64) -> Vec<BackupSummary> {
        (0..n).map(|i| backup(newest - step * i, size)).collect()
    }

    fn kept_ids(decisions: &[Decision]) -> Vec<&str> {
        decisions
            .iter()
            .filter(|d| d.keep())
            .map(|d| d.id.as_str())
            .collect()
    }

    fn verdict_of<'a>(decisions: &'a [Decision], id: &str) -> &'a Verdict {
        &decisions
            .iter()
            .find(|d| d.id == id)
            .unwrap_or_else(|| panic!("no decision for {id}"))
            .verdict
    }

    fn keep(reasons: &[KeepReason]) -> Verdict {
        Verdict::Keep(reasons.to_vec())
    }

    #[test]
    fn empty_input_decides_nothing() {
        let policy = RetentionPolicy {
            keep_last: Some(3),
            min_keep: Some(2),
            ..Default::default()
        };
        assert!(decide(&[], &policy, now()).is_empty());
    }

    #[test]
    fn without_rules_everything_is_kept_newest_first() {
        let mut backups = series(now(), TimeDelta::hours(5), 4, GIB);
        backups.reverse();
        let decisions = decide(&backups, &RetentionPolicy::default(), now());
        let verdicts: Vec<_> = decisions.iter().map(|d| d.verdict.clone()).collect();
        assert_eq!(
            verdicts,
            [
                keep(&[NoRules, Newest]),
                keep(&[NoRules]),
                keep(&[NoRules]),
                keep(&[NoRules])
            ]
        );
        assert!(
            decisions
                .windows(2)
                .all(|w| w[0].created_at > w[1].created_at)
        );
    }

    #[test]
    fn keep_last_keeps_the_n_newest() {
        let backups = series(now(), TimeDelta::hours(1), 5, GIB);
        let policy = RetentionPolicy {
            keep_last: Some(2),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        let verdicts: Vec<_> = decisions.iter().map(|d| d.verdict.clone()).collect();
        let gone = Verdict::Delete(DeleteReason::NoRuleMatched);
        assert_eq!(
            verdicts,
            [
                keep(&[Last, Newest]),
                keep(&[Last]),
                gone.clone(),
                gone.clone(),
                gone
            ]
        );
    }

    #[test]
    fn keep_hourly_keeps_the_newest_of_each_hour() {
        // 10:40, 10:20, 10:00, 09:40, ... 07:00: three per hour.
        let backups = series(at("2026-06-15T10:40:00Z"), TimeDelta::minutes(20), 12, GIB);
        let policy = RetentionPolicy {
            keep_hourly: Some(3),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        assert_eq!(
            kept_ids(&decisions),
            ["20260615T104000Z", "20260615T094000Z", "20260615T084000Z"]
        );
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day() {
        // Three a day (18:00, 10:00, 02:00) over five days.
        let backups = series(at("2026-06-15T02:00:00Z"), TimeDelta::hours(8), 15, GIB);
        let policy = RetentionPolicy {
            keep_daily: Some(3),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        assert_eq!(
            kept_ids(&decisions),
            ["20260615T020000Z", "20260614T180000Z", "20260613T180000Z"]
        );
    }

    #[test]
    fn keep_weekly_uses_iso_weeks_across_a_year_boundary() {
        // 2021-01-01 (Fri) and 2020-12-31 (Thu) are both in 2020-W53; 2020-12-27 is a Sunday of W52.
        let backups = [
            backup(at("2021-01-01T03:00:00Z"), GIB),
            backup(at("2020-12-31T03:00:00Z"), GIB),
            backup(at("2020-12-28T03:00:00Z"), GIB),
            backup(at("2020-12-27T03:00:00Z"), GIB),
            backup(at("2020-12-21T03:00:00Z"), GIB),
        ];
        let policy = RetentionPolicy {
            keep_weekly: Some(2),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        assert_eq!(
            kept_ids(&decisions),
            ["20210101T030000Z", "20201227T030000Z"]
        );
    }

    #[test]
    fn keep_monthly_and_keep_yearly_keep_the_newest_of_each_period() {
        let backups = [
            backup(at("2026-02-10T00:00:00Z"), GIB),
            backup(at("2026-01-31T00:00:00Z"), GIB),
            backup(at("2026-01-01T00:00:00Z"), GIB),
            backup(at("2025-12-31T23:59:59Z"), GIB),
            backup(at("2025-06-01T00:00:00Z"), GIB),
            backup(at("2024-12-01T00:00:00Z"), GIB),
        ];
        let monthly = RetentionPolicy {
            keep_monthly: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept_ids(&decide(&backups, &monthly, now())),
            ["20260210T000000Z", "20260131T000000Z", "20251231T235959Z"]
        );
        let yearly = RetentionPolicy {
            keep_yearly: Some(5),
            ..Default::default()
        };
        assert_eq!(
            kept_ids(&decide(&backups, &yearly, now())),
            ["20260210T000000Z", "20251231T235959Z", "20241201T000000Z"]
        );
    }

    #[test]
    fn keep_within_includes_the_exact_boundary() {
        let backups = [
            backup(at("2026-06-14T12:00:00Z"), GIB),
            backup(at("2026-06-14T11:59:59Z"), GIB),
        ];
        let policy = RetentionPolicy {
            keep_within: Some(Duration::from_secs(24 * 3600)),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        assert_eq!(decisions[0].verdict, keep(&[Within, Newest]));
        assert_eq!(
            decisions[1].verdict,
            Verdict::Delete(DeleteReason::NoRuleMatched)
        );
    }

    #[test]
    fn keep_within_longer_than_time_itself_keeps_everything() {
        let backups = series(now(), TimeDelta::days(400), 3, GIB);
        let policy = RetentionPolicy {
            keep_within: Some(Duration::MAX),
            ..Default::default()
        };
        assert_eq!(kept_ids(&decide(&backups, &policy, now())).len(), 3);
    }

    #[test]
    fn overlapping_daily_and_weekly_list_both_reasons() {
        // Daily at 03:00 from Monday 06-15 back to Wednesday 06-03.
        let backups = series(at("2026-06-15T03:00:00Z"), TimeDelta::days(1), 13, GIB);
        let policy = RetentionPolicy {
            keep_daily: Some(3),
            keep_weekly: Some(3),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        assert_eq!(
            kept_ids(&decisions),
            [
                "20260615T030000Z",
                "20260614T030000Z",
                "20260613T030000Z",
                "20260607T030000Z"
            ]
        );
        assert_eq!(decisions[0].verdict, keep(&[Daily, Weekly, Newest]));
        assert_eq!(decisions[1].verdict, keep(&[Daily, Weekly]));
        assert_eq!(decisions[2].verdict, keep(&[Daily]));
        assert_eq!(verdict_of(&decisions, "20260607T030000Z"), &keep(&[Weekly]));
    }

    fn spec_policy() -> RetentionPolicy {
        RetentionPolicy {
            keep_last: Some(3),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(6),
            keep_within: Some(Duration::from_secs(48 * 3600)),
            max_count: Some(30),
            max_total_size: Some(ByteSize::gib(50)),
            min_keep: Some(2),
            ..Default::default()
        }
    }

    /// 200 nightly backups at 03:00, from 2026-06-15 (Monday) back to 2025-11-28.
    fn nightly(size: u64) -> Vec<BackupSummary> {
        series(at("2026-06-15T03:00:00Z"), TimeDelta::days(1), 200, size)
    }

    #[test]
    fn spec_policy_on_200_nightly_backups() {
        // keep_last 3: 06-15, 06-14, 06-13. keep_daily 7: 06-15 .. 06-09.
        // keep_weekly 4 (newest of W25, W24, W23, W22): 06-15, 06-14 (Sun), 06-07, 05-31.
        // keep_monthly 6: 06-15, 05-31, 04-30, 03-31, 02-28, 01-31.
        // keep_within 48h (since 06-13 12:00): 06-15, 06-14.
        // 13 kept at 1 GiB each: under both caps.
        let decisions = decide(&nightly(GIB), &spec_policy(), now());
        assert_eq!(decisions.len(), 200);
        let expected: Vec<(&str, Verdict)> = vec![
            (
                "20260615T030000Z",
                keep(&[Last, Daily, Weekly, Monthly, Within, Newest]),
            ),
            ("20260614T030000Z", keep(&[Last, Daily, Weekly, Within])),
            ("20260613T030000Z", keep(&[Last, Daily])),
            ("20260612T030000Z", keep(&[Daily])),
            ("20260611T030000Z", keep(&[Daily])),
            ("20260610T030000Z", keep(&[Daily])),
            ("20260609T030000Z", keep(&[Daily])),
            ("20260607T030000Z", keep(&[Weekly])),
            ("20260531T030000Z", keep(&[Weekly, Monthly])),
            ("20260430T030000Z", keep(&[Monthly])),
            ("20260331T030000Z", keep(&[Monthly])),
            ("20260228T030000Z", keep(&[Monthly])),
            ("20260131T030000Z", keep(&[Monthly])),
        ];
        let kept: Vec<(&str, Verdict)> = decisions
            .iter()
            .filter(|d| d.keep())
            .map(|d| (d.id.as_str(), d.verdict.clone()))
            .collect();
        assert_eq!(kept, expected);
        assert!(
            decisions
                .iter()
                .filter(|d| !d.keep())
                .all(|d| d.verdict == Verdict::Delete(DeleteReason::NoRuleMatched))
        );
        assert_eq!(decisions[199].id, "20251128T030000Z");
    }

    #[test]
    fn spec_policy_with_large_backups_hits_max_total_size() {
        // Same 13 rule matches at 5 GiB each: the first ten sum to exactly 50 GiB and stay.
        let decisions = decide(&nightly(5 * GIB), &spec_policy(), now());
        let kept = kept_ids(&decisions);
        assert_eq!(kept.len(), 10);
        assert_eq!(kept.last(), Some(&"20260430T030000Z"));
        let capped = Verdict::Delete(DeleteReason::MaxTotalSize {
            limit: ByteSize::gib(50),
        });
        for id in ["20260331T030000Z", "20260228T030000Z", "20260131T030000Z"] {
            assert_eq!(verdict_of(&decisions, id), &capped, "{id}");
        }
        let no_rule = decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Delete(DeleteReason::NoRuleMatched))
            .count();
        assert_eq!(no_rule, 187);
    }

    #[test]
    fn max_count_deletes_the_oldest_kept() {
        let backups = series(now(), TimeDelta::hours(1), 5, GIB);
        let policy = RetentionPolicy {
            max_count: Some(3),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        assert_eq!(kept_ids(&decisions).len(), 3);
        let capped = Verdict::Delete(DeleteReason::MaxCount { limit: 3 });
        assert_eq!(decisions[3].verdict, capped);
        assert_eq!(decisions[4].verdict, capped);
    }

    #[test]
    fn max_total_size_keeps_an_exact_fit_and_cuts_everything_older() {
        let backups = [
            backup(at("2026-06-15T04:00:00Z"), 10),
            backup(at("2026-06-15T03:00:00Z"), 5),
            backup(at("2026-06-15T02:00:00Z"), 6),
            backup(at("2026-06-15T01:00:00Z"), 5),
        ];
        // At 15 the first two fit exactly. At 20 the 6 would make 21; the 5 after it would
        // make exactly 20 but is older than the cut, so it goes too.
        for limit in [ByteSize::b(15), ByteSize::b(20)] {
            let policy = RetentionPolicy {
                max_total_size: Some(limit),
                ..Default::default()
            };
            let decisions = decide(&backups, &policy, now());
            let verdicts: Vec<_> = decisions.iter().map(|d| d.verdict.clone()).collect();
            let capped = Verdict::Delete(DeleteReason::MaxTotalSize { limit });
            assert_eq!(
                verdicts,
                [
                    keep(&[NoRules, Newest]),
                    keep(&[NoRules]),
                    capped.clone(),
                    capped
                ],
                "{limit}"
            );
        }
    }

    #[test]
    fn a_lone_backup_survives_caps_that_would_delete_it() {
        let backups = [backup(now(), 10 * GIB)];
        let policy = RetentionPolicy {
            max_count: Some(0),
            max_total_size: Some(ByteSize::b(1)),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        assert_eq!(decisions[0].verdict, keep(&[NoRules, Newest]));
    }

    #[test]
    fn the_newest_is_never_deleted_under_any_rule_or_cap() {
        // The newest is two days old and 10 GiB: older than keep_within, over every cap.
        let backups = series(at("2026-06-13T12:00:00Z"), TimeDelta::days(1), 5, 10 * GIB);
        let policies = [
            RetentionPolicy {
                keep_within: Some(Duration::from_secs(3600)),
                ..Default::default()
            },
            RetentionPolicy {
                max_count: Some(0),
                ..Default::default()
            },
            RetentionPolicy {
                max_total_size: Some(ByteSize::gib(1)),
                ..Default::default()
            },
            RetentionPolicy {
                keep_hourly: Some(1),
                keep_within: Some(Duration::from_secs(1)),
                max_count: Some(0),
                max_total_size: Some(ByteSize::b(0)),
                ..Default::default()
            },
        ];
        for policy in policies {
            let decisions = decide(&backups, &policy, now());
            assert_eq!(kept_ids(&decisions), ["20260613T120000Z"], "{policy:?}");
            assert!(
                matches!(&decisions[0].verdict, Verdict::Keep(r) if r.contains(&Newest)),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn min_keep_overrides_caps_and_rules() {
        let backups = series(now(), TimeDelta::hours(1), 5, 10 * GIB);
        let capped = RetentionPolicy {
            max_total_size: Some(ByteSize::gib(15)),
            min_keep: Some(3),
            ..Default::default()
        };
        let decisions = decide(&backups, &capped, now());
        let verdicts: Vec<_> = decisions.iter().map(|d| d.verdict.clone()).collect();
        let cut = Verdict::Delete(DeleteReason::MaxTotalSize {
            limit: ByteSize::gib(15),
        });
        assert_eq!(
            verdicts,
            [
                keep(&[NoRules, Newest]),
                keep(&[MinKeep]),
                keep(&[MinKeep]),
                cut.clone(),
                cut
            ]
        );

        let strict = RetentionPolicy {
            keep_within: Some(Duration::from_secs(60)),
            max_count: Some(1),
            min_keep: Some(2),
            ..Default::default()
        };
        let decisions = decide(&backups, &strict, now());
        assert_eq!(decisions[0].verdict, keep(&[Within, Newest]));
        assert_eq!(decisions[1].verdict, keep(&[MinKeep]));
        assert_eq!(
            decisions[2].verdict,
            Verdict::Delete(DeleteReason::NoRuleMatched)
        );
    }

    #[test]
    fn min_keep_larger_than_the_backups_keeps_them_all() {
        let backups = series(now(), TimeDelta::hours(1), 3, GIB);
        let policy = RetentionPolicy {
            keep_last: Some(1),
            min_keep: Some(10),
            ..Default::default()
        };
        assert_eq!(kept_ids(&decide(&backups, &policy, now())).len(), 3);
    }

    #[test]
    fn keep_drilled_keeps_the_newest_proven_backups_past_rules_and_caps() {
        // Five daily backups; the 3rd and 5th newest were drilled.
        let mut backups = series(now(), TimeDelta::days(1), 5, GIB);
        backups[2].drilled = true;
        backups[4].drilled = true;
        let ids: Vec<String> = backups.iter().map(|b| b.id.clone()).collect();
        let policy = RetentionPolicy {
            keep_last: Some(1),
            keep_drilled: Some(1),
            max_count: Some(1),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        assert_eq!(kept_ids(&decisions), [ids[0].as_str(), ids[2].as_str()]);
        assert_eq!(
            verdict_of(&decisions, &ids[2]),
            &keep(&[Drilled]),
            "max_count spares the drilled backup"
        );
        assert_eq!(
            verdict_of(&decisions, &ids[4]),
            &Verdict::Delete(DeleteReason::NoRuleMatched),
            "only the newest N drilled"
        );
        // Two: both drilled ones; none: the drills protect nothing.
        let two = RetentionPolicy {
            keep_drilled: Some(2),
            ..policy.clone()
        };
        assert_eq!(kept_ids(&decide(&backups, &two, now())).len(), 3);
        let off = RetentionPolicy {
            keep_drilled: Some(0),
            ..policy.clone()
        };
        assert_eq!(kept_ids(&decide(&backups, &off, now())), [ids[0].as_str()]);
        // The newest drilled has both reasons.
        backups[0].drilled = true;
        let decisions = decide(&backups, &policy, now());
        assert_eq!(decisions[0].verdict, keep(&[Last, Drilled, Newest]));
        assert_eq!(kept_ids(&decisions), [ids[0].as_str()]);
        // An untrusted drilled backup proves nothing: it is kept as untrusted only.
        backups[0].drilled = false;
        backups[2].trusted = false;
        let decisions = decide(&backups, &policy, now());
        assert_eq!(verdict_of(&decisions, &ids[2]), &keep(&[Untrusted]));
        assert_eq!(verdict_of(&decisions, &ids[4]), &keep(&[Drilled]));
    }

    #[test]
    fn same_second_backups_are_ordered_by_id_suffix() {
        let t = at("2026-06-15T03:00:00Z");
        let second = |suffix: &str| BackupSummary {
            id: format!("20260615T030000Z{suffix}"),
            created_at: t,
            size: GIB,
            trusted: true,
            drilled: false,
        };
        let backups = [
            backup(at("2026-06-15T02:00:00Z"), GIB),
            second(""),
            second("-02"),
            second("-01"),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            keep_daily: Some(1),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        let order: Vec<&str> = decisions.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(
            order,
            [
                "20260615T030000Z-02",
                "20260615T030000Z-01",
                "20260615T030000Z",
                "20260615T020000Z"
            ]
        );
        assert_eq!(decisions[0].verdict, keep(&[Last, Daily, Newest]));
        assert_eq!(kept_ids(&decisions), ["20260615T030000Z-02"]);
    }

    #[test]
    fn future_backups_are_kept_and_never_counted() {
        // Another host's clock is an hour ahead; one backup is planted a year ahead.
        let backups = [
            backup(at("2027-06-15T13:00:00Z"), GIB),
            backup(at("2026-06-15T12:30:00Z"), GIB),
            backup(now(), GIB),
            backup(at("2026-06-15T11:00:00Z"), GIB),
            backup(at("2026-06-15T10:00:00Z"), GIB),
            backup(at("2026-06-15T09:00:00Z"), GIB),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(2),
            max_count: Some(3),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        let verdicts: Vec<_> = decisions.iter().map(|d| d.verdict.clone()).collect();
        let gone = Verdict::Delete(DeleteReason::NoRuleMatched);
        assert_eq!(
            verdicts,
            [
                keep(&[FutureTimestamp]),
                keep(&[FutureTimestamp]),
                keep(&[Last, Newest]),
                keep(&[Last]),
                gone.clone(),
                gone
            ]
        );
        // They satisfy neither max_count nor min_keep: the current backups stay.
        let capped = RetentionPolicy {
            keep_last: Some(4),
            max_count: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept_ids(&decide(&backups, &capped, now())),
            [
                "20270615T130000Z",
                "20260615T123000Z",
                "20260615T120000Z",
                "20260615T110000Z"
            ]
        );
        let floor = RetentionPolicy {
            keep_last: Some(1),
            min_keep: Some(3),
            ..Default::default()
        };
        assert_eq!(kept_ids(&decide(&backups, &floor, now())).len(), 5);
    }

    #[test]
    fn untrusted_backups_are_reported_never_counted_or_deleted() {
        let mut backups = series(now(), TimeDelta::hours(1), 5, GIB);
        // Two planted under newer ids, as an intruder would.
        for hours in [1, 3] {
            let mut planted = backup(now() - TimeDelta::minutes(30) * hours, GIB);
            planted.trusted = false;
            backups.push(planted);
        }
        let policy = RetentionPolicy {
            keep_last: Some(3),
            max_count: Some(3),
            min_keep: Some(3),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, now());
        let untrusted: Vec<_> = decisions
            .iter()
            .filter(|d| d.verdict == keep(&[Untrusted]))
            .collect();
        assert_eq!(untrusted.len(), 2);
        let trusted_kept: Vec<_> = decisions
            .iter()
            .filter(|d| d.keep() && d.verdict != keep(&[Untrusted]))
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(
            trusted_kept,
            ["20260615T120000Z", "20260615T110000Z", "20260615T100000Z"]
        );
        assert_eq!(decisions.iter().filter(|d| !d.keep()).count(), 2);
    }

    #[test]
    fn a_clock_far_behind_keeps_every_backup() {
        let backups = series(now(), TimeDelta::days(1), 4, GIB);
        let policy = RetentionPolicy {
            keep_last: Some(1),
            max_count: Some(1),
            max_total_size: Some(ByteSize::b(1)),
            ..Default::default()
        };
        let decisions = decide(&backups, &policy, at("2020-01-01T00:00:00Z"));
        assert!(
            decisions
                .iter()
                .all(|d| d.verdict == keep(&[FutureTimestamp]))
        );
    }

    #[test]
    fn parses_the_spec_policy_from_yaml() {
        let yaml = "{ keep_last: 3, keep_daily: 7, keep_weekly: 4, keep_monthly: 6,\n  \
                    keep_within: 48h, max_count: 30, max_total_size: 50GiB, min_keep: 2 }";
        let policy: RetentionPolicy = serde_yaml_ng::from_str(yaml).expect("valid policy");
        assert_eq!(policy, spec_policy());
        assert_eq!(policy.validate(), Ok(()));
        assert_eq!(policy.incomplete_grace(), Duration::from_secs(24 * 3600));

        let grace: RetentionPolicy =
            serde_yaml_ng::from_str("incomplete_grace: 90m").expect("valid policy");
        assert_eq!(grace.incomplete_grace(), Duration::from_secs(90 * 60));
        assert!(grace.is_empty());
        assert!(
            serde_yaml_ng::from_str::<RetentionPolicy>("{}")
                .expect("empty policy")
                .is_empty()
        );
        assert!(!spec_policy().is_empty());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values_in_yaml() {
        let err = serde_yaml_ng::from_str::<RetentionPolicy>("keep_dialy: 7")
            .expect_err("typo must be rejected")
            .to_string();
        assert!(err.contains("unknown field `keep_dialy`"), "{err}");
        assert!(serde_yaml_ng::from_str::<RetentionPolicy>("keep_within: two days").is_err());
        assert!(serde_yaml_ng::from_str::<RetentionPolicy>("max_total_size: lots").is_err());
    }

    #[test]
    fn validate_names_the_keys_and_the_fix() {
        let contradictory = RetentionPolicy {
            max_count: Some(3),
            min_keep: Some(5),
            ..Default::default()
        };
        assert_eq!(
            contradictory.validate(),
            Err("retention.min_keep (5) is greater than retention.max_count (3), so max_count could never be met: lower min_keep or raise max_count".to_owned())
        );

        let zero = RetentionPolicy {
            keep_daily: Some(0),
            ..Default::default()
        };
        assert_eq!(
            zero.validate(),
            Err(
                "retention.keep_daily is 0, which keeps nothing: remove the key to turn the rule off"
                    .to_owned()
            )
        );

        let many = RetentionPolicy {
            keep_last: Some(0),
            keep_within: Some(Duration::ZERO),
            max_count: Some(0),
            max_total_size: Some(ByteSize::b(0)),
            incomplete_grace: Some(Duration::ZERO),
            ..Default::default()
        };
        let err = many.validate().expect_err("five problems");
        for key in [
            "retention.keep_last",
            "retention.keep_within",
            "retention.max_count",
            "retention.max_total_size",
            "retention.incomplete_grace",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
        assert_eq!(err.matches("; ").count(), 4, "{err}");

        let equal = RetentionPolicy {
            max_count: Some(2),
            min_keep: Some(2),
            ..Default::default()
        };
        assert_eq!(equal.validate(), Ok(()));
    }

    #[test]
    fn reasons_display_the_config_keys() {
        assert_eq!(Last.to_string(), "keep_last");
        assert_eq!(Daily.to_string(), "keep_daily");
        assert_eq!(Within.to_string(), "keep_within");
        assert_eq!(MinKeep.to_string(), "min_keep");
        assert_eq!(Newest.to_string(), "newest backup is always kept");
        assert_eq!(DeleteReason::NoRuleMatched.to_string(), "no rule matched");
        assert_eq!(
            DeleteReason::MaxCount { limit: 30 }.to_string(),
            "max_count (30)"
        );
        assert_eq!(
            DeleteReason::MaxTotalSize {
                limit: ByteSize::gib(50)
            }
            .to_string(),
            "max_total_size (50.0 GiB)"
        );
    }
}
