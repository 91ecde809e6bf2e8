//! `prune`: apply retention pair-safely (manifest first), then collect old leftovers;
//! what it decides and how it deletes is [`crate::ops::prune`] (the JSON is documented
//! there).

use anyhow::anyhow;

use crate::config::Config;
use crate::ops::prune::{Action, DeleteFailure, LeftoverAction, PruneReport, apply};
use crate::repo::Repository;
use crate::retention::RetentionPolicy;
use crate::settings::PruneSettings;
use crate::telemetry::outln;

pub async fn run(config: &Config, args: &PruneSettings) -> anyhow::Result<()> {
    let repo = Repository::primary(config)?;
    let report = apply(&repo, &args.policy, args.dry_run).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, &args.policy);
    }
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "{} delete(s) failed: {}",
            report.failures.len(),
            report
                .failures
                .iter()
                .map(|f| format!("backup {}: {} ({})", f.id, f.kind, f.key))
                .collect::<Vec<_>>()
                .join("; ")
        ))
    }
}

fn print_report(report: &PruneReport, policy: &RetentionPolicy) {
    for d in &report.decisions {
        let label = match d.action {
            Action::Kept => "keep",
            Action::Deleted => "deleted",
            Action::WouldDelete => "would delete",
            Action::Failed => "NOT deleted",
        };
        let mut line = format!("{label:<13} {:<20} {}", d.decision.id, d.reasons.join(", "));
        if let Some(e) = &d.error {
            line.push_str(&format!("; {}", failure_text(e)));
        }
        outln!("{line}");
    }
    for l in &report.leftovers {
        let label = match l.action {
            LeftoverAction::Removed => "removed",
            LeftoverAction::WouldRemove => "would remove",
            LeftoverAction::Waiting => "incomplete",
            LeftoverAction::Kept => "unusable",
            LeftoverAction::Failed => "NOT removed",
        };
        let mut line = format!(
            "{label:<13} {:<20} {} ({} object(s) in {})",
            l.id,
            l.reason,
            l.objects,
            l.targets.join(" and ")
        );
        if let Some(e) = &l.error {
            line.push_str(&format!("; {}: {}", e.kind, e.reason));
        }
        outln!("{line}");
    }
    for key in &report.stale_uploads {
        outln!(
            "{:<13} {key} (unfinished upload of a killed run)",
            "removed"
        );
    }
    let count = |a: Action| report.decisions.iter().filter(|d| d.action == a).count();
    let removed = report
        .leftovers
        .iter()
        .filter(|l| {
            matches!(
                l.action,
                LeftoverAction::Removed | LeftoverAction::WouldRemove
            )
        })
        .count();
    let (deleted, removed_word) = if report.dry_run {
        (
            format!("{} would be deleted", count(Action::WouldDelete)),
            "would be removed",
        )
    } else {
        (format!("{} deleted", count(Action::Deleted)), "removed")
    };
    outln!(
        "{} kept, {deleted}, {} failed; {removed} incomplete {removed_word} (incomplete_grace {})",
        count(Action::Kept),
        count(Action::Failed),
        humantime::format_duration(policy.incomplete_grace())
    );
}

fn failure_text(f: &DeleteFailure) -> String {
    let consequence = if f.backup_left_whole {
        "the backup is left whole"
    } else {
        "its manifest is gone; a later prune removes the rest"
    };
    format!("{}: {}; {consequence}", f.kind, f.reason)
}
