//! `report` (issue 21): an audit report of a real target. A real etcd is backed up into a
//! file:// target with signing, one backup by a host whose clock is four minutes behind
//! (Debian's faketime; the store's clock stays right) so that the per-minute schedule has
//! a gap between backups; a drill passes, a drill of a backup whose snapshot was damaged
//! in place fails for real; another backup's keys archive is cut short. The JSON is
//! checked field by field, the HTML is rendered by headless Chromium (Debian's package)
//! and its screenshot decoded: its size, that it is not blank, and that the chart colours
//! are in it. A platform version with `<script>` in it (through `labels`, signed like any
//! backup) comes out escaped.

mod common;

use std::path::Path;
use std::process::Command;

use common::fixture::Fixture;
use common::*;
use serde_json::Value;

const HOSTILE: &str = "<script>alert(1)</script>4.16.3";

/// A signing key and the allowed_signers that lists it, as `signing:` YAML.
fn signing(fx: &Fixture) -> String {
    let (key, public) = ssh_keypair(fx.dir.path(), "signer");
    let allowed = fx.path("allowed_signers");
    std::fs::write(&allowed, format!("backups@test {public}\n")).unwrap();
    format!(
        "signing: {{ key: {}, allowed_signers: {} }}\n",
        key.display(),
        allowed.display()
    )
}

fn drill(fx: &Fixture, config: &Path, id: &str) -> std::process::Output {
    run(fx
        .cmd(config)
        .args(["drill", id, "--scratch-dir"])
        .arg(fx.path("scratch"))
        .args(fx.identity_args()))
}

/// Flips one byte in the middle of a file, keeping its size.
fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// A self-consistent copy of backup `from` under `id`, without its signature or drill
/// records: what a writer without the signing key can plant.
fn plant(cluster_dir: &Path, from: &str, id: &str) {
    let src = cluster_dir.join(from);
    let dst = cluster_dir.join(id);
    std::fs::create_dir_all(&dst).unwrap();
    for name in ["snapshot.db.zst.age", "static_kuberesources.tar.zst.age"] {
        std::fs::copy(src.join(name), dst.join(name)).unwrap();
    }
    let text = std::fs::read_to_string(src.join("manifest.json"))
        .unwrap()
        .replace(from, id);
    std::fs::write(dst.join("manifest.json"), text).unwrap();
}

fn backup_row<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no backup {id} in {report:#}"))
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .to_utc()
}

/// `#rrggbb` as bytes.
fn rgb(hex: &str) -> [u8; 3] {
    let n = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
    [(n >> 16) as u8, (n >> 8) as u8, n as u8]
}

/// Headless Chromium's screenshot of a local HTML file, with every network path closed
/// (no name resolves, the proxy is a closed port): a self-contained page renders whole.
fn screenshot(html: &Path, png: &Path, width: u32, height: u32) {
    let profile = tempfile::tempdir().unwrap();
    let out = run(Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
            "--force-color-profile=srgb",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display())));
    assert!(
        out.status.success() && png.is_file(),
        "chromium could not render the report (installed by scripts/setup.sh):\n{}",
        describe_output(&out)
    );
}

/// Headless Chromium's print of a local HTML file to PDF (network closed as above).
fn print_to_pdf(html: &Path, pdf: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let out = run(Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", html.display())));
    assert!(
        out.status.success() && pdf.is_file(),
        "chromium could not print the report:\n{}",
        describe_output(&out)
    );
}

/// The screenshot decoded to RGB rows.
fn decode(png: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let mut decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "a colour screenshot: {:?}", info.color_type);
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

#[test]
fn a_report_shows_backups_drills_gaps_and_recipients_and_renders_in_a_browser() {
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.path("scratch")).unwrap();
    let extra = format!(
        "{}labels: {{ platform_version: \"{HOSTILE}\" }}\nschedule: {{ cron: \"* * * * *\" }}\nretention: {{ keep_last: 2 }}\n",
        signing(&fx)
    );
    let (target, config) = fx.dir_config(&etcd, &extra);

    // Four minutes ago by a host whose clock is behind (within the clock tolerance).
    let mut behind = Command::new("faketime");
    behind
        .args(["-f", "-4m"])
        .arg(env!("CARGO_BIN_EXE_etcd-offsite"))
        .env("ETCD_OFFSITE_CONFIG", &config)
        .args(["backup", "--no-prune"]);
    let b1 = last_line(&run_ok(&mut behind));
    let b2 = last_line(&run_ok(fx.cmd(&config).args(["backup", "--no-prune"])));
    let b3 = last_line(&run_ok(fx.cmd(&config).args(["backup", "--no-prune"])));
    assert!(b1 < b2 && b2 < b3, "{b1} {b2} {b3}");

    // A drill that holds, and one of a backup whose snapshot was damaged in place.
    let out = drill(&fx, &config, &b1);
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    flip_a_byte(&target.join("test").join(&b2).join("snapshot.db.zst.age"));
    let out = drill(&fx, &config, &b2);
    assert_eq!(exit_code(&out), 3, "{}", describe_output(&out));
    // The third backup's keys archive cut short.
    let keys = target
        .join("test")
        .join(&b3)
        .join("static_kuberesources.tar.zst.age");
    let len = std::fs::metadata(&keys).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&keys)
        .unwrap()
        .set_len(len - 1)
        .unwrap();

    // An unsigned copy planted under a newer id by someone who can write to the target.
    let planted = (chrono::Utc::now() - chrono::TimeDelta::minutes(30))
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    plant(&target.join("test"), &b1, &planted);

    // ------------------------------------------------------------------ JSON
    let out = run_ok(
        fx.cmd(&config)
            .args(["report", "--since", "1h", "--format", "json"]),
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report JSON: {e}\n{}", describe_output(&out)));
    assert_eq!(report["schema"], "etcd-offsite/report");
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["cluster"], "test");
    assert_eq!(report["signing_enforced"], true);
    let ids: Vec<&str> = report["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [b3.as_str(), b2.as_str(), b1.as_str(), planted.as_str()],
        "newest first"
    );
    let untrusted = backup_row(&report, &planted);
    assert_eq!(untrusted["standing"], "untrusted", "{untrusted:#}");
    assert_eq!(untrusted["signature"], "untrusted", "{untrusted:#}");
    assert!(
        untrusted["problem"]
            .as_str()
            .unwrap()
            .contains("no signature"),
        "{untrusted:#}"
    );
    assert_eq!(
        untrusted["retention"]["reasons"][0],
        "not signed by an allowed signer (planted?): never counted, never deleted"
    );
    assert_eq!(report["totals"]["by_standing"]["untrusted"], 1);
    for id in [&b1, &b2, &b3] {
        let b = backup_row(&report, id);
        assert_eq!(b["standing"], "complete", "{b:#}");
        assert_eq!(b["signature"], "trusted", "{b:#}");
        assert_eq!(b["platform_version"], HOSTILE, "{b:#}");
        assert!(
            b["etcd_version"].as_str().unwrap().starts_with("3."),
            "{b:#}"
        );
        assert!(b["snapshot_stored_size"].as_u64().unwrap() > 0, "{b:#}");
        assert!(
            b["static_resources_stored_size"].as_u64().unwrap() > 0,
            "{b:#}"
        );
        assert!(b["duration_seconds"].as_f64().unwrap() >= 0.0, "{b:#}");
        assert!(time(&b["finished_at"]) >= time(&b["started_at"]), "{b:#}");
        assert!(b["locked_until"].is_null(), "no lock configured: {b:#}");
    }
    // The report's own check sees the short keys archive, not the flipped byte (same size:
    // that is verify's and the drill's to find).
    let damaged = backup_row(&report, &b3);
    assert_eq!(damaged["stored_objects"]["ok"], false, "{damaged:#}");
    let problem = damaged["stored_objects"]["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("static_kuberesources.tar.zst.age")
            && problem.contains(&format!("{} bytes", len - 1)),
        "{problem}"
    );
    assert_eq!(backup_row(&report, &b2)["stored_objects"]["ok"], true);
    assert_eq!(backup_row(&report, &b1)["stored_objects"]["ok"], true);
    // Drills: one pass, one real failure, each on its backup's row too.
    let drills = report["drills"].as_array().unwrap();
    assert_eq!(drills.len(), 2, "{report:#}");
    assert_eq!(drills[0]["backup_id"], b1.as_str());
    assert_eq!(drills[0]["ok"], true);
    assert_eq!(drills[1]["backup_id"], b2.as_str());
    assert_eq!(drills[1]["ok"], false);
    assert_eq!(
        drills[1]["failed_checks"],
        serde_json::json!(["snapshot decrypts and matches"]),
        "{:#}",
        drills[1]
    );
    assert_eq!(backup_row(&report, &b1)["drills"]["passed"], 1);
    assert_eq!(backup_row(&report, &b2)["drills"]["failed"], 1);
    assert_eq!(report["totals"]["drills_failed"], 1);
    // Retention as prune would decide now (keep_last 2).
    assert_eq!(backup_row(&report, &b3)["retention"]["verdict"], "keep");
    assert_eq!(backup_row(&report, &b2)["retention"]["verdict"], "keep");
    let old = &backup_row(&report, &b1)["retention"];
    assert_eq!(old["verdict"], "delete", "{old:#}");
    assert_eq!(old["reasons"], serde_json::json!(["no rule matched"]));
    assert_eq!(report["retention"]["delete"], 1);
    // Gaps: the minutes between the first backup and the second are missed, and so is
    // the hour before the first; the minute still running is not judged.
    let gaps = &report["gaps"];
    assert_eq!(gaps["cron"], "* * * * *");
    assert!(gaps["open"].is_string(), "{gaps:#}");
    let runs = gaps["runs"].as_array().unwrap();
    let started = |id: &str| time(&backup_row(&report, id)["started_at"]);
    let between: Vec<&Value> = runs
        .iter()
        .filter(|r| time(&r["first"]) > started(&b1) && time(&r["last"]) < started(&b2))
        .collect();
    assert_eq!(between.len(), 1, "one gap between the backups: {gaps:#}");
    assert_eq!(between[0]["before_first_backup"], false);
    assert!(between[0]["missed"].as_u64().unwrap() >= 2, "{gaps:#}");
    assert!(
        runs.iter()
            .any(|r| r["before_first_backup"] == true && time(&r["last"]) < started(&b1)),
        "{gaps:#}"
    );
    for r in runs {
        for id in [&b1, &b2, &b3] {
            // No missed minute is one a backup started in.
            let minute =
                chrono::DurationRound::duration_trunc(started(id), chrono::TimeDelta::minutes(1))
                    .unwrap();
            assert!(
                !(time(&r["first"]) <= minute && minute <= time(&r["last"])),
                "{id} covers its minute: {gaps:#}"
            );
        }
    }
    assert_eq!(report["totals"]["missed"].as_u64(), gaps["missed"].as_u64());
    // Recipients as the manifests record them: public keys only.
    let keys_recipients = report["recipients"]["static_resources"].as_array().unwrap();
    assert_eq!(keys_recipients.len(), 1, "{report:#}");
    assert_eq!(
        keys_recipients[0]["recipient"],
        fx.static_recipient.as_str()
    );
    assert_eq!(keys_recipients[0]["backups"], 3);
    assert_eq!(
        report["recipients"]["snapshot"][0]["recipient"],
        fx.snapshot_recipient.as_str()
    );
    let text = stdout_str(&out);
    assert!(!text.contains("AGE-SECRET-KEY"), "no identity in a report");
    assert!(report["totals"]["findings"].as_u64().unwrap() >= 3);

    // ------------------------------------------------------------------ Markdown
    let out = run_ok(
        fx.cmd(&config)
            .args(["report", "--since", "1h", "--format", "markdown"]),
    );
    let md = stdout_str(&out);
    assert!(md.contains("| Backup | Started (UTC) |"), "{md}");
    assert!(md.contains(&format!("| {b1} |")), "{md}");
    assert!(
        md.contains("&lt;script&gt;") && !md.contains("<script"),
        "{md}"
    );

    // ------------------------------------------------------------------ HTML, to a file
    let html = fx.path("report.html");
    std::fs::write(&html, "an older report").unwrap();
    run_ok(
        fx.cmd(&config)
            .args(["report", "--since", "1h", "-o"])
            .arg(&html),
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "replaced whole");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;4.16.3"));
    assert!(!page.to_lowercase().contains("<script"), "no script at all");
    for external in ["src=", "href=", "@import", "url(", "<link", "<img"] {
        assert!(!page.contains(external), "self-contained: {external}");
    }
    assert!(page.contains("@media print"));
    // Nothing is left beside it but the report.
    let beside: Vec<_> = std::fs::read_dir(fx.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("report.html"))
        .collect();
    assert_eq!(beside, ["report.html"]);
    // A directory that does not exist: exit 1, naming the path and the fix, nothing written.
    let nowhere = fx.path("missing/report.html");
    let out = run_code(fx.cmd(&config).args(["report", "-o"]).arg(&nowhere), 1);
    assert!(
        stderr_str(&out).contains(&nowhere.display().to_string())
            && stderr_str(&out).contains("directory exists"),
        "{}",
        describe_output(&out)
    );
    assert!(!fx.path("missing").exists());
    // A replica the config does not name is a usage error.
    let out = run_code(fx.cmd(&config).args(["report", "--replica", "dr"]), 2);
    assert!(
        stderr_str(&out).contains("no replica"),
        "{}",
        describe_output(&out)
    );
    // A period that is not a duration is a usage error.
    run_code(fx.cmd(&config).args(["report", "--since", "lately"]), 2);
    // A host whose clock is an hour behind the store's is refused (exit 4), nothing written:
    // it would judge gaps and retention an hour early.
    let skewed_out = fx.path("skewed.html");
    let mut skewed = Command::new("faketime");
    skewed
        .args(["-f", "-1h"])
        .arg(env!("CARGO_BIN_EXE_etcd-offsite"))
        .env("ETCD_OFFSITE_CONFIG", &config)
        .args(["report", "-o"])
        .arg(&skewed_out);
    let out = run_code(&mut skewed, 4);
    assert!(
        stderr_str(&out).contains("clock"),
        "{}",
        describe_output(&out)
    );
    assert!(!skewed_out.exists());

    // ------------------------------------------------------------------ in a browser
    let png = fx.path("report.png");
    let (width, height) = (1280, 1800);
    screenshot(&html, &png, width, height);
    let (w, h, pixels) = decode(&png);
    assert_eq!((w, h), (width, height));
    let white = pixels.iter().filter(|p| **p == [255, 255, 255]).count();
    assert!(
        pixels.len() - white > pixels.len() / 50,
        "the page is not blank: {} of {} pixels are not white",
        pixels.len() - white,
        pixels.len()
    );
    for (what, colour) in [
        ("stored size bars", "#1f77b4"),
        ("duration bars", "#ff7f0e"),
        ("passed drill", "#2ca02c"),
        ("failed drill", "#d62728"),
    ] {
        let want = rgb(colour);
        let found = pixels.iter().filter(|p| **p == want).count();
        assert!(
            found >= 50,
            "{what} ({colour}): {found} pixels in the screenshot"
        );
    }
    // And printed (the print styles apply): a PDF of a few pages, not an empty one.
    let pdf = fx.path("report.pdf");
    print_to_pdf(&html, &pdf);
    let printed = std::fs::read(&pdf).unwrap();
    assert!(printed.starts_with(b"%PDF-"), "a PDF");
    assert!(printed.len() > 10_000, "{} bytes", printed.len());
    if let Ok(keep) = std::env::var("ETCD_OFFSITE_REPORT_PNG") {
        std::fs::copy(&png, keep).unwrap();
    }
}
