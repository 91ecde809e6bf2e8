//! One pipeline for every artifact: digest → zstd → age → digest → multipart upload.
//!
//! The producer (etcd stream, tar builder, file copy) writes plaintext on a blocking
//! thread; encoded chunks cross a bounded channel to the async uploader. Memory is bounded
//! by the channel ([`CHANNEL_CHUNKS`] × [`CHUNK_SIZE`]), the upload parts
//! ([`store::PART_SIZE`] × ([`store::UPLOAD_CONCURRENCY`] + 1)) and zstd's window and jobs,
//! whatever the size of the input. Nothing is written to local disk.

mod digest;
mod fetch;

use std::io::{self, Write};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use digest::{Hasher, HashingWriter};
pub use fetch::{FetchError, Identities, fetch};

use crate::config::{Compression, Recipients};
use crate::error::IntegrityError;
use crate::manifest::{Artifact, CompressionInfo, Digest, EncryptionInfo};
use crate::store::{self, StoreError, Target};

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

/// Why an artifact could not be shipped; the upload has been aborted in every case.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("reading the source failed: {0}")]
    Source(io::Error),
    #[error("encoding failed: {0}")]
    Encode(io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the snapshot failed its integrity check")]
    Integrity(#[from] IntegrityError),
}

/// Runs `produce` through the pipeline into `target` at `key`; the object exists only on Ok.
pub async fn ship<T, P>(
    target: &Target,
    key: &str,
    encoding: Encoding,
    produce: P,
) -> Result<(Artifact, T), ShipError>
where
    T: Send + 'static,
    P: FnOnce(&mut dyn Write) -> io::Result<T> + Send + 'static,
{
    let mut upload = target.upload(key).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let level = encoding.compression.level;
    let recipients = encoding.recipients.texts();
    let encoder = tokio::task::spawn_blocking(move || encode(&encoding, tx, produce));
    let pump = async {
        // Owning the receiver here closes the channel as soon as the upload fails,
        // which stops the encoder instead of leaving it blocked.
        let mut rx = rx;
        while let Some(chunk) = rx.recv().await {
            upload.wait_for_capacity(store::UPLOAD_CONCURRENCY).await?;
            upload.put(chunk);
        }
        Ok::<(), object_store::Error>(())
    };
    let (pumped, encoded) = tokio::join!(pump, encoder);
    let encoded = encoded.unwrap_or_else(|e| {
        Err(ShipError::Encode(io::Error::other(format!(
            "encoder died: {e}"
        ))))
    });
    let outcome = match (pumped, encoded) {
        (Err(e), _) => Err(ShipError::Store(target.upload_error(key, &e))),
        (Ok(()), Err(e)) => Err(e),
        // Parts still in flight are awaited here: when one has failed, `finish()` would
        // abort and report the abort's error (a dead store fails that too) instead of the part's.
        (Ok(()), Ok(done)) => match upload.wait_for_capacity(0).await {
            Ok(()) => Ok(done),
            Err(e) => Err(ShipError::Store(target.upload_error(key, &e))),
        },
    };
    let (plaintext, stored, produced) = match outcome {
        Ok(done) => done,
        Err(e) => {
            if let Err(abort) = upload.abort().await {
                tracing::warn!(key, error = %crate::error::one_line(&abort), "could not abort the upload; the store expires it");
            }
            return Err(e);
        }
    };
    upload
        .finish()
        .await
        .map_err(|e| target.upload_error(key, &e))?;
    let artifact = Artifact {
        target: target.url().to_string(),
        key: key.to_string(),
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
    Ok((artifact, produced))
}

type Encoded<T> = (Digest, Digest, T);

fn encode<T>(
    encoding: &Encoding,
    tx: mpsc::Sender<Bytes>,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> Result<Encoded<T>, ShipError> {
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

/// The end of the encoder chain: hashes the stored bytes and hands chunks to the uploader.
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
