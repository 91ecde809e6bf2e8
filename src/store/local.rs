//! file:// targets seen without following links: listing, the check before every read or
//! delete, and writes that walk into the target one directory descriptor at a time
//! (`O_NOFOLLOW`), so that a symbolic link in a target never reaches outside it.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::StoredObject;

/// object_store's staging files of unfinished uploads: `<name>#<n>`.
pub fn is_staging(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The directories directly below `root/dir_key` (none when it does not exist), sorted;
/// the reading stops at `limit` of them (a directory with millions is not read whole).
/// Symbolic links and names that are not UTF-8 are skipped with a warning.
pub fn subdirectories(root: &Path, dir_key: &str, limit: usize) -> io::Result<Vec<String>> {
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
        if names.len() >= limit {
            break;
        }
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

/// A directory inside a file:// target, reached from the target's root one component at a
/// time with `O_NOFOLLOW | O_DIRECTORY`: no symbolic link on the way is ever followed, even
/// one planted after a check. Files are created in it relative to its descriptor.
pub struct KeyDir {
    fd: OwnedFd,
    /// The path it was reached by, for messages.
    path: PathBuf,
}

/// Opens the directory that holds `key` (creating missing directories), refusing a link on
/// the way with an error that names it; returns it with the key's file name.
pub fn open_key_dir(root: &Path, key: &str) -> io::Result<(KeyDir, String)> {
    let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
    let Some((name, dirs)) = parts.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty key"));
    };
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("key {key} leaves the target"),
        ));
    }
    let directory = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = KeyDir {
        fd: rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?,
        path: root.to_path_buf(),
    };
    for part in dirs {
        let path = dir.path.join(part);
        let opened = match rustix::fs::openat(&dir.fd, *part, directory, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir.fd, *part, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(dir.refusal(part, e)),
                }
                rustix::fs::openat(&dir.fd, *part, directory, Mode::empty())
            }
            other => other,
        };
        let fd = opened.map_err(|e| dir.refusal(part, e))?;
        dir = KeyDir { fd, path };
    }
    Ok((dir, name.to_string()))
}

impl KeyDir {
    /// Why `name` in this directory cannot be opened or replaced: a link is named, with the fix.
    fn refusal(&self, name: &str, e: rustix::io::Errno) -> io::Error {
        let path = self.path.join(name);
        let is_link = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
        if is_link {
            return io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is a symbolic link; etcd-offsite never writes through links, so nothing lands outside the target. Replace the link with a real directory (move what it points at into its place), or point the target URL at the real location",
                    path.display()
                ),
            );
        }
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    }

    /// Creates `name#<n>` (create-new, never through a link), the staging name of an
    /// unfinished write that [`is_staging`] knows.
    pub fn create_staging(&self, name: &str) -> io::Result<(std::fs::File, String)> {
        let staging = format!("{name}#{}", rand::random::<u32>());
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(
            &self.fd,
            staging.as_str(),
            flags,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| self.refusal(&staging, e))?;
        Ok((std::fs::File::from(fd), staging))
    }

    /// Gives `staging` the name `name` only if no object has it: Ok(false) when one does.
    pub fn link_new(&self, staging: &str, name: &str) -> io::Result<bool> {
        let linked = rustix::fs::linkat(&self.fd, staging, &self.fd, name, AtFlags::empty());
        let _ = rustix::fs::unlinkat(&self.fd, staging, AtFlags::empty());
        match linked {
            Ok(()) => self.sync().map(|()| true),
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(self.refusal(name, e)),
        }
    }

    /// Renames `staging` to `name`, replacing an object of that name (an upload).
    pub fn rename(&self, staging: &str, name: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, staging, &self.fd, name)
            .map_err(|e| self.refusal(name, e))?;
        self.sync()
    }

    /// Removes `staging` (a write given up).
    pub fn remove(&self, staging: &str) {
        let _ = rustix::fs::unlinkat(&self.fd, staging, AtFlags::empty());
    }

    /// Makes the directory's new entry durable: the manifest must never reach the disk
    /// before the data it describes.
    fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(io::Error::from)
    }
}

/// Writes a small object create-only: Ok(false) when the key exists.
pub fn create(root: &Path, key: &str, bytes: &[u8]) -> io::Result<bool> {
    use std::io::Write;
    let (dir, name) = open_key_dir(root, key)?;
    let (mut file, staging) = dir.create_staging(&name)?;
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        dir.remove(&staging);
        return Err(e);
    }
    dir.link_new(&staging, &name)
}

/// An object being written to a file:// target under its staging name, in the directory
/// reached without links; renamed into place by [`LocalUpload::finish`].
pub struct LocalUpload {
    dir: KeyDir,
    name: String,
    staging: String,
    file: std::fs::File,
}

impl LocalUpload {
    pub fn start(root: &Path, key: &str) -> io::Result<Self> {
        let (dir, name) = open_key_dir(root, key)?;
        let (file, staging) = dir.create_staging(&name)?;
        Ok(Self {
            dir,
            name,
            staging,
            file,
        })
    }

    /// Appends one part.
    pub fn put(&self, part: &[u8]) -> io::Result<()> {
        use std::io::Write;
        (&self.file).write_all(part)
    }

    /// Syncs the data, then renames it into place.
    pub fn finish(&self) -> io::Result<()> {
        let done = self
            .file
            .sync_all()
            .and_then(|()| self.dir.rename(&self.staging, &self.name));
        if done.is_err() {
            self.abort();
        }
        done
    }

    pub fn abort(&self) {
        self.dir.remove(&self.staging);
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
    fn writes_never_go_through_a_link() {
        let scratch = crate::scratch_dir();
        let root = scratch.path().join("target");
        let outside = scratch.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("c")).unwrap();
        let root = root.canonicalize().unwrap();
        let refused = |e: io::Error| {
            let text = e.to_string();
            assert!(
                text.contains(&format!("{} is a symbolic link", root.join("c").display()))
                    && text.contains("real directory"),
                "{text}"
            );
        };
        refused(create(&root, "c/1/manifest.json", b"x").unwrap_err());
        refused(
            LocalUpload::start(&root, "c/1/snapshot.db.zst.age")
                .err()
                .unwrap(),
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::remove_file(root.join("c")).unwrap();

        // Create-only, also over a link planted at the object's own name.
        assert!(create(&root, "c/1/manifest.json", b"a").unwrap());
        assert!(!create(&root, "c/1/manifest.json", b"b").unwrap());
        assert_eq!(std::fs::read(root.join("c/1/manifest.json")).unwrap(), b"a");
        std::os::unix::fs::symlink(outside.join("x"), root.join("c/1/lock")).unwrap();
        assert!(!create(&root, "c/1/lock", b"b").unwrap());
        assert!(!outside.join("x").exists());

        let upload = LocalUpload::start(&root, "c/1/snapshot.db.zst.age").unwrap();
        upload.put(b"ab").unwrap();
        upload.put(b"cd").unwrap();
        upload.finish().unwrap();
        assert_eq!(
            std::fs::read(root.join("c/1/snapshot.db.zst.age")).unwrap(),
            b"abcd"
        );
        let aborted = LocalUpload::start(&root, "c/1/other").unwrap();
        aborted.put(b"x").unwrap();
        aborted.abort();
        let names: Vec<String> = walk(&root, "c")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(names, ["c/1/manifest.json", "c/1/snapshot.db.zst.age"]);
        assert!(create(&root, "c/../x", b"x").is_err());
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
