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
/// The probe is created twice: the second create must be refused, or the store ignores
/// create-only writes and neither the lock nor the commit point can be trusted.
async fn probe(target: &Target, cluster: &str) -> anyhow::Result<()> {
    let key = format!(
        "{cluster}/.probe-{}-{}-{:016x}",
        crate::store::lock::hostname(),
        std::process::id(),
        rand::random::<u64>()
    );
    target.list(cluster).await?;
    if !target.create(&key, Bytes::from_static(b"probe")).await? {
        return Err(anyhow!(
            "target {}: the probe object {key} already existed before it was written; run `config check --connect` again",
            target.url()
        ));
    }
    let second = target.create(&key, Bytes::from_static(b"probe 2")).await;
    let deleted = target.delete(&key).await;
    match second {
        Ok(false) => {}
        Ok(true) => {
            return Err(anyhow!(
                "target {}: a second create-only write of {key} was accepted: this store (or a proxy in front of it) ignores If-None-Match, so the backup lock and the manifest commit are unsafe. Use another store or endpoint that honours conditional writes",
                target.url()
            ));
        }
        Err(e) => {
            return Err(anyhow::Error::from(e).context("second create-only write of the probe"));
        }
    }
    deleted?;
    println!(
        "target {}: ok (list, write, delete; a second create of one key is refused)",
        target.url()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::FaultyStore;

    #[tokio::test]
    async fn a_store_that_ignores_create_only_is_refused_with_the_reason() {
        let store = FaultyStore::new();
        probe(&store.target("mem://t"), "c").await.unwrap();
        assert!(store.keys().await.is_empty(), "the probe is removed");
        store.ignore_create_only(true);
        let err = probe(&store.target("mem://t"), "c").await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("ignores If-None-Match") && text.contains("Use another store"),
            "{text}"
        );
        assert!(store.keys().await.is_empty(), "the probe is removed");
    }
}
