//! `run`: the scheduler. Backups on `schedule.cron` (UTC) plus jitter, prune after each,
//! Prometheus metrics on `/metrics`.

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use tokio::net::TcpListener;

use super::Targets;
use crate::cli::RunArgs;
use crate::config::{Config, SnapshotSource};
use crate::error::{ConfigError, ExitKind, exit_kind};
use crate::telemetry::Metrics;

pub async fn run(config: &Config, args: &RunArgs) -> anyhow::Result<()> {
    let schedule = config.schedule.as_ref().ok_or_else(|| {
        ConfigError::new(
            "schedule",
            "missing: `run` needs `schedule.cron`, e.g. \"0 3 * * *\"",
        )
    })?;
    let targets = Targets::open(config)?;
    let metrics = Arc::new(Metrics::new());
    // A restart must not make the newest backup look missing until the next one.
    if let Err(e) = metrics
        .seed_from_store(&targets.snapshot, &config.cluster)
        .await
    {
        tracing::warn!(error = %format!("{e:#}"), "cannot read the target for the metrics' starting values");
    }
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
    let shutdown = shutdown();
    tokio::pin!(shutdown);
    loop {
        let next = schedule
            .cron
            .find_next_occurrence(&Utc::now(), false)
            .context("schedule.cron has no next occurrence")?;
        let jitter_ms = u64::try_from(schedule.jitter.as_millis()).unwrap_or(u64::MAX);
        let jitter = std::time::Duration::from_millis(if jitter_ms == 0 {
            0
        } else {
            rand::random_range(0..=jitter_ms)
        });
        let due =
            tokio::time::Instant::now() + (next - Utc::now()).to_std().unwrap_or_default() + jitter;
        tracing::info!(next = %next.to_rfc3339(), jitter = ?jitter, "next backup");
        let reason = loop {
            let drill_due = schedule.drill.as_ref().and_then(|d| {
                let at = d.cron.find_next_occurrence(&Utc::now(), false).ok()?;
                Some(tokio::time::Instant::now() + (at - Utc::now()).to_std().unwrap_or_default())
            });
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break "schedule",
                _ = sleep_until_some(drill_due) => {
                    if let Some(drill) = &schedule.drill {
                        drill_newest(config, &targets, drill, &metrics).await;
                    }
                }
                _ = tick(&mut upgrade_check) => {
                    // Another host may have backed up the new version already.
                    let recorded = newest_platform_version(config, &targets).await;
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
        let not_before = (reason == "schedule").then_some(next);
        let backup = super::backup::execute(config, &targets, false, not_before);
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
        metrics.last_duration.set(started.elapsed().as_secs_f64());
        match outcome {
            Ok(manifest) => {
                metrics.count_backup("success");
                metrics.ran("backup", true);
                if let Err(e) = super::backup::prune_after(config, &targets, &manifest.id).await {
                    tracing::error!(error = %format!("{e:#}"), "prune failed");
                }
            }
            Err(e) if exit_kind(&e) == ExitKind::Refused => {
                metrics.count_backup("skipped");
                metrics.ran("backup", true);
                tracing::info!(reason = %format!("{e:#}"), "backup skipped");
            }
            Err(e) => {
                metrics.count_backup("failure");
                metrics.ran("backup", false);
                tracing::error!(error = %format!("{e:#}"), "backup failed");
            }
        }
        if let Err(e) = metrics
            .seed_from_store(&targets.snapshot, &config.cluster)
            .await
        {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the target for the metrics");
        }
        if stopping {
            tracing::info!("shutting down");
            return Ok(());
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

/// `schedule.drill`: drills the newest (trusted) backup and records the outcome.
async fn drill_newest(
    config: &Config,
    targets: &Targets,
    drill: &crate::config::DrillSchedule,
    metrics: &Metrics,
) {
    tracing::info!(cron = %drill.cron_text, "scheduled drill starting");
    let outcome =
        super::drill::execute(config, targets, None, &drill.identities, &drill.host).await;
    let result = match outcome {
        Ok((record, stored)) => {
            if let Err(e) = stored {
                tracing::error!(error = %format!("{e:#}"), "the drill's record could not be stored");
            }
            match super::drill::outcome(&record) {
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
    metrics.ran("drill", result == "success");
    if let Err(e) = metrics
        .seed_from_store(&targets.snapshot, &config.cluster)
        .await
    {
        tracing::warn!(error = %format!("{e:#}"), "cannot read the target for the metrics");
    }
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

/// The platform version of the newest complete backup in the target.
async fn newest_platform_version(config: &Config, targets: &Targets) -> Option<String> {
    match crate::store::catalog::list_backups(&targets.snapshot, &config.cluster).await {
        Ok(entries) => entries
            .into_iter()
            .find_map(|e| e.manifest)
            .and_then(|m| m.platform_version),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the newest backup's platform version");
            None
        }
    }
}

/// The cluster's platform version when it differs from the recorded one.
async fn upgraded(config: &Config, recorded: Option<&str>) -> Option<String> {
    let SnapshotSource::Etcd(etcd) = &config.source else {
        return None;
    };
    let mut member = match super::backup::first_healthy(etcd, 0).await {
        Ok((_, member)) => member,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "upgrade check: etcd unavailable");
            return None;
        }
    };
    let current = member.cluster_facts().await.platform_version?;
    (Some(current.as_str()) != recorded).then_some(current)
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
