//! `restore`: the `snapshot_<ts>.db` + `static_kuberesources_<ts>.tar.gz` pair that
//! OpenShift's cluster-restore.sh takes, checked before it gets its final name.

use std::fs::OpenOptions;
use std::io::{self, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Targets;
use crate::cli::RestoreArgs;
use crate::config::Config;
use crate::error::{Refused, UsageError};
use crate::manifest::{Artifact, Manifest};
use crate::pipeline::{Identities, fetch};

pub async fn run(config: &Config, args: &RestoreArgs) -> anyhow::Result<()> {
    let identities = Identities::load(&args.identities)?;
    let targets = Targets::open(config)?;
    let id = args.selection.id.as_deref();
    let manifest = if id.is_none() && config.signing.allowed_signers.is_some() {
        crate::signing::newest_trusted(config, &targets.snapshot).await?
    } else {
        let manifest = super::verify::select(config, &targets, id).await?;
        crate::signing::require_signed(config, &targets.snapshot, &manifest).await?;
        manifest
    };
    guard_version(&manifest, args.expect_version.as_deref(), args.force)?;

    let snapshot = &manifest.artifacts.snapshot;
    let snapshot_identity = identities.for_artifact(snapshot).ok_or_else(|| {
        UsageError(format!(
            "no --identity opens the snapshot of {}: it is encrypted to {}",
            manifest.id,
            snapshot.encryption.recipients.join(", ")
        ))
    })?;
    let static_part = match (&manifest.artifacts.static_resources, args.snapshot_only) {
        (Some(artifact), false) => {
            let identity = identities.for_artifact(artifact).ok_or_else(|| {
                UsageError(format!(
                    "no --identity opens the static resources of {} (encrypted to {}); pass that identity too, or --snapshot-only to restore just the snapshot",
                    manifest.id,
                    artifact.encryption.recipients.join(", ")
                ))
            })?;
            Some((artifact, identity))
        }
        (None, false) => {
            return Err(UsageError(format!(
                "backup {} has no static resources archive; pass --snapshot-only to restore just the snapshot",
                manifest.id
            ))
            .into());
        }
        (_, true) => None,
    };

    std::fs::create_dir_all(&args.to)
        .with_context(|| format!("creating --to directory {}", args.to.display()))?;
    let ts = manifest.restore_timestamp();
    let snapshot_file = Staged::new(&args.to, &format!("snapshot_{ts}.db"))?;
    let static_file = match &static_part {
        Some(_) => Some(Staged::new(
            &args.to,
            &format!("static_kuberesources_{ts}.tar.gz"),
        )?),
        None => None,
    };

    let result = async {
        restore_artifact(
            &targets,
            "snapshot",
            snapshot,
            snapshot_identity,
            &snapshot_file,
            false,
        )
        .await?;
        if let (Some((artifact, identity)), Some(file)) = (static_part, &static_file) {
            restore_artifact(&targets, "static_resources", artifact, identity, file, true).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        snapshot_file.discard();
        if let Some(f) = &static_file {
            f.discard();
        }
        return Err(e);
    }
    // Both checked: now, and only now, they get their final names.
    snapshot_file.commit()?;
    println!("{}", snapshot_file.path.display());
    if let Some(f) = static_file {
        f.commit()?;
        println!("{}", f.path.display());
    }
    tracing::info!(id = %manifest.id, dir = %args.to.display(), "restored and verified; run cluster-restore.sh with this directory");
    Ok(())
}

/// The same z-stream (4.y.z) rule of the OpenShift restore documentation.
fn guard_version(manifest: &Manifest, expected: Option<&str>, force: bool) -> anyhow::Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let recorded = manifest.platform_version.as_deref();
    if recorded == Some(expected) {
        return Ok(());
    }
    let problem = format!(
        "backup {} is from platform version {}, not {expected}: OpenShift restores only from the same z-stream release",
        manifest.id,
        recorded.unwrap_or("(not recorded)")
    );
    if force {
        tracing::warn!("{problem}; restoring anyway (--force)");
        Ok(())
    } else {
        Err(Refused(format!(
            "{problem}; pick a backup of {expected}, or pass --force"
        ))
        .into())
    }
}

async fn restore_artifact(
    targets: &Targets,
    name: &str,
    artifact: &Artifact,
    identity: age::x25519::Identity,
    staged: &Staged,
    gzip: bool,
) -> anyhow::Result<()> {
    // Owner-only: the snapshot names every resource and the tarball holds the encryption keys.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged.partial)
        .with_context(|| format!("creating {}", staged.partial.display()))?;
    let etcd_trailer = name == "snapshot";
    fetch(
        targets.for_artifact(name),
        artifact,
        Some(identity),
        etcd_trailer,
        move |reader| {
            let out = BufWriter::new(file);
            let out = if gzip {
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                io::copy(reader, &mut gz)?;
                gz.finish()?
            } else {
                let mut out = out;
                io::copy(reader, &mut out)?;
                out
            };
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()
        },
    )
    .await
    .map_err(anyhow::Error::from)
    .with_context(|| format!("restoring {name} of {}", artifact.key))?;
    Ok(())
}

/// A file written under a hidden `.partial` name and renamed once checked.
struct Staged {
    path: PathBuf,
    partial: PathBuf,
}

impl Staged {
    fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let path = dir.join(name);
        if path.exists() {
            return Err(UsageError(format!(
                "{} already exists; restore into an empty directory or move it away",
                path.display()
            ))
            .into());
        }
        let partial = dir.join(format!(".{name}.partial"));
        // A leftover from an interrupted restore is ours to replace.
        let _ = std::fs::remove_file(&partial);
        Ok(Self { path, partial })
    }

    fn commit(&self) -> anyhow::Result<()> {
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("renaming to {}", self.path.display()))
    }

    fn discard(&self) {
        let _ = std::fs::remove_file(&self.partial);
    }
}
