//! `config check`: the config is valid (with `--offline`, as far as it can be told without
//! the host's files); with `--connect`, etcd and the targets answer.

use std::path::Path;

use anyhow::{Context, anyhow};

use crate::config::{Config, SnapshotSource};
use crate::repo::Repository;
use crate::source::etcd::EtcdMember;
use crate::source::{backup_dir, static_resources};
use crate::telemetry::outln;

pub async fn run(config: &Config, path: &Path, connect: bool, offline: bool) -> anyhow::Result<()> {
    let scope = if offline {
        "; offline: certificates, recipients files and directories not read"
    } else {
        ""
    };
    outln!(
        "{}: valid (cluster {}{scope})",
        path.display(),
        config.cluster
    );
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
                        outln!(
                            "etcd {endpoint}: ok (member {:x}, etcd {}, db {} bytes, revision {})",
                            m.member_id,
                            m.version,
                            m.db_size,
                            m.revision
                        );
                    }
                    Err(e) => outln!("etcd {endpoint}: FAILED: {}", e.reason),
                }
            }
            if reachable == 0 {
                return Err(anyhow!("no etcd endpoint is reachable"));
            }
        }
    }
    if let SnapshotSource::BackupDir { dir, .. } = &config.source {
        let pair = backup_dir::newest_pair(dir)?;
        outln!(
            "backup_dir: newest complete pair {}{} ({})",
            pair.timestamp,
            if pair.dirty { " (POSSIBLY DIRTY)" } else { "" },
            pair.snapshot.display()
        );
    }
    if let Some(resources) = &config.static_resources {
        let paths = static_resources::resolve(resources).context("source.static_resources")?;
        outln!("static resources: {} directories", paths.len());
    }
    for checked in Repository::primary(config)?.check_permissions().await? {
        outln!("{checked}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::FaultyStore;

    #[tokio::test]
    async fn a_store_that_ignores_create_only_is_refused_with_the_reason() {
        let store = FaultyStore::new();
        let repo = |store: &FaultyStore| {
            Repository::over("c", store.target("mem://t"), None, Default::default())
        };
        repo(&store).check_permissions().await.unwrap();
        assert!(store.keys().await.is_empty(), "the probe is removed");
        store.ignore_create_only(true);
        let err = repo(&store).check_permissions().await.unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("ignores If-None-Match") && text.contains("Use another store"),
            "{text}"
        );
        assert!(store.keys().await.is_empty(), "the probe is removed");
    }
}
