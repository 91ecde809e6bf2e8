//! The read side: stream an artifact, check its stored digest, and with an identity decrypt,
//! decompress and check the plaintext digest (and the etcd trailer) against the manifest.

use std::io::{self, BufReader, Read};
use std::path::Path;
use std::str::FromStr;

use bytes::Bytes;
use futures::stream::BoxStream;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::digest::{Hasher, HashingReader};
use crate::error::{IntegrityError, UsageError};
use crate::manifest::{Artifact, Digest};

/// A stored artifact's bytes as the repository hands them over, opened for reading.
pub type StoredBytes = BoxStream<'static, io::Result<Bytes>>;

/// age x25519 identities loaded from files; never printed.
#[derive(Default, Clone)]
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
}

impl Identities {
    /// Reads identity files (`age-keygen` output) with age's own parser, whose errors give
    /// a line number, never the line.
    pub fn load(files: &[impl AsRef<Path>]) -> Result<Self, UsageError> {
        let mut keys = Vec::new();
        for file in files {
            let file = file.as_ref();
            let unreadable =
                |e: io::Error| UsageError(format!("identity file {}: {e}", file.display()));
            let bytes = std::fs::read(file).map_err(|e| {
                UsageError(format!("cannot read identity file {}: {e}", file.display()))
            })?;
            // Validates every line (and the size cap) the way `age -d -i` does.
            age::IdentityFile::from_buffer(&bytes[..]).map_err(unreadable)?;
            // The file type hides its entries; the lines it accepted are x25519 identities
            // (plugins are not compiled in), so these parses cannot fail.
            let text = String::from_utf8_lossy(&bytes);
            let parsed: Vec<age::x25519::Identity> = text
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(|l| age::x25519::Identity::from_str(l).ok())
                .collect();
            if parsed.is_empty() {
                return Err(UsageError(format!(
                    "identity file {} holds no age identity (AGE-SECRET-KEY-1…); pass the file `age-keygen` wrote",
                    file.display()
                )));
            }
            keys.extend(parsed);
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// An identity whose recipient the artifact was encrypted to.
    pub fn for_artifact(&self, artifact: &Artifact) -> Option<age::x25519::Identity> {
        self.keys
            .iter()
            .find(|k| {
                let public = k.to_public().to_string();
                artifact.encryption.recipients.contains(&public)
            })
            .cloned()
    }
}

/// What [`fetch`] checked.
pub struct Fetched<T> {
    /// The consumer's result; None when no identity was given (stored bytes only).
    pub contents: Option<T>,
}

/// Why [`fetch`] failed, with the stored object's own failures kept apart from the rest.
#[derive(Debug)]
pub enum FetchError {
    /// The stored object is missing, or its size or SHA-256 differs from the manifest
    /// (found without an identity, before any contents are judged).
    Stored(IntegrityError),
    /// Anything else: the contents failed a check (an [`IntegrityError`] in the chain), the
    /// store could not be read, or the consumer failed.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for FetchError {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

impl From<FetchError> for anyhow::Error {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Stored(e) => e.into(),
            FetchError::Other(e) => e,
        }
    }
}

/// Reads `stored`, the bytes of `artifact`; any mismatch with the manifest is an
/// [`IntegrityError`].
///
/// With an identity, `consume` reads the plaintext (whatever it leaves unread is drained and
/// hashed too). Its result is only trustworthy once this returns Ok.
pub async fn fetch<T, C>(
    stored: StoredBytes,
    artifact: &Artifact,
    identity: Option<age::x25519::Identity>,
    etcd_trailer: bool,
    consume: C,
) -> Result<Fetched<T>, FetchError>
where
    T: Send + 'static,
    C: FnOnce(&mut dyn Read) -> io::Result<T> + Send + 'static,
{
    let key = artifact.key.clone();
    let reader = SyncIoBridge::new(StreamReader::new(stored));
    let expected = artifact.clone();
    tokio::task::spawn_blocking(move || {
        let mut stored = FlaggingReader::new(HashingReader {
            inner: Bounded::new(reader, "stored object", expected.stored.size),
            hasher: Hasher::default(),
        });
        let oversized = |failed: Option<&io::Error>| {
            failed
                .and_then(overflow)
                .map(|o| FetchError::Stored(IntegrityError(format!("{key}: {o}"))))
        };
        let check_stored = |stored: &mut FlaggingReader<HashingReader<_>>| {
            let drained = drain(stored, &key);
            if let Some(e) = oversized(stored.failed.as_ref()) {
                return Err(e);
            }
            drained?;
            let digest = std::mem::take(&mut stored.inner.hasher).finish();
            compare(
                &key,
                "stored",
                &expected.stored,
                digest.map_err(anyhow::Error::from)?,
            )
            .map_err(FetchError::Stored)
        };
        let contents = match identity {
            Some(identity) => {
                let decoded = decode(
                    &mut stored,
                    &identity,
                    etcd_trailer,
                    expected.plaintext.size,
                    consume,
                );
                if let Some(e) = oversized(stored.failed.as_ref()) {
                    return Err(e);
                }
                if let Some(e) = stored.failed.take() {
                    return Err(anyhow::Error::new(e)
                        .context(format!("reading {key}"))
                        .into());
                }
                // A truncated or altered object usually fails decryption first;
                // the stored digest says which it was.
                check_stored(&mut stored)?;
                match decoded {
                    Ok((contents, plaintext)) => {
                        compare(&key, "plaintext", &expected.plaintext, plaintext)
                            .map_err(anyhow::Error::from)?;
                        Some(contents)
                    }
                    Err(e) if crate::error::exit_kind(&e) == crate::error::ExitKind::Integrity => {
                        return Err(e.context(format!("checking the contents of {key}")).into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                check_stored(&mut stored)?;
                None
            }
        };
        Ok(Fetched { contents })
    })
    .await
    .map_err(|e| FetchError::Other(e.into()))?
}

/// Remembers a read error, so that errors of the reader are kept apart from the consumer's
/// (a network blip or a full disk is not corruption).
struct FlaggingReader<R> {
    inner: R,
    failed: Option<io::Error>,
}

impl<R> FlaggingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            failed: None,
        }
    }
}

impl<R: Read> Read for FlaggingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            // The original is kept (an [`Overflow`] is told apart by its type).
            let copy = io::Error::new(e.kind(), e.to_string());
            self.failed = Some(e);
            copy
        })
    }
}

/// More bytes than the manifest records: a replaced object, or a decompression bomb.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {what} is longer than the {limit} bytes the manifest records (replaced, or a decompression bomb); reading stopped there"
)]
struct Overflow {
    what: &'static str,
    limit: u64,
}

/// The [`Overflow`] an error of a [`Bounded`] reader carries.
fn overflow(e: &io::Error) -> Option<&Overflow> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Overflow>())
}

/// Hands over at most `limit` bytes: it asks `inner` for one more, to see that more was
/// there, and fails with an [`Overflow`] instead of passing it on, so no consumer (a
/// restore's `--to`, a drill's scratch disk) ever gets more than the manifest records.
struct Bounded<R> {
    inner: R,
    what: &'static str,
    limit: u64,
    left: u64,
}

impl<R> Bounded<R> {
    fn new(inner: R, what: &'static str, limit: u64) -> Self {
        Self {
            inner,
            what,
            limit,
            left: limit,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let asked = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..asked])?;
        if n as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Overflow {
                    what: self.what,
                    limit: self.limit,
                },
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn drain(stored: &mut impl Read, key: &str) -> anyhow::Result<()> {
    match io::copy(stored, &mut io::sink()) {
        Ok(_) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {key}"))),
    }
}

/// Decrypted (still compressed) bytes handed from the decrypting thread to the
/// decompressing one at a time; [`DECODE_QUEUE`] of them may wait.
const DECODE_CHUNK: usize = 1024 * 1024;
const DECODE_QUEUE: usize = 4;

/// Decrypts and decompresses in two threads (reading, the stored digest and age on one;
/// zstd, the plaintext digest and `consume` on the other), so a restore runs at the speed
/// of its slowest stage instead of the sum of all: on par with `age -d | zstd -d`.
fn decode<R, T>(
    stored: &mut R,
    identity: &age::x25519::Identity,
    etcd_trailer: bool,
    plaintext_size: u64,
    consume: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> anyhow::Result<(T, Digest)>
where
    R: Read + Send,
{
    let integrity = |what: &str, e: &dyn std::fmt::Display| {
        anyhow::Error::new(IntegrityError(format!("{what}: {e}")))
    };
    let decryptor = age::Decryptor::new_buffered(BufReader::with_capacity(DECODE_CHUNK, stored))
        .map_err(|e| integrity("not a readable age file", &e))?;
    let mut decrypted = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| integrity("age decryption failed", &e))?;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(DECODE_QUEUE);
        scope.spawn(move || {
            loop {
                let mut chunk = vec![0u8; DECODE_CHUNK];
                let filled = fill(&mut decrypted, &mut chunk);
                let done = match &filled {
                    Ok(n) => *n < DECODE_CHUNK,
                    Err(_) => true,
                };
                let message = filled.map(|n| {
                    chunk.truncate(n);
                    chunk
                });
                // A closed channel means the other side stopped: so does this one.
                if tx.send(message).is_err() || done {
                    return;
                }
            }
        });
        let decompressed = zstd::stream::read::Decoder::new(ChannelReader::new(rx))
            .map_err(|e| integrity("zstd decoder failed", &e))?;
        let mut plain = FlaggingReader::new(HashingReader {
            inner: Bounded::new(decompressed, "plaintext", plaintext_size),
            hasher: Hasher::new(etcd_trailer),
        });
        let consumed = consume(&mut plain);
        if let Some(e) = plain.failed.take() {
            if let Some(over) = overflow(&e) {
                return Err(IntegrityError(over.to_string()).into());
            }
            return Err(integrity("decrypting and decompressing failed", &e));
        }
        // The consumer's own failure (e.g. a full disk while restoring).
        let contents = consumed?;
        if let Err(e) = io::copy(&mut plain, &mut io::sink()) {
            return Err(match plain.failed.as_ref().and_then(overflow) {
                Some(over) => IntegrityError(over.to_string()).into(),
                None => integrity("decrypting and decompressing failed", &e),
            });
        }
        Ok((contents, plain.inner.hasher.finish()?))
    })
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The receiving end of the decode stages as a reader.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl ChannelReader {
    fn new(rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        Self {
            rx,
            chunk: Vec::new(),
            at: 0,
            ended: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.len() < DECODE_CHUNK;
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                // The sender stops only after an end or an error it has sent.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn compare(key: &str, what: &str, expected: &Digest, actual: Digest) -> Result<(), IntegrityError> {
    if expected.size != actual.size {
        return Err(IntegrityError(format!(
            "{key}: {what} size is {} bytes, the manifest says {} (truncated or replaced)",
            actual.size, expected.size
        )));
    }
    if expected.sha256 != actual.sha256 {
        return Err(IntegrityError(format!(
            "{key}: {what} SHA-256 is {}, the manifest says {} (altered)",
            hex::encode(actual.sha256),
            hex::encode(expected.sha256)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str =
        "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";

    fn load_text(text: &str) -> Result<Identities, UsageError> {
        let dir = crate::scratch_dir();
        let file = dir.path().join("id.key");
        std::fs::write(&file, text).unwrap();
        Identities::load(&[file])
    }

    #[test]
    fn identity_files_load_with_comments() {
        let ids = load_text(&format!("# created: now\n# public key: age1…\n{SECRET}\n")).unwrap();
        assert_eq!(ids.keys.len(), 1);
    }

    #[test]
    fn bad_identity_lines_are_named_by_number_never_echoed() {
        let lower = SECRET.to_ascii_lowercase();
        for text in [
            format!("# ok\n\u{feff}{SECRET}\n"),
            format!("# ok\n\"{SECRET}\"\n"),
            format!("# ok\n{}x\n", &SECRET[..SECRET.len() - 1]),
            format!("# ok\n{lower}junk\n"),
        ] {
            let err = load_text(&text).err().expect("rejected").to_string();
            assert!(err.contains("line 2"), "{err}");
            assert!(!err.contains(&SECRET[16..40]), "echoed: {err}");
            assert!(
                !err.to_ascii_uppercase().contains(&SECRET[16..40]),
                "echoed: {err}"
            );
        }
        let err = load_text("# nothing here\n").err().expect("rejected");
        assert!(err.to_string().contains("no age identity"), "{err}");
    }
}
