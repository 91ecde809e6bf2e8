//! `report`: an audit report of a period, read from the repository and planned with the
//! same parts every command uses (the catalog's one classification, the trust policy,
//! the drill records, [`crate::ops::prune::plan`] for retention, the config's backup
//! cron for gaps). It reads; it never writes to a target.
//!
//! The model here is what `--format json` prints (documented in SPEC.md, versioned by
//! `schema_version`); [`html`] and [`markdown`] render the same model.
//!
//! # What "verified" means in a report
//! The report makes only the checks that cost no object read: from one listing of each
//! target, every artifact its manifest records is there with the recorded stored size
//! (with a keys archive in another location, the manifest copy is there too), and the
//! manifest's signature is checked against `signing.allowed_signers` when that is set.
//! The bytes themselves (SHA-256 of the stored objects, decryption, the etcd hash trailer,
//! the tar) are `verify` and `verify --identity`'s to check; the drill records say
//! whether a restore into a scratch etcd held.
//!
//! # Gaps
//! Each occurrence T of `schedule.cron` in the period expects a backup: T is *missed*
//! when no trusted backup started at or after T and before the next occurrence T' (so
//! jitter, retries and a backup taken by hand in between count). The window that is still
//! open at the time of the report is not judged. Consecutive missed occurrences are one
//! gap.

pub mod html;
pub mod markdown;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::ops::prune::{plan, verdict_words};
use crate::repo::{DrillSummary, Entry, Repository, Standing};
use crate::retention::Verdict;

/// The JSON's `schema`: what this document is.
pub const SCHEMA: &str = "etcd-offsite/report";
/// The JSON's `schema_version`: raised when a field is removed or changes meaning (fields
/// may be added within a version).
pub const SCHEMA_VERSION: u32 = 1;

/// Scheduled occurrences judged at most (a cron firing every minute for a year).
const MAX_SLOTS: usize = 600_000;

/// What "verified" means in this report (printed in every format).
pub const VERIFIED_MEANS: &str = "Stored objects: checked from one listing of each target, without reading them: every artifact the manifest records is present with its recorded stored size (and, when the keys archive is in another location, the manifest copy is there). Signature: the manifest's SSH signature checked against signing.allowed_signers (\"not checked\" when signing is not enforced). The contents (SHA-256 of the stored bytes, decryption, the etcd hash trailer, the tar) are checked by `etcd-offsite verify` and `verify --identity`; a drill restores the snapshot into a scratch etcd and checks revision, key counts and that the keys archive opens the encrypted values.";

/// The gap rule (printed in every format).
pub const GAP_RULE: &str = "Each occurrence T of schedule.cron in the period expects a backup: T is missed when no trusted backup started at or after T and before the next occurrence (jitter, retries and backups taken by hand in between count). The window still open at the time of the report is not judged. Consecutive missed occurrences are one gap.";

/// The whole report (`--format json`).
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub schema_version: u32,
    pub generated_at: DateTime<Utc>,
    pub tool_version: &'static str,
    pub cluster: String,
    /// The snapshot target's URL (no credentials).
    pub target: String,
    /// The keys archive's target URL (the snapshot target's when they share it).
    pub keys_target: String,
    /// `--replica NAME` when the report reads a replica.
    pub replica: Option<String>,
    pub period: Period,
    /// Only backups and drill records signed by `signing.allowed_signers` count.
    pub signing_enforced: bool,
    pub verified_means: &'static str,
    pub totals: Totals,
    /// Every backup directory that started in the period, newest first.
    pub backups: Vec<BackupRow>,
    /// Every drill made in the period that counts, oldest first.
    pub drills: Vec<DrillRow>,
    /// Drill records of the period that do not count, and why.
    pub ignored_drill_records: Vec<IgnoredRecord>,
    /// Drill records of the period left unread (beyond the read bound; the oldest).
    pub unread_drill_records: usize,
    pub gaps: Gaps,
    pub retention: RetentionSection,
    pub recipients: RecipientsSection,
}

#[derive(Debug, Serialize)]
pub struct Period {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Counts over the period, for a glance and for scripts.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub backups: usize,
    /// By standing: `complete`, `untrusted`, `future_dated`, `damaged`, `incomplete`.
    pub by_standing: BTreeMap<&'static str, usize>,
    /// Backups with a readable manifest whose stored objects do not match it.
    pub stored_objects_failed: usize,
    /// Bytes stored by the period's complete (trusted) backups.
    pub stored_bytes: u64,
    pub drills: usize,
    pub drills_failed: usize,
    /// Scheduled occurrences missed (null without `schedule`).
    pub missed: Option<usize>,
    /// Backups, drills and occurrences that need a look: not trusted, damaged, stored
    /// objects wrong, failed drills, missed occurrences.
    pub findings: usize,
}

/// One backup directory of the period.
#[derive(Debug, Serialize)]
pub struct BackupRow {
    pub id: String,
    /// `complete`, `untrusted`, `future_dated`, `damaged` or `incomplete` (as `list`).
    pub standing: &'static str,
    /// Why it is untrusted or damaged.
    pub problem: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub snapshot_stored_size: Option<u64>,
    pub static_resources_stored_size: Option<u64>,
    /// Both artifacts (for a directory without a manifest: what the snapshot target holds).
    pub stored_size: u64,
    pub platform_version: Option<String>,
    pub etcd_version: Option<String>,
    pub host: Option<String>,
    pub dirty: bool,
    /// `trusted` (an allowed signer signed it), `not_checked` (signing not enforced),
    /// `untrusted`, or null (no readable manifest).
    pub signature: Option<&'static str>,
    /// The report's own check of the stored objects (see `verified_means`).
    pub stored_objects: StoredObjects,
    pub drills: DrillCounts,
    /// The date an Object Lock holds this backup's objects until, as its manifest records
    /// it (null: no lock recorded).
    pub locked_until: Option<DateTime<Utc>>,
    /// What retention decides for it now (null: no `retention` in the config, or no
    /// readable manifest).
    pub retention: Option<RetentionRow>,
}

#[derive(Debug, Serialize)]
pub struct StoredObjects {
    /// null: nothing to check (no readable manifest).
    pub ok: Option<bool>,
    pub problems: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct DrillCounts {
    /// Drills of this backup in the period that count.
    pub count: usize,
    pub passed: usize,
    pub failed: usize,
    /// The newest of them.
    pub last: Option<DrillSummary>,
}

#[derive(Debug, Serialize)]
pub struct RetentionRow {
    /// `keep` or `delete`.
    pub verdict: &'static str,
    /// The rules that decided, in words (as `prune` prints them).
    pub reasons: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DrillRow {
    pub backup_id: String,
    #[serde(flatten)]
    pub drill: DrillSummary,
}

#[derive(Debug, Serialize)]
pub struct IgnoredRecord {
    pub backup_id: String,
    pub record: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Gaps {
    /// `schedule.cron`, or null without a schedule (then nothing is judged).
    pub cron: Option<String>,
    pub rule: &'static str,
    /// Occurrences judged (their window closed within the period).
    pub expected: usize,
    pub missed: usize,
    /// Runs of consecutive missed occurrences, oldest first.
    pub runs: Vec<GapRun>,
    /// The occurrence whose window is still open (not judged).
    pub open: Option<DateTime<Utc>>,
    /// The period had more occurrences than are judged; judging stopped at this time.
    pub judged_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GapRun {
    /// The first and the last missed occurrence.
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub missed: usize,
    /// The gap ends before the oldest trusted backup the target holds (before backups
    /// began, or their history was pruned away).
    pub before_first_backup: bool,
}

#[derive(Debug, Serialize)]
pub struct RetentionSection {
    /// Whether the config has a `retention` policy (without one, prune keeps everything).
    pub configured: bool,
    pub keep: usize,
    pub delete: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct RecipientsSection {
    /// Recipients of the snapshots of the period's trusted backups.
    pub snapshot: Vec<RecipientUse>,
    /// Recipients of the keys archives (static resources) of those backups.
    pub static_resources: Vec<RecipientUse>,
}

/// One age recipient (a public key) and the backups encrypted to it.
#[derive(Debug, Clone, Serialize)]
pub struct RecipientUse {
    pub recipient: String,
    pub backups: usize,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

/// Reads the period's backups and drills through `repo` and plans retention and gaps.
pub async fn gather(
    config: &Config,
    repo: &Repository,
    replica: Option<&str>,
    since: std::time::Duration,
) -> anyhow::Result<Report> {
    let now = Utc::now();
    let since = TimeDelta::from_std(since)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let catalog = repo.catalog(now).await?;
    // As for `status`: a host clock behind the store would date gaps, drills and
    // retention wrongly; the report judges time only with a clock the store agrees with.
    crate::repo::clock::check_not_behind(repo.url(), catalog.newest_modified())?;
    let keys_side = repo.keys_side().await?;
    let history = repo.drills_since(&catalog, since, now).await;
    let decisions: BTreeMap<String, Verdict> = match &config.retention {
        Some(policy) => plan(repo, &catalog, policy, now)
            .await
            .into_iter()
            .map(|d| (d.id, d.verdict))
            .collect(),
        None => BTreeMap::new(),
    };

    let in_period: Vec<&Entry> = catalog
        .entries()
        .iter()
        .filter(|e| e.started_at() >= since)
        .collect();
    let mut backups = Vec::new();
    for entry in &in_period {
        backups.push(row(
            entry,
            repo,
            &keys_side,
            &history.drills,
            decisions.get(&entry.id),
        ));
    }

    let trusted_starts: Vec<DateTime<Utc>> = {
        let mut starts: Vec<_> = catalog.trusted().map(Entry::started_at).collect();
        starts.sort_unstable();
        starts
    };
    let gaps = match &config.schedule {
        Some(schedule) => judge_gaps(
            &schedule.cron,
            Some(schedule.cron_text.clone()),
            &trusted_starts,
            since,
            now,
        ),
        None => Gaps {
            cron: None,
            rule: GAP_RULE,
            expected: 0,
            missed: 0,
            runs: Vec::new(),
            open: None,
            judged_until: None,
        },
    };

    let mut recipients = RecipientsSection::default();
    for entry in in_period.iter().filter(|e| e.counts()) {
        let Some(summary) = &entry.summary else {
            continue;
        };
        note_recipients(
            &mut recipients.snapshot,
            &summary.snapshot_recipients,
            summary.started_at,
        );
        note_recipients(
            &mut recipients.static_resources,
            &summary.static_resources_recipients,
            summary.started_at,
        );
    }

    let drills: Vec<DrillRow> = history
        .drills
        .into_iter()
        .map(|(backup_id, drill)| DrillRow { backup_id, drill })
        .collect();
    let mut totals = Totals {
        backups: backups.len(),
        stored_objects_failed: backups
            .iter()
            .filter(|b| b.stored_objects.ok == Some(false))
            .count(),
        stored_bytes: backups
            .iter()
            .filter(|b| b.standing == Standing::Trusted.as_str())
            .map(|b| b.stored_size)
            .sum(),
        drills: drills.len(),
        drills_failed: drills.iter().filter(|d| !d.drill.ok).count(),
        missed: config.schedule.as_ref().map(|_| gaps.missed),
        ..Default::default()
    };
    for b in &backups {
        *totals.by_standing.entry(b.standing).or_default() += 1;
    }
    let not_counted = backups
        .iter()
        .filter(|b| {
            matches!(
                b.standing,
                "untrusted" | "damaged" | "future_dated" // incomplete: a run in progress or a leftover prune collects
            )
        })
        .count();
    totals.findings =
        not_counted + totals.stored_objects_failed + totals.drills_failed + gaps.missed;
    let keep = decisions
        .values()
        .filter(|v| matches!(v, Verdict::Keep(_)))
        .count();
    Ok(Report {
        schema: SCHEMA,
        schema_version: SCHEMA_VERSION,
        generated_at: now,
        tool_version: env!("CARGO_PKG_VERSION"),
        cluster: repo.cluster().to_string(),
        target: repo.url().to_string(),
        keys_target: repo.keys_url().to_string(),
        replica: replica.map(str::to_string),
        period: Period { since, until: now },
        signing_enforced: repo.trust_enforced(),
        verified_means: VERIFIED_MEANS,
        totals,
        backups,
        drills,
        ignored_drill_records: history
            .ignored
            .into_iter()
            .map(|(backup_id, record, reason)| IgnoredRecord {
                backup_id,
                record,
                reason,
            })
            .collect(),
        unread_drill_records: history.unread,
        gaps,
        retention: RetentionSection {
            configured: config.retention.is_some(),
            keep,
            delete: decisions.len() - keep,
        },
        recipients,
    })
}

/// One backup's row.
fn row(
    entry: &Entry,
    repo: &Repository,
    keys_side: &BTreeMap<String, Vec<crate::store::StoredObject>>,
    drills: &[(String, DrillSummary)],
    verdict: Option<&Verdict>,
) -> BackupRow {
    let summary = entry.summary.as_ref();
    let problem = match &entry.standing {
        Standing::Untrusted(why) | Standing::Damaged(why) => Some(why.clone()),
        _ => None,
    };
    let signature = match (&entry.standing, summary) {
        (Standing::Untrusted(_), _) => Some("untrusted"),
        (_, Some(_)) if repo.trust_enforced() => Some("trusted"),
        (_, Some(_)) => Some("not_checked"),
        (_, None) => None,
    };
    let problems = repo.listed_problems(entry, keys_side);
    let mut counts = DrillCounts::default();
    for (_, drill) in drills.iter().filter(|(id, _)| *id == entry.id) {
        counts.count += 1;
        if drill.ok {
            counts.passed += 1;
        } else {
            counts.failed += 1;
        }
        // Oldest first: the last one seen is the newest.
        counts.last = Some(drill.clone());
    }
    BackupRow {
        id: entry.id.clone(),
        standing: entry.standing.as_str(),
        problem,
        started_at: entry.started_at(),
        finished_at: summary.map(|s| s.finished_at),
        duration_seconds: summary.map(|s| {
            (s.finished_at - s.started_at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64()
        }),
        snapshot_stored_size: summary.map(|s| s.snapshot_stored_size),
        static_resources_stored_size: summary.and_then(|s| s.static_resources_stored_size),
        stored_size: summary.map_or_else(|| entry.stored_bytes(), |s| s.stored_size),
        platform_version: summary.and_then(|s| s.platform_version.clone()),
        etcd_version: summary.and_then(|s| s.etcd_version.clone()),
        host: summary.map(|s| s.host.clone()),
        dirty: summary.is_some_and(|s| s.dirty),
        signature,
        stored_objects: StoredObjects {
            ok: summary.map(|_| problems.is_empty()),
            problems,
        },
        drills: counts,
        locked_until: None,
        retention: verdict.map(|v| RetentionRow {
            verdict: if matches!(v, Verdict::Keep(_)) {
                "keep"
            } else {
                "delete"
            },
            reasons: verdict_words(v),
        }),
    }
}

fn note_recipients(uses: &mut Vec<RecipientUse>, recipients: &[String], at: DateTime<Utc>) {
    for recipient in recipients {
        match uses.iter_mut().find(|u| u.recipient == *recipient) {
            Some(u) => {
                u.backups += 1;
                u.first = u.first.min(at);
                u.last = u.last.max(at);
            }
            None => uses.push(RecipientUse {
                recipient: recipient.clone(),
                backups: 1,
                first: at,
                last: at,
            }),
        }
    }
}

/// The gaps of `[since, now)` under `cron`, given the trusted backups' start times
/// (sorted): see the module docs for the rule.
pub fn judge_gaps(
    cron: &croner::Cron,
    cron_text: Option<String>,
    starts: &[DateTime<Utc>],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Gaps {
    let mut gaps = Gaps {
        cron: cron_text,
        rule: GAP_RULE,
        expected: 0,
        missed: 0,
        runs: Vec::new(),
        open: None,
        judged_until: None,
    };
    let first_backup = starts.first().copied();
    let Ok(mut slot) = cron.find_next_occurrence(&since, true) else {
        return gaps;
    };
    let mut run: Option<GapRun> = None;
    let mut judged = 0;
    while slot < now {
        let Ok(next) = cron.find_next_occurrence(&slot, false) else {
            break;
        };
        if next > now {
            gaps.open = Some(slot);
            break;
        }
        if judged == MAX_SLOTS {
            gaps.judged_until = Some(slot);
            break;
        }
        judged += 1;
        gaps.expected += 1;
        // The first start at or after the slot.
        let i = starts.partition_point(|t| *t < slot);
        let covered = starts.get(i).is_some_and(|t| *t < next);
        if covered {
            if let Some(done) = run.take() {
                gaps.runs.push(done);
            }
        } else {
            gaps.missed += 1;
            match &mut run {
                Some(r) => {
                    r.last = slot;
                    r.missed += 1;
                }
                None => {
                    run = Some(GapRun {
                        first: slot,
                        last: slot,
                        missed: 1,
                        before_first_backup: false,
                    });
                }
            }
        }
        slot = next;
    }
    gaps.runs.extend(run);
    for r in &mut gaps.runs {
        r.before_first_backup = first_backup.is_none_or(|first| r.last < first);
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn an_occurrence_is_missed_when_no_backup_starts_before_the_next() {
        let cron = croner::Cron::from_str("0 3 * * *").unwrap();
        let starts = [
            // 03:00 on the 1st: covered.
            at("2026-11-01T03:00:00Z"),
            // Late on the 2nd (jitter, a retry): still the 2nd's window.
            at("2026-11-03T02:59:59Z"),
            // The 3rd and 4th: nothing. The 5th: by hand at noon.
            at("2026-11-05T12:00:00Z"),
        ];
        let gaps = judge_gaps(
            &cron,
            None,
            &starts,
            at("2026-10-30T00:00:00Z"),
            at("2026-11-06T04:00:00Z"),
        );
        // Oct 30, 31 (before the first backup), Nov 1..5 judged; Nov 6 is open.
        assert_eq!(gaps.expected, 7);
        assert_eq!(gaps.open, Some(at("2026-11-06T03:00:00Z")));
        assert_eq!(gaps.missed, 4);
        let runs: Vec<_> = gaps
            .runs
            .iter()
            .map(|r| (r.first, r.last, r.missed, r.before_first_backup))
            .collect();
        assert_eq!(
            runs,
            [
                (
                    at("2026-10-30T03:00:00Z"),
                    at("2026-10-31T03:00:00Z"),
                    2,
                    true
                ),
                (
                    at("2026-11-03T03:00:00Z"),
                    at("2026-11-04T03:00:00Z"),
                    2,
                    false
                ),
            ]
        );
    }

    #[test]
    fn judging_is_bounded() {
        let cron = croner::Cron::from_str("* * * * *").unwrap();
        let now = at("2026-11-06T04:00:00Z");
        let gaps = judge_gaps(&cron, None, &[], now - TimeDelta::days(800), now);
        assert_eq!(gaps.expected, MAX_SLOTS);
        assert!(gaps.judged_until.is_some());
        assert_eq!(gaps.runs.len(), 1);
    }
}
