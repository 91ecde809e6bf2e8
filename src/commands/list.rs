//! `list`: backups in the snapshot target, newest first.

use bytesize::ByteSize;
use serde::Serialize;

use crate::cli::ListArgs;
use crate::config::Config;
use crate::store::Target;
use crate::store::catalog::{BackupEntry, list_backups};

#[derive(Serialize)]
struct ListedBackup<'a> {
    id: &'a str,
    created_at: chrono::DateTime<chrono::Utc>,
    complete: bool,
    /// Bytes stored for this backup (both artifacts; for an incomplete one, what the snapshot target holds).
    stored_size: u64,
    snapshot_size: Option<u64>,
    static_resources_size: Option<u64>,
    platform_version: Option<&'a str>,
    /// A manifest is there but cannot be read or used (garbled, forbidden, archived).
    damaged: bool,
    problem: Option<&'a str>,
}

impl<'a> From<&'a BackupEntry> for ListedBackup<'a> {
    fn from(entry: &'a BackupEntry) -> Self {
        let manifest = entry.manifest.as_ref();
        Self {
            id: &entry.id,
            created_at: entry.started_at(),
            complete: entry.complete(),
            stored_size: manifest.map_or_else(|| entry.stored_bytes(), |m| m.stored_size()),
            snapshot_size: manifest.map(|m| m.artifacts.snapshot.plaintext.size),
            static_resources_size: manifest
                .and_then(|m| m.artifacts.static_resources.as_ref())
                .map(|a| a.plaintext.size),
            platform_version: manifest.and_then(|m| m.platform_version.as_deref()),
            damaged: entry.problem.is_some(),
            problem: entry.problem.as_deref(),
        }
    }
}

pub async fn run(config: &Config, args: &ListArgs) -> anyhow::Result<()> {
    let target = Target::open(&config.targets.snapshot)?;
    let entries = list_backups(&target, &config.cluster).await?;
    let listed: Vec<ListedBackup> = entries.iter().map(ListedBackup::from).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<20} {:>10} {:>10} {:<10} STATUS",
        "ID", "CREATED (UTC)", "STORED", "SNAPSHOT", "PLATFORM"
    );
    for b in &listed {
        let status = match (b.complete, b.problem) {
            (true, _) => "complete".to_string(),
            (false, Some(problem)) => format!("DAMAGED: {problem}"),
            (false, None) => "incomplete (no manifest)".to_string(),
        };
        println!(
            "{:<20} {:<20} {:>10} {:>10} {:<10} {status}",
            b.id,
            b.created_at.format("%Y-%m-%d %H:%M:%S"),
            ByteSize(b.stored_size).display().iec_short().to_string(),
            b.snapshot_size.map_or("-".to_string(), |s| ByteSize(s)
                .display()
                .iec_short()
                .to_string()),
            b.platform_version.unwrap_or("-"),
        );
    }
    Ok(())
}
