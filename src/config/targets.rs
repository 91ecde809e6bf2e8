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

#[cfg(test)]
mod tests {
    use crate::config::testing::*;

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
    fn the_lock_timeout_is_bounded() {
        let with = |d: &str| format!("{}  lock_stale_after: {d}\n", snapshot_only());
        for bad in ["2s", "25h", "300000y"] {
            assert_eq!(err_key(&with(bad)), "targets.lock_stale_after", "{bad}");
        }
        crate::config::parse(&with("24h"), crate::config::Purpose::TakeBackups)
            .expect("a day is allowed");
    }
}
