//! file:// targets seen without following links: listing, and the check before every read
//! or delete, so that a symbolic link in a target never reaches outside it.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::StoredObject;

/// object_store's staging files of unfinished uploads: `<name>#<n>`.
pub fn is_staging(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The directories directly below `root/dir_key` (none when it does not exist), sorted.
/// Symbolic links and names that are not UTF-8 are skipped with a warning.
pub fn subdirectories(root: &Path, dir_key: &str) -> io::Result<Vec<String>> {
    let mut dir = root.to_path_buf();
    for part in dir_key.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(Vec::new()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let file_type = entry.file_type()?;
        if file_type.is_symlink() {
            tracing::warn!(path = %entry.path().display(), "skipped: a symbolic link inside the target is never followed");
            continue;
        }
        if !file_type.is_dir() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(_) => {
                tracing::warn!(path = %entry.path().display(), "skipped a name that is not UTF-8: not a directory etcd-offsite wrote")
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Every regular file below `root/dir_key` (staging files included), keys relative to
/// `root`. Symbolic links and names that are not UTF-8 are skipped with a warning; a
/// subdirectory that cannot be read is skipped with a warning too.
pub fn walk(root: &Path, dir_key: &str) -> io::Result<Vec<StoredObject>> {
    let mut start = root.to_path_buf();
    for part in dir_key.split('/').filter(|p| !p.is_empty()) {
        start.push(part);
        match std::fs::symlink_metadata(&start) {
            Ok(m) if m.file_type().is_symlink() => {
                tracing::warn!(path = %start.display(), "skipped: a symbolic link inside the target is never followed");
                return Ok(Vec::new());
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(Vec::new()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
    let mut found = Vec::new();
    let mut pending: Vec<(PathBuf, String)> = vec![(start, dir_key.trim_matches('/').to_string())];
    let mut first = true;
    while let Some((dir, key)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if first => return Err(e),
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "skipped a directory that cannot be read");
                continue;
            }
        };
        first = false;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %path.display(), "skipped a name that is not UTF-8: not an object etcd-offsite wrote");
                continue;
            };
            let child = if key.is_empty() {
                name
            } else {
                format!("{key}/{name}")
            };
            let file_type = entry.file_type()?;
            if file_type.is_symlink() {
                tracing::warn!(path = %path.display(), "skipped: a symbolic link inside the target is never followed");
            } else if file_type.is_dir() {
                pending.push((path, child));
            } else if file_type.is_file() {
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let last_modified: DateTime<Utc> =
                    meta.modified().map(Into::into).unwrap_or_default();
                found.push(StoredObject {
                    key: child,
                    size: meta.len(),
                    last_modified,
                });
            }
        }
    }
    found.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(found)
}

/// Ok when `root/key` is a regular file reached through real directories only (or does
/// not exist: the operation then reports that); otherwise why not.
pub fn check_inside(root: &Path, key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
    let mut path = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        if *part == "." || *part == ".." {
            return Err(format!("key {key} leaves the target"));
        }
        path.push(part);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&path) {
            Err(_) => return Ok(()),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link; etcd-offsite never reads or deletes through links, so nothing outside the target is touched. Remove the link by hand",
                    path.display()
                ));
            }
            Ok(m) if !last && !m.is_dir() => {
                return Err(format!("{} is not a directory", path.display()));
            }
            Ok(m) if last && !m.is_file() => {
                return Err(format!("{} is not a regular file", path.display()));
            }
            Ok(_) => {}
        }
    }
    match path.canonicalize() {
        Ok(real) if !real.starts_with(root) => Err(format!(
            "{} resolves to {}, outside the target",
            path.display(),
            real.display()
        )),
        _ => Ok(()),
    }
}

/// Removes one regular file inside the target, after [`check_inside`].
pub fn remove_file(root: &Path, key: &str) -> io::Result<()> {
    check_inside(root, key).map_err(io::Error::other)?;
    std::fs::remove_file(root.join(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_neither_listed_nor_deleted_through() {
        let scratch = crate::scratch_dir();
        let root = scratch.path().join("target");
        let outside = scratch.path().join("outside");
        std::fs::create_dir_all(root.join("c/20261123T104649Z")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("c/20261123T104649Z/manifest.json"), "{}").unwrap();
        std::fs::write(outside.join("snapshot.db.zst.age"), "precious").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("c/20261124T104649Z")).unwrap();
        std::os::unix::fs::symlink(
            outside.join("snapshot.db.zst.age"),
            root.join("c/20261123T104649Z/snapshot.db.zst.age"),
        )
        .unwrap();
        let root = root.canonicalize().unwrap();
        let keys: Vec<String> = walk(&root, "c")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["c/20261123T104649Z/manifest.json"]);
        assert!(check_inside(&root, "c/20261124T104649Z/snapshot.db.zst.age").is_err());
        assert!(remove_file(&root, "c/20261123T104649Z/snapshot.db.zst.age").is_err());
        assert!(outside.join("snapshot.db.zst.age").exists());
        assert!(check_inside(&root, "c/20261123T104649Z/manifest.json").is_ok());
        assert!(check_inside(&root, "c/../../etc/passwd").is_err());
    }

    #[test]
    fn names_that_are_not_utf8_are_skipped() {
        use std::os::unix::ffi::OsStrExt;
        let scratch = crate::scratch_dir();
        let root = scratch.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("c/x")).unwrap();
        std::fs::write(
            root.join("c/x")
                .join(std::ffi::OsStr::from_bytes(b"\xff\xfe")),
            "",
        )
        .unwrap();
        std::fs::write(root.join("c/x/ok"), "").unwrap();
        let keys: Vec<String> = walk(&root, "c")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["c/x/ok"]);
    }
}
