//! Wall-clock milliseconds and the `HH:MM:SS.mmm` (UTC) stamp used by the
//! human log format. Only helpers read the clock; the protocol never does.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `HH:MM:SS.mmm` of a Unix-epoch millisecond count, in UTC.
pub(crate) fn hms_millis(ms: u64) -> String {
    let day_ms = ms % 86_400_000;
    let (h, rest) = (day_ms / 3_600_000, day_ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    format!("{h:02}:{m:02}:{s:02}.{milli:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_time_of_day() {
        assert_eq!(hms_millis(0), "00:00:00.000");
        // 2026-01-02T13:04:05.067Z
        assert_eq!(hms_millis(1_767_359_045_067), "13:04:05.067");
        assert_eq!(hms_millis(86_399_999), "23:59:59.999");
    }
}
