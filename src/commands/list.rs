//! `list`: backups in the snapshot target, newest first.

use bytesize::ByteSize;
use serde::Serialize;

use crate::cli::ListArgs;
use crate::config::Config;
use crate::error::{ExitKind, exit_kind};
use crate::manifest::UpgradeInfo;
use crate::store::Target;
use crate::store::catalog::{BackupEntry, DrillSummary, list_backups, read_drill};

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
    /// Taken during an upgrade: it belongs to neither release.
    upgrade: Option<&'a UpgradeInfo>,
    /// Taken past a guard (`--force`, `__POSSIBLY_DIRTY__`).
    dirty: bool,
    /// The newest drill of this backup.
    drill: Option<DrillSummary>,
    /// A manifest is there but cannot be read or used (garbled, forbidden, archived).
    damaged: bool,
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
            upgrade: manifest.and_then(|m| m.upgrade.as_ref()),
            dirty: manifest.is_some_and(|m| m.dirty),
            drill: None,
            damaged: entry.problem.is_some(),
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
    for (entry, listed) in entries.iter().zip(listed.iter_mut()) {
        if let Some(key) = entry.drill_records().first() {
            listed.drill = read_drill(&target, key).await;
        }
    }
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
        "{:<20} {:<20} {:>10} {:>10} {:<10} {:<18} STATUS",
        "ID", "CREATED (UTC)", "STORED", "SNAPSHOT", "PLATFORM", "DRILL"
    );
    for b in &listed {
        let status = match (b.complete, b.problem) {
            (true, _) => {
                let mut status = "complete".to_string();
                if b.trusted == Some(false) {
                    status.push_str(", UNTRUSTED (not signed by an allowed signer)");
                }
                if b.dirty {
                    status.push_str(", DIRTY");
                }
                if let Some(u) = b.upgrade {
                    status.push_str(&format!(
                        ", during upgrade {}→{} ({})",
                        u.from.as_deref().unwrap_or("?"),
                        u.to,
                        u.state
                    ));
                }
                status
            }
            (false, Some(problem)) => format!("DAMAGED: {problem}"),
            (false, None) => "incomplete (no manifest)".to_string(),
        };
        let drill = match &b.drill {
            Some(d) => format!(
                "{} {}",
                if d.ok { "ok" } else { "FAILED" },
                d.at.format("%Y-%m-%d")
            ),
            None => "-".to_string(),
        };
        println!(
            "{:<20} {:<20} {:>10} {:>10} {:<10} {drill:<18} {status}",
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
