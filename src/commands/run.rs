//! `run`: the scheduler. Backups on `schedule.cron` (UTC) plus jitter, prune after each,
//! Prometheus metrics on `/metrics`.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;

use crate::config::{Config, SnapshotSource};
use crate::error::refusal;
use crate::ops::backup::{BackupOptions, first_healthy, take};
use crate::pipeline::Identities;
use crate::repo::{Repository, Selection};
use crate::settings::RunSettings;
use crate::telemetry::Metrics;

pub async fn run(config: &Config, args: &RunSettings) -> anyhow::Result<()> {
    let schedule = &args.schedule;
    let repo = Repository::primary(config)?;
    let metrics = Arc::new(Metrics::new(&config.cluster));
    // A restart must not make the newest backup look missing until the next one.
    observe(&repo, &metrics).await;
    let listener = TcpListener::bind(&args.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics endpoint {}", args.metrics_listen))?;
    let render = {
        let metrics = metrics.clone();
        move || metrics.render()
    };
    tokio::spawn(crate::telemetry::serve_metrics(
        listener,
        render,
        crate::telemetry::ServeLimits::default(),
    ));
    tracing::info!(cron = %schedule.cron_text, jitter = ?schedule.jitter, metrics = %args.metrics_listen, "scheduler started");
    let mut upgrade_check = schedule.upgrade_check.map(tokio::time::interval);
    // One listener for the whole run, so a SIGTERM that comes during a backup is not lost.
    let shutdown = crate::ops::stop_signal();
    tokio::pin!(shutdown);
    loop {
        // `config check` refuses a cron that never fires; one that runs out (a year
        // listed in a six-field cron) stops only its own schedule, said in the log.
        let next = next_occurrence(&schedule.cron, &schedule.cron_text, "schedule.cron");
        let jitter_ms = u64::try_from(schedule.jitter.as_millis()).unwrap_or(u64::MAX);
        let jitter = std::time::Duration::from_millis(if jitter_ms == 0 {
            0
        } else {
            rand::random_range(0..=jitter_ms)
        });
        let due = next.map(|next| {
            tracing::info!(next = %next.to_rfc3339(), jitter = ?jitter, "next backup");
            tokio::time::Instant::now() + (next - Utc::now()).to_std().unwrap_or_default() + jitter
        });
        let reason = loop {
            let drill_due = schedule.drill.as_ref().and_then(|d| {
                let at = next_occurrence(&d.cron, &d.cron_text, "schedule.drill.cron")?;
                Some(tokio::time::Instant::now() + (at - Utc::now()).to_std().unwrap_or_default())
            });
            tokio::select! {
                _ = sleep_until_some(due) => break "schedule",
                _ = sleep_until_some(drill_due) => {
                    if let Some(drill) = &schedule.drill {
                        drill_newest(&repo, drill, &metrics).await;
                    }
                }
                _ = tick(&mut upgrade_check) => {
                    // Another host may have backed up the new version already.
                    let recorded = newest_platform_version(&repo).await;
                    if let Some(version) = upgraded(config, recorded.as_deref()).await {
                        tracing::info!(%version, "platform version changed since the last backup");
                        break "upgrade";
                    }
                }
                _ = &mut shutdown => {
                    tracing::info!("shutting down");
                    return Ok(());
                }
            }
        };
        tracing::info!(reason, "backup starting");
        let started = std::time::Instant::now();
        // Any host's backup since this slot's time serves it; an upgrade needs a fresh one.
        let not_before = next.filter(|_| reason == "schedule");
        let options = BackupOptions {
            force: false,
            not_before,
        };
        let backup = take(config, &repo, options);
        tokio::pin!(backup);
        let mut stopping = false;
        let outcome = tokio::select! {
            outcome = &mut backup => outcome,
            _ = &mut shutdown => {
                // Stopping mid-upload would leave the lock held for its TTL: finish first
                // (give the pod or unit a stop timeout longer than a backup).
                tracing::warn!("asked to stop: finishing the running backup first");
                stopping = true;
                backup.await
            }
        };
        let took = started.elapsed();
        match outcome {
            Ok(manifest) => {
                metrics.count_backup("success");
                metrics.ran("backup", true, took);
                let policy = config.retention.as_ref();
                let started = std::time::Instant::now();
                let pruned = crate::ops::prune::after_backup(policy, &repo, &manifest.id).await;
                if let Err(e) = &pruned {
                    tracing::error!(error = %format!("{e:#}"), "prune failed");
                }
                if policy.is_some() {
                    metrics.ran("prune", pruned.is_ok(), started.elapsed());
                }
            }
            // Another host did (or does) this slot's backup: a skip, not a failure.
            Err(e) if refusal(&e).is_some_and(|r| r.routine()) => {
                metrics.count_backup("skipped");
                metrics.ran("backup", true, took);
                tracing::info!(reason = %format!("{e:#}"), "backup skipped");
            }
            // Clocks apart and every other failure need a human.
            Err(e) => {
                metrics.count_backup("failure");
                metrics.ran("backup", false, took);
                tracing::error!(error = %format!("{e:#}"), "backup failed");
            }
        }
        observe(&repo, &metrics).await;
        if stopping {
            tracing::info!("shutting down");
            return Ok(());
        }
    }
}

/// The next time `cron` fires, or None (logged) when it never does again.
fn next_occurrence(cron: &croner::Cron, text: &str, key: &str) -> Option<DateTime<Utc>> {
    match cron.find_next_occurrence(&Utc::now(), false) {
        Ok(at) => Some(at),
        Err(e) => {
            tracing::error!(%key, cron = %text, error = %e, "this schedule has no next occurrence and will not run again; fix it in the config (the other schedules go on)");
            None
        }
    }
}

/// Sleeps until `at`, or forever without it.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The metrics' figures of what the repository holds.
async fn observe(repo: &Repository, metrics: &Metrics) {
    match crate::ops::store_figures(repo).await {
        Ok(figures) => metrics.observe("run", &figures),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the target for the metrics")
        }
    }
}

/// `schedule.drill`: drills the newest trusted backup and records the outcome.
async fn drill_newest(repo: &Repository, drill: &crate::config::DrillSchedule, metrics: &Metrics) {
    tracing::info!(cron = %drill.cron_text, "scheduled drill starting");
    let started = std::time::Instant::now();
    let outcome = match Identities::load(&drill.identities) {
        Ok(identities) => {
            crate::ops::drill::execute(repo, &Selection::Latest, &identities, &drill.host).await
        }
        Err(e) => Err(e.into()),
    };
    let result = match outcome {
        Ok((record, stored)) => {
            if let Err(e) = stored {
                tracing::error!(error = %format!("{e:#}"), "the drill's record could not be stored");
            }
            match crate::ops::drill::outcome(&record) {
                Ok(()) => {
                    tracing::info!(id = %record.backup_id, "drill passed");
                    "success"
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "drill failed");
                    "failure"
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "drill could not run");
            "failure"
        }
    };
    metrics.count_drill(result);
    metrics.ran("drill", result == "success", started.elapsed());
    observe(repo, metrics).await;
}

/// Waits for the next upgrade check, or forever when checks are off.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The platform version of the newest trusted backup (never a future-dated or planted
/// one: a backup taken now must satisfy the trigger, or it would fire again and again).
async fn newest_platform_version(repo: &Repository) -> Option<String> {
    match repo.newest_trusted(Utc::now()).await {
        Ok(newest) => newest
            .and_then(|e| e.summary)
            .and_then(|s| s.platform_version),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the newest backup's platform version");
            None
        }
    }
}

/// The cluster's platform version when it differs from the recorded one.
async fn upgraded(config: &Config, recorded: Option<&str>) -> Option<String> {
    let SnapshotSource::Etcd(etcd) = &config.source else {
        return None;
    };
    let mut member = match first_healthy(etcd, 0).await {
        Ok((_, member)) => member,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "upgrade check: etcd unavailable");
            return None;
        }
    };
    let current = member.cluster_facts().await.platform_version?;
    (Some(current.as_str()) != recorded).then_some(current)
}
