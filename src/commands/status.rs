//! `status`: is there a recent complete backup, and a recent successful drill? For cron
//! mail, systemd units and monitoring checks that run without `etcd-offsite run`.

use std::time::Duration;

use bytesize::ByteSize;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::error::Stale;
use crate::repo::{Repository, Standing, clock};
use crate::settings::StatusSettings;

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
    /// Backups that count (with signing: signed by an allowed signer; none future-dated).
    complete: usize,
    /// Directories without a usable manifest (interrupted runs, damaged manifests).
    incomplete: usize,
    /// Backups no allowed signer signed (with `signing.allowed_signers`): never counted.
    untrusted: usize,
    /// Backups dated beyond now plus the clock tolerance: never counted as fresh.
    future_dated: usize,
    /// Bytes stored by complete backups (both artifacts).
    stored_bytes: u64,
    /// Whether the newest backup (and drill) are within `--max-age` (`--max-drill-age`).
    fresh: Option<bool>,
    drill_fresh: Option<bool>,
}

pub async fn run(config: &Config, args: &StatusSettings) -> anyhow::Result<()> {
    let repo = Repository::primary(config)?;
    let now = Utc::now();
    let catalog = repo.catalog(now).await?;
    // Status writes nothing (monitoring may hold read-only credentials): it can tell a
    // host clock behind the store, which would make an old backup look fresh; a clock
    // ahead only makes backups look older (a false alarm, never a missed one).
    clock::check_not_behind(repo.url(), catalog.newest_modified())?;
    let complete: Vec<_> = catalog.trusted().collect();
    let newest = complete.first();
    let age_of = |at: DateTime<Utc>| (now - at).num_seconds();

    let newest_drill = repo
        .newest_successful_drill(&catalog, now)
        .await
        .map(|(id, drill)| (id, drill.at));

    // A time a little ahead (within the clock tolerance) is "just now"; further ahead
    // never counts, and the catalog has kept those out already.
    let slack = clock::tolerance().num_seconds();
    let within = |age: Option<i64>, limit: Option<Duration>| {
        limit.map(|limit| {
            age.is_some_and(|a| {
                a >= -slack && u64::try_from(a.max(0)).is_ok_and(|a| a <= limit.as_secs())
            })
        })
    };
    let newest_age = newest.map(|e| age_of(e.started_at()));
    let drill_age = newest_drill.as_ref().map(|(_, at)| age_of(*at));
    let count = |standing: fn(&Standing) -> bool| {
        catalog
            .entries()
            .iter()
            .filter(|e| standing(&e.standing))
            .count()
    };
    let untrusted = count(|s| matches!(s, Standing::Untrusted(_)));
    let future_dated = count(|s| *s == Standing::FutureDated);
    let status = Status {
        cluster: config.cluster.clone(),
        target: repo.url().to_string(),
        newest_id: newest.map(|e| e.id.clone()),
        newest_started_at: newest.map(|e| e.started_at()),
        newest_age_seconds: newest_age,
        newest_drill_id: newest_drill.as_ref().map(|(id, _)| id.clone()),
        newest_drill_at: newest_drill.as_ref().map(|(_, at)| *at),
        newest_drill_age_seconds: drill_age,
        complete: complete.len(),
        incomplete: catalog.entries().len() - complete.len() - untrusted - future_dated,
        untrusted,
        future_dated,
        stored_bytes: complete
            .iter()
            .filter_map(|e| e.summary.as_ref())
            .map(|s| s.stored_size)
            .sum(),
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
        if status.untrusted > 0 {
            println!(
                "not counted: {} backup(s) not signed by an allowed signer (see `etcd-offsite list`)",
                status.untrusted
            );
        }
        if status.future_dated > 0 {
            println!(
                "not counted: {} backup(s) dated in the future (a host clock ahead, or planted; see `etcd-offsite list`)",
                status.future_dated
            );
        }
    }
    let mut stale = Vec::new();
    if let (Some(false), Some(limit)) = (status.fresh, args.max_age) {
        let mut why = format!(
            "no complete backup started within {}; check the backup job's logs",
            humantime::format_duration(limit)
        );
        if let Some(future) = catalog
            .entries()
            .iter()
            .find(|e| e.standing == Standing::FutureDated)
        {
            why.push_str(&format!(
                " (backup {} is dated {}, in the future: a host whose clock was ahead, or planted; it does not count)",
                future.id,
                future.started_at().to_rfc3339()
            ));
        }
        stale.push(why);
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
