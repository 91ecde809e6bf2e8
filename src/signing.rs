//! Signed records: an OpenSSH signature (SSHSIG, namespace `etcd-offsite`) of the exact
//! bytes of a manifest or a drill record, stored beside it, so `ssh-keygen -Y verify`
//! checks it too. This module is the cryptography; the repository ([`crate::repo`])
//! decides which objects must be signed and what an unsigned one means.
//!
//! age recipients are public and a manifest declares its own digests: without a signature,
//! anyone who can write to the bucket can plant a self-consistent backup.

use std::path::Path;

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::error::ConfigError;

/// The SSHSIG namespace: a signature made for another purpose never verifies here.
pub const NAMESPACE: &str = "etcd-offsite";

/// The largest signature or allowed_signers file read (an ed25519 SSHSIG is under 1 KiB).
const MAX_FILE: u64 = 1024 * 1024;

/// The `signing:` section of the config.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// OpenSSH ed25519 private key that `backup` signs manifests with.
    pub key: Option<std::path::PathBuf>,
    /// OpenSSH allowed_signers file that verify and restore check signatures against.
    pub allowed_signers: Option<std::path::PathBuf>,
}

/// An unencrypted OpenSSH ed25519 private key; never printed.
pub struct Signer {
    key: PrivateKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field(
                "public",
                &self.key.public_key().fingerprint(HashAlg::Sha256),
            )
            .finish()
    }
}

impl Signer {
    /// Reads the key; errors name the file and never its contents.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        const KEY: &str = "signing.key";
        let text = read_small(path).map_err(|e| ConfigError::new(KEY, e))?;
        let key = PrivateKey::from_openssh(&text).map_err(|_| {
            ConfigError::new(
                KEY,
                format!(
                    "{} is not an OpenSSH private key; make one with `ssh-keygen -t ed25519 -N '' -f {}`",
                    path.display(),
                    path.display()
                ),
            )
        })?;
        if key.is_encrypted() {
            return Err(ConfigError::new(
                KEY,
                format!(
                    "{} is protected by a passphrase, which an unattended backup cannot enter; use a key without one (`ssh-keygen -p -N '' -f {}`) and protect the file instead",
                    path.display(),
                    path.display()
                ),
            ));
        }
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(ConfigError::new(
                KEY,
                format!(
                    "{} is a {} key; signing uses ed25519 keys (`ssh-keygen -t ed25519`)",
                    path.display(),
                    key.algorithm()
                ),
            ));
        }
        Ok(Self { key })
    }

    /// The armored SSHSIG of `record` (what `ssh-keygen -Y sign -n etcd-offsite` writes).
    pub fn sign(&self, record: &[u8]) -> anyhow::Result<String> {
        let signature = self
            .key
            .sign(NAMESPACE, HashAlg::Sha512, record)
            .map_err(|e| anyhow::anyhow!("signing failed: {e}"))?;
        signature
            .to_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the signature failed: {e}"))
    }
}

/// Keys trusted to sign manifests, from an OpenSSH allowed_signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    signers: Vec<AllowedSigner>,
}

#[derive(Debug, Clone)]
struct AllowedSigner {
    principals: String,
    key: PublicKey,
}

impl AllowedSigners {
    /// Parses `principals [namespaces="…"] keytype base64 [comment]` lines (ssh-keygen(1),
    /// ALLOWED SIGNERS). Lines whose `namespaces` exclude `etcd-offsite` are not trusted here.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        const KEY: &str = "signing.allowed_signers";
        let text = read_small(path).map_err(|e| ConfigError::new(KEY, e))?;
        let mut signers = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |problem: &str| {
                ConfigError::new(
                    format!("{KEY} ({} line {})", path.display(), n + 1),
                    problem.to_string(),
                )
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(type_at) = fields.iter().position(|f| is_key_type(f)) else {
                return Err(at(
                    "no key on this line; write `PRINCIPAL ssh-ed25519 AAAA…` (see ssh-keygen(1), ALLOWED SIGNERS)",
                ));
            };
            if type_at == 0 || type_at + 1 >= fields.len() {
                return Err(at(
                    "expected `PRINCIPAL [OPTIONS] KEYTYPE BASE64-KEY`; the principal or the key is missing",
                ));
            }
            let options = fields[1..type_at].join(" ").to_ascii_lowercase();
            if options.contains("cert-authority") {
                return Err(at(
                    "cert-authority lines are not supported; list the signing key itself",
                ));
            }
            if options.contains("valid-after") || options.contains("valid-before") {
                return Err(at(
                    "valid-after and valid-before are not supported; remove them, and remove the line to retire a key",
                ));
            }
            if let Some(namespaces) = option_value(&options, "namespaces")
                && !namespaces.split(',').any(|ns| ns.trim() == NAMESPACE)
            {
                continue;
            }
            let key =
                PublicKey::from_openssh(&format!("{} {}", fields[type_at], fields[type_at + 1]))
                    .map_err(|_| {
                        at("the key does not parse; copy the line from the signer's .pub file")
                    })?;
            signers.push(AllowedSigner {
                principals: fields[0].to_string(),
                key,
            });
        }
        if signers.is_empty() {
            return Err(ConfigError::new(
                KEY,
                format!(
                    "{} trusts no key for namespace {NAMESPACE}; add a line `PRINCIPAL ssh-ed25519 AAAA…` from the signer's .pub file",
                    path.display()
                ),
            ));
        }
        Ok(Self { signers })
    }

    /// Checks `signature` over `record`; Ok names the signer's principals.
    pub fn check(&self, record: &[u8], signature: &[u8]) -> Result<String, String> {
        let signature = SshSig::from_pem(signature)
            .map_err(|e| format!("the signature is not an SSH signature ({e})"))?;
        if signature.namespace() != NAMESPACE {
            return Err(format!(
                "the signature is for namespace {:?}, not {NAMESPACE:?}",
                signature.namespace()
            ));
        }
        let signer = self
            .signers
            .iter()
            .find(|s| s.key.key_data() == signature.public_key())
            .ok_or_else(|| {
                "it is signed by a key that signing.allowed_signers does not list".to_string()
            })?;
        signer
            .key
            .verify(NAMESPACE, record, &signature)
            .map_err(|_| {
                "the signature does not match the record: it was changed after signing".to_string()
            })?;
        Ok(signer.principals.clone())
    }
}

fn is_key_type(field: &str) -> bool {
    field.starts_with("ssh-") || field.starts_with("ecdsa-sha2-") || field.starts_with("sk-")
}

/// The value of `name="…"` (or `name=…`) in a comma-separated option list.
fn option_value(options: &str, name: &str) -> Option<String> {
    let start = options.find(&format!("{name}="))? + name.len() + 1;
    let rest = &options[start..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or_default().to_string(),
        None => rest
            .split([',', ' '])
            .next()
            .unwrap_or_default()
            .to_string(),
    })
}

fn read_small(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size > MAX_FILE {
        return Err(format!(
            "{} is {size} bytes, too large for a key file",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ssh-keygen -t ed25519`: (private key file, public key line).
    fn keypair(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
        let path = dir.join(name);
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        (path, public.trim().to_string())
    }

    #[test]
    fn a_signature_verifies_and_a_changed_manifest_does_not() {
        let dir = crate::scratch_dir();
        let (key, public) = keypair(dir.path(), "signer");
        let (_, other_public) = keypair(dir.path(), "other");
        let allowed = dir.path().join("allowed_signers");
        std::fs::write(
            &allowed,
            format!("# trusted\nops@example namespaces=\"git,etcd-offsite\" {public}\n"),
        )
        .unwrap();
        let signer = Signer::load(&key).unwrap();
        let manifest = br#"{"id":"20261130T000000Z"}"#;
        let signature = signer.sign(manifest).unwrap();
        let trusted = AllowedSigners::load(&allowed).unwrap();
        assert_eq!(
            trusted.check(manifest, signature.as_bytes()).unwrap(),
            "ops@example"
        );
        let err = trusted
            .check(br#"{"id":"20261130T000001Z"}"#, signature.as_bytes())
            .unwrap_err();
        assert!(err.contains("changed after signing"), "{err}");
        // Another key, or a key trusted only for other namespaces, is not trusted.
        std::fs::write(
            &allowed,
            format!("ops@example {other_public}\ngit@example namespaces=\"git\" {public}\n"),
        )
        .unwrap();
        let err = AllowedSigners::load(&allowed)
            .unwrap()
            .check(manifest, signature.as_bytes())
            .unwrap_err();
        assert!(err.contains("does not list"), "{err}");
        assert!(trusted.check(manifest, b"not a signature").is_err());
    }

    #[test]
    fn key_errors_never_echo_the_key() {
        let dir = crate::scratch_dir();
        let (key, _) = keypair(dir.path(), "signer");
        let text = std::fs::read_to_string(&key).unwrap();
        let body: String = text.lines().nth(1).unwrap().to_string();
        // A damaged key file.
        std::fs::write(&key, text.replacen("b3Blbn", "XXXXXX", 1)).unwrap();
        let err = Signer::load(&key).unwrap_err().to_string();
        assert!(err.contains("signing.key"), "{err}");
        assert!(!err.contains(&body[10..40]), "{err}");
        let allowed = dir.path().join("allowed_signers");
        std::fs::write(&allowed, "ops@example ssh-ed25519 AAAAnotbase64\n").unwrap();
        let err = AllowedSigners::load(&allowed).unwrap_err();
        assert!(err.key.contains("line 1"), "{err}");
    }
}
