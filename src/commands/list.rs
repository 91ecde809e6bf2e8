//! `list`: backups in the snapshot target, newest first, as the catalog classifies them.

use bytesize::ByteSize;
use chrono::Utc;
use serde::Serialize;

use crate::config::Config;
use crate::manifest::UpgradeInfo;
use crate::repo::{DrillSummary, Entry, Repository, Standing};
use crate::settings::ListSettings;
use crate::telemetry::outln;

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
    /// `complete`, `future_dated`, `untrusted`, `damaged` or `incomplete`: only complete
    /// backups count for retention, `--latest`, skip checks, `status` and the metrics.
    standing: &'static str,
    /// Its start time lies beyond now plus the clock tolerance (a host clock ahead, or
    /// planted): it never counts as fresh.
    future_dated: bool,
    /// With `signing.allowed_signers`: whether a listed key signed this manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    trusted: Option<bool>,
    /// Why the backup is not trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    untrusted_because: Option<&'a str>,
}

impl<'a> ListedBackup<'a> {
    fn new(entry: &'a Entry, signing: bool) -> Self {
        let summary = entry.summary.as_ref();
        let problem = match &entry.standing {
            Standing::Damaged(problem) => Some(problem.as_str()),
            _ => None,
        };
        let untrusted_because = match &entry.standing {
            Standing::Untrusted(why) => Some(why.as_str()),
            _ => None,
        };
        Self {
            id: &entry.id,
            created_at: entry.started_at(),
            complete: summary.is_some(),
            stored_size: summary.map_or_else(|| entry.stored_bytes(), |s| s.stored_size),
            snapshot_size: summary.map(|s| s.snapshot_size),
            static_resources_size: summary.and_then(|s| s.static_resources_size),
            platform_version: summary.and_then(|s| s.platform_version.as_deref()),
            upgrade: summary.and_then(|s| s.upgrade.as_ref()),
            dirty: summary.is_some_and(|s| s.dirty),
            drill: None,
            damaged: problem.is_some(),
            problem,
            standing: entry.standing.as_str(),
            future_dated: entry.standing == Standing::FutureDated,
            trusted: (signing && summary.is_some()).then_some(untrusted_because.is_none()),
            untrusted_because,
        }
    }
}

pub async fn run(config: &Config, args: &ListSettings) -> anyhow::Result<()> {
    let repo = Repository::reading(config, args.replica.as_deref())?;
    let now = Utc::now();
    let catalog = repo.catalog(now).await?;
    let mut listed: Vec<ListedBackup> = catalog
        .entries()
        .iter()
        .map(|e| ListedBackup::new(e, repo.trust_enforced()))
        .collect();
    for (entry, listed) in catalog.entries().iter().zip(listed.iter_mut()) {
        listed.drill = repo.newest_drill_of(entry, now).await;
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(());
    }
    outln!(
        "{:<20} {:<20} {:>10} {:>10} {:<10} {:<18} STATUS",
        "ID",
        "CREATED (UTC)",
        "STORED",
        "SNAPSHOT",
        "PLATFORM",
        "DRILL"
    );
    for b in &listed {
        let status = match (b.complete, b.problem) {
            (true, _) => {
                let mut status = "complete".to_string();
                if b.trusted == Some(false) {
                    status.push_str(", UNTRUSTED (not signed by an allowed signer)");
                }
                if b.future_dated {
                    status
                        .push_str(", FUTURE-DATED (a host clock ahead, or planted; never counted)");
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
        outln!(
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
