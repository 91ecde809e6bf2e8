//! kube-apiserver's encryption at rest, read side: the keys of an EncryptionConfiguration,
//! and the decryption of stored values, as kube-apiserver defines them
//! (`k8s.io/apiserver/pkg/storage/value/encrypt`):
//! - value = `k8s:enc:<provider>:v1:<key name>:` + ciphertext;
//! - `aescbc`: 16-byte IV, then AES-CBC with PKCS#7 padding;
//! - `aesgcm`: 12-byte nonce, then AES-GCM with the etcd key as authenticated data;
//! - `secretbox`: 24-byte nonce, then XSalsa20-Poly1305;
//! - `identity`: no prefix, plaintext; `kms`: needs the KMS plugin, not checkable offline.
//!
//! The plaintext of a Kubernetes object is the protobuf envelope (`k8s\0`…) or JSON.

use std::collections::BTreeMap;

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine as _;
use serde::Deserialize;

use crate::source::content::{encryption_of, encryption_prefix_len};

/// Key material by `(provider, key name)`; never printed.
pub struct Keyring {
    keys: BTreeMap<(String, String), Vec<u8>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

/// Why a value did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("the EncryptionConfiguration has no {provider} key named {key}")]
    NoKey { provider: String, key: String },
    #[error("{provider} key {key} does not decrypt it ({reason})")]
    Failed {
        provider: String,
        key: String,
        reason: String,
    },
    #[error("{provider} key {key} decrypts it, but not to a Kubernetes object")]
    NotAnObject { provider: String, key: String },
    #[error("{0} values need the KMS plugin; they cannot be checked offline")]
    Unsupported(String),
    #[error("not an encrypted value")]
    NotEncrypted,
}

#[derive(Deserialize)]
struct EncryptionConfiguration {
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
struct ResourceConfig {
    #[serde(default)]
    providers: Vec<ProviderConfig>,
}

#[derive(Deserialize)]
struct ProviderConfig {
    aescbc: Option<KeysConfig>,
    aesgcm: Option<KeysConfig>,
    secretbox: Option<KeysConfig>,
}

#[derive(Deserialize)]
struct KeysConfig {
    #[serde(default)]
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
struct KeyConfig {
    name: String,
    secret: String,
}

impl Keyring {
    /// Reads an EncryptionConfiguration (YAML or JSON). Errors never quote key material.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: EncryptionConfiguration = serde_yaml_ng::from_str(text).map_err(|e| {
            format!(
                "not an EncryptionConfiguration: {}",
                e.location()
                    .map_or(String::new(), |l| format!("line {}", l.line()))
            )
        })?;
        if config.kind != "EncryptionConfiguration" {
            return Err(format!(
                "kind is {:?}, not EncryptionConfiguration",
                config.kind
            ));
        }
        let mut keys = BTreeMap::new();
        for provider in config.resources.iter().flat_map(|r| &r.providers) {
            for (name, set) in [
                ("aescbc", &provider.aescbc),
                ("aesgcm", &provider.aesgcm),
                ("secretbox", &provider.secretbox),
            ] {
                for key in set.iter().flat_map(|s| &s.keys) {
                    let secret = base64::engine::general_purpose::STANDARD
                        .decode(key.secret.trim())
                        .map_err(|_| format!("{name} key {} is not base64", key.name))?;
                    keys.insert((name.to_string(), key.name.clone()), secret);
                }
            }
        }
        Ok(Self { keys })
    }

    /// Decrypts the stored `value` of `etcd_key` and checks that it is a Kubernetes object.
    pub fn open(&self, etcd_key: &[u8], value: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let (provider, key_name) = encryption_of(value).ok_or(DecryptError::NotEncrypted)?;
        let data = &value[encryption_prefix_len(value).ok_or(DecryptError::NotEncrypted)?..];
        if provider == "kms" {
            return Err(DecryptError::Unsupported(provider));
        }
        let secret = self
            .keys
            .get(&(provider.clone(), key_name.clone()))
            .ok_or_else(|| DecryptError::NoKey {
                provider: provider.clone(),
                key: key_name.clone(),
            })?;
        let failed = |reason: &str| DecryptError::Failed {
            provider: provider.clone(),
            key: key_name.clone(),
            reason: reason.to_string(),
        };
        let plain = match provider.as_str() {
            "aescbc" => aes_cbc(secret, data).map_err(&failed)?,
            "aesgcm" => aes_gcm(secret, data, etcd_key).map_err(&failed)?,
            "secretbox" => secretbox(secret, data).map_err(&failed)?,
            other => return Err(DecryptError::Unsupported(other.to_string())),
        };
        let object = plain.starts_with(b"k8s\0")
            || plain.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if !object {
            return Err(DecryptError::NotAnObject {
                provider,
                key: key_name,
            });
        }
        Ok(plain)
    }
}

fn aes_cbc(key: &[u8], data: &[u8]) -> Result<Vec<u8>, &'static str> {
    if data.len() < 32 || !data.len().is_multiple_of(16) {
        return Err("ciphertext is not whole AES blocks after the IV");
    }
    let (iv, ciphertext) = data.split_at(16);
    let padding = "wrong key or padding";
    match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(|_| "bad key")?
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(|_| padding),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
            .map_err(|_| "bad key")?
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(|_| padding),
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(|_| "bad key")?
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .map_err(|_| padding),
        _ => Err("the key is not 16, 24 or 32 bytes"),
    }
}

fn aes_gcm(key: &[u8], data: &[u8], aad: &[u8]) -> Result<Vec<u8>, &'static str> {
    if data.len() < 12 + 16 {
        return Err("too short for a nonce and a tag");
    }
    let (nonce, ciphertext) = data.split_at(12);
    let payload = Payload {
        msg: ciphertext,
        aad,
    };
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    let opened = match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .map_err(|_| "bad key")?
            .decrypt(nonce, payload),
        24 => aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(key)
            .map_err(|_| "bad key")?
            .decrypt(nonce, payload),
        32 => aes_gcm::Aes256Gcm::new_from_slice(key)
            .map_err(|_| "bad key")?
            .decrypt(nonce, payload),
        _ => return Err("the key is not 16, 24 or 32 bytes"),
    };
    opened.map_err(|_| "authentication failed (wrong key, or another etcd key)")
}

fn secretbox(key: &[u8], data: &[u8]) -> Result<Vec<u8>, &'static str> {
    use crypto_secretbox::{XSalsa20Poly1305, aead::Aead as _};
    if data.len() < 24 + 16 {
        return Err("too short for a nonce and a tag");
    }
    if key.len() != 32 {
        return Err("the key is not 32 bytes");
    }
    let (nonce, ciphertext) = data.split_at(24);
    let cipher = <XSalsa20Poly1305 as crypto_secretbox::KeyInit>::new_from_slice(key)
        .map_err(|_| "bad key")?;
    cipher
        .decrypt(crypto_secretbox::Nonce::from_slice(nonce), ciphertext)
        .map_err(|_| "authentication failed (wrong key)")
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use aes::cipher::BlockEncryptMut;

    /// Encrypts like kube-apiserver (test-only: the program never encrypts values).
    pub fn seal(
        provider: &str,
        key_name: &str,
        secret: &[u8],
        etcd_key: &[u8],
        plain: &[u8],
    ) -> Vec<u8> {
        let mut out = format!("k8s:enc:{provider}:v1:{key_name}:").into_bytes();
        match provider {
            "aescbc" => {
                let iv = [7u8; 16];
                out.extend_from_slice(&iv);
                out.extend(
                    cbc::Encryptor::<aes::Aes256>::new_from_slices(secret, &iv)
                        .unwrap()
                        .encrypt_padded_vec_mut::<Pkcs7>(plain),
                );
            }
            "aesgcm" => {
                let nonce = [9u8; 12];
                out.extend_from_slice(&nonce);
                out.extend(
                    aes_gcm::Aes256Gcm::new_from_slice(secret)
                        .unwrap()
                        .encrypt(
                            aes_gcm::Nonce::from_slice(&nonce),
                            Payload {
                                msg: plain,
                                aad: etcd_key,
                            },
                        )
                        .unwrap(),
                );
            }
            "secretbox" => {
                use crypto_secretbox::{XSalsa20Poly1305, aead::Aead as _};
                let nonce = [3u8; 24];
                out.extend_from_slice(&nonce);
                out.extend(
                    <XSalsa20Poly1305 as crypto_secretbox::KeyInit>::new_from_slice(secret)
                        .unwrap()
                        .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), plain)
                        .unwrap(),
                );
            }
            other => panic!("{other}"),
        }
        out
    }

    const CONFIG: &str = r#"
kind: EncryptionConfiguration
apiVersion: apiserver.config.k8s.io/v1
resources:
  - resources: [secrets, configmaps]
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=
      - aesgcm:
          keys:
            - name: gcm1
              secret: ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=
      - secretbox:
          keys:
            - name: box1
              secret: QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=
      - identity: {}
"#;

    #[test]
    fn values_open_as_kube_apiserver_wrote_them() {
        let keyring = Keyring::parse(CONFIG).unwrap();
        let key = b"/kubernetes.io/secrets/default/s1";
        let object = b"k8s\0\n\x0c\n\x02v1\x12\x06Secret";
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        for (provider, name, secret) in [
            (
                "aescbc",
                "key1",
                b64("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="),
            ),
            (
                "aesgcm",
                "gcm1",
                b64("ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="),
            ),
            (
                "secretbox",
                "box1",
                b64("QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8="),
            ),
        ] {
            let sealed = seal(provider, name, &secret, key, object);
            assert_eq!(keyring.open(key, &sealed).unwrap(), object, "{provider}");
            // Another key of the same name: refused.
            let wrong = seal(provider, name, &[0x55; 32], key, object);
            assert!(
                matches!(keyring.open(key, &wrong), Err(DecryptError::Failed { .. })),
                "{provider}"
            );
        }
        // GCM binds the value to its etcd key.
        let sealed = seal(
            "aesgcm",
            "gcm1",
            &b64("ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="),
            key,
            object,
        );
        assert!(
            keyring
                .open(b"/kubernetes.io/secrets/default/other", &sealed)
                .is_err()
        );
        let unknown = seal("aescbc", "key9", &[1; 32], key, object);
        assert_eq!(
            keyring.open(key, &unknown),
            Err(DecryptError::NoKey {
                provider: "aescbc".into(),
                key: "key9".into()
            })
        );
        assert!(matches!(
            keyring.open(key, b"k8s:enc:kms:v2:vault:xyz"),
            Err(DecryptError::Unsupported(_))
        ));
        assert_eq!(keyring.open(key, object), Err(DecryptError::NotEncrypted));
    }

    #[test]
    fn errors_never_quote_secrets() {
        let err = Keyring::parse("kind: EncryptionConfiguration\nresources:\n- providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: 'not base64 SECRETVALUE!'\n").unwrap_err();
        assert!(!err.contains("SECRETVALUE"), "{err}");
        assert!(Keyring::parse("kind: Secret\n").is_err());
    }
}
