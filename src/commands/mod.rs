//! One file per command; this module dispatches and holds what they share.

mod backup;
mod config_check;
mod drill;
mod list;
mod prune;
mod restore;
mod run;
mod status;
mod verify;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{self, Config, Purpose};
use crate::store::Target;
pub use crate::store::repo::Targets;

/// Loads the config and runs the chosen command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let purpose = match cli.command {
        Command::Backup(_) | Command::Run(_) | Command::Config(_) => Purpose::TakeBackups,
        Command::List(_)
        | Command::Verify(_)
        | Command::Restore(_)
        | Command::Prune(_)
        | Command::Status(_)
        | Command::Drill(_) => Purpose::ReadBackups,
    };
    let config = config::load(&cli.config, purpose)?;
    let name = command_name(&cli.command);
    let outcome = dispatch(&cli, &config).await;
    if let Some(path) = &cli.metrics_textfile {
        write_metrics(&config, name, &outcome, path).await;
    }
    outcome
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Backup(_) => "backup",
        Command::List(_) => "list",
        Command::Verify(_) => "verify",
        Command::Restore(_) => "restore",
        Command::Prune(_) => "prune",
        Command::Run(_) => "run",
        Command::Status(_) => "status",
        Command::Drill(_) => "drill",
        Command::Config(_) => "config",
    }
}

/// `--metrics-textfile`: this run's outcome plus what the target holds (the newest backup
/// and drill), so the file tells a monitoring system the truth even when this run failed.
async fn write_metrics(
    config: &Config,
    command: &str,
    outcome: &anyhow::Result<()>,
    path: &std::path::Path,
) {
    use crate::error::{ExitKind, exit_kind};
    let metrics = crate::telemetry::Metrics::new();
    let refused = outcome
        .as_ref()
        .err()
        .is_some_and(|e| exit_kind(e) == ExitKind::Refused);
    let result = match outcome {
        Ok(()) => "success",
        Err(_) if refused => "skipped",
        Err(_) => "failure",
    };
    match command {
        "backup" => metrics.count_backup(result),
        "drill" => metrics.count_drill(result),
        _ => {}
    }
    metrics.ran(command, outcome.is_ok() || refused);
    match Target::open(&config.targets.snapshot) {
        Ok(target) => {
            if let Err(e) = metrics.seed_from_store(&target, &config.cluster).await {
                tracing::warn!(error = %format!("{e:#}"), "metrics textfile: the target could not be read; its figures are left out");
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics textfile: the target could not be opened"),
    }
    if let Err(e) = metrics.write_textfile(path) {
        tracing::error!(path = %path.display(), error = %e, "could not write the metrics textfile");
    }
}

async fn dispatch(cli: &Cli, config: &Config) -> anyhow::Result<()> {
    if matches!(cli.command, Command::Backup(_) | Command::Run(_)) {
        // Restores, verifies and drills are recovery work: they run at full speed.
        crate::priority::apply(config.priority);
    }
    match &cli.command {
        Command::Backup(args) => backup::run(config, args).await,
        Command::List(args) => list::run(config, args).await,
        Command::Verify(args) => verify::run(config, args).await,
        Command::Restore(args) => restore::run(config, args).await,
        Command::Prune(args) => prune::run(config, args).await,
        Command::Run(args) => run::run(config, args).await,
        Command::Status(args) => status::run(config, args).await,
        Command::Drill(args) => drill::run(config, args).await,
        Command::Config(ConfigCommand::Check { connect }) => {
            config_check::run(config, &cli.config, *connect).await
        }
    }
}
