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

/// Writes a tar of `paths` with member names relative to `base_dir` (modes kept, symlinks as links).
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
        if path.is_dir() {
            builder.append_dir_all(name, path)?;
        } else {
            builder.append_path_with_name(path, name)?;
        }
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
}
