//! The static Kubernetes resources (they hold the etcd encryption keys) as a tar stream.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config::{StaticResources, StaticSelection};

/// The pods whose running resource revision cluster-backup.sh archives.
pub const OPENSHIFT_PODS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];

/// The directories to archive, discovered now when the config asks for discovery.
pub fn resolve(config: &StaticResources) -> io::Result<Vec<PathBuf>> {
    match &config.selection {
        StaticSelection::Paths(paths) => Ok(paths.clone()),
        StaticSelection::OpenShift => OPENSHIFT_PODS
            .iter()
            .map(|pod| running_revision(&config.base_dir, pod))
            .collect(),
    }
}

/// `<base_dir>/static-pod-resources/<pod>-pod-<N>` for the revision the kubelet runs now.
///
/// As cluster-backup.sh does since 4.6 (`grep -o -m1 '/etc/kubernetes/static-pod-resources/<pod>-pod-[0-9]*'
/// /etc/kubernetes/manifests/<pod>-pod.yaml`): the highest directory on disk can be a revision
/// that is being rolled out, or one that failed and never ran.
fn running_revision(base_dir: &Path, pod: &str) -> io::Result<PathBuf> {
    let manifest = base_dir.join("manifests").join(format!("{pod}-pod.yaml"));
    let not_running = |what: String| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{what}; is the {pod} static pod running on this host (an OpenShift control-plane node)?"
            ),
        )
    };
    // Static pod manifests are a few KiB; a huge file is not one.
    let text = read_capped(&manifest, 1024 * 1024)
        .map_err(|e| not_running(format!("cannot read {}: {e}", manifest.display())))?;
    let revision = revision_in_manifest(&text, pod).ok_or_else(|| {
        not_running(format!(
            "{} names no /etc/kubernetes/static-pod-resources/{pod}-pod-<revision> directory",
            manifest.display()
        ))
    })?;
    let dir = base_dir
        .join("static-pod-resources")
        .join(format!("{pod}-pod-{revision}"));
    // A link could lead the archive anywhere on the host; the kubelet's directories are real ones.
    match std::fs::symlink_metadata(&dir) {
        Ok(meta) if meta.is_dir() => Ok(dir),
        Ok(_) => Err(not_running(format!(
            "{} (revision {revision}, named by {}) is not a directory",
            dir.display(),
            manifest.display()
        ))),
        Err(e) => Err(not_running(format!(
            "{} (revision {revision}, named by {}) is missing: {e}",
            dir.display(),
            manifest.display()
        ))),
    }
}

/// The revision number in the first `/etc/kubernetes/static-pod-resources/<pod>-pod-<N>` of a manifest.
fn revision_in_manifest(text: &str, pod: &str) -> Option<u64> {
    let needle = format!("/etc/kubernetes/static-pod-resources/{pod}-pod-");
    text.match_indices(&needle).find_map(|(at, _)| {
        let rest = &text[at + needle.len()..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        rest[..digits].parse().ok()
    })
}

/// Reads a small text file, refusing one larger than `cap` bytes.
fn read_capped(path: &Path, cap: u64) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(cap + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(text)
}

/// The largest file archived: static pod resources are certificates, keys and small
/// manifests; anything bigger is not what this archive is for and would be held in memory.
const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// How often a file that changes while it is read is read again before the backup fails.
const READ_ATTEMPTS: u32 = 3;

/// Writes a tar of `paths` with member names relative to `base_dir` (modes kept, symlinks
/// as links). Each regular file is read whole and checked unchanged (size, mtime, ctime)
/// across the read, so a file written during the backup is read again or fails the
/// backup by name, and never yields a member whose size disagrees with its data.
pub fn write_tar(base_dir: &Path, paths: &[PathBuf], out: &mut dyn Write) -> io::Result<u64> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    for path in paths {
        let name = path.strip_prefix(base_dir).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not under {}", path.display(), base_dir.display()),
            )
        })?;
        append_tree(&mut builder, path, name)?;
    }
    builder.into_inner()?;
    Ok(paths.len() as u64)
}

/// What cluster-restore.sh needs of a keys archive: it untars it into /etc/kubernetes and
/// starts the static pods from `static-pod-resources/<pod>-pod-<N>`.
pub const ARCHIVE_ROOT: &str = "static-pod-resources/";

/// Reads a keys archive through to its end: every member must read, and some must lie
/// under [`ARCHIVE_ROOT`]. Returns the member count, or what is wrong with the archive.
pub fn check_archive(reader: &mut dyn io::Read) -> io::Result<Result<u64, String>> {
    let mut archive = tar::Archive::new(reader);
    let mut members = 0;
    let mut under_root = 0;
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => return Ok(Err(format!("the tar does not read: {e}"))),
    };
    for entry in entries {
        let read = entry.and_then(|mut e| {
            let in_root = e
                .path()
                .is_ok_and(|p| p.to_string_lossy().starts_with(ARCHIVE_ROOT));
            io::copy(&mut e, &mut io::sink()).map(|_| in_root)
        });
        match read {
            Ok(in_root) => {
                members += 1;
                under_root += u64::from(in_root);
            }
            Err(e) => {
                return Ok(Err(format!(
                    "the tar does not read after {members} members: {e}"
                )));
            }
        }
    }
    if under_root == 0 {
        return Ok(Err(format!(
            "the archive holds no {ARCHIVE_ROOT} member ({members} members in all): cluster-restore.sh could not start the control plane from it; archive the static pod resource directories under base_dir"
        )));
    }
    Ok(Ok(members))
}

/// Appends `path` as `name`, and a directory's entries below it in name order.
fn append_tree(
    builder: &mut tar::Builder<&mut dyn Write>,
    path: &Path,
    name: &Path,
) -> io::Result<()> {
    let metadata = std::fs::symlink_metadata(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        let mut header = header_for(&metadata);
        builder.append_data(&mut header, name, io::empty())?;
        let mut entries = std::fs::read_dir(path)
            .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot list {}: {e}", path.display()))
            })?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            append_tree(builder, &entry.path(), &name.join(entry.file_name()))?;
        }
    } else if file_type.is_file() {
        let (data, metadata) = read_consistent(path)?;
        let mut header = header_for(&metadata);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, &data[..])?;
    } else {
        // Symlinks (kept as links) and special files carry no data that can change.
        builder.append_path_with_name(path, name)?;
    }
    Ok(())
}

fn header_for(metadata: &std::fs::Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(metadata, tar::HeaderMode::Complete);
    header
}

/// The whole file, read while its size, mtime and ctime stayed the same, with the
/// metadata that describes exactly those bytes.
fn read_consistent(path: &Path) -> io::Result<(Vec<u8>, std::fs::Metadata)> {
    use std::io::Read;
    let context =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()));
    for attempt in 1..=READ_ATTEMPTS {
        let file = std::fs::File::open(path).map_err(context)?;
        let before = file.metadata().map_err(context)?;
        if before.len() > MAX_FILE_SIZE {
            return Err(too_large(path, before.len()));
        }
        let mut data = Vec::with_capacity(usize::try_from(before.len()).unwrap_or(0));
        (&file)
            .take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut data)
            .map_err(context)?;
        if data.len() as u64 > MAX_FILE_SIZE {
            return Err(too_large(path, data.len() as u64));
        }
        let after = file.metadata().map_err(context)?;
        if data.len() as u64 == before.len() && unchanged(&before, &after) {
            return Ok((data, after));
        }
        tracing::debug!(path = %path.display(), attempt, "file changed while it was read; reading it again");
        // Give a writer in the middle of an update a moment to finish it.
        std::thread::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)));
    }
    Err(io::Error::other(format!(
        "{} kept changing while it was read ({READ_ATTEMPTS} attempts), so the keys archive would not be consistent; \
         back up when nothing is writing to the static pod resources (e.g. not during a rollout), or retry",
        path.display()
    )))
}

fn too_large(path: &Path, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is {size} bytes, over the {} MiB limit for a static resources file; \
             static pod resources are small certificates and configs, so check that the configured paths are right",
            path.display(),
            MAX_FILE_SIZE / (1024 * 1024)
        ),
    )
}

/// Same size, modification time and change time (any write or truncate moves them).
fn unchanged(before: &std::fs::Metadata, after: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    before.len() == after.len()
        && before.mtime() == after.mtime()
        && before.mtime_nsec() == after.mtime_nsec()
        && before.ctime() == after.ctime()
        && before.ctime_nsec() == after.ctime_nsec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host tree: every pod running `running`, and a newer revision on disk for kube-apiserver.
    fn host_tree(running: u64) -> tempfile::TempDir {
        let base = crate::scratch_dir();
        std::fs::create_dir_all(base.path().join("manifests")).unwrap();
        for pod in OPENSHIFT_PODS {
            for revision in [running - 1, running] {
                std::fs::create_dir_all(
                    base.path()
                        .join(format!("static-pod-resources/{pod}-pod-{revision}")),
                )
                .unwrap();
            }
            std::fs::write(
                base.path().join(format!("manifests/{pod}-pod.yaml")),
                format!(
                    "apiVersion: v1\nkind: Pod\nspec:\n  volumes:\n  - hostPath:\n      path: /etc/kubernetes/static-pod-resources/{pod}-pod-{running}\n    name: resource-dir\n  - hostPath:\n      path: /etc/kubernetes/static-pod-resources/{pod}-certs\n"
                ),
            )
            .unwrap();
        }
        // Being rolled out (or failed): on disk, not running.
        std::fs::create_dir_all(base.path().join(format!(
            "static-pod-resources/kube-apiserver-pod-{}",
            running + 1
        )))
        .unwrap();
        base
    }

    #[test]
    fn openshift_discovery_takes_the_running_revision() {
        let base = host_tree(7);
        let config = StaticResources {
            base_dir: base.path().to_path_buf(),
            selection: StaticSelection::OpenShift,
        };
        let root = base.path().join("static-pod-resources");
        let paths = resolve(&config).unwrap();
        assert_eq!(
            paths,
            [
                root.join("kube-apiserver-pod-7"),
                root.join("kube-controller-manager-pod-7"),
                root.join("kube-scheduler-pod-7"),
                root.join("etcd-pod-7"),
            ]
        );

        // The running revision's directory is gone: named, not replaced by another one.
        std::fs::remove_dir(root.join("etcd-pod-7")).unwrap();
        let err = resolve(&config).unwrap_err().to_string();
        assert!(
            err.contains("etcd-pod-7") && err.contains("revision 7"),
            "{err}"
        );

        // No manifest: the pod does not run here.
        std::fs::remove_file(base.path().join("manifests/kube-scheduler-pod.yaml")).unwrap();
        let err = resolve(&config).unwrap_err().to_string();
        assert!(err.contains("kube-scheduler-pod.yaml"), "{err}");
    }

    #[test]
    fn revision_is_read_from_the_manifest_text() {
        let text = "x /etc/kubernetes/static-pod-resources/etcd-certs y /etc/kubernetes/static-pod-resources/etcd-pod-12/configmaps";
        assert_eq!(revision_in_manifest(text, "etcd"), Some(12));
        assert_eq!(
            revision_in_manifest("/etc/kubernetes/static-pod-resources/etcd-pod-", "etcd"),
            None
        );
        assert_eq!(
            revision_in_manifest(
                "/etc/kubernetes/static-pod-resources/kube-apiserver-pod-3",
                "etcd"
            ),
            None
        );
    }

    #[test]
    fn a_symlinked_revision_is_refused() {
        let base = host_tree(4);
        let root = base.path().join("static-pod-resources");
        std::fs::remove_dir(root.join("etcd-pod-4")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etcd-pod-4")).unwrap();
        let config = StaticResources {
            base_dir: base.path().to_path_buf(),
            selection: StaticSelection::OpenShift,
        };
        let err = resolve(&config).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn tar_members_are_relative_with_modes() {
        use std::os::unix::fs::PermissionsExt;
        let base = crate::scratch_dir();
        let dir = base
            .path()
            .join("static-pod-resources/kube-apiserver-pod-1/secrets");
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("encryption-config");
        std::fs::write(&key, "secret").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut out = Vec::new();
        write_tar(
            base.path(),
            &[base
                .path()
                .join("static-pod-resources/kube-apiserver-pod-1")],
            &mut out,
        )
        .unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap() & 0o7777,
                )
            })
            .collect();
        assert!(
            entries.contains(&(
                "static-pod-resources/kube-apiserver-pod-1/secrets/encryption-config".into(),
                0o600
            )),
            "{entries:?}"
        );
    }

    /// Every member of a tar, with its data read through (a short member fails the read).
    fn read_members(tar_bytes: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
        use std::io::Read;
        let mut archive = tar::Archive::new(tar_bytes);
        let mut members = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            members.push((entry.path()?.display().to_string(), data));
        }
        Ok(members)
    }

    #[test]
    fn a_file_written_while_archived_never_breaks_the_tar() {
        let base = crate::scratch_dir();
        let dir = base.path().join("static-pod-resources/etcd-pod-2");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a-before"), "steady").unwrap();
        std::fs::write(dir.join("z-after"), "steady too").unwrap();
        let growing = dir.join("m-growing.log");
        std::fs::write(&growing, vec![b'x'; 100_000]).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (stop, growing) = (stop.clone(), growing.clone());
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&growing)
                    .unwrap();
                let mut round = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    file.write_all(&[b'y'; 4096]).unwrap();
                    round += 1;
                    if round.is_multiple_of(64) {
                        // Truncate now and then: shrinking breaks a stat-then-copy tar too.
                        file.set_len(50_000).unwrap();
                    }
                }
            })
        };
        let (mut archived, mut refused) = (0, 0);
        for _ in 0..40 {
            let mut out = Vec::new();
            match write_tar(base.path(), std::slice::from_ref(&dir), &mut out) {
                Ok(_) => {
                    let members = read_members(&out).expect("an archive that was written reads");
                    assert_eq!(
                        members.len(),
                        4,
                        "{:?}",
                        members.iter().map(|m| &m.0).collect::<Vec<_>>()
                    );
                    archived += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains("m-growing.log"), "{e}");
                    refused += 1;
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(archived + refused, 40);
    }

    #[test]
    fn a_file_over_the_limit_fails_by_name() {
        let base = crate::scratch_dir();
        let dir = base.path().join("static-pod-resources");
        std::fs::create_dir_all(&dir).unwrap();
        let big = std::fs::File::create(dir.join("huge.bin")).unwrap();
        big.set_len(MAX_FILE_SIZE + 1).unwrap(); // sparse: costs no disk
        let err = write_tar(base.path(), &[dir], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("huge.bin"), "{err}");
        assert!(err.to_string().contains("64 MiB"), "{err}");
    }

    #[test]
    fn symlinks_stay_links_and_directories_are_members() {
        let base = crate::scratch_dir();
        let dir = base
            .path()
            .join("static-pod-resources/kube-scheduler-pod-3");
        std::fs::create_dir_all(dir.join("configmaps")).unwrap();
        std::fs::write(dir.join("configmaps/config.yaml"), "a: 1\n").unwrap();
        std::os::unix::fs::symlink("configmaps/config.yaml", dir.join("current")).unwrap();
        let mut out = Vec::new();
        write_tar(base.path(), &[dir], &mut out).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let kinds: Vec<(String, tar::EntryType)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                )
            })
            .collect();
        let root = "static-pod-resources/kube-scheduler-pod-3";
        assert_eq!(
            kinds,
            vec![
                (root.to_string(), tar::EntryType::Directory),
                (format!("{root}/configmaps"), tar::EntryType::Directory),
                (
                    format!("{root}/configmaps/config.yaml"),
                    tar::EntryType::Regular
                ),
                (format!("{root}/current"), tar::EntryType::Symlink),
            ]
        );
        let members = read_members(&out).unwrap();
        assert_eq!(members[2].1, b"a: 1\n");
    }
}
