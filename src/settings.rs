//! The command line and the config, resolved once into what each command runs on
//! (ripgrep's `HiArgs` is the model): flags are checked for meaning here (bounded
//! durations, identity files), so commands never see clap's types.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{self, Config, Purpose};
use crate::duration::bounded_flag;
use crate::error::{ConfigError, UsageError};
use crate::pipeline::Identities;
use crate::repo::Selection;
use crate::retention::RetentionPolicy;

/// `version`, `completions` and `man` are answered by `crate::about` before any config is
/// read; reaching `Settings::resolve` with one is a bug in the caller.
fn reads_no_settings() -> anyhow::Error {
    UsageError("version, completions and man read no settings".to_owned()).into()
}

/// Everything a run of the program needs, resolved.
pub struct Settings {
    pub config_path: PathBuf,
    pub config: Config,
    /// `--metrics-textfile`: where the metrics go after the command.
    pub metrics_textfile: Option<PathBuf>,
    pub command: CommandSettings,
}

/// One command and its resolved settings.
pub enum CommandSettings {
    Backup(BackupSettings),
    List(ListSettings),
    Verify(VerifySettings),
    Restore(RestoreSettings),
    Prune(PruneSettings),
    /// Boxed: a schedule's crons are large.
    Run(Box<RunSettings>),
    Status(StatusSettings),
    Drill(DrillSettings),
    Copy(CopySettings),
    Report(ReportSettings),
    ConfigCheck {
        connect: bool,
        offline: bool,
    },
}

impl CommandSettings {
    /// The command's name, for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Backup(_) => "backup",
            Self::List(_) => "list",
            Self::Verify(_) => "verify",
            Self::Restore(_) => "restore",
            Self::Prune(_) => "prune",
            Self::Run(_) => "run",
            Self::Status(_) => "status",
            Self::Drill(_) => "drill",
            Self::Copy(_) => "copy",
            Self::Report(_) => "report",
            Self::ConfigCheck { .. } => "config",
        }
    }

    /// Backups run next to etcd at the configured priority; recovery work at full speed.
    pub fn takes_backups(&self) -> bool {
        matches!(self, Self::Backup(_) | Self::Run(_))
    }
}

pub struct BackupSettings {
    pub json: bool,
    /// Prune afterwards (a retention policy is configured and `--no-prune` is not given).
    pub prune: Option<RetentionPolicy>,
    pub force: bool,
    pub skip_if_newer_than: Option<Duration>,
}

pub struct ListSettings {
    /// `--replica NAME`: read that replica instead of the primary targets.
    pub replica: Option<String>,
    pub json: bool,
}

/// Which backups `verify` checks or `copy` copies.
pub enum BackupScope {
    One(Selection),
    All,
}

pub struct VerifySettings {
    /// `--replica NAME`: read that replica instead of the primary targets.
    pub replica: Option<String>,
    pub scope: BackupScope,
    pub identities: Identities,
    pub json: bool,
}

pub struct RestoreSettings {
    /// `--replica NAME`: read that replica instead of the primary targets.
    pub replica: Option<String>,
    pub selection: Selection,
    pub into: RestoreInto,
    pub identities: Identities,
    pub expect_version: Option<String>,
    pub force: bool,
}

/// What `restore` writes.
pub enum RestoreInto {
    /// The `snapshot_<ts>.db` + `static_kuberesources_<ts>.tar.gz` pair (or the snapshot
    /// alone) in a directory.
    Pair { to: PathBuf, snapshot_only: bool },
    /// An etcd member data directory, written by `etcdutl snapshot restore`.
    DataDir(MemberRestore),
}

pub struct MemberRestore {
    pub data_dir: PathBuf,
    pub name: String,
    pub initial_cluster: String,
    pub initial_advertise_peer_urls: String,
    pub initial_cluster_token: Option<String>,
    /// `--bump-revision N` (with `--mark-compacted`, which etcd requires with it).
    pub bump_revision: Option<u64>,
    pub etcd_bin_dir: Option<PathBuf>,
}

pub struct PruneSettings {
    pub policy: RetentionPolicy,
    pub dry_run: bool,
    pub json: bool,
}

pub struct RunSettings {
    pub schedule: config::Schedule,
    pub metrics_listen: String,
}

pub struct StatusSettings {
    /// `--replica NAME`: read that replica instead of the primary targets.
    pub replica: Option<String>,
    pub json: bool,
    pub max_age: Option<Duration>,
    pub max_drill_age: Option<Duration>,
    /// Every cluster of the snapshot target.
    pub all_clusters: bool,
}

pub struct CopySettings {
    pub scope: BackupScope,
    /// The replica's name.
    pub to: String,
    pub json: bool,
}

pub use crate::cli::ReportFormat;

pub struct ReportSettings {
    /// `--replica NAME`: read that replica instead of the primary targets.
    pub replica: Option<String>,
    /// The period: this long before now.
    pub since: Duration,
    pub format: ReportFormat,
    /// `-o FILE`: written atomically; stdout otherwise.
    pub output: Option<PathBuf>,
}

pub struct DrillSettings {
    /// `--replica NAME`: read that replica instead of the primary targets.
    pub replica: Option<String>,
    pub selection: Selection,
    pub identities: Identities,
    pub json: bool,
    pub scratch_dir: PathBuf,
    /// The etcd release to drill with instead of the one on PATH.
    pub etcd_bin_dir: Option<PathBuf>,
}

impl Settings {
    /// Loads the config for what the command does and resolves its flags.
    pub fn resolve(cli: Cli) -> anyhow::Result<Self> {
        let purpose = match cli.command {
            // `config check --offline` reads no host file: as a host that reads backups does.
            Command::Config(ConfigCommand::Check { offline: true, .. }) => Purpose::ReadBackups,
            Command::Backup(_) | Command::Run(_) | Command::Config(_) => Purpose::TakeBackups,
            Command::List(_)
            | Command::Verify(_)
            | Command::Restore(_)
            | Command::Prune(_)
            | Command::Status(_)
            | Command::Drill(_)
            | Command::Copy(_)
            | Command::Report(_) => Purpose::ReadBackups,
            Command::About(_) => return Err(reads_no_settings()),
        };
        let config = config::load(&cli.config, purpose)?;
        let command = match cli.command {
            Command::Backup(args) => CommandSettings::Backup(BackupSettings {
                json: args.json,
                prune: config.retention.clone().filter(|_| !args.no_prune),
                force: args.force,
                skip_if_newer_than: args
                    .skip_if_newer_than
                    .map(|d| bounded_flag("--skip-if-newer-than", d))
                    .transpose()?,
            }),
            Command::List(args) => CommandSettings::List(ListSettings {
                replica: args.replica,
                json: args.json,
            }),
            Command::Verify(args) => CommandSettings::Verify(VerifySettings {
                replica: args.replica,
                scope: if args.all {
                    BackupScope::All
                } else {
                    BackupScope::One(selection(args.id))
                },
                identities: Identities::load(&args.identities)?,
                json: args.json,
            }),
            Command::Restore(args) => CommandSettings::Restore(RestoreSettings {
                replica: args.replica,
                selection: selection(args.selection.id),
                into: match (args.data_dir, args.to) {
                    (Some(data_dir), _) => RestoreInto::DataDir(MemberRestore {
                        data_dir,
                        // clap requires these with --data-dir.
                        name: args.name.unwrap_or_default(),
                        initial_cluster: args.initial_cluster.unwrap_or_default(),
                        initial_advertise_peer_urls: args
                            .initial_advertise_peer_urls
                            .unwrap_or_default(),
                        initial_cluster_token: args.initial_cluster_token,
                        bump_revision: args.bump_revision,
                        etcd_bin_dir: args.etcd_bin_dir,
                    }),
                    (None, to) => RestoreInto::Pair {
                        to: to.unwrap_or_default(),
                        snapshot_only: args.snapshot_only,
                    },
                },
                identities: Identities::load(&args.identities)?,
                expect_version: args.expect_version,
                force: args.force,
            }),
            Command::Prune(args) => CommandSettings::Prune(PruneSettings {
                policy: config.retention.clone().ok_or_else(|| {
                    ConfigError::new(
                        "retention",
                        "missing: prune needs a retention policy, e.g. `retention: { keep_daily: 7 }`",
                    )
                })?,
                dry_run: args.dry_run,
                json: args.json,
            }),
            Command::Run(args) => CommandSettings::Run(Box::new(RunSettings {
                schedule: config.schedule.clone().ok_or_else(|| {
                    ConfigError::new(
                        "schedule",
                        "missing: `run` needs `schedule.cron`, e.g. \"0 3 * * *\"",
                    )
                })?,
                metrics_listen: args.metrics_listen,
            })),
            Command::Status(args) => CommandSettings::Status(StatusSettings {
                replica: args.replica,
                json: args.json,
                max_age: args
                    .max_age
                    .map(|d| bounded_flag("--max-age", d))
                    .transpose()?,
                max_drill_age: args
                    .max_drill_age
                    .map(|d| bounded_flag("--max-drill-age", d))
                    .transpose()?,
                all_clusters: args.all_clusters,
            }),
            Command::Drill(args) => CommandSettings::Drill(DrillSettings {
                replica: args.replica,
                selection: selection(args.selection.id),
                identities: Identities::load(&args.identities)?,
                json: args.json,
                scratch_dir: args.scratch_dir,
                etcd_bin_dir: args.etcd_bin_dir,
            }),
            Command::Copy(args) => CommandSettings::Copy(CopySettings {
                scope: if args.all {
                    BackupScope::All
                } else {
                    BackupScope::One(selection(args.id))
                },
                to: args.to,
                json: args.json,
            }),
            Command::Report(args) => CommandSettings::Report(ReportSettings {
                replica: args.replica,
                since: bounded_flag("--since", args.since)?,
                format: args.format,
                output: args.output,
            }),
            Command::About(_) => return Err(reads_no_settings()),
            Command::Config(ConfigCommand::Check { connect, offline }) => {
                CommandSettings::ConfigCheck { connect, offline }
            }
        };
        Ok(Self {
            config_path: cli.config,
            config,
            metrics_textfile: cli.metrics_textfile,
            command,
        })
    }
}

/// An id, or the newest trusted backup (`--latest`, the default).
fn selection(id: Option<String>) -> Selection {
    id.map_or(Selection::Latest, Selection::Id)
}
