//! One file per command; this module dispatches and holds what they share.

mod backup;
mod config_check;
mod list;
mod prune;
mod restore;
mod run;
mod verify;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{self, Purpose};
pub use crate::store::repo::Targets;

/// Loads the config and runs the chosen command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let purpose = match cli.command {
        Command::Backup(_) | Command::Run(_) | Command::Config(_) => Purpose::TakeBackups,
        Command::List(_) | Command::Verify(_) | Command::Restore(_) | Command::Prune(_) => {
            Purpose::ReadBackups
        }
    };
    let config = config::load(&cli.config, purpose)?;
    match cli.command {
        Command::Backup(args) => backup::run(&config, &args).await,
        Command::List(args) => list::run(&config, &args).await,
        Command::Verify(args) => verify::run(&config, &args).await,
        Command::Restore(args) => restore::run(&config, &args).await,
        Command::Prune(args) => prune::run(&config, &args).await,
        Command::Run(args) => run::run(&config, &args).await,
        Command::Config(ConfigCommand::Check { connect }) => {
            config_check::run(&config, &cli.config, connect).await
        }
    }
}
