//! Error classes that decide the exit code; everything else is a runtime failure.

use std::fmt;

/// Exit codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// etcd or target unreachable, upload failed.
    Runtime = 1,
    /// Usage or config error.
    Usage = 2,
    /// verify or restore found a mismatch.
    Integrity = 3,
    /// Refused by a guard ([`Refusal`]: lock held, fresh cluster, clocks apart, …).
    Refused = 4,
    /// `status`: the newest complete backup is older than its limit (or there is none).
    Stale = 5,
    /// Stopped by SIGINT after cleaning up (128 + 2, as a shell reports it).
    Interrupted = 130,
    /// Stopped by SIGTERM after cleaning up (128 + 15).
    Terminated = 143,
}

/// A configuration problem at a key path, with the fix.
#[derive(Debug, thiserror::Error)]
#[error("config error at `{key}`: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Stored or streamed data does not match what was recorded.
#[derive(Debug, thiserror::Error)]
#[error("integrity failure: {0}")]
pub struct IntegrityError(pub String);

/// Why a guard refused; every cause exits 4, and `run` tells routine ones from faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The cluster is younger than 24 h (OpenShift rotates its certificates then).
    FreshCluster,
    /// OpenShift cluster operators are rolling out a revision.
    OperatorsProgressing,
    /// A backup that covers this run exists (within the skip window, or the same files).
    AlreadyTaken,
    /// Another run holds the backup lock, or took it while this one tried.
    LockHeld,
    /// This host's clock and the store's differ by more than the tolerance.
    ClocksApart,
    /// The backup is from another platform version than the expected one.
    VersionMismatch,
    /// The restore directory already holds another backup's files.
    DirectoryInUse,
}

impl Refusal {
    /// Refusals that mean another run does (or did) the work: a scheduler counts them as
    /// skipped, not failed. A clock apart is a fault of this host that needs a human.
    pub fn routine(self) -> bool {
        matches!(
            self,
            Self::AlreadyTaken | Self::LockHeld | Self::FreshCluster | Self::OperatorsProgressing
        )
    }
}

/// A guard refused the operation on purpose.
#[derive(Debug, thiserror::Error)]
#[error("refused: {message}")]
pub struct Refused {
    pub cause: Refusal,
    pub message: String,
}

impl Refused {
    pub fn new(cause: Refusal, message: impl Into<String>) -> Self {
        Self {
            cause,
            message: message.into(),
        }
    }
}

/// The refusal in an error's chain, if a guard refused.
pub fn refusal(err: &anyhow::Error) -> Option<Refusal> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Refused>())
        .map(|r| r.cause)
}

/// `status` found the backups older than the limit the caller set.
#[derive(Debug, thiserror::Error)]
#[error("stale: {0}")]
pub struct Stale(pub String);

/// A signal stopped the command; what it had started (a drill's etcd, its scratch
/// directory) was stopped and removed first.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {name}; {cleaned}")]
pub struct Stopped {
    /// SIGTERM or SIGINT.
    pub name: &'static str,
    /// What was cleaned up.
    pub cleaned: String,
}

/// Bad command-line usage that clap cannot catch (e.g. a malformed backup id).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit class of an error: the first classified error in its chain wins.
pub fn exit_kind(err: &anyhow::Error) -> ExitKind {
    for cause in err.chain() {
        if cause.is::<ConfigError>() || cause.is::<UsageError>() {
            return ExitKind::Usage;
        }
        if cause.is::<IntegrityError>() {
            return ExitKind::Integrity;
        }
        if cause.is::<Refused>() {
            return ExitKind::Refused;
        }
        if cause.is::<Stale>() {
            return ExitKind::Stale;
        }
        if let Some(stopped) = cause.downcast_ref::<Stopped>() {
            return match stopped.name {
                "SIGINT" => ExitKind::Interrupted,
                _ => ExitKind::Terminated,
            };
        }
    }
    ExitKind::Runtime
}

/// One line of an error from a server: object_store's text includes whole response bodies
/// (starting on the first line: `... 404 Not Found: <?xml ...`) and request URLs, whose
/// query can carry credentials (an Azure SAS token), so bodies and queries are cut.
pub fn one_line(err: &dyn fmt::Display) -> String {
    const MAX: usize = 300;
    let text = err.to_string();
    let mut line = text.lines().next().unwrap_or_default().trim();
    if let Some(body) = [": <", ": {"].iter().filter_map(|m| line.find(m)).min() {
        line = line[..body].trim_end();
    }
    let line = line
        .split(' ')
        .map(|word| match word.find('?') {
            Some(q) if word.starts_with("http://") || word.starts_with("https://") => {
                format!("{}?…", &word[..q])
            }
            _ => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() > MAX {
        format!("{}…", line.chars().take(MAX).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_chain() {
        let err = anyhow::Error::new(IntegrityError("x".into())).context("verify 1");
        assert_eq!(exit_kind(&err), ExitKind::Integrity);
        let err = anyhow::Error::new(ConfigError::new("cluster", "empty")).context("loading");
        assert_eq!(exit_kind(&err), ExitKind::Usage);
        assert_eq!(exit_kind(&anyhow::anyhow!("boom")), ExitKind::Runtime);
        assert_eq!(
            exit_kind(&anyhow::Error::new(Refused::new(Refusal::LockHeld, "lock"))),
            ExitKind::Refused
        );
    }

    #[test]
    fn one_line_cuts_server_bodies() {
        let long = format!("first line {}\n<xml>body</xml>", "x".repeat(400));
        let line = one_line(&long);
        assert!(!line.contains("xml"));
        assert!(line.chars().count() <= 301);
        let s3 = "Error performing GET http://127.0.0.1:9/b?list-type=2&sig=SECRET in 5ms - Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>";
        assert_eq!(
            one_line(&s3),
            "Error performing GET http://127.0.0.1:9/b?… in 5ms - Server returned non-2xx status code: 404 Not Found"
        );
    }
}
