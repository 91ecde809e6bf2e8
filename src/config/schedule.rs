//! `schedule`: the scheduler's crons (backups, drills), jitter and the upgrade check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

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
    pub scratch_dir: PathBuf,
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

/// A five-field (or six, seconds first) cron expression.
fn parse_cron(key: &str, text: &str) -> Result<croner::Cron, ConfigError> {
    croner::Cron::from_str(text).map_err(|e| {
        ConfigError::new(
            key,
            format!("{text:?} is not a cron expression ({e}); use five fields, e.g. \"0 3 * * *\""),
        )
    })
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
    Ok(DrillSchedule {
        cron: parse_cron("schedule.drill.cron", &raw.cron)?,
        cron_text: raw.cron,
        identities: raw.identities,
        scratch_dir: raw.scratch_dir.unwrap_or_else(|| PathBuf::from("/var/tmp")),
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
    let cron = parse_cron("schedule.cron", &raw.cron)?;
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
