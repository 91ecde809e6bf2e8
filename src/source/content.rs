//! Facts about what a snapshot holds, read from etcd at one revision: key counts per
//! resource prefix and the encryption providers the stored values use. Recorded in the
//! manifest at backup time and checked against a restored copy by `drill`.
//!
//! Cheap next to the snapshot itself: a count from etcd's index per prefix (a skip scan,
//! no values read), and a few values per prefix (a bounded sample) to read the `k8s:enc:<provider>:v1:<key name>:` prefixes that
//! kube-apiserver writes before encrypted values.

use std::collections::BTreeMap;

use etcd_client::{Client, GetOptions};
use serde::{Deserialize, Serialize};

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

/// The first key past every key that starts with `prefix` (which ends in `/`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
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
pub async fn read(
    client: &mut Client,
    revision: i64,
    keep_samples: bool,
) -> Result<(ContentFacts, Vec<EncryptedValue>), etcd_client::Error> {
    let mut facts = ContentFacts {
        revision,
        ..ContentFacts::default()
    };
    // A skip scan: the first key past `start` names a resource prefix; a count-only
    // request (answered from etcd's in-memory index, no values read) counts the whole
    // prefix, and the scan jumps past it. A keys-only range would make etcd read every
    // value from disk and compete with the snapshot. Keys outside the
    // `/<root>/<resource>/…` shape are listed in growing pages.
    let mut start = vec![0u8];
    let mut limit = 1;
    loop {
        let options = GetOptions::new()
            .with_from_key()
            .with_keys_only()
            .with_limit(limit)
            .with_revision(revision);
        let mut page = client.get(start.clone(), Some(options)).await?;
        let more = page.more();
        let kvs = page.take_kvs();
        let mut jumped = false;
        for kv in &kvs {
            let Some(prefix) = resource_prefix(kv.key()) else {
                facts.add(OTHER.to_string(), 1);
                start = kv.key().to_vec();
                start.push(0);
                continue;
            };
            // The key starts with `range`, so its end lies past the key: the scan advances.
            let range = format!("{prefix}/");
            let options = GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_revision(revision);
            let count = client.get(range.as_str(), Some(options)).await?.count();
            facts.add(prefix.to_string(), u64::try_from(count).unwrap_or_default());
            start = prefix_end(range.as_bytes());
            jumped = true;
            break;
        }
        if kvs.is_empty() || !(more || jumped) {
            break;
        }
        limit = if jumped { 1 } else { (limit * 2).min(PAGE) };
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
        let mut found = client.get(format!("{prefix}/"), Some(options)).await?;
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
