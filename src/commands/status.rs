//! `status`: is there a recent complete backup, and a recent successful drill? For cron
//! mail, systemd units and monitoring checks that run without `etcd-offsite run`.

use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::config::Config;
use crate::error::Stale;
use crate::repo::{Freshness, Repository, Standing, clock};
use crate::settings::StatusSettings;
use crate::telemetry::{ClusterFigures, Metrics, outln};

/// Clusters read at once by a fleet view.
const CLUSTERS_IN_FLIGHT: usize = 4;

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

/// Whether an age is within a limit (None: no limit asked). A time a little ahead (within
/// the clock tolerance) is "just now"; further ahead never counts, and the catalog has
/// kept those out already.
fn within(age: Option<i64>, limit: Option<Duration>) -> Option<bool> {
    let slack = clock::tolerance().num_seconds();
    limit.map(|limit| {
        age.is_some_and(|a| {
            a >= -slack && u64::try_from(a.max(0)).is_ok_and(|a| a <= limit.as_secs())
        })
    })
}

fn ago(age: i64) -> String {
    humantime::format_duration(Duration::from_secs(age.max(0) as u64)).to_string()
}

pub async fn run(config: &Config, args: &StatusSettings) -> anyhow::Result<()> {
    let repo = Repository::reading(config, args.replica.as_deref())?;
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
        outln!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        match (&status.newest_id, newest_age) {
            (Some(id), Some(age)) => outln!("newest complete backup: {id} ({} ago)", ago(age)),
            _ => outln!("newest complete backup: none"),
        }
        match (&status.newest_drill_id, drill_age) {
            (Some(id), Some(age)) => {
                outln!("newest successful drill: of {id} ({} ago)", ago(age))
            }
            _ => outln!("newest successful drill: none"),
        }
        outln!(
            "backups: {} complete, {} incomplete; {} stored",
            status.complete,
            status.incomplete,
            ByteSize(status.stored_bytes).display().iec_short()
        );
        if status.untrusted > 0 {
            outln!(
                "not counted: {} backup(s) not signed by an allowed signer (see `etcd-offsite list`)",
                status.untrusted
            );
        }
        if status.future_dated > 0 {
            outln!(
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

/// One cluster of a fleet view.
#[derive(Debug, Serialize)]
struct ClusterStatus {
    cluster: String,
    /// The newest complete backup, if any.
    newest_id: Option<String>,
    newest_started_at: Option<DateTime<Utc>>,
    newest_finished_at: Option<DateTime<Utc>>,
    newest_age_seconds: Option<i64>,
    /// Bytes stored by the newest complete backup (both artifacts).
    newest_stored_bytes: Option<u64>,
    /// `verified` (signed by a key in signing.allowed_signers) or `not_checked` (signing
    /// is not enforced); null without a complete backup.
    signature: Option<&'static str>,
    /// Newer backups that do not count, e.g. `"<id> (untrusted)"`.
    passed_over: Vec<String>,
    /// The newest successful drill (of a complete backup), if any.
    newest_drill_id: Option<String>,
    newest_drill_at: Option<DateTime<Utc>>,
    newest_drill_age_seconds: Option<i64>,
    /// Backup directories listed, complete or not.
    directories: usize,
    /// Bytes of every object below the cluster's prefix.
    stored_bytes: u64,
    fresh: Option<bool>,
    drill_fresh: Option<bool>,
    /// Older than a limit, or missing.
    stale: bool,
    /// Why it is stale.
    problems: Vec<String>,
}

/// `status --all-clusters --json`.
#[derive(Debug, Serialize)]
struct FleetStatus {
    target: String,
    clusters: Vec<ClusterStatus>,
    /// Names of the stale clusters.
    stale: Vec<String>,
    /// Clusters whose prefix could not be read: name and error.
    unreadable: Vec<(String, String)>,
    /// Prefixes that cannot be cluster names (not read).
    ignored_prefixes: usize,
}

/// `status --all-clusters`: every cluster prefix of the snapshot target, read as far as
/// its newest trusted backup and drill need; writes `metrics_textfile` (per-cluster
/// series) itself, from the same reads.
pub async fn fleet(
    config: &Config,
    args: &StatusSettings,
    metrics_textfile: Option<&Path>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let outcome = fleet_status(config, args).await;
    if let Some(path) = metrics_textfile {
        let metrics = Metrics::new(&config.cluster);
        let ok = matches!(&outcome, Ok((_, None)))
            || matches!(&outcome, Ok((_, Some(e))) if e.downcast_ref::<Stale>().is_some());
        metrics.ran("status", ok, started.elapsed());
        if let Ok((fleet, _)) = &outcome {
            metrics.observe_fleet(
                fleet
                    .clusters
                    .iter()
                    .map(|c| ClusterFigures {
                        cluster: c.cluster.clone(),
                        last_success: c.newest_finished_at,
                        last_stored_bytes: c.newest_stored_bytes,
                        last_drill_success: c.newest_drill_at,
                        stale: c.stale,
                    })
                    .collect(),
            );
        }
        if let Err(e) = metrics.write_textfile(path) {
            tracing::error!(path = %path.display(), error = %e, "could not write the metrics textfile");
        }
    }
    match outcome {
        Ok((_, None)) => Ok(()),
        Ok((_, Some(e))) | Err(e) => Err(e),
    }
}

/// Reads the fleet and prints it; the second part is the command's failure (stale or
/// unreadable clusters), decided after everything was printed.
async fn fleet_status(
    config: &Config,
    args: &StatusSettings,
) -> anyhow::Result<(FleetStatus, Option<anyhow::Error>)> {
    let repo = Repository::reading(config, args.replica.as_deref())?;
    let now = Utc::now();
    let prefixes = repo.cluster_prefixes().await?;
    if prefixes.ignored_count > 0 {
        tracing::warn!(
            count = prefixes.ignored_count,
            examples = %prefixes.ignored.join(", "),
            "prefixes below the snapshot target that cannot be cluster names were not read"
        );
    }
    let read: Vec<(String, anyhow::Result<Freshness>)> = futures::stream::iter(prefixes.clusters)
        .map(|cluster| {
            let repo = repo.for_cluster(&cluster);
            async move {
                let freshness = repo.freshness(now).await;
                (cluster, freshness)
            }
        })
        .buffered(CLUSTERS_IN_FLIGHT)
        .collect()
        .await;
    // As for one cluster: a host clock behind the store would make old backups look fresh.
    let newest_modified = read
        .iter()
        .filter_map(|(_, f)| f.as_ref().ok().and_then(|f| f.newest_modified))
        .max();
    clock::check_not_behind(repo.url(), newest_modified)?;

    let mut clusters = Vec::new();
    let mut unreadable = Vec::new();
    for (cluster, freshness) in read {
        match freshness {
            Ok(f) if !f.is_cluster => {
                tracing::debug!(prefix = %cluster, "no backup directory and no lock: not a cluster");
            }
            Ok(f) => clusters.push(cluster_status(cluster, f, now, args, repo.trust_enforced())),
            Err(e) => unreadable.push((cluster, format!("{e:#}"))),
        }
    }
    let fleet = FleetStatus {
        target: repo.url().to_string(),
        stale: clusters
            .iter()
            .filter(|c| c.stale)
            .map(|c| c.cluster.clone())
            .collect(),
        clusters,
        unreadable,
        ignored_prefixes: prefixes.ignored_count,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&fleet)?);
    } else {
        print_fleet(&fleet);
    }
    let failure = if !fleet.unreadable.is_empty() {
        Some(anyhow::anyhow!(
            "{} cluster(s) in {} could not be read: {}; check the store's permissions for those prefixes and run again",
            fleet.unreadable.len(),
            fleet.target,
            fleet
                .unreadable
                .iter()
                .map(|(c, e)| format!("{c} ({e})"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else if !fleet.stale.is_empty() {
        Some(
            Stale(format!(
                "{} of {} cluster(s) in {} stale: {}",
                fleet.stale.len(),
                fleet.clusters.len(),
                fleet.target,
                fleet
                    .clusters
                    .iter()
                    .filter(|c| c.stale)
                    .map(|c| format!("{} ({})", c.cluster, c.problems.join("; ")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into(),
        )
    } else {
        None
    };
    Ok((fleet, failure))
}

fn cluster_status(
    cluster: String,
    f: Freshness,
    now: DateTime<Utc>,
    args: &StatusSettings,
    signed: bool,
) -> ClusterStatus {
    let summary = f.newest.as_ref().and_then(|e| e.summary.as_ref());
    let newest_age = f
        .newest
        .as_ref()
        .map(|e| (now - e.started_at()).num_seconds());
    let drill_age = f.drill.as_ref().map(|(_, d)| (now - d.at).num_seconds());
    let fresh = within(newest_age, args.max_age);
    let drill_fresh = within(drill_age, args.max_drill_age);
    let mut problems = Vec::new();
    if let (Some(false), Some(limit)) = (fresh, args.max_age) {
        let mut why = format!(
            "no complete backup started within {}",
            humantime::format_duration(limit)
        );
        if !f.passed_over.is_empty() {
            why.push_str(&format!(
                ", newer ones do not count: {}",
                f.passed_over.join(", ")
            ));
        }
        problems.push(why);
    }
    if let (Some(false), Some(limit)) = (drill_fresh, args.max_drill_age) {
        problems.push(format!(
            "no successful drill within {}",
            humantime::format_duration(limit)
        ));
    }
    ClusterStatus {
        cluster,
        newest_id: f.newest.as_ref().map(|e| e.id.clone()),
        newest_started_at: f.newest.as_ref().map(|e| e.started_at()),
        newest_finished_at: summary.map(|s| s.finished_at),
        newest_age_seconds: newest_age,
        newest_stored_bytes: summary.map(|s| s.stored_size),
        signature: f
            .newest
            .as_ref()
            .map(|_| if signed { "verified" } else { "not_checked" }),
        passed_over: f.passed_over,
        newest_drill_id: f.drill.as_ref().map(|(id, _)| id.clone()),
        newest_drill_at: f.drill.as_ref().map(|(_, d)| d.at),
        newest_drill_age_seconds: drill_age,
        directories: f.directories,
        stored_bytes: f.listed_bytes,
        fresh,
        drill_fresh,
        stale: !problems.is_empty(),
        problems,
    }
}

/// One line per cluster, columns aligned.
fn print_fleet(fleet: &FleetStatus) {
    let mut rows = vec![[
        "CLUSTER".to_string(),
        "NEWEST BACKUP".into(),
        "AGE".into(),
        "SIZE".into(),
        "SIGNATURE".into(),
        "DRILL".into(),
        "STATE".into(),
    ]];
    for c in &fleet.clusters {
        let signature = match (c.signature, c.passed_over.is_empty()) {
            (Some(s), true) => s.to_string(),
            (Some(s), false) => format!("{s} ({} newer not counted)", c.passed_over.len()),
            (None, true) => "-".into(),
            (None, false) => format!("{} not counted", c.passed_over.len()),
        };
        rows.push([
            c.cluster.clone(),
            c.newest_id.clone().unwrap_or_else(|| "none".into()),
            c.newest_age_seconds.map_or("-".into(), ago),
            c.newest_stored_bytes.map_or("-".into(), |b| {
                ByteSize(b).display().iec_short().to_string()
            }),
            signature,
            c.newest_drill_age_seconds
                .map_or("none".into(), |a| format!("{} ago", ago(a))),
            if c.stale {
                format!("STALE: {}", c.problems.join("; "))
            } else {
                "ok".into()
            },
        ]);
    }
    for (cluster, error) in &fleet.unreadable {
        rows.push([
            cluster.clone(),
            "?".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            format!("UNREADABLE: {error}"),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        outln!("{}", line.trim_end());
    }
    if fleet.clusters.is_empty() && fleet.unreadable.is_empty() {
        outln!("no cluster found under {}", fleet.target);
    }
}
