//! The repository: one cluster's backups over a pair of targets (the snapshot side and
//! the static resources side, possibly one location), with the trust policy, the lock and
//! the clock check. Modelled on restic's `internal/repository` and rustic_core's
//! `Repository`: commands open it once and ask it questions ("the trusted backups", "the
//! newest trusted", "claim an id", "commit this manifest", "delete these in the safe
//! order"); they never compose a key or judge a signature themselves.
//!
//! It opens over any pair of target configs: the primary targets, or a replica's (which
//! then is another `Repository` of the same cluster). Every key is below the cluster's
//! prefix ([`layout`]), so a view of all clusters in a target is a listing by delimiter
//! that opens one repository per prefix.

mod catalog;
pub mod clock;
mod copy;
mod delete;
mod fleet;
pub mod layout;
mod lock;
mod trust;
mod write;

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

pub use catalog::{Catalog, Entry, ManifestProblem, Standing, future_dated};
pub use clock::StoreClock;
pub use copy::Copied;
pub use delete::DeleteError;
pub use fleet::Freshness;
use layout::Layout;
pub use lock::BackupLock;
pub use trust::Signature;
use trust::Trust;
pub use write::Claim;
use write::Side;

use crate::config::{Config, TargetConfig};
use crate::error::{IntegrityError, UsageError};
use crate::ids::id_time;
use crate::manifest::{self, Artifact, ArtifactKind, Manifest};
use crate::pipeline::{Encoded, FetchError, Sink, StoredBytes};
use crate::signing::{Signer, SigningConfig};
use crate::store::{StoreError, StoreErrorKind, StoredObject, Target, Upload, same_location};

/// The two targets of a repository (often one store).
#[derive(Clone)]
pub(crate) struct Sides {
    snapshot: Target,
    static_resources: Target,
    /// The two are different locations (URL or options differ).
    split: bool,
}

impl Sides {
    fn open(snapshot: &TargetConfig, static_resources: &TargetConfig) -> anyhow::Result<Self> {
        let snapshot_target = Target::open(snapshot).context("snapshot target")?;
        let split = !same_location(snapshot, static_resources);
        let static_target = if split {
            Target::open(static_resources).context("static resources target")?
        } else {
            snapshot_target.clone()
        };
        Ok(Self {
            snapshot: snapshot_target,
            static_resources: static_target,
            split,
        })
    }

    /// Two given targets; `split` says whether they are different locations.
    #[cfg(test)]
    fn new(snapshot: Target, static_resources: Target, split: bool) -> Self {
        Self {
            snapshot,
            static_resources,
            split,
        }
    }

    /// The keys archive lives in another location than the snapshot (so a manifest copy
    /// goes there too). One definition: same URL and same options is the same location.
    fn split(&self) -> bool {
        self.split
    }

    fn of(&self, side: Side) -> &Target {
        match side {
            Side::Snapshot => &self.snapshot,
            Side::Keys => &self.static_resources,
        }
    }

    fn for_artifact(&self, kind: ArtifactKind) -> &Target {
        match kind {
            ArtifactKind::Snapshot => &self.snapshot,
            ArtifactKind::StaticResources => &self.static_resources,
        }
    }
}

/// What a repository is opened over: a cluster, its two targets, the trust policy and
/// the lock's timing.
pub struct RepositorySpec<'a> {
    pub cluster: &'a str,
    pub snapshot: &'a TargetConfig,
    /// The same as `snapshot` when the keys archive shares its location.
    pub static_resources: &'a TargetConfig,
    pub signing: &'a SigningConfig,
    pub lock_stale_after: Duration,
}

/// Which backup a command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// This id (a usage error when it is not shaped like one).
    Id(String),
    /// The newest trusted backup that is not future-dated.
    Latest,
}

/// One cluster's backups in a pair of targets.
pub struct Repository {
    layout: Layout,
    sides: Sides,
    trust: Trust,
    lock_stale_after: Duration,
}

/// A drill record in short: when, and whether every check held.
#[derive(Debug, Clone, Serialize)]
pub struct DrillSummary {
    pub at: DateTime<Utc>,
    pub ok: bool,
    /// The names of the checks that failed (at most [`MAX_FAILED_CHECKS_KEPT`], capped).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_checks: Vec<String>,
}

/// Failed check names kept per drill summary (a drill has a handful of checks).
const MAX_FAILED_CHECKS_KEPT: usize = 8;

/// Drill records read for one report at most: years of weekly drills, and a bound on
/// what a store full of planted records can cost.
pub const MAX_DRILL_RECORDS_READ: usize = 2000;

/// The drills of a period, as [`Repository::drills_since`] finds them.
#[derive(Debug, Default)]
pub struct DrillHistory {
    /// Drills that count, oldest first, each with its backup's id.
    pub drills: Vec<(String, DrillSummary)>,
    /// Records that do not count (unsigned with signing enforced, unreadable, another
    /// backup's, dated in the future): backup id, record name, why.
    pub ignored: Vec<(String, String, String)>,
    /// Records of the period left unread past [`MAX_DRILL_RECORDS_READ`] (the oldest).
    pub unread: usize,
}

impl Repository {
    /// Opens the repository over `spec`'s targets; `signing.allowed_signers` is loaded
    /// now (a configured file that cannot be read is a config error).
    pub fn open(spec: RepositorySpec<'_>) -> anyhow::Result<Self> {
        Ok(Self {
            layout: Layout::new(spec.cluster),
            sides: Sides::open(spec.snapshot, spec.static_resources)?,
            trust: Trust::load(spec.signing)?,
            lock_stale_after: spec.lock_stale_after,
        })
    }

    /// The primary targets of the config.
    pub fn primary(config: &Config) -> anyhow::Result<Self> {
        Self::open(RepositorySpec {
            cluster: &config.cluster,
            snapshot: &config.targets.snapshot,
            static_resources: &config.targets.static_resources,
            signing: &config.signing,
            lock_stale_after: config.targets.lock_stale_after,
        })
    }

    /// Replica `name` of the config (`replicas:`): the same cluster in its targets.
    pub fn replica(config: &Config, name: &str) -> anyhow::Result<Self> {
        let replica = config
            .replicas
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = config.replicas.iter().map(|r| r.name.as_str()).collect();
                UsageError(if known.is_empty() {
                    format!("no replica {name:?}: the config has no `replicas:`")
                } else {
                    format!(
                        "no replica {name:?} in the config; its replicas: {}",
                        known.join(", ")
                    )
                })
            })?;
        Self::open(RepositorySpec {
            cluster: &config.cluster,
            snapshot: &replica.snapshot,
            static_resources: &replica.static_resources,
            signing: &config.signing,
            lock_stale_after: config.targets.lock_stale_after,
        })
    }

    /// What a reading command (`--replica NAME` or not) reads: a replica, or the primary.
    pub fn reading(config: &Config, replica: Option<&str>) -> anyhow::Result<Self> {
        match replica {
            Some(name) => Self::replica(config, name),
            None => Self::primary(config),
        }
    }

    /// A repository over given targets (unit tests over the in-memory store); a second
    /// target is another location for the keys archive.
    #[cfg(test)]
    pub(crate) fn over(
        cluster: &str,
        snapshot: Target,
        static_resources: Option<Target>,
        signing: SigningConfig,
    ) -> Self {
        let split = static_resources.is_some();
        let keys = static_resources.unwrap_or_else(|| snapshot.clone());
        Self {
            layout: Layout::new(cluster),
            sides: Sides::new(snapshot, keys, split),
            trust: Trust::load(&signing).expect("the test's signing files load"),
            lock_stale_after: Duration::from_secs(60),
        }
    }

    pub fn cluster(&self) -> &str {
        self.layout.cluster()
    }

    /// The snapshot target's URL (without credentials).
    pub fn url(&self) -> &str {
        self.sides.snapshot.url()
    }

    /// The static resources target's URL (without credentials).
    pub fn keys_url(&self) -> &str {
        self.sides.static_resources.url()
    }

    /// The keys archive is in another location than the snapshot.
    pub fn split(&self) -> bool {
        self.sides.split()
    }

    /// Whether only signed backups and drill records count.
    pub fn trust_enforced(&self) -> bool {
        self.trust.enforced()
    }

    // ------------------------------------------------------------------ reading

    /// Every backup of the cluster, classified, with `now` deciding what is future-dated.
    pub async fn catalog(&self, now: DateTime<Utc>) -> anyhow::Result<Catalog> {
        let listing = catalog::list(&self.sides.snapshot, &self.layout).await?;
        Ok(catalog::build(
            listing,
            &self.sides.snapshot,
            &self.layout,
            &self.trust,
            now,
        )
        .await)
    }

    /// The keys side's objects by backup id, when it is another location (prune).
    pub async fn keys_side(
        &self,
    ) -> anyhow::Result<std::collections::BTreeMap<String, Vec<StoredObject>>> {
        if !self.split() {
            return Ok(Default::default());
        }
        let listing = catalog::list(&self.sides.static_resources, &self.layout).await?;
        Ok(listing
            .entries
            .into_iter()
            .map(|e| (e.id, e.objects))
            .collect())
    }

    /// What a listing alone shows wrong with a backup whose manifest reads: an artifact
    /// the manifest records that is missing or not of its recorded stored size, and, when
    /// the keys archive lives in another location, a missing manifest copy there.
    /// `keys_side` is [`Self::keys_side`]'s listing. No object is read: contents are
    /// `verify`'s (SHA-256) and `verify --identity`'s (plaintext) to check.
    pub fn listed_problems(
        &self,
        entry: &Entry,
        keys_side: &std::collections::BTreeMap<String, Vec<StoredObject>>,
    ) -> Vec<String> {
        let Some(summary) = &entry.summary else {
            return Vec::new();
        };
        let keys_objects: &[StoredObject] = if self.split() {
            keys_side.get(&entry.id).map_or(&[], Vec::as_slice)
        } else {
            &entry.objects
        };
        let mut problems = Vec::new();
        let recorded = [
            (
                ArtifactKind::Snapshot,
                Some(summary.snapshot_stored_size),
                entry.objects.as_slice(),
                self.url(),
            ),
            (
                ArtifactKind::StaticResources,
                summary.static_resources_stored_size,
                keys_objects,
                self.keys_url(),
            ),
        ];
        for (kind, size, objects, url) in recorded {
            let Some(size) = size else { continue };
            let key = self.layout.artifact(&entry.id, kind);
            match objects.iter().find(|o| o.key == key) {
                None => problems.push(format!("{key} is missing from {url}")),
                Some(o) if o.size != size => problems.push(format!(
                    "{key} is {} bytes in {url}, the manifest records {size}",
                    o.size
                )),
                Some(_) => {}
            }
        }
        if self.split() && summary.static_resources_stored_size.is_some() {
            let copy = self.layout.manifest(&entry.id);
            if !keys_objects.iter().any(|o| o.key == copy) {
                problems.push(format!(
                    "the manifest copy {copy} is missing from {}",
                    self.keys_url()
                ));
            }
        }
        problems
    }

    /// The newest trusted, not future-dated backup, reading manifests newest first only as
    /// far as needed. Newer ones that do not count are passed over with a warning; without
    /// signing, a damaged newest one stops the search (it may be the backup wanted, broken).
    pub async fn newest_trusted(&self, now: DateTime<Utc>) -> anyhow::Result<Option<Entry>> {
        Ok(self.newest(now, false).await?.ok())
    }

    /// The newest trusted entry, or what was passed over looking for it.
    async fn newest(
        &self,
        now: DateTime<Utc>,
        stop_at_damaged: bool,
    ) -> anyhow::Result<Result<Entry, Vec<String>>> {
        let mut entries = catalog::list(&self.sides.snapshot, &self.layout)
            .await?
            .entries;
        Ok(
            match self
                .first_trusted(&mut entries, now, stop_at_damaged)
                .await?
            {
                (Some(i), _) => Ok(entries.swap_remove(i)),
                (None, passed_over) => Err(passed_over),
            },
        )
    }

    /// Classifies `entries` (newest first) in order until a trusted one: its index, and
    /// what was passed over on the way.
    async fn first_trusted(
        &self,
        entries: &mut [Entry],
        now: DateTime<Utc>,
        stop_at_damaged: bool,
    ) -> anyhow::Result<(Option<usize>, Vec<String>)> {
        let mut passed_over = Vec::new();
        for (i, entry) in entries.iter_mut().enumerate() {
            if !entry.has_manifest() {
                continue;
            }
            catalog::classify(entry, &self.sides.snapshot, &self.layout, &self.trust, now).await;
            match &entry.standing {
                Standing::Trusted => return Ok((Some(i), passed_over)),
                Standing::Incomplete => {}
                Standing::Damaged(problem) if stop_at_damaged && !self.trust.enforced() => {
                    return Err(IntegrityError(format!(
                        "the newest backup {} is not usable: {problem}; pass the id of another backup (see `etcd-offsite list`)",
                        entry.id
                    ))
                    .into());
                }
                Standing::Damaged(problem) => {
                    tracing::warn!(id = %entry.id, %problem, "skipping an unreadable backup");
                    passed_over.push(format!("{} (damaged)", entry.id));
                }
                Standing::Untrusted(why) => {
                    tracing::warn!(id = %entry.id, reason = %why, "skipping an untrusted backup");
                    passed_over.push(format!("{} (untrusted)", entry.id));
                }
                Standing::FutureDated => {
                    tracing::warn!(id = %entry.id, started_at = %entry.started_at().to_rfc3339(), "skipping a backup dated in the future (a host clock ahead, or planted)");
                    passed_over.push(format!("{} (future-dated)", entry.id));
                }
            }
        }
        Ok((None, passed_over))
    }

    /// The whole manifest of the selected backup, for commands that act on its contents.
    /// A named backup must be trusted (exit 3 otherwise); `Latest` is the newest trusted,
    /// not future-dated one.
    pub async fn select(&self, selection: &Selection) -> anyhow::Result<Manifest> {
        let now = Utc::now();
        let id = match selection {
            Selection::Id(id) => id.clone(),
            Selection::Latest => match self.newest(now, true).await? {
                Ok(entry) => entry.id,
                Err(passed_over) if self.trust.enforced() => {
                    return Err(IntegrityError(format!(
                        "no backup of cluster {} is signed by a key in signing.allowed_signers{}; check that backups run with signing.key and that its public key is listed",
                        self.cluster(),
                        passed(&passed_over)
                    ))
                    .into());
                }
                Err(passed_over) => {
                    return Err(UsageError(format!(
                        "no complete backup of cluster {} yet{}",
                        self.cluster(),
                        passed(&passed_over)
                    ))
                    .into());
                }
            },
        };
        let manifest = self.manifest(&id).await?;
        if future_dated(manifest.started_at, now) {
            tracing::warn!(id = %id, started_at = %manifest.started_at.to_rfc3339(), "this backup is dated in the future (a host clock ahead when it was taken?)");
        }
        Ok(manifest)
    }

    /// The manifest of backup `id`, read and judged now (the bytes that were verified are
    /// the bytes that are used): a usage error when there is none, an integrity failure
    /// when it is damaged or untrusted.
    pub async fn manifest(&self, id: &str) -> anyhow::Result<Manifest> {
        let read = self.read_manifest(id).await?;
        match read.signature {
            Signature::Untrusted(why) => Err(IntegrityError(format!(
                "backup {id} is not trusted: {why}; signing.allowed_signers is set, so only backups signed by a listed key are used"
            ))
            .into()),
            Signature::Trusted(principals) => {
                tracing::debug!(%id, %principals, "manifest signature verified");
                Ok(read.manifest)
            }
            Signature::NotChecked => Ok(read.manifest),
        }
    }

    /// The manifest of backup `id` and the judgement of its signature (verify reports an
    /// untrusted backup instead of stopping at it).
    pub async fn read_manifest(&self, id: &str) -> anyhow::Result<catalog::ReadManifest> {
        // A name that cannot be a backup id is a typo on the command line, not a damaged backup.
        if id_time(id).is_none() {
            return Err(UsageError(format!(
                "{id:?} is not a backup id (YYYYMMDDTHHMMSSZ, with -NN for a second backup in the same second); run `etcd-offsite list`"
            ))
            .into());
        }
        match catalog::read_manifest(&self.sides.snapshot, &self.layout, &self.trust, id).await {
            Ok(read) => Ok(read),
            Err(ManifestProblem::Store(e)) if e.kind == StoreErrorKind::NotFound => {
                Err(UsageError(format!(
                    "backup {id} of cluster {} does not exist (no manifest); run `etcd-offsite list`",
                    self.cluster()
                ))
                .into())
            }
            // The store refuses to hand it out (permissions, S3 Glacier's 403, Azure's 409 for
            // an archived blob) or it is too large: a damaged backup as far as this tool can
            // tell, not a failure to reach the store.
            Err(ManifestProblem::Store(e))
                if matches!(
                    e.kind,
                    StoreErrorKind::Denied | StoreErrorKind::AlreadyExists | StoreErrorKind::TooLarge
                ) =>
            {
                Err(IntegrityError(format!(
                    "backup {id} is damaged: its manifest cannot be read ({e}); restore it from the archive tier or fix its permissions, or pick another backup (see `etcd-offsite list`)"
                ))
                .into())
            }
            Err(ManifestProblem::Store(e)) => Err(e.into()),
            Err(invalid @ ManifestProblem::Invalid { .. }) => {
                Err(IntegrityError(invalid.to_string()).into())
            }
        }
    }

    /// The keys side's copy of a backup's manifest must be the same record (None: it is,
    /// or there is no copy to have).
    pub async fn manifest_copy_problem(
        &self,
        manifest: &Manifest,
    ) -> anyhow::Result<Option<String>> {
        if manifest.artifacts.static_resources.is_none() || !self.split() {
            return Ok(None);
        }
        let keys = &self.sides.static_resources;
        let copy = catalog::read_manifest(keys, &self.layout, &Trust::none(), &manifest.id).await;
        Ok(match copy {
            Ok(copy) if copy.manifest == *manifest => None,
            Ok(_) => Some(format!(
                "the manifest copy in {} differs from the snapshot target's",
                keys.url()
            )),
            Err(ManifestProblem::Store(e)) if e.kind != StoreErrorKind::NotFound => {
                return Err(e.into());
            }
            Err(problem) => Some(format!("manifest copy in {}: {problem}", keys.url())),
        })
    }

    /// The stored bytes of an artifact of `manifest`, for [`crate::pipeline::fetch`]. A
    /// missing object is an integrity failure that says where it was looked for.
    pub async fn open_artifact(
        &self,
        manifest: &Manifest,
        kind: ArtifactKind,
    ) -> Result<StoredBytes, FetchError> {
        let target = self.sides.for_artifact(kind);
        let artifact = match kind {
            ArtifactKind::Snapshot => Some(&manifest.artifacts.snapshot),
            ArtifactKind::StaticResources => manifest.artifacts.static_resources.as_ref(),
        }
        .ok_or_else(|| {
            FetchError::Other(anyhow::anyhow!(
                "backup {} has no {} artifact",
                manifest.id,
                kind.as_str()
            ))
        })?;
        let key = self.layout.artifact(&manifest.id, kind);
        match target.read_stream(&key).await {
            // Refused before a byte is read: a bomb in place of the artifact could be
            // any size, and nothing from it may reach a restore directory.
            Ok((size, _)) if size != artifact.stored.size => {
                Err(FetchError::Stored(IntegrityError(format!(
                    "{key}: stored size is {size} bytes in {}, the manifest says {} (truncated or replaced); nothing was read from it. Restore another backup (`etcd-offsite list`)",
                    target.url(),
                    artifact.stored.size
                ))))
            }
            Ok((_, stream)) => Ok(stream.map_err(std::io::Error::other).boxed()),
            Err(e) if e.kind == StoreErrorKind::NotFound => {
                // A moved target looks like a lost object: say so.
                let moved = if artifact.target != target.url() {
                    format!(
                        " (the manifest records it in {}, the config points at {})",
                        artifact.target,
                        target.url()
                    )
                } else {
                    String::new()
                };
                Err(FetchError::Stored(IntegrityError(format!(
                    "{key} is missing from {}{moved}",
                    target.url()
                ))))
            }
            Err(e) => Err(FetchError::Other(e.into())),
        }
    }

    // ------------------------------------------------------------------ drill records

    /// The newest drill record of `entry` that counts (signed, when signing is enforced).
    pub async fn newest_drill_of(&self, entry: &Entry, now: DateTime<Utc>) -> Option<DrillSummary> {
        for key in entry.drill_records() {
            if let Some(drill) = self.read_drill(key, now).await {
                return Some(drill);
            }
        }
        None
    }

    /// The newest successful drill of any trusted backup in `catalog`: its backup id and
    /// summary. Records are read newest first (their names sort in time order), only as
    /// far as needed.
    pub async fn newest_successful_drill(
        &self,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Option<(String, DrillSummary)> {
        let mut records: Vec<(&str, &str)> = catalog
            .trusted()
            .flat_map(|e| {
                e.drill_records()
                    .into_iter()
                    .map(move |k| (k, e.id.as_str()))
            })
            .collect();
        records.sort_unstable_by(|a, b| layout::name_of(b.0).cmp(layout::name_of(a.0)));
        for (key, id) in records {
            if let Some(drill) = self.read_drill(key, now).await.filter(|d| d.ok) {
                return Some((id.to_string(), drill));
            }
        }
        None
    }

    /// The ids of the newest `limit` trusted backups with a successful drill record that
    /// counts (for `retention.keep_drilled`); records are read newest first, each backup's
    /// only until one succeeded, and no further than `limit` backups need.
    pub async fn drilled(
        &self,
        catalog: &Catalog,
        now: DateTime<Utc>,
        limit: usize,
    ) -> std::collections::BTreeSet<String> {
        let mut drilled = std::collections::BTreeSet::new();
        for entry in catalog.trusted() {
            if drilled.len() >= limit {
                break;
            }
            for key in entry.drill_records() {
                if self.read_drill(key, now).await.is_some_and(|d| d.ok) {
                    drilled.insert(entry.id.clone());
                    break;
                }
            }
        }
        drilled
    }

    /// Every drill made at or after `since` (by the time its record's name carries) of
    /// any backup in `catalog`, oldest first, with the records that do not count and why.
    /// At most [`MAX_DRILL_RECORDS_READ`] records are read, the newest.
    pub async fn drills_since(
        &self,
        catalog: &Catalog,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> DrillHistory {
        let mut keys: Vec<(&str, &str)> = catalog
            .entries()
            .iter()
            .flat_map(|e| {
                e.drill_records()
                    .into_iter()
                    .map(move |k| (e.id.as_str(), k))
            })
            .filter(|(_, k)| layout::drill_record_time(k).is_some_and(|t| t >= since))
            .collect();
        keys.sort_unstable_by(|a, b| layout::name_of(b.1).cmp(layout::name_of(a.1)));
        let unread = keys.len().saturating_sub(MAX_DRILL_RECORDS_READ);
        keys.truncate(MAX_DRILL_RECORDS_READ);
        let judged: Vec<_> = futures::stream::iter(keys)
            .map(|(id, key)| async move { (id, key, self.judge_drill(key, now).await) })
            .buffered(4)
            .collect()
            .await;
        let mut history = DrillHistory {
            unread,
            ..Default::default()
        };
        for (id, key, judged) in judged.into_iter().rev() {
            match judged {
                Ok(drill) => history.drills.push((id.to_string(), drill)),
                Err(why) => {
                    history
                        .ignored
                        .push((id.to_string(), layout::name_of(key).to_string(), why))
                }
            }
        }
        history.drills.sort_by_key(|(_, d)| d.at);
        history
    }

    /// The drill record at `key`, or None when it does not count (see [`Self::judge_drill`]).
    async fn read_drill(&self, key: &str, now: DateTime<Utc>) -> Option<DrillSummary> {
        match self.judge_drill(key, now).await {
            Ok(drill) => Some(drill),
            Err(why) => {
                tracing::debug!(record = %key, reason = %why, "ignoring a drill record");
                None
            }
        }
    }

    /// The drill record at `key`, or why it does not count: unreadable, not a drill record,
    /// another backup's, unsigned with signing enforced, or dated in the future (stored
    /// objects are untrusted: a damaged record never fails a listing).
    async fn judge_drill(&self, key: &str, now: DateTime<Utc>) -> Result<DrillSummary, String> {
        #[derive(Deserialize)]
        struct Record {
            #[serde(default)]
            backup_id: Option<String>,
            at: DateTime<Utc>,
            ok: bool,
            #[serde(default)]
            checks: Vec<RecordCheck>,
        }
        #[derive(Deserialize)]
        struct RecordCheck {
            name: String,
            ok: Option<bool>,
        }
        let target = &self.sides.snapshot;
        // `read` refuses objects above the small-object cap.
        let bytes = target
            .read(key)
            .await
            .map_err(|e| format!("it cannot be read: {e}"))?;
        let record = serde_json::from_slice::<Record>(&bytes)
            .map_err(|e| format!("it is not a drill record: {e}"))?;
        let dir = self.layout.backup_object(key).map(|(id, _)| id);
        if let Some(of) = &record.backup_id
            && dir != Some(of.as_str())
        {
            return Err(format!(
                "it is the record of backup {:?}, not of the backup it is stored with",
                of.chars().take(64).collect::<String>()
            ));
        }
        match self.trust.judge(target, key, &bytes).await {
            Ok(Signature::Untrusted(why)) => return Err(why),
            Err(e) => return Err(format!("its signature cannot be read: {e}")),
            Ok(_) => {}
        }
        if future_dated(record.at, now) {
            return Err("it is dated in the future".to_string());
        }
        Ok(DrillSummary {
            at: record.at,
            ok: record.ok,
            failed_checks: record
                .checks
                .iter()
                .filter(|c| c.ok == Some(false))
                .take(MAX_FAILED_CHECKS_KEPT)
                .map(|c| c.name.chars().take(manifest::MAX_SHORT_TEXT).collect())
                .collect(),
        })
    }

    /// Stores a drill record of backup `id` create-only beside its manifest, signed with
    /// `signing.key` when one is configured (its signature first); returns its key.
    pub async fn store_drill_record(
        &self,
        id: &str,
        at: DateTime<Utc>,
        body: Bytes,
    ) -> anyhow::Result<String> {
        let signer = self.trust.signer()?;
        if signer.is_none() && self.trust.enforced() {
            tracing::warn!(
                "signing.key is not set on this host: the drill record is unsigned, and status and the metrics ignore it"
            );
        }
        let signature = signer
            .as_ref()
            .map(|s| s.sign(&body))
            .transpose()?
            .map(Bytes::from);
        let target = &self.sides.snapshot;
        for n in 0..100 {
            let key = self.layout.drill_record(id, at, n);
            if let Some(signature) = &signature {
                // Written first: a record is never seen unsigned. A name already taken
                // has its signature taken too: try the next one.
                if !target
                    .create(&layout::signature_of(&key), signature.clone())
                    .await?
                {
                    continue;
                }
            }
            if target.create(&key, body.clone()).await? {
                return Ok(key);
            }
        }
        anyhow::bail!("100 drill records of backup {id} in one second?")
    }

    // ------------------------------------------------------------------ time and the lock

    /// Measures the store's clock with a small object this run writes, and refuses (exit
    /// 4, naming both clocks) when it and the host's differ by more than the tolerance.
    pub async fn check_clock(&self) -> anyhow::Result<StoreClock> {
        clock::measure(&self.sides.snapshot, &self.layout).await
    }

    /// Takes the cluster's backup lock (stale holders judged by the store's clock).
    pub async fn lock(&self, clock: &StoreClock) -> anyhow::Result<BackupLock> {
        lock::acquire(
            &self.sides.snapshot,
            &self.layout,
            self.lock_stale_after,
            clock,
        )
        .await
    }

    /// Who holds the lock right now, if a live run does (from the catalog's listing).
    pub async fn lock_holder(
        &self,
        catalog: &Catalog,
        clock: &StoreClock,
    ) -> anyhow::Result<Option<String>> {
        Ok(lock::holder_in(
            &self.sides.snapshot,
            &self.layout,
            catalog.lock_objects(),
            self.lock_stale_after,
            clock,
        )
        .await?)
    }

    // ------------------------------------------------------------------ writing

    /// Claims an id for a backup starting at `started_at`.
    pub async fn claim(&self, started_at: DateTime<Utc>) -> anyhow::Result<Claim> {
        write::claim(&self.sides.snapshot, &self.layout, started_at).await
    }

    /// Starts the upload of an artifact of the claimed backup (recorded for the cleanup of
    /// a failed run before it starts: an upload whose completion was answered with an
    /// error may have landed).
    pub async fn upload(&self, claim: &mut Claim, kind: ArtifactKind) -> anyhow::Result<Upload> {
        let key = self.layout.artifact(&claim.id, kind);
        let side = match kind {
            ArtifactKind::Snapshot => Side::Snapshot,
            ArtifactKind::StaticResources => Side::Keys,
        };
        claim.record(side, key.clone());
        Ok(self.sides.of(side).upload(&key).await?)
    }

    /// The manifest's record of an artifact shipped into [`Repository::upload`].
    pub fn artifact(&self, claim: &Claim, kind: ArtifactKind, shipped: Encoded) -> Artifact {
        Artifact {
            target: self.sides.for_artifact(kind).url().to_string(),
            key: self.layout.artifact(&claim.id, kind),
            plaintext: shipped.plaintext,
            stored: shipped.stored,
            compression: shipped.compression,
            encryption: shipped.encryption,
        }
    }

    /// Commits the claimed backup's manifest (see [`write`]): signed when `signing.key`
    /// is set, after checking both artifacts and the lock.
    pub async fn commit(
        &self,
        claim: &mut Claim,
        manifest: &Manifest,
        lock: &BackupLock,
    ) -> anyhow::Result<()> {
        let signer: Option<Signer> = self.trust.signer()?;
        write::commit(
            &self.sides,
            &self.layout,
            claim,
            manifest,
            signer.as_ref(),
            lock,
        )
        .await
    }

    /// Ends a claim: the in-progress marker goes, and without a commit so does everything
    /// the run wrote (unless its manifest may have landed).
    pub async fn settle(&self, claim: Claim, committed: bool) {
        write::settle(&self.sides, claim, committed).await;
    }

    // ------------------------------------------------------------------ deleting

    /// Deletes a complete backup in the safe order (manifest first).
    pub async fn delete_backup(
        &self,
        entry: &Entry,
        keys_side: &[StoredObject],
    ) -> Result<(), DeleteError> {
        delete::delete_backup(&self.sides, &entry.objects, keys_side).await
    }

    /// Deletes a directory without a snapshot-side manifest (keys side first).
    pub async fn delete_leftover(
        &self,
        snapshot_side: &[StoredObject],
        keys_side: &[StoredObject],
    ) -> Result<(), DeleteError> {
        delete::delete_leftover(&self.sides, snapshot_side, keys_side).await
    }

    /// Removes unfinished uploads of killed runs older than `before` on both sides.
    pub fn remove_stale_uploads(&self, before: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let mut removed = self
            .sides
            .snapshot
            .remove_stale_uploads(self.cluster(), before)?;
        if self.split() {
            removed.extend(
                self.sides
                    .static_resources
                    .remove_stale_uploads(self.cluster(), before)?,
            );
        }
        Ok(removed)
    }

    /// `config check --connect`: each target lists, writes and deletes a probe object, and
    /// refuses a second create-only write of it. Returns what was checked, per target.
    pub async fn check_permissions(&self) -> anyhow::Result<Vec<String>> {
        let mut checked = vec![self.probe(&self.sides.snapshot).await?];
        if self.split() {
            checked.push(self.probe(&self.sides.static_resources).await?);
        }
        Ok(checked)
    }

    /// The probe is created twice: the second create must be refused, or the store ignores
    /// create-only writes and neither the lock nor the commit point can be trusted.
    async fn probe(&self, target: &Target) -> anyhow::Result<String> {
        let key = self.layout.permission_probe(rand::random::<u64>());
        target.list(self.cluster()).await?;
        if !target.create(&key, Bytes::from_static(b"probe")).await? {
            return Err(anyhow::anyhow!(
                "target {}: the probe object {key} already existed before it was written; run `config check --connect` again",
                target.url()
            ));
        }
        let second = target.create(&key, Bytes::from_static(b"probe 2")).await;
        let deleted = target.delete(&key).await;
        match second {
            Ok(false) => {}
            Ok(true) => {
                return Err(anyhow::anyhow!(
                    "target {}: a second create-only write of {key} was accepted: this store (or a proxy in front of it) ignores If-None-Match, so the backup lock and the manifest commit are unsafe. Use another store or endpoint that honours conditional writes",
                    target.url()
                ));
            }
            Err(e) => {
                return Err(anyhow::Error::from(e).context("second create-only write of the probe"));
            }
        }
        deleted?;
        Ok(format!(
            "target {}: ok (list, write, delete; a second create of one key is refused)",
            target.url()
        ))
    }
}

/// What `--latest` passed over, for the message that nothing is left.
fn passed(passed_over: &[String]) -> String {
    if passed_over.is_empty() {
        String::new()
    } else {
        format!(" (passed over: {})", passed_over.join(", "))
    }
}

/// The store's upload is the sink the pipeline writes an artifact to.
impl Sink for Upload {
    type Error = StoreError;

    async fn put(&mut self, part: Bytes) -> Result<(), StoreError> {
        Upload::put(self, part).await
    }

    async fn finish(self) -> Result<(), StoreError> {
        Upload::finish(self).await
    }

    async fn abort(self) {
        Upload::abort(self).await;
    }
}

#[cfg(test)]
mod tests;
