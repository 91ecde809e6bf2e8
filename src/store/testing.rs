//! A fault-injecting object store for unit tests: an in-memory store that fails, or
//! succeeds but reports a failure, on the Nth call of a given kind, and can play a store
//! that keeps what it is told to delete.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

use super::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Put,
    /// Starting a multipart upload.
    Upload,
    Get,
    Head,
    Delete,
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails without effect (a network error before the request arrived).
    Fail,
    /// The call takes effect, then reports a failure (a lost response).
    SucceedButFail,
    /// The store refuses (permission denied, object lock).
    Refuse,
    /// The answer is cut short (a connection reset in the middle of a response body).
    CutShort,
}

#[derive(Debug, Default)]
struct State {
    counts: HashMap<Op, usize>,
    faults: Vec<(Op, usize, Fault)>,
    /// Deletes answer success and remove nothing.
    keep_deleted: bool,
    /// Create-only writes overwrite (a store or proxy that ignores If-None-Match).
    ignore_create_only: bool,
}

#[derive(Debug, Clone, Default)]
pub struct FaultyStore {
    inner: Arc<InMemory>,
    state: Arc<Mutex<State>>,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore")
    }
}

impl FaultyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A target over this store (one shares its objects with every other such target).
    pub fn target(&self, url: &str) -> Target {
        Target::from_store(Arc::new(self.clone()), url)
    }

    /// The `nth` (1-based, counted from now) call of `op` meets `fault`.
    pub fn inject(&self, op: Op, nth: usize, fault: Fault) {
        let mut state = self.state.lock().unwrap();
        let base = state.counts.get(&op).copied().unwrap_or(0);
        state.faults.push((op, base + nth, fault));
    }

    pub fn keep_deleted(&self, keep: bool) {
        self.state.lock().unwrap().keep_deleted = keep;
    }

    pub fn ignore_create_only(&self, ignore: bool) {
        self.state.lock().unwrap().ignore_create_only = ignore;
    }

    /// Keys in the store, sorted.
    pub async fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .inner
            .list(None)
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        keys.sort();
        keys
    }

    fn hit(&self, op: Op) -> Option<Fault> {
        let mut state = self.state.lock().unwrap();
        let count = state.counts.entry(op).or_default();
        *count += 1;
        let n = *count;
        state
            .faults
            .iter()
            .find(|(o, at, _)| *o == op && *at == n)
            .map(|(_, _, f)| *f)
    }
}

fn injected(path: &Path, fault: Fault) -> object_store::Error {
    match fault {
        Fault::Refuse => object_store::Error::PermissionDenied {
            path: path.to_string(),
            source: "injected refusal".into(),
        },
        // object_store's words for a response body that ended early.
        Fault::CutShort => object_store::Error::Generic {
            store: "FaultyStore",
            source: "Error getting list response body: HTTP error: request or response body error"
                .into(),
        },
        _ => object_store::Error::Generic {
            store: "FaultyStore",
            source: "injected failure".into(),
        },
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> Result<PutResult> {
        if self.state.lock().unwrap().ignore_create_only {
            opts.mode = object_store::PutMode::Overwrite;
        }
        match self.hit(Op::Put) {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(Fault::SucceedButFail) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected(location, Fault::SucceedButFail))
            }
            Some(fault) => Err(injected(location, fault)),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        match self.hit(Op::Upload) {
            None => self.inner.put_multipart_opts(location, opts).await,
            Some(Fault::SucceedButFail) => {
                let _ = self.inner.put_multipart_opts(location, opts).await?;
                Err(injected(location, Fault::SucceedButFail))
            }
            Some(fault) => Err(injected(location, fault)),
        }
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let op = if options.head { Op::Head } else { Op::Get };
        match self.hit(op) {
            None | Some(Fault::SucceedButFail) => self.inner.get_opts(location, options).await,
            Some(fault) => Err(injected(location, fault)),
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let this = self.clone();
        locations
            .then(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    let keep = this.state.lock().unwrap().keep_deleted;
                    match this.hit(Op::Delete) {
                        None if keep => Ok(location),
                        None => this.inner.delete(&location).await.map(|()| location),
                        Some(Fault::SucceedButFail) => {
                            this.inner.delete(&location).await?;
                            Err(injected(&location, Fault::SucceedButFail))
                        }
                        Some(fault) => Err(injected(&location, fault)),
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.hit(Op::List) {
            None | Some(Fault::SucceedButFail) => self.inner.list(prefix),
            Some(fault) => {
                let path = prefix.cloned().unwrap_or_default();
                futures::stream::once(async move { Err(injected(&path, fault)) }).boxed()
            }
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
