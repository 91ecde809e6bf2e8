//! Restore drills: proof that a backup restores. The snapshot is restored with the stock
//! etcd tools into a scratch etcd on loopback; its revision and key counts are compared with
//! the manifest's content facts, and the keys archive's EncryptionConfiguration must open a
//! sample of the encrypted values in it.

pub mod scratch;

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::kube_encryption::{DecryptError, Keyring};
use crate::manifest::{ArtifactKind, Manifest};
use crate::pipeline::{FetchError, fetch};
use crate::repo::Repository;
use crate::source::content::{ContentFacts, EncryptedValue};
use scratch::{CannotRun, EtcdTools, ScratchDir, ScratchEtcd};

/// The record of one drill, stored create-only next to the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRecord {
    pub format_version: u32,
    pub backup_id: String,
    pub at: DateTime<Utc>,
    pub host: String,
    pub tool_version: String,
    pub ok: bool,
    pub checks: Vec<Check>,
    /// What the restored etcd holds (at the manifest's revision when it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<ContentFacts>,
    /// Sampled encrypted values opened with the archive's keys, per `provider:key`.
    #[serde(default)]
    pub decrypted: BTreeMap<String, u64>,
    /// The etcd release the drill restored and ran the snapshot with (`etcd --version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_version: Option<String>,
    /// What the drill found doubtful without failing a check (an etcd older than the
    /// snapshot's server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where the drill runs: its scratch directory's parent, and the directory of the etcd
/// tools to use instead of those on PATH.
#[derive(Debug, Clone)]
pub struct DrillHost {
    pub scratch_dir: std::path::PathBuf,
    pub etcd_bin_dir: Option<std::path::PathBuf>,
}

/// One check and its outcome; `ok: None` is a check that did not apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: Option<bool>,
    pub detail: String,
}

impl Check {
    fn new(name: &str, ok: Option<bool>, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        }
    }
}

/// The backup, where its artifacts come from, and who can open them.
pub struct DrillInputs<'a> {
    pub manifest: &'a Manifest,
    pub repo: &'a Repository,
    pub snapshot_identity: age::x25519::Identity,
    /// The keys archive's identity, when the backup has one.
    pub keys_identity: Option<age::x25519::Identity>,
}

/// Runs the drill. Failed checks are in the record; errors are drills that could not run.
pub async fn run(inputs: DrillInputs<'_>, host: &DrillHost) -> Result<DrillRecord, CannotRun> {
    let manifest = inputs.manifest;
    let tools = EtcdTools::find(host.etcd_bin_dir.as_deref())?;
    let warnings = version_warnings(manifest, &tools);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(etcd = %tools.etcd.display(), restore = %tools.restore.path.display(), version = %tools.version, "drill tools");
    let size = manifest.artifacts.snapshot.plaintext.size;
    // The snapshot, and etcd's restored copy of it, plus room for etcd's WAL.
    let scratch = ScratchDir::create(
        &host.scratch_dir,
        &manifest.id,
        size.saturating_mul(2) + (256 << 20),
    )?;
    let mut record = DrillRecord {
        format_version: 1,
        backup_id: manifest.id.clone(),
        at: Utc::now(),
        host: crate::ids::hostname(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        ok: false,
        checks: Vec::new(),
        restored: None,
        decrypted: BTreeMap::new(),
        etcd_version: Some(tools.version.clone()),
        warnings,
    };

    // 1. The snapshot, streamed to the scratch disk (checked against its digests on the way).
    let snapshot_file = scratch.path.join("snapshot.db");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&snapshot_file)
        .map_err(|e| CannotRun(format!("creating {}: {e}", snapshot_file.display())))?;
    let fetched = match inputs
        .repo
        .open_artifact(manifest, ArtifactKind::Snapshot)
        .await
    {
        Ok(stored) => {
            fetch(
                stored,
                &manifest.artifacts.snapshot,
                Some(inputs.snapshot_identity),
                true,
                move |reader| {
                    let mut out = BufWriter::with_capacity(1 << 20, file);
                    io::copy(reader, &mut out)?;
                    out.into_inner().map_err(|e| e.into_error())?.sync_all()
                },
            )
            .await
        }
        Err(e) => Err(e),
    };
    if let Some(failed) = fetch_failure(fetched)? {
        record.checks.push(Check::new(
            "snapshot decrypts and matches",
            Some(false),
            failed,
        ));
        return Ok(finish(record));
    }
    record.checks.push(Check::new(
        "snapshot decrypts and matches",
        Some(true),
        format!("{size} bytes, SHA-256 and etcd hash trailer as recorded"),
    ));

    // 2. The keys archive: read through, its EncryptionConfiguration kept.
    let keyring = match &inputs.keys_identity {
        None => {
            record.checks.push(Check::new(
                "keys archive",
                None,
                "the backup has no keys archive; encrypted values cannot be checked",
            ));
            None
        }
        Some(identity) => {
            let fetched = match (
                manifest.artifacts.static_resources.as_ref(),
                inputs
                    .repo
                    .open_artifact(manifest, ArtifactKind::StaticResources)
                    .await,
            ) {
                (Some(artifact), Ok(stored)) => {
                    fetch(
                        stored,
                        artifact,
                        Some(identity.clone()),
                        false,
                        find_encryption_config,
                    )
                    .await
                }
                (_, Err(e)) => Err(e),
                (None, Ok(_)) => Err(FetchError::Other(anyhow::anyhow!(
                    "backup {} has no keys archive",
                    manifest.id
                ))),
            };
            match fetched {
                Err(e) => match fetch_failure::<()>(Err(e))? {
                    Some(failed) => {
                        record.checks.push(Check::new(
                            "keys archive decrypts and reads",
                            Some(false),
                            failed,
                        ));
                        return Ok(finish(record));
                    }
                    None => None,
                },
                Ok(fetched) => match fetched.contents {
                    Some(Err(problem)) => {
                        record.checks.push(Check::new(
                            "keys archive decrypts and reads",
                            Some(false),
                            problem,
                        ));
                        return Ok(finish(record));
                    }
                    Some(Ok(Some((member, text)))) => match Keyring::parse(&text) {
                        Ok(keyring) => {
                            record.checks.push(Check::new(
                                "keys archive decrypts and reads",
                                Some(true),
                                format!("EncryptionConfiguration in {member}: {keyring:?}"),
                            ));
                            Some(keyring)
                        }
                        Err(problem) => {
                            record.checks.push(Check::new(
                                "keys archive decrypts and reads",
                                Some(false),
                                format!("{member}: {problem}"),
                            ));
                            return Ok(finish(record));
                        }
                    },
                    Some(Ok(None)) | None => {
                        record.checks.push(Check::new(
                            "keys archive decrypts and reads",
                            Some(true),
                            "it holds no EncryptionConfiguration (encryption at rest off?)",
                        ));
                        None
                    }
                },
            }
        }
    };

    // 3. Restore with the stock tools and start a throwaway etcd on it.
    let started = ScratchEtcd::start(&tools, &scratch.path, &snapshot_file).await;
    // The decrypted snapshot is not kept beside the running member (its data directory
    // holds the restored copy).
    if let Err(e) = std::fs::remove_file(&snapshot_file) {
        tracing::warn!(file = %snapshot_file.display(), error = %e, "cannot remove the drill's decrypted snapshot");
    }
    let etcd = match started {
        Ok(etcd) => etcd,
        Err(problem) => {
            record.checks.push(Check::new(
                "etcd starts from the restored snapshot",
                Some(false),
                problem,
            ));
            return Ok(finish(record));
        }
    };
    let mut member = etcd
        .connect()
        .await
        .map_err(|e| CannotRun(format!("the scratch etcd stopped answering: {e}")))?;
    record.checks.push(Check::new(
        "etcd starts from the restored snapshot",
        Some(true),
        format!("etcd {} at revision {}", member.version, member.revision),
    ));

    // 4. Revision and key counts, at the recorded revision.
    let recorded = manifest.content.as_ref();
    let at = recorded.map_or(member.revision, |c| c.revision);
    if member.revision < at {
        record.checks.push(Check::new(
            "revision",
            Some(false),
            format!(
                "the restored etcd is at revision {}, the manifest records {at}",
                member.revision
            ),
        ));
        return Ok(finish(record));
    }
    let (restored, samples) = match member.content_facts_at(at, true, None).await {
        Ok(found) => found,
        Err(e) => {
            record.checks.push(Check::new(
                "key counts",
                Some(false),
                format!("reading the restored keys: {e}"),
            ));
            return Ok(finish(record));
        }
    };
    match recorded {
        Some(recorded) => {
            record.checks.push(Check::new(
                "revision",
                Some(true),
                format!("revision {at} is in the restored data (head {})", member.revision),
            ));
            record.checks.push(compare_counts(recorded, &restored));
        }
        None => record.checks.push(Check::new(
            "key counts",
            None,
            format!("the manifest records no key counts (a shipped cluster-backup.sh pair, or a backup whose revision was compacted before its keys were counted); the restored data holds {} keys", restored.keys),
        )),
    }

    // 5. The keys archive opens the encrypted values.
    record.checks.push(check_decryption(
        keyring.as_ref(),
        &samples,
        &mut record.decrypted,
    ));
    record.restored = Some(restored);
    drop(member);
    drop(etcd);
    drop(scratch);
    Ok(finish(record))
}

/// A drill with an etcd older than the snapshot's server proves less than it seems: an
/// older `etcdctl snapshot restore` accepts a newer snapshot silently, and the restored
/// member then runs code that never wrote that data.
fn version_warnings(manifest: &Manifest, tools: &EtcdTools) -> Vec<String> {
    let crate::manifest::SourceInfo::Etcd { etcd_version, .. } = &manifest.source else {
        return Vec::new();
    };
    if scratch::older_than(&tools.version, etcd_version) {
        vec![format!(
            "the drill runs etcd {} ({}), older than the etcd {etcd_version} that served the snapshot: a restore with this release is not what a recovery would run; point --etcd-bin-dir (schedule.drill.etcd_bin_dir) at etcd {etcd_version} or newer tools",
            tools.version,
            tools.etcd.display()
        )]
    } else {
        Vec::new()
    }
}

fn finish(mut record: DrillRecord) -> DrillRecord {
    record.ok = !record.checks.is_empty() && record.checks.iter().all(|c| c.ok != Some(false));
    record
}

/// A failed check's text for content problems; other failures mean the drill could not run.
fn fetch_failure<T>(result: Result<T, FetchError>) -> Result<Option<String>, CannotRun> {
    match result {
        Ok(_) => Ok(None),
        Err(FetchError::Stored(e)) => Ok(Some(e.0)),
        Err(FetchError::Other(e))
            if crate::error::exit_kind(&e) == crate::error::ExitKind::Integrity =>
        {
            Ok(Some(format!("{e:#}")))
        }
        Err(FetchError::Other(e)) => Err(CannotRun(format!("{e:#}"))),
    }
}

fn compare_counts(recorded: &ContentFacts, restored: &ContentFacts) -> Check {
    let mut differences: Vec<String> = Vec::new();
    if recorded.keys != restored.keys {
        differences.push(format!(
            "{} keys in all, recorded {}",
            restored.keys, recorded.keys
        ));
    }
    let prefixes: std::collections::BTreeSet<&String> = recorded
        .prefixes
        .keys()
        .chain(restored.prefixes.keys())
        .collect();
    for prefix in prefixes {
        let (r, s) = (
            recorded.prefixes.get(prefix).copied().unwrap_or(0),
            restored.prefixes.get(prefix).copied().unwrap_or(0),
        );
        if r != s {
            differences.push(format!("{prefix}: {s}, recorded {r}"));
        }
    }
    if differences.is_empty() {
        Check::new(
            "key counts",
            Some(true),
            format!(
                "{} keys in {} prefixes at revision {}, as recorded",
                restored.keys,
                restored.prefixes.len(),
                restored.revision
            ),
        )
    } else {
        let more = differences.len().saturating_sub(5);
        differences.truncate(5);
        let mut detail = differences.join("; ");
        if more > 0 {
            detail.push_str(&format!("; and {more} more"));
        }
        Check::new("key counts", Some(false), detail)
    }
}

fn check_decryption(
    keyring: Option<&Keyring>,
    samples: &[EncryptedValue],
    opened: &mut BTreeMap<String, u64>,
) -> Check {
    const NAME: &str = "keys archive opens the encrypted values";
    if samples.is_empty() {
        return Check::new(NAME, None, "no encrypted value in the sample");
    }
    let Some(keyring) = keyring else {
        let uses: std::collections::BTreeSet<String> = samples
            .iter()
            .map(|s| format!("{}:{}", s.provider, s.key_name))
            .collect();
        return Check::new(
            NAME,
            Some(false),
            format!(
                "{} sampled values are encrypted ({}), but the keys archive holds no EncryptionConfiguration",
                samples.len(),
                uses.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
    };
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let mut skipped: BTreeMap<String, String> = BTreeMap::new();
    for sample in samples {
        let name = format!("{}:{}", sample.provider, sample.key_name);
        match keyring.open(&sample.key, &sample.value) {
            Ok(_) => *opened.entry(name).or_default() += 1,
            Err(e @ DecryptError::Unsupported(_)) => {
                skipped.insert(name, e.to_string());
            }
            Err(e) => {
                failures
                    .entry(name)
                    .or_insert_with(|| format!("{} ({})", e, String::from_utf8_lossy(&sample.key)));
            }
        }
    }
    if !failures.is_empty() {
        return Check::new(
            NAME,
            Some(false),
            failures.into_values().collect::<Vec<_>>().join("; "),
        );
    }
    let mut detail: Vec<String> = opened
        .iter()
        .map(|(k, n)| format!("{k}: {n} opened"))
        .collect();
    detail.extend(skipped.into_values());
    Check::new(
        NAME,
        (!opened.is_empty()).then_some(true),
        detail.join("; "),
    )
}

/// Largest EncryptionConfiguration read from an archive.
const CONFIG_CAP: u64 = 1024 * 1024;

/// Reads a keys archive through; returns the EncryptionConfiguration it holds (member name
/// and text), preferring OpenShift's `…/kube-apiserver-pod-<N>/secrets/encryption-config/encryption-config`
/// with the highest N, else any small member that declares `kind: EncryptionConfiguration`.
pub fn find_encryption_config(
    reader: &mut dyn Read,
) -> io::Result<Result<Option<(String, String)>, String>> {
    let mut archive = tar::Archive::new(reader);
    let mut best: Option<(u64, String, String)> = None;
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => return Ok(Err(format!("the tar does not read: {e}"))),
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => return Ok(Err(format!("the tar does not read: {e}"))),
        };
        let path = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rank = openshift_rank(&path);
        let small = entry.header().entry_type().is_file() && entry.size() <= CONFIG_CAP;
        if small {
            let mut text = String::new();
            if entry
                .by_ref()
                .take(CONFIG_CAP)
                .read_to_string(&mut text)
                .is_ok()
                && (rank.is_some() || declares_encryption_config(&text))
            {
                let rank = rank.unwrap_or(0);
                if best.as_ref().is_none_or(|(r, _, _)| rank >= *r) {
                    best = Some((rank, path, text));
                }
            }
        }
        if let Err(e) = io::copy(&mut entry, &mut io::sink()) {
            return Ok(Err(format!("the tar does not read: {e}")));
        }
    }
    Ok(Ok(best.map(|(_, path, text)| (path, text))))
}

/// `N + 1` for `static-pod-resources/kube-apiserver-pod-<N>/secrets/encryption-config/encryption-config`.
fn openshift_rank(path: &str) -> Option<u64> {
    let rest = path.strip_prefix("static-pod-resources/kube-apiserver-pod-")?;
    let (revision, tail) = rest.split_once('/')?;
    (tail == "secrets/encryption-config/encryption-config")
        .then(|| revision.parse::<u64>().ok().map(|n| n + 1))
        .flatten()
}

fn declares_encryption_config(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        l == "kind: EncryptionConfiguration"
            || l.contains("\"kind\":\"EncryptionConfiguration\"")
            || l.contains("\"kind\": \"EncryptionConfiguration\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(members: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, text) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            builder
                .append_data(&mut header, path, text.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn the_running_encryption_config_is_found() {
        let tar = archive(&[
            (
                "static-pod-resources/kube-apiserver-pod-3/secrets/encryption-config/encryption-config",
                "kind: EncryptionConfiguration\n# 3\n",
            ),
            (
                "static-pod-resources/kube-apiserver-pod-12/secrets/encryption-config/encryption-config",
                "{\"kind\":\"EncryptionConfiguration\"}",
            ),
            (
                "static-pod-resources/kube-apiserver-pod-12/configmaps/config/config.yaml",
                "apiVersion: v1\n",
            ),
        ]);
        let (member, text) = find_encryption_config(&mut &tar[..])
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(member.contains("pod-12"), "{member}");
        assert!(text.contains("EncryptionConfiguration"));
        let plain = archive(&[(
            "etc/enc.yaml",
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n",
        )]);
        assert_eq!(
            find_encryption_config(&mut &plain[..])
                .unwrap()
                .unwrap()
                .unwrap()
                .0,
            "etc/enc.yaml"
        );
        let none = archive(&[("static-pod-resources/etcd-pod-1/x", "y")]);
        assert_eq!(
            find_encryption_config(&mut &none[..]).unwrap().unwrap(),
            None
        );
    }
}
