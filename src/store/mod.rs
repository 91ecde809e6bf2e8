//! One storage interface over object_store: target URLs, per-backend options, object
//! operations and file:// safety. It knows nothing of backups: the repository
//! ([`crate::repo`]) decides what the objects mean.

mod local;
#[cfg(test)]
pub(crate) mod testing;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};
use url::Url;

use crate::config::TargetConfig;
use crate::error::one_line;

/// Upload part size, above S3's and GCS's 5 MiB minimum. With [`UPLOAD_CONCURRENCY`] it
/// bounds upload buffers at 24 MiB (3 parts in flight, 1 filling), and allows objects up
/// to 60 GiB within the 10,000-part limit: a 180 GiB database at zstd's usual 3x.
pub const PART_SIZE: usize = 6 * 1024 * 1024;
/// Parts in flight at once: the compressed stream (~30-60 MB/s on 2 cores) fits in fewer.
pub const UPLOAD_CONCURRENCY: usize = 3;
/// Largest small object read whole (manifest, lock record): anything bigger is damaged or hostile.
pub const SMALL_OBJECT_CAP: u64 = 1024 * 1024;

/// What went wrong with a storage operation, kept apart so prune can report "denied".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    NotFound,
    AlreadyExists,
    Denied,
    /// A small object above [`SMALL_OBJECT_CAP`]: damaged, or not written by etcd-offsite.
    TooLarge,
    Other,
}

/// Calls whose answer was cut short are made this many times at most.
const CUT_SHORT_TRIES: u32 = 3;

/// A storage operation failed; the message is one line without server bodies or credentials.
#[derive(Debug, thiserror::Error)]
#[error("{op} {location} failed: {reason}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub op: &'static str,
    pub location: String,
    pub reason: String,
}

impl StoreError {
    /// The store's answer ended early (object_store: "… response body …").
    fn cut_short(&self) -> bool {
        self.kind == StoreErrorKind::Other && self.reason.contains("response body")
    }
}

/// A configured storage target: an object store plus the key prefix from its URL.
#[derive(Debug, Clone)]
pub struct Target {
    store: Arc<dyn ObjectStore>,
    /// The same store's page-by-page listing (every cloud backend), so that a delimiter
    /// listing can stop after a bounded number of pages.
    pager: Option<Pager>,
    prefix: Path,
    url: String,
    /// The directory of a file:// target (canonical: symlinks below it are never followed).
    local_dir: Option<std::path::PathBuf>,
}

/// A cloud store's page-by-page listing.
#[derive(Clone)]
struct Pager(Arc<dyn PaginatedListStore>);

impl std::fmt::Debug for Pager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pager")
    }
}

/// Names per page of a delimiter listing: S3's and Azure's largest page.
const LIST_PAGE: usize = 1000;

/// The prefixes found by a bounded delimiter listing.
#[derive(Debug, Default)]
pub struct PrefixListing {
    /// At most the limit asked for, in the store's order.
    pub names: Vec<String>,
    /// The store holds more than the limit (the listing stopped there).
    pub more: bool,
}

/// Two target configs name one location only when URL and options both match (the same
/// URL with another endpoint or account is another store).
pub fn same_location(a: &TargetConfig, b: &TargetConfig) -> bool {
    a.url == b.url && a.options == b.options
}

/// An object below a target's prefix.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Key relative to the target URL, e.g. `prod/20261123T104649Z/manifest.json`.
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// The URL without user info or query (which may carry credentials).
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<unparseable url>".to_string(),
    }
}

fn retry_config() -> RetryConfig {
    // object_store's default (10 retries, 180 s) keeps a CLI silent for minutes.
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 4,
        retry_timeout: Duration::from_secs(60),
    }
}

/// The CAs of a target's `ca_file` (PEM), trusted in addition to the system's.
fn root_certificates(path: &std::path::Path) -> Result<Vec<object_store::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "ca_file {}: cannot read it ({e}); mount or copy the CA bundle there",
            path.display()
        )
    })?;
    let certificates = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
        format!(
            "ca_file {}: not a PEM bundle ({})",
            path.display(),
            one_line(&e)
        )
    })?;
    if certificates.is_empty() {
        return Err(format!(
            "ca_file {}: holds no certificate; it must hold the CA's PEM (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates)
}

macro_rules! cloud_store {
    ($builder:ty, $key:ty, $env_prefix:expr, $url:expr, $config:expr, $certificates:expr) => {{
        // Client settings (timeouts, proxy, allow_http) come from object_store's defaults,
        // then its environment variables (AWS_*, GOOGLE_*, AZURE_*, HTTP(S)_PROXY), then
        // the target's options. The client options are built here so that they can carry
        // the target's CAs: the environment's client keys are applied to them first.
        type Key = $key;
        let mut client = object_store::ClientOptions::new();
        for certificate in $certificates {
            client = client.with_root_certificate(certificate);
        }
        for (name, value) in std::env::vars() {
            if !name.starts_with($env_prefix) {
                continue;
            }
            if let Ok(Key::Client(key)) = Key::from_str(&name.to_ascii_lowercase()) {
                client = client.with_config(key, value);
            }
        }
        let mut builder = <$builder>::from_env()
            .with_client_options(client)
            .with_url($url)
            .with_retry(retry_config());
        for (key, value) in &$config.options {
            // Keys were validated when the config was loaded.
            if let Ok(key) = <$key>::from_str(&key.to_ascii_lowercase()) {
                builder = builder.with_config(key, value.clone());
            }
        }
        builder.build().map(|s| {
            let s = Arc::new(s);
            (
                s.clone() as Arc<dyn ObjectStore>,
                Some(Pager(s as Arc<dyn PaginatedListStore>)),
            )
        })
    }};
}

impl Target {
    /// Opens a target; file:// directories must exist (an unmounted NFS share must not fill `/`).
    pub fn open(config: &TargetConfig) -> Result<Self, StoreError> {
        let url_text = redact_url(&config.url);
        let fail = |reason: String| StoreError {
            kind: StoreErrorKind::Other,
            op: "open",
            location: url_text.clone(),
            reason,
        };
        let url = Url::parse(&config.url).map_err(|e| fail(e.to_string()))?;
        let mut local_dir = None;
        let (store, pager, prefix) = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| fail("not a local path".into()))?;
                if !dir.is_dir() {
                    return Err(fail(format!(
                        "directory {} does not exist; mount the NFS share or create the directory",
                        dir.display()
                    )));
                }
                let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| fail(one_line(&e)))?
                    .with_automatic_cleanup(true)
                    // The manifest must never reach the disk before the data it describes.
                    .with_fsync(true);
                local_dir = Some(dir.canonicalize().map_err(|e| fail(e.to_string()))?);
                (
                    Arc::new(local) as Arc<dyn ObjectStore>,
                    None,
                    Path::default(),
                )
            }
            scheme => {
                let bucket_url = format!("{scheme}://{}", url.host_str().unwrap_or_default());
                // AWS_CA_BUNDLE, as the AWS CLI and SDKs read it, for S3 targets without one.
                let aws_ca_bundle = std::env::var_os("AWS_CA_BUNDLE")
                    .filter(|p| scheme == "s3" && !p.is_empty())
                    .map(std::path::PathBuf::from);
                let certificates = match config.ca_file.as_ref().or(aws_ca_bundle.as_ref()) {
                    Some(path) => root_certificates(path).map_err(fail)?,
                    None => Vec::new(),
                };
                if scheme == "s3"
                    && let Some(problem) = s3_without_credentials(config)
                {
                    return Err(fail(problem));
                }
                let (store, pager) = match scheme {
                    "s3" => cloud_store!(
                        object_store::aws::AmazonS3Builder,
                        object_store::aws::AmazonS3ConfigKey,
                        "AWS_",
                        bucket_url,
                        config,
                        certificates
                    ),
                    "gs" => cloud_store!(
                        object_store::gcp::GoogleCloudStorageBuilder,
                        object_store::gcp::GoogleConfigKey,
                        "GOOGLE_",
                        bucket_url,
                        config,
                        certificates
                    ),
                    "az" | "azure" => cloud_store!(
                        object_store::azure::MicrosoftAzureBuilder,
                        object_store::azure::AzureConfigKey,
                        "AZURE_",
                        bucket_url,
                        config,
                        certificates
                    ),
                    other => return Err(fail(format!("unsupported scheme {other}"))),
                }
                .map_err(|e| fail(explain(&e)))?;
                let prefix =
                    Path::parse(url.path().trim_matches('/')).map_err(|e| fail(one_line(&e)))?;
                (store, pager, prefix)
            }
        };
        Ok(Self {
            store,
            pager,
            prefix,
            url: url_text,
            local_dir,
        })
    }

    /// A target over any object store (tests wrap an in-memory store with faults).
    #[cfg(test)]
    pub(crate) fn from_store(store: Arc<dyn ObjectStore>, url: &str) -> Self {
        Self {
            store,
            pager: None,
            prefix: Path::default(),
            url: url.to_string(),
            local_dir: None,
        }
    }

    /// Removes uploads a killed process left unfinished, older than `before`; returns their keys.
    ///
    /// On file:// targets these are object_store's staging files (`<name>#<n>`), which
    /// `list` never shows. Cloud stores keep unfinished multipart uploads out of sight of
    /// object_store too; there a lifecycle rule (S3 `AbortIncompleteMultipartUpload`,
    /// GCS/Azure expiry of uncommitted data) is what removes them.
    pub fn remove_stale_uploads(
        &self,
        cluster: &str,
        before: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let Some(root) = &self.local_dir else {
            return Ok(Vec::new());
        };
        let fail = |e: std::io::Error| StoreError {
            kind: StoreErrorKind::Other,
            op: "sweep",
            location: format!("{}/{cluster}", self.url()),
            reason: e.to_string(),
        };
        let mut removed = Vec::new();
        for file in local::walk(root, cluster).map_err(fail)? {
            let name = file.key.rsplit('/').next().unwrap_or_default();
            let staging = name
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            // `<cluster>/<id>/<name>#<n>` only: nothing else is a staging file of ours.
            if staging && file.key.split('/').count() == 3 && file.last_modified < before {
                local::remove_file(root, &file.key).map_err(fail)?;
                removed.push(file.key);
            }
        }
        Ok(removed)
    }

    /// The target URL without credentials (and without a trailing slash, so that one
    /// location has one spelling).
    pub fn url(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    fn path(&self, key: &str) -> Path {
        key.split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    fn relative(&self, path: &Path) -> String {
        let full = path.as_ref();
        let prefix = self.prefix.as_ref();
        if prefix.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(prefix)
                .map(|rest| rest.trim_start_matches('/').to_string())
                .unwrap_or_else(|| full.to_string())
        }
    }

    fn error(&self, op: &'static str, key: &str, err: &object_store::Error) -> StoreError {
        let kind = match err {
            object_store::Error::NotFound { .. } => StoreErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => StoreErrorKind::AlreadyExists,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StoreErrorKind::Denied,
            other if refused_in_detail(other) => StoreErrorKind::Denied,
            _ => StoreErrorKind::Other,
        };
        StoreError {
            kind,
            op,
            location: format!("{}/{key}", self.url()),
            reason: explain(err),
        }
    }

    /// Writes a small object only if none exists; Ok(false) when one does.
    pub async fn create(&self, key: &str, bytes: Bytes) -> Result<bool, StoreError> {
        if let Some(root) = self.local_dir.clone() {
            let owned = key.to_string();
            return self
                .local_io("create", key, move || local::create(&root, &owned, &bytes))
                .await;
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(key), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match self.error("create", key, &e) {
                err if err.kind == StoreErrorKind::AlreadyExists => Ok(false),
                err => Err(err),
            },
        }
    }

    /// Calls `call` again (at most [`CUT_SHORT_TRIES`] times in all) while the store's
    /// answer is cut short: object_store retries a request that fails, not a response body
    /// that ends early (a reset connection), and these calls are safe to repeat.
    async fn again_if_cut_short<T, F, Fut>(&self, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut tries = 1;
        loop {
            match call().await {
                Err(e) if e.cut_short() && tries < CUT_SHORT_TRIES => {
                    tracing::warn!(error = %e, "the store's answer was cut short; asking again");
                    tokio::time::sleep(Duration::from_millis(200 * tries as u64)).await;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Reads a small object whole (manifests, locks), refusing one above [`SMALL_OBJECT_CAP`].
    pub async fn read(&self, key: &str) -> Result<Bytes, StoreError> {
        self.again_if_cut_short(|| self.read_once(key)).await
    }

    async fn read_once(&self, key: &str) -> Result<Bytes, StoreError> {
        self.local_guard("read", key)?;
        let result = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| self.error("read", key, &e))?;
        let too_large = || StoreError {
            kind: StoreErrorKind::TooLarge,
            op: "read",
            location: format!("{}/{key}", self.url()),
            reason: format!(
                "larger than {SMALL_OBJECT_CAP} bytes, which no record etcd-offsite writes is; the object is damaged or was not written by etcd-offsite"
            ),
        };
        if result.meta.size > SMALL_OBJECT_CAP {
            return Err(too_large());
        }
        let mut stream = result.into_stream();
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error("read", key, &e))?;
            // The store's size may lie: stop reading past the cap either way.
            if body.len() as u64 + chunk.len() as u64 > SMALL_OBJECT_CAP {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }

    /// Whether an object exists (a store that keeps what it was told to delete).
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.head(key).await?.is_some())
    }

    /// An object's size and modification time (by the store's clock), or None when it
    /// does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<StoredObject>, StoreError> {
        self.local_guard("head", key)?;
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(StoredObject {
                key: key.to_string(),
                size: meta.size,
                last_modified: meta.last_modified,
            })),
            Err(e) => match self.error("head", key, &e) {
                err if err.kind == StoreErrorKind::NotFound => Ok(None),
                err => Err(err),
            },
        }
    }

    /// On file:// targets, refuses a key whose path passes through a symbolic link or is
    /// not a regular file: nothing outside the target is ever read or deleted.
    fn local_guard(&self, op: &'static str, key: &str) -> Result<(), StoreError> {
        let Some(root) = &self.local_dir else {
            return Ok(());
        };
        local::check_inside(root, key).map_err(|reason| StoreError {
            kind: StoreErrorKind::Denied,
            op,
            location: format!("{}/{key}", self.url()),
            reason,
        })
    }

    /// Runs a file:// write on a blocking thread; its io::Error becomes a [`StoreError`]
    /// (a refusal for a link, a read-only or denied file system).
    async fn local_io<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        write: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let fail = |e: std::io::Error| StoreError {
            kind: match e.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    StoreErrorKind::Denied
                }
                _ => StoreErrorKind::Other,
            },
            op,
            location: format!("{}/{key}", self.url()),
            reason: e.to_string(),
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| fail(std::io::Error::other(e.to_string())))?
            .map_err(fail)
    }

    /// Streams an object; the size comes from the store.
    pub async fn read_stream(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, StoreError>>), StoreError> {
        self.local_guard("read", key)?;
        let result = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| self.error("read", key, &e))?;
        let size = result.meta.size;
        let this = self.clone();
        let key = key.to_string();
        let stream = result
            .into_stream()
            .map_err(move |e| this.error("read", &key, &e))
            .boxed();
        Ok((size, stream))
    }

    /// Every object below `dir` (relative key), recursively.
    /// On file:// targets symbolic links are skipped, never followed, and so are names
    /// that are not UTF-8 (with a warning): one odd entry never fails a listing.
    pub async fn list(&self, dir: &str) -> Result<Vec<StoredObject>, StoreError> {
        self.again_if_cut_short(|| self.list_once(dir)).await
    }

    async fn list_once(&self, dir: &str) -> Result<Vec<StoredObject>, StoreError> {
        if let Some(root) = &self.local_dir {
            let root = root.clone();
            let dir_key = dir.trim_matches('/').to_string();
            let fail = |reason: String| StoreError {
                kind: StoreErrorKind::Other,
                op: "list",
                location: format!("{}/{dir}", self.url()),
                reason,
            };
            let objects = tokio::task::spawn_blocking(move || local::walk(&root, &dir_key))
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(e.to_string()))?;
            // Unfinished uploads are not objects (object_store's own listing hides them too).
            return Ok(objects
                .into_iter()
                .filter(|o| !local::is_staging(o.key.rsplit('/').next().unwrap_or_default()))
                .collect());
        }
        let prefix = self.path(dir);
        self.store
            .list(Some(&prefix))
            .map(|meta| {
                meta.map(|m| StoredObject {
                    key: self.relative(&m.location),
                    size: m.size,
                    last_modified: m.last_modified,
                })
                .map_err(|e| self.error("list", dir, &e))
            })
            .try_collect()
            .await
    }

    /// The names of the "directories" directly below `dir` (a delimiter listing: one
    /// request per 1,000 names on S3, whatever lies below them). On file:// targets only
    /// real directories count: symbolic links and names that are not UTF-8 are skipped.
    /// At most `limit` names: the listing stops after the page (or directory entry) that
    /// passes it and says that there are more.
    pub async fn list_prefixes(
        &self,
        dir: &str,
        limit: usize,
    ) -> Result<PrefixListing, StoreError> {
        let fail = |reason: String| StoreError {
            kind: StoreErrorKind::Other,
            op: "list",
            location: format!("{}/{dir}", self.url()),
            reason,
        };
        let mut listing = PrefixListing::default();
        if let Some(root) = &self.local_dir {
            let root = root.clone();
            let dir_key = dir.trim_matches('/').to_string();
            listing.names = tokio::task::spawn_blocking(move || {
                local::subdirectories(&root, &dir_key, limit + 1)
            })
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        } else if let Some(pager) = &self.pager {
            // Page by page, so that a prefix holding millions of names costs a few calls.
            let prefix = self.path(dir);
            let prefix = match prefix.as_ref() {
                "" => None,
                p => Some(format!("{p}{}", object_store::path::DELIMITER)),
            };
            let mut token = None;
            loop {
                let page = self
                    .again_if_cut_short(|| async {
                        let options = PaginatedListOptions {
                            delimiter: Some(object_store::path::DELIMITER.into()),
                            max_keys: Some(LIST_PAGE.min(limit + 1)),
                            page_token: token.clone(),
                            ..Default::default()
                        };
                        pager
                            .0
                            .list_paginated(prefix.as_deref(), options)
                            .await
                            .map_err(|e| self.error("list", dir, &e))
                    })
                    .await?;
                listing.names.extend(
                    page.result
                        .common_prefixes
                        .iter()
                        .filter_map(|p| p.filename().map(str::to_string)),
                );
                token = page.page_token.filter(|t| !t.is_empty());
                if token.is_none() || listing.names.len() > limit {
                    break;
                }
            }
        } else {
            let prefix = self.path(dir);
            let listed = self
                .again_if_cut_short(|| async {
                    self.store
                        .list_with_delimiter((!prefix.as_ref().is_empty()).then_some(&prefix))
                        .await
                        .map_err(|e| self.error("list", dir, &e))
                })
                .await?;
            listing.names = listed
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect();
        }
        if listing.names.len() > limit {
            listing.names.truncate(limit);
            listing.more = true;
        }
        Ok(listing)
    }

    /// Deletes an object; one that is already gone is not an error. A conflict (HTTP 409:
    /// an Azure blob under an immutability policy or a lease) is a refusal, [`StoreErrorKind::Denied`].
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.local_guard("delete", key)?;
        match self.store.delete(&self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) => match self.error("delete", key, &e) {
                err if err.kind == StoreErrorKind::NotFound => Ok(()),
                mut err if err.kind == StoreErrorKind::AlreadyExists => {
                    err.kind = StoreErrorKind::Denied;
                    Err(err)
                }
                err => Err(err),
            },
        }
    }

    /// Starts a multipart upload with bounded part size and parts in flight.
    pub async fn upload(&self, key: &str) -> Result<Upload, StoreError> {
        if let Some(root) = self.local_dir.clone() {
            let owned = key.to_string();
            let upload = self
                .local_io("upload", key, move || {
                    local::LocalUpload::start(&root, &owned)
                })
                .await?;
            return Ok(Upload {
                parts: Parts::Local(Arc::new(upload)),
                target: self.clone(),
                key: key.to_string(),
            });
        }
        // An upload started twice leaves the first one unfinished, which the bucket's
        // lifecycle rule for incomplete multipart uploads removes.
        let upload = self
            .again_if_cut_short(|| async {
                self.store
                    .put_multipart(&self.path(key))
                    .await
                    .map_err(|e| self.error("upload", key, &e))
            })
            .await?;
        Ok(Upload {
            parts: Parts::Store(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            target: self.clone(),
            key: key.to_string(),
        })
    }
}

/// An object being uploaded in parts; it exists only once [`Upload::finish`] returns Ok.
#[must_use = "an upload must be finished or aborted"]
pub struct Upload {
    parts: Parts,
    target: Target,
    key: String,
}

/// Where the parts go: the store's multipart upload, or (file://) a staging file reached
/// without following links.
enum Parts {
    Store(WriteMultipart),
    Local(Arc<local::LocalUpload>),
}

impl Upload {
    /// Hands one part to the store, first waiting while [`UPLOAD_CONCURRENCY`] are in flight.
    pub async fn put(&mut self, part: Bytes) -> Result<(), StoreError> {
        match &mut self.parts {
            Parts::Store(parts) => {
                parts
                    .wait_for_capacity(UPLOAD_CONCURRENCY)
                    .await
                    .map_err(|e| self.target.error("upload", &self.key, &e))?;
                parts.put(part);
                Ok(())
            }
            Parts::Local(upload) => {
                let upload = upload.clone();
                self.target
                    .local_io("upload", &self.key, move || upload.put(&part))
                    .await
            }
        }
    }

    /// Completes the object. Parts still in flight are awaited first: when one has failed,
    /// completing would abort and report the abort's error (a dead store fails that too)
    /// instead of the part's.
    pub async fn finish(self) -> Result<(), StoreError> {
        let mut parts = match self.parts {
            Parts::Local(upload) => {
                return self
                    .target
                    .local_io("upload", &self.key, move || upload.finish())
                    .await;
            }
            Parts::Store(parts) => parts,
        };
        if let Err(e) = parts.wait_for_capacity(0).await {
            let err = self.target.error("upload", &self.key, &e);
            if let Err(e) = parts.abort().await {
                tracing::warn!(key = %self.key, error = %one_line(&e), "could not abort the upload; the store expires it");
            }
            return Err(err);
        }
        parts
            .finish()
            .await
            .map(drop)
            .map_err(|e| self.target.error("upload", &self.key, &e))
    }

    /// Gives the object up; where the store cannot abort, it expires the parts.
    pub async fn abort(self) {
        match self.parts {
            Parts::Store(parts) => {
                if let Err(e) = parts.abort().await {
                    tracing::warn!(key = %self.key, error = %one_line(&e), "could not abort the upload; the store expires it");
                }
            }
            Parts::Local(upload) => {
                let _ = self
                    .target
                    .local_io("upload", &self.key, move || {
                        upload.abort();
                        Ok(())
                    })
                    .await;
            }
        }
    }
}

/// Refusals that object_store reports as generic errors: on file:// targets an io::Error
/// EACCES/EPERM/EROFS (an immutable file, a read-only export) as the source; on S3 a key
/// of a bulk DeleteObjects answered with code AccessDenied (IAM deny, object lock), which
/// object_store only exposes in its message.
/// Where the S3 client looks for credentials, for the message when it finds none.
const S3_CREDENTIALS: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment (e.g. from a Secret) or `aws_access_key_id` and `aws_secret_access_key` in the target's options; on AWS, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN (IRSA) or an instance role also work";

/// An S3 target on an endpoint of its own (MinIO, Ceph RGW, NooBaa…) with no credentials
/// anywhere: object_store would ask AWS's instance metadata service for some and fail
/// with its address. Say what is missing instead.
fn s3_without_credentials(config: &TargetConfig) -> Option<String> {
    use object_store::aws::AmazonS3ConfigKey as S3;
    let option = |wanted: S3| {
        config.options.iter().any(|(k, v)| {
            !v.is_empty() && S3::from_str(&k.to_ascii_lowercase()).is_ok_and(|k| k == wanted)
        })
    };
    let env = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    let endpoint = option(S3::Endpoint) || env("AWS_ENDPOINT") || env("AWS_ENDPOINT_URL");
    let credentials = option(S3::AccessKeyId)
        || env("AWS_ACCESS_KEY_ID")
        || option(S3::SkipSignature)
        || env("AWS_SKIP_SIGNATURE")
        || env("AWS_WEB_IDENTITY_TOKEN_FILE")
        || env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    (endpoint && !credentials).then(|| format!("no credentials found: {S3_CREDENTIALS}"))
}

/// One line for a store error: what the server said (the S3 error code from the response
/// body) and what to do about it. Never the body itself, nor a URL's query.
pub fn explain(err: &object_store::Error) -> String {
    let line = one_line(err);
    let mut text = err.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        text.push_str(" | ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    let code = text
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
        .or_else(|| {
            text.split("(code: ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
        })
        .filter(|c| !c.is_empty() && c.len() < 64 && c.chars().all(|c| c.is_ascii_alphanumeric()));
    let hint = match code {
        Some("NoSuchBucket") => Some(
            "the bucket does not exist: create it, or correct the bucket in the target's url (and aws_endpoint / aws_region if it lives elsewhere)"
                .to_string(),
        ),
        Some("AccessDenied" | "AllAccessDisabled") => Some(
            "these credentials may not do this: grant them list, read, write and delete on the bucket and prefix (s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject)"
                .to_string(),
        ),
        Some("InvalidAccessKeyId") => Some(
            "the store knows no such access key: check AWS_ACCESS_KEY_ID or the target's aws_access_key_id, and that aws_endpoint is the store that issued it"
                .to_string(),
        ),
        Some("SignatureDoesNotMatch") => Some(
            "the secret key does not belong to the access key: check AWS_SECRET_ACCESS_KEY or the target's aws_secret_access_key (and aws_region)"
                .to_string(),
        ),
        Some("PermanentRedirect" | "AuthorizationHeaderMalformed") => Some(
            "the bucket is in another region: set aws_region to the bucket's region".to_string(),
        ),
        _ if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") => Some(
            "the store's TLS certificate is not signed by a CA this host trusts: set `ca_file` on this target to the PEM bundle of the CA that signed it".to_string(),
        ),
        _ if text.contains("169.254.169.254") || text.contains("169.254.170.2") => {
            Some(format!("no credentials found: {S3_CREDENTIALS}"))
        }
        _ if text.contains("URL scheme is not allowed")
            || (text.contains("builder error") && text.contains("http://")) => Some(
            "the endpoint is plain HTTP: add `aws_allow_http: \"true\"` (azure_allow_http, allow_http) to the target's options, or use https://".to_string(),
        ),
        _ => None,
    };
    match (code, hint) {
        (Some(code), Some(hint)) => format!("{line} ({code}: {hint})"),
        (None, Some(hint)) => format!("{line} ({hint})"),
        (Some(code), None) => format!("{line} ({code})"),
        (None, None) => line,
    }
}

fn refused_in_detail(err: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            );
        }
        source = e.source();
    }
    matches!(err, object_store::Error::Generic { store: "S3", .. })
        && err.to_string().contains("(code: AccessDenied)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_codes_come_with_the_fix() {
        let answer = |code: &str| object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other(format!(
                "Error performing GET http://s3.local/b?list-type=2&X-Amz-Signature=s1gn4tur3 in 5ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>"
            ))),
        };
        for (code, fix) in [
            ("InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"),
            ("SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"),
            ("AccessDenied", "s3:PutObject"),
            ("NoSuchBucket", "create it"),
        ] {
            let line = explain(&answer(code));
            assert!(
                line.contains(&format!("({code}: ")) && line.contains(fix),
                "{line}"
            );
            assert!(!line.contains('<') && !line.contains("s1gn4tur3"), "{line}");
        }
        let odd = explain(&answer("SomethingNew"));
        assert!(odd.ends_with("403 Forbidden (SomethingNew)"), "{odd}");
    }

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redact_url("s3://AKIA:secret@bucket/etcd?token=abc"),
            "s3://bucket/etcd"
        );
    }

    #[tokio::test]
    async fn answers_cut_short_are_asked_again_a_few_times() {
        use crate::store::testing::{Fault, FaultyStore, Op};
        let store = FaultyStore::new();
        let target = store.target("mem://t");
        assert!(target.create("c/1/m.json", Bytes::from("a")).await.unwrap());
        store.inject(Op::List, 1, Fault::CutShort);
        assert_eq!(target.list("c").await.unwrap().len(), 1);
        store.inject(Op::Get, 1, Fault::CutShort);
        store.inject(Op::Get, 2, Fault::CutShort);
        assert_eq!(target.read("c/1/m.json").await.unwrap(), "a");
        store.inject(Op::Upload, 1, Fault::CutShort);
        assert!(target.upload("c/1/s.age").await.is_ok());
        // Not forever: three answers cut short in a row fail the call.
        for nth in 1..=3 {
            store.inject(Op::List, nth, Fault::CutShort);
        }
        assert!(target.list("c").await.unwrap_err().cut_short());
        // Other failures are object_store's to retry, not asked again here.
        store.inject(Op::List, 1, Fault::Fail);
        assert!(target.list("c").await.is_err());
        assert_eq!(target.list("c").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn file_target_round_trip_and_create_only() {
        let dir = crate::scratch_dir();
        let url = Url::from_directory_path(dir.path()).unwrap().to_string();
        let target = Target::open(&TargetConfig {
            url,
            ..Default::default()
        })
        .unwrap();
        assert!(target.create("c/1/m.json", Bytes::from("a")).await.unwrap());
        assert!(!target.create("c/1/m.json", Bytes::from("b")).await.unwrap());
        assert_eq!(target.read("c/1/m.json").await.unwrap(), "a");
        let listed = target.list("c").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "c/1/m.json");
        target.delete("c/1/m.json").await.unwrap();
        target.delete("c/1/m.json").await.unwrap();
        assert!(target.list("c").await.unwrap().is_empty());
    }

    #[test]
    fn missing_directory_is_explained() {
        let err = Target::open(&TargetConfig {
            url: "file:///nonexistent/etcd-offsite".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.reason.contains("mount the NFS share"), "{err}");
    }
}
