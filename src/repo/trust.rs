//! The trust policy: with `signing.allowed_signers`, a manifest or drill record counts only
//! when a listed key signed its exact bytes. Anything about the signature that is not
//! right (missing, foreign, changed, oversized, a symbolic link, unreadable) makes the
//! record untrusted: passed over and reported, never an error that stops a command.

use crate::error::ConfigError;
use crate::signing::{AllowedSigners, Signer, SigningConfig};
use crate::store::{StoreError, StoreErrorKind, Target};

use super::layout::signature_of;

/// What the repository trusts, and the key it signs with.
#[derive(Debug, Clone)]
pub struct Trust {
    allowed: Option<AllowedSigners>,
    /// `signing.key`: loaded when first needed (a host that only reads has no key).
    key: Option<std::path::PathBuf>,
}

/// The judgement of one signed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// Signing is not enforced (no `signing.allowed_signers`).
    NotChecked,
    /// Signed by a listed key: its principals.
    Trusted(String),
    /// Why it is not trusted.
    Untrusted(String),
}

impl Trust {
    /// Loads `signing.allowed_signers` (errors name the file and the fix).
    pub fn load(signing: &SigningConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            allowed: signing
                .allowed_signers
                .as_deref()
                .map(AllowedSigners::load)
                .transpose()?,
            key: signing.key.clone(),
        })
    }

    /// Judge nothing: every readable record counts (a manifest copy, compared byte for
    /// byte with the snapshot side's instead).
    pub fn none() -> Self {
        Self {
            allowed: None,
            key: None,
        }
    }

    /// Whether only signed records count.
    pub fn enforced(&self) -> bool {
        self.allowed.is_some()
    }

    /// The signer of `signing.key`, when one is configured.
    pub fn signer(&self) -> Result<Option<Signer>, ConfigError> {
        self.key.as_deref().map(Signer::load).transpose()
    }

    /// Judges `record` (the exact bytes read from `record_key`) by its signature object.
    /// A signature that cannot be had (missing, too large, refused, a symbolic link on
    /// file://) is a verdict; only a store that fails to answer is an error.
    pub async fn judge(
        &self,
        target: &Target,
        record_key: &str,
        record: &[u8],
    ) -> Result<Signature, StoreError> {
        let Some(allowed) = &self.allowed else {
            return Ok(Signature::NotChecked);
        };
        let signature_key = signature_of(record_key);
        let signature = match target.read(&signature_key).await {
            Ok(bytes) => bytes,
            Err(e) => {
                return match e.kind {
                    StoreErrorKind::NotFound => Ok(Signature::Untrusted(format!(
                        "it has no signature ({signature_key} is missing)"
                    ))),
                    StoreErrorKind::TooLarge => Ok(Signature::Untrusted(format!(
                        "{signature_key} is too large to be a signature"
                    ))),
                    StoreErrorKind::Denied => Ok(Signature::Untrusted(format!(
                        "its signature cannot be read ({})",
                        e.reason
                    ))),
                    _ => Err(e),
                };
            }
        };
        Ok(match allowed.check(record, &signature) {
            Ok(principals) => Signature::Trusted(principals),
            Err(why) => Signature::Untrusted(why),
        })
    }
}
