//! `compression` and `priority`: how hard a backup works next to etcd on the same host.

use serde::Deserialize;

use crate::error::ConfigError;

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

    /// The level and the worker count within what zstd and the host's memory allow.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.level < 1 || self.level > 19 {
            return Err(ConfigError::new(
                "compression.level",
                format!(
                    "{} is out of range; use 1 (fastest) to 19 (smallest), 3 is the default",
                    self.level
                ),
            ));
        }
        if let Some(threads) = self.threads.filter(|t| *t > THREADS_MAX) {
            return Err(ConfigError::new(
                "compression.threads",
                format!(
                    "{threads} zstd workers would hold about 8 MiB each; use at most {THREADS_MAX}, 0 for all cores, or leave it out (half the cores, at most {AUTO_THREADS_MAX})"
                ),
            ));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;
    use crate::config::{Purpose, parse};

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
    fn levels_outside_zstds_range_are_rejected() {
        let with = |level: &str| {
            snapshot_only().replace(
                "cluster: prod-east",
                &format!("cluster: prod-east\ncompression: {{ level: {level} }}"),
            )
        };
        assert_eq!(err_key(&with("0")), "compression.level");
        assert_eq!(err_key(&with("20")), "compression.level");
        parse(&with("19"), Purpose::TakeBackups).expect("19 is zstd's highest regular level");
    }
}
