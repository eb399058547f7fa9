//! Times as people read them: UTC calendar times and "in 3h12m".

/// Year, month, day, and seconds into the day (UTC) of a time in ms.
pub fn civil(ms: u64) -> (i64, u32, u32, u64) {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem)
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

/// `14:05 UTC` on the same UTC day as `now`, else `2026-12-04 14:05 UTC`.
pub fn utc_text(ms: u64, now_ms: u64) -> String {
    let (y, m, d, rem) = civil(ms);
    let clock = format!("{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60);
    let (ny, nm, nd, _) = civil(now_ms);
    if (ny, nm, nd) == (y, m, d) {
        clock
    } else {
        format!("{y:04}-{m:02}-{d:02} {clock}")
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
}
