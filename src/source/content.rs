//! Facts about what a snapshot holds, read from etcd at one revision: key counts per
//! resource prefix and the encryption providers the stored values use. Recorded in the
//! manifest at backup time and checked against a restored copy by `drill`.
//!
//! Cheap next to the snapshot itself: a count from etcd's index per prefix (a skip scan,
//! no values read), and a few values per prefix (a bounded sample) to read the
//! `k8s:enc:<provider>:v1:<key name>:` prefixes that kube-apiserver writes before
//! encrypted values. A backup reads them after the snapshot stream, at the revision the
//! snapshot holds: etcd answers a count-only range at a past revision from its in-memory
//! index (`mvcc` `rangeKeys`, etcd 3.4 and 3.5), as long as that revision is not compacted.
//! Every request is serializable: at a fixed revision that the member has applied, the
//! answer is the same as through the quorum, without a ReadIndex round for each.

use std::collections::BTreeMap;

use etcd_client::{Client, GetOptions, GetResponse};
use serde::{Deserialize, Serialize};

use crate::source::pace::RequestPacer;

/// A client whose range requests are serializable and paced.
struct PacedClient<'a> {
    client: &'a mut Client,
    pacer: Option<RequestPacer>,
}

impl PacedClient<'_> {
    async fn get(
        &mut self,
        key: impl Into<Vec<u8>>,
        options: GetOptions,
    ) -> Result<GetResponse, etcd_client::Error> {
        let start = std::time::Instant::now();
        let response = self
            .client
            .get(key, Some(options.with_serializable()))
            .await?;
        if let Some(pacer) = &mut self.pacer {
            pacer.after_request(start.elapsed()).await;
        }
        Ok(response)
    }
}

/// True when `error` says that the requested revision was compacted (etcd's
/// `ErrCompacted`, gRPC OutOfRange).
pub fn is_compacted(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.message().contains("required revision has been compacted"))
}

/// Largest keys-only page, for keys outside the `/<root>/<resource>/…` shape.
const PAGE: i64 = 2000;
/// Distinct prefixes counted by name; the rest are summed under [`OTHER`].
const MAX_PREFIXES: usize = 2000;
/// Where keys outside the `/<root>/<resource>/…` shape, or past [`MAX_PREFIXES`], are counted.
pub const OTHER: &str = "(other)";
/// Values read per prefix to find the encryption in use.
const SAMPLE_PER_PREFIX: i64 = 3;
/// Value bytes sampled in all (etcd values can be 1.5 MiB each).
const SAMPLE_BYTES: usize = 4 * 1024 * 1024;

/// What the snapshot holds, at `revision`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContentFacts {
    /// The revision the counts were taken at (the member's revision when the snapshot
    /// started; the snapshot holds at least this revision).
    pub revision: i64,
    /// All keys at that revision.
    pub keys: u64,
    /// Keys per `/<root>/<resource>` prefix (`/kubernetes.io/secrets`, `/openshift.io/routes`).
    pub prefixes: BTreeMap<String, u64>,
    /// Encryption found in the sampled values, one entry per provider and key name.
    #[serde(default)]
    pub encryption: Vec<EncryptionUse>,
}

/// Values encrypted by one provider with one key, as seen in the sample.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptionUse {
    /// `aescbc`, `aesgcm`, `secretbox`, `kms`.
    pub provider: String,
    /// The key's name in the EncryptionConfiguration.
    pub key: String,
    /// Prefixes where the sample found it.
    pub prefixes: Vec<String>,
    /// Sampled values that carried it.
    pub sampled: u64,
}

/// One sampled encrypted value, kept for `drill` to decrypt.
#[derive(Debug, Clone)]
pub struct EncryptedValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub provider: String,
    pub key_name: String,
}

impl ContentFacts {
    /// Adds `count` keys under `prefix`, or under [`OTHER`] past [`MAX_PREFIXES`] names.
    fn add(&mut self, mut prefix: String, count: u64) {
        if !self.prefixes.contains_key(&prefix) && self.prefixes.len() >= MAX_PREFIXES {
            prefix = OTHER.to_string();
        }
        self.keys += count;
        *self.prefixes.entry(prefix).or_default() += count;
    }
}

/// Leading bytes of a path segment that [`next_key`] searches letter by letter.
const STEPPED_BYTES: usize = 2;

/// The first key at or after `start`, and the end of the window it was found in (None:
/// unbounded). etcd 3.4 walks the whole requested range of its index for a range request,
/// even with a limit of 1 (some releases under the index's read lock, which writes wait
/// for): asking for "the first key from `start` on" would walk every later key, once per
/// prefix. So the
/// search goes through small windows first, from the deepest byte of `start` outwards:
/// keys that share more of `start`, and at the first [`STEPPED_BYTES`] bytes of each path
/// segment one window per following letter (the next resource usually differs from the
/// last one there), each a request that walks only the keys inside it.
async fn next_key(
    client: &mut PacedClient<'_>,
    start: &[u8],
    revision: i64,
) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, etcd_client::Error> {
    let mut low = start.to_vec();
    for i in (0..start.len()).rev() {
        let segment = start[..i]
            .iter()
            .rposition(|b| *b == b'/')
            .map_or(0, |p| p + 1);
        // The end of the window of keys that have `letter` at byte `i`.
        let end_with = |letter: u8| match letter.checked_add(1) {
            Some(next) => Some([&start[..i], &[next]].concat()),
            None => increment(&start[..i]),
        };
        let highs: Vec<Option<Vec<u8>>> = if i - segment < STEPPED_BYTES {
            // Letter by letter up to `z` (resource names are `[a-z0-9.-]`), then the rest.
            (start[i]..=start[i].max(b'z'))
                .map(end_with)
                .chain([increment(&start[..i])])
                .collect()
        } else {
            vec![end_with(start[i])]
        };
        for high in highs {
            if high.as_ref().is_none_or(|high| *high > low) {
                let options = GetOptions::new().with_keys_only().with_limit(1);
                let options = match &high {
                    Some(high) => options.with_range(high.clone()),
                    None => options.with_from_key(),
                };
                let mut found = client
                    .get(low.clone(), options.with_revision(revision))
                    .await?;
                if let Some(kv) = found.take_kvs().into_iter().next() {
                    return Ok(Some((kv.key().to_vec(), high)));
                }
            }
            match high {
                Some(high) => low = high,
                None => return Ok(None),
            }
        }
    }
    Ok(None)
}

/// The smallest key past every key that starts with `prefix`; None when there is none.
fn increment(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|b| *b != u8::MAX)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// The `/<root>/<resource>` prefix of a key, as the key's own bytes (so that the range
/// `<prefix>/…` holds exactly the keys with this prefix), or None for keys of another
/// shape or a prefix that is not UTF-8 (those are counted under [`OTHER`]).
fn resource_prefix(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(b"/")?;
    let root = rest.iter().position(|b| *b == b'/')?;
    let resource = rest[root + 1..].iter().position(|b| *b == b'/')?;
    if root == 0 || resource == 0 {
        return None;
    }
    std::str::from_utf8(&key[..1 + root + 1 + resource]).ok()
}

/// `(provider, key name)` from kube-apiserver's `k8s:enc:<provider>:<version>:<key name>:` prefix.
pub fn encryption_of(value: &[u8]) -> Option<(String, String)> {
    let rest = value.strip_prefix(b"k8s:enc:")?;
    let mut fields = rest.splitn(4, |b| *b == b':');
    let provider = std::str::from_utf8(fields.next()?).ok()?;
    let version = fields.next()?;
    let name = std::str::from_utf8(fields.next()?).ok()?;
    fields.next()?;
    (version.first() == Some(&b'v')).then(|| (provider.to_string(), name.to_string()))
}

/// Length of the `k8s:enc:<provider>:<version>:<key name>:` prefix of an encrypted value.
pub fn encryption_prefix_len(value: &[u8]) -> Option<usize> {
    let (provider, name) = encryption_of(value)?;
    let version_len = value[8 + provider.len() + 1..]
        .iter()
        .position(|b| *b == b':')?;
    Some(8 + provider.len() + 1 + version_len + 1 + name.len() + 1)
}

/// Reads the facts at `revision`; with `keep_samples`, also the sampled encrypted values.
/// With a `pacer`, requests that etcd answers slowly are followed by a pause.
pub async fn read(
    client: &mut Client,
    revision: i64,
    keep_samples: bool,
    pacer: Option<RequestPacer>,
) -> Result<(ContentFacts, Vec<EncryptedValue>), etcd_client::Error> {
    let mut client = PacedClient { client, pacer };
    let client = &mut client;
    let mut facts = ContentFacts {
        revision,
        ..ContentFacts::default()
    };
    // A skip scan: the first key past `start` names a resource prefix; a count-only
    // request (answered from etcd's in-memory index, no values read) counts the whole
    // prefix, and the scan jumps past it. A keys-only range would make etcd read every
    // value from disk and compete with the snapshot. Keys outside the
    // `/<root>/<resource>/…` shape are listed a page at a time.
    let mut start = vec![0u8];
    while let Some((key, window_end)) = next_key(client, &start, revision).await? {
        if let Some(prefix) = resource_prefix(&key) {
            // The key starts with `range`, so its end lies past the key: the scan advances.
            let range = format!("{prefix}/");
            let options = GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_revision(revision);
            let count = client.get(range.as_str(), options).await?.count();
            facts.add(prefix.to_string(), u64::try_from(count).unwrap_or_default());
            let Some(end) = increment(range.as_bytes()) else {
                break; // unreachable: `range` ends in '/'
            };
            start = end;
            continue;
        }
        // Within the window `key` was found in, up to the next key that has a prefix.
        let options = GetOptions::new().with_keys_only().with_limit(PAGE);
        let options = match window_end {
            Some(end) => options.with_range(end),
            None => options.with_from_key(),
        };
        let mut page = client.get(key, options.with_revision(revision)).await?;
        for kv in page.take_kvs() {
            if resource_prefix(kv.key()).is_some() {
                break;
            }
            facts.add(OTHER.to_string(), 1);
            start = kv.key().to_vec();
            start.push(0);
        }
    }

    let mut samples = Vec::new();
    let mut uses: BTreeMap<(String, String), EncryptionUse> = BTreeMap::new();
    let mut budget = SAMPLE_BYTES;
    for prefix in facts.prefixes.keys().filter(|p| p.as_str() != OTHER) {
        if budget == 0 {
            break;
        }
        let options = GetOptions::new()
            .with_prefix()
            .with_limit(SAMPLE_PER_PREFIX)
            .with_revision(revision);
        let mut found = client.get(format!("{prefix}/"), options).await?;
        for kv in found.take_kvs() {
            budget = budget.saturating_sub(kv.value().len());
            let Some((provider, key_name)) = encryption_of(kv.value()) else {
                continue;
            };
            let used = uses
                .entry((provider.clone(), key_name.clone()))
                .or_insert_with(|| EncryptionUse {
                    provider: provider.clone(),
                    key: key_name.clone(),
                    prefixes: Vec::new(),
                    sampled: 0,
                });
            used.sampled += 1;
            if used.prefixes.last() != Some(prefix) {
                used.prefixes.push(prefix.clone());
            }
            if keep_samples {
                samples.push(EncryptedValue {
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                    provider,
                    key_name,
                });
            }
        }
    }
    facts.encryption = uses.into_values().collect();
    Ok((facts, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_encryption_markers() {
        assert_eq!(
            resource_prefix(b"/kubernetes.io/secrets/ns/name"),
            Some("/kubernetes.io/secrets")
        );
        assert_eq!(
            resource_prefix(b"/openshift.io/routes/ns/r"),
            Some("/openshift.io/routes")
        );
        assert_eq!(
            resource_prefix(b"/registry/pods/default/p"),
            Some("/registry/pods")
        );
        assert_eq!(
            resource_prefix(b"/kubernetes.io/ranges/serviceips"),
            Some("/kubernetes.io/ranges")
        );
        assert_eq!(resource_prefix(b"/short/key"), None);
        assert_eq!(resource_prefix(b"plain"), None);
        assert_eq!(resource_prefix(b"//pods/x"), None);
        assert_eq!(resource_prefix(b"/registry//x"), None);
        assert_eq!(resource_prefix(b"/registry/pods/"), Some("/registry/pods"));
        // Not UTF-8: replacing the bytes would name a range that does not hold the key
        // (and could send the skip scan backwards), so it is counted one by one.
        assert_eq!(resource_prefix(b"/registry/\xff\xfe/x"), None);
        assert_eq!(
            resource_prefix(b"/registry/pods/\xff"),
            Some("/registry/pods")
        );

        assert_eq!(
            increment(b"/registry/pods/"),
            Some(b"/registry/pods0".to_vec())
        );
        assert_eq!(increment(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(increment(b"\xff"), None);
        assert_eq!(increment(b""), None);

        let value = b"k8s:enc:aescbc:v1:key1:\x00\x01binary";
        assert_eq!(
            encryption_of(value),
            Some(("aescbc".to_string(), "key1".to_string()))
        );
        assert_eq!(encryption_prefix_len(value), Some(23));
        assert_eq!(&value[23..], b"\x00\x01binary");
        assert_eq!(
            encryption_of(b"k8s:enc:kms:v2:vault:rest"),
            Some(("kms".to_string(), "vault".to_string()))
        );
        assert_eq!(encryption_of(b"k8s\x00\x0a\x02v1"), None);
        assert_eq!(encryption_of(b"k8s:enc:aescbc:v1:no-end"), None);
    }
}
