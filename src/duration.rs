//! Bounds on durations from the config and the command line.

use std::time::Duration;

use crate::error::UsageError;

/// The longest duration any setting accepts: beyond it, date arithmetic overflows
/// (a window of 300000 years reaches before year 1), and no real policy needs it.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A command-line duration (`30m`, `2d`) given to `flag`, no longer than [`MAX_DURATION`].
pub fn bounded_flag(flag: &str, value: Duration) -> Result<Duration, UsageError> {
    if value > MAX_DURATION {
        return Err(UsageError(format!(
            "{flag} {}: longer than the maximum {}; use a shorter duration such as 30m",
            humantime::format_duration(value),
            humantime::format_duration(MAX_DURATION)
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_durations_are_bounded() {
        let thirty_minutes = Duration::from_secs(30 * 60);
        assert_eq!(
            bounded_flag("--skip-if-newer-than", thirty_minutes).unwrap(),
            thirty_minutes
        );
        let ages = humantime::parse_duration("300000y").unwrap();
        let err = bounded_flag("--skip-if-newer-than", ages).unwrap_err();
        assert!(err.to_string().contains("maximum"), "{err}");
        assert!(err.to_string().starts_with("--skip-if-newer-than"), "{err}");
    }
}
