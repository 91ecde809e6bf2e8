//! The static Kubernetes resources (they hold the etcd encryption keys) as a tar stream.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config::{StaticResources, StaticSelection};

/// The pods whose newest resource revision cluster-backup.sh archives.
const OPENSHIFT_PODS: [&str; 4] = [
    "kube-apiserver-pod",
    "kube-controller-manager-pod",
    "kube-scheduler-pod",
    "etcd-pod",
];

/// The directories to archive, discovered now when the config asks for discovery.
pub fn resolve(config: &StaticResources) -> io::Result<Vec<PathBuf>> {
    match &config.selection {
        StaticSelection::Paths(paths) => Ok(paths.clone()),
        StaticSelection::OpenShift => {
            let root = config.base_dir.join("static-pod-resources");
            OPENSHIFT_PODS
                .iter()
                .map(|pod| newest_revision(&root, pod))
                .collect()
        }
    }
}

/// `<root>/<pod>-<N>` with the highest N.
fn newest_revision(root: &Path, pod: &str) -> io::Result<PathBuf> {
    let prefix = format!("{pod}-");
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(root).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot read {}: {e}; is this an OpenShift control-plane host?",
                root.display()
            ),
        )
    })? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(revision) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.file_type()?.is_dir() && best.as_ref().is_none_or(|(b, _)| revision > *b) {
            best = Some((revision, entry.path()));
        }
    }
    best.map(|(_, path)| path).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {prefix}<revision> directory in {}", root.display()),
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openshift_discovery_takes_the_newest_revision() {
        let base = crate::scratch_dir();
        let root = base.path().join("static-pod-resources");
        for dir in [
            "kube-apiserver-pod-9",
            "kube-apiserver-pod-12",
            "kube-controller-manager-pod-4",
            "kube-scheduler-pod-5",
            "etcd-pod-3",
            "etcd-pod-x",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let config = StaticResources {
            base_dir: base.path().to_path_buf(),
            selection: StaticSelection::OpenShift,
        };
        let paths = resolve(&config).unwrap();
        assert_eq!(paths[0], root.join("kube-apiserver-pod-12"));
        assert_eq!(paths[3], root.join("etcd-pod-3"));
        std::fs::remove_dir(root.join("etcd-pod-3")).unwrap();
        let err = resolve(&config).unwrap_err();
        assert!(err.to_string().contains("etcd-pod-"), "{err}");
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
