//! The files OpenShift's own backups wrote: `snapshot_<ts>.db` + `static_kuberesources_<ts>.tar.gz`.
//!
//! Three layouts are read, from one directory:
//! - `cluster-backup.sh DIR` writes the pair straight into DIR (`<ts>` is `date +%F_%H%M%S`,
//!   with `__POSSIBLY_DIRTY__` appended under `--force`);
//! - the automated backups (Backup / EtcdBackup CRs) write `backup-<name>-<ts>/` on their PVC;
//! - local periodic backups write `/var/lib/etcd-auto-backup/<ts>/`.
//!
//! Only timestamp-shaped names count, so a hand-made `snapshot_manual.db` can never sort
//! newest forever. The directory is the host's: links are not followed, sizes are capped.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

use crate::ids::parse_restore_timestamp;
use crate::manifest::{DIRTY_SUFFIX, SourceInfo};

/// A keys archive is a few MiB; reading this much of one without its end means it is not one.
const TARBALL_CAP: u64 = 1024 * 1024 * 1024;

/// One complete pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDirPair {
    /// `<ts>` as the backup named it (`date +%F_%H%M%S`), without the dirty suffix.
    pub timestamp: String,
    /// `<ts>` parsed, for ordering.
    pub time: NaiveDateTime,
    /// Taken with `cluster-backup.sh --force` past its guards (`__POSSIBLY_DIRTY__`).
    pub dirty: bool,
    pub snapshot: PathBuf,
    pub static_tarball: PathBuf,
}

impl BackupDirPair {
    pub fn source_info(&self) -> SourceInfo {
        SourceInfo::BackupDir {
            timestamp: self.timestamp.clone(),
            snapshot_file: self.snapshot.display().to_string(),
            static_file: self.static_tarball.display().to_string(),
        }
    }
}

/// The newest complete pair in `dir` or in its backup subdirectories, by the time in its name.
pub fn newest_pair(dir: &Path) -> io::Result<BackupDirPair> {
    let mut candidates = pairs_in(dir)?;
    for sub in backup_subdirectories(dir)? {
        candidates.extend(pairs_in(&sub)?);
    }
    candidates.sort_by_key(|pair| std::cmp::Reverse(pair.time));
    for pair in candidates {
        match incomplete(&pair) {
            None => return Ok(pair),
            Some(why) => tracing::warn!(
                snapshot = %pair.snapshot.display(),
                "skipping a pair that is not complete ({why}); an older one is considered"
            ),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no complete snapshot_<YYYY-MM-DD_HHMMSS>.db + static_kuberesources_<YYYY-MM-DD_HHMMSS>.tar.gz pair in {} or its backup-<name>-<ts>/ and <ts>/ subdirectories; run cluster-backup.sh (or wait for the automated backup) first, or check source.backup_dir",
            dir.display()
        ),
    ))
}

/// `snapshot_<ts>[__POSSIBLY_DIRTY__].db` → (`<ts>`, its time, dirty).
fn parse_snapshot_name(name: &str) -> Option<(&str, NaiveDateTime, bool)> {
    let stem = name.strip_prefix("snapshot_")?.strip_suffix(".db")?;
    let (ts, dirty) = match stem.strip_suffix(DIRTY_SUFFIX) {
        Some(ts) => (ts, true),
        None => (stem, false),
    };
    Some((ts, parse_restore_timestamp(ts)?, dirty))
}

/// Subdirectories named `<ts>` or `backup-<name>-<ts>` (real directories, not links).
fn backup_subdirectories(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let ts = name
            .get(name.len().saturating_sub(17)..)
            .unwrap_or_default();
        let shaped = parse_restore_timestamp(ts).is_some()
            && (name.len() == 17 || (name.starts_with("backup-") && name.len() > 25));
        if shaped && entry.file_type()?.is_dir() {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// The timestamp-shaped pairs whose snapshot is in `dir`; other backup-like names are ignored with a warning.
fn pairs_in(dir: &Path) -> io::Result<Vec<BackupDirPair>> {
    let mut pairs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        match parse_snapshot_name(name) {
            Some((ts, time, dirty)) => {
                let suffix = if dirty { DIRTY_SUFFIX } else { "" };
                pairs.push(BackupDirPair {
                    timestamp: ts.to_string(),
                    time,
                    dirty,
                    snapshot: entry.path(),
                    static_tarball: dir.join(format!("static_kuberesources_{ts}{suffix}.tar.gz")),
                });
            }
            None if name.starts_with("snapshot_") && name.ends_with(".db") => {
                tracing::warn!(
                    file = %entry.path().display(),
                    "ignored: not named snapshot_<YYYY-MM-DD_HHMMSS>.db as cluster-backup.sh names its snapshots"
                );
            }
            None => {}
        }
    }
    Ok(pairs)
}

/// Why a pair cannot be shipped yet, or None when it is complete.
///
/// The snapshot gets its final name only once written (etcdctl and the operator write a
/// `.part` and rename it), but the operator's automated backup writes the tarball in
/// place after the snapshot: only a gzip stream that reads to its end is complete.
fn incomplete(pair: &BackupDirPair) -> Option<String> {
    for file in [&pair.snapshot, &pair.static_tarball] {
        match std::fs::symlink_metadata(file) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Some(format!("{} is not a regular file", file.display())),
            Err(e) => return Some(format!("{}: {e}", file.display())),
        }
    }
    let read_through = std::fs::File::open(&pair.static_tarball).and_then(|file| {
        let mut gz = flate2::read::GzDecoder::new(file).take(TARBALL_CAP + 1);
        io::copy(&mut gz, &mut io::sink())
    });
    match read_through {
        Ok(n) if n > TARBALL_CAP => Some(format!(
            "{} holds more than {TARBALL_CAP} bytes: not a static resources archive",
            pair.static_tarball.display()
        )),
        Ok(_) => None,
        Err(e) => Some(format!(
            "{} does not read to its end ({e}): still being written?",
            pair.static_tarball.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A valid gzip of a small tar member, as a finished tarball.
    fn tarball() -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[0u8; 1024]).unwrap();
        gz.finish().unwrap()
    }

    fn pair(dir: &Path, ts: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("snapshot_{ts}.db")), "db").unwrap();
        std::fs::write(
            dir.join(format!("static_kuberesources_{ts}.tar.gz")),
            tarball(),
        )
        .unwrap();
    }

    #[test]
    fn newest_timestamped_pair_wins_over_hand_made_names() {
        let dir = crate::scratch_dir();
        let d = dir.path();
        pair(d, "2026-11-20_030000");
        pair(d, "2026-11-21_030000");
        // Hand-made names sort after digits; they never count.
        pair(d, "manual-before-upgrade");
        pair(d, "2026-11-21_03000");
        // Still being written: no tarball yet.
        std::fs::write(d.join("snapshot_2026-11-22_030000.db"), "x").unwrap();
        let found = newest_pair(d).unwrap();
        assert_eq!(found.timestamp, "2026-11-21_030000");
        assert!(!found.dirty);
        let empty = crate::scratch_dir();
        assert!(newest_pair(empty.path()).is_err());
    }

    #[test]
    fn dirty_pairs_are_matched_and_marked() {
        let dir = crate::scratch_dir();
        let d = dir.path();
        pair(d, "2026-11-20_030000");
        pair(d, &format!("2026-11-21_030000{DIRTY_SUFFIX}"));
        let found = newest_pair(d).unwrap();
        assert_eq!(found.timestamp, "2026-11-21_030000");
        assert!(found.dirty);
        assert!(
            found
                .static_tarball
                .ends_with("static_kuberesources_2026-11-21_030000__POSSIBLY_DIRTY__.tar.gz")
        );
    }

    #[test]
    fn automated_layouts_ship_the_newest_complete_subdirectory() {
        let dir = crate::scratch_dir();
        let d = dir.path();
        pair(
            &d.join("backup-daily-2026-11-20_030000"),
            "2026-11-20_030001",
        );
        pair(
            &d.join("backup-daily-2026-11-21_030000"),
            "2026-11-21_030002",
        );
        // The newest is still being written: its tarball is cut short.
        let writing = d.join("backup-daily-2026-11-22_030000");
        pair(&writing, "2026-11-22_030001");
        let full = tarball();
        std::fs::write(
            writing.join("static_kuberesources_2026-11-22_030001.tar.gz"),
            &full[..full.len() - 6],
        )
        .unwrap();
        // Not a backup directory.
        pair(&d.join("lost+found"), "2026-11-30_030000");
        let found = newest_pair(d).unwrap();
        assert_eq!(found.timestamp, "2026-11-21_030002");
        assert!(
            found
                .snapshot
                .starts_with(d.join("backup-daily-2026-11-21_030000"))
        );

        // /var/lib/etcd-auto-backup/<ts>/
        let auto = crate::scratch_dir();
        pair(&auto.path().join("2026-11-23_104649"), "2026-11-23_104649");
        pair(&auto.path().join("2026-11-22_104649"), "2026-11-22_104650");
        assert_eq!(
            newest_pair(auto.path()).unwrap().timestamp,
            "2026-11-23_104649"
        );
    }

    #[test]
    fn links_are_not_followed() {
        let dir = crate::scratch_dir();
        let outside = crate::scratch_dir();
        pair(outside.path(), "2026-11-25_030000");
        std::os::unix::fs::symlink(
            outside.path(),
            dir.path().join("backup-x-2026-11-25_030000"),
        )
        .unwrap();
        pair(dir.path(), "2026-11-20_030000");
        std::fs::remove_file(dir.path().join("snapshot_2026-11-20_030000.db")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("snapshot_2026-11-25_030000.db"),
            dir.path().join("snapshot_2026-11-20_030000.db"),
        )
        .unwrap();
        assert!(newest_pair(dir.path()).is_err());
    }
}
