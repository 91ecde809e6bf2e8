//! `backup`: one backup now, committed by its manifest, then retention.

use std::io::{self, Read};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use chrono::Utc;
use tokio_util::io::SyncIoBridge;

use super::Targets;
use crate::cli::BackupArgs;
use crate::config::{Config, EtcdSource, SnapshotSource};
use crate::error::Refused;
use crate::manifest::{Artifact, Artifacts, FORMAT_VERSION, Manifest, SourceInfo};
use crate::pipeline::{self, Encoding, ShipError};
use crate::source::backup_dir::{self, BackupDirPair};
use crate::source::content::ContentFacts;
use crate::source::etcd::{ClusterFacts, EtcdMember};
use crate::source::static_resources;
use crate::store::catalog;
use crate::store::layout::{IN_PROGRESS_OBJECT, MANIFEST_OBJECT, SNAPSHOT_OBJECT, STATIC_OBJECT};
use crate::store::lock::BackupLock;
use crate::store::repo::{CommitError, claim_id, commit};
use crate::store::{Target, lock};
use crate::telemetry;

/// OpenShift: certificates rotate during the first day; a backup from then cannot restore.
const FRESH_CLUSTER: chrono::TimeDelta = chrono::TimeDelta::hours(24);

pub async fn run(config: &Config, args: &BackupArgs) -> anyhow::Result<()> {
    let window = args
        .skip_if_newer_than
        .map(|w| crate::duration::bounded_flag("--skip-if-newer-than", w))
        .transpose()?;
    let targets = Targets::open(config)?;
    let not_before = window.map(|window| {
        Utc::now() - chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX)
    });
    let manifest = execute(config, &targets, args.force, not_before).await?;
    if args.json {
        println!("{}", manifest.to_json());
    } else {
        println!("{}", manifest.id);
    }
    if !args.no_prune
        && let Err(e) = prune_after(config, &targets, &manifest.id).await
    {
        // The backup is committed; a refused delete (object lock) must not mark it failed.
        tracing::error!(error = %format!("{e:#}"), "pruning after the backup failed; run `etcd-offsite prune` for details");
    }
    Ok(())
}

/// One backup under the cluster's lock. With `not_before`, a backup that another host
/// started at or after that time makes this one unnecessary (refused, exit 4): several
/// control-plane hosts on one schedule produce one backup.
pub async fn execute(
    config: &Config,
    targets: &Targets,
    force: bool,
    not_before: Option<chrono::DateTime<Utc>>,
) -> anyhow::Result<Manifest> {
    let lock = lock::acquire(
        &targets.snapshot,
        &config.cluster,
        config.targets.lock_stale_after,
    )
    .await?;
    let result = match already_taken(config, targets, not_before).await {
        Ok(()) => take_backup(config, targets, force, &lock).await,
        Err(e) => Err(e),
    };
    lock.release().await;
    result
}

/// Refuses when the newest complete backup already covers this run: one started at or
/// after `not_before`, or (for cluster-backup.sh files) the same pair.
async fn already_taken(
    config: &Config,
    targets: &Targets,
    not_before: Option<chrono::DateTime<Utc>>,
) -> anyhow::Result<()> {
    // Only the newest manifest matters; an unreadable one does not stop a backup.
    let newest = catalog::newest_manifest(&targets.snapshot, &config.cluster).await?;
    let Some(newest) = newest else {
        return Ok(());
    };
    if let Some(not_before) = not_before
        && newest.started_at >= not_before
    {
        return Err(Refused(format!(
            "backup {} was taken at {} by {}; nothing to do for this run",
            newest.id,
            newest.started_at.to_rfc3339(),
            if newest.host.is_empty() {
                "another run"
            } else {
                &newest.host
            }
        ))
        .into());
    }
    if let (SnapshotSource::BackupDir { dir, .. }, SourceInfo::BackupDir { timestamp, .. }) =
        (&config.source, &newest.source)
        && let Ok(pair) = backup_dir::newest_pair(dir)
        && pair.timestamp == *timestamp
    {
        return Err(Refused(format!(
            "the newest cluster-backup.sh pair in {} ({timestamp}) was already shipped as backup {}; run cluster-backup.sh for a newer one",
            dir.display(),
            newest.id
        ))
        .into());
    }
    Ok(())
}

/// Retention after a backup, when a policy is configured.
pub async fn prune_after(config: &Config, targets: &Targets, id: &str) -> anyhow::Result<()> {
    let Some(policy) = &config.retention else {
        return Ok(());
    };
    let report = super::prune::apply(config, targets, policy, false)
        .await
        .with_context(|| format!("backup {id} completed, but pruning failed"))?;
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "backup {id} completed, but {} object(s) could not be pruned: {}",
            report.failures.len(),
            report.failures[0].reason
        ))
    }
}

/// What the snapshot is read from, prepared before anything is uploaded.
enum Prepared {
    Etcd {
        member: Box<EtcdMember>,
        facts: ClusterFacts,
        content: Option<ContentFacts>,
    },
    BackupDir {
        pair: BackupDirPair,
        facts: ClusterFacts,
    },
}

async fn take_backup(
    config: &Config,
    targets: &Targets,
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
            // etcd's latency before anything else is read: the baseline that the key
            // scan and the stream are paced to.
            member.start_pacing().await?;
            // Best effort: a backup is worth more than its description.
            let content = match member.content_facts_at(member.revision, false).await {
                Ok((content, _)) => Some(content),
                Err(e) => {
                    tracing::warn!(error = %e, "key counts not recorded; `drill` will check less");
                    None
                }
            };
            Prepared::Etcd {
                member: Box::new(member),
                facts,
                content,
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

    let started_at = Utc::now();
    let id = claim_id(&targets.snapshot, &config.cluster, started_at).await?;
    tracing::info!(%id, target = targets.snapshot.url(), "backup started");
    let mut written: Vec<(&Target, String)> = vec![(
        &targets.snapshot,
        format!("{}/{id}/{IN_PROGRESS_OBJECT}", config.cluster),
    )];
    let run = ThisRun {
        id: &id,
        started_at,
        lock,
    };
    let result = write_backup(config, targets, run, prepared, dirty_reasons, &mut written).await;
    // The marker goes either way; on failure so does everything this run wrote.
    let cleanup: &[(&Target, String)] = match &result {
        Ok(_) => &written[..1],
        Err(_) => &written[..],
    };
    for (target, key) in cleanup {
        if let Err(e) = target.delete(key).await {
            tracing::warn!(error = %e, "cleanup failed; prune removes leftovers after the grace period");
        }
    }
    result
}

/// The backup this run writes: its claimed id, start time and the lock it holds.
struct ThisRun<'a> {
    id: &'a str,
    started_at: chrono::DateTime<Utc>,
    lock: &'a BackupLock,
}

async fn write_backup<'t>(
    config: &Config,
    targets: &'t Targets,
    run: ThisRun<'_>,
    prepared: Prepared,
    dirty_reasons: Vec<String>,
    written: &mut Vec<(&'t Target, String)>,
) -> anyhow::Result<Manifest> {
    let ThisRun {
        id,
        started_at,
        lock,
    } = run;
    let cluster = &config.cluster;
    let static_key = format!("{cluster}/{id}/{STATIC_OBJECT}");
    let snapshot_key = format!("{cluster}/{id}/{SNAPSHOT_OBJECT}");

    // Each artifact is listed for the cleanup of a failed run before its upload starts: an
    // upload whose completion was answered with an error (a lost answer) may have landed.
    if matches!(prepared, Prepared::BackupDir { .. }) || config.static_resources.is_some() {
        written.push((&targets.static_resources, static_key.clone()));
    }
    let static_artifact = match (&prepared, &config.static_resources) {
        (Prepared::BackupDir { pair, .. }, _) => {
            let tarball = pair.static_tarball.clone();
            Some(
                ship_static(config, &targets.static_resources, &static_key, move |w| {
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
                ship_static(config, &targets.static_resources, &static_key, move |w| {
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
    written.push((&targets.snapshot, snapshot_key.clone()));
    let (snapshot_artifact, source, facts, content) = match prepared {
        Prepared::BackupDir { pair, facts } => {
            let file = pair.snapshot.clone();
            let (artifact, _) = pipeline::ship(
                &targets.snapshot,
                &snapshot_key,
                snapshot_encoding,
                move |w| io::copy(&mut std::fs::File::open(&file)?, w),
            )
            .await
            .with_context(|| format!("shipping {}", pair.snapshot.display()))?;
            (artifact, pair.source_info(), facts, None)
        }
        Prepared::Etcd {
            member,
            facts,
            content,
        } => {
            let SnapshotSource::Etcd(etcd) = &config.source else {
                unreachable!("prepared from an etcd source");
            };
            let (artifact, source) = ship_etcd_snapshot(
                etcd,
                *member,
                &targets.snapshot,
                &snapshot_key,
                snapshot_encoding,
            )
            .await?;
            // After a failover the snapshot came from another member, which may lag.
            let content = content.filter(|c| match &source {
                SourceInfo::Etcd { revision, .. } => *revision >= c.revision,
                SourceInfo::BackupDir { .. } => false,
            });
            (artifact, source, facts, content)
        }
    };

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        id: id.to_string(),
        cluster: cluster.clone(),
        started_at,
        finished_at: Utc::now(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        host: lock::hostname(),
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
    let manifest_key = format!("{cluster}/{id}/{MANIFEST_OBJECT}");
    let body = Bytes::from(manifest.to_json());
    if let Some(key) = &config.signing.key {
        // Written before the manifest: a committed backup is never unsigned.
        let signature_key = format!("{cluster}/{id}/{}", crate::signing::SIGNATURE_OBJECT);
        let signature = crate::signing::Signer::load(key)?.sign(&body)?;
        written.push((&targets.snapshot, signature_key.clone()));
        commit(&targets.snapshot, &signature_key, Bytes::from(signature))
            .await
            .map_err(CommitError::into_inner)?;
    }
    // A run whose lock was taken over (it could not renew in time) must not commit.
    lock.ensure_held().await?;
    if manifest.artifacts.static_resources.is_some() && targets.split() {
        // Before the commit, an unclear outcome is simply a failure: cleanup removes the copy.
        written.push((&targets.static_resources, manifest_key.clone()));
        commit(&targets.static_resources, &manifest_key, body.clone())
            .await
            .map_err(CommitError::into_inner)?;
    }
    // The commit point: written last, create-only.
    match commit(&targets.snapshot, &manifest_key, body).await {
        Ok(()) => {}
        Err(CommitError::Unknown(e)) => {
            // The manifest may have landed: deleting the artifacts could leave a listed
            // backup without them. Leave everything for verify (or prune) to judge.
            written.clear();
            return Err(e.context(format!(
                "committing backup {id}: whether its manifest was written is unknown; the artifacts are kept. Run `etcd-offsite verify {id}`"
            )));
        }
        Err(e) => return Err(e.into_inner()),
    }
    tracing::info!(
        %id,
        snapshot_bytes = manifest.artifacts.snapshot.plaintext.size,
        stored_bytes = manifest.stored_size(),
        seconds = (manifest.finished_at - started_at).num_milliseconds() as f64 / 1000.0,
        "backup complete"
    );
    Ok(manifest)
}

async fn ship_static<F>(
    config: &Config,
    target: &Target,
    key: &str,
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
    let (artifact, _) = pipeline::ship(target, key, encoding, produce)
        .await
        .context("shipping the static resources")?;
    Ok(artifact)
}

/// Streams the snapshot from `member`; when the stream fails, the next healthy member is tried.
async fn ship_etcd_snapshot(
    etcd: &EtcdSource,
    member: EtcdMember,
    target: &Target,
    key: &str,
    encoding: Encoding,
) -> anyhow::Result<(Artifact, SourceInfo)> {
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
                let shipped = pipeline::ship(target, key, encoding.clone(), move |w| {
                    io::copy(&mut reader as &mut dyn Read, w)
                })
                .await
                .map_err(anyhow::Error::from);
                match shipped {
                    // Committed only when the member kept its quorum to the end.
                    Ok((artifact, _)) => pacer
                        .finish()
                        .await
                        .map(|facts| (artifact, facts))
                        .map_err(anyhow::Error::from),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e.into()),
        };
        match outcome {
            Ok((artifact, facts)) => {
                let mut source = source;
                if let SourceInfo::Etcd { pacing, .. } = &mut source {
                    *pacing = Some(facts);
                }
                return Ok((artifact, source));
            }
            Err(e)
                if e.downcast_ref::<ShipError>()
                    .is_some_and(|s| matches!(s, ShipError::Store(_))) =>
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
pub(super) async fn first_healthy(
    etcd: &EtcdSource,
    start: usize,
) -> anyhow::Result<(usize, EtcdMember)> {
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
    Err(Refused(format!(
        "cluster operators are not settled ({}): a reliable backup needs no rollout in progress, as cluster-backup.sh requires. Wait for the rollout, or pass --force for a backup marked dirty",
        unsettled.join("; ")
    ))
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
        return Err(Refused(format!(
            "the cluster was installed {} h ago; OpenShift rotates its certificates in the first 24 h and a backup taken now would not restore. Wait until {} or pass --force",
            age.num_hours(),
            (installed_at + FRESH_CLUSTER).to_rfc3339()
        ))
        .into());
    }
    Ok(())
}
