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
    pub encryption: Encryption,
    pub targets: Targets,
    pub retention: Option<RetentionPolicy>,
    pub schedule: Option<Schedule>,
    pub labels: BTreeMap<String, String>,
}

/// Where the snapshot comes from.
#[derive(Debug, Clone)]
pub enum SnapshotSource {
    Etcd(EtcdSource),
    /// The newest pair that `cluster-backup.sh` wrote into this directory.
    BackupDir(PathBuf),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSource {
    pub endpoints: Vec<String>,
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
    /// 0 = all cores.
    #[serde(default)]
    pub threads: u32,
}

fn default_level() -> i32 {
    3
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            level: default_level(),
            threads: 0,
        }
    }
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
    encryption: RawEncryption,
    targets: RawTargets,
    retention: Option<RetentionPolicy>,
    schedule: Option<RawSchedule>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
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
        let key = match e.path().to_string() {
            p if p == "." => "(top level)".to_string(),
            p => p,
        };
        ConfigError::new(key, e.into_inner().to_string())
    })?;
    resolve(raw, purpose == Purpose::TakeBackups)
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

    let source = match (raw.source.etcd, raw.source.backup_dir) {
        (Some(etcd), None) => SnapshotSource::Etcd(validate_etcd(etcd, check_files)?),
        (None, Some(dir)) => {
            if check_files && !dir.is_dir() {
                return Err(ConfigError::new(
                    "source.backup_dir",
                    format!(
                        "{} is not a readable directory; point it at the directory cluster-backup.sh writes to",
                        dir.display()
                    ),
                ));
            }
            SnapshotSource::BackupDir(dir)
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "source",
                "both `etcd` and `backup_dir` are set; keep exactly one",
            ));
        }
        (None, None) => {
            return Err(ConfigError::new(
                "source",
                "no snapshot source; set `source.etcd` (live snapshot) or `source.backup_dir` (files from cluster-backup.sh)",
            ));
        }
    };

    let static_resources = match (&source, raw.source.static_resources) {
        (SnapshotSource::BackupDir(_), Some(_)) => {
            return Err(ConfigError::new(
                "source.static_resources",
                "not used with `source.backup_dir`: the static resources come from the directory's static_kuberesources_*.tar.gz; remove this key",
            ));
        }
        (_, Some(s)) => Some(validate_static(s, check_files)?),
        (_, None) => None,
    };
    let has_static = static_resources.is_some() || matches!(source, SnapshotSource::BackupDir(_));

    if raw.compression.level < 1 || raw.compression.level > 19 {
        return Err(ConfigError::new(
            "compression.level",
            format!(
                "{} is out of range; use 1 (fastest) to 19 (smallest), 3 is the default",
                raw.compression.level
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

    let schedule = raw.schedule.map(validate_schedule).transpose()?;
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

    Ok(Config {
        cluster: raw.cluster,
        source,
        static_resources,
        compression: raw.compression,
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
    })
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

fn validate_etcd(etcd: EtcdSource, check_files: bool) -> Result<EtcdSource, ConfigError> {
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
            "https" if etcd.cacert.is_some() => {}
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
            let line = line.trim();
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
        if text.starts_with("AGE-SECRET-KEY-") {
            // Never echo a secret back.
            return Err(ConfigError::new(
                where_,
                "this is an age identity (secret key), not a recipient; use the public key printed by `age-keygen -y IDENTITY_FILE`",
            ));
        }
        let recipient = age::x25519::Recipient::from_str(&text).map_err(|e| {
            ConfigError::new(
                &where_,
                format!("malformed age recipient {text:?} ({e}); expected an age1… public key from `age-keygen`"),
            )
        })?;
        keys.push(recipient);
    }
    Ok(Recipients { keys })
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

fn validate_schedule(raw: RawSchedule) -> Result<Schedule, ConfigError> {
    if raw
        .upgrade_check
        .is_some_and(|d| d < Duration::from_secs(1))
    {
        return Err(ConfigError::new(
            "schedule.upgrade_check",
            "must be at least 1s; 5m is a good interval",
        ));
    }
    let cron = croner::Cron::from_str(&raw.cron).map_err(|e| {
        ConfigError::new(
            "schedule.cron",
            format!(
                "{:?} is not a cron expression ({e}); use five fields, e.g. \"0 3 * * *\"",
                raw.cron
            ),
        )
    })?;
    Ok(Schedule {
        cron,
        cron_text: raw.cron,
        jitter: raw.jitter.unwrap_or_default(),
        upgrade_check: raw.upgrade_check,
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
    fn unknown_key_is_named() {
        let text = snapshot_only().replace("cluster: prod-east", "cluster: prod-east\nclustr: x");
        assert_eq!(err_key(&text), "clustr");
        let text = snapshot_only().replace("    endpoints", "    endpont: x\n    endpoints");
        assert_eq!(err_key(&text), "source.etcd.endpont");
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
