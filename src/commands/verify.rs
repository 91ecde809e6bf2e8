//! `verify`: every object of a backup is there and matches its manifest; with identities,
//! the contents decrypt, decompress and check out too.

use std::io;

use anyhow::anyhow;
use serde::Serialize;

use super::Targets;
use crate::cli::VerifyArgs;
use crate::config::Config;
use crate::error::{ExitKind, IntegrityError, UsageError, exit_kind};
use crate::manifest::Manifest;
use crate::pipeline::{FetchError, Identities, fetch};
use crate::source::static_resources::check_archive;
use crate::store::catalog::{self, BackupEntry, ManifestProblem, list_backups, read_manifest};
use crate::store::layout::{MANIFEST_OBJECT, id_time};

#[derive(Debug, Serialize)]
struct BackupReport {
    id: String,
    ok: bool,
    artifacts: Vec<ArtifactReport>,
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ArtifactReport {
    artifact: &'static str,
    key: String,
    /// Stored bytes exist and match size and SHA-256.
    stored_ok: bool,
    /// Plaintext checked (decrypted, decompressed, digest, trailer or tar); None = no identity for it.
    contents_ok: Option<bool>,
    detail: Option<String>,
}

pub async fn run(config: &Config, args: &VerifyArgs) -> anyhow::Result<()> {
    let identities = Identities::load(&args.identities)?;
    let targets = Targets::open(config)?;
    let mut reports = Vec::new();
    if args.all {
        for entry in list_backups(&targets.snapshot, &config.cluster).await? {
            match (entry.manifest, entry.problem) {
                (Some(manifest), _) => {
                    let mut report = verify_backup(&targets, &manifest, &identities).await?;
                    signature_problem(config, &targets, &manifest, &mut report).await?;
                    reports.push(report)
                }
                (None, Some(problem)) => reports.push(BackupReport {
                    id: entry.id,
                    ok: false,
                    artifacts: Vec::new(),
                    problems: vec![problem],
                }),
                // No manifest: an interrupted run, not a backup.
                (None, None) => {}
            }
        }
        if reports.is_empty() {
            return Err(UsageError(format!(
                "no backups of cluster {} to verify",
                config.cluster
            ))
            .into());
        }
    } else {
        let manifest = match select(config, &targets, args.id.as_deref()).await {
            Ok(m) => m,
            Err(e) if exit_kind(&e) == ExitKind::Integrity => {
                reports.push(BackupReport {
                    id: args.id.clone().unwrap_or_default(),
                    ok: false,
                    artifacts: Vec::new(),
                    problems: vec![format!("{e:#}")],
                });
                return finish(&reports, args.json);
            }
            Err(e) => return Err(e),
        };
        let mut report = verify_backup(&targets, &manifest, &identities).await?;
        signature_problem(config, &targets, &manifest, &mut report).await?;
        reports.push(report);
    }
    // A wrong identity is a usage error, unless something already failed: that is reported first.
    if !identities.is_empty()
        && reports.iter().all(|r| r.ok)
        && reports
            .iter()
            .flat_map(|r| &r.artifacts)
            .all(|a| a.contents_ok.is_none())
    {
        return Err(UsageError(
            "none of the --identity files opens any artifact of these backups; pass the identity whose recipient the manifest lists".into(),
        )
        .into());
    }
    finish(&reports, args.json)
}

fn finish(reports: &[BackupReport], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(reports)?);
    } else {
        for r in reports {
            println!("{} {}", r.id, if r.ok { "OK" } else { "FAILED" });
            for a in &r.artifacts {
                let contents = match a.contents_ok {
                    Some(true) => "contents ok",
                    Some(false) => "contents FAILED",
                    None => "contents not checked (no identity for it)",
                };
                let stored = if a.stored_ok {
                    "stored ok"
                } else {
                    "stored FAILED"
                };
                println!("  {:<17} {stored}, {contents}", a.artifact);
                if let Some(detail) = &a.detail {
                    println!("    {detail}");
                }
            }
            for p in &r.problems {
                println!("  problem: {p}");
            }
        }
    }
    let failed = reports.iter().filter(|r| !r.ok).count();
    if failed == 0 {
        Ok(())
    } else {
        let first = reports
            .iter()
            .filter(|r| !r.ok)
            .flat_map(|r| {
                r.problems
                    .iter()
                    .chain(r.artifacts.iter().filter_map(|a| a.detail.as_ref()))
            })
            .next()
            .cloned()
            .unwrap_or_default();
        Err(IntegrityError(format!(
            "{failed} of {} backup(s) failed verification: {first}",
            reports.len()
        ))
        .into())
    }
}

/// Fails the report of a backup that `signing.allowed_signers` does not trust.
async fn signature_problem(
    config: &Config,
    targets: &Targets,
    manifest: &Manifest,
    report: &mut BackupReport,
) -> anyhow::Result<()> {
    match crate::signing::require_signed(config, &targets.snapshot, manifest).await {
        Ok(()) => Ok(()),
        Err(e) if exit_kind(&e) == ExitKind::Integrity => {
            report.ok = false;
            report.problems.push(format!("{e:#}"));
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The manifest of `id`, or of the newest complete backup, for commands that act on its
/// contents (restore, drill): with `signing.allowed_signers`, a named backup must be signed
/// by a trusted key (exit 3 otherwise), and "newest" means the newest trusted one.
pub async fn select_trusted(
    config: &Config,
    targets: &Targets,
    id: Option<&str>,
) -> anyhow::Result<Manifest> {
    if id.is_none() && config.signing.allowed_signers.is_some() {
        return crate::signing::newest_trusted(config, &targets.snapshot).await;
    }
    let manifest = select(config, targets, id).await?;
    crate::signing::require_signed(config, &targets.snapshot, &manifest).await?;
    Ok(manifest)
}

/// The manifest of `id`, or of the newest complete backup.
pub async fn select(
    config: &Config,
    targets: &Targets,
    id: Option<&str>,
) -> anyhow::Result<Manifest> {
    // A name that cannot be a backup id is a typo on the command line, not a damaged backup.
    if let Some(id) = id.filter(|id| id_time(id).is_none()) {
        return Err(UsageError(format!(
            "{id:?} is not a backup id (YYYYMMDDTHHMMSSZ, with -NN for a second backup in the same second); run `etcd-offsite list`"
        ))
        .into());
    }
    match id {
        Some(id) => match read_manifest(&targets.snapshot, &config.cluster, id).await {
            Ok(m) => Ok(m),
            Err(ManifestProblem::Store(e)) if e.kind == crate::store::StoreErrorKind::NotFound => {
                Err(UsageError(format!(
                    "backup {id} of cluster {} does not exist (no {MANIFEST_OBJECT}); run `etcd-offsite list`",
                    config.cluster
                ))
                .into())
            }
            // The store refuses to hand it out (permissions, S3 Glacier's 403, Azure's 409 for
            // an archived blob): a damaged backup as far as this tool can tell, not a failure
            // to reach the store.
            Err(ManifestProblem::Store(e))
                if matches!(
                    e.kind,
                    crate::store::StoreErrorKind::Denied | crate::store::StoreErrorKind::AlreadyExists
                ) =>
            {
                Err(IntegrityError(format!(
                    "backup {id} is damaged: its manifest cannot be read ({e}); restore it from the archive tier or fix its permissions, or pick another backup (see `etcd-offsite list`)"
                ))
                .into())
            }
            Err(ManifestProblem::Store(e)) => Err(e.into()),
            Err(invalid @ ManifestProblem::Invalid { .. }) => Err(IntegrityError(invalid.to_string()).into()),
        },
        // The newest directory with a manifest: a broken one is reported, not skipped over.
        None => match newest_with_manifest(targets, &config.cluster).await? {
            Some(BackupEntry { manifest: Some(m), .. }) => Ok(m),
            Some(BackupEntry { id, problem, .. }) => Err(IntegrityError(format!(
                "the newest backup {id} is not usable: {}; pass the id of another backup (see `etcd-offsite list`)",
                problem.unwrap_or_default()
            ))
            .into()),
            None => Err(anyhow!(UsageError(format!("no complete backup of cluster {} yet", config.cluster)))),
        },
    }
}

/// The newest directory with a manifest, read alone (older manifests are not read).
async fn newest_with_manifest(
    targets: &Targets,
    cluster: &str,
) -> anyhow::Result<Option<BackupEntry>> {
    let entries = catalog::list_entries(&targets.snapshot, cluster).await?;
    for mut entry in entries.into_iter().filter(BackupEntry::has_manifest) {
        catalog::load(&targets.snapshot, cluster, &mut entry).await;
        // A manifest deleted since the listing (a prune) leaves neither: look further.
        if entry.manifest.is_some() || entry.problem.is_some() {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

async fn verify_backup(
    targets: &Targets,
    manifest: &Manifest,
    identities: &Identities,
) -> anyhow::Result<BackupReport> {
    let mut report = BackupReport {
        id: manifest.id.clone(),
        ok: true,
        artifacts: Vec::new(),
        problems: Vec::new(),
    };
    for (name, artifact) in manifest.artifacts.iter() {
        let target = targets.for_artifact(name);
        let identity = identities.for_artifact(artifact);
        let checks_contents = identity.is_some();
        let outcome = if name == "snapshot" {
            fetch(target, artifact, identity, true, |r| {
                io::copy(r, &mut io::sink()).map(|_| Ok(0))
            })
            .await
        } else {
            fetch(target, artifact, identity, false, check_archive).await
        };
        let (stored_ok, contents_ok, detail) = match outcome {
            Ok(fetched) => match fetched.contents {
                Some(Err(tar_problem)) => (
                    true,
                    Some(false),
                    Some(format!("{}: {tar_problem}", artifact.key)),
                ),
                Some(Ok(_)) => (true, Some(true), None),
                None => (true, None, None),
            },
            // Stored mismatches are found before the contents are judged.
            Err(FetchError::Stored(e)) => (false, checks_contents.then_some(false), Some(e.0)),
            Err(FetchError::Other(e)) if exit_kind(&e) == ExitKind::Integrity => {
                (true, Some(false), Some(format!("{e:#}")))
            }
            Err(FetchError::Other(e)) => return Err(e),
        };
        report.ok &= stored_ok && contents_ok != Some(false);
        report.artifacts.push(ArtifactReport {
            artifact: name,
            key: artifact.key.clone(),
            stored_ok,
            contents_ok,
            detail,
        });
    }
    if let Some(problem) = check_manifest_copy(targets, manifest).await? {
        report.ok = false;
        report.problems.push(problem);
    }
    Ok(report)
}

/// The keys side carries a copy of the manifest; it must be the same record.
async fn check_manifest_copy(
    targets: &Targets,
    manifest: &Manifest,
) -> anyhow::Result<Option<String>> {
    if manifest.artifacts.static_resources.is_none() || !targets.split() {
        return Ok(None);
    }
    Ok(
        match read_manifest(&targets.static_resources, &manifest.cluster, &manifest.id).await {
            Ok(copy) if copy == *manifest => None,
            Ok(_) => Some(format!(
                "the manifest copy in {} differs from the snapshot target's",
                targets.static_resources.url()
            )),
            Err(ManifestProblem::Store(e)) if e.kind != crate::store::StoreErrorKind::NotFound => {
                return Err(e.into());
            }
            Err(problem) => Some(format!(
                "manifest copy in {}: {problem}",
                targets.static_resources.url()
            )),
        },
    )
}
