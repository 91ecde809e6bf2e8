//! `restore`: the `snapshot_<ts>.db` + `static_kuberesources_<ts>.tar.gz` pair that
//! OpenShift's cluster-restore.sh takes, checked before it gets its final name; or, with
//! `--data-dir`, an etcd member data directory written by the stock `etcdutl snapshot
//! restore` from the verified snapshot (what OpenShift's restore pod and a kubeadm restore do).

use std::fs::OpenOptions;
use std::io::{self, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::drill::scratch::{MemberSpec, RestoreTool, ScratchDir};
use crate::error::{IntegrityError, Refusal, Refused, UsageError};
use crate::manifest::{Artifact, ArtifactKind, Manifest, SourceInfo};
use crate::pipeline::fetch;
use crate::repo::Repository;
use crate::settings::{MemberRestore, RestoreInto, RestoreSettings};
use crate::source::static_resources::check_archive;
use crate::telemetry::outln;

pub async fn run(config: &Config, args: &RestoreSettings) -> anyhow::Result<()> {
    let identities = &args.identities;
    let repo = Repository::reading(config, args.replica.as_deref())?;
    let (to, snapshot_only) = match &args.into {
        RestoreInto::DataDir(member) => {
            // The directory and the tool are checked before anything is read.
            let tool = prepare_member(member)?;
            let (manifest, identity) = selected(&repo, args).await?;
            return restore_member(&repo, &manifest, identity, member, &tool).await;
        }
        RestoreInto::Pair { to, snapshot_only } => (to, *snapshot_only),
    };
    let (manifest, snapshot_identity) = selected(&repo, args).await?;
    let snapshot = &manifest.artifacts.snapshot;
    let static_part = match (&manifest.artifacts.static_resources, snapshot_only) {
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
    refuse_other_pairs(to)?;
    std::fs::create_dir_all(to)
        .with_context(|| format!("creating --to directory {}", to.display()))?;
    let snapshot_file = Staged::new(to, &format!("snapshot_{ts}.db"))?;
    let static_file = match &static_part {
        Some(_) => Some(Staged::new(
            to,
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
    outln!("{}", snapshot_file.path.display());
    match static_file {
        Some(f) => {
            f.commit()?;
            outln!("{}", f.path.display());
            tracing::info!(id = %manifest.id, dir = %to.display(), "restored and verified; run cluster-restore.sh with this directory");
        }
        None => tracing::warn!(
            id = %manifest.id,
            dir = %to.display(),
            "restored and verified the snapshot only: this directory is NOT input for cluster-restore.sh, which needs the static_kuberesources_<ts>.tar.gz of the same backup (it would stop etcd and then fail to untar). Use it with `etcdctl snapshot restore`, or restore again with the keys identity"
        ),
    }
    Ok(())
}

/// The selected backup (past the version guard) and the identity that opens its snapshot.
async fn selected(
    repo: &Repository,
    args: &RestoreSettings,
) -> anyhow::Result<(Manifest, age::x25519::Identity)> {
    let manifest = repo.select(&args.selection).await?;
    guard_version(&manifest, args.expect_version.as_deref(), args.force)?;
    let snapshot = &manifest.artifacts.snapshot;
    let identity = args.identities.for_artifact(snapshot).ok_or_else(|| {
        UsageError(format!(
            "no --identity opens the snapshot of {}: it is encrypted to {}",
            manifest.id,
            snapshot.encryption.recipients.join(", ")
        ))
    })?;
    Ok((manifest, identity))
}

/// Refuses (exit 4) a `--data-dir` that holds anything: etcd would start from what is
/// there, or the restore would mix with it. Then finds the restore tool, and checks that
/// it takes `--bump-revision` when that is asked. Nothing is read or written before.
fn prepare_member(member: &MemberRestore) -> anyhow::Result<RestoreTool> {
    let dir = &member.data_dir;
    if let Some(found) = data_dir_contents(dir)? {
        return Err(Refused::new(
            Refusal::DirectoryInUse,
            format!(
                "--data-dir {} is not empty (it holds {found}): etcd would start from what is there. Stop etcd and move that directory's contents away (OpenShift's cluster-restore.sh and kubeadm's guide move /var/lib/etcd aside), or pick another directory; nothing was written",
                dir.display()
            ),
        )
        .into());
    }
    let tool = RestoreTool::find(member.etcd_bin_dir.as_deref())?;
    if member.bump_revision.is_some() {
        tool.check_bump_revision()?;
    }
    tracing::info!(tool = %tool.path.display(), version = %tool.version, "restore tool");
    Ok(tool)
}

/// What a data directory holds (a few names), or None when it is absent or empty.
fn data_dir_contents(dir: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("--data-dir {}", dir.display())),
        Ok(m) if !m.is_dir() && !m.file_type().is_symlink() => {
            return Ok(Some("no directory: it is a file".into()));
        }
        Ok(_) => {}
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading --data-dir {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .take(6)
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    names.sort();
    if names.len() > 5 {
        names.truncate(5);
        names.push("…".into());
    }
    Ok(Some(names.join(", ")))
}

/// `restore --data-dir`: the snapshot is decoded and verified (hash trailer included) into
/// a private directory beside DIR, restored there by the stock tool, and moved into DIR
/// only when the tool succeeded; the decoded snapshot is removed either way.
async fn restore_member(
    repo: &Repository,
    manifest: &Manifest,
    identity: age::x25519::Identity,
    member: &MemberRestore,
    tool: &RestoreTool,
) -> anyhow::Result<()> {
    let snapshot = &manifest.artifacts.snapshot;
    let dir = &member.data_dir;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // The decoded snapshot and the restored copy, about its size each.
    let work = ScratchDir::beside(dir, snapshot.plaintext.size.saturating_mul(2))?;
    let staged = Staged::new(&work.path, "snapshot.db")?;
    restore_artifact(
        repo,
        manifest,
        ArtifactKind::Snapshot,
        snapshot,
        identity,
        &staged,
    )
    .await?;
    staged.commit()?;
    let restored = work.path.join("data");
    tool.restore(
        &staged.path,
        &MemberSpec {
            data_dir: &restored,
            name: &member.name,
            initial_cluster: &member.initial_cluster,
            initial_advertise_peer_urls: &member.initial_advertise_peer_urls,
            initial_cluster_token: member.initial_cluster_token.as_deref(),
            bump_revision: member.bump_revision,
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "restoring backup {} into a data directory: {e}",
            manifest.id
        )
    })?;
    staged.discard_committed();
    move_into(&restored, dir)?;
    drop(work);
    outln!("{}", dir.display());
    let revision = match &manifest.source {
        SourceInfo::Etcd { revision, .. } => Some(*revision),
        SourceInfo::BackupDir { .. } => manifest.content.as_ref().map(|c| c.revision),
    };
    tracing::info!(
        id = %manifest.id,
        dir = %dir.display(),
        recorded_revision = ?revision,
        bump_revision = ?member.bump_revision,
        tool = %tool.path.display(),
        "restored the verified snapshot into an etcd data directory; start etcd on it with the same --name, --initial-cluster and --initial-advertise-peer-urls"
    );
    Ok(())
}

/// Moves the restored data directory's contents into `dir`: one rename when `dir` is
/// absent, else entry by entry (a mount point such as /var/lib/etcd stays in place).
fn move_into(restored: &Path, dir: &Path) -> anyhow::Result<()> {
    let moving = || format!("moving the restored data into {}", dir.display());
    if data_dir_contents(dir)?.is_some() {
        anyhow::bail!(
            "{} was filled while the restore ran; the restored data is left out of it",
            dir.display()
        );
    }
    if !dir.exists() {
        return std::fs::rename(restored, dir).with_context(moving);
    }
    for entry in std::fs::read_dir(restored).with_context(moving)? {
        let entry = entry.with_context(moving)?;
        std::fs::rename(entry.path(), dir.join(entry.file_name())).with_context(moving)?;
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

    /// Removes the file under its final name (a decoded snapshot no longer needed).
    fn discard_committed(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
