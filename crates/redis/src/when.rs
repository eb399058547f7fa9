//! Times as people read them: UTC calendar times (`2026-12-03 14:05:09 UTC`), how long ago
//! (`3m ago`) and how long until (`in 3h12m`). The calendar is jiff's; crmsync prints UTC
//! only (a fleet spans time zones, and its logs are in UTC), so no time-zone database is
//! needed. JSON keeps the raw `_ms` numbers: these are for people.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::Offset;

/// The UTC calendar time of a time in ms (times past jiff's range, year 9999, are clamped).
fn datetime(ms: u64) -> DateTime {
    let ts = i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::MAX);
    Offset::UTC.to_datetime(ts)
}

/// Year, month, day, and seconds into the day (UTC) of a time in ms.
pub fn civil(ms: u64) -> (i64, u32, u32, u64) {
    let dt = datetime(ms);
    // Every field is in range (hours 0 to 23, months 1 to 12, ...): the casts are lossless.
    let secs = i64::from(dt.hour()) * 3600 + i64::from(dt.minute()) * 60 + i64::from(dt.second());
    (i64::from(dt.year()), dt.month() as u32, dt.day() as u32, secs as u64)
}

/// `2026-12-03 14:05:09 UTC`.
pub fn stamp(ms: u64) -> String {
    datetime(ms).strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `in 12s`, `in 5m07s`, `in 3h12m`, `in 2d04h` (`now` when `ms` has passed).
pub fn in_text(ms: u64, now_ms: u64) -> String {
    let s = ms.saturating_sub(now_ms) / 1000;
    match s {
        0 => "now".into(),
        1..=59 => format!("in {s}s"),
        60..=3599 => format!("in {}m{:02}s", s / 60, s % 60),
        3600..=172_799 => format!("in {}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("in {}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `12s ago`, `5m ago`, `3h ago` (up to two days), `2d ago`; `just now` under a second; a
/// time still to come (another host's clock ahead of ours) reads as [`in_text`].
pub fn ago_text(ms: u64, now_ms: u64) -> String {
    if ms > now_ms + 999 {
        return in_text(ms, now_ms);
    }
    let s = now_ms.saturating_sub(ms) / 1000;
    match s {
        0 => "just now".into(),
        1..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// `2026-12-03 14:05:09 UTC (3m ago)`, or `(in 3h12m)` for a time to come: an epoch-ms value
/// as the CLI shows it.
pub fn human(ms: u64, now_ms: u64) -> String {
    let rel = if ms > now_ms + 999 {
        in_text(ms, now_ms)
    } else {
        ago_text(ms, now_ms)
    };
    format!("{} ({rel})", stamp(ms))
}

/// `14:05 UTC` on the same UTC day as `now`, else `2026-12-04 14:05 UTC`.
pub fn utc_text(ms: u64, now_ms: u64) -> String {
    let (at, now) = (datetime(ms), datetime(now_ms));
    if at.date() == now.date() {
        at.strftime("%H:%M UTC").to_string()
    } else {
        at.strftime("%Y-%m-%d %H:%M UTC").to_string()
    }
}

/// `until 14:05 UTC (in 3h12m)`: when a wait ends, for people.
pub fn until_text(ms: u64, now_ms: u64) -> String {
    format!("until {} ({})", utc_text(ms, now_ms), in_text(ms, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_calendar_times_and_durations() {
        // 2026-12-03 09:03:47 UTC
        let now = 1_796_288_627_000;
        assert_eq!(civil(now), (2026, 12, 3, 9 * 3600 + 3 * 60 + 47));
        assert_eq!(in_text(now + 12_000, now), "in 12s");
        assert_eq!(in_text(now + 307_000, now), "in 5m07s");
        assert_eq!(in_text(now + 3 * 3_600_000 + 12 * 60_000, now), "in 3h12m");
        assert_eq!(in_text(now - 1, now), "now");
        assert_eq!(until_text(now + 3_600_000, now), "until 10:03 UTC (in 1h00m)");
        assert_eq!(utc_text(now + 86_400_000, now), "2026-12-04 09:03 UTC");
    }

    #[test]
    fn calendar_edges_match_the_proleptic_gregorian_calendar() {
        assert_eq!(civil(0), (1970, 1, 1, 0));
        // Leap days, century rules, the last second of a year.
        assert_eq!(civil(951_782_400_000), (2000, 2, 29, 0));
        assert_eq!(civil(4_107_542_400_000), (2100, 3, 1, 0));
        assert_eq!(civil(1_798_761_599_999), (2026, 12, 31, 86_399));
        assert_eq!(stamp(1_796_288_627_999), "2026-12-03 09:03:47 UTC");
        // Beyond jiff's range: clamped, not a panic.
        assert_eq!(civil(u64::MAX).0, 9999);
    }

    #[test]
    fn epoch_ms_reads_as_a_date_and_how_long_ago() {
        let now = 1_796_288_627_000;
        assert_eq!(human(now - 180_000, now), "2026-12-03 09:00:47 UTC (3m ago)");
        assert_eq!(human(now + 3_600_000, now), "2026-12-03 10:03:47 UTC (in 1h00m)");
        assert_eq!(ago_text(now, now), "just now");
        assert_eq!(ago_text(now - 5_000, now), "5s ago");
        assert_eq!(ago_text(now - 7_200_000, now), "2h ago");
        assert_eq!(ago_text(now - 3 * 86_400_000, now), "3d ago");
        assert_eq!(ago_text(now + 60_000, now), "in 1m00s");
    }
}
