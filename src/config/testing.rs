//! Config texts shared by the section tests.

use super::{Purpose, parse};

pub const SNAP: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
pub const KEYS: &str = "age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg";

/// A config with an etcd source on loopback and the given extra sections.
pub fn config(source_extra: &str, encryption: &str, targets: &str) -> String {
    format!(
        "version: 1\ncluster: prod-east\nsource:\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n{source_extra}encryption:\n{encryption}targets:\n{targets}"
    )
}

/// The smallest valid config: a snapshot to a directory, no keys archive.
pub fn snapshot_only() -> String {
    config(
        "",
        &format!("  snapshot:\n    recipients: [\"{SNAP}\"]\n"),
        "  snapshot:\n    url: file:///var/backups/etcd\n",
    )
}

/// The key a rejected config names.
pub fn err_key(text: &str) -> String {
    parse(text, Purpose::TakeBackups)
        .expect_err("config should be rejected")
        .key
}
