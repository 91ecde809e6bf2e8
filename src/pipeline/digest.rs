//! Digests and the etcd snapshot hash trailer, computed while bytes stream past.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::error::IntegrityError;
use crate::manifest::Digest;

const TRAILER_LEN: usize = 32;

/// SHA-256 and size of a byte stream; for an etcd snapshot also the check of its trailer
/// (the last 32 bytes are the SHA-256 of everything before), with one pass of hashing.
#[derive(Default)]
pub struct Hasher {
    sha: Sha256,
    size: u64,
    /// With the trailer check: the last bytes seen (at most 32), not yet known to be body
    /// and so not yet hashed.
    held_back: Option<Vec<u8>>,
}

impl Hasher {
    pub fn new(etcd_trailer: bool) -> Self {
        Self {
            held_back: etcd_trailer.then(|| Vec::with_capacity(TRAILER_LEN)),
            ..Self::default()
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        let Some(tail) = &mut self.held_back else {
            self.sha.update(data);
            return;
        };
        // Bytes that can no longer be part of the trailer are body: hash them.
        let excess = (tail.len() + data.len()).saturating_sub(TRAILER_LEN);
        let from_tail = excess.min(tail.len());
        self.sha.update(&tail[..from_tail]);
        tail.drain(..from_tail);
        let from_data = excess - from_tail;
        self.sha.update(&data[..from_data]);
        tail.extend_from_slice(&data[from_data..]);
    }

    pub fn finish(mut self) -> Result<Digest, IntegrityError> {
        if let Some(tail) = self.held_back.take() {
            if tail.len() < TRAILER_LEN {
                return Err(IntegrityError(
                    "the etcd snapshot is shorter than its 32-byte hash trailer".into(),
                ));
            }
            let body: [u8; 32] = self.sha.clone().finalize().into();
            if body[..] != tail[..] {
                return Err(IntegrityError(format!(
                    "the etcd snapshot hash trailer does not match its contents (trailer {}, computed {}): the snapshot is corrupt or truncated",
                    hex::encode(&tail),
                    hex::encode(body)
                )));
            }
            self.sha.update(&tail);
        }
        Ok(Digest {
            size: self.size,
            sha256: self.sha.finalize().into(),
        })
    }
}

/// Hashes what is written on its way to `inner`, and counts it on a progress bar.
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Hasher,
    pub progress: indicatif::ProgressBar,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.progress.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what is read from `inner`.
pub struct HashingReader<R> {
    pub inner: R,
    pub hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_like(body: &[u8]) -> Vec<u8> {
        let mut data = body.to_vec();
        data.extend_from_slice(&Sha256::digest(body));
        data
    }

    fn check_in_pieces(data: &[u8], piece: usize) -> Result<(), IntegrityError> {
        let mut check = Hasher::new(true);
        for chunk in data.chunks(piece) {
            check.update(chunk);
        }
        let digest = check.finish()?;
        assert_eq!(digest.size, data.len() as u64);
        assert_eq!(digest.sha256[..], Sha256::digest(data)[..]);
        Ok(())
    }

    #[test]
    fn trailer_checks_in_any_chunking() {
        let data = snapshot_like(&(0..5000u32).map(|i| i as u8).collect::<Vec<_>>());
        for piece in [1, 7, 31, 32, 33, 4096, 10_000] {
            check_in_pieces(&data, piece).unwrap_or_else(|e| panic!("piece {piece}: {e}"));
        }
    }

    #[test]
    fn corrupt_or_short_snapshots_fail() {
        let mut data = snapshot_like(b"bbolt pages");
        data[3] ^= 1;
        assert!(check_in_pieces(&data, 5).is_err());
        let data = snapshot_like(b"bbolt pages");
        assert!(check_in_pieces(&data[..data.len() - 1], 5).is_err());
        assert!(check_in_pieces(&[0u8; 10], 5).is_err());
    }

    #[test]
    fn writer_and_reader_hash_the_same() {
        let data = snapshot_like(b"hello world");
        let mut w = HashingWriter {
            inner: Vec::new(),
            hasher: Hasher::new(true),
            progress: indicatif::ProgressBar::hidden(),
        };
        w.write_all(&data[..4]).unwrap();
        w.write_all(&data[4..]).unwrap();
        let written = w.hasher.finish().unwrap();
        assert_eq!(w.inner, data);
        let mut r = HashingReader {
            inner: &data[..],
            hasher: Hasher::new(true),
        };
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.hasher.finish().unwrap(), written);
        assert_eq!(written.size, data.len() as u64);
        assert_eq!(written.sha256[..], Sha256::digest(&data)[..]);
    }
}
