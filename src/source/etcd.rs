//! Live snapshots over the etcd v3 API, from one healthy member at a time.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, SnapshotStreaming, TlsOptions};
use futures::Stream;
use serde::Deserialize;
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

use crate::config::EtcdSource;
use crate::manifest::{SourceInfo, UpgradeInfo};
use crate::source::content::{self, ContentFacts, EncryptedValue};
use crate::source::pace::{Pacer, ReadLimiter, RequestPacer};

/// Where OpenShift keeps the ClusterVersion object (stored as JSON).
const CLUSTER_VERSION_KEY: &str = "/kubernetes.io/config.openshift.io/clusterversions/version";
/// Where OpenShift keeps ClusterOperator objects (stored as JSON), `<prefix><name>`.
const CLUSTER_OPERATOR_PREFIX: &str = "/kubernetes.io/config.openshift.io/clusteroperators/";
/// The cluster operators whose rollouts cluster-backup.sh waits out: a backup taken
/// while one of them is Progressing may pair a snapshot with resources of another revision.
pub const GUARDED_OPERATORS: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];
/// Cluster objects are small; a larger value is not one of them.
const OBJECT_CAP: usize = 4 * 1024 * 1024;

/// etcd could not be reached or misbehaved.
#[derive(Debug, thiserror::Error)]
#[error("etcd {endpoint}: {reason}")]
pub struct EtcdError {
    pub endpoint: String,
    pub reason: String,
}

/// The key counts could not be read.
#[derive(Debug, thiserror::Error)]
#[error("etcd {endpoint}: reading key counts at revision {revision}: {}", plain(.source))]
pub struct ContentError {
    pub endpoint: String,
    pub revision: i64,
    /// The revision was compacted meanwhile (etcd keeps no history before it).
    pub compacted: bool,
    source: etcd_client::Error,
}

/// A connected, healthy member.
pub struct EtcdMember {
    client: Client,
    config: EtcdSource,
    pub endpoint: String,
    pub member_id: u64,
    pub version: String,
    /// The storage version of its database (reported by etcd 3.6+).
    pub storage_version: Option<String>,
    pub revision: i64,
    pub db_size: u64,
    /// Measures etcd's latency and paces the reads, once started.
    pacer: Option<Pacer>,
}

/// Facts about the cluster read from etcd itself.
#[derive(Debug, Default, Clone)]
pub struct ClusterFacts {
    /// A ClusterVersion object exists: this is OpenShift.
    pub openshift: bool,
    /// Latest completed OpenShift version from ClusterVersion `status.history`.
    pub platform_version: Option<String>,
    /// Start of the oldest history entry: when the cluster was installed.
    pub installed_at: Option<DateTime<Utc>>,
    /// The newest history entry is not Completed: an upgrade (or the install) is under way.
    pub upgrade: Option<UpgradeInfo>,
}

impl EtcdMember {
    /// Connects to one endpoint and reads its status.
    pub async fn connect(config: &EtcdSource, endpoint: &str) -> Result<Self, EtcdError> {
        let fail = |reason: String| EtcdError {
            endpoint: endpoint.to_string(),
            reason,
        };
        let mut client = client_for(config, endpoint).await?;
        let status = tokio::time::timeout(config.timeout, client.status())
            .await
            .map_err(|_| fail(format!("no status answer within {:?}", config.timeout)))?
            .map_err(|e| {
                fail(with_auth_hint(
                    config,
                    format!("status failed: {}", plain(&e)),
                ))
            })?;
        // Status and Snapshot are answered locally: a member cut off from the quorum would
        // serve stale data. One that knows no leader, or reports errors, is not healthy.
        if status.leader() == 0 {
            return Err(fail("has no leader (partitioned from the quorum?)".into()));
        }
        if status.is_learner() {
            return Err(fail("is a learner, not a voting member".into()));
        }
        if let Some(error) = status.errors().first() {
            return Err(fail(format!("reports an error: {error}")));
        }
        let header = status.header();
        Ok(Self {
            config: config.clone(),
            endpoint: endpoint.to_string(),
            member_id: header.map_or(0, |h| h.member_id()),
            revision: header.map_or(0, |h| h.revision()),
            version: status.version().to_string(),
            storage_version: Some(status.storage_version().to_string()).filter(|v| !v.is_empty()),
            db_size: u64::try_from(status.db_size()).unwrap_or(0),
            client,
            pacer: None,
        })
    }

    /// Measures etcd's latency before the backup on a connection of its own, then keeps
    /// measuring it until the snapshot ends (see [`crate::source::pace`]): the snapshot
    /// stream is paced by it, and the content scan after it by the target it set. Fails
    /// when the member does not answer a linearizable read (no leader, or no quorum).
    pub async fn start_pacing(&mut self) -> Result<(), EtcdError> {
        if self.pacer.is_some() {
            return Ok(());
        }
        let client = client_for(&self.config, &self.endpoint).await?;
        let pacer = Pacer::start(
            client,
            &self.endpoint,
            self.config.pace,
            self.config.read_rate_limit.map(|r| r.as_u64()),
            self.config.timeout,
        )
        .await
        .map_err(|e| self.error(e.to_string()))?;
        self.pacer = Some(pacer);
        Ok(())
    }

    /// The manifest's description of this member.
    pub fn source_info(&self) -> SourceInfo {
        SourceInfo::Etcd {
            endpoint: self.endpoint.clone(),
            member_id: format!("{:x}", self.member_id),
            etcd_version: self.version.clone(),
            storage_version: self.storage_version.clone(),
            revision: self.revision,
            db_size: self.db_size,
            pacing: None,
        }
    }

    /// Reads the OpenShift ClusterVersion object, when there is one.
    pub async fn cluster_facts(&mut self) -> ClusterFacts {
        let get = self.client.get(CLUSTER_VERSION_KEY, None);
        let response = match tokio::time::timeout(self.config.timeout, get).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read the ClusterVersion object");
                return ClusterFacts::default();
            }
            Err(_) => {
                tracing::warn!("timed out reading the ClusterVersion object");
                return ClusterFacts::default();
            }
        };
        match response.kvs().first() {
            Some(kv) => parse_cluster_version(kv.value()).unwrap_or_else(|reason| {
                tracing::warn!(%reason, "ClusterVersion object not understood; platform version not recorded");
                ClusterFacts {
                    openshift: true,
                    ..ClusterFacts::default()
                }
            }),
            None => ClusterFacts::default(),
        }
    }

    /// The guarded cluster operators that are not settled: Progressing, or whose state
    /// cannot be read (cluster-backup.sh refuses then too). Empty when all are settled.
    pub async fn unsettled_operators(&mut self) -> Result<Vec<String>, EtcdError> {
        let mut unsettled = Vec::new();
        for name in GUARDED_OPERATORS {
            let key = format!("{CLUSTER_OPERATOR_PREFIX}{name}");
            let get = self.client.get(key.as_str(), None);
            let response = tokio::time::timeout(self.config.timeout, get)
                .await
                .map_err(|_| {
                    self.error(format!(
                        "no answer reading {key} within {:?}",
                        self.config.timeout
                    ))
                })?
                .map_err(|e| self.error(format!("reading {key} failed: {}", plain(&e))))?;
            let state = match response.kvs().first() {
                None => Some(format!("{name}: no ClusterOperator object")),
                Some(kv) if kv.value().len() > OBJECT_CAP => Some(format!(
                    "{name}: ClusterOperator object is implausibly large"
                )),
                Some(kv) => operator_progressing(name, kv.value()),
            };
            unsettled.extend(state);
        }
        Ok(unsettled)
    }

    /// Key counts and the encryption in use at `revision` (see [`content`]), paced by
    /// `pacer` when there is one.
    pub async fn content_facts_at(
        &mut self,
        revision: i64,
        keep_samples: bool,
        pacer: Option<RequestPacer>,
    ) -> Result<(ContentFacts, Vec<EncryptedValue>), ContentError> {
        content::read(&mut self.client, revision, keep_samples, pacer)
            .await
            .map_err(|source| ContentError {
                endpoint: self.endpoint.clone(),
                revision,
                compacted: content::is_compacted(&source),
                source,
            })
    }

    fn error(&self, reason: String) -> EtcdError {
        EtcdError {
            endpoint: self.endpoint.clone(),
            reason: with_auth_hint(&self.config, reason),
        }
    }

    /// Starts the snapshot stream, with an idle timeout per message, paced (see
    /// [`EtcdMember::start_pacing`]). The [`Pacer`] must be finished after the stream: it
    /// reports etcd's latency, and fails when the member lost its quorum meanwhile.
    pub async fn snapshot(
        &mut self,
    ) -> Result<(impl AsyncRead + Send + Unpin + 'static, Pacer), EtcdError> {
        self.start_pacing().await?;
        let pacer = self.pacer.take().expect("pacing was just started");
        let stream = self.client.snapshot().await.map_err(|e| EtcdError {
            endpoint: self.endpoint.clone(),
            reason: format!("snapshot failed to start: {}", plain(&e)),
        })?;
        let state = StreamState {
            stream,
            _client: self.client.clone(),
            endpoint: self.endpoint.clone(),
            idle: self.config.timeout,
            limiter: pacer.limiter(),
        };
        let chunks: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>> =
            Box::pin(futures::stream::unfold(state, next_chunk));
        Ok((StreamReader::new(chunks), pacer))
    }
}

/// A client of `endpoint` that asks etcd to refuse requests (and to end streams) while
/// the member has no leader.
async fn client_for(config: &EtcdSource, endpoint: &str) -> Result<Client, EtcdError> {
    let fail = |reason: String| EtcdError {
        endpoint: endpoint.to_string(),
        reason,
    };
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.timeout)
        .with_keep_alive(Duration::from_secs(10), config.timeout)
        .with_require_leader(true);
    if endpoint.starts_with("https://") {
        options = options.with_tls(tls_options(config).map_err(fail)?);
    }
    if let (Some(user), Some(file)) = (&config.username, &config.password_file) {
        options = options.with_user(user, read_password(file).map_err(fail)?);
    }
    let connect = Client::connect([endpoint], Some(options));
    tokio::time::timeout(config.timeout, connect)
        .await
        .map_err(|_| fail(format!("no connection within {:?}", config.timeout)))?
        .map_err(|e| {
            fail(with_auth_hint(
                config,
                format!("cannot connect: {}", plain(&e)),
            ))
        })
}

/// One readable line for an etcd client error: the innermost cause (the system's words,
/// e.g. "Connection refused (os error 111)"; a gRPC status's message), never the Debug
/// structures of the transport layers, with what to check.
fn plain(err: &etcd_client::Error) -> String {
    let mut innermost: &dyn std::error::Error = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    let cause = (!std::ptr::addr_eq(innermost, err)).then(|| innermost.to_string());
    let text = match (err, cause) {
        // A status made of a transport failure: its words, then the system's.
        (etcd_client::Error::GRpcStatus(status), Some(cause)) => {
            format!("{}: {cause}", status.message())
        }
        (etcd_client::Error::GRpcStatus(status), None) => {
            format!("{} ({:?})", status.message(), status.code())
        }
        (_, Some(cause)) => cause,
        (_, None) => err.to_string(),
    };
    let text = text.lines().next().unwrap_or_default().trim().to_string();
    let hint = if text.contains("Connection refused") {
        Some("is etcd running and listening there? check source.etcd.endpoints")
    } else if text.contains("UnknownIssuer") || text.contains("certificate") {
        Some(
            "check source.etcd.cacert, cert and key: the CA must have signed etcd's serving certificate",
        )
    } else if text.contains("dns error") || text.contains("failed to lookup") {
        Some("the host name does not resolve; check source.etcd.endpoints")
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

/// The password in `source.etcd.password_file`: its first line (a trailing newline is not
/// part of it). Errors name the file, never its contents.
fn read_password(file: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "cannot read source.etcd.password_file {}: {}",
            file.display(),
            e.kind()
        )
    })?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(format!(
            "source.etcd.password_file {} is empty; put the user's password on its first line",
            file.display()
        ));
    }
    Ok(password.to_string())
}

/// etcd's answers about authentication, with what to do about them.
fn with_auth_hint(config: &EtcdSource, reason: String) -> String {
    if reason.contains("authentication failed") {
        let user = config.username.as_deref().unwrap_or_default();
        let file = config
            .password_file
            .as_ref()
            .map_or(String::new(), |f| f.display().to_string());
        format!(
            "{reason}; check `source.etcd.username` ({user}) and the password in `source.etcd.password_file` ({file})"
        )
    } else if reason.contains("user name is empty") || reason.contains("invalid auth token") {
        format!(
            "{reason}; etcd has authentication enabled: set `source.etcd.username` and `source.etcd.password_file`, or use a client certificate (`cert`, `key`) whose CN is an etcd user with the root role"
        )
    } else if reason.contains("permission denied") {
        format!(
            "{reason}; the etcd user needs the root role: a snapshot is an admin call (`etcdctl user grant-role USER root`)"
        )
    } else {
        reason
    }
}

fn tls_options(config: &EtcdSource) -> Result<TlsOptions, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let mut tls = TlsOptions::new();
    if let Some(ca) = &config.cacert {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

struct StreamState {
    stream: SnapshotStreaming,
    // The stream needs its client's channel alive.
    _client: Client,
    endpoint: String,
    idle: Duration,
    limiter: ReadLimiter,
}

async fn next_chunk(mut state: StreamState) -> Option<(io::Result<Bytes>, StreamState)> {
    let message = match tokio::time::timeout(state.idle, state.stream.message()).await {
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "etcd {} sent nothing for {:?} during the snapshot",
                state.endpoint, state.idle
            ),
        )),
        Ok(Err(e)) => Err(io::Error::other(format!(
            "etcd {} snapshot stream broke: {e}",
            state.endpoint
        ))),
        Ok(Ok(None)) => return None,
        Ok(Ok(Some(m))) => Ok(Bytes::copy_from_slice(m.blob())),
    };
    let message = match message {
        Ok(chunk) => match state.limiter.after_read(chunk.len()).await {
            Ok(()) => Ok(chunk),
            Err(lost) => Err(io::Error::other(lost.to_string())),
        },
        Err(e) => Err(e),
    };
    Some((message, state))
}

#[derive(Deserialize)]
struct ClusterVersion {
    status: Option<ClusterVersionStatus>,
}

#[derive(Deserialize)]
struct ClusterVersionStatus {
    #[serde(default)]
    history: Vec<UpdateHistory>,
}

#[derive(Deserialize)]
struct ClusterOperator {
    status: Option<ClusterOperatorStatus>,
}

#[derive(Deserialize)]
struct ClusterOperatorStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
    #[serde(default)]
    message: String,
}

/// Why a ClusterOperator (JSON) is not settled, or None when its Progressing condition is False.
fn operator_progressing(name: &str, value: &[u8]) -> Option<String> {
    let operator: ClusterOperator = match serde_json::from_slice(value) {
        Ok(o) => o,
        Err(e) => return Some(format!("{name}: ClusterOperator not understood ({e})")),
    };
    let conditions = operator.status.map(|s| s.conditions).unwrap_or_default();
    match conditions.iter().find(|c| c.kind == "Progressing") {
        Some(c) if c.status == "False" => None,
        Some(c) => {
            let message: String = c.message.chars().take(200).collect();
            Some(
                format!("{name}: Progressing={} {message}", c.status)
                    .trim_end()
                    .to_string(),
            )
        }
        None => Some(format!("{name}: no Progressing condition")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateHistory {
    state: String,
    version: String,
    started_time: Option<DateTime<Utc>>,
    completion_time: Option<DateTime<Utc>>,
}

/// Latest Completed version and install time from a ClusterVersion object in JSON.
pub fn parse_cluster_version(value: &[u8]) -> Result<ClusterFacts, String> {
    let cv: ClusterVersion = serde_json::from_slice(value)
        .map_err(|e| format!("not JSON (etcd-encrypted or protobuf?): {e}"))?;
    let history = cv.status.map(|s| s.history).unwrap_or_default();
    let platform_version = history
        .iter()
        .filter(|h| h.state == "Completed")
        .max_by_key(|h| h.completion_time)
        .map(|h| h.version.clone());
    let installed_at = history.iter().filter_map(|h| h.started_time).min();
    // The newest entry comes first; while it is not Completed the cluster runs a mix of
    // the old and the new release.
    let upgrade = history
        .first()
        .filter(|h| h.state != "Completed")
        .map(|h| UpgradeInfo {
            from: platform_version.clone(),
            to: h.version.clone(),
            state: h.state.clone(),
        });
    Ok(ClusterFacts {
        openshift: true,
        platform_version,
        installed_at,
        upgrade,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_completed_version_wins() {
        let json = br#"{"status":{"history":[
            {"state":"Partial","version":"4.14.9","startedTime":"2026-11-20T00:00:00Z","completionTime":null},
            {"state":"Completed","version":"4.14.7","startedTime":"2026-10-01T00:00:00Z","completionTime":"2026-10-01T01:00:00Z"},
            {"state":"Completed","version":"4.14.3","startedTime":"2026-09-01T00:00:00Z","completionTime":"2026-09-01T01:00:00Z"}]}}"#;
        let facts = parse_cluster_version(json).unwrap();
        assert_eq!(facts.platform_version.as_deref(), Some("4.14.7"));
        assert_eq!(
            facts.upgrade,
            Some(UpgradeInfo {
                from: Some("4.14.7".into()),
                to: "4.14.9".into(),
                state: "Partial".into()
            })
        );
        assert_eq!(
            facts.installed_at.unwrap().to_rfc3339(),
            "2026-09-01T00:00:00+00:00"
        );
        assert!(parse_cluster_version(b"k8s\0\x01protobuf").is_err());
        let settled = br#"{"status":{"history":[{"state":"Completed","version":"4.14.9","startedTime":"2026-11-20T00:00:00Z","completionTime":"2026-11-20T01:00:00Z"},
            {"state":"Completed","version":"4.14.7","startedTime":"2026-10-01T00:00:00Z","completionTime":"2026-10-01T01:00:00Z"}]}}"#;
        let facts = parse_cluster_version(settled).unwrap();
        assert_eq!(facts.platform_version.as_deref(), Some("4.14.9"));
        assert_eq!(facts.upgrade, None);
    }

    #[test]
    fn operator_conditions() {
        let co = |status: &str| {
            format!(
                r#"{{"status":{{"conditions":[{{"type":"Available","status":"True"}},{{"type":"Progressing","status":"{status}","message":"NodeInstallerProgressing: 1 node is at revision 7; 2 nodes are at revision 8"}}]}}}}"#
            )
        };
        assert_eq!(operator_progressing("etcd", co("False").as_bytes()), None);
        let why = operator_progressing("etcd", co("True").as_bytes()).unwrap();
        assert!(
            why.starts_with("etcd: Progressing=True NodeInstaller"),
            "{why}"
        );
        assert!(operator_progressing("etcd", b"{}").is_some());
        assert!(operator_progressing("etcd", b"k8s\0proto").is_some());
    }
}
