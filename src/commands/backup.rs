//! `backup`: one backup now, committed by its manifest, then retention.

use chrono::Utc;

use crate::config::Config;
use crate::ops::backup::{BackupOptions, take};
use crate::repo::Repository;
use crate::settings::BackupSettings;
use crate::telemetry::outln;

pub async fn run(config: &Config, args: &BackupSettings) -> anyhow::Result<()> {
    let repo = Repository::primary(config)?;
    let not_before = args.skip_if_newer_than.map(|window| {
        Utc::now() - chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX)
    });
    let options = BackupOptions {
        force: args.force,
        not_before,
    };
    let manifest = take(config, &repo, options).await?;
    if args.json {
        outln!("{}", manifest.to_json());
    } else {
        outln!("{}", manifest.id);
    }
    if let Err(e) = crate::ops::prune::after_backup(args.prune.as_ref(), &repo, &manifest.id).await
    {
        // The backup is committed; a refused delete (object lock) must not mark it failed.
        tracing::error!(error = %format!("{e:#}"), "pruning after the backup failed; run `etcd-offsite prune` for details");
    }
    Ok(())
}
