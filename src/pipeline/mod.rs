//! One pipeline for every artifact: digest → zstd → age → digest → a [`Sink`] it is handed.
//!
//! The producer (etcd stream, tar builder, file copy) writes plaintext on a blocking
//! thread; encoded chunks cross a bounded channel to the async sink. Memory is bounded by
//! the channel ([`CHANNEL_CHUNKS`] × [`CHUNK_SIZE`]), the sink's parts in flight (the
//! store's upload: part size × (concurrency + 1)) and zstd's window and jobs, whatever
//! the size of the input. Nothing is written to local disk. The pipeline knows nothing of
//! stores or keys: the repository hands it a sink to write and a stream to read.

mod digest;
mod fetch;

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

pub use digest::Hasher;
use digest::HashingWriter;
pub use fetch::{FetchError, Identities, StoredBytes, fetch};

use crate::config::{Compression, Recipients};
use crate::error::IntegrityError;
use crate::manifest::{CompressionInfo, Digest, EncryptionInfo};

/// Encoded bytes handed to the uploader at a time.
pub const CHUNK_SIZE: usize = 1024 * 1024;
/// Chunks that may wait for the uploader.
pub const CHANNEL_CHUNKS: usize = 4;
/// Input per zstd worker job.
const ZSTD_JOB_SIZE: u32 = 4 * 1024 * 1024;

/// How an artifact is encoded.
#[derive(Clone)]
pub struct Encoding {
    pub recipients: Recipients,
    pub compression: Compression,
    /// The plaintext is an etcd snapshot whose last 32 bytes are the SHA-256 of the rest.
    pub etcd_trailer: bool,
    /// Advanced by plaintext bytes (hidden unless stderr is a terminal).
    pub progress: indicatif::ProgressBar,
}

/// Where the encoded bytes of one artifact go (the repository hands one per artifact): a
/// writer that must be finished, or aborted, says so in its type.
pub trait Sink: Send {
    type Error: std::error::Error + Send + Sync + 'static;
    /// Takes one part, waiting while the sink is full.
    fn put(&mut self, part: Bytes) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Completes the object: it exists only once this returns Ok.
    fn finish(self) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Gives the object up.
    fn abort(self) -> impl Future<Output = ()> + Send;
}

/// Why an artifact could not be shipped; the sink has been aborted in every case.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("reading the source failed: {0}")]
    Source(io::Error),
    #[error("encoding failed: {0}")]
    Encode(io::Error),
    /// The sink (the store) failed.
    #[error(transparent)]
    Sink(Box<dyn std::error::Error + Send + Sync>),
    #[error("the snapshot failed its integrity check")]
    Integrity(#[from] IntegrityError),
}

/// What was shipped: both digests and how the bytes were encoded.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub plaintext: Digest,
    pub stored: Digest,
    pub compression: CompressionInfo,
    pub encryption: EncryptionInfo,
}

/// Runs `produce` through the pipeline into `sink`; the object exists only on Ok.
pub async fn ship<S, T, P>(
    mut sink: S,
    encoding: Encoding,
    produce: P,
) -> Result<(Encoded, T), ShipError>
where
    S: Sink,
    T: Send + 'static,
    P: FnOnce(&mut dyn Write) -> io::Result<T> + Send + 'static,
{
    let sink_error = |e: S::Error| ShipError::Sink(Box::new(e));
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let level = encoding.compression.level;
    let recipients = encoding.recipients.texts();
    let encoder = tokio::task::spawn_blocking(move || encode(&encoding, tx, produce));
    let pump = async {
        // Owning the receiver here closes the channel as soon as the sink fails,
        // which stops the encoder instead of leaving it blocked.
        let mut rx = rx;
        while let Some(chunk) = rx.recv().await {
            sink.put(chunk).await?;
        }
        Ok::<(), S::Error>(())
    };
    let (pumped, encoded) = tokio::join!(pump, encoder);
    let encoded = encoded.unwrap_or_else(|e| {
        Err(ShipError::Encode(io::Error::other(format!(
            "encoder died: {e}"
        ))))
    });
    let outcome = match (pumped, encoded) {
        (Err(e), _) => Err(sink_error(e)),
        (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(done)) => Ok(done),
    };
    let (plaintext, stored, produced) = match outcome {
        Ok(done) => done,
        Err(e) => {
            sink.abort().await;
            return Err(e);
        }
    };
    sink.finish().await.map_err(sink_error)?;
    let shipped = Encoded {
        plaintext,
        stored,
        compression: CompressionInfo {
            algorithm: "zstd".into(),
            level,
        },
        encryption: EncryptionInfo {
            algorithm: "age".into(),
            recipients,
        },
    };
    Ok((shipped, produced))
}

/// The plaintext and stored digests, and what the producer returned.
type EncodeOutcome<T> = (Digest, Digest, T);

fn encode<T>(
    encoding: &Encoding,
    tx: mpsc::Sender<Bytes>,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> Result<EncodeOutcome<T>, ShipError> {
    let recipients = encoding
        .recipients
        .keys
        .iter()
        .map(|r| r as &dyn age::Recipient);
    let encryptor = age::Encryptor::with_recipients(recipients)
        .map_err(|e| ShipError::Encode(io::Error::other(e.to_string())))?;
    let encrypted = encryptor
        .wrap_output(UploadSink::new(tx))
        .map_err(ShipError::Encode)?;
    let mut compressed = zstd_writer(encrypted, encoding.compression).map_err(ShipError::Encode)?;
    // A retry from another member starts the count again.
    encoding.progress.set_position(0);
    let mut plain = HashingWriter {
        inner: &mut compressed,
        hasher: Hasher::new(encoding.etcd_trailer),
        progress: encoding.progress.clone(),
    };
    let produced = produce(&mut plain).map_err(ShipError::Source)?;
    encoding.progress.finish_and_clear();
    let plaintext = plain.hasher.finish()?;
    let encrypted = compressed.finish().map_err(ShipError::Encode)?;
    let sink = encrypted.finish().map_err(ShipError::Encode)?;
    let stored = sink.finish().map_err(ShipError::Encode)?;
    Ok((plaintext, stored, produced))
}

fn zstd_writer<W: Write>(
    inner: W,
    compression: Compression,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(inner, compression.level)?;
    encoder.multithread(compression.workers())?;
    // zstd's default job at level 3 is 8 MiB per worker (and larger with one worker,
    // which keeps a whole job buffered); 4 MiB halves that memory for about 1% in ratio.
    encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    // A frame checksum lets plain `zstd -d` detect corruption too.
    encoder.include_checksum(true)?;
    Ok(encoder)
}

/// The end of the encoder chain: hashes the stored bytes and hands chunks to the sink.
struct UploadSink {
    tx: mpsc::Sender<Bytes>,
    buffer: BytesMut,
    hasher: Hasher,
}

impl UploadSink {
    fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            tx,
            buffer: BytesMut::with_capacity(CHUNK_SIZE),
            hasher: Hasher::default(),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = self.buffer.split().freeze();
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is buffered and returns the stored digest.
    fn finish(mut self) -> io::Result<Digest> {
        self.send()?;
        self.hasher.finish().map_err(io::Error::other)
    }
}

impl Write for UploadSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK_SIZE {
            self.send()?;
            self.buffer.reserve(CHUNK_SIZE);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams stored bytes unchanged into `sink` (a copy to another store), stopping at the
/// size `expected` records and checking its SHA-256 before the sink is finished: a source
/// that is longer, shorter or different leaves no object behind.
pub async fn relay<S: Sink>(
    mut stored: StoredBytes,
    expected: &crate::manifest::Digest,
    mut sink: S,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let mut hasher = Hasher::new(false);
    let mut seen: u64 = 0;
    let outcome: anyhow::Result<()> = async {
        while let Some(part) = stored.next().await {
            let part = part?;
            seen += part.len() as u64;
            if seen > expected.size {
                return Err(crate::error::IntegrityError(format!(
                    "the source object is longer than the {} bytes its manifest records",
                    expected.size
                ))
                .into());
            }
            hasher.update(&part);
            sink.put(part).await?;
        }
        let digest = hasher.finish()?;
        if digest != *expected {
            return Err(crate::error::IntegrityError(format!(
                "the source object ({} bytes, SHA-256 {}) is not what its manifest records ({} bytes, SHA-256 {})",
                digest.size,
                hex::encode(digest.sha256),
                expected.size,
                hex::encode(expected.sha256)
            ))
            .into());
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => Ok(sink.finish().await?),
        Err(e) => {
            sink.abort().await;
            Err(e)
        }
    }
}
