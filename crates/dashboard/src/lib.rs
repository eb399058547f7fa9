//! Seeing the fleet: its state and history read straight from Redis (nothing else is asked:
//! every process of the fleet keeps its state there), rendered as text for `crmsync status`
//! and served as a web page with charts by `crmsync dashboard`.
//!
//! - [`Fleet::status`] → [`FleetStatus`]: queues, tenants (pauses, credits, runs, change
//!   feed, last error) and workers, in a few pipelined round trips.
//! - [`Fleet::series`] → [`Series`]: throughput per queue, credits and 429s per minute.
//! - [`text::render`]: the terminal tables.
//! - [`web`]: the authenticated dashboard (a self-contained page and its JSON API).
//!
//! **Boundary:** read-only as far as the fleet is concerned (the budget read drops credit
//! buckets that have left the window, as every limiter call does), and it never reads a secret.

mod fleet;
mod series;
pub mod text;
pub mod web;

pub use fleet::{
    Credits, ErrorSource, Feed, Fleet, FleetError, FleetStatus, FleetWorker, LastError, Pages, Pause, QUEUES,
    QueueStatus, Records, RunView, STALL_AFTER, StateKind, TenantState, TenantStatus,
};
pub use series::{CreditSeries, HOUR_POINTS, MINUTE_MS, QueueSeries, Series, bin, cumulative};
