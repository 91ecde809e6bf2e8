//! The files OpenShift's `cluster-backup.sh` wrote: `snapshot_<ts>.db` + `static_kuberesources_<ts>.tar.gz`.

use std::io;
use std::path::{Path, PathBuf};

use crate::manifest::SourceInfo;

/// The newest complete pair in a backup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDirPair {
    /// `<ts>` as cluster-backup.sh wrote it (`date +%F_%H%M%S`).
    pub timestamp: String,
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

/// Finds the newest timestamp that has both files (a lone file is a backup still being written).
pub fn newest_pair(dir: &Path) -> io::Result<BackupDirPair> {
    let mut snapshots = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(ts) = name
            .to_str()
            .and_then(|n| n.strip_prefix("snapshot_"))
            .and_then(|n| n.strip_suffix(".db"))
        {
            snapshots.push(ts.to_string());
        }
    }
    // The timestamp format sorts as text in time order.
    snapshots.sort();
    snapshots
        .into_iter()
        .rev()
        .map(|ts| BackupDirPair {
            snapshot: dir.join(format!("snapshot_{ts}.db")),
            static_tarball: dir.join(format!("static_kuberesources_{ts}.tar.gz")),
            timestamp: ts,
        })
        .find(|pair| pair.static_tarball.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no snapshot_<ts>.db with a matching static_kuberesources_<ts>.tar.gz in {}; run cluster-backup.sh first or check source.backup_dir",
                    dir.display()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_complete_pair_wins() {
        let dir = crate::scratch_dir();
        for f in [
            "snapshot_2026-11-20_030000.db",
            "static_kuberesources_2026-11-20_030000.tar.gz",
            "snapshot_2026-11-21_030000.db",
            "static_kuberesources_2026-11-21_030000.tar.gz",
            // still being written: no tarball yet
            "snapshot_2026-11-22_030000.db",
        ] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let pair = newest_pair(dir.path()).unwrap();
        assert_eq!(pair.timestamp, "2026-11-21_030000");
        let empty = crate::scratch_dir();
        assert!(newest_pair(empty.path()).is_err());
    }
}
