//! Command-line definitions only; commands resolve these into settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Ship etcd backups off the cluster: snapshot → zstd → age → object storage.
#[derive(Debug, Parser)]
// `-V`/`--version`: the version, git commit and build date (build.rs).
#[command(name = "etcd-offsite", version = env!("ETCD_OFFSITE_VERSION_LINE"), about)]
pub struct Cli {
    /// Configuration file (YAML, `version: 1`).
    #[arg(
        long,
        global = true,
        env = "ETCD_OFFSITE_CONFIG",
        default_value = "/etc/etcd-offsite/config.yaml"
    )]
    pub config: PathBuf,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// After the command, write its metrics (Prometheus text) atomically to this file, for
    /// node_exporter's textfile collector (e.g. /var/lib/node_exporter/textfile/etcd-offsite-backup.prom).
    #[arg(long, global = true, env = "ETCD_OFFSITE_METRICS_TEXTFILE")]
    pub metrics_textfile: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take one backup now; prints the backup id as the last line of stdout.
    Backup(BackupArgs),
    /// List backups in the target, newest first.
    List(ListArgs),
    /// Check that backups are intact (with identities: decrypt and check contents too).
    Verify(VerifyArgs),
    /// Restore a backup as the snapshot + static resources pair cluster-restore.sh takes.
    Restore(RestoreArgs),
    /// Apply the retention policy.
    Prune(PruneArgs),
    /// Run as a scheduler: backups on `schedule`, prune after each, metrics.
    Run(RunArgs),
    /// Age of the newest complete backup and drill, counts and sizes; exit 5 when too old.
    Status(StatusArgs),
    /// Restore a backup into a scratch etcd on loopback and check it holds what was recorded.
    Drill(DrillArgs),
    /// Copy complete trusted backups (both artifacts, signature, drill records) to a
    /// replica, checking them there; the copy's manifest is written last.
    Copy(CopyArgs),
    /// An audit report of a period: every backup (times, sizes, signature, stored objects,
    /// drills, lock, retention), schedule gaps and recipients; HTML, JSON or Markdown.
    Report(ReportArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// What the binary tells about itself; these read no config.
    #[command(flatten)]
    About(AboutCommand),
}

/// Commands answered from the command-line definition and the build alone.
#[derive(Debug, Subcommand)]
pub enum AboutCommand {
    /// Print the version, git commit, build date and the etcd-client, object_store and age
    /// versions built in.
    Version {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script on stdout, e.g.
    /// `etcd-offsite completions bash > /etc/bash_completion.d/etcd-offsite`.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page etcd-offsite(1) on stdout, or with -o write it and one page per
    /// subcommand (etcd-offsite-backup.1, ...) into DIR, e.g. /usr/local/share/man/man1.
    Man {
        /// Directory to write every page into (created if missing).
        #[arg(short = 'o', long = "out-dir", value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Print the manifest as JSON instead of the id.
    #[arg(long)]
    pub json: bool,
    /// Do not prune after the backup even when `retention` is configured.
    #[arg(long)]
    pub no_prune: bool,
    /// Take the backup even when a guard would refuse it (cluster younger than 24 h;
    /// OpenShift cluster operators progressing, which marks the backup dirty).
    #[arg(long)]
    pub force: bool,
    /// Skip (exit 4) when a backup started within this window, e.g. `30m`: the same
    /// CronJob on every control-plane host then produces one backup.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub skip_if_newer_than: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Read replica NAME (`replicas:` in the config) instead of the primary targets.
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which backups a command reads.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct Selection {
    /// Backup id (see `list`).
    pub id: Option<String>,
    /// The newest complete backup.
    #[arg(long)]
    pub latest: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Read replica NAME (`replicas:` in the config) instead of the primary targets.
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,
    /// Backup id (see `list`).
    #[arg(conflicts_with_all = ["latest", "all"])]
    pub id: Option<String>,
    /// The newest complete backup (the default).
    #[arg(long, conflicts_with = "all")]
    pub latest: bool,
    /// Every complete backup.
    #[arg(long)]
    pub all: bool,
    /// age identity file; with it, artifacts are decrypted and their contents checked.
    #[arg(long = "identity", short = 'i')]
    pub identities: Vec<PathBuf>,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Read replica NAME (`replicas:` in the config) instead of the primary targets.
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,
    #[command(flatten)]
    pub selection: Selection,
    /// Directory to write snapshot_<ts>.db and static_kuberesources_<ts>.tar.gz into.
    #[arg(
        long,
        required_unless_present = "data_dir",
        conflicts_with = "data_dir"
    )]
    pub to: Option<PathBuf>,
    /// Write an etcd member data directory instead, with the stock `etcdutl snapshot
    /// restore` (`etcdctl` on 3.4): DIR must be empty or absent (e.g. /var/lib/etcd).
    #[arg(
        long,
        value_name = "DIR",
        requires_all = ["name", "initial_cluster", "initial_advertise_peer_urls"],
        conflicts_with = "snapshot_only"
    )]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir: the member's name (etcd --name).
    #[arg(long, requires = "data_dir")]
    pub name: Option<String>,
    /// With --data-dir: the restored cluster, `NAME=PEER_URL,...` (etcd --initial-cluster).
    #[arg(long, requires = "data_dir")]
    pub initial_cluster: Option<String>,
    /// With --data-dir: this member's peer URLs (etcd --initial-advertise-peer-urls).
    #[arg(long, requires = "data_dir")]
    pub initial_advertise_peer_urls: Option<String>,
    /// With --data-dir: the restored cluster's token (the same on every member; etcd's
    /// default `etcd-cluster` when left out).
    #[arg(long, requires = "data_dir")]
    pub initial_cluster_token: Option<String>,
    /// With --data-dir: add N to the restored revision (what OpenShift's restore pod does),
    /// so that clients' watches and caches see every key as changed; needs --mark-compacted.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..),
        requires_all = ["data_dir", "mark_compacted"]
    )]
    pub bump_revision: Option<u64>,
    /// With --bump-revision: mark the bumped revision compacted, so that watches from an
    /// older revision fail and clients relist (etcd takes one flag only with the other).
    #[arg(long, requires_all = ["data_dir", "bump_revision"])]
    pub mark_compacted: bool,
    /// With --data-dir: directory with the etcd release to restore with (`etcdutl`, or a
    /// 3.4 `etcdctl`) instead of those on PATH: use the release the cluster runs.
    #[arg(long, value_name = "DIR", requires = "data_dir")]
    pub etcd_bin_dir: Option<PathBuf>,
    /// age identity files (the snapshot's and the static resources').
    #[arg(long = "identity", short = 'i', required = true)]
    pub identities: Vec<PathBuf>,
    /// Refuse a backup whose platform version is not this one (same z-stream rule).
    #[arg(long)]
    pub expect_version: Option<String>,
    /// Restore even when the platform version differs from --expect-version.
    #[arg(long)]
    pub force: bool,
    /// Restore only the snapshot (no static resources identity needed).
    #[arg(long)]
    pub snapshot_only: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Show what would be deleted without deleting.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Read replica NAME (`replicas:` in the config) instead of the primary targets.
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,
    #[command(flatten)]
    pub selection: Selection,
    /// age identity files (the snapshot's, and the keys archive's to check the encryption keys).
    #[arg(long = "identity", short = 'i', required = true)]
    pub identities: Vec<PathBuf>,
    /// Print the drill record as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the scratch etcd's data goes (needs about twice the snapshot's size); removed afterwards.
    #[arg(long, env = "ETCD_OFFSITE_SCRATCH_DIR", default_value = "/var/tmp")]
    pub scratch_dir: PathBuf,
    /// Directory with the etcd release to drill with (`etcd` and `etcdutl`, or a 3.4
    /// `etcdctl`) instead of those on PATH: use the release the cluster runs.
    #[arg(long, value_name = "DIR")]
    pub etcd_bin_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Read replica NAME (`replicas:` in the config) instead of the primary targets.
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 5 when the newest complete backup started longer ago than this (e.g. `26h`),
    /// or when there is none.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_age: Option<std::time::Duration>,
    /// Exit 5 when the newest successful drill is older than this (e.g. `8d`), or there is none.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_drill_age: Option<std::time::Duration>,
    /// Every cluster found under the snapshot target (one line each), not only this
    /// config's; exit 5 when any is stale.
    #[arg(long)]
    pub all_clusters: bool,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Backup id (see `list`).
    #[arg(conflicts_with_all = ["latest", "all"])]
    pub id: Option<String>,
    /// The newest complete backup (the default).
    #[arg(long, conflicts_with = "all")]
    pub latest: bool,
    /// Every complete backup (oldest first; those already complete in the replica are skipped).
    #[arg(long)]
    pub all: bool,
    /// The replica to copy to (`replicas:` in the config).
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Read replica NAME (`replicas:` in the config) instead of the primary targets.
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,
    /// The period: backups started and drills made within this long before now (e.g. `90d`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "90d")]
    pub since: std::time::Duration,
    /// Output format: one self-contained HTML file, JSON (schema in SPEC.md), or Markdown.
    #[arg(long, value_enum, default_value_t = ReportFormat::Html)]
    pub format: ReportFormat,
    /// Write the report to FILE (atomically: a temporary file in its directory, renamed)
    /// instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Html,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address for the Prometheus metrics endpoint (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration.
    Check {
        /// Also reach etcd and the targets.
        #[arg(long, conflicts_with = "offline")]
        connect: bool,
        /// Check only what needs no host: no certificate, recipients file or directory is
        /// read (paths are checked for shape), for a config written elsewhere (CI, a laptop).
        #[arg(long)]
        offline: bool,
    },
}
