//! etcd-offsite: ship etcd backups off the cluster.

mod about;
pub mod cli;
mod commands;
mod config;
mod drill;
mod duration;
pub mod error;
mod ids;
mod kube_encryption;
mod manifest;
mod ops;
mod pipeline;
mod priority;
mod repo;
mod report;
mod retention;
mod settings;
mod signing;
mod source;
mod store;
mod telemetry;

pub use telemetry::print_error;

/// Runs the parsed command line: logging, the settings it resolves to, the async
/// runtime, the command.
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    if let cli::Command::About(command) = &cli.command {
        return about::run(command);
    }
    telemetry::init(cli.log_format, cli.verbose, cli.quiet);
    let settings = settings::Settings::resolve(cli)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    let outcome = runtime.block_on(commands::run(settings));
    // A command stopped by a signal may leave a blocking read behind (a drill's download
    // into a scratch directory already removed): it must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    outcome
}

/// A scratch directory for unit tests; the program itself never writes temporary files.
#[cfg(test)]
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a scratch directory for a test")
}

/// Cases per property test: 256, times the fault suite's `ETCD_OFFSITE_FAULTS_LONG` (1: 5
/// times, a number N > 1: N times) for the long version.
#[cfg(test)]
fn property_cases() -> u32 {
    let scale = match std::env::var("ETCD_OFFSITE_FAULTS_LONG")
        .unwrap_or_default()
        .trim()
    {
        "" | "0" | "false" | "no" => 1,
        other => other.parse::<u32>().ok().filter(|n| *n > 1).unwrap_or(5),
    };
    256 * scale
}

/// The proptest settings of the property tests: [`property_cases`] cases, nothing persisted.
#[cfg(test)]
fn property_config() -> proptest::prelude::ProptestConfig {
    proptest::prelude::ProptestConfig {
        cases: property_cases(),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    }
}
