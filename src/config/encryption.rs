//! `encryption`: the age recipients of each artifact; the keys archive's must differ from
//! the snapshot's.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use super::looks_secret;
use crate::error::ConfigError;

/// Recipients per artifact; the static resources' must differ from the snapshot's.
#[derive(Debug, Clone)]
pub struct Encryption {
    pub snapshot: Recipients,
    pub static_resources: Option<Recipients>,
}

/// age x25519 recipients, parsed, with their text form for the manifest.
#[derive(Clone)]
pub struct Recipients {
    pub keys: Vec<age::x25519::Recipient>,
}

impl Recipients {
    pub fn texts(&self) -> Vec<String> {
        self.keys.iter().map(ToString::to_string).collect()
    }
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.texts()).finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEncryption {
    snapshot: RawRecipients,
    static_resources: Option<RawRecipients>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecipients {
    #[serde(default)]
    recipients: Vec<String>,
    recipients_file: Option<PathBuf>,
}

/// The recipients of both artifacts; `has_static`: whether a keys archive is written.
pub(super) fn resolve(
    raw: RawEncryption,
    has_static: bool,
    check_files: bool,
) -> Result<Encryption, ConfigError> {
    let snapshot_recipients = resolve_recipients("encryption.snapshot", raw.snapshot, check_files)?;
    let static_recipients = match (has_static, raw.static_resources) {
        (true, Some(r)) => Some(resolve_recipients(
            "encryption.static_resources",
            r,
            check_files,
        )?),
        (true, None) => {
            return Err(ConfigError::new(
                "encryption.static_resources",
                "missing: the static resources archive holds the etcd encryption keys and needs its own recipients; add `encryption.static_resources.recipients`",
            ));
        }
        (false, Some(_)) => {
            return Err(ConfigError::new(
                "encryption.static_resources",
                "set, but there is no static resources archive; add `source.static_resources` or remove this key",
            ));
        }
        (false, None) => None,
    };
    if let Some(static_recipients) = &static_recipients {
        let snapshot: BTreeSet<String> = snapshot_recipients.texts().into_iter().collect();
        if let Some(shared) = static_recipients
            .texts()
            .into_iter()
            .find(|r| snapshot.contains(r))
        {
            return Err(ConfigError::new(
                "encryption.static_resources.recipients",
                format!(
                    "static_resources recipients must differ from snapshot recipients: the keys archive must not open with the snapshot key ({shared} is in both); generate a separate key with `age-keygen`"
                ),
            ));
        }
    }
    Ok(Encryption {
        snapshot: snapshot_recipients,
        static_resources: static_recipients,
    })
}

fn resolve_recipients(
    key: &str,
    raw: RawRecipients,
    check_files: bool,
) -> Result<Recipients, ConfigError> {
    let mut texts: Vec<(String, String)> = raw
        .recipients
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("{key}.recipients[{i}]"), r.trim().to_string()))
        .collect();
    // Only backups encrypt: a host that reads backups need not have the recipients file.
    if let Some(file) = raw.recipients_file.as_ref().filter(|_| check_files) {
        let file_key = format!("{key}.recipients_file");
        let content = std::fs::read_to_string(file).map_err(|e| {
            ConfigError::new(&file_key, format!("cannot read {}: {e}", file.display()))
        })?;
        for (n, line) in content.lines().enumerate() {
            let line = line.trim_start_matches('\u{feff}').trim();
            if !line.is_empty() && !line.starts_with('#') {
                texts.push((
                    format!("{file_key} ({} line {})", file.display(), n + 1),
                    line.to_string(),
                ));
            }
        }
    }
    if texts.is_empty() && (check_files || raw.recipients_file.is_none()) {
        return Err(ConfigError::new(
            format!("{key}.recipients"),
            "no recipients; add at least one age public key (age1…), made with `age-keygen`",
        ));
    }
    let mut keys = Vec::with_capacity(texts.len());
    for (where_, text) in texts {
        keys.push(parse_recipient(&where_, &text)?);
    }
    Ok(Recipients { keys })
}

/// One recipient; errors name its position and never echo text that could be a secret.
fn parse_recipient(where_: &str, text: &str) -> Result<age::x25519::Recipient, ConfigError> {
    // Editors on Windows start files with a byte-order mark; it is not part of the key.
    let text = text.trim_start_matches('\u{feff}').trim();
    if looks_secret(text) {
        return Err(ConfigError::new(
            where_,
            "this looks like a secret key (an age identity or a private key), not a recipient; \
             remove it from the config and rotate it if the file was shared, and list the public \
             key printed by `age-keygen -y IDENTITY_FILE` instead",
        ));
    }
    age::x25519::Recipient::from_str(text).map_err(|_| {
        ConfigError::new(
            where_,
            format!(
                "not an age recipient ({}); expected an age1… public key from `age-keygen -y IDENTITY_FILE`, \
                 without quotes inside the value",
                describe_redacted(text)
            ),
        )
    })
}

/// What a malformed recipient looks like, without its text: only a public-looking
/// `age1` prefix is shown, the rest is reduced to a length.
fn describe_redacted(text: &str) -> String {
    let chars = text.chars().count();
    let shown: String = text.chars().take(8).collect();
    if text.starts_with("age1") && shown.chars().all(|c| c.is_ascii_alphanumeric()) {
        format!("\"{shown}…\", {chars} characters")
    } else {
        format!("{chars} characters, not starting with `age1`")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::*;
    use crate::config::{Purpose, parse};

    #[test]
    fn overlapping_recipients_are_rejected() {
        let dir = crate::scratch_dir();
        let text = config(
            &format!(
                "  static_resources:\n    base_dir: {0}\n    paths: [\"{0}\"]\n",
                dir.path().display()
            ),
            &format!(
                "  snapshot:\n    recipients: [\"{SNAP}\"]\n  static_resources:\n    recipients: [\"{KEYS}\", \"{SNAP}\"]\n"
            ),
            "  snapshot:\n    url: file:///var/backups/etcd\n",
        );
        let err = parse(&text, Purpose::TakeBackups).unwrap_err();
        assert_eq!(err.key, "encryption.static_resources.recipients");
        assert!(err.problem.contains("must differ"), "{err}");
    }

    #[test]
    fn malformed_recipient_and_secret_key() {
        let text = snapshot_only().replace(SNAP, "age1notakey");
        assert_eq!(err_key(&text), "encryption.snapshot.recipients[0]");
        let secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        let err = parse(&snapshot_only().replace(SNAP, secret), Purpose::TakeBackups).unwrap_err();
        assert!(!err.to_string().contains(secret), "secret echoed: {err}");
    }

    #[test]
    fn secrets_in_recipients_are_named_by_position_never_echoed() {
        let secret = "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";
        let body = &secret["AGE-SECRET-KEY-1".len()..];
        let lower = secret.to_ascii_lowercase();
        let variants = [
            secret.to_string(),
            lower.clone(),
            format!("\u{feff}{secret}"),
            format!("\u{feff}{lower}"),
            format!("\\\"{lower}\\\""),
            format!("'{secret}'"),
            format!("  {lower}\\t"),
            "-----BEGIN OPENSSH PRIVATE KEY-----".to_string(),
            "-----begin private key----- MC4CAQAwBQYDK2VwBCIEIOZ0".to_string(),
        ];
        for (i, variant) in variants.iter().enumerate() {
            let text = snapshot_only().replace(
                &format!("[\"{SNAP}\"]"),
                &format!("[\"{SNAP}\", \"{variant}\"]"),
            );
            let err = parse(&text, Purpose::TakeBackups).expect_err(variant);
            let shown = err.to_string();
            assert_eq!(
                err.key, "encryption.snapshot.recipients[1]",
                "case {i}: {shown}"
            );
            assert!(shown.contains("secret key"), "case {i}: {shown}");
            for needle in [body, &body.to_ascii_lowercase(), "MC4CAQAw"] {
                assert!(!shown.contains(needle), "case {i} echoed: {shown}");
            }
        }
    }

    #[test]
    fn secrets_in_a_recipients_file_are_named_by_line() {
        let dir = crate::scratch_dir();
        let file = dir.path().join("recipients.txt");
        let secret = "age-secret-key-1gq9778vqxmmjve8sk7j6vt8uj4hdqajuvsfcwcm02d8gewq72pvq2y5j33";
        std::fs::write(
            &file,
            format!("\u{feff}# snapshot keys\n{SNAP}\n\n  \"{secret}\"  \n"),
        )
        .unwrap();
        let text = snapshot_only().replace(
            &format!("recipients: [\"{SNAP}\"]"),
            &format!("recipients_file: {}", file.display()),
        );
        let err = parse(&text, Purpose::TakeBackups).unwrap_err();
        assert!(err.key.ends_with("line 4)"), "{err}");
        assert!(!err.to_string().contains(&secret[16..]), "echoed: {err}");
        // A byte-order mark before a recipient is not part of it.
        std::fs::write(&file, format!("\u{feff}{SNAP}\n")).unwrap();
        parse(&text, Purpose::TakeBackups).expect("a BOM is tolerated");
    }

    #[test]
    fn malformed_recipients_show_at_most_a_short_prefix() {
        let long = format!("{SNAP}x");
        let err = parse(&snapshot_only().replace(SNAP, &long), Purpose::TakeBackups).unwrap_err();
        assert!(!err.to_string().contains(&long[8..]), "{err}");
        assert!(err.to_string().contains("\"age1ql3z…\""), "{err}");
        let err = parse(
            &snapshot_only().replace(SNAP, "hunter2-not-a-key"),
            Purpose::TakeBackups,
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn no_mangling_of_an_identity_gets_it_echoed() {
        let secret = "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";
        let body = secret["AGE-SECRET-KEY-1".len()..].to_ascii_lowercase();
        let wrappers = [
            "",
            "\u{feff}",
            "\"",
            "'",
            " ",
            "\t",
            "`",
            "recipient: ",
            "- ",
        ];
        for _ in 0..500 {
            let mangled: String = secret
                .chars()
                .map(|c| {
                    if rand::random::<bool>() {
                        c.to_ascii_lowercase()
                    } else {
                        c
                    }
                })
                .collect();
            let pick = || wrappers[rand::random_range(0..wrappers.len())];
            let text = format!("{}{}{mangled}{}{}", pick(), pick(), pick(), pick());
            let err = parse_recipient("here", &text).expect_err(&text).to_string();
            let folded = err.to_ascii_lowercase();
            for window in body.as_bytes().windows(8) {
                let window = std::str::from_utf8(window).unwrap();
                assert!(!folded.contains(window), "{text:?} echoed as: {err}");
            }
        }
    }
}
