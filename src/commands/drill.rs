//! `drill`: restore a backup into a scratch etcd and prove it holds what was recorded;
//! the outcome is stored as a drill record next to the manifest ([`crate::ops::drill`]).

use anyhow::Context;

use crate::config::Config;
use crate::drill::{DrillHost, DrillRecord};
use crate::error::Stopped;
use crate::ops::drill::{execute, outcome};
use crate::repo::Repository;
use crate::settings::DrillSettings;
use crate::telemetry::outln;

pub async fn run(config: &Config, args: &DrillSettings) -> anyhow::Result<()> {
    let repo = Repository::reading(config, args.replica.as_deref())?;
    let host = DrillHost {
        scratch_dir: args.scratch_dir.clone(),
        etcd_bin_dir: args.etcd_bin_dir.clone(),
    };
    let drill = execute(&repo, &args.selection, &args.identities, &host);
    // A stopped drill stops its scratch etcd and removes its scratch directory (both
    // happen when the drill is dropped), then exits 128 + the signal.
    let (record, stored) = tokio::select! {
        done = drill => done?,
        name = crate::ops::stop_signal() => {
            return Err(Stopped {
                name,
                cleaned: format!(
                    "the drill's etcd was stopped and its scratch directory under {} removed",
                    host.scratch_dir.display()
                ),
            }
            .into());
        }
    };
    print(&record, args.json)?;
    let key = stored.context("the drill ran, but its record could not be stored")?;
    tracing::info!(
        id = %record.backup_id,
        record = %key,
        ok = record.ok,
        peak_rss_bytes = crate::telemetry::peak_rss_bytes(),
        "drill finished"
    );
    outcome(&record)
}

fn print(record: &DrillRecord, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(record)?);
        return Ok(());
    }
    outln!(
        "drill of {}: {}",
        record.backup_id,
        if record.ok { "OK" } else { "FAILED" }
    );
    if let Some(version) = &record.etcd_version {
        outln!("  {:<42} {:<6} {version}", "etcd release used", "");
    }
    for warning in &record.warnings {
        outln!("  warning: {warning}");
    }
    for check in &record.checks {
        let outcome = match check.ok {
            Some(true) => "ok",
            Some(false) => "FAILED",
            None => "n/a",
        };
        outln!("  {:<42} {outcome:<6} {}", check.name, check.detail);
    }
    Ok(())
}
