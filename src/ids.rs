//! Backup ids, cluster-backup.sh timestamps and host names: formats that the manifest, the
//! sources and the repository share (none of them owns the others').

use chrono::{DateTime, NaiveDateTime, Utc};

/// `YYYYMMDDTHHMMSSZ`: backup ids and drill record names.
const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// `cluster-backup.sh`'s timestamp format (`date +%F_%H%M%S`).
const RESTORE_TS_FORMAT: &str = "%Y-%m-%d_%H%M%S";

/// Backup id for a start time; `attempt` > 0 adds a suffix for a second backup in the same second.
pub fn backup_id(started_at: DateTime<Utc>, attempt: u32) -> String {
    let base = compact_time(started_at);
    if attempt == 0 {
        base
    } else {
        // Two digits keep string order equal to time order.
        format!("{base}-{attempt:02}")
    }
}

/// `at` as `YYYYMMDDTHHMMSSZ`, the time part of ids and drill record names.
pub fn compact_time(at: DateTime<Utc>) -> String {
    at.format(ID_FORMAT).to_string()
}

/// The start time encoded in an id, or None when the name is not a backup id.
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let base = id.get(..16)?;
    let suffix = &id[16..];
    let suffix_ok = suffix.is_empty()
        || (suffix.len() == 3
            && suffix.starts_with('-')
            && suffix[1..].bytes().all(|b| b.is_ascii_digit()));
    if !suffix_ok {
        return None;
    }
    NaiveDateTime::parse_from_str(base, ID_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// `cluster-backup.sh`'s timestamp of a start time, used in restored file names.
pub fn restore_timestamp(started_at: DateTime<Utc>) -> String {
    started_at.format(RESTORE_TS_FORMAT).to_string()
}

/// The time in a `cluster-backup.sh` timestamp (`2026-11-23_104649`), or None when `ts` is
/// not exactly of that shape (so it is safe in a file name).
pub fn parse_restore_timestamp(ts: &str) -> Option<NaiveDateTime> {
    let shaped = ts.len() == 17
        && ts.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'_',
            _ => b.is_ascii_digit(),
        });
    shaped
        .then(|| NaiveDateTime::parse_from_str(ts, RESTORE_TS_FORMAT).ok())
        .flatten()
}

/// This host's name, for manifests, drill records and lock records.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_in_time_order() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 10, 46, 49).unwrap();
        let later = Utc.with_ymd_and_hms(2026, 11, 23, 10, 46, 50).unwrap();
        let mut ids = vec![
            backup_id(later, 0),
            backup_id(t, 10),
            backup_id(t, 2),
            backup_id(t, 0),
        ];
        ids.sort();
        assert_eq!(
            ids,
            [
                "20261123T104649Z",
                "20261123T104649Z-02",
                "20261123T104649Z-10",
                "20261123T104650Z"
            ]
        );
        assert_eq!(id_time("20261123T104649Z-02"), Some(t));
        assert_eq!(id_time("20261123T104649Z"), Some(t));
        assert_eq!(id_time("backup.lock"), None);
        assert_eq!(id_time("20261123T104649Zx"), None);
        assert_eq!(restore_timestamp(t), "2026-11-23_104649");
        assert_eq!(
            parse_restore_timestamp("2026-11-23_104649").map(|n| n.and_utc()),
            Some(t)
        );
        for bad in [
            "2026-11-23_10464",
            "2026-11-23_1046490",
            "../../etc/passwd",
            "2026-13-23_104649",
            "2026-11-23/104649",
            "manual-before-up",
        ] {
            assert_eq!(parse_restore_timestamp(bad), None, "{bad}");
        }
    }
}
