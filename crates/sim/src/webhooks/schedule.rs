//! The seeded order of a batch's sends: genuine deliveries in `time` order, except that
//! some are held back behind later ones (reordered), some are followed later by an identical
//! second POST (duplicated), and some get an extra forged POST just before or after them.
//!
//! Shares are allotted by quota (`round(n × rate)` notifications, chosen by a seeded
//! shuffle), so a plan's counts are exact and reproducible.

use rand::Rng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;

use crate::generate::quota;

/// How many later notifications a held-back one (or a duplicate) is sent behind, at most.
const MAX_SHIFT: u32 = 10;

/// A forgery: an extra POST that a receiver must reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    /// The genuine body, signed with another secret.
    WrongSecret,
    /// The genuine body without `x-nylas-signature`.
    Unsigned,
    /// A tampered body (the opposite change, same notification id) carrying the genuine
    /// body's signature.
    Tampered,
    /// A tampered body without a signature.
    TamperedUnsigned,
}

impl Forgery {
    const ALL: [Forgery; 4] = [
        Forgery::WrongSecret,
        Forgery::Unsigned,
        Forgery::Tampered,
        Forgery::TamperedUnsigned,
    ];
}

/// What one send is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// The delivery proper (retried on failure).
    Genuine,
    /// An identical second POST of attempt 1 (not retried).
    Duplicate,
    /// An extra forged POST (not retried).
    Forged(Forgery),
}

impl SendKind {
    pub fn label(self) -> &'static str {
        match self {
            SendKind::Genuine => "genuine",
            SendKind::Duplicate => "duplicate",
            SendKind::Forged(_) => "forged",
        }
    }
}

/// One send: which notification, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub notification: usize,
    pub kind: SendKind,
}

/// The sends of a batch, in the order they start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    pub sends: Vec<Send>,
    pub duplicates: usize,
    pub reordered: usize,
    pub forged: usize,
}

/// `round(n × rate)` distinct indexes below `n`, chosen at random.
fn allot(rng: &mut StdRng, n: usize, rate: f64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut chosen = vec![false; n];
    for &i in order.iter().take(quota(n, rate).min(n)) {
        chosen[i] = true;
    }
    chosen
}

/// Plans the sends of `n` notifications (indexes in `time` order).
pub fn schedule(rng: &mut StdRng, n: usize, duplicate_rate: f64, reorder_rate: f64, forged_rate: f64) -> Schedule {
    let held = allot(rng, n, reorder_rate);
    let duplicated = allot(rng, n, duplicate_rate);
    let forged = allot(rng, n, forged_rate);
    let mut keyed: Vec<(f64, Send)> = Vec::with_capacity(n * 2);
    let mut out = Schedule::default();
    for i in 0..n {
        let mut key = i as f64;
        if held[i] {
            // Behind at least two later notifications: `time` order and arrival order differ.
            key += f64::from(rng.random_range(2..=MAX_SHIFT)) + 0.5;
            out.reordered += 1;
        }
        keyed.push((
            key,
            Send {
                notification: i,
                kind: SendKind::Genuine,
            },
        ));
        if duplicated[i] {
            let later = f64::from(rng.random_range(1..=MAX_SHIFT)) + 0.25;
            keyed.push((
                key + later,
                Send {
                    notification: i,
                    kind: SendKind::Duplicate,
                },
            ));
            out.duplicates += 1;
        }
        if forged[i] {
            let forgery = Forgery::ALL[out.forged % Forgery::ALL.len()];
            let side = if rng.random_bool(0.5) { -0.4 } else { 0.4 };
            keyed.push((
                key + side,
                Send {
                    notification: i,
                    kind: SendKind::Forged(forgery),
                },
            ));
            out.forged += 1;
        }
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.sends = keyed.into_iter().map(|(_, s)| s).collect();
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn counts_are_exact_and_every_notification_is_sent_genuinely_once() {
        let mut rng = StdRng::seed_from_u64(7);
        let s = schedule(&mut rng, 100, 0.1, 0.2, 0.05);
        assert_eq!((s.duplicates, s.reordered, s.forged), (10, 20, 5));
        assert_eq!(s.sends.len(), 115);
        let mut genuine: Vec<usize> = s
            .sends
            .iter()
            .filter(|x| x.kind == SendKind::Genuine)
            .map(|x| x.notification)
            .collect();
        let inversions = genuine.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(inversions > 0, "held-back notifications arrive after later ones");
        genuine.sort_unstable();
        assert_eq!(genuine, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_schedule() {
        let a = schedule(&mut StdRng::seed_from_u64(1), 50, 0.3, 0.3, 0.3);
        let b = schedule(&mut StdRng::seed_from_u64(1), 50, 0.3, 0.3, 0.3);
        assert_eq!(a, b);
        let none = schedule(&mut StdRng::seed_from_u64(1), 50, 0.0, 0.0, 0.0);
        assert_eq!(none.sends.len(), 50);
        assert!(none.sends.windows(2).all(|w| w[0].notification < w[1].notification));
    }
}
