//! One file per command: each plans, then executes through the repository
//! ([`crate::repo`]) and the shared operations ([`crate::ops`]); none calls another.

mod backup;
mod config_check;
mod copy;
mod drill;
mod list;
mod prune;
mod report;
mod restore;
mod run;
mod status;
mod verify;

use crate::repo::Repository;
use crate::settings::{CommandSettings, Settings};

/// Runs the resolved command, then writes `--metrics-textfile` when asked.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    if let CommandSettings::Status(args) = &settings.command
        && args.all_clusters
    {
        // Per-cluster metrics from the same reads as its output.
        return status::fleet(&settings.config, args, settings.metrics_textfile.as_deref()).await;
    }
    let started = std::time::Instant::now();
    let outcome = dispatch(&settings).await;
    if let Some(path) = &settings.metrics_textfile {
        write_metrics(&settings, &outcome, started.elapsed(), path).await;
    }
    outcome
}

/// `--metrics-textfile`: this run's outcome plus what the repository holds (the newest
/// trusted backup and drill), so the file tells a monitoring system the truth even when
/// this run failed.
async fn write_metrics(
    settings: &Settings,
    outcome: &anyhow::Result<()>,
    duration: std::time::Duration,
    path: &std::path::Path,
) {
    let command = settings.command.name();
    let metrics = crate::telemetry::Metrics::new(&settings.config.cluster);
    let skipped = outcome
        .as_ref()
        .err()
        .and_then(crate::error::refusal)
        .is_some_and(|r| r.routine());
    let result = match outcome {
        Ok(()) => "success",
        Err(_) if skipped => "skipped",
        Err(_) => "failure",
    };
    match command {
        "backup" => metrics.count_backup(result),
        "drill" => metrics.count_drill(result),
        _ => {}
    }
    // A refusal that is a fault of this host (clocks apart) is a failed run.
    metrics.ran(command, outcome.is_ok() || skipped, duration);
    match Repository::primary(&settings.config) {
        Ok(repo) => match crate::ops::store_figures(&repo).await {
            Ok(figures) => metrics.observe(command, &figures),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "metrics textfile: the target could not be read; its figures are left out")
            }
        },
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "metrics textfile: the target could not be opened")
        }
    }
    if let Err(e) = metrics.write_textfile(path) {
        tracing::error!(path = %path.display(), error = %e, "could not write the metrics textfile");
    }
}

async fn dispatch(settings: &Settings) -> anyhow::Result<()> {
    let config = &settings.config;
    if settings.command.takes_backups() {
        // Restores, verifies and drills are recovery work: they run at full speed.
        crate::priority::apply(config.priority);
    }
    match &settings.command {
        CommandSettings::Backup(args) => backup::run(config, args).await,
        CommandSettings::List(args) => list::run(config, args).await,
        CommandSettings::Verify(args) => verify::run(config, args).await,
        CommandSettings::Restore(args) => restore::run(config, args).await,
        CommandSettings::Prune(args) => prune::run(config, args).await,
        CommandSettings::Run(args) => run::run(config, args).await,
        CommandSettings::Status(args) => status::run(config, args).await,
        CommandSettings::Drill(args) => drill::run(config, args).await,
        CommandSettings::Copy(args) => copy::run(config, args).await,
        CommandSettings::Report(args) => report::run(config, args).await,
        CommandSettings::ConfigCheck { connect, offline } => {
            config_check::run(config, &settings.config_path, *connect, *offline).await
        }
    }
}
