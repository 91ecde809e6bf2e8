//! Where an OpenShift control-plane host (or a pod on one) keeps an etcd client certificate.
//!
//! Read from cluster-etcd-operator (cluster-backup.sh, the backup Job, etcd.env):
//! - The backup Job mounts the node-independent `etcd-client` Secret at
//!   `/var/run/secrets/etcd-client/tls.{crt,key}` and the `etcd-ca-bundle` ConfigMap at
//!   `/var/run/configmaps/etcd-ca/ca-bundle.crt`, and talks to `https://localhost:2379`
//!   on the host network (the serving certificates name localhost).
//! - Static pods see the etcd certificates under `/etc/kubernetes/static-pod-certs/`; on
//!   the host the same files are `/etc/kubernetes/static-pod-resources/etcd-certs/` (a
//!   host symlink made both work up to 4.8). cluster-backup.sh rewrites the one to the other.
//! - CA bundle: `configmaps/etcd-all-bundles/server-ca-bundle.crt` from 4.17,
//!   `configmaps/etcd-serving-ca/ca-bundle.crt` before.
//! - Client certificate: `secrets/etcd-all-certs/etcd-peer-<node>.{crt,key}`; every master
//!   holds every master's, so the node name picks one.

use std::path::{Path, PathBuf};

/// The TLS files found, and which layout they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTls {
    pub cacert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// In words, for logs and errors.
    pub layout: String,
}

/// CA bundles, newest release first.
const CA_BUNDLES: [(&str, &str); 2] = [
    (
        "configmaps/etcd-all-bundles/server-ca-bundle.crt",
        "4.17 and later",
    ),
    (
        "configmaps/etcd-serving-ca/ca-bundle.crt",
        "4.16 and earlier",
    ),
];

/// Finds the client certificate, key and CA bundle: first the `etcd-client` Secret as the
/// backup Job mounts it under `run_dir` (`/var/run`), then the host layout and the pod
/// layout under `base_dir` (`/etc/kubernetes`) with the peer certificate of `node`
/// (its full or short name).
pub fn discover(base_dir: &Path, run_dir: &Path, node: &str) -> Result<DiscoveredTls, String> {
    let secret = run_dir.join("secrets/etcd-client");
    let ca = run_dir.join("configmaps/etcd-ca/ca-bundle.crt");
    if secret.join("tls.crt").is_file() && secret.join("tls.key").is_file() && ca.is_file() {
        return Ok(DiscoveredTls {
            cacert: ca,
            cert: secret.join("tls.crt"),
            key: secret.join("tls.key"),
            layout:
                "the etcd-client Secret and etcd-ca-bundle ConfigMap mounted as the backup Job does"
                    .into(),
        });
    }

    let short = node.split('.').next().unwrap_or(node);
    let mut looked = vec![format!(
        "{}/tls.{{crt,key}} with {}",
        secret.display(),
        ca.display()
    )];
    for (root, layout) in [
        (base_dir.join("static-pod-resources/etcd-certs"), "host"),
        (base_dir.join("static-pod-certs"), "pod"),
    ] {
        let Some((cacert, release)) = CA_BUNDLES
            .iter()
            .map(|(rel, release)| (root.join(rel), *release))
            .find(|(path, _)| path.is_file())
        else {
            looked.push(format!(
                "{}/configmaps/{{etcd-all-bundles,etcd-serving-ca}}",
                root.display()
            ));
            continue;
        };
        let certs = root.join("secrets/etcd-all-certs");
        let found = [node, short].into_iter().find_map(|name| {
            let cert = certs.join(format!("etcd-peer-{name}.crt"));
            let key = certs.join(format!("etcd-peer-{name}.key"));
            (cert.is_file() && key.is_file()).then_some((cert, key))
        });
        match found {
            Some((cert, key)) => {
                return Ok(DiscoveredTls {
                    cacert,
                    cert,
                    key,
                    layout: format!("the {layout} layout under {} ({release})", root.display()),
                });
            }
            None => {
                return Err(format!(
                    "found the etcd certificates under {} but no etcd-peer-{node}.crt/.key (there are: {}); set `source.etcd.node_name` to this node's name as `oc get nodes` shows it",
                    root.display(),
                    peer_names(&certs)
                ));
            }
        }
    }
    Err(format!(
        "no etcd client certificate found; looked for {}. On an OpenShift control-plane host run as root; in a pod mount the etcd-client Secret and etcd-ca-bundle ConfigMap as examples/cronjob.yaml does; elsewhere set cacert, cert and key",
        looked.join(", ")
    ))
}

/// The node names that have a peer certificate in `dir`, for the error message.
fn peer_names(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            Some(
                name.strip_prefix("etcd-peer-")?
                    .strip_suffix(".crt")?
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: PathBuf) -> PathBuf {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "pem").unwrap();
        path
    }

    /// The etcd certificate directory of one release, under `root`.
    fn certs(root: &Path, ca: &str, nodes: &[&str]) {
        touch(root.join(ca));
        for node in nodes {
            touch(root.join(format!("secrets/etcd-all-certs/etcd-peer-{node}.crt")));
            touch(root.join(format!("secrets/etcd-all-certs/etcd-peer-{node}.key")));
        }
    }

    const MASTERS: [&str; 3] = ["master-0", "master-1", "master-2"];

    /// A host whose /etc/kubernetes (`base`) has the etcd certificates of every master at
    /// the host path (`root`), with the CA bundle `ca`.
    fn host_with(ca: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let host = crate::scratch_dir();
        let base = host.path().join("etc/kubernetes");
        let root = base.join("static-pod-resources/etcd-certs");
        certs(&root, ca, &MASTERS);
        (host, base, root)
    }

    #[test]
    fn release_4_17_host_layout() {
        let (host, base, root) = host_with(CA_BUNDLES[0].0);
        let found = discover(&base, &host.path().join("run"), "master-1").unwrap();
        assert_eq!(found.cacert, root.join(CA_BUNDLES[0].0));
        assert_eq!(
            found.cert,
            root.join("secrets/etcd-all-certs/etcd-peer-master-1.crt")
        );
        assert!(found.layout.contains("4.17"), "{}", found.layout);
    }

    #[test]
    fn release_4_16_host_layout_with_a_fully_qualified_hostname() {
        let (host, base, root) = host_with(CA_BUNDLES[1].0);
        let found = discover(&base, &host.path().join("run"), "master-2.ocp.example.com").unwrap();
        assert_eq!(found.cacert, root.join(CA_BUNDLES[1].0));
        assert_eq!(
            found.key,
            root.join("secrets/etcd-all-certs/etcd-peer-master-2.key")
        );
    }

    #[test]
    fn release_4_8_host_symlink_and_pod_layout() {
        // 4.8 and older: the host had /etc/kubernetes/static-pod-certs as a link.
        let (host, base, root) = host_with(CA_BUNDLES[1].0);
        std::os::unix::fs::symlink(&root, base.join("static-pod-certs")).unwrap();
        let found = discover(&base, &host.path().join("run"), "master-0").unwrap();
        assert!(found.cert.starts_with(&root));

        // Inside a static pod only the pod path exists.
        let pod = crate::scratch_dir();
        let base = pod.path().join("etc/kubernetes");
        certs(&base.join("static-pod-certs"), CA_BUNDLES[0].0, &MASTERS);
        let found = discover(&base, &pod.path().join("run"), "master-0").unwrap();
        assert!(found.layout.contains("pod layout"), "{}", found.layout);
    }

    #[test]
    fn the_client_secret_is_node_independent_and_preferred() {
        let host = crate::scratch_dir();
        let base = host.path().join("etc/kubernetes");
        certs(
            &base.join("static-pod-resources/etcd-certs"),
            CA_BUNDLES[0].0,
            &MASTERS,
        );
        let run = host.path().join("run");
        let cert = touch(run.join("secrets/etcd-client/tls.crt"));
        touch(run.join("secrets/etcd-client/tls.key"));
        let ca = touch(run.join("configmaps/etcd-ca/ca-bundle.crt"));
        let found = discover(&base, &run, "replaced-master").unwrap();
        assert_eq!((found.cert, found.cacert), (cert, ca));
    }

    #[test]
    fn a_missing_node_certificate_names_the_ones_there() {
        let host = crate::scratch_dir();
        let base = host.path().join("etc/kubernetes");
        certs(
            &base.join("static-pod-resources/etcd-certs"),
            CA_BUNDLES[0].0,
            &MASTERS,
        );
        let err = discover(&base, &host.path().join("run"), "master-9").unwrap_err();
        assert!(
            err.contains("master-0, master-1, master-2") && err.contains("node_name"),
            "{err}"
        );
        let empty = crate::scratch_dir();
        let err = discover(empty.path(), empty.path(), "m").unwrap_err();
        assert!(err.contains("no etcd client certificate found"), "{err}");
    }
}
