//! `list`: backups in the snapshot target, newest first.

use bytesize::ByteSize;
use serde::Serialize;

use crate::cli::ListArgs;
use crate::config::Config;
use crate::error::{ExitKind, exit_kind};
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
    problem: Option<&'a str>,
    /// With `signing.allowed_signers`: whether a listed key signed this manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    trusted: Option<bool>,
    /// Why the backup is not trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    untrusted_because: Option<String>,
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
            problem: entry.problem.as_deref(),
            trusted: None,
            untrusted_because: None,
        }
    }
}

pub async fn run(config: &Config, args: &ListArgs) -> anyhow::Result<()> {
    let target = Target::open(&config.targets.snapshot)?;
    let entries = list_backups(&target, &config.cluster).await?;
    let mut listed: Vec<ListedBackup> = entries.iter().map(ListedBackup::from).collect();
    if config.signing.allowed_signers.is_some() {
        for (listed, entry) in listed.iter_mut().zip(&entries) {
            let Some(manifest) = &entry.manifest else {
                continue;
            };
            match crate::signing::require_signed(config, &target, manifest).await {
                Ok(()) => listed.trusted = Some(true),
                Err(e) if exit_kind(&e) == ExitKind::Integrity => {
                    listed.trusted = Some(false);
                    listed.untrusted_because = Some(format!("{e:#}"));
                }
                Err(e) => return Err(e),
            }
        }
    }
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
            (true, _) if b.trusted == Some(false) => {
                "complete, UNTRUSTED (not signed by an allowed signer)".to_string()
            }
            (true, _) => "complete".to_string(),
            (false, Some(problem)) => format!("incomplete: {problem}"),
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
