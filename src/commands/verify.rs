//! `verify`: every object of a backup is there and matches its manifest; with identities,
//! the contents decrypt, decompress and check out too.

use std::io;

use chrono::Utc;
use serde::Serialize;

use crate::config::Config;
use crate::error::{ExitKind, IntegrityError, UsageError, exit_kind};
use crate::manifest::{ArtifactKind, Manifest};
use crate::pipeline::{FetchError, Identities, fetch};
use crate::repo::{Repository, Selection, Signature, Standing};
use crate::settings::{BackupScope, VerifySettings};
use crate::source::static_resources::check_archive;
use crate::telemetry::outln;

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

pub async fn run(config: &Config, args: &VerifySettings) -> anyhow::Result<()> {
    let identities = &args.identities;
    let repo = Repository::reading(config, args.replica.as_deref())?;
    let mut reports = Vec::new();
    match &args.scope {
        BackupScope::All => {
            let catalog = repo.catalog(Utc::now()).await?;
            for entry in catalog.entries() {
                match &entry.standing {
                    // No manifest: an interrupted run, not a backup.
                    Standing::Incomplete => {}
                    Standing::Damaged(problem) => reports.push(failed(&entry.id, problem.clone())),
                    // Untrusted ones are verified too, and reported as failed.
                    Standing::Trusted | Standing::FutureDated | Standing::Untrusted(_) => {
                        reports.push(verify_one(&repo, &entry.id, identities).await?);
                    }
                }
            }
            if reports.is_empty() {
                return Err(UsageError(format!(
                    "no backups of cluster {} to verify",
                    config.cluster
                ))
                .into());
            }
        }
        BackupScope::One(Selection::Id(id)) => {
            reports.push(verify_one(&repo, id, identities).await?);
        }
        BackupScope::One(Selection::Latest) => match repo.select(&Selection::Latest).await {
            Ok(manifest) => {
                reports.push(verify_backup(&repo, &manifest, identities).await?);
            }
            Err(e) if exit_kind(&e) == ExitKind::Integrity => {
                reports.push(failed("latest", format!("{e:#}")));
                return finish(&reports, args.json);
            }
            Err(e) => return Err(e),
        },
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
        outln!("{}", serde_json::to_string_pretty(reports)?);
    } else {
        for r in reports {
            outln!("{} {}", r.id, if r.ok { "OK" } else { "FAILED" });
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
                outln!("  {:<17} {stored}, {contents}", a.artifact);
                if let Some(detail) = &a.detail {
                    outln!("    {detail}");
                }
            }
            for p in &r.problems {
                outln!("  problem: {p}");
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

/// A backup that could not be verified at all.
fn failed(id: &str, problem: String) -> BackupReport {
    BackupReport {
        id: id.to_string(),
        ok: false,
        artifacts: Vec::new(),
        problems: vec![problem],
    }
}

/// Verifies backup `id`; a damaged manifest, or one that `signing.allowed_signers` does not
/// trust, fails the report (the objects of an untrusted one are checked all the same).
async fn verify_one(
    repo: &Repository,
    id: &str,
    identities: &Identities,
) -> anyhow::Result<BackupReport> {
    let read = match repo.read_manifest(id).await {
        Ok(read) => read,
        Err(e) if exit_kind(&e) == ExitKind::Integrity => return Ok(failed(id, format!("{e:#}"))),
        Err(e) => return Err(e),
    };
    let mut report = verify_backup(repo, &read.manifest, identities).await?;
    if let Signature::Untrusted(why) = read.signature {
        report.ok = false;
        report.problems.push(format!(
            "backup {id} is not trusted: {why}; signing.allowed_signers is set, so only backups signed by a listed key are used"
        ));
    }
    Ok(report)
}

async fn verify_backup(
    repo: &Repository,
    manifest: &Manifest,
    identities: &Identities,
) -> anyhow::Result<BackupReport> {
    let mut report = BackupReport {
        id: manifest.id.clone(),
        ok: true,
        artifacts: Vec::new(),
        problems: Vec::new(),
    };
    for (kind, artifact) in manifest.artifacts.iter() {
        let identity = identities.for_artifact(artifact);
        let checks_contents = identity.is_some();
        let outcome = match repo.open_artifact(manifest, kind).await {
            Ok(stored) if kind == ArtifactKind::Snapshot => {
                fetch(stored, artifact, identity, true, |r| {
                    io::copy(r, &mut io::sink()).map(|_| Ok(0))
                })
                .await
            }
            Ok(stored) => fetch(stored, artifact, identity, false, check_archive).await,
            Err(e) => Err(e),
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
            artifact: kind.as_str(),
            key: artifact.key.clone(),
            stored_ok,
            contents_ok,
            detail,
        });
    }
    if let Some(problem) = repo.manifest_copy_problem(manifest).await? {
        report.ok = false;
        report.problems.push(problem);
    }
    Ok(report)
}
