//! Operations that a command and the scheduler both run: take a backup, run a drill,
//! plan and apply retention, read the figures the metrics report. Commands and `run`
//! call these; no command calls another command's module.

pub mod backup;
pub mod drill;
pub mod prune;

use chrono::Utc;

use crate::repo::Repository;
use crate::telemetry::StoreFigures;

/// Waits for SIGTERM or SIGINT (a stop from systemd, Kubernetes or a terminal's Ctrl-C)
/// and names it; never returns when the handlers cannot be installed.
pub async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// What the repository holds, for the metrics: trusted backups only (untrusted and
/// future-dated ones never make the newest backup look recent), and the newest drill
/// that counts.
pub async fn store_figures(repo: &Repository) -> anyhow::Result<StoreFigures> {
    let now = Utc::now();
    let catalog = repo.catalog(now).await?;
    let trusted: Vec<_> = catalog
        .trusted()
        .filter_map(|e| e.summary.as_ref())
        .collect();
    let newest = trusted.first();
    Ok(StoreFigures {
        backups_complete: trusted.len(),
        stored_bytes: trusted.iter().map(|s| s.stored_size).sum(),
        last_success: newest.map(|s| s.finished_at),
        last_stored_bytes: newest.map(|s| s.stored_size),
        last_drill_success: repo
            .newest_successful_drill(&catalog, now)
            .await
            .map(|(_, drill)| drill.at),
    })
}
