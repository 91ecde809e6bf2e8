//! Repository behaviour over the fault-injecting in-memory store: the trust model (planted,
//! oversized, future-dated), retention over it, drill records, and what a commit checks.

use std::path::PathBuf;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::manifest::{Artifacts, FORMAT_VERSION, SourceInfo, sample_artifact};
use crate::retention::RetentionPolicy;
use crate::store::testing::FaultyStore;

/// A store, a signing key and the allowed signers that list it.
struct Keys {
    _dir: tempfile::TempDir,
    key: PathBuf,
    allowed: PathBuf,
}

impl Keys {
    fn new() -> Self {
        let dir = crate::scratch_dir();
        let key = dir.path().join("signer");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "signer", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let allowed = dir.path().join("allowed_signers");
        std::fs::write(&allowed, format!("backups@test {public}")).unwrap();
        Self {
            _dir: dir,
            key,
            allowed,
        }
    }

    fn signing(&self, key: bool) -> SigningConfig {
        SigningConfig {
            key: key.then(|| self.key.clone()),
            allowed_signers: Some(self.allowed.clone()),
        }
    }

    fn signer(&self) -> Signer {
        Signer::load(&self.key).unwrap()
    }
}

const C: &str = "c";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// A manifest of backup `started_at` whose snapshot object holds `size` bytes.
fn manifest(started_at: DateTime<Utc>, size: u64) -> Manifest {
    let id = crate::ids::backup_id(started_at, 0);
    let layout = Layout::new(C);
    Manifest {
        format_version: FORMAT_VERSION,
        id: id.clone(),
        cluster: C.into(),
        started_at,
        finished_at: started_at + TimeDelta::seconds(5),
        tool_version: "test".into(),
        host: "test-host".into(),
        source: SourceInfo::Etcd {
            endpoint: "http://127.0.0.1:2379".into(),
            member_id: "1".into(),
            etcd_version: "3.5.1".into(),
            storage_version: None,
            revision: 1,
            db_size: size,
            pacing: None,
        },
        platform_version: Some("4.14.7".into()),
        upgrade: None,
        dirty: false,
        dirty_reasons: Vec::new(),
        labels: Default::default(),
        content: None,
        artifacts: Artifacts {
            snapshot: sample_artifact(&layout.artifact(&id, ArtifactKind::Snapshot), size),
            static_resources: None,
        },
    }
}

/// Writes a backup's snapshot object and manifest (signed by `signer`, when given) the
/// way a planted or a real backup would look; returns its id.
async fn put_backup(target: &Target, m: &Manifest, signer: Option<&Signer>) -> String {
    let layout = Layout::new(C);
    let body = Bytes::from(m.to_json());
    let snapshot = Bytes::from(vec![0u8; m.artifacts.snapshot.stored.size as usize]);
    target
        .create(&layout.artifact(&m.id, ArtifactKind::Snapshot), snapshot)
        .await
        .unwrap();
    if let Some(signer) = signer {
        let signature = signer.sign(&body).unwrap();
        target
            .create(
                &layout::signature_of(&layout.manifest(&m.id)),
                Bytes::from(signature),
            )
            .await
            .unwrap();
    }
    target.create(&layout.manifest(&m.id), body).await.unwrap();
    m.id.clone()
}

fn ids<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<&'a str> {
    entries.map(|e| e.id.as_str()).collect()
}

#[tokio::test]
async fn planted_unsigned_backups_are_reported_and_kept_by_prune_and_never_chosen() {
    let keys = Keys::new();
    let store = FaultyStore::new();
    let target = store.target("mem://t");
    let repo = Repository::over(C, target.clone(), None, keys.signing(false));
    let now = Utc::now();
    let signer = keys.signer();
    let mut signed = Vec::new();
    for hours in [30, 20, 10] {
        let m = manifest(now - TimeDelta::hours(hours), 100);
        signed.push(put_backup(&target, &m, Some(&signer)).await);
    }
    // Two planted under newer ids, unsigned: what someone with write access but no key does.
    let mut planted = Vec::new();
    for hours in [5, 1] {
        planted
            .push(put_backup(&target, &manifest(now - TimeDelta::hours(hours), 100), None).await);
    }

    let catalog = repo.catalog(now).await.unwrap();
    assert_eq!(ids(catalog.trusted()), [&signed[2], &signed[1], &signed[0]]);
    for id in &planted {
        assert!(matches!(
            catalog.get(id).unwrap().standing,
            Standing::Untrusted(ref why) if why.contains("no signature")
        ));
    }
    assert_eq!(repo.select(&Selection::Latest).await.unwrap().id, signed[2]);
    let err = repo
        .select(&Selection::Id(planted[1].clone()))
        .await
        .unwrap_err();
    assert_eq!(
        crate::error::exit_kind(&err),
        crate::error::ExitKind::Integrity
    );
    assert_eq!(
        repo.newest_trusted(now).await.unwrap().unwrap().id,
        signed[2]
    );

    let policy = RetentionPolicy {
        keep_last: Some(2),
        ..Default::default()
    };
    let report = crate::ops::prune::apply(&repo, &policy, false)
        .await
        .unwrap();
    let action = |id: &str| {
        report
            .decisions
            .iter()
            .find(|d| d.decision.id == id)
            .map(|d| (d.action, d.reasons.join("; ")))
            .unwrap()
    };
    for id in &planted {
        let (act, reasons) = action(id);
        assert_eq!(act, crate::ops::prune::Action::Kept);
        assert!(
            reasons.contains("not signed by an allowed signer"),
            "{reasons}"
        );
    }
    assert_eq!(action(&signed[0]).0, crate::ops::prune::Action::Deleted);
    let left = store.keys().await;
    for id in planted.iter().chain(&signed[1..]) {
        assert!(left.contains(&Layout::new(C).manifest(id)), "{id} kept");
    }
    assert!(!left.contains(&Layout::new(C).manifest(&signed[0])));
}

#[tokio::test]
async fn oversized_and_unreadable_signatures_make_a_backup_untrusted_not_an_error() {
    let keys = Keys::new();
    let store = FaultyStore::new();
    let target = store.target("mem://t");
    let repo = Repository::over(C, target.clone(), None, keys.signing(false));
    let now = Utc::now();
    let good = put_backup(
        &target,
        &manifest(now - TimeDelta::hours(2), 10),
        Some(&keys.signer()),
    )
    .await;
    let newest = manifest(now - TimeDelta::hours(1), 10);
    let layout = Layout::new(C);
    let huge = Bytes::from(vec![b'-'; (crate::store::SMALL_OBJECT_CAP + 1) as usize]);
    target
        .create(&layout::signature_of(&layout.manifest(&newest.id)), huge)
        .await
        .unwrap();
    put_backup(&target, &newest, None).await;
    let catalog = repo.catalog(now).await.unwrap();
    assert!(matches!(
        catalog.get(&newest.id).unwrap().standing,
        Standing::Untrusted(ref why) if why.contains("too large")
    ));
    assert_eq!(repo.select(&Selection::Latest).await.unwrap().id, good);
}

#[tokio::test]
async fn a_future_dated_backup_counts_for_nothing() {
    let store = FaultyStore::new();
    let target = store.target("mem://t");
    let repo = Repository::over(C, target.clone(), None, SigningConfig::default());
    let now = Utc::now();
    let current: Vec<String> = futures::future::join_all([3, 2, 1].map(|h| {
        let target = target.clone();
        async move { put_backup(&target, &manifest(now - TimeDelta::hours(h), 10), None).await }
    }))
    .await;
    let future = put_backup(&target, &manifest(at("2099-01-01T00:00:00Z"), 10), None).await;

    let catalog = repo.catalog(now).await.unwrap();
    assert_eq!(
        catalog.get(&future).unwrap().standing,
        Standing::FutureDated
    );
    assert_eq!(catalog.trusted().count(), 3);
    // Not chosen by --latest, not the skip check's newest, not the metrics' last success.
    assert_eq!(
        repo.select(&Selection::Latest).await.unwrap().id,
        current[2]
    );
    assert_eq!(
        repo.newest_trusted(now).await.unwrap().unwrap().id,
        current[2]
    );
    let figures = crate::ops::store_figures(&repo).await.unwrap();
    assert!(figures.last_success.unwrap() < now);
    assert_eq!(figures.backups_complete, 3);
    // Named, it is still there for a human.
    assert_eq!(repo.manifest(&future).await.unwrap().id, future);

    // It satisfies neither max_count nor min_keep, and prune never deletes it.
    let policy = RetentionPolicy {
        keep_last: Some(1),
        max_count: Some(2),
        min_keep: Some(2),
        ..Default::default()
    };
    let report = crate::ops::prune::apply(&repo, &policy, false)
        .await
        .unwrap();
    let kept: Vec<&str> = report
        .decisions
        .iter()
        .filter(|d| d.action == crate::ops::prune::Action::Kept)
        .map(|d| d.decision.id.as_str())
        .collect();
    assert_eq!(kept, [&future, &current[2], &current[1]]);
}

#[tokio::test]
async fn only_signed_drill_records_count() {
    let keys = Keys::new();
    let store = FaultyStore::new();
    let target = store.target("mem://t");
    let now = Utc::now();
    let id = put_backup(
        &target,
        &manifest(now - TimeDelta::hours(1), 10),
        Some(&keys.signer()),
    )
    .await;
    let layout = Layout::new(C);
    let record = |at: &str| Bytes::from(format!("{{\"at\":\"{at}\",\"ok\":true}}"));
    // Planted: unsigned, successful, dated far ahead.
    target
        .create(
            &layout.drill_record(&id, at("2099-12-31T00:00:00Z"), 0),
            record("2099-12-31T00:00:00Z"),
        )
        .await
        .unwrap();
    let reader = Repository::over(C, target.clone(), None, keys.signing(false));
    let catalog = reader.catalog(now).await.unwrap();
    assert!(
        reader
            .newest_successful_drill(&catalog, now)
            .await
            .is_none()
    );

    // A drill stored through the repository is signed and counts.
    let drill_at = now - TimeDelta::minutes(10);
    let writer = Repository::over(C, target.clone(), None, keys.signing(true));
    let key = writer
        .store_drill_record(&id, drill_at, record(&drill_at.to_rfc3339()))
        .await
        .unwrap();
    assert!(store.keys().await.contains(&layout::signature_of(&key)));
    let catalog = reader.catalog(now).await.unwrap();
    let (of, drill) = reader.newest_successful_drill(&catalog, now).await.unwrap();
    assert_eq!((of.as_str(), drill.at), (id.as_str(), drill_at));
}

#[tokio::test]
async fn a_commit_checks_both_artifacts_and_the_lock_before_the_manifest() {
    let store = FaultyStore::new();
    let snap = store.target("mem://snap");
    let keys = store.target("mem://keys");
    let repo = Repository::over(C, snap.clone(), Some(keys), SigningConfig::default());
    let clock = StoreClock::agreeing();
    let lock = repo.lock(&clock).await.unwrap();
    let mut claim = repo.claim(Utc::now()).await.unwrap();
    let mut m = manifest(claim.started_at, 7);
    let layout = Layout::new(C);
    let static_key = layout.artifact(&claim.id, ArtifactKind::StaticResources);
    let mut keys_artifact = m.artifacts.snapshot.clone();
    keys_artifact.key = static_key.clone();
    m.artifacts.static_resources = Some(keys_artifact);
    for kind in [ArtifactKind::Snapshot, ArtifactKind::StaticResources] {
        let key = layout.artifact(&claim.id, kind);
        claim.record(
            match kind {
                ArtifactKind::Snapshot => Side::Snapshot,
                ArtifactKind::StaticResources => Side::Keys,
            },
            key.clone(),
        );
        snap.create(&key, Bytes::from(vec![0u8; 7])).await.unwrap();
    }
    // The keys half vanishes while the backup runs (a skewed prune): no commit.
    snap.delete(&static_key).await.unwrap();
    let err = repo.commit(&mut claim, &m, &lock).await.unwrap_err();
    assert!(format!("{err:#}").contains("is gone"), "{err:#}");
    repo.settle(claim, false).await;
    lock.release().await;
    let left = store.keys().await;
    assert!(
        left.iter().all(|k| !k.starts_with(&format!("{C}/2"))),
        "nothing of the backup is left: {left:?}"
    );
}

#[test]
fn one_url_with_other_options_is_another_location() {
    let s3 = |endpoint: &str| crate::config::TargetConfig {
        url: "s3://bucket/etcd".into(),
        options: [
            ("aws_region".to_string(), "eu-west-1".to_string()),
            ("aws_endpoint".to_string(), endpoint.to_string()),
            ("aws_access_key_id".to_string(), "k".to_string()),
            ("aws_secret_access_key".to_string(), "s".to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let same = Sides::open(&s3("http://a:9000"), &s3("http://a:9000"));
    assert!(!same.unwrap().split());
    let other = Sides::open(&s3("http://a:9000"), &s3("http://b:9000"));
    assert!(
        other.unwrap().split(),
        "same URL, another endpoint: two stores"
    );
}
