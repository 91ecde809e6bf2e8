//! YAML → validated [`Config`]. One load function; every problem names its key and the fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use url::Url;

use crate::error::ConfigError;
use crate::retention::RetentionPolicy;

/// The resolved configuration the program runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster: String,
    pub source: SnapshotSource,
    pub static_resources: Option<StaticResources>,
    pub compression: Compression,
    /// CPU and I/O priority of backups (`backup`, `run`) next to etcd on the same host.
    pub priority: Priority,
    pub encryption: Encryption,
    pub targets: Targets,
    pub retention: Option<RetentionPolicy>,
    pub schedule: Option<Schedule>,
    pub labels: BTreeMap<String, String>,
    /// Manifest signing (backup) and the keys trusted to have signed (verify, restore).
    pub signing: crate::signing::SigningConfig,
}

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
    /// Connect timeout, and the longest silence tolerated inside the snapshot stream.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Bytes per second read from etcd (protects a busy member's disk).
    pub read_rate_limit: Option<ByteSize>,
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

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    #[serde(default = "default_level")]
    pub level: i32,
    /// zstd workers. Absent: half the cores, at most [`AUTO_THREADS_MAX`] (a control-plane
    /// host's CPU is etcd's and the API server's first); 0: all cores.
    #[serde(default)]
    pub threads: Option<u32>,
}

/// Most zstd workers chosen when `compression.threads` is absent: about what one etcd
/// member's snapshot stream (one core's worth, ~150-200 MB/s) can feed at level 3.
pub const AUTO_THREADS_MAX: u32 = 4;
/// Most zstd workers accepted: each holds a 4 MiB job and its output (about 8 MiB).
const THREADS_MAX: u32 = 64;

impl Compression {
    /// zstd workers for this host.
    pub fn workers(&self) -> u32 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        match self.threads {
            None => (cores / 2).clamp(1, AUTO_THREADS_MAX),
            Some(0) => cores.min(THREADS_MAX),
            Some(n) => n,
        }
    }
}

fn default_level() -> i32 {
    3
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            level: default_level(),
            threads: None,
        }
    }
}

/// How backups share a control-plane host with etcd and the API server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// nice 10 and the lowest best-effort I/O priority: etcd and the API server get the
    /// CPU and the disk first, the backup takes what is left (a little longer).
    #[default]
    Low,
    /// The scheduler's defaults: as fast as the host allows.
    Normal,
}

/// Recipients per artifact; the static resources' must differ from the snapshot's.
#[derive(Debug, Clone)]
pub struct Encryption {
    pub snapshot: Recipients,
    pub static_resources: Option<Recipients>,
}

/// age x25519 recipients, parsed, with their text form for the manifest.
#[derive(Clone)]
pub struct Recipients {
    pub keys: Vec<age::x25519::Recipient>,
}

impl Recipients {
    pub fn texts(&self) -> Vec<String> {
        self.keys.iter().map(ToString::to_string).collect()
    }
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.texts()).finish()
    }
}

#[derive(Debug, Clone)]
pub struct Targets {
    pub snapshot: TargetConfig,
    /// Defaults to the snapshot target.
    pub static_resources: TargetConfig,
    /// A backup lock not renewed for this long belongs to a dead run and is broken.
    pub lock_stale_after: Duration,
}

/// Default of `targets.lock_stale_after`: a live run renews its lock every third of it.
pub const DEFAULT_LOCK_STALE_AFTER: Duration = Duration::from_secs(180);

/// A storage URL and object_store options (validated keys; values may be secrets).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub url: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Option values can be secrets: print keys only.
        f.debug_struct("TargetConfig")
            .field("url", &self.url)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: croner::Cron,
    pub cron_text: String,
    pub jitter: Duration,
    /// How often `run` checks etcd for a new platform version (a backup follows every upgrade).
    pub upgrade_check: Option<Duration>,
    /// Restore drills of the newest backup, on their own cron (off by default).
    pub drill: Option<DrillSchedule>,
}

/// `schedule.drill`: `run` drills the newest backup on this cron.
#[derive(Debug, Clone)]
pub struct DrillSchedule {
    pub cron: croner::Cron,
    pub cron_text: String,
    /// Identity files for the snapshot and the keys archive (a recovery host's keys).
    pub identities: Vec<PathBuf>,
    pub scratch_dir: PathBuf,
}

// ---- the YAML shape -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: u32,
    cluster: String,
    source: RawSource,
    #[serde(default)]
    compression: Compression,
    #[serde(default)]
    priority: Priority,
    encryption: RawEncryption,
    targets: RawTargets,
    retention: Option<RetentionPolicy>,
    schedule: Option<RawSchedule>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    signing: Option<crate::signing::SigningConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    etcd: Option<EtcdSource>,
    backup_dir: Option<PathBuf>,
    static_resources: Option<RawStaticResources>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaticResources {
    #[serde(default)]
    paths: Vec<PathBuf>,
    discover: Option<String>,
    base_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncryption {
    snapshot: RawRecipients,
    static_resources: Option<RawRecipients>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipients {
    #[serde(default)]
    recipients: Vec<String>,
    recipients_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    snapshot: TargetConfig,
    static_resources: Option<TargetConfig>,
    #[serde(default, with = "humantime_serde")]
    lock_stale_after: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: String,
    #[serde(default, with = "humantime_serde")]
    jitter: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    upgrade_check: Option<Duration>,
    drill: Option<RawDrillSchedule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrillSchedule {
    cron: String,
    identities: Vec<PathBuf>,
    scratch_dir: Option<PathBuf>,
}

/// What the configuration is loaded for: reading backups must work on any host with the
/// config (a recovery bastion), where the source's certificates and directories are absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// backup, run, config check: source files are checked on this host.
    TakeBackups,
    /// list, verify, restore, prune: only the structure and the targets matter.
    ReadBackups,
}

/// Loads and validates the configuration file.
pub fn load(path: &Path, purpose: Purpose) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "--config",
            format!(
                "cannot read {}: {e}; pass --config PATH or set ETCD_OFFSITE_CONFIG",
                path.display()
            ),
        )
    })?;
    parse(&text, purpose)
}

/// Parses and validates configuration text (file paths inside are checked on disk).
pub fn parse(text: &str, purpose: Purpose) -> Result<Config, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = match key_path(e.path()) {
            p if p.is_empty() => "(top level)".to_string(),
            p if looks_secret(&p) => "(a key that looks like a secret key)".to_string(),
            p => p,
        };
        let problem = redact_quoted(&key, e.into_inner().to_string());
        ConfigError::new(key, problem)
    })?;
    resolve(raw, purpose == Purpose::TakeBackups)
}

/// The key path of a YAML error (`source.etcd.endpoints[0]`), with an empty key (`"": x`,
/// or a bare `?`) shown as `""` so that the message still points somewhere.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        let name = match segment {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                continue;
            }
            Segment::Map { key } | Segment::Enum { variant: key } if key.is_empty() => "\"\"",
            Segment::Map { key } | Segment::Enum { variant: key } => key.as_str(),
            Segment::Unknown => "?",
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(name);
    }
    out
}

/// Validates the raw config; `check_files` also checks the source's files on this host.
fn resolve(raw: RawConfig, check_files: bool) -> Result<Config, ConfigError> {
    if raw.version != 1 {
        return Err(ConfigError::new(
            "version",
            format!(
                "unsupported version {}; this etcd-offsite reads `version: 1`",
                raw.version
            ),
        ));
    }
    validate_cluster(&raw.cluster)?;
    validate_durations(&raw)?;

    let source = match (raw.source.etcd, raw.source.backup_dir) {
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

    let static_resources = match (&source, raw.source.static_resources) {
        (SnapshotSource::BackupDir { .. }, Some(_)) => {
            return Err(ConfigError::new(
                "source.static_resources",
                "not used with `source.backup_dir`: the static resources come from the directory's static_kuberesources_*.tar.gz; remove this key",
            ));
        }
        (_, Some(s)) => Some(validate_static(s, check_files)?),
        (_, None) => None,
    };
    let has_static =
        static_resources.is_some() || matches!(source, SnapshotSource::BackupDir { .. });

    if raw.compression.level < 1 || raw.compression.level > 19 {
        return Err(ConfigError::new(
            "compression.level",
            format!(
                "{} is out of range; use 1 (fastest) to 19 (smallest), 3 is the default",
                raw.compression.level
            ),
        ));
    }

    if raw.compression.threads.is_some_and(|t| t > THREADS_MAX) {
        return Err(ConfigError::new(
            "compression.threads",
            format!(
                "{} zstd workers would hold about 8 MiB each; use at most {THREADS_MAX}, 0 for all cores, or leave it out (half the cores, at most {AUTO_THREADS_MAX})",
                raw.compression.threads.unwrap_or_default()
            ),
        ));
    }

    let snapshot_recipients =
        resolve_recipients("encryption.snapshot", raw.encryption.snapshot, check_files)?;
    let static_recipients = match (has_static, raw.encryption.static_resources) {
        (true, Some(r)) => Some(resolve_recipients(
            "encryption.static_resources",
            r,
            check_files,
        )?),
        (true, None) => {
            return Err(ConfigError::new(
                "encryption.static_resources",
                "missing: the static resources archive holds the etcd encryption keys and needs its own recipients; add `encryption.static_resources.recipients`",
            ));
        }
        (false, Some(_)) => {
            return Err(ConfigError::new(
                "encryption.static_resources",
                "set, but there is no static resources archive; add `source.static_resources` or remove this key",
            ));
        }
        (false, None) => None,
    };
    if let Some(static_recipients) = &static_recipients {
        let snapshot: BTreeSet<String> = snapshot_recipients.texts().into_iter().collect();
        if let Some(shared) = static_recipients
            .texts()
            .into_iter()
            .find(|r| snapshot.contains(r))
        {
            return Err(ConfigError::new(
                "encryption.static_resources.recipients",
                format!(
                    "static_resources recipients must differ from snapshot recipients: the keys archive must not open with the snapshot key ({shared} is in both); generate a separate key with `age-keygen`"
                ),
            ));
        }
    }

    validate_target("targets.snapshot", &raw.targets.snapshot)?;
    let static_target = match raw.targets.static_resources {
        Some(t) => {
            validate_target("targets.static_resources", &t)?;
            t
        }
        None => raw.targets.snapshot.clone(),
    };

    let lock_stale_after = raw
        .targets
        .lock_stale_after
        .unwrap_or(DEFAULT_LOCK_STALE_AFTER);
    if lock_stale_after < Duration::from_secs(3) {
        return Err(ConfigError::new(
            "targets.lock_stale_after",
            "must be at least 3s: a live run renews its lock every third of it; the default is 3m",
        ));
    }

    if let Some(policy) = &raw.retention {
        if policy.is_empty() {
            return Err(ConfigError::new(
                "retention",
                "no rule is set; add one (e.g. `keep_last: 7`) or remove the section to keep every backup",
            ));
        }
        policy
            .validate()
            .map_err(|problem| ConfigError::new("retention", problem))?;
    }

    let schedule = raw
        .schedule
        .map(|s| validate_schedule(s, check_files))
        .transpose()?;
    if schedule.as_ref().is_some_and(|s| s.upgrade_check.is_some())
        && !matches!(source, SnapshotSource::Etcd(_))
    {
        return Err(ConfigError::new(
            "schedule.upgrade_check",
            "needs `source.etcd`: the platform version is read from etcd; remove the key",
        ));
    }
    if schedule.as_ref().is_some_and(|s| s.upgrade_check.is_some())
        && raw.labels.contains_key("platform_version")
    {
        return Err(ConfigError::new(
            "schedule.upgrade_check",
            "`labels.platform_version` overrides the detected version, so upgrades cannot be seen; remove one of the two",
        ));
    }

    let signing = match raw.signing {
        Some(signing) => validate_signing(signing, check_files)?,
        None => Default::default(),
    };

    Ok(Config {
        cluster: raw.cluster,
        source,
        static_resources,
        compression: raw.compression,
        priority: raw.priority,
        encryption: Encryption {
            snapshot: snapshot_recipients,
            static_resources: static_recipients,
        },
        targets: Targets {
            snapshot: raw.targets.snapshot,
            static_resources: static_target,
            lock_stale_after,
        },
        retention: raw.retention,
        schedule,
        labels: raw.labels,
        signing,
    })
}

/// Backups need the key; readers need the allowed signers (each host has its own file).
fn validate_signing(
    signing: crate::signing::SigningConfig,
    check_files: bool,
) -> Result<crate::signing::SigningConfig, ConfigError> {
    if signing.key.is_none() && signing.allowed_signers.is_none() {
        return Err(ConfigError::new(
            "signing",
            "empty; set `key` (to sign backups) and/or `allowed_signers` (to accept only signed backups), or remove the section",
        ));
    }
    if let Some(key) = signing.key.as_ref().filter(|_| check_files) {
        crate::signing::Signer::load(key)?;
    }
    if let Some(allowed) = signing.allowed_signers.as_ref().filter(|_| !check_files) {
        crate::signing::AllowedSigners::load(allowed)?;
    }
    Ok(signing)
}

/// The longest duration any setting accepts: beyond it, date arithmetic overflows
/// (a window of 300000 years reaches before year 1), and no real policy needs it.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// The longest etcd timeout: a member silent for a day is not coming back.
const MAX_ETCD_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Every duration that reaches date or timer arithmetic, checked in one place.
fn validate_durations(raw: &RawConfig) -> Result<(), ConfigError> {
    let mut durations: Vec<(&str, Option<Duration>, Duration)> = Vec::new();
    if let Some(etcd) = &raw.source.etcd {
        durations.push(("source.etcd.timeout", Some(etcd.timeout), MAX_ETCD_TIMEOUT));
    }
    if let Some(policy) = &raw.retention {
        durations.push(("retention.keep_within", policy.keep_within, MAX_DURATION));
        durations.push((
            "retention.incomplete_grace",
            policy.incomplete_grace,
            MAX_DURATION,
        ));
    }
    if let Some(schedule) = &raw.schedule {
        durations.push(("schedule.jitter", schedule.jitter, MAX_DURATION));
        durations.push((
            "schedule.upgrade_check",
            schedule.upgrade_check,
            MAX_DURATION,
        ));
    }
    for (key, value, max) in durations {
        if let Some(value) = value.filter(|v| *v > max) {
            return Err(ConfigError::new(
                key,
                format!(
                    "{} is longer than the maximum {}; use a shorter duration{}",
                    humantime::format_duration(value),
                    humantime::format_duration(max),
                    if key.starts_with("retention.") {
                        ", or remove the key"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Parses a command-line duration (`30m`, `2d`) no longer than [`MAX_DURATION`].
pub fn parse_bounded_duration(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if value > MAX_DURATION {
        return Err(format!(
            "longer than the maximum {}; use a shorter duration such as 30m",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(value)
}

fn validate_cluster(cluster: &str) -> Result<(), ConfigError> {
    let ok = !cluster.is_empty()
        && cluster.len() <= 63
        && cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !cluster.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "cluster",
            format!(
                "{cluster:?} cannot be part of an object key; use 1-63 letters, digits, '-', '_' or '.'"
            ),
        ))
    }
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
    for (name, path) in [
        ("cacert", &etcd.cacert),
        ("cert", &etcd.cert),
        ("key", &etcd.key),
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
    let node = etcd
        .node_name
        .clone()
        .unwrap_or_else(crate::store::lock::hostname);
    let found =
        crate::source::openshift_tls::discover(&base_dir, Path::new(OPENSHIFT_RUN_DIR), &node)
            .map_err(|problem| ConfigError::new("source.etcd.discover", problem))?;
    tracing::debug!(layout = %found.layout, cert = %found.cert.display(), "etcd client certificate discovered");
    etcd.cacert = Some(found.cacert);
    etcd.cert = Some(found.cert);
    etcd.key = Some(found.key);
    Ok(())
}

fn readable_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path).map(drop).map_err(|e| {
        ConfigError::new(
            key,
            format!(
                "cannot read {}: {e}; check the path and that this user may read it",
                path.display()
            ),
        )
    })
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

fn resolve_recipients(
    key: &str,
    raw: RawRecipients,
    check_files: bool,
) -> Result<Recipients, ConfigError> {
    let mut texts: Vec<(String, String)> = raw
        .recipients
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("{key}.recipients[{i}]"), r.trim().to_string()))
        .collect();
    // Only backups encrypt: a host that reads backups need not have the recipients file.
    if let Some(file) = raw.recipients_file.as_ref().filter(|_| check_files) {
        let file_key = format!("{key}.recipients_file");
        let content = std::fs::read_to_string(file).map_err(|e| {
            ConfigError::new(&file_key, format!("cannot read {}: {e}", file.display()))
        })?;
        for (n, line) in content.lines().enumerate() {
            let line = line.trim_start_matches('\u{feff}').trim();
            if !line.is_empty() && !line.starts_with('#') {
                texts.push((
                    format!("{file_key} ({} line {})", file.display(), n + 1),
                    line.to_string(),
                ));
            }
        }
    }
    if texts.is_empty() && (check_files || raw.recipients_file.is_none()) {
        return Err(ConfigError::new(
            format!("{key}.recipients"),
            "no recipients; add at least one age public key (age1…), made with `age-keygen`",
        ));
    }
    let mut keys = Vec::with_capacity(texts.len());
    for (where_, text) in texts {
        keys.push(parse_recipient(&where_, &text)?);
    }
    Ok(Recipients { keys })
}

/// One recipient; errors name its position and never echo text that could be a secret.
fn parse_recipient(where_: &str, text: &str) -> Result<age::x25519::Recipient, ConfigError> {
    // Editors on Windows start files with a byte-order mark; it is not part of the key.
    let text = text.trim_start_matches('\u{feff}').trim();
    if looks_secret(text) {
        return Err(ConfigError::new(
            where_,
            "this looks like a secret key (an age identity or a private key), not a recipient; \
             remove it from the config and rotate it if the file was shared, and list the public \
             key printed by `age-keygen -y IDENTITY_FILE` instead",
        ));
    }
    age::x25519::Recipient::from_str(text).map_err(|_| {
        ConfigError::new(
            where_,
            format!(
                "not an age recipient ({}); expected an age1… public key from `age-keygen -y IDENTITY_FILE`, \
                 without quotes inside the value",
                describe_redacted(text)
            ),
        )
    })
}

/// Text that must never be echoed: an age identity or a private key, in any case and
/// wherever it sits in the text (quotes, byte-order marks and spaces around it included).
fn looks_secret(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    [
        "AGE-SECRET-KEY-",
        "AGE-PLUGIN-",
        "PRIVATE KEY",
        "PRIVATE-KEY",
    ]
    .iter()
    .any(|marker| upper.contains(marker))
}

/// The YAML parser quotes the offending text in its messages; where that text could be a
/// secret (target options, recipients, anything that looks like a key), it is left out.
fn redact_quoted(key: &str, message: String) -> String {
    if !(looks_secret(&message) || key.contains(".options") || key.contains("recipients")) {
        return message;
    }
    let mut redacted = String::with_capacity(message.len());
    let mut open_quote: Option<char> = None;
    for c in message.chars() {
        match open_quote {
            Some(quote) if c == quote => {
                redacted.push('…');
                redacted.push(c);
                open_quote = None;
            }
            Some(_) => {}
            None => {
                redacted.push(c);
                if c == '"' || c == '`' {
                    open_quote = Some(c);
                }
            }
        }
    }
    redacted
}

/// What a malformed recipient looks like, without its text: only a public-looking
/// `age1` prefix is shown, the rest is reduced to a length.
fn describe_redacted(text: &str) -> String {
    let chars = text.chars().count();
    let shown: String = text.chars().take(8).collect();
    if text.starts_with("age1") && shown.chars().all(|c| c.is_ascii_alphanumeric()) {
        format!("\"{shown}…\", {chars} characters")
    } else {
        format!("{chars} characters, not starting with `age1`")
    }
}

/// Storage schemes and the object_store option keys each accepts.
fn validate_target(key: &str, target: &TargetConfig) -> Result<(), ConfigError> {
    let url = Url::parse(&target.url).map_err(|e| {
        ConfigError::new(
            format!("{key}.url"),
            format!(
                "{:?} is not a URL ({e}); use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX or file:///PATH",
                crate::store::redact_url(&target.url)
            ),
        )
    })?;
    let options_key = format!("{key}.options");
    let check_keys = |parse: &dyn Fn(&str) -> bool| -> Result<(), ConfigError> {
        match target
            .options
            .keys()
            .find(|k| !parse(&k.to_ascii_lowercase()))
        {
            Some(bad) => Err(ConfigError::new(
                format!("{options_key}.{bad}"),
                format!(
                    "not an option of the {} store; see object_store's {} config keys",
                    url.scheme(),
                    url.scheme()
                ),
            )),
            None => Ok(()),
        }
    };
    match url.scheme() {
        "s3" => check_keys(&|k| object_store::aws::AmazonS3ConfigKey::from_str(k).is_ok()),
        "gs" => check_keys(&|k| object_store::gcp::GoogleConfigKey::from_str(k).is_ok()),
        "az" | "azure" => check_keys(&|k| object_store::azure::AzureConfigKey::from_str(k).is_ok()),
        "file" => {
            if let Some(bad) = target.options.keys().next() {
                return Err(ConfigError::new(
                    format!("{options_key}.{bad}"),
                    "file:// targets take no options; remove `options`",
                ));
            }
            if url.host_str().is_some_and(|h| !h.is_empty()) || url.path().len() <= 1 {
                return Err(ConfigError::new(
                    format!("{key}.url"),
                    "a file target needs an absolute directory, e.g. file:///mnt/nfs/etcd",
                ));
            }
            Ok(())
        }
        other => Err(ConfigError::new(
            format!("{key}.url"),
            format!("scheme {other:?} is not supported; use s3://, gs://, az:// or file://"),
        )),
    }?;
    if url.host_str().is_none_or(str::is_empty) && url.scheme() != "file" {
        return Err(ConfigError::new(
            format!("{key}.url"),
            "the bucket or container is missing, e.g. s3://BUCKET/etcd",
        ));
    }
    Ok(())
}

/// A five-field (or six, seconds first) cron expression.
fn parse_cron(key: &str, text: &str) -> Result<croner::Cron, ConfigError> {
    croner::Cron::from_str(text).map_err(|e| {
        ConfigError::new(
            key,
            format!("{text:?} is not a cron expression ({e}); use five fields, e.g. \"0 3 * * *\""),
        )
    })
}

fn validate_drill_schedule(
    raw: RawDrillSchedule,
    check_files: bool,
) -> Result<DrillSchedule, ConfigError> {
    if raw.identities.is_empty() {
        return Err(ConfigError::new(
            "schedule.drill.identities",
            "empty; list the identity files of the snapshot and of the keys archive",
        ));
    }
    if check_files {
        for (i, path) in raw.identities.iter().enumerate() {
            readable_file(&format!("schedule.drill.identities[{i}]"), path)?;
        }
    }
    Ok(DrillSchedule {
        cron: parse_cron("schedule.drill.cron", &raw.cron)?,
        cron_text: raw.cron,
        identities: raw.identities,
        scratch_dir: raw.scratch_dir.unwrap_or_else(|| PathBuf::from("/var/tmp")),
    })
}

fn validate_schedule(raw: RawSchedule, check_files: bool) -> Result<Schedule, ConfigError> {
    if raw
        .upgrade_check
        .is_some_and(|d| d < Duration::from_secs(1))
    {
        return Err(ConfigError::new(
            "schedule.upgrade_check",
            "must be at least 1s; 5m is a good interval",
        ));
    }
    let cron = parse_cron("schedule.cron", &raw.cron)?;
    Ok(Schedule {
        cron,
        cron_text: raw.cron,
        jitter: raw.jitter.unwrap_or_default(),
        upgrade_check: raw.upgrade_check,
        drill: raw
            .drill
            .map(|d| validate_drill_schedule(d, check_files))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAP: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    const KEYS: &str = "age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg";

    fn config(source_extra: &str, encryption: &str, targets: &str) -> String {
        format!(
            "version: 1\ncluster: prod-east\nsource:\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n{source_extra}encryption:\n{encryption}targets:\n{targets}"
        )
    }

    fn snapshot_only() -> String {
        config(
            "",
            &format!("  snapshot:\n    recipients: [\"{SNAP}\"]\n"),
            "  snapshot:\n    url: file:///var/backups/etcd\n",
        )
    }

    fn err_key(text: &str) -> String {
        parse(text, Purpose::TakeBackups)
            .expect_err("config should be rejected")
            .key
    }

    #[test]
    fn minimal_config_loads() {
        let cfg = parse(&snapshot_only(), Purpose::TakeBackups).expect("valid");
        assert_eq!(cfg.cluster, "prod-east");
        assert_eq!(cfg.compression.level, 3);
        assert_eq!(cfg.targets.static_resources.url, cfg.targets.snapshot.url);
        assert!(cfg.encryption.static_resources.is_none());
    }

    #[test]
    fn zstd_workers_default_to_a_share_of_the_cores() {
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        let cfg = parse(&snapshot_only(), Purpose::TakeBackups).expect("valid");
        assert_eq!(cfg.compression.threads, None);
        assert_eq!(
            cfg.compression.workers(),
            (cores / 2).clamp(1, AUTO_THREADS_MAX)
        );
        let with = |threads: &str| {
            snapshot_only().replace(
                "cluster: prod-east",
                &format!("cluster: prod-east\ncompression: {{ threads: {threads} }}"),
            )
        };
        let all = parse(&with("0"), Purpose::TakeBackups).expect("valid");
        assert_eq!(all.compression.workers(), cores.min(THREADS_MAX));
        let three = parse(&with("3"), Purpose::TakeBackups).expect("valid");
        assert_eq!(three.compression.workers(), 3);
        assert_eq!(err_key(&with("65")), "compression.threads");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = snapshot_only().replace("cluster: prod-east", "cluster: prod-east\nclustr: x");
        assert_eq!(err_key(&text), "clustr");
        let text = snapshot_only().replace("    endpoints", "    endpont: x\n    endpoints");
        assert_eq!(err_key(&text), "source.etcd.endpont");
    }

    #[test]
    fn an_empty_key_is_named() {
        let text = snapshot_only().replace("cluster: prod-east", "cluster: prod-east\n\"\": x");
        assert_eq!(err_key(&text), "\"\"");
        assert_eq!(err_key("?"), "\"\"");
        let text = snapshot_only().replace("    endpoints", "    \"\": 1\n    endpoints");
        assert_eq!(err_key(&text), "source.etcd.\"\"");
        let text = snapshot_only().replace("[\"http://127.0.0.1:2379\"]", "[{ a: 1 }]");
        assert_eq!(err_key(&text), "source.etcd.endpoints[0]");
    }

    #[test]
    fn overlapping_recipients_are_rejected() {
        let dir = crate::scratch_dir();
        let text = config(
            &format!(
                "  static_resources:\n    base_dir: {0}\n    paths: [\"{0}\"]\n",
                dir.path().display()
            ),
            &format!(
                "  snapshot:\n    recipients: [\"{SNAP}\"]\n  static_resources:\n    recipients: [\"{KEYS}\", \"{SNAP}\"]\n"
            ),
            "  snapshot:\n    url: file:///var/backups/etcd\n",
        );
        let err = parse(&text, Purpose::TakeBackups).unwrap_err();
        assert_eq!(err.key, "encryption.static_resources.recipients");
        assert!(err.problem.contains("must differ"), "{err}");
    }

    #[test]
    fn malformed_recipient_and_secret_key() {
        let text = snapshot_only().replace(SNAP, "age1notakey");
        assert_eq!(err_key(&text), "encryption.snapshot.recipients[0]");
        let secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        let err = parse(&snapshot_only().replace(SNAP, secret), Purpose::TakeBackups).unwrap_err();
        assert!(!err.to_string().contains(secret), "secret echoed: {err}");
    }

    #[test]
    fn secrets_in_recipients_are_named_by_position_never_echoed() {
        let secret = "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";
        let body = &secret["AGE-SECRET-KEY-1".len()..];
        let lower = secret.to_ascii_lowercase();
        let variants = [
            secret.to_string(),
            lower.clone(),
            format!("\u{feff}{secret}"),
            format!("\u{feff}{lower}"),
            format!("\\\"{lower}\\\""),
            format!("'{secret}'"),
            format!("  {lower}\\t"),
            "-----BEGIN OPENSSH PRIVATE KEY-----".to_string(),
            "-----begin private key----- MC4CAQAwBQYDK2VwBCIEIOZ0".to_string(),
        ];
        for (i, variant) in variants.iter().enumerate() {
            let text = snapshot_only().replace(
                &format!("[\"{SNAP}\"]"),
                &format!("[\"{SNAP}\", \"{variant}\"]"),
            );
            let err = parse(&text, Purpose::TakeBackups).expect_err(variant);
            let shown = err.to_string();
            assert_eq!(
                err.key, "encryption.snapshot.recipients[1]",
                "case {i}: {shown}"
            );
            assert!(shown.contains("secret key"), "case {i}: {shown}");
            for needle in [body, &body.to_ascii_lowercase(), "MC4CAQAw"] {
                assert!(!shown.contains(needle), "case {i} echoed: {shown}");
            }
        }
    }

    #[test]
    fn secrets_in_a_recipients_file_are_named_by_line() {
        let dir = crate::scratch_dir();
        let file = dir.path().join("recipients.txt");
        let secret = "age-secret-key-1gq9778vqxmmjve8sk7j6vt8uj4hdqajuvsfcwcm02d8gewq72pvq2y5j33";
        std::fs::write(
            &file,
            format!("\u{feff}# snapshot keys\n{SNAP}\n\n  \"{secret}\"  \n"),
        )
        .unwrap();
        let text = snapshot_only().replace(
            &format!("recipients: [\"{SNAP}\"]"),
            &format!("recipients_file: {}", file.display()),
        );
        let err = parse(&text, Purpose::TakeBackups).unwrap_err();
        assert!(err.key.ends_with("line 4)"), "{err}");
        assert!(!err.to_string().contains(&secret[16..]), "echoed: {err}");
        // A byte-order mark before a recipient is not part of it.
        std::fs::write(&file, format!("\u{feff}{SNAP}\n")).unwrap();
        parse(&text, Purpose::TakeBackups).expect("a BOM is tolerated");
    }

    #[test]
    fn malformed_recipients_show_at_most_a_short_prefix() {
        let long = format!("{SNAP}x");
        let err = parse(&snapshot_only().replace(SNAP, &long), Purpose::TakeBackups).unwrap_err();
        assert!(!err.to_string().contains(&long[8..]), "{err}");
        assert!(err.to_string().contains("\"age1ql3z…\""), "{err}");
        let err = parse(
            &snapshot_only().replace(SNAP, "hunter2-not-a-key"),
            Purpose::TakeBackups,
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_targets() {
        let text = snapshot_only().replace("file:///var/backups/etcd", "ftp://x/y");
        assert_eq!(err_key(&text), "targets.snapshot.url");
        let text = snapshot_only().replace(
            "url: file:///var/backups/etcd",
            "url: s3://b/p\n    options: { aws_regin: eu-west-1 }",
        );
        assert_eq!(err_key(&text), "targets.snapshot.options.aws_regin");
        let text = snapshot_only().replace("  snapshot:\n    url", "  snapshots:\n    url");
        assert_eq!(err_key(&text), "targets.snapshots");
    }

    #[test]
    fn reading_backups_needs_no_source_files() {
        let text = snapshot_only().replace(
            "    endpoints: [\"http://127.0.0.1:2379\"]",
            "    endpoints: [\"https://127.0.0.1:2379\"]\n    cacert: /nonexistent/ca.crt",
        );
        assert_eq!(err_key(&text), "source.etcd.cacert");
        let cfg = parse(&text, Purpose::ReadBackups).expect("a recovery host has no etcd certs");
        assert_eq!(cfg.cluster, "prod-east");
    }

    /// The configs users copy from: every one must load as written (on a host that reads
    /// backups; certificate discovery and recipients files are host-side).
    #[test]
    fn shipped_example_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for dir in ["examples", "config"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains("\nversion: 1") {
                    parse(&text, Purpose::ReadBackups)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    assert!(
                        !text.contains("static-pod-certs/configmaps"),
                        "{}: a path that exists only inside pods",
                        path.display()
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 6, "only {checked} example configs found");
    }

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

    #[test]
    fn durations_beyond_the_maximum_name_their_key() {
        let cases = [
            (
                snapshot_only().replace(
                    "    endpoints: [\"http://127.0.0.1:2379\"]",
                    "    endpoints: [\"http://127.0.0.1:2379\"]\n    timeout: 300000y",
                ),
                "source.etcd.timeout",
            ),
            (
                format!(
                    "{}retention: {{ keep_last: 2, keep_within: 300000y }}\n",
                    snapshot_only()
                ),
                "retention.keep_within",
            ),
            (
                format!(
                    "{}retention: {{ keep_last: 2, incomplete_grace: 300000y }}\n",
                    snapshot_only()
                ),
                "retention.incomplete_grace",
            ),
            (
                format!(
                    "{}schedule: {{ cron: \"0 3 * * *\", jitter: 300000y }}\n",
                    snapshot_only()
                ),
                "schedule.jitter",
            ),
            (
                format!(
                    "{}schedule: {{ cron: \"0 3 * * *\", upgrade_check: 300000y }}\n",
                    snapshot_only()
                ),
                "schedule.upgrade_check",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text, Purpose::TakeBackups).expect_err(key);
            assert_eq!(err.key, key, "{err}");
            assert!(err.problem.contains("maximum"), "{err}");
        }
        let ok = format!(
            "{}retention: {{ keep_last: 2, keep_within: 99y, incomplete_grace: 30d }}\n",
            snapshot_only()
        );
        parse(&ok, Purpose::TakeBackups).expect("99 years is allowed");
    }

    #[test]
    fn command_line_durations_are_bounded() {
        assert_eq!(
            parse_bounded_duration("30m"),
            Ok(Duration::from_secs(30 * 60))
        );
        assert!(
            parse_bounded_duration("300000y")
                .unwrap_err()
                .contains("maximum")
        );
        assert!(parse_bounded_duration("soon").is_err());
    }

    #[test]
    fn signing_needs_its_files_where_they_are_used() {
        let with = |signing: &str| format!("{}signing: {signing}\n", snapshot_only());
        assert_eq!(err_key(&with("{}")), "signing");
        let key_only = with("{ key: /nonexistent/signing_ed25519 }");
        assert_eq!(err_key(&key_only), "signing.key");
        // A recovery host verifies without the signing key.
        parse(&key_only, Purpose::ReadBackups).expect("readers do not need the key");
        let readers = with("{ allowed_signers: /nonexistent/allowed_signers }");
        let err = parse(&readers, Purpose::ReadBackups).unwrap_err();
        assert_eq!(err.key, "signing.allowed_signers", "{err}");
        parse(&readers, Purpose::TakeBackups).expect("backups do not need allowed_signers");
    }

    #[test]
    fn yaml_errors_do_not_repeat_secret_looking_values() {
        let secret = "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";
        let text = snapshot_only().replace("version: 1", &format!("version: {secret}"));
        let err = parse(&text, Purpose::TakeBackups).unwrap_err();
        assert_eq!(err.key, "version");
        assert!(!err.to_string().contains(&secret[16..]), "{err}");
        let text = snapshot_only().replace(
            "cluster: prod-east",
            &format!("cluster: prod-east\n{secret}: x"),
        );
        let err = parse(&text, Purpose::TakeBackups).unwrap_err();
        assert!(!err.to_string().contains(&secret[16..]), "{err}");
        let text = snapshot_only().replace(
            "url: file:///var/backups/etcd",
            "url: s3://b/p\n    options: { aws_secret_access_key: [Sup3rS3cret] }",
        );
        let err = parse(&text, Purpose::TakeBackups).unwrap_err();
        assert!(!err.to_string().contains("Sup3rS3cret"), "{err}");
    }

    #[test]
    fn no_mangling_of_an_identity_gets_it_echoed() {
        let secret = "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";
        let body = secret["AGE-SECRET-KEY-1".len()..].to_ascii_lowercase();
        let wrappers = [
            "",
            "\u{feff}",
            "\"",
            "'",
            " ",
            "\t",
            "`",
            "recipient: ",
            "- ",
        ];
        for _ in 0..500 {
            let mangled: String = secret
                .chars()
                .map(|c| {
                    if rand::random::<bool>() {
                        c.to_ascii_lowercase()
                    } else {
                        c
                    }
                })
                .collect();
            let pick = || wrappers[rand::random_range(0..wrappers.len())];
            let text = format!("{}{}{mangled}{}{}", pick(), pick(), pick(), pick());
            let err = parse_recipient("here", &text).expect_err(&text).to_string();
            let folded = err.to_ascii_lowercase();
            for window in body.as_bytes().windows(8) {
                let window = std::str::from_utf8(window).unwrap();
                assert!(!folded.contains(window), "{text:?} echoed as: {err}");
            }
        }
    }

    /// Property tests: whatever text the loader is given, it never panics, and every error
    /// names a key and says what is wrong.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A config using every section, valid on a host that reads backups.
        fn full() -> String {
            format!(
                "version: 1\n\
                 cluster: prod-east\n\
                 source:\n  \
                   etcd:\n    \
                     endpoints: [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]\n    \
                     cacert: /etc/etcd/ca.crt\n    \
                     cert: /etc/etcd/client.crt\n    \
                     key: /etc/etcd/client.key\n    \
                     timeout: 30s\n    \
                     read_rate_limit: 200MiB\n  \
                   static_resources:\n    \
                     base_dir: /etc/kubernetes\n    \
                     paths: [\"/etc/kubernetes/static-pod-resources/kube-apiserver-pod-12\"]\n\
                 compression: {{ level: 3, threads: 0 }}\n\
                 priority: low\n\
                 encryption:\n  \
                   snapshot:\n    \
                     recipients: [\"{SNAP}\"]\n  \
                   static_resources:\n    \
                     recipients: [\"{KEYS}\"]\n\
                 targets:\n  \
                   snapshot:\n    \
                     url: s3://backups/etcd\n    \
                     options: {{ aws_region: eu-west-1 }}\n  \
                   static_resources:\n    \
                     url: file:///mnt/nfs/etcd-keys\n  \
                   lock_stale_after: 3m\n\
                 retention: {{ keep_last: 3, keep_daily: 7, keep_within: 48h, max_total_size: 50GiB, min_keep: 2 }}\n\
                 schedule: {{ cron: \"0 3 * * *\", jitter: 10m }}\n\
                 labels: {{ platform_version: \"4.14.7\" }}\n"
            )
        }

        /// Values that have found trouble in YAML loaders and in this one's checks.
        const TRICKY: &[&str] = &[
            "",
            "~",
            "null",
            "[]",
            "{}",
            "-1",
            "0",
            "1e999",
            "18446744073709551616",
            "0x7fffffff",
            "300000y",
            "0s",
            "1ns",
            "99999999999999999999d",
            "1 EiB",
            "16EiB",
            "-5MiB",
            "1.5GiB",
            "NaN",
            "true",
            "\"\"",
            "age1",
            "AGE-SECRET-KEY-1QQQQ",
            "s3://",
            "file://",
            "az://x",
            "gs:///",
            "http://[::1",
            "&anchor x",
            "*alias",
            "!!binary x",
            "|",
            ">-",
            "[unclosed",
            "{ a: }",
            "\"\\u0000\"",
            "* * * * * * * *",
            "@reboot",
            "- x",
            "? x",
        ];

        /// A tricky value, or anything at all.
        fn tricky_value() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(TRICKY).prop_map(str::to_string),
                any::<String>(),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|n| n.to_string()),
            ]
        }

        /// One change to a config text, by line.
        #[derive(Debug, Clone)]
        enum Edit {
            /// The value after the line's first `:` replaced.
            Value(usize, String),
            DeleteLine(usize),
            DuplicateLine(usize),
            SwapLines(usize, usize),
            /// An unknown key inserted with the line's indentation.
            UnknownKey(usize, String),
            Indent(usize, usize),
            Truncate(usize),
        }

        fn edit() -> impl Strategy<Value = Edit> {
            prop_oneof![
                4 => (any::<usize>(), tricky_value()).prop_map(|(l, v)| Edit::Value(l, v)),
                1 => any::<usize>().prop_map(Edit::DeleteLine),
                1 => any::<usize>().prop_map(Edit::DuplicateLine),
                1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
                1 => (any::<usize>(), "[a-z_]{1,10}").prop_map(|(l, k)| Edit::UnknownKey(l, k)),
                1 => (any::<usize>(), 0usize..6).prop_map(|(l, n)| Edit::Indent(l, n)),
                1 => any::<usize>().prop_map(Edit::Truncate),
            ]
        }

        fn apply(text: &str, edit: &Edit) -> String {
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let n = lines.len().max(1);
            match edit {
                Edit::Value(l, value) => {
                    if let Some(line) = lines.get_mut(l % n)
                        && let Some(colon) = line.find(':')
                    {
                        line.truncate(colon + 1);
                        line.push(' ');
                        line.push_str(value);
                    }
                }
                Edit::DeleteLine(l) if !lines.is_empty() => {
                    lines.remove(l % n);
                }
                Edit::DuplicateLine(l) if !lines.is_empty() => {
                    let line = lines[l % n].clone();
                    lines.insert(l % n, line);
                }
                Edit::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
                Edit::UnknownKey(l, key) if !lines.is_empty() => {
                    let line = &lines[l % n];
                    let indent = line.len() - line.trim_start().len();
                    let extra = format!("{}{key}: 1", " ".repeat(indent));
                    lines.insert(l % n, extra);
                }
                Edit::Indent(l, spaces) if !lines.is_empty() => {
                    let line = lines[l % n].trim_start().to_string();
                    lines[l % n] = format!("{}{line}", " ".repeat(*spaces));
                }
                Edit::Truncate(at) => {
                    let joined = lines.join("\n");
                    let mut cut = at % (joined.len() + 1);
                    while !joined.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    return joined[..cut].to_string();
                }
                _ => {}
            }
            lines.join("\n") + "\n"
        }

        /// Loads `text` for both purposes: no panic, and an error names a key and a problem.
        fn check(text: &str) -> Result<(), TestCaseError> {
            for purpose in [Purpose::ReadBackups, Purpose::TakeBackups] {
                if let Err(e) = parse(text, purpose) {
                    prop_assert!(!e.key.trim().is_empty(), "no key in {e} for {text:?}");
                    prop_assert!(
                        !e.problem.trim().is_empty(),
                        "no problem in {e} for {text:?}"
                    );
                    let named = format!("`{}`", e.key);
                    prop_assert!(e.to_string().contains(&named), "{e}");
                }
            }
            Ok(())
        }

        #[test]
        fn the_full_config_is_valid() {
            parse(&full(), Purpose::ReadBackups).expect("the base of the mutations is valid");
        }

        proptest! {
            #![proptest_config(crate::property_config())]

            #[test]
            fn arbitrary_text_never_panics(text in any::<String>()) {
                check(&text)?;
            }

            #[test]
            fn arbitrary_yaml_shaped_text_never_panics(
                text in "([a-z_]{1,10}: ?[ -~]{0,20}\n( {2,4}[a-z_-]{1,10}: ?[ -~]{0,20}\n){0,3}){1,6}"
            ) {
                check(&text)?;
            }

            #[test]
            fn mutated_configs_never_panic_and_errors_name_a_key(
                edits in prop::collection::vec(edit(), 1..5)
            ) {
                let mut text = full();
                for e in &edits {
                    text = apply(&text, e);
                }
                check(&text)?;
            }

            #[test]
            fn any_value_in_any_key_never_panics(line in any::<usize>(), value in tricky_value()) {
                check(&apply(&full(), &Edit::Value(line, value)))?;
            }
        }
    }
}
