//! Every cluster of a target at once, for `status --all-clusters`: the cluster prefixes
//! come from one delimiter listing of the target's root (its cost grows with the number of
//! clusters, not of objects), and each cluster is then read only as far as its newest
//! trusted backup and its newest successful drill need.
//!
//! Prefixes are untrusted input like everything else in a store: only names that can be a
//! cluster (the config's rule) are read, at most [`MAX_CLUSTERS`] of them, and a prefix
//! holding neither a backup directory nor the lock is not a cluster (another tool's files).

use chrono::{DateTime, Utc};

use super::catalog::{self, Entry, Standing};
use super::layout::{self, Layout};
use super::{DrillSummary, Repository};
use crate::config::is_cluster_name;

/// The most cluster prefixes one target may hold for a fleet view: more is a target that
/// is not a fleet's (a bucket root shared with other data), or planted names.
pub const MAX_CLUSTERS: usize = 1000;
/// The most prefixes of any name read from a target's root: the listing stops there, so
/// a bucket root with millions of other prefixes costs a few calls, not millions.
pub const MAX_PREFIXES: usize = 2 * MAX_CLUSTERS;

/// The prefixes directly below a target's root.
#[derive(Debug, Default)]
pub struct Prefixes {
    /// Names that can be clusters, sorted.
    pub clusters: Vec<String>,
    /// Names that cannot (shown escaped, at most a few).
    pub ignored: Vec<String>,
    pub ignored_count: usize,
}

/// What a fleet view shows of one cluster.
#[derive(Debug)]
pub struct Freshness {
    /// The prefix holds a backup directory or the lock (else it is not a cluster).
    pub is_cluster: bool,
    /// Backup directories listed (complete or not).
    pub directories: usize,
    /// Bytes of every object listed below the cluster's prefix.
    pub listed_bytes: u64,
    /// The newest trusted, not future-dated backup.
    pub newest: Option<Entry>,
    /// Newer backups passed over on the way to it: `"<id> (untrusted)"` and the like.
    pub passed_over: Vec<String>,
    /// The newest successful drill that counts, of a trusted backup: its backup id.
    pub drill: Option<(String, DrillSummary)>,
    /// The newest modification time listed (a lower bound of the store's now).
    pub newest_modified: Option<DateTime<Utc>>,
}

impl Repository {
    /// The cluster prefixes of the snapshot target (a delimiter listing of its root).
    pub async fn cluster_prefixes(&self) -> anyhow::Result<Prefixes> {
        let listing = self.sides.snapshot.list_prefixes("", MAX_PREFIXES).await?;
        if listing.more {
            anyhow::bail!(
                "{} holds more than {MAX_PREFIXES} prefixes (the listing stopped there), more than a fleet view reads: point targets.snapshot at the prefix the clusters' backups share (the URL their configs use), not at a bucket root with other data",
                self.url()
            );
        }
        let mut prefixes = Prefixes::default();
        for name in listing.names {
            if is_cluster_name(&name) {
                prefixes.clusters.push(name);
            } else {
                prefixes.ignored_count += 1;
                if prefixes.ignored.len() < 5 {
                    prefixes.ignored.push(name.escape_default().to_string());
                }
            }
        }
        if prefixes.clusters.len() > MAX_CLUSTERS {
            anyhow::bail!(
                "{} holds {} prefixes that look like cluster names, more than the {MAX_CLUSTERS} a fleet view reads: point targets.snapshot at the prefix the clusters' backups share (the URL their configs use), not at a bucket root with other data",
                self.url(),
                prefixes.clusters.len()
            );
        }
        prefixes.clusters.sort();
        Ok(prefixes)
    }

    /// This repository's targets, trust and lock timing for another cluster of the same
    /// targets (`cluster` must be a valid cluster name).
    pub fn for_cluster(&self, cluster: &str) -> Repository {
        Repository {
            layout: Layout::new(cluster),
            sides: self.sides.clone(),
            trust: self.trust.clone(),
            lock_stale_after: self.lock_stale_after,
        }
    }

    /// The newest trusted backup and the newest successful drill of this cluster, from one
    /// listing: manifests are read newest first until a trusted one, drill records newest
    /// first until a successful one of a trusted backup.
    pub async fn freshness(&self, now: DateTime<Utc>) -> anyhow::Result<Freshness> {
        let listing = catalog::list(&self.sides.snapshot, &self.layout).await?;
        let listed_bytes = listing
            .entries
            .iter()
            .map(Entry::stored_bytes)
            .chain(listing.lock.iter().map(|o| o.size))
            .sum();
        let is_cluster = !listing.entries.is_empty() || !listing.lock.is_empty();
        let mut entries = listing.entries;
        let (newest, passed_over) = self.first_trusted(&mut entries, now, false).await?;
        let newest = newest.map(|i| entries[i].clone());

        let mut records: Vec<(String, usize)> = entries
            .iter()
            .enumerate()
            .flat_map(|(i, e)| {
                e.drill_records()
                    .into_iter()
                    .map(move |k| (k.to_string(), i))
            })
            .collect();
        records.sort_unstable_by(|a, b| layout::name_of(&b.0).cmp(layout::name_of(&a.0)));
        let mut drill = None;
        for (key, i) in records {
            let Some(found) = self.read_drill(&key, now).await.filter(|d| d.ok) else {
                continue;
            };
            let entry = &mut entries[i];
            if entry.standing == Standing::Incomplete && entry.has_manifest() {
                catalog::classify(entry, &self.sides.snapshot, &self.layout, &self.trust, now)
                    .await;
            }
            if entry.counts() {
                drill = Some((entry.id.clone(), found));
                break;
            }
        }
        Ok(Freshness {
            is_cluster,
            directories: entries.len(),
            listed_bytes,
            newest,
            passed_over,
            drill,
            newest_modified: listing.newest_modified,
        })
    }
}
