//! Simulated time: real elapsed time multiplied by `time_scale`, plus deterministic hashing
//! helpers and RFC 3339 formatting shared by the API modules.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The simulator's clock. Simulated time starts at the real wall-clock time of the start and
/// runs `scale` times faster than real time.
#[derive(Debug, Clone)]
pub struct SimClock {
    started: Instant,
    wall_start_secs: f64,
    scale: f64,
}

impl SimClock {
    pub fn new(scale: f64) -> SimClock {
        let wall_start_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        SimClock {
            started: Instant::now(),
            wall_start_secs,
            scale,
        }
    }

    /// Simulated seconds since the simulator started.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * self.scale
    }

    /// Simulated Unix time in seconds.
    pub fn unix_now(&self) -> f64 {
        self.wall_start_secs + self.now()
    }

    /// Simulated wall-clock time as Zoho prints it: `2024-05-01T10:20:30+00:00`.
    pub fn rfc3339_now(&self) -> String {
        rfc3339(self.unix_now() as i64)
    }
}

/// Formats Unix seconds as RFC 3339 in UTC with a `+00:00` offset (Zoho's style).
pub fn rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// SplitMix64: a tiny, well-mixed, stable hash step used to derive sub-seeds, so that a seed
/// means the same thing in every build (unlike `std`'s randomized hasher).
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Stable 64-bit hash of a string (FNV-1a, then mixed).
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    splitmix64(h)
}

/// Derives a sub-seed from a seed and a label, e.g. `derive_seed(seed, "faults/org-acme")`.
pub fn derive_seed(seed: u64, label: &str) -> u64 {
    splitmix64(seed ^ hash_str(label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00+00:00");
        assert_eq!(rfc3339(1_723_821_985), "2024-08-16T15:26:25+00:00");
    }

    #[test]
    fn derived_seeds_are_stable_and_distinct() {
        assert_eq!(derive_seed(42, "a"), derive_seed(42, "a"));
        assert_ne!(derive_seed(42, "a"), derive_seed(42, "b"));
        assert_ne!(derive_seed(42, "a"), derive_seed(43, "a"));
    }
}
