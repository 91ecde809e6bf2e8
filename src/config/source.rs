//! `source`: where the snapshot comes from (a live etcd or the files cluster-backup.sh
//! wrote) and which static resources travel with it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use url::Url;

use super::readable_file;
use crate::error::ConfigError;

/// Where the snapshot comes from.
#[derive(Debug, Clone)]
pub enum SnapshotSource {
    Etcd(EtcdSource),
    /// The newest pair that OpenShift's own backups wrote into this directory.
    BackupDir {
        dir: PathBuf,
        /// When configured, the platform version is read from this etcd (if reachable).
        etcd: Option<EtcdSource>,
    },
}

impl SnapshotSource {
    /// The etcd connection, whether the snapshot comes from it or only cluster facts do.
    pub fn etcd(&self) -> Option<&EtcdSource> {
        match self {
            Self::Etcd(etcd) => Some(etcd),
            Self::BackupDir { etcd, .. } => etcd.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSource {
    /// Client URLs; with `discover: openshift` the default is `https://localhost:2379`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// `openshift`: find cacert, cert and key in the host (or pod) layout instead of naming them.
    pub discover: Option<EtcdDiscovery>,
    /// With `discover: openshift`: the host's /etc/kubernetes.
    pub base_dir: Option<PathBuf>,
    /// With `discover: openshift`: whose etcd-peer certificate to use (default: the host name).
    pub node_name: Option<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// etcd user for password authentication (etcdctl's `--user`), with `password_file`.
    pub username: Option<String>,
    /// A file holding that user's password (one line); read when connecting, never logged.
    pub password_file: Option<PathBuf>,
    /// Connect timeout, and the longest silence tolerated inside the snapshot stream.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Bytes per second read from etcd at most (a hard cap, also under `pace: auto`).
    pub read_rate_limit: Option<ByteSize>,
    /// How the snapshot read adapts to etcd's own latency.
    #[serde(default)]
    pub pace: Pace,
}

/// `source.etcd.pace`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// The read rate follows etcd's latency (measured by a linearizable read every few
    /// hundred ms): it backs off when the latency rises above the level before the backup
    /// and recovers slowly, up to `read_rate_limit`.
    #[default]
    Auto,
    /// As fast as etcd, the pipeline and `read_rate_limit` allow.
    Off,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Ways to find the etcd client certificate without naming files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtcdDiscovery {
    /// The `etcd-client` Secret as the backup Job mounts it, else the host or pod layout of
    /// the etcd certificates (4.8 and older, 4.9–4.16, 4.17 and later).
    Openshift,
}

/// Directories archived into the static resources tarball.
#[derive(Debug, Clone)]
pub struct StaticResources {
    /// Tar member names are relative to this directory, as in cluster-backup.sh (`tar -C /etc/kubernetes`).
    pub base_dir: PathBuf,
    pub selection: StaticSelection,
}

#[derive(Debug, Clone)]
pub enum StaticSelection {
    Paths(Vec<PathBuf>),
    /// Newest revision of each control-plane pod's resources under `<base_dir>/static-pod-resources`.
    OpenShift,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) etcd: Option<EtcdSource>,
    pub(super) backup_dir: Option<PathBuf>,
    pub(super) static_resources: Option<RawStaticResources>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStaticResources {
    #[serde(default)]
    paths: Vec<PathBuf>,
    discover: Option<String>,
    base_dir: Option<PathBuf>,
}

/// The resolved source: what the snapshot is taken from, and the static resources (never
/// with `backup_dir`, whose directory holds its own tarball).
pub(super) fn resolve(
    raw: RawSource,
    check_files: bool,
) -> Result<(SnapshotSource, Option<StaticResources>), ConfigError> {
    let source = match (raw.etcd, raw.backup_dir) {
        (Some(etcd), None) => SnapshotSource::Etcd(validate_etcd(etcd, check_files)?),
        (etcd, Some(dir)) => {
            if check_files && !dir.is_dir() {
                return Err(ConfigError::new(
                    "source.backup_dir",
                    format!(
                        "{} is not a readable directory; point it at the directory cluster-backup.sh writes to",
                        dir.display()
                    ),
                ));
            }
            // With both, the files are shipped and etcd only tells the platform version.
            let etcd = etcd.map(|e| validate_etcd(e, check_files)).transpose()?;
            SnapshotSource::BackupDir { dir, etcd }
        }
        (None, None) => {
            return Err(ConfigError::new(
                "source",
                "no snapshot source; set `source.etcd` (live snapshot) or `source.backup_dir` (files from cluster-backup.sh)",
            ));
        }
    };

    let static_resources = match (&source, raw.static_resources) {
        (SnapshotSource::BackupDir { .. }, Some(_)) => {
            return Err(ConfigError::new(
                "source.static_resources",
                "not used with `source.backup_dir`: the static resources come from the directory's static_kuberesources_*.tar.gz; remove this key",
            ));
        }
        (_, Some(s)) => Some(validate_static(s, check_files)?),
        (_, None) => None,
    };
    Ok((source, static_resources))
}

fn validate_etcd(mut etcd: EtcdSource, check_files: bool) -> Result<EtcdSource, ConfigError> {
    match etcd.discover {
        Some(EtcdDiscovery::Openshift) => discover_tls(&mut etcd, check_files)?,
        None => {
            if let Some(key) = [
                ("base_dir", etcd.base_dir.is_some()),
                ("node_name", etcd.node_name.is_some()),
            ]
            .iter()
            .find_map(|(k, set)| set.then_some(k))
            {
                return Err(ConfigError::new(
                    format!("source.etcd.{key}"),
                    "only used with `discover: openshift`; add that or remove this key",
                ));
            }
        }
    }
    if etcd.endpoints.is_empty() {
        return Err(ConfigError::new(
            "source.etcd.endpoints",
            "empty; list at least one client URL such as https://10.0.0.1:2379",
        ));
    }
    for (i, endpoint) in etcd.endpoints.iter().enumerate() {
        let key = format!("source.etcd.endpoints[{i}]");
        let url = Url::parse(endpoint).map_err(|e| {
            ConfigError::new(
                &key,
                format!("{endpoint:?} is not a URL ({e}); write it as https://HOST:2379"),
            )
        })?;
        match url.scheme() {
            "http" => {}
            "https" if etcd.cacert.is_some() || etcd.discover.is_some() => {}
            "https" => {
                return Err(ConfigError::new(
                    "source.etcd.cacert",
                    format!(
                        "{endpoint} uses TLS but no CA is configured; set `cacert` to the etcd serving CA bundle"
                    ),
                ));
            }
            other => {
                return Err(ConfigError::new(
                    &key,
                    format!(
                        "scheme {other:?} is not supported; use https:// (or http:// without TLS)"
                    ),
                ));
            }
        }
    }
    if etcd.cert.is_some() != etcd.key.is_some() {
        return Err(ConfigError::new(
            if etcd.cert.is_some() {
                "source.etcd.key"
            } else {
                "source.etcd.cert"
            },
            "client certificate and key go together; set both `cert` and `key`, or neither",
        ));
    }
    match (&etcd.username, &etcd.password_file) {
        (Some(user), Some(_)) if user.is_empty() || user.contains(':') => {
            return Err(ConfigError::new(
                "source.etcd.username",
                "must be an etcd user name (not empty, no `:`); the password goes in `password_file`",
            ));
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                "source.etcd.password_file",
                "missing: `username` needs the file that holds its password (one line, mode 0600); the password itself never goes in the config",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "source.etcd.username",
                "missing: `password_file` is the password of an etcd user; name the user too",
            ));
        }
        _ => {}
    }
    for (name, path) in [
        ("cacert", &etcd.cacert),
        ("cert", &etcd.cert),
        ("key", &etcd.key),
        ("password_file", &etcd.password_file),
    ] {
        if let Some(path) = path.as_ref().filter(|_| check_files) {
            readable_file(&format!("source.etcd.{name}"), path)?;
        }
    }
    if etcd.timeout.is_zero() {
        return Err(ConfigError::new(
            "source.etcd.timeout",
            "must be more than zero, e.g. 30s",
        ));
    }
    if etcd
        .read_rate_limit
        .is_some_and(|r| r.as_u64() < 1024 * 1024)
    {
        return Err(ConfigError::new(
            "source.etcd.read_rate_limit",
            "below 1MiB per second a snapshot would take hours; use e.g. 100MiB or remove the key",
        ));
    }
    Ok(etcd)
}

/// `discover: openshift`: the TLS files from the host (or pod) layout, endpoints defaulting
/// to the local member. A host that only reads backups needs none of them.
fn discover_tls(etcd: &mut EtcdSource, check_files: bool) -> Result<(), ConfigError> {
    if let Some(key) = [
        ("cacert", etcd.cacert.is_some()),
        ("cert", etcd.cert.is_some()),
        ("key", etcd.key.is_some()),
    ]
    .iter()
    .find_map(|(k, set)| set.then_some(k))
    {
        return Err(ConfigError::new(
            format!("source.etcd.{key}"),
            "set together with `discover: openshift`; name the files or let discovery find them, not both",
        ));
    }
    if etcd.endpoints.is_empty() {
        // The serving certificates name localhost; the Job and etcd's own probes use it.
        etcd.endpoints = vec!["https://localhost:2379".into()];
    }
    if !check_files {
        return Ok(());
    }
    let base_dir = etcd
        .base_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(OPENSHIFT_BASE_DIR));
    let node = etcd.node_name.clone().unwrap_or_else(crate::ids::hostname);
    let found =
        crate::source::openshift_tls::discover(&base_dir, Path::new(OPENSHIFT_RUN_DIR), &node)
            .map_err(|problem| ConfigError::new("source.etcd.discover", problem))?;
    tracing::debug!(layout = %found.layout, cert = %found.cert.display(), "etcd client certificate discovered");
    etcd.cacert = Some(found.cacert);
    etcd.cert = Some(found.cert);
    etcd.key = Some(found.key);
    Ok(())
}

const OPENSHIFT_BASE_DIR: &str = "/etc/kubernetes";
/// Where the backup Job mounts the etcd-client Secret and the etcd-ca-bundle ConfigMap.
const OPENSHIFT_RUN_DIR: &str = "/var/run";

fn validate_static(
    raw: RawStaticResources,
    check_files: bool,
) -> Result<StaticResources, ConfigError> {
    let base_dir = raw
        .base_dir
        .unwrap_or_else(|| PathBuf::from(OPENSHIFT_BASE_DIR));
    let selection = match (raw.paths.is_empty(), raw.discover.as_deref()) {
        (false, None) => {
            for (i, path) in raw.paths.iter().enumerate() {
                let key = format!("source.static_resources.paths[{i}]");
                if !path.starts_with(&base_dir) {
                    return Err(ConfigError::new(
                        key,
                        format!(
                            "{} is not under base_dir {}; archive members are relative to base_dir so that cluster-restore.sh finds them",
                            path.display(),
                            base_dir.display()
                        ),
                    ));
                }
                if check_files && !path.exists() {
                    return Err(ConfigError::new(
                        key,
                        format!(
                            "{} does not exist; list existing static pod resource directories, or use `discover: openshift`",
                            path.display()
                        ),
                    ));
                }
            }
            StaticSelection::Paths(raw.paths)
        }
        (true, Some("openshift")) => StaticSelection::OpenShift,
        (true, Some(other)) => {
            return Err(ConfigError::new(
                "source.static_resources.discover",
                format!("{other:?} is not known; the only discovery is `openshift`"),
            ));
        }
        (false, Some(_)) => {
            return Err(ConfigError::new(
                "source.static_resources",
                "both `paths` and `discover` are set; keep one",
            ));
        }
        (true, None) => {
            return Err(ConfigError::new(
                "source.static_resources.paths",
                "empty; list the static pod resource directories or set `discover: openshift`",
            ));
        }
    };
    Ok(StaticResources {
        base_dir,
        selection,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;
    use crate::config::{Purpose, SnapshotSource, parse};

    #[test]
    fn openshift_discovery_keys() {
        let text = snapshot_only().replace(
            "    endpoints: [\"http://127.0.0.1:2379\"]\n",
            "    discover: openshift\n    node_name: master-0\n",
        );
        let cfg =
            parse(&text, Purpose::ReadBackups).expect("discovery needs no files to read backups");
        let SnapshotSource::Etcd(etcd) = cfg.source else {
            panic!("etcd source")
        };
        assert_eq!(etcd.endpoints, ["https://localhost:2379"]);
        let both = text.replace(
            "    discover: openshift\n",
            "    discover: openshift\n    cacert: /x\n",
        );
        assert_eq!(err_key(&both), "source.etcd.cacert");
        let stray = snapshot_only().replace("    endpoints:", "    node_name: m\n    endpoints:");
        assert_eq!(err_key(&stray), "source.etcd.node_name");
        let unknown = text.replace("discover: openshift", "discover: k3s");
        assert_eq!(err_key(&unknown), "source.etcd.discover");
    }

    #[test]
    fn missing_static_paths_and_tls_files() {
        let text = config(
            "  static_resources:\n    base_dir: /nonexistent\n    paths: [\"/nonexistent/x\"]\n",
            &format!(
                "  snapshot:\n    recipients: [\"{SNAP}\"]\n  static_resources:\n    recipients: [\"{KEYS}\"]\n"
            ),
            "  snapshot:\n    url: file:///var/backups/etcd\n",
        );
        assert_eq!(err_key(&text), "source.static_resources.paths[0]");
        let text = snapshot_only().replace(
            "    endpoints: [\"http://127.0.0.1:2379\"]",
            "    endpoints: [\"https://127.0.0.1:2379\"]\n    cacert: /nonexistent/ca.crt",
        );
        assert_eq!(err_key(&text), "source.etcd.cacert");
    }
}
