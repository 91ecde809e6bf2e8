//! `targets`: where backups go (URLs and object_store options) and the lock's timing.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::error::ConfigError;

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

/// The longest `targets.lock_stale_after` (and the longest any lock record may promise):
/// a run that dies holding the lock stops backups for this long.
pub const MAX_LOCK_STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// A storage URL and object_store options (validated keys; values may be secrets).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub url: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// PEM file of the CAs this target's TLS certificate may be signed by (an on-prem
    /// store behind an internal CA), trusted in addition to the system's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Option values can be secrets: print keys only.
        f.debug_struct("TargetConfig")
            .field("url", &self.url)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTargets {
    snapshot: TargetConfig,
    static_resources: Option<TargetConfig>,
    #[serde(default, with = "humantime_serde")]
    lock_stale_after: Option<Duration>,
}

/// Both targets (the keys side defaults to the snapshot's) and the lock's staleness.
pub(super) fn resolve(raw: RawTargets) -> Result<Targets, ConfigError> {
    validate_target("targets.snapshot", &raw.snapshot)?;
    let static_target = match raw.static_resources {
        Some(t) => {
            validate_target("targets.static_resources", &t)?;
            t
        }
        None => raw.snapshot.clone(),
    };

    let lock_stale_after = raw.lock_stale_after.unwrap_or(DEFAULT_LOCK_STALE_AFTER);
    if lock_stale_after < Duration::from_secs(3) {
        return Err(ConfigError::new(
            "targets.lock_stale_after",
            "must be at least 3s: a live run renews its lock every third of it; the default is 3m",
        ));
    }
    if lock_stale_after > MAX_LOCK_STALE_AFTER {
        return Err(ConfigError::new(
            "targets.lock_stale_after",
            format!(
                "{} is longer than the maximum {}: a run that dies holding the lock would stop backups that long; the default is 3m",
                humantime::format_duration(lock_stale_after),
                humantime::format_duration(MAX_LOCK_STALE_AFTER)
            ),
        ));
    }
    Ok(Targets {
        snapshot: raw.snapshot,
        static_resources: static_target,
        lock_stale_after,
    })
}

/// A second (third…) copy of the backups in other targets, filled by `copy` (`replicas:`),
/// with the primary's layout.
#[derive(Debug, Clone)]
pub struct Replica {
    pub name: String,
    pub snapshot: TargetConfig,
    /// Defaults to the replica's snapshot target.
    pub static_resources: TargetConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplica {
    name: String,
    snapshot: TargetConfig,
    static_resources: Option<TargetConfig>,
}

/// The replicas: named like clusters, each name once, each in other locations than the
/// primary targets (a copy onto its own source is no copy).
pub(super) fn resolve_replicas(
    raw: Vec<RawReplica>,
    targets: &Targets,
) -> Result<Vec<Replica>, ConfigError> {
    let mut replicas: Vec<Replica> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("replicas[{i}]");
        if !crate::config::is_cluster_name(&r.name) {
            return Err(ConfigError::new(
                format!("{key}.name"),
                format!(
                    "{:?}: use 1-63 letters, digits, '-', '_' or '.' (e.g. dr)",
                    r.name
                ),
            ));
        }
        if replicas.iter().any(|other| other.name == r.name) {
            return Err(ConfigError::new(
                format!("{key}.name"),
                format!("{:?} names two replicas; give each its own name", r.name),
            ));
        }
        validate_target(&format!("{key}.snapshot"), &r.snapshot)?;
        let static_resources = match r.static_resources {
            Some(t) => {
                validate_target(&format!("{key}.static_resources"), &t)?;
                t
            }
            None => r.snapshot.clone(),
        };
        for (side, target) in [
            ("snapshot", &r.snapshot),
            ("static_resources", &static_resources),
        ] {
            if [&targets.snapshot, &targets.static_resources]
                .iter()
                .any(|primary| crate::store::same_location(primary, target))
            {
                return Err(ConfigError::new(
                    format!("{key}.{side}"),
                    "is one of the primary targets: a replica must be another location (another bucket, prefix or store)",
                ));
            }
        }
        replicas.push(Replica {
            name: r.name,
            snapshot: r.snapshot,
            static_resources,
        });
    }
    Ok(replicas)
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
    if let Some(problem) = bucket_problem(url.scheme(), url.host_str().unwrap_or_default()) {
        return Err(ConfigError::new(format!("{key}.url"), problem));
    }
    check_plain_http(key, url.scheme(), target)?;
    if let Some(ca_file) = &target.ca_file {
        if url.scheme() == "file" {
            return Err(ConfigError::new(
                format!("{key}.ca_file"),
                "file:// targets use no TLS; remove `ca_file`",
            ));
        }
        if !ca_file.is_absolute() {
            return Err(ConfigError::new(
                format!("{key}.ca_file"),
                format!(
                    "{} is not an absolute path; name the CA bundle (PEM) by its full path, e.g. /etc/pki/tls/certs/internal-ca.pem",
                    ca_file.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Why `name` cannot be a bucket (container) of `scheme`'s store, by the provider's
/// naming rules (S3 general purpose buckets; GCS; Azure Blob containers). S3-compatible
/// stores (MinIO, Ceph RGW, NooBaa) apply S3's rules.
fn bucket_problem(scheme: &str, name: &str) -> Option<String> {
    let (what, allowed, max): (&str, fn(char) -> bool, usize) = match scheme {
        "s3" => (
            "an S3 bucket",
            |c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '-'),
            63,
        ),
        "gs" => (
            "a GCS bucket",
            |c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'),
            222,
        ),
        "az" | "azure" => (
            "an Azure container",
            |c| matches!(c, 'a'..='z' | '0'..='9' | '-'),
            63,
        ),
        _ => return None,
    };
    let rules = match scheme {
        "s3" => {
            "3-63 characters: lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
        }
        "gs" => {
            "3-63 characters (222 with dots): lowercase letters, digits, hyphens, underscores and dots, starting and ending with a letter or digit"
        }
        _ => {
            "3-63 characters: lowercase letters, digits and single hyphens, starting and ending with a letter or digit"
        }
    };
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let bad = name.len() < 3
        || name.len() > max
        || !name.chars().all(allowed)
        || !alnum(name.chars().next())
        || !alnum(name.chars().last())
        || name.contains("..")
        || (scheme == "gs" && name.split('.').any(|part| part.len() > 63))
        || (scheme == "s3" && name.parse::<std::net::Ipv4Addr>().is_ok())
        || (matches!(scheme, "az" | "azure") && name.contains("--"));
    bad.then(|| format!("{name:?} is not a valid name for {what}: {rules}"))
}

/// An endpoint given as `http://` is refused by the store client unless `allow_http` is
/// set; say so when the config is loaded, not as a "builder error" at the first request.
fn check_plain_http(key: &str, scheme: &str, target: &TargetConfig) -> Result<(), ConfigError> {
    use object_store::ClientConfigKey::AllowHttp;
    use object_store::aws::AmazonS3ConfigKey as S3;
    use object_store::azure::AzureConfigKey as Az;
    let truthy = |v: &str| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on");
    let option = |wanted: &dyn Fn(&str) -> bool| {
        target
            .options
            .iter()
            .find(|(k, _)| wanted(&k.to_ascii_lowercase()))
    };
    let (endpoint, allow_key, env) = match scheme {
        "s3" => (
            option(&|k| S3::from_str(k).is_ok_and(|k| k == S3::Endpoint)),
            option(&|k| S3::from_str(k).is_ok_and(|k| k == S3::Client(AllowHttp))),
            "AWS_ALLOW_HTTP",
        ),
        "az" | "azure" => {
            if option(&|k| Az::from_str(k).is_ok_and(|k| k == Az::UseEmulator))
                .is_some_and(|(_, v)| truthy(v))
            {
                return Ok(());
            }
            (
                option(&|k| Az::from_str(k).is_ok_and(|k| k == Az::Endpoint)),
                option(&|k| Az::from_str(k).is_ok_and(|k| k == Az::Client(AllowHttp))),
                "AZURE_ALLOW_HTTP",
            )
        }
        _ => return Ok(()),
    };
    let Some((endpoint_key, endpoint)) = endpoint else {
        return Ok(());
    };
    let allowed =
        allow_key.is_some_and(|(_, v)| truthy(v)) || std::env::var(env).is_ok_and(|v| truthy(&v));
    if endpoint.to_ascii_lowercase().starts_with("http://") && !allowed {
        let allow = if scheme == "s3" {
            "aws_allow_http"
        } else {
            "azure_allow_http"
        };
        return Err(ConfigError::new(
            format!("{key}.options.{endpoint_key}"),
            format!(
                "{:?} is plain HTTP, which the store client refuses unless told: add `{allow}: \"true\"` to the options (credentials and backups then cross the network unencrypted; prefer https:// with `ca_file` for an internal CA)",
                crate::store::redact_url(endpoint)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;

    #[test]
    fn replicas_are_named_once_and_elsewhere() {
        let with = |replicas: &str| format!("{}replicas:\n{replicas}", snapshot_only());
        let dr = "  - name: dr\n    snapshot: { url: \"s3://dr-backups/etcd\" }\n";
        let cfg = crate::config::parse(&with(dr), crate::config::Purpose::TakeBackups).unwrap();
        assert_eq!(cfg.replicas[0].name, "dr");
        assert_eq!(cfg.replicas[0].static_resources.url, "s3://dr-backups/etcd");
        assert_eq!(err_key(&with(&format!("{dr}{dr}"))), "replicas[1].name");
        let onto_primary = "  - name: dr\n    snapshot: { url: \"file:///var/backups/etcd\" }\n";
        assert_eq!(err_key(&with(onto_primary)), "replicas[0].snapshot");
        let bad_name = "  - name: \"../x\"\n    snapshot: { url: \"s3://dr-backups/etcd\" }\n";
        assert_eq!(err_key(&with(bad_name)), "replicas[0].name");
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
    fn bucket_names_follow_the_provider_rules() {
        use super::bucket_problem;
        for good in ["etcd-backups", "a.b.c", "abc", "x1-2"] {
            assert_eq!(bucket_problem("s3", good), None, "{good}");
        }
        for bad in [
            "Etcd_BK",
            "ab",
            "-abc",
            "abc-",
            "a..b",
            "192.168.1.1",
            &"a".repeat(64),
        ] {
            assert!(bucket_problem("s3", bad).is_some(), "{bad}");
        }
        assert_eq!(bucket_problem("gs", "my_bucket.example.com"), None);
        assert!(bucket_problem("gs", &"a".repeat(64)).is_some());
        assert_eq!(bucket_problem("az", "etcd-keys"), None);
        for bad in ["etcd--keys", "etcd_keys", "Keys"] {
            assert!(bucket_problem("az", bad).is_some(), "{bad}");
        }
        let text = snapshot_only().replace("url: file:///var/backups/etcd", "url: s3://Etcd_BK/p");
        assert_eq!(err_key(&text), "targets.snapshot.url");
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let with = |options: &str| {
            snapshot_only().replace(
                "url: file:///var/backups/etcd",
                &format!("url: s3://etcd-b/p\n    options: {{ {options} }}"),
            )
        };
        assert_eq!(
            err_key(&with("aws_endpoint: \"http://minio:9000\"")),
            "targets.snapshot.options.aws_endpoint"
        );
        for ok in [
            "aws_endpoint: \"http://minio:9000\", aws_allow_http: \"true\"",
            "aws_endpoint: \"https://minio:9000\"",
        ] {
            crate::config::parse(&with(ok), crate::config::Purpose::ReadBackups).expect(ok);
        }
        let text = snapshot_only().replace(
            "url: file:///var/backups/etcd",
            "url: az://keys/p\n    options: { azure_storage_endpoint: \"http://azurite:10000/acct\" }",
        );
        assert_eq!(
            err_key(&text),
            "targets.snapshot.options.azure_storage_endpoint"
        );
    }

    #[test]
    fn the_lock_timeout_is_bounded() {
        let with = |d: &str| format!("{}  lock_stale_after: {d}\n", snapshot_only());
        for bad in ["2s", "25h", "300000y"] {
            assert_eq!(err_key(&with(bad)), "targets.lock_stale_after", "{bad}");
        }
        crate::config::parse(&with("24h"), crate::config::Purpose::TakeBackups)
            .expect("a day is allowed");
    }
}
