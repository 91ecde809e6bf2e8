//! The report as Markdown tables. Strings from a store are escaped ([`cell`]) so that they
//! can neither break a table (`|`, new lines) nor carry markup (`<`, `` ` ``, `[`).

use std::fmt::Write;

use bytesize::ByteSize;
use chrono::{DateTime, Utc};

use super::Report;

/// Text for a table cell: Markdown's and HTML's special characters neutralised, one line.
pub fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '\\' => out.push_str("\\\\"),
            '`' | '*' | '_' | '[' | ']' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn bytes(n: u64) -> String {
    ByteSize(n).display().iec_short().to_string()
}

/// The report as a Markdown document.
pub fn render(r: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# etcd-offsite audit report: {}\n", cell(&r.cluster));
    let _ = writeln!(
        m,
        "- Period: {} to {} UTC",
        time(r.period.since),
        time(r.period.until)
    );
    let _ = writeln!(m, "- Snapshot target: {}", cell(&r.target));
    if r.keys_target != r.target {
        let _ = writeln!(m, "- Keys archive target: {}", cell(&r.keys_target));
    }
    if let Some(replica) = &r.replica {
        let _ = writeln!(m, "- Replica: {}", cell(replica));
    }
    let _ = writeln!(
        m,
        "- Signing: {}",
        if r.signing_enforced {
            "enforced"
        } else {
            "not enforced"
        }
    );
    let _ = writeln!(
        m,
        "- Generated: {} UTC by etcd-offsite {}\n",
        time(r.generated_at),
        r.tool_version
    );

    let t = &r.totals;
    m.push_str("## Summary\n\n| | |\n|---|---|\n");
    let standing = t
        .by_standing
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(m, "| Backups | {} ({standing}) |", t.backups);
    let _ = writeln!(
        m,
        "| Stored (complete backups) | {} |",
        bytes(t.stored_bytes)
    );
    let _ = writeln!(
        m,
        "| Stored objects not as recorded | {} |",
        t.stored_objects_failed
    );
    let _ = writeln!(m, "| Drills | {} ({} failed) |", t.drills, t.drills_failed);
    let _ = writeln!(
        m,
        "| Scheduled backups missed | {} |",
        t.missed
            .map_or("not judged (no schedule)".to_string(), |n| format!(
                "{n} of {}",
                r.gaps.expected
            ))
    );
    if r.retention.configured {
        let _ = writeln!(
            m,
            "| Retention now | {} kept, {} to delete |",
            r.retention.keep, r.retention.delete
        );
    } else {
        m.push_str("| Retention now | no retention policy |\n");
    }
    let _ = writeln!(m, "| Findings | {} |\n", t.findings);

    m.push_str("## Backups\n\n| Backup | Started (UTC) | Duration | Snapshot stored | Keys archive stored | Platform | etcd | Standing | Signature | Stored objects | Drills | Locked until | Retention now |\n|---|---|---:|---:|---:|---|---|---|---|---|---|---|---|\n");
    for b in &r.backups {
        let standing = match &b.problem {
            Some(p) => format!("{}: {}", b.standing, cell(p)),
            None => b.standing.to_string(),
        };
        let stored = match b.stored_objects.ok {
            Some(true) => "as recorded".to_string(),
            Some(false) => format!(
                "NOT as recorded: {}",
                cell(&b.stored_objects.problems.join("; "))
            ),
            None => "-".to_string(),
        };
        let _ = writeln!(
            m,
            "| {}{} | {} | {} | {} | {} | {} | {} | {standing} | {} | {stored} | {} pass, {} fail | {} | {} |",
            cell(&b.id),
            if b.dirty { " (DIRTY)" } else { "" },
            time(b.started_at),
            b.duration_seconds
                .map_or("-".into(), |d| format!("{d:.1} s")),
            b.snapshot_stored_size.map_or("-".into(), bytes),
            b.static_resources_stored_size.map_or("-".into(), bytes),
            b.platform_version.as_deref().map_or("-".into(), cell),
            b.etcd_version.as_deref().map_or("-".into(), cell),
            b.signature.unwrap_or("-"),
            b.drills.passed,
            b.drills.failed,
            b.locked_until.map_or("-".into(), time),
            b.retention.as_ref().map_or("-".into(), |ret| format!(
                "{}: {}",
                ret.verdict,
                cell(&ret.reasons.join(", "))
            )),
        );
    }

    m.push_str(
        "\n## Drills\n\n| At (UTC) | Backup | Result | Failed checks |\n|---|---|---|---|\n",
    );
    for d in &r.drills {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} |",
            time(d.drill.at),
            cell(&d.backup_id),
            if d.drill.ok { "pass" } else { "FAIL" },
            cell(&d.drill.failed_checks.join("; "))
        );
    }
    if !r.ignored_drill_records.is_empty() {
        m.push_str(
            "\nDrill records that do not count:\n\n| Backup | Record | Why |\n|---|---|---|\n",
        );
        for i in &r.ignored_drill_records {
            let _ = writeln!(
                m,
                "| {} | {} | {} |",
                cell(&i.backup_id),
                cell(&i.record),
                cell(&i.reason)
            );
        }
    }

    m.push_str("\n## Schedule gaps\n\n");
    match &r.gaps.cron {
        None => m.push_str("No `schedule` in the config: gaps are not judged.\n"),
        Some(cron) => {
            let _ = writeln!(
                m,
                "schedule.cron `{}`: {} occurrence(s) judged, {} missed.\n\nRule: {}\n",
                cron.replace('`', "'"),
                r.gaps.expected,
                r.gaps.missed,
                r.gaps.rule
            );
            if !r.gaps.runs.is_empty() {
                m.push_str(
                    "| First missed (UTC) | Last missed | Missed | Note |\n|---|---|---:|---|\n",
                );
                for run in &r.gaps.runs {
                    let _ = writeln!(
                        m,
                        "| {} | {} | {} | {} |",
                        time(run.first),
                        time(run.last),
                        run.missed,
                        if run.before_first_backup {
                            "before the oldest backup the target holds"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
    }

    m.push_str("\n## Recipients in use\n\n");
    for (what, uses) in [
        (
            "Keys archive (static resources)",
            &r.recipients.static_resources,
        ),
        ("Snapshot", &r.recipients.snapshot),
    ] {
        let _ = writeln!(
            m,
            "| {what} recipient | Backups | First | Last |\n|---|---:|---|---|"
        );
        for u in uses {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} |",
                cell(&u.recipient),
                u.backups,
                time(u.first),
                time(u.last)
            );
        }
        m.push('\n');
    }
    let _ = writeln!(m, "## What \"verified\" means here\n\n{}", r.verified_means);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_strings_cannot_break_a_table_or_carry_markup() {
        assert_eq!(
            cell("a|b\n<script>`x`</script>"),
            "a\\|b &lt;script&gt;\\`x\\`&lt;/script&gt;"
        );
    }
}
