//! `status`: is there a recent complete backup? For cron mail, systemd units and
//! monitoring checks that run without `etcd-offsite run`.

use bytesize::ByteSize;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::config::Config;
use crate::error::Stale;
use crate::store::Target;
use crate::store::catalog::list_backups;

#[derive(Debug, Serialize)]
struct Status {
    cluster: String,
    target: String,
    /// The newest complete backup, if any.
    newest_id: Option<String>,
    newest_started_at: Option<DateTime<Utc>>,
    /// Seconds since the newest complete backup started.
    newest_age_seconds: Option<i64>,
    complete: usize,
    /// Directories without a usable manifest (interrupted runs, damaged manifests).
    incomplete: usize,
    /// Bytes stored by complete backups (both artifacts).
    stored_bytes: u64,
    /// The `--max-age` limit in seconds, and whether the newest backup is within it.
    max_age_seconds: Option<u64>,
    fresh: Option<bool>,
}

pub async fn run(config: &Config, args: &StatusArgs) -> anyhow::Result<()> {
    let target = Target::open(&config.targets.snapshot)?;
    let entries = list_backups(&target, &config.cluster).await?;
    let complete: Vec<_> = entries.iter().filter_map(|e| e.manifest.as_ref()).collect();
    let newest = complete.first();
    let now = Utc::now();
    let age = newest.map(|m| (now - m.started_at).num_seconds());
    let fresh = args.max_age.map(|limit| {
        age.is_some_and(|age| u64::try_from(age).map_or(true, |a| a <= limit.as_secs()))
    });
    let status = Status {
        cluster: config.cluster.clone(),
        target: target.url().to_string(),
        newest_id: newest.map(|m| m.id.clone()),
        newest_started_at: newest.map(|m| m.started_at),
        newest_age_seconds: age,
        complete: complete.len(),
        incomplete: entries.len() - complete.len(),
        stored_bytes: complete.iter().map(|m| m.stored_size()).sum(),
        max_age_seconds: args.max_age.map(|d| d.as_secs()),
        fresh,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        match (&status.newest_id, status.newest_age_seconds) {
            (Some(id), Some(age)) => println!(
                "newest complete backup: {id} ({} ago)",
                humantime::format_duration(std::time::Duration::from_secs(age.max(0) as u64))
            ),
            _ => println!("newest complete backup: none"),
        }
        println!(
            "backups: {} complete, {} incomplete; {} stored",
            status.complete,
            status.incomplete,
            ByteSize(status.stored_bytes).display().iec_short()
        );
    }
    match (fresh, args.max_age) {
        (Some(false), Some(limit)) => Err(Stale(format!(
            "no complete backup of cluster {} in {} started within {}; check the backup job's logs",
            config.cluster,
            status.target,
            humantime::format_duration(limit)
        ))
        .into()),
        _ => Ok(()),
    }
}
