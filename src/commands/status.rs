//! `status`: is there a recent complete backup, and a recent successful drill? For cron
//! mail, systemd units and monitoring checks that run without `etcd-offsite run`.

use std::time::Duration;

use bytesize::ByteSize;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::config::Config;
use crate::error::Stale;
use crate::store::Target;
use crate::store::catalog::{list_backups, newest_successful_drill};

#[derive(Debug, Serialize)]
struct Status {
    cluster: String,
    target: String,
    /// The newest complete backup, if any.
    newest_id: Option<String>,
    newest_started_at: Option<DateTime<Utc>>,
    /// Seconds since the newest complete backup started.
    newest_age_seconds: Option<i64>,
    /// The newest successful drill (of any backup), if any.
    newest_drill_id: Option<String>,
    newest_drill_at: Option<DateTime<Utc>>,
    newest_drill_age_seconds: Option<i64>,
    complete: usize,
    /// Directories without a usable manifest (interrupted runs, damaged manifests).
    incomplete: usize,
    /// Bytes stored by complete backups (both artifacts).
    stored_bytes: u64,
    /// Whether the newest backup (and drill) are within `--max-age` (`--max-drill-age`).
    fresh: Option<bool>,
    drill_fresh: Option<bool>,
}

pub async fn run(config: &Config, args: &StatusArgs) -> anyhow::Result<()> {
    let target = Target::open(&config.targets.snapshot)?;
    let entries = list_backups(&target, &config.cluster).await?;
    let complete: Vec<_> = entries.iter().filter_map(|e| e.manifest.as_ref()).collect();
    let newest = complete.first();
    let now = Utc::now();
    let age_of = |at: DateTime<Utc>| (now - at).num_seconds();

    let newest_drill = newest_successful_drill(&target, &entries)
        .await
        .map(|(id, drill)| (id, drill.at));

    let within = |age: Option<i64>, limit: Option<Duration>| {
        limit.map(|limit| {
            age.is_some_and(|a| u64::try_from(a).map_or(true, |a| a <= limit.as_secs()))
        })
    };
    let newest_age = newest.map(|m| age_of(m.started_at));
    let drill_age = newest_drill.as_ref().map(|(_, at)| age_of(*at));
    let status = Status {
        cluster: config.cluster.clone(),
        target: target.url().to_string(),
        newest_id: newest.map(|m| m.id.clone()),
        newest_started_at: newest.map(|m| m.started_at),
        newest_age_seconds: newest_age,
        newest_drill_id: newest_drill.as_ref().map(|(id, _)| id.clone()),
        newest_drill_at: newest_drill.as_ref().map(|(_, at)| *at),
        newest_drill_age_seconds: drill_age,
        complete: complete.len(),
        incomplete: entries.len() - complete.len(),
        stored_bytes: complete.iter().map(|m| m.stored_size()).sum(),
        fresh: within(newest_age, args.max_age),
        drill_fresh: within(drill_age, args.max_drill_age),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        let ago = |age: i64| humantime::format_duration(Duration::from_secs(age.max(0) as u64));
        match (&status.newest_id, newest_age) {
            (Some(id), Some(age)) => println!("newest complete backup: {id} ({} ago)", ago(age)),
            _ => println!("newest complete backup: none"),
        }
        match (&status.newest_drill_id, drill_age) {
            (Some(id), Some(age)) => {
                println!("newest successful drill: of {id} ({} ago)", ago(age))
            }
            _ => println!("newest successful drill: none"),
        }
        println!(
            "backups: {} complete, {} incomplete; {} stored",
            status.complete,
            status.incomplete,
            ByteSize(status.stored_bytes).display().iec_short()
        );
    }
    let mut stale = Vec::new();
    if let (Some(false), Some(limit)) = (status.fresh, args.max_age) {
        stale.push(format!(
            "no complete backup started within {}; check the backup job's logs",
            humantime::format_duration(limit)
        ));
    }
    if let (Some(false), Some(limit)) = (status.drill_fresh, args.max_drill_age) {
        stale.push(format!(
            "no successful drill within {}; run `etcd-offsite drill --latest` on the recovery host",
            humantime::format_duration(limit)
        ));
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(Stale(format!(
            "cluster {} in {}: {}",
            config.cluster,
            status.target,
            stale.join("; ")
        ))
        .into())
    }
}
