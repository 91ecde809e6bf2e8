//! Shared test harness for etcd-offsite integration tests (`mod common;`).
//!
//! Starts real services on loopback — etcd (plain or mutual TLS), moto (S3),
//! Azurite (Azure Blob), a GCS XML-API front over moto, and a counting HTTP
//! proxy — each in its own temporary directory, killed on drop. Anything that
//! cannot start panics with the service's log tail: tests fail loudly, never skip.
//!
//! Needs the tools that `scripts/setup.sh` installs: etcd, etcdctl, openssl,
//! age, age-keygen, zstd, sha256sum, python3 with moto[server] and
//! azure-storage-blob, and azurite-blob. Support scripts live in `tests/support/`.
#![allow(dead_code)]

mod cli;
mod emulators;
mod etcd;
pub mod fixture;
mod http;
pub mod openshift;
mod process;

pub use cli::*;
pub use emulators::*;
pub use etcd::*;
pub use http::*;
pub use process::*;
