//! The report as one self-contained HTML file: inline CSS and inline SVG charts (stored
//! size and duration over time, drill history), no script, font, image or link to load,
//! readable in print (`@media print`, meaning never carried by colour alone). Every string
//! that comes from a store is escaped ([`esc`]): a manifest may hold `<script>`.

use std::fmt::Write;

use bytesize::ByteSize;
use chrono::{DateTime, Utc};

use super::{BackupRow, Report};

/// Colours of the charts (the browser test looks for them in the screenshot).
pub const SIZE_COLOUR: &str = "#1f77b4";
pub const DURATION_COLOUR: &str = "#ff7f0e";
pub const PASS_COLOUR: &str = "#2ca02c";
pub const FAIL_COLOUR: &str = "#d62728";
pub const GAP_COLOUR: &str = "#f2b8b5";

/// Text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
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

fn opt(text: Option<&str>) -> String {
    text.map_or_else(|| "—".to_string(), esc)
}

const STYLE: &str = r#"
body { font-family: "DejaVu Sans", Arial, sans-serif; color: #111; background: #fff; margin: 24px; font-size: 13px; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 17px; margin: 24px 0 8px 0; border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px 0; table-layout: auto; }
table.backups { font-size: 11px; }
table.backups td { overflow-wrap: anywhere; }
th, td { border: 1px solid #bbb; padding: 3px 5px; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; white-space: nowrap; }
.bad { color: #a00; font-weight: bold; }
.good { color: #060; }
.muted { color: #555; }
.facts td { border: none; padding: 1px 8px 1px 0; }
.facts { width: auto; }
svg { display: block; margin: 4px 0 12px 0; }
svg text { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 11px; fill: #111; }
p.rule { max-width: 60em; }
@media print {
  body { margin: 0; font-size: 10px; }
  h2 { page-break-after: avoid; }
  table, svg { page-break-inside: avoid; }
  th { background: #fff; }
  .bad { color: #000; text-decoration: underline; }
  .good { color: #000; }
}
"#;

/// The report as an HTML document.
pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let title = format!("etcd-offsite audit report: {}", report.cluster);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(&title)
    );
    let _ = writeln!(h, "<h1>{}</h1>", esc(&title));
    facts(&mut h, report);
    summary(&mut h, report);

    h.push_str("<h2>Stored size over time</h2>\n");
    h.push_str(&bar_chart(
        report,
        "stored size",
        SIZE_COLOUR,
        |b| {
            b.snapshot_stored_size
                .map(|s| s + b.static_resources_stored_size.unwrap_or(0))
                .map(|s| s as f64)
        },
        |v| bytes(v as u64),
    ));
    h.push_str("<h2>Backup duration over time</h2>\n");
    h.push_str(&bar_chart(
        report,
        "duration",
        DURATION_COLOUR,
        |b| b.duration_seconds,
        |v| format!("{v:.1} s"),
    ));
    h.push_str("<h2>Drill history</h2>\n");
    h.push_str(&drill_chart(report));
    drills(&mut h, report);

    backups(&mut h, report);
    gaps(&mut h, report);
    recipients(&mut h, report);
    let _ = write!(
        h,
        "<h2>What \"verified\" means here</h2>\n<p class=\"rule\">{}</p>\n",
        esc(report.verified_means)
    );
    h.push_str("</body></html>\n");
    h
}

fn facts(h: &mut String, r: &Report) {
    h.push_str("<table class=\"facts\">\n");
    let mut fact = |k: &str, v: String| {
        let _ = writeln!(h, "<tr><td class=\"muted\">{k}</td><td>{v}</td></tr>");
    };
    fact(
        "Period",
        format!("{} to {} UTC", time(r.period.since), time(r.period.until)),
    );
    fact("Cluster", esc(&r.cluster));
    fact("Snapshot target", esc(&r.target));
    if r.keys_target != r.target {
        fact("Keys archive target", esc(&r.keys_target));
    }
    if let Some(replica) = &r.replica {
        fact("Replica", esc(replica));
    }
    fact(
        "Signing",
        if r.signing_enforced {
            "enforced: only backups and drill records signed by signing.allowed_signers count"
                .into()
        } else {
            "not enforced (no signing.allowed_signers)".into()
        },
    );
    fact(
        "Generated",
        format!(
            "{} UTC by etcd-offsite {}",
            time(r.generated_at),
            esc(r.tool_version)
        ),
    );
    h.push_str("</table>\n");
}

fn summary(h: &mut String, r: &Report) {
    let t = &r.totals;
    h.push_str("<h2>Summary</h2>\n<table class=\"facts\">\n");
    let standing = t
        .by_standing
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mark = |bad: bool, text: String| {
        if bad {
            format!("<span class=\"bad\">{text}</span>")
        } else {
            text
        }
    };
    let rows = [
        (
            "Backups",
            format!(
                "{} ({})",
                t.backups,
                if standing.is_empty() {
                    "none".into()
                } else {
                    standing
                }
            ),
        ),
        ("Stored (complete backups)", bytes(t.stored_bytes)),
        (
            "Stored objects not as recorded",
            mark(
                t.stored_objects_failed > 0,
                t.stored_objects_failed.to_string(),
            ),
        ),
        (
            "Drills",
            mark(
                t.drills_failed > 0,
                format!("{} ({} failed)", t.drills, t.drills_failed),
            ),
        ),
        (
            "Scheduled backups missed",
            match t.missed {
                Some(n) => mark(n > 0, format!("{n} of {}", r.gaps.expected)),
                None => "not judged (no schedule in the config)".into(),
            },
        ),
        (
            "Retention now",
            if r.retention.configured {
                format!(
                    "{} kept, {} to delete",
                    r.retention.keep, r.retention.delete
                )
            } else {
                "no retention policy (prune keeps everything)".into()
            },
        ),
        ("Findings", mark(t.findings > 0, t.findings.to_string())),
    ];
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><td class=\"muted\">{k}</td><td>{v}</td></tr>");
    }
    h.push_str("</table>\n");
}

const CHART_W: f64 = 1000.0;
const CHART_H: f64 = 160.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 30.0;

/// The x position of `t` within the period.
fn x_of(r: &Report, t: DateTime<Utc>) -> f64 {
    let span = (r.period.until - r.period.since).num_milliseconds().max(1) as f64;
    let at = (t - r.period.since)
        .num_milliseconds()
        .clamp(0, span as i64) as f64;
    LEFT + at / span * (CHART_W - LEFT - RIGHT)
}

/// The frame, the time axis and its labels.
fn frame(s: &mut String, r: &Report, label: &str) {
    let bottom = CHART_H - BOTTOM;
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {CHART_W} {CHART_H}\" width=\"100%\" role=\"img\" aria-label=\"{}\">\
         <rect x=\"0\" y=\"0\" width=\"{CHART_W}\" height=\"{CHART_H}\" fill=\"#ffffff\"/>\
         <line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#333\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"#333\"/>\
         <text x=\"{LEFT}\" y=\"{}\">{}</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
        esc(label),
        CHART_W - RIGHT,
        CHART_H - 10.0,
        time(r.period.since),
        CHART_W - RIGHT,
        CHART_H - 10.0,
        time(r.period.until),
    );
    // Missed occurrences: a band under the time axis (its tooltip says which).
    for run in &r.gaps.runs {
        let x1 = x_of(r, run.first);
        let x2 = x_of(r, run.last).max(x1 + 3.0);
        let _ = write!(
            s,
            "<rect x=\"{x1:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"6\" fill=\"{GAP_COLOUR}\"><title>missed: {} occurrence(s) {} to {}</title></rect>",
            bottom + 2.0,
            x2 - x1,
            run.missed,
            time(run.first),
            time(run.last)
        );
    }
    if !r.gaps.runs.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">band under the axis: missed scheduled backups</text>",
            (LEFT + CHART_W - RIGHT) / 2.0,
            CHART_H - 10.0
        );
    }
}

/// Bars of `value` per backup at its start time.
fn bar_chart(
    r: &Report,
    label: &str,
    colour: &str,
    value: impl Fn(&BackupRow) -> Option<f64>,
    show: impl Fn(f64) -> String,
) -> String {
    let mut s = String::new();
    frame(&mut s, r, label);
    let points: Vec<(&BackupRow, f64)> = r
        .backups
        .iter()
        .filter_map(|b| value(b).map(|v| (b, v)))
        .collect();
    let max = points.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let bottom = CHART_H - BOTTOM;
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"{bottom}\" text-anchor=\"end\">0</text>",
        LEFT - 4.0,
        TOP + 10.0,
        esc(&show(max)),
        LEFT - 4.0
    );
    if points.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\">no complete backup in the period</text>",
            LEFT + 10.0,
            TOP + 40.0
        );
    }
    for (b, v) in points {
        let height = if max > 0.0 {
            (v / max * (bottom - TOP)).max(2.0)
        } else {
            2.0
        };
        let x = x_of(r, b.started_at);
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"{height:.1}\" fill=\"{colour}\"><title>{} {}</title></rect>",
            (x - 4.0).max(LEFT),
            bottom - height,
            esc(&b.id),
            esc(&show(v))
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Drills on the time axis: a filled circle for a pass, a filled square with "FAIL" for a
/// failure (told apart by shape and word in print, not by colour only).
fn drill_chart(r: &Report) -> String {
    let mut s = String::new();
    frame(&mut s, r, "drill history");
    let bottom = CHART_H - BOTTOM;
    let pass_y = TOP + (bottom - TOP) * 0.3;
    let fail_y = TOP + (bottom - TOP) * 0.7;
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">pass</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">fail</text>",
        LEFT - 4.0,
        pass_y + 4.0,
        LEFT - 4.0,
        fail_y + 4.0
    );
    if r.drills.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\">no drill in the period</text>",
            LEFT + 10.0,
            TOP + 40.0
        );
    }
    for d in &r.drills {
        let x = x_of(r, d.drill.at).max(LEFT + 8.0);
        let tip = format!(
            "{} drill of {}: {}",
            time(d.drill.at),
            d.backup_id,
            if d.drill.ok {
                "pass".to_string()
            } else {
                format!("FAIL ({})", d.drill.failed_checks.join(", "))
            }
        );
        if d.drill.ok {
            let _ = write!(
                s,
                "<circle cx=\"{x:.1}\" cy=\"{pass_y:.1}\" r=\"8\" fill=\"{PASS_COLOUR}\"><title>{}</title></circle>",
                esc(&tip)
            );
        } else {
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"16\" height=\"16\" fill=\"{FAIL_COLOUR}\"><title>{}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">FAIL</text>",
                x - 8.0,
                fail_y - 8.0,
                esc(&tip),
                x,
                fail_y + 22.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn drills(h: &mut String, r: &Report) {
    if r.drills.is_empty() && r.ignored_drill_records.is_empty() {
        return;
    }
    h.push_str("<table><tr><th>Drill at (UTC)</th><th>Backup</th><th>Result</th><th>Failed checks</th></tr>\n");
    for d in &r.drills {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(d.drill.at),
            esc(&d.backup_id),
            if d.drill.ok {
                "<span class=\"good\">pass</span>"
            } else {
                "<span class=\"bad\">FAIL</span>"
            },
            esc(&d.drill.failed_checks.join("; "))
        );
    }
    h.push_str("</table>\n");
    if !r.ignored_drill_records.is_empty() {
        h.push_str("<p>Drill records that do not count:</p><table><tr><th>Backup</th><th>Record</th><th>Why</th></tr>\n");
        for i in &r.ignored_drill_records {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&i.backup_id),
                esc(&i.record),
                esc(&i.reason)
            );
        }
        h.push_str("</table>\n");
    }
    if r.unread_drill_records > 0 {
        let _ = writeln!(
            h,
            "<p class=\"bad\">{} older drill records of the period were not read (read bound).</p>",
            r.unread_drill_records
        );
    }
}

fn backups(h: &mut String, r: &Report) {
    h.push_str("<h2>Backups</h2>\n");
    if r.backups.is_empty() {
        h.push_str("<p class=\"bad\">No backup started in the period.</p>\n");
        return;
    }
    h.push_str(
        "<table class=\"backups\"><tr><th>Backup</th><th>Started (UTC)</th><th>Finished</th><th>Duration</th>\
         <th>Snapshot stored</th><th>Keys archive stored</th><th>Platform</th><th>etcd</th>\
         <th>Standing</th><th>Signature</th><th>Stored objects</th><th>Drills</th>\
         <th>Locked until</th><th>Retention now</th></tr>\n",
    );
    for b in &r.backups {
        let standing = if b.standing == "complete" {
            "complete".to_string()
        } else {
            format!(
                "<span class=\"bad\">{}</span>{}",
                esc(b.standing),
                b.problem
                    .as_deref()
                    .map_or(String::new(), |p| format!("<br>{}", esc(p)))
            )
        };
        let signature = match b.signature {
            Some("trusted") => "<span class=\"good\">trusted</span>".to_string(),
            Some("not_checked") => "not checked".to_string(),
            Some(other) => format!("<span class=\"bad\">{}</span>", esc(other)),
            None => "—".to_string(),
        };
        let stored = match b.stored_objects.ok {
            Some(true) => "<span class=\"good\">as recorded</span>".to_string(),
            Some(false) => format!(
                "<span class=\"bad\">NOT as recorded</span><br>{}",
                esc(&b.stored_objects.problems.join("; "))
            ),
            None => "—".to_string(),
        };
        let drills = if b.drills.count == 0 {
            "none".to_string()
        } else if b.drills.failed > 0 {
            format!(
                "{} pass, <span class=\"bad\">{} FAIL</span>",
                b.drills.passed, b.drills.failed
            )
        } else {
            format!("<span class=\"good\">{} pass</span>", b.drills.passed)
        };
        let retention = b.retention.as_ref().map_or("—".to_string(), |ret| {
            format!("{}: {}", ret.verdict, esc(&ret.reasons.join(", ")))
        });
        let dirty = if b.dirty {
            " <span class=\"bad\">DIRTY</span>"
        } else {
            ""
        };
        let _ = writeln!(
            h,
            "<tr><td>{}{dirty}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{standing}</td><td>{signature}</td>\
             <td>{stored}</td><td>{drills}</td><td>{}</td><td>{retention}</td></tr>",
            esc(&b.id),
            time(b.started_at),
            b.finished_at.map_or("—".into(), time),
            b.duration_seconds
                .map_or("—".into(), |d| format!("{d:.1} s")),
            b.snapshot_stored_size.map_or("—".into(), bytes),
            b.static_resources_stored_size.map_or("—".into(), bytes),
            opt(b.platform_version.as_deref()),
            opt(b.etcd_version.as_deref()),
            b.locked_until.map_or("—".into(), time),
        );
    }
    h.push_str("</table>\n");
}

fn gaps(h: &mut String, r: &Report) {
    h.push_str("<h2>Schedule gaps</h2>\n");
    let g = &r.gaps;
    match &g.cron {
        None => {
            h.push_str("<p>No <code>schedule</code> in the config: gaps are not judged.</p>\n");
            return;
        }
        Some(cron) => {
            let _ = writeln!(
                h,
                "<p>schedule.cron <code>{}</code>: {} occurrence(s) judged, <span class=\"{}\">{} missed</span>{}.</p>",
                esc(cron),
                g.expected,
                if g.missed > 0 { "bad" } else { "good" },
                g.missed,
                g.open.map_or(String::new(), |t| format!(
                    "; the window from {} is still open",
                    time(t)
                ))
            );
        }
    }
    let _ = writeln!(h, "<p class=\"rule\">Rule: {}</p>", esc(g.rule));
    if let Some(t) = g.judged_until {
        let _ = writeln!(
            h,
            "<p class=\"bad\">Too many occurrences: judged up to {} only.</p>",
            time(t)
        );
    }
    if g.runs.is_empty() {
        return;
    }
    h.push_str("<table><tr><th>First missed (UTC)</th><th>Last missed</th><th>Missed</th><th>Note</th></tr>\n");
    for run in &g.runs {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
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
    h.push_str("</table>\n");
}

fn recipients(h: &mut String, r: &Report) {
    h.push_str("<h2>Recipients in use</h2>\n<p>The age public keys the period's complete backups are encrypted to, as their manifests record them (no secret is in a manifest).</p>\n");
    for (what, uses) in [
        (
            "Keys archive (static resources)",
            &r.recipients.static_resources,
        ),
        ("Snapshot", &r.recipients.snapshot),
    ] {
        let _ = writeln!(
            h,
            "<table><tr><th>{what} recipient</th><th>Backups</th><th>First</th><th>Last</th></tr>"
        );
        if uses.is_empty() {
            h.push_str("<tr><td colspan=\"4\">none</td></tr>\n");
        }
        for u in uses {
            let _ = writeln!(
                h,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&u.recipient),
                u.backups,
                time(u.first),
                time(u.last)
            );
        }
        h.push_str("</table>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_store_strings_is_escaped() {
        assert_eq!(
            esc("<script>alert(\"x\")</script>&'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }
}
