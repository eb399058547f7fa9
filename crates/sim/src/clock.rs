//! Simulated time: real elapsed time multiplied by `time_scale`, plus deterministic hashing
//! helpers and RFC 3339 formatting (jiff's calendar) shared by the API modules.

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

/// Formats Unix seconds as RFC 3339 in UTC with a `+00:00` offset (Zoho's style). Times
/// beyond jiff's range (years -9999 to 9999) are clamped to its ends.
pub fn rfc3339(unix_secs: i64) -> String {
    let ts = jiff::Timestamp::from_second(unix_secs).unwrap_or(if unix_secs < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    ts.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string()
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
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59+00:00");
    }

    #[test]
    fn derived_seeds_are_stable_and_distinct() {
        assert_eq!(derive_seed(42, "a"), derive_seed(42, "a"));
        assert_ne!(derive_seed(42, "a"), derive_seed(42, "b"));
        assert_ne!(derive_seed(42, "a"), derive_seed(43, "a"));
    }
}
