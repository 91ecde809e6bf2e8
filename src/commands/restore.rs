//! `restore`: the `snapshot_<ts>.db` + `static_kuberesources_<ts>.tar.gz` pair that
//! OpenShift's cluster-restore.sh takes, checked before it gets its final name.

use std::fs::OpenOptions;
use std::io::{self, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::error::{IntegrityError, Refusal, Refused, UsageError};
use crate::manifest::{Artifact, ArtifactKind, Manifest};
use crate::pipeline::fetch;
use crate::repo::Repository;
use crate::settings::RestoreSettings;
use crate::source::static_resources::check_archive;

pub async fn run(config: &Config, args: &RestoreSettings) -> anyhow::Result<()> {
    let identities = &args.identities;
    let repo = Repository::primary(config)?;
    let manifest = repo.select(&args.selection).await?;
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

    let ts = manifest.restore_timestamp();
    refuse_other_pairs(&args.to)?;
    std::fs::create_dir_all(&args.to)
        .with_context(|| format!("creating --to directory {}", args.to.display()))?;
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
            &repo,
            &manifest,
            ArtifactKind::Snapshot,
            snapshot,
            snapshot_identity,
            &snapshot_file,
        )
        .await?;
        if let (Some((artifact, identity)), Some(file)) = (static_part, &static_file) {
            restore_artifact(
                &repo,
                &manifest,
                ArtifactKind::StaticResources,
                artifact,
                identity,
                file,
            )
            .await?;
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
    match static_file {
        Some(f) => {
            f.commit()?;
            println!("{}", f.path.display());
            tracing::info!(id = %manifest.id, dir = %args.to.display(), "restored and verified; run cluster-restore.sh with this directory");
        }
        None => tracing::warn!(
            id = %manifest.id,
            dir = %args.to.display(),
            "restored and verified the snapshot only: this directory is NOT input for cluster-restore.sh, which needs the static_kuberesources_<ts>.tar.gz of the same backup (it would stop etcd and then fail to untar). Use it with `etcdctl snapshot restore`, or restore again with the keys identity"
        ),
    }
    Ok(())
}

/// cluster-restore.sh picks `snapshot_*.db` and `static_kuberesources_*.tar.gz` separately,
/// each with `ls -v | tail -1`: next to another pair, it could start the control plane from
/// one backup's snapshot and another's keys. Refused before anything is written.
fn refuse_other_pairs(dir: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("reading --to directory {}", dir.display()));
        }
    };
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            (name.starts_with("snapshot_") && name.ends_with(".db"))
                || (name.starts_with("static_kuberesources_") && name.ends_with(".tar.gz"))
        })
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    Err(Refused::new(
        Refusal::DirectoryInUse,
        format!(
            "{} already holds {}: cluster-restore.sh picks snapshot_*.db and static_kuberesources_*.tar.gz separately (each with `ls -v | tail -1`), so another pair beside this one could be mixed with it. Restore into an empty directory, or move those files away; nothing was written",
            dir.display(),
            found.join(", ")
        ),
    )
    .into())
}

/// The same z-stream (4.y.z) rule of the OpenShift restore documentation.
fn guard_version(manifest: &Manifest, expected: Option<&str>, force: bool) -> anyhow::Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let recorded = manifest.platform_version.as_deref();
    let problem = match &manifest.upgrade {
        // Taken mid-upgrade: some operators ran the old release, some the new one.
        Some(upgrade) => format!(
            "backup {} was taken during an upgrade from {} to {} ({}): it matches neither z-stream release",
            manifest.id,
            upgrade.from.as_deref().unwrap_or("(unknown)"),
            upgrade.to,
            upgrade.state
        ),
        None if recorded == Some(expected) => return Ok(()),
        None => format!(
            "backup {} is from platform version {}, not {expected}: OpenShift restores only from the same z-stream release",
            manifest.id,
            recorded.unwrap_or("(not recorded)")
        ),
    };
    if force {
        tracing::warn!("{problem}; restoring anyway (--force)");
        Ok(())
    } else {
        Err(Refused::new(
            Refusal::VersionMismatch,
            format!("{problem}; pick a backup of {expected}, or pass --force"),
        )
        .into())
    }
}

async fn restore_artifact(
    repo: &Repository,
    manifest: &Manifest,
    kind: ArtifactKind,
    artifact: &Artifact,
    identity: age::x25519::Identity,
    staged: &Staged,
) -> anyhow::Result<()> {
    let keys_archive = kind == ArtifactKind::StaticResources;
    let name = kind.as_str();
    // Owner-only: the snapshot names every resource and the tarball holds the encryption keys.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged.partial)
        .with_context(|| format!("creating {}", staged.partial.display()))?;
    let etcd_trailer = kind == ArtifactKind::Snapshot;
    let stored = repo
        .open_artifact(manifest, kind)
        .await
        .map_err(anyhow::Error::from)
        .with_context(|| format!("restoring {name} of {}", artifact.key))?;
    let fetched = fetch(
        stored,
        artifact,
        Some(identity),
        etcd_trailer,
        move |reader| {
            // Large sequential writes: the snapshot is the recovery's critical path.
            let out = BufWriter::with_capacity(1 << 20, file);
            let (out, archive) = if keys_archive {
                // gzip, as cluster-backup.sh writes it; the tar is read through on the way.
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                let mut tee = Tee {
                    inner: reader,
                    copy: &mut gz,
                };
                let archive = check_archive(&mut tee)?;
                io::copy(&mut tee, &mut io::sink())?;
                (gz.finish()?, archive)
            } else {
                let mut out = out;
                io::copy(reader, &mut out)?;
                (out, Ok(0))
            };
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            Ok(archive)
        },
    )
    .await
    .map_err(anyhow::Error::from)
    .with_context(|| format!("restoring {name} of {}", artifact.key))?;
    if let Some(Err(problem)) = fetched.contents {
        return Err(IntegrityError(format!("{}: {problem}", artifact.key)).into());
    }
    Ok(())
}

/// Copies what is read from `inner` into `copy`.
struct Tee<'a, R: ?Sized, W> {
    inner: &'a mut R,
    copy: &'a mut W,
}

impl<R: io::Read + ?Sized, W: io::Write> io::Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
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
