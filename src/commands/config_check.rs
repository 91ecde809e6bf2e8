//! `config check`: the config is valid; with `--connect`, etcd and the targets answer.

use std::path::Path;

use anyhow::{Context, anyhow};
use bytes::Bytes;

use super::Targets;
use crate::config::{Config, SnapshotSource};
use crate::source::etcd::EtcdMember;
use crate::source::{backup_dir, static_resources};
use crate::store::Target;

pub async fn run(config: &Config, path: &Path, connect: bool) -> anyhow::Result<()> {
    println!("{}: valid (cluster {})", path.display(), config.cluster);
    if !connect {
        return Ok(());
    }
    if let Some(etcd) = config.source.etcd() {
        {
            let mut reachable = 0;
            for endpoint in &etcd.endpoints {
                match EtcdMember::connect(etcd, endpoint).await {
                    Ok(m) => {
                        reachable += 1;
                        println!(
                            "etcd {endpoint}: ok (member {:x}, etcd {}, db {} bytes, revision {})",
                            m.member_id, m.version, m.db_size, m.revision
                        );
                    }
                    Err(e) => println!("etcd {endpoint}: FAILED: {}", e.reason),
                }
            }
            if reachable == 0 {
                return Err(anyhow!("no etcd endpoint is reachable"));
            }
        }
    }
    if let SnapshotSource::BackupDir { dir, .. } = &config.source {
        let pair = backup_dir::newest_pair(dir)?;
        println!(
            "backup_dir: newest complete pair {}{} ({})",
            pair.timestamp,
            if pair.dirty { " (POSSIBLY DIRTY)" } else { "" },
            pair.snapshot.display()
        );
    }
    if let Some(resources) = &config.static_resources {
        let paths = static_resources::resolve(resources).context("source.static_resources")?;
        println!("static resources: {} directories", paths.len());
    }
    let targets = Targets::open(config)?;
    probe(&targets.snapshot, &config.cluster).await?;
    if targets.split() {
        probe(&targets.static_resources, &config.cluster).await?;
    }
    Ok(())
}

/// Lists, writes and deletes a probe object: the permissions a backup and prune need.
async fn probe(target: &Target, cluster: &str) -> anyhow::Result<()> {
    let key = format!(
        "{cluster}/.probe-{}-{}",
        crate::store::lock::hostname(),
        std::process::id()
    );
    target.list(cluster).await?;
    target.create(&key, Bytes::from_static(b"probe")).await?;
    target.delete(&key).await?;
    println!("target {}: ok (list, write, delete)", target.url());
    Ok(())
}
