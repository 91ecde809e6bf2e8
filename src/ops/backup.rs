//! Taking a backup (for `backup` and the scheduler): guards, the lock, the pipeline into
//! the repository, the commit.

use std::io::{self, Read};

use anyhow::{Context, anyhow};
use chrono::Utc;
use tokio_util::io::SyncIoBridge;

use crate::config::{Config, EtcdSource, SnapshotSource};
use crate::error::{Refusal, Refused};
use crate::ids::hostname;
use crate::manifest::{Artifact, ArtifactKind, Artifacts, FORMAT_VERSION, Manifest, SourceInfo};
use crate::pipeline::{self, Encoding, ShipError};
use crate::repo::{BackupLock, Claim, Repository};
use crate::source::backup_dir::{self, BackupDirPair};
use crate::source::content::ContentFacts;
use crate::source::etcd::{ClusterFacts, EtcdMember};
use crate::source::pace::RequestPacer;
use crate::source::static_resources;
use crate::telemetry;

/// OpenShift: certificates rotate during the first day; a backup from then cannot restore.
const FRESH_CLUSTER: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// How a backup is taken.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupOptions {
    /// Past the guards (fresh cluster; operators progressing, which marks it dirty).
    pub force: bool,
    /// A trusted backup started at or after this time makes this one unnecessary.
    pub not_before: Option<chrono::DateTime<Utc>>,
}

/// One backup under the cluster's lock, after the host's clock is checked against the
/// store's (exit 4 when they are apart). With `not_before`, a trusted backup that another
/// host started at or after that time makes this one unnecessary (refused, exit 4):
/// several control-plane hosts on one schedule produce one backup.
pub async fn take(
    config: &Config,
    repo: &Repository,
    options: BackupOptions,
) -> anyhow::Result<Manifest> {
    let clock = repo.check_clock().await?;
    let lock = repo.lock(&clock).await?;
    let result = match already_taken(config, repo, options.not_before).await {
        Ok(()) => take_backup(config, repo, options.force, &lock).await,
        Err(e) => Err(e),
    };
    lock.release().await;
    result
}

/// Refuses when the newest trusted backup already covers this run: one started at or
/// after `not_before`, or (for cluster-backup.sh files) the same pair. Backups that do
/// not count (untrusted, future-dated, damaged) never cover a run.
async fn already_taken(
    config: &Config,
    repo: &Repository,
    not_before: Option<chrono::DateTime<Utc>>,
) -> anyhow::Result<()> {
    let Some(newest) = repo.newest_trusted(Utc::now()).await? else {
        return Ok(());
    };
    let Some(summary) = &newest.summary else {
        return Ok(());
    };
    if let Some(not_before) = not_before
        && summary.started_at >= not_before
    {
        return Err(Refused::new(
            Refusal::AlreadyTaken,
            format!(
                "backup {} was taken at {} by {}; nothing to do for this run",
                newest.id,
                summary.started_at.to_rfc3339(),
                if summary.host.is_empty() {
                    "another run"
                } else {
                    &summary.host
                }
            ),
        )
        .into());
    }
    if let (SnapshotSource::BackupDir { dir, .. }, Some(timestamp)) =
        (&config.source, &summary.backup_dir_timestamp)
        && let Ok(pair) = backup_dir::newest_pair(dir)
        && pair.timestamp == *timestamp
    {
        return Err(Refused::new(
            Refusal::AlreadyTaken,
            format!(
                "the newest cluster-backup.sh pair in {} ({timestamp}) was already shipped as backup {}; run cluster-backup.sh for a newer one",
                dir.display(),
                newest.id
            ),
        )
        .into());
    }
    Ok(())
}

/// What the snapshot is read from, prepared before anything is uploaded.
enum Prepared {
    Etcd {
        member: Box<EtcdMember>,
        facts: ClusterFacts,
    },
    BackupDir {
        pair: BackupDirPair,
        facts: ClusterFacts,
    },
}

async fn take_backup(
    config: &Config,
    repo: &Repository,
    force: bool,
    lock: &BackupLock,
) -> anyhow::Result<Manifest> {
    let mut dirty_reasons = Vec::new();
    let prepared = match &config.source {
        SnapshotSource::Etcd(etcd) => {
            let mut member = first_healthy(etcd, 0).await?.1;
            let facts = member.cluster_facts().await;
            guard_fresh_cluster(&facts, force)?;
            if facts.openshift {
                dirty_reasons = guard_settled_operators(&mut member, force).await?;
            }
            // etcd's latency before anything else is read: the baseline that the stream
            // and the key scan after it are paced to.
            member.start_pacing().await?;
            Prepared::Etcd {
                member: Box::new(member),
                facts,
            }
        }
        SnapshotSource::BackupDir { dir, etcd } => {
            let pair = backup_dir::newest_pair(dir)
                .with_context(|| format!("source.backup_dir {}", dir.display()))?;
            if pair.dirty {
                dirty_reasons.push(format!(
                    "cluster-backup.sh --force wrote it past its guards ({})",
                    pair.snapshot.display()
                ));
            }
            let facts = match etcd {
                Some(etcd) => platform_facts(etcd).await,
                None => ClusterFacts::default(),
            };
            Prepared::BackupDir { pair, facts }
        }
    };

    let mut claim = repo.claim(Utc::now()).await?;
    tracing::info!(id = %claim.id, target = repo.url(), "backup started");
    let result = write_backup(config, repo, &mut claim, lock, prepared, dirty_reasons).await;
    // The marker goes either way; on failure so does everything this run wrote.
    repo.settle(claim, result.is_ok()).await;
    result
}

async fn write_backup(
    config: &Config,
    repo: &Repository,
    claim: &mut Claim,
    lock: &BackupLock,
    prepared: Prepared,
    dirty_reasons: Vec<String>,
) -> anyhow::Result<Manifest> {
    let static_artifact = match (&prepared, &config.static_resources) {
        (Prepared::BackupDir { pair, .. }, _) => {
            let tarball = pair.static_tarball.clone();
            Some(
                ship_static(config, repo, claim, move |w| {
                    let file = std::fs::File::open(&tarball)?;
                    io::copy(&mut flate2::read::GzDecoder::new(file), w)
                })
                .await?,
            )
        }
        (Prepared::Etcd { .. }, Some(resources)) => {
            let paths = static_resources::resolve(resources).context("source.static_resources")?;
            let base = resources.base_dir.clone();
            Some(
                ship_static(config, repo, claim, move |w| {
                    static_resources::write_tar(&base, &paths, w)
                })
                .await?,
            )
        }
        (Prepared::Etcd { .. }, None) => None,
    };

    let snapshot_size = match &prepared {
        Prepared::Etcd { member, .. } => Some(member.db_size + 32),
        Prepared::BackupDir { pair, .. } => std::fs::metadata(&pair.snapshot).ok().map(|m| m.len()),
    };
    let snapshot_encoding = Encoding {
        recipients: config.encryption.snapshot.clone(),
        compression: config.compression,
        etcd_trailer: true,
        progress: telemetry::progress("snapshot", snapshot_size),
    };
    let (snapshot_artifact, source, facts, content) = match prepared {
        Prepared::BackupDir { pair, facts } => {
            let file = pair.snapshot.clone();
            let upload = repo.upload(claim, ArtifactKind::Snapshot).await?;
            let (shipped, _) = pipeline::ship(upload, snapshot_encoding, move |w| {
                io::copy(&mut std::fs::File::open(&file)?, w)
            })
            .await
            .with_context(|| format!("shipping {}", pair.snapshot.display()))?;
            let artifact = repo.artifact(claim, ArtifactKind::Snapshot, shipped);
            (artifact, pair.source_info(), facts, None)
        }
        Prepared::Etcd { member, facts } => {
            let SnapshotSource::Etcd(etcd) = &config.source else {
                unreachable!("prepared from an etcd source");
            };
            let (artifact, source, mut member) =
                ship_etcd_snapshot(etcd, *member, repo, claim, snapshot_encoding).await?;
            let content = content_after_stream(&mut member, &source).await;
            (artifact, source, facts, content)
        }
    };

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        id: claim.id.clone(),
        cluster: repo.cluster().to_string(),
        started_at: claim.started_at,
        finished_at: Utc::now(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        host: hostname(),
        source,
        platform_version: config
            .labels
            .get("platform_version")
            .cloned()
            .or(facts.platform_version),
        upgrade: facts.upgrade,
        dirty: !dirty_reasons.is_empty(),
        dirty_reasons,
        labels: config.labels.clone(),
        content,
        artifacts: Artifacts {
            snapshot: snapshot_artifact,
            static_resources: static_artifact,
        },
    };
    repo.commit(claim, &manifest, lock).await?;
    tracing::info!(
        id = %manifest.id,
        snapshot_bytes = manifest.artifacts.snapshot.plaintext.size,
        stored_bytes = manifest.stored_size(),
        seconds = (manifest.finished_at - manifest.started_at).num_milliseconds() as f64 / 1000.0,
        "backup complete"
    );
    Ok(manifest)
}

async fn ship_static<F>(
    config: &Config,
    repo: &Repository,
    claim: &mut Claim,
    produce: F,
) -> anyhow::Result<Artifact>
where
    F: FnOnce(&mut dyn io::Write) -> io::Result<u64> + Send + 'static,
{
    let recipients = config
        .encryption
        .static_resources
        .clone()
        .context("encryption.static_resources is required for the static resources archive")?;
    let encoding = Encoding {
        recipients,
        compression: config.compression,
        etcd_trailer: false,
        progress: telemetry::progress("static resources", None),
    };
    let upload = repo.upload(claim, ArtifactKind::StaticResources).await?;
    let (shipped, _) = pipeline::ship(upload, encoding, produce)
        .await
        .context("shipping the static resources")?;
    Ok(repo.artifact(claim, ArtifactKind::StaticResources, shipped))
}

/// The key counts and the encryption in use, read from the member that served the
/// snapshot after its stream, at the revision it reported before (the snapshot holds at
/// least that revision), paced like the stream. Best effort: a backup is worth more than
/// its description. When compaction removed that revision meanwhile (kube-apiserver
/// compacts to the revision of five minutes before, etcd's own auto-compaction by its
/// retention), no counts are recorded, and the log says why.
async fn content_after_stream(
    member: &mut EtcdMember,
    source: &SourceInfo,
) -> Option<ContentFacts> {
    let SourceInfo::Etcd { pacing, .. } = source else {
        return None;
    };
    let pacer = pacing.as_ref().and_then(RequestPacer::after_stream);
    let started = std::time::Instant::now();
    match member.content_facts_at(member.revision, false, pacer).await {
        Ok((content, _)) => {
            tracing::info!(
                revision = content.revision,
                keys = content.keys,
                prefixes = content.prefixes.len(),
                seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                "key counts read"
            );
            Some(content)
        }
        Err(e) if e.compacted => {
            tracing::warn!(
                endpoint = %e.endpoint,
                revision = e.revision,
                "key counts not recorded: revision {} was compacted while the snapshot streamed (the cluster keeps less history than this backup took; kube-apiserver's --etcd-compaction-interval, etcd's --auto-compaction-retention); the snapshot is complete, and `drill` will check its revision and encrypted values but not the key counts",
                e.revision
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "key counts not recorded; `drill` will check less");
            None
        }
    }
}

/// Streams the snapshot from `member`; when the stream fails, the next healthy member is
/// tried. Returns the member that served it.
async fn ship_etcd_snapshot(
    etcd: &EtcdSource,
    member: EtcdMember,
    repo: &Repository,
    claim: &mut Claim,
    encoding: Encoding,
) -> anyhow::Result<(Artifact, SourceInfo, EtcdMember)> {
    let mut index = etcd
        .endpoints
        .iter()
        .position(|e| *e == member.endpoint)
        .unwrap_or(0);
    let mut member = member;
    loop {
        let source = member.source_info();
        let endpoint = member.endpoint.clone();
        let outcome = match member.snapshot().await {
            Ok((reader, pacer)) => {
                let mut reader = SyncIoBridge::new(reader);
                let upload = repo.upload(claim, ArtifactKind::Snapshot).await?;
                let shipped = pipeline::ship(upload, encoding.clone(), move |w| {
                    io::copy(&mut reader as &mut dyn Read, w)
                })
                .await
                .map_err(anyhow::Error::from);
                match shipped {
                    // Committed only when the member kept its quorum to the end.
                    Ok((shipped, _)) => pacer
                        .finish()
                        .await
                        .map(|facts| (shipped, facts))
                        .map_err(anyhow::Error::from),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e.into()),
        };
        match outcome {
            Ok((shipped, facts)) => {
                let mut source = source;
                if let SourceInfo::Etcd { pacing, .. } = &mut source {
                    *pacing = Some(facts);
                }
                return Ok((
                    repo.artifact(claim, ArtifactKind::Snapshot, shipped),
                    source,
                    member,
                ));
            }
            Err(e)
                if e.downcast_ref::<ShipError>()
                    .is_some_and(|s| matches!(s, ShipError::Sink(_))) =>
            {
                return Err(e.context("uploading the snapshot"));
            }
            Err(e) => {
                tracing::warn!(%endpoint, error = %format!("{e:#}"), "snapshot failed; trying the next member");
                if index + 1 >= etcd.endpoints.len() {
                    return Err(e.context(format!(
                        "snapshot from {endpoint} failed and no other endpoint is left"
                    )));
                }
                let (next, next_member) =
                    next_healthy(etcd, index + 1).await.with_context(|| {
                        format!(
                            "snapshot from {endpoint} failed ({e:#}), and no other member is usable"
                        )
                    })?;
                index = next;
                member = next_member;
            }
        }
    }
}

/// [`first_healthy`] for a failover: when the member that died was the leader, the others
/// know no leader until they have elected one (a second or two), so they are asked again
/// for up to `timeout` before the backup gives up.
async fn next_healthy(etcd: &EtcdSource, start: usize) -> anyhow::Result<(usize, EtcdMember)> {
    let deadline = tokio::time::Instant::now() + etcd.timeout;
    loop {
        match first_healthy(etcd, start).await {
            Ok(found) => return Ok(found),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = %format!("{e:#}"), "no other member is usable yet (a leader election?); asking again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The first endpoint from `start` on that answers a status request.
pub async fn first_healthy(etcd: &EtcdSource, start: usize) -> anyhow::Result<(usize, EtcdMember)> {
    let mut failures = Vec::new();
    for (i, endpoint) in etcd.endpoints.iter().enumerate().skip(start) {
        match EtcdMember::connect(etcd, endpoint).await {
            Ok(member) => {
                tracing::info!(%endpoint, member_id = %format!("{:x}", member.member_id), version = %member.version, db_size = member.db_size, "using etcd member");
                return Ok((i, member));
            }
            Err(e) => {
                tracing::warn!(error = %e, "etcd member unavailable");
                failures.push(e.to_string());
            }
        }
    }
    Err(anyhow!(
        "no etcd endpoint answered ({}); check source.etcd.endpoints, the certificates and that etcd is running",
        failures.join("; ")
    ))
}

/// cluster-backup.sh's guard: no backup while the kube-apiserver, kube-controller-manager,
/// kube-scheduler or etcd operator is rolling out a revision (the snapshot and the static
/// resources could then belong to different revisions). With `force`, the reasons that
/// make the backup dirty.
async fn guard_settled_operators(
    member: &mut EtcdMember,
    force: bool,
) -> anyhow::Result<Vec<String>> {
    let unsettled = member
        .unsettled_operators()
        .await
        .context("reading the ClusterOperator objects")?;
    if unsettled.is_empty() || force {
        if !unsettled.is_empty() {
            tracing::warn!(operators = %unsettled.join("; "), "operators not settled; taking a dirty backup (--force)");
        }
        return Ok(unsettled
            .into_iter()
            .map(|u| format!("taken with --force while {u}"))
            .collect());
    }
    Err(Refused::new(
        Refusal::OperatorsProgressing,
        format!(
            "cluster operators are not settled ({}): a reliable backup needs no rollout in progress, as cluster-backup.sh requires. Wait for the rollout, or pass --force for a backup marked dirty",
            unsettled.join("; ")
        ),
    )
    .into())
}

/// The platform version for shipped files, from etcd when it answers (best effort).
async fn platform_facts(etcd: &EtcdSource) -> ClusterFacts {
    match first_healthy(etcd, 0).await {
        Ok((_, mut member)) => member.cluster_facts().await,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "etcd unavailable: the platform version is not recorded");
            ClusterFacts::default()
        }
    }
}

fn guard_fresh_cluster(facts: &ClusterFacts, force: bool) -> anyhow::Result<()> {
    let Some(installed_at) = facts.installed_at else {
        return Ok(());
    };
    let age = Utc::now() - installed_at;
    if age < FRESH_CLUSTER && !force {
        return Err(Refused::new(
            Refusal::FreshCluster,
            format!(
                "the cluster was installed {} h ago; OpenShift rotates its certificates in the first 24 h and a backup taken now would not restore. Wait until {} or pass --force",
                age.num_hours(),
                installed_at
                    .checked_add_signed(FRESH_CLUSTER)
                    .map_or_else(|| "later".to_string(), |t| t.to_rfc3339())
            ),
        )
        .into());
    }
    Ok(())
}
