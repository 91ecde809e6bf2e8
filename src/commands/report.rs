//! `report`: an audit report of a period (see [`crate::report`]): gathered through the
//! repository, rendered as HTML, JSON or Markdown, written to stdout or atomically to a
//! file. A report that finds gaps or failed drills still exits 0: it is evidence, not an
//! alarm (`status` is the alarm); `totals.findings` counts what needs a look.

use anyhow::Context;

use crate::config::Config;
use crate::repo::Repository;
use crate::report::{self, html, markdown};
use crate::settings::{ReportFormat, ReportSettings};
use crate::telemetry::{outln, write_atomically};

pub async fn run(config: &Config, args: &ReportSettings) -> anyhow::Result<()> {
    let repo = Repository::reading(config, args.replica.as_deref())?;
    let report = report::gather(config, &repo, args.replica.as_deref(), args.since).await?;
    let text = match args.format {
        ReportFormat::Html => html::render(&report),
        ReportFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        ReportFormat::Markdown => markdown::render(&report),
    };
    match &args.output {
        Some(path) => {
            write_atomically(path, text.as_bytes()).with_context(|| {
                format!(
                    "cannot write the report to {} (nothing was written there); check that its directory exists and is writable",
                    path.display()
                )
            })?;
            tracing::info!(path = %path.display(), backups = report.totals.backups, findings = report.totals.findings, "report written");
        }
        None => outln!("{}", text.trim_end_matches('\n')),
    }
    Ok(())
}
