//! `schedule`: the scheduler's crons (backups, drills), jitter and the upgrade check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use super::{SnapshotSource, readable_file};
use crate::error::ConfigError;

#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: croner::Cron,
    pub cron_text: String,
    pub jitter: Duration,
    /// How often `run` checks etcd for a new platform version (a backup follows every upgrade).
    pub upgrade_check: Option<Duration>,
    /// Restore drills of the newest backup, on their own cron (off by default).
    pub drill: Option<DrillSchedule>,
}

/// `schedule.drill`: `run` drills the newest backup on this cron.
#[derive(Debug, Clone)]
pub struct DrillSchedule {
    pub cron: croner::Cron,
    pub cron_text: String,
    /// Identity files for the snapshot and the keys archive (a recovery host's keys).
    pub identities: Vec<PathBuf>,
    /// The scratch directory and the etcd tools (`scratch_dir`, `etcd_bin_dir`).
    pub host: crate::drill::DrillHost,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    cron: String,
    #[serde(default, with = "humantime_serde")]
    pub(super) jitter: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(super) upgrade_check: Option<Duration>,
    drill: Option<RawDrillSchedule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrillSchedule {
    cron: String,
    identities: Vec<PathBuf>,
    scratch_dir: Option<PathBuf>,
    etcd_bin_dir: Option<PathBuf>,
}

/// The schedule, checked against the source and labels it depends on.
pub(super) fn resolve(
    raw: RawSchedule,
    source: &SnapshotSource,
    labels: &BTreeMap<String, String>,
    check_files: bool,
) -> Result<Schedule, ConfigError> {
    let schedule = validate_schedule(raw, check_files)?;
    if schedule.upgrade_check.is_some() && !matches!(source, SnapshotSource::Etcd(_)) {
        return Err(ConfigError::new(
            "schedule.upgrade_check",
            "needs `source.etcd`: the platform version is read from etcd; remove the key",
        ));
    }
    if schedule.upgrade_check.is_some() && labels.contains_key("platform_version") {
        return Err(ConfigError::new(
            "schedule.upgrade_check",
            "`labels.platform_version` overrides the detected version, so upgrades cannot be seen; remove one of the two",
        ));
    }
    Ok(schedule)
}

/// A five-field (or six, seconds first) cron expression that fires within the next year
/// (`0 0 30 2 *` never does) and at most once a minute: a backup or drill every second
/// would pile runs onto the cluster and the store.
fn parse_cron(key: &str, text: &str, now: DateTime<Utc>) -> Result<croner::Cron, ConfigError> {
    let cron = croner::Cron::from_str(text).map_err(|e| {
        ConfigError::new(
            key,
            format!("{text:?} is not a cron expression ({e}); use five fields, e.g. \"0 3 * * *\""),
        )
    })?;
    let never = || {
        ConfigError::new(
            key,
            format!(
                "{text:?} has no occurrence within the next year (a day that does not exist, like 30 February?), so it would never run; use a date that occurs, e.g. \"0 3 * * *\""
            ),
        )
    };
    let first = cron
        .find_next_occurrence(&now, false)
        .map_err(|_| never())?;
    if first - now > TimeDelta::days(366) {
        return Err(never());
    }
    // In a minute that matches, every listed second does: among three occurrences in a
    // row, two fall in one minute when the seconds field lists more than one.
    let mut previous = first;
    for _ in 0..2 {
        let Ok(next) = cron.find_next_occurrence(&previous, false) else {
            break;
        };
        if next - previous < TimeDelta::minutes(1) {
            return Err(ConfigError::new(
                key,
                format!(
                    "{text:?} fires more often than once a minute ({} apart); runs that close pile onto the cluster and the store: use five fields (minute first), e.g. \"0 3 * * *\"",
                    humantime::format_duration((next - previous).to_std().unwrap_or_default())
                ),
            ));
        }
        previous = next;
    }
    Ok(cron)
}

fn validate_drill_schedule(
    raw: RawDrillSchedule,
    check_files: bool,
) -> Result<DrillSchedule, ConfigError> {
    if raw.identities.is_empty() {
        return Err(ConfigError::new(
            "schedule.drill.identities",
            "empty; list the identity files of the snapshot and of the keys archive",
        ));
    }
    if check_files {
        for (i, path) in raw.identities.iter().enumerate() {
            readable_file(&format!("schedule.drill.identities[{i}]"), path)?;
        }
    }
    if let Some(dir) = &raw.etcd_bin_dir
        && check_files
        && !dir.join("etcd").is_file()
    {
        return Err(ConfigError::new(
            "schedule.drill.etcd_bin_dir",
            format!(
                "{} holds no `etcd`; point it at a directory with etcd and etcdutl (or a 3.4 etcdctl)",
                dir.display()
            ),
        ));
    }
    Ok(DrillSchedule {
        cron: parse_cron("schedule.drill.cron", &raw.cron, Utc::now())?,
        cron_text: raw.cron,
        identities: raw.identities,
        host: crate::drill::DrillHost {
            scratch_dir: raw.scratch_dir.unwrap_or_else(|| PathBuf::from("/var/tmp")),
            etcd_bin_dir: raw.etcd_bin_dir,
        },
    })
}

fn validate_schedule(raw: RawSchedule, check_files: bool) -> Result<Schedule, ConfigError> {
    if raw
        .upgrade_check
        .is_some_and(|d| d < Duration::from_secs(1))
    {
        return Err(ConfigError::new(
            "schedule.upgrade_check",
            "must be at least 1s; 5m is a good interval",
        ));
    }
    let cron = parse_cron("schedule.cron", &raw.cron, Utc::now())?;
    Ok(Schedule {
        cron,
        cron_text: raw.cron,
        jitter: raw.jitter.unwrap_or_default(),
        upgrade_check: raw.upgrade_check,
        drill: raw
            .drill
            .map(|d| validate_drill_schedule(d, check_files))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::{TimeZone, Utc};

    use super::super::testing::snapshot_only;
    use super::super::{Purpose, parse};

    #[test]
    fn drill_etcd_bin_dir_must_hold_etcd() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id.key");
        std::fs::write(&key, "AGE-SECRET-KEY-1").unwrap();
        let with = |bin: &Path| {
            format!(
                "{}schedule: {{ cron: \"0 3 * * *\", drill: {{ cron: \"0 5 * * 0\", identities: [\"{}\"], etcd_bin_dir: \"{}\" }} }}\n",
                snapshot_only(),
                key.display(),
                bin.display()
            )
        };
        let err = parse(&with(dir.path()), Purpose::TakeBackups).expect_err("no etcd there");
        assert_eq!(err.key, "schedule.drill.etcd_bin_dir", "{err}");
        assert!(err.problem.contains("holds no `etcd`"), "{err}");
        std::fs::write(dir.path().join("etcd"), "").unwrap();
        let config = parse(&with(dir.path()), Purpose::TakeBackups).expect("etcd is there");
        let drill = config.schedule.unwrap().drill.unwrap();
        assert_eq!(drill.host.etcd_bin_dir.as_deref(), Some(dir.path()));
    }

    #[test]
    fn crons_that_never_fire_or_fire_every_second_are_refused() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 15, 0, 30).unwrap();
        // A leap day 15 months away is past the year too: a backup every four years is no schedule.
        for never in [
            "0 0 30 2 *",
            "0 0 31 4 *",
            "0 0 31 2,4,6,9,11 *",
            "0 0 29 2 *",
        ] {
            let err = super::parse_cron("schedule.cron", never, now).expect_err(never);
            assert_eq!(err.key, "schedule.cron");
            assert!(
                err.problem.contains("no occurrence within the next year"),
                "{err}"
            );
        }
        for often in [
            "* * * * * *",
            "*/30 * * * * *",
            "0,59 0 0 * * *",
            "0,30 0 0 * * *",
        ] {
            let err = super::parse_cron("schedule.drill.cron", often, now).expect_err(often);
            assert!(
                err.problem.contains("more often than once a minute"),
                "{often}: {err}"
            );
        }
        // Once a minute, a six-field cron with one second, once a year are fine.
        for fine in ["* * * * *", "0 */5 * * * *", "0 3 * * *", "0 0 1 1 *"] {
            super::parse_cron("schedule.cron", fine, now).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
    }
}
