//! Zoho API credits over a rolling 24-hour window, and what each call costs.
//!
//! Charges are kept in per-second buckets of simulated time; a bucket's credits come back
//! 24 h after the end of its second, so credits return at most one simulated second late and
//! never early (a client that tracks its own spending is never surprised by a refusal it did
//! not expect for more than that second).

use std::collections::VecDeque;

/// Length of the rolling window in simulated seconds.
pub const WINDOW_SECS: f64 = 86_400.0;

/// Zoho charges 1 credit per 10 records of an insert/update/upsert (a 100-record upsert
/// costs 10, a 1-record upsert 1).
pub fn upsert_cost(records: usize) -> u64 {
    (records.div_ceil(10) as u64).max(1)
}

/// Delete (up to 100 ids) and search cost 1 credit each.
pub const DELETE_COST: u64 = 1;
pub const SEARCH_COST: u64 = 1;

/// Credits spent in the last 24 simulated hours, and in total.
#[derive(Debug, Default)]
pub struct CreditWindow {
    /// (simulated second, credits charged in it), oldest first.
    buckets: VecDeque<(u64, u64)>,
    in_window: u64,
    total: u64,
    /// The most credits ever used within one window (checked at every charge).
    max_in_window: u64,
}

impl CreditWindow {
    fn expire(&mut self, now: f64) {
        while let Some(&(second, credits)) = self.buckets.front() {
            if (second + 1) as f64 + WINDOW_SECS <= now {
                self.buckets.pop_front();
                self.in_window -= credits;
            } else {
                break;
            }
        }
    }

    /// Credits used in the window ending at `now` (simulated seconds).
    pub fn used(&mut self, now: f64) -> u64 {
        self.expire(now);
        self.in_window
    }

    /// The most credits used within any window so far: what a budget must never exceed.
    pub fn max_in_window(&self) -> u64 {
        self.max_in_window
    }

    /// Credits used since the simulator started.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Records `credits` spent at `now`.
    pub fn charge(&mut self, now: f64, credits: u64) {
        self.expire(now);
        let second = now.max(0.0) as u64;
        match self.buckets.back_mut() {
            Some((s, c)) if *s == second => *c += credits,
            _ => self.buckets.push_back((second, credits)),
        }
        self.in_window += credits;
        self.total += credits;
        self.max_in_window = self.max_in_window.max(self.in_window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_costs_one_credit_per_ten_records_at_least_one() {
        assert_eq!(upsert_cost(0), 1);
        assert_eq!(upsert_cost(1), 1);
        assert_eq!(upsert_cost(10), 1);
        assert_eq!(upsert_cost(11), 2);
        assert_eq!(upsert_cost(100), 10);
    }

    #[test]
    fn credits_return_a_day_after_their_second_ends() {
        let mut w = CreditWindow::default();
        w.charge(10.5, 3);
        w.charge(10.9, 2);
        w.charge(500.0, 4);
        assert_eq!(w.used(11.0), 9);
        assert_eq!(w.used(10.0 + WINDOW_SECS), 9);
        assert_eq!(w.used(11.0 + WINDOW_SECS), 4);
        assert_eq!(w.used(501.0 + WINDOW_SECS), 0);
        assert_eq!(w.max_in_window(), 9);
        assert_eq!(w.total(), 9);
    }
}
