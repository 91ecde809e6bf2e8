//! YAML → validated [`Config`]. One load function; every problem names its key and the fix.
//! One file per section, each with its tests; this module holds the whole and its checks
//! across sections.

mod compression;
mod encryption;
mod schedule;
mod source;
mod targets;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use self::compression::{Compression, Priority};
pub use self::encryption::{Encryption, Recipients};
pub use self::schedule::{DrillSchedule, Schedule};
pub use self::source::{EtcdSource, Pace, SnapshotSource, StaticResources, StaticSelection};
pub use self::targets::{MAX_LOCK_STALE_AFTER, Replica, TargetConfig, Targets};
use crate::duration::MAX_DURATION;
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
    /// Copies in other targets (`copy --to NAME`, `--replica NAME`).
    pub replicas: Vec<Replica>,
    pub retention: Option<RetentionPolicy>,
    pub schedule: Option<Schedule>,
    pub labels: BTreeMap<String, String>,
    /// Manifest signing (backup) and the keys trusted to have signed (verify, restore).
    pub signing: crate::signing::SigningConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: u32,
    cluster: String,
    source: source::RawSource,
    #[serde(default)]
    compression: Compression,
    #[serde(default)]
    priority: Priority,
    encryption: encryption::RawEncryption,
    targets: targets::RawTargets,
    #[serde(default)]
    replicas: Vec<targets::RawReplica>,
    retention: Option<RetentionPolicy>,
    schedule: Option<schedule::RawSchedule>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    signing: Option<crate::signing::SigningConfig>,
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
    let (source, static_resources) = source::resolve(raw.source, check_files)?;
    raw.compression.validate()?;
    let has_static =
        static_resources.is_some() || matches!(source, SnapshotSource::BackupDir { .. });
    let encryption = encryption::resolve(raw.encryption, has_static, check_files)?;
    let targets = targets::resolve(raw.targets)?;
    let replicas = targets::resolve_replicas(raw.replicas, &targets)?;

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
        .map(|s| schedule::resolve(s, &source, &raw.labels, check_files))
        .transpose()?;

    // Drills on a schedule prove backups; retention keeps the newest proof unless told.
    let retention = raw.retention.map(|mut policy| {
        let drills = schedule.as_ref().is_some_and(|s| s.drill.is_some());
        policy.keep_drilled.get_or_insert(u32::from(drills));
        policy
    });

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
        encryption,
        targets,
        replicas,
        retention,
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

/// A name that can be a cluster's key prefix: 1-63 letters, digits, '-', '_' or '.', not
/// starting with '.' (also how a fleet view tells cluster prefixes from other names).
pub fn is_cluster_name(cluster: &str) -> bool {
    !cluster.is_empty()
        && cluster.len() <= 63
        && cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !cluster.starts_with('.')
}

fn validate_cluster(cluster: &str) -> Result<(), ConfigError> {
    if is_cluster_name(cluster) {
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

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

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
}
