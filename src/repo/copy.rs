//! Copies of backups into a replica (`copy --to NAME`): the same objects under the same
//! keys in the replica's targets, so the copy is judged there exactly as the original is
//! (the manifest's bytes and its signature travel unchanged).
//!
//! Order, as for a backup: both artifacts (streamed, stopped at the recorded size, checked
//! against the recorded SHA-256 on the way and read back from the replica afterwards),
//! then the signature and drill records, the keys side's manifest copy, and the manifest
//! last, create-only. A copy cut short (a kill, a network failure) leaves no manifest, so
//! readers of the replica ignore it; the next run finds what is already there and whole
//! and copies the rest. A backup whose manifest is already in the replica with the same
//! bytes is skipped; one with other bytes is never overwritten.

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::Repository;
use super::layout::{is_drill_record, name_of, signature_of};
use super::trust::Signature;
use crate::error::IntegrityError;
use crate::manifest::{Digest, Manifest};
use crate::pipeline::{Hasher, relay};
use crate::store::{StoreErrorKind, Target};

/// What copying one backup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Copied {
    Copied,
    /// The replica already holds this backup's manifest, byte for byte.
    AlreadyComplete,
}

impl Repository {
    /// Copies trusted backup `id` into `dest`, a replica of the same cluster.
    pub async fn copy_backup(&self, dest: &Repository, id: &str) -> anyhow::Result<Copied> {
        let key = self.layout.manifest(id);
        let source = &self.sides.snapshot;
        let read = self.read_manifest(id).await?;
        if let Signature::Untrusted(why) = read.signature {
            return Err(IntegrityError(format!(
                "backup {id} is not trusted ({why}): only trusted backups are copied"
            ))
            .into());
        }
        // The exact bytes, for the replica (read again: `read_manifest` keeps the parsed
        // record only); they must be the record just judged.
        let bytes = source.read(&key).await?;
        if Manifest::from_json(&bytes).ok().as_ref() != Some(&read.manifest) {
            anyhow::bail!(
                "the manifest of backup {id} changed while it was copied; run copy again"
            );
        }
        let manifest = read.manifest;
        match dest.sides.snapshot.read(&key).await {
            Ok(there) if there == bytes => return Ok(Copied::AlreadyComplete),
            Ok(_) => {
                return Err(IntegrityError(format!(
                    "replica {} already holds another manifest for backup {id}; it is left as it is: compare it with the primary's and remove the replica's copy of that backup if it is wrong",
                    dest.url()
                ))
                .into());
            }
            Err(e) if e.kind == StoreErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }

        for (kind, artifact) in manifest.artifacts.iter() {
            let object = self.layout.artifact(id, kind);
            let to = dest.sides.for_artifact(kind);
            if holds(to, &object, &artifact.stored).await? {
                tracing::info!(%object, replica = %to.url(), "already copied whole");
                continue;
            }
            let (_, stream) = self
                .sides
                .for_artifact(kind)
                .read_stream(&object)
                .await
                .with_context(|| {
                    format!(
                        "reading {object} from {}",
                        self.sides.for_artifact(kind).url()
                    )
                })?;
            let upload = to.upload(&object).await?;
            relay(
                stream.map_err(std::io::Error::other).boxed(),
                &artifact.stored,
                upload,
            )
            .await
            .with_context(|| format!("copying {object} to {}", to.url()))?;
            if !holds(to, &object, &artifact.stored).await? {
                return Err(IntegrityError(format!(
                    "the copy of {object} in {} does not read back with the size and SHA-256 its manifest records; nothing was committed, run copy again",
                    to.url()
                ))
                .into());
            }
        }

        // The records beside the manifest: its signature, the drill records and theirs.
        let dir = self.layout.backup_dir(id);
        let signature = signature_of(&key);
        for object in source.list(&dir).await? {
            let name = name_of(&object.key);
            let is_record = object.key == signature
                || is_drill_record(&object.key)
                || name.strip_suffix(".sig").is_some_and(is_drill_record);
            if !is_record {
                continue;
            }
            let body = source.read(&object.key).await?;
            put_record(&dest.sides.snapshot, &object.key, body).await?;
        }
        if dest.split() && manifest.artifacts.static_resources.is_some() {
            put_record(&dest.sides.static_resources, &key, bytes.clone()).await?;
        }
        // The commit point, last.
        if !dest.sides.snapshot.create(&key, bytes.clone()).await? {
            let there = dest.sides.snapshot.read(&key).await?;
            if there != bytes {
                anyhow::bail!(
                    "another manifest for backup {id} appeared in replica {} while it was copied",
                    dest.url()
                );
            }
        }
        tracing::info!(%id, replica = %dest.url(), "copied");
        Ok(Copied::Copied)
    }
}

/// Whether `target` holds `key` with the recorded size and SHA-256 (read back whole).
async fn holds(target: &Target, key: &str, expected: &Digest) -> anyhow::Result<bool> {
    match target.head(key).await? {
        Some(object) if object.size == expected.size => {}
        _ => return Ok(false),
    }
    let (_, mut stream) = target.read_stream(key).await?;
    let mut hasher = Hasher::new(false);
    while let Some(part) = stream.next().await {
        hasher.update(&part?);
    }
    Ok(hasher.finish().is_ok_and(|digest| digest == *expected))
}

/// Writes a small record create-only; one already there must be the same bytes (a
/// record is never replaced).
async fn put_record(target: &Target, key: &str, body: bytes::Bytes) -> anyhow::Result<()> {
    if target.create(key, body.clone()).await? || target.read(key).await? == body {
        return Ok(());
    }
    Err(IntegrityError(format!(
        "{}/{key} already exists with other contents; it is left as it is (a record is never replaced)",
        target.url()
    ))
    .into())
}
