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

use anyhow::Context;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{self, Config, Purpose};
use crate::store::Target;

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
    match cli.command {
        Command::Backup(args) => backup::run(&config, &args).await,
        Command::List(args) => list::run(&config, &args).await,
        Command::Verify(args) => verify::run(&config, &args).await,
        Command::Restore(args) => restore::run(&config, &args).await,
        Command::Prune(args) => prune::run(&config, &args).await,
        Command::Run(args) => run::run(&config, &args).await,
        Command::Status(args) => status::run(&config, &args).await,
        Command::Drill(args) => drill::run(&config, &args).await,
        Command::Config(ConfigCommand::Check { connect }) => {
            config_check::run(&config, &cli.config, connect).await
        }
    }
}

/// The snapshot target and the static resources target (often the same store).
pub struct Targets {
    pub snapshot: Target,
    pub static_resources: Target,
}

impl Targets {
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let snapshot = Target::open(&config.targets.snapshot).context("snapshot target")?;
        let static_resources = if config.targets.static_resources.url == config.targets.snapshot.url
            && config.targets.static_resources.options == config.targets.snapshot.options
        {
            snapshot.clone()
        } else {
            Target::open(&config.targets.static_resources).context("static resources target")?
        };
        Ok(Self {
            snapshot,
            static_resources,
        })
    }

    /// The keys archive lives in another location than the snapshot (so a manifest copy goes there too).
    pub fn split(&self) -> bool {
        self.static_resources.url() != self.snapshot.url()
    }

    /// The target that holds an artifact of a manifest.
    pub fn for_artifact(&self, name: &str) -> &Target {
        if name == "snapshot" {
            &self.snapshot
        } else {
            &self.static_resources
        }
    }
}
