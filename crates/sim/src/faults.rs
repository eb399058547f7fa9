//! Seeded fault injection and latency.
//!
//! Each Zoho org, Salesforce org and Nylas grant owns its own dice, seeded from the simulator seed and
//! its id, and every request to it draws exactly one number in arrival order. So the same
//! seed and the same sequence of requests to one tenant give the same sequence of faults,
//! whatever the other tenants do. Latency draws come from a separate generator, so turning
//! latency on does not change which requests fail.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::clock::derive_seed;
use crate::config::FaultConfig;
use crate::lock;

/// A reproducible stream of uniform numbers in `[0, 1)`.
#[derive(Debug)]
pub struct Dice(Mutex<StdRng>);

impl Dice {
    pub fn new(seed: u64, label: &str) -> Dice {
        Dice(Mutex::new(StdRng::seed_from_u64(derive_seed(seed, label))))
    }

    pub fn roll(&self) -> f64 {
        lock(&self.0).random::<f64>()
    }
}

/// A fault injected on a Zoho API request (never on the accounts server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZohoFault {
    /// 429 `TOO_MANY_REQUESTS`, no `Retry-After`.
    TooManyRequests,
    /// 500 `INTERNAL_ERROR`.
    Internal,
    /// Stall `timeout_ms`, then 504.
    Timeout,
}

/// A fault injected on a Nylas request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NylasFault {
    /// 429 `nylas_rate_limit_exceeded`, no `Retry-After`.
    NylasRateLimit,
    /// 429 `rate_limit_error` with `provider_error` and `Retry-After: 1`.
    ProviderRateLimit,
    /// 500 `internal_error`.
    Internal,
}

/// A fault injected on a Salesforce API request (never on the login server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalesforceFault {
    /// 500 `UNKNOWN_EXCEPTION`.
    Internal,
    /// Stall `timeout_ms`, then 503 `SERVER_UNAVAILABLE`.
    Timeout,
}

/// Maps one roll to a Salesforce fault: `[0, 5xx) [5xx, timeout)`.
pub fn salesforce_fault(cfg: &FaultConfig, roll: f64) -> Option<SalesforceFault> {
    let a = cfg.sf_5xx_rate;
    let b = a + cfg.sf_timeout_rate;
    if roll < a {
        Some(SalesforceFault::Internal)
    } else if roll < b {
        Some(SalesforceFault::Timeout)
    } else {
        None
    }
}

/// Maps one roll to a Zoho fault: `[0, 429) [429, 5xx) [5xx, timeout)` stacked in that order.
pub fn zoho_fault(cfg: &FaultConfig, roll: f64) -> Option<ZohoFault> {
    let a = cfg.zoho_429_rate;
    let b = a + cfg.zoho_5xx_rate;
    let c = b + cfg.zoho_timeout_rate;
    if roll < a {
        Some(ZohoFault::TooManyRequests)
    } else if roll < b {
        Some(ZohoFault::Internal)
    } else if roll < c {
        Some(ZohoFault::Timeout)
    } else {
        None
    }
}

/// Maps one roll to a Nylas fault; the lower half of the 429 band is Nylas's own limit, the
/// upper half provider throttling.
pub fn nylas_fault(cfg: &FaultConfig, roll: f64) -> Option<NylasFault> {
    let a = cfg.nylas_429_rate;
    let b = a + cfg.nylas_5xx_rate;
    if roll < a / 2.0 {
        Some(NylasFault::NylasRateLimit)
    } else if roll < a {
        Some(NylasFault::ProviderRateLimit)
    } else if roll < b {
        Some(NylasFault::Internal)
    } else {
        None
    }
}

/// Uniform extra latency per request.
#[derive(Debug)]
pub struct Latency {
    range: [u64; 2],
    rng: Mutex<StdRng>,
}

impl Latency {
    pub fn new(seed: u64, range: [u64; 2]) -> Latency {
        Latency {
            range,
            rng: Mutex::new(StdRng::seed_from_u64(derive_seed(seed, "latency"))),
        }
    }

    /// Draws this request's delay.
    pub fn draw(&self) -> Duration {
        let [lo, hi] = self.range;
        if hi == 0 {
            return Duration::ZERO;
        }
        let ms = if lo >= hi {
            lo
        } else {
            lock(&self.rng).random_range(lo..=hi)
        };
        Duration::from_millis(ms)
    }
}

/// Sleeps for `d` unless it is zero (no timer for the common case).
pub async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolls_map_to_stacked_bands() {
        let cfg = FaultConfig {
            zoho_429_rate: 0.1,
            zoho_5xx_rate: 0.2,
            zoho_timeout_rate: 0.3,
            nylas_429_rate: 0.4,
            nylas_5xx_rate: 0.1,
            sf_5xx_rate: 0.25,
            sf_timeout_rate: 0.5,
            ..FaultConfig::default()
        };
        assert_eq!(salesforce_fault(&cfg, 0.1), Some(SalesforceFault::Internal));
        assert_eq!(salesforce_fault(&cfg, 0.5), Some(SalesforceFault::Timeout));
        assert_eq!(salesforce_fault(&cfg, 0.8), None);
        assert_eq!(zoho_fault(&cfg, 0.05), Some(ZohoFault::TooManyRequests));
        assert_eq!(zoho_fault(&cfg, 0.25), Some(ZohoFault::Internal));
        assert_eq!(zoho_fault(&cfg, 0.55), Some(ZohoFault::Timeout));
        assert_eq!(zoho_fault(&cfg, 0.65), None);
        assert_eq!(nylas_fault(&cfg, 0.1), Some(NylasFault::NylasRateLimit));
        assert_eq!(nylas_fault(&cfg, 0.3), Some(NylasFault::ProviderRateLimit));
        assert_eq!(nylas_fault(&cfg, 0.45), Some(NylasFault::Internal));
        assert_eq!(nylas_fault(&cfg, 0.5), None);
    }

    #[test]
    fn dice_with_the_same_seed_and_label_agree() {
        let a = Dice::new(1, "x");
        let b = Dice::new(1, "x");
        let c = Dice::new(1, "y");
        let sa: Vec<f64> = (0..10).map(|_| a.roll()).collect();
        let sb: Vec<f64> = (0..10).map(|_| b.roll()).collect();
        let sc: Vec<f64> = (0..10).map(|_| c.roll()).collect();
        assert_eq!(sa, sb);
        assert_ne!(sa, sc);
    }
}
