//! Build facts for `etcd-offsite version` and `--version`: the git commit, the build date
//! and the versions of the libraries that do the work, as compile-time environment
//! variables (`ETCD_OFFSITE_*`).
//!
//! - commit: `ETCD_OFFSITE_GIT_COMMIT` when set (an image build without `.git`), else
//!   `git rev-parse --short HEAD` in a git checkout, else "unknown".
//! - date: `SOURCE_DATE_EPOCH` when set (reproducible builds), else today, as YYYY-MM-DD (UTC).
//! - libraries: read from Cargo.lock (`cargo install --locked` builds with it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The libraries `version` names, as Cargo.lock spells them.
const LIBRARIES: [(&str, &str); 3] = [
    ("etcd-client", "ETCD_OFFSITE_ETCD_CLIENT_VERSION"),
    ("object_store", "ETCD_OFFSITE_OBJECT_STORE_VERSION"),
    ("age", "ETCD_OFFSITE_AGE_VERSION"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=ETCD_OFFSITE_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let commit = match std::env::var("ETCD_OFFSITE_GIT_COMMIT") {
        Ok(c) if is_commit(c.trim()) => c.trim().to_owned(),
        _ => git_commit(&manifest_dir).unwrap_or_else(|| "unknown".to_owned()),
    };
    let date = build_date();
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=ETCD_OFFSITE_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=ETCD_OFFSITE_BUILD_DATE={date}");
    println!("cargo:rustc-env=ETCD_OFFSITE_VERSION_LINE={version} (commit {commit}, built {date})");

    let lock = std::fs::read_to_string(manifest_dir.join("Cargo.lock")).unwrap_or_default();
    for (name, var) in LIBRARIES {
        let v = locked_version(&lock, name).unwrap_or_else(|| "unknown".to_owned());
        println!("cargo:rustc-env={var}={v}");
    }
}

/// A short or full hex commit id (what git prints; nothing else goes into the binary).
fn is_commit(s: &str) -> bool {
    (4..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `git rev-parse --short HEAD`, and a rerun when HEAD or the branch it names moves.
fn git_commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).filter(|c| is_commit(c))?;
    // In a worktree HEAD lives in the worktree's git dir and branches in the common
    // one: `--git-path` names the right file for each.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watched.into_iter().flatten() {
        let path = dir.join(path);
        // A path that does not exist would make cargo rerun this script on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}

/// YYYY-MM-DD (UTC) of `SOURCE_DATE_EPOCH`, or of now.
fn build_date() -> String {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse::<i64>().unwrap_or_else(|_| {
            panic!("SOURCE_DATE_EPOCH must be seconds since 1970-01-01 UTC, not {s:?}")
        }),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), so the build script needs no date library.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The version Cargo.lock records for package `name` (the first, if several).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.strip_suffix('"')?.to_owned());
        }
    }
    None
}
