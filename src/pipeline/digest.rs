//! Digests and the etcd snapshot hash trailer, computed while bytes stream past.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::error::IntegrityError;
use crate::manifest::Digest;

const TRAILER_LEN: usize = 32;

/// Checks an etcd snapshot stream: the last 32 bytes are the SHA-256 of everything before.
#[derive(Default)]
pub struct TrailerCheck {
    sha: Sha256,
    /// The last bytes seen so far (at most 32), not yet known to be body.
    tail: Vec<u8>,
}

impl TrailerCheck {
    pub fn update(&mut self, data: &[u8]) {
        let excess = (self.tail.len() + data.len()).saturating_sub(TRAILER_LEN);
        // Bytes that can no longer be part of the trailer are body: hash them.
        let from_tail = excess.min(self.tail.len());
        self.sha.update(&self.tail[..from_tail]);
        self.tail.drain(..from_tail);
        let from_data = excess - from_tail;
        self.sha.update(&data[..from_data]);
        self.tail.extend_from_slice(&data[from_data..]);
    }

    pub fn finish(self) -> Result<(), IntegrityError> {
        if self.tail.len() < TRAILER_LEN {
            return Err(IntegrityError(
                "the etcd snapshot is shorter than its 32-byte hash trailer".into(),
            ));
        }
        let body: [u8; 32] = self.sha.finalize().into();
        if body[..] != self.tail[..] {
            return Err(IntegrityError(format!(
                "the etcd snapshot hash trailer does not match its contents (trailer {}, computed {}): the snapshot is corrupt or truncated",
                hex::encode(&self.tail),
                hex::encode(body)
            )));
        }
        Ok(())
    }
}

/// SHA-256 and size of a byte stream, optionally with the etcd trailer check.
#[derive(Default)]
pub struct Hasher {
    sha: Sha256,
    size: u64,
    trailer: Option<TrailerCheck>,
}

impl Hasher {
    pub fn new(etcd_trailer: bool) -> Self {
        Self {
            trailer: etcd_trailer.then(TrailerCheck::default),
            ..Self::default()
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.size += data.len() as u64;
        if let Some(trailer) = &mut self.trailer {
            trailer.update(data);
        }
    }

    pub fn finish(self) -> Result<Digest, IntegrityError> {
        if let Some(trailer) = self.trailer {
            trailer.finish()?;
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
        let mut check = TrailerCheck::default();
        for chunk in data.chunks(piece) {
            check.update(chunk);
        }
        check.finish()
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
