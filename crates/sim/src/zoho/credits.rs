//! Zoho API credits over a rolling 24-hour window (crmsync's and other integrations'), and
//! what each call costs.
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
/// Get Records (`GET /crm/{version}/Contacts`, up to 200 records a page) costs 1 credit per
/// call, as any get.
pub const GET_RECORDS_COST: u64 = 1;

/// Usage in the last 24 simulated hours, and in total: crmsync's own charges and, apart,
/// what other integrations of the org spent (which the org's limit counts just the same).
///
/// Salesforce's daily API requests use the same window (one unit per request).
#[derive(Debug, Default)]
pub struct CreditWindow {
    /// Charges per simulated second, oldest first.
    buckets: VecDeque<Bucket>,
    in_window: u64,
    others_in_window: u64,
    total: u64,
    others_total: u64,
    /// The most used within one window, everyone's usage included (checked at every charge).
    max_in_window: u64,
    /// The same, checked only at crmsync's charges: what crmsync's calls took the org to.
    max_at_our_charge: u64,
}

#[derive(Debug)]
struct Bucket {
    second: u64,
    ours: u64,
    others: u64,
}

impl CreditWindow {
    fn expire(&mut self, now: f64) {
        while let Some(b) = self.buckets.front() {
            if (b.second + 1) as f64 + WINDOW_SECS <= now {
                self.in_window -= b.ours + b.others;
                self.others_in_window -= b.others;
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// Used in the window ending at `now` (simulated seconds), by everyone: what the org's
    /// limit and its headers see.
    pub fn used(&mut self, now: f64) -> u64 {
        self.expire(now);
        self.in_window
    }

    /// The part of [`used`](Self::used) spent by other integrations.
    pub fn others_used(&mut self, now: f64) -> u64 {
        self.expire(now);
        self.others_in_window
    }

    /// The most used within any window so far, everyone's usage included: what a budget must
    /// never exceed.
    pub fn max_in_window(&self) -> u64 {
        self.max_in_window
    }

    /// The most the org had used in the window right after one of crmsync's charges: over the
    /// share, crmsync's own call took the org past it (others' spend alone may, after).
    pub fn max_at_our_charge(&self) -> u64 {
        self.max_at_our_charge
    }

    /// crmsync's own charges since the simulator started.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Other integrations' charges since the simulator started.
    pub fn others_total(&self) -> u64 {
        self.others_total
    }

    /// Records `credits` spent by crmsync at `now`.
    pub fn charge(&mut self, now: f64, credits: u64) {
        self.add(now, credits, false);
    }

    /// Records `credits` spent by another integration at `now`.
    pub fn charge_other(&mut self, now: f64, credits: u64) {
        self.add(now, credits, true);
    }

    fn add(&mut self, now: f64, credits: u64, other: bool) {
        self.expire(now);
        let second = now.max(0.0) as u64;
        if self.buckets.back().is_none_or(|b| b.second != second) {
            self.buckets.push_back(Bucket {
                second,
                ours: 0,
                others: 0,
            });
        }
        if let Some(b) = self.buckets.back_mut() {
            if other {
                b.others += credits;
            } else {
                b.ours += credits;
            }
        }
        self.in_window += credits;
        if other {
            self.others_in_window += credits;
            self.others_total += credits;
        } else {
            self.total += credits;
        }
        self.max_in_window = self.max_in_window.max(self.in_window);
        if !other {
            self.max_at_our_charge = self.max_at_our_charge.max(self.in_window);
        }
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

    #[test]
    fn other_integrations_share_the_window_but_not_our_totals() {
        let mut w = CreditWindow::default();
        w.charge(1.0, 5);
        w.charge_other(1.5, 7);
        w.charge_other(100.0, 1);
        assert_eq!((w.used(101.0), w.others_used(101.0)), (13, 8));
        assert_eq!((w.total(), w.others_total(), w.max_in_window()), (5, 8, 13));
        assert_eq!((w.used(2.0 + WINDOW_SECS), w.others_used(2.0 + WINDOW_SECS)), (1, 1));
        assert_eq!(w.others_total(), 8, "totals never expire");
    }
}
