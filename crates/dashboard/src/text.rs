//! The terminal rendering of a [`FleetStatus`] (`crmsync status`): a queues table, a tenants
//! table and a workers table, readable from 80 to 120 columns and more.

use std::fmt::Write as _;

use crmsync_producer::RunStatus;

use crmsync_limits::BudgetKind;
use crmsync_redis::when::{until_text, utc_text};

use crate::fleet::{ErrorSource, FleetStatus, LastError, Pause, RunView, TenantStatus};

/// Terminals at least this wide get why a tenant is paused and its last error as columns;
/// narrower ones (80 to 120 columns are common) on lines of their own under the tenant.
const WIDE: usize = 160;

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// `in 12s`, `in 5m07s`, `in 3h12m`.
pub fn until(ms: u64, now_ms: u64) -> String {
    let s = ms.saturating_sub(now_ms) / 1000;
    match s {
        0..=59 => format!("in {s}s"),
        60..=3599 => format!("in {}m{:02}s", s / 60, s % 60),
        _ => format!("in {}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `s` cut to `width` characters, with an ellipsis when cut.
pub fn fit(s: &str, width: usize) -> String {
    let s = s.replace(['\n', '\r', '\t'], " ");
    if s.chars().count() <= width {
        return s;
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `HH:MM:SS` UTC of a time in ms.
fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s % 3600 / 60, s % 60)
}

/// A run's progress: `50% 4/8p`, `12p` (last page not read yet), `draining`, or the last
/// run's end (`done 2h ago`).
pub fn run_text(t: &TenantStatus, now_ms: u64) -> String {
    let progress = |r: &RunView| match (r.progress, r.run.last_page) {
        (Some(p), Some(last)) => format!("{:.0}% {}/{}p", p * 100.0, r.run.pages_done, last + 1),
        _ => format!("{}p read", r.run.pages_done),
    };
    if let Some(r) = &t.run {
        let what = match r.run.kind {
            crmsync_producer::RunKind::Reconcile => "rc ",
            crmsync_producer::RunKind::Backfill => "",
        };
        return match r.run.status {
            RunStatus::Draining => format!("{what}draining"),
            _ => format!("{what}{}", progress(r)),
        };
    }
    match &t.last_run {
        Some(r) => {
            let when = r.run.finished_at_ms.unwrap_or(r.run.updated_at_ms);
            let what = match r.run.status {
                RunStatus::Completed => "done",
                RunStatus::Failed => "failed",
                RunStatus::Cancelled => "cancelled",
                _ => "stalled",
            };
            format!("{what} {}", ago(when, now_ms))
        }
        None => "-".into(),
    }
}

/// `dead letter 5m ago: <reason>`.
pub fn error_text(e: &LastError, now_ms: u64) -> String {
    let source = match e.source {
        ErrorSource::Run => "run failed",
        ErrorSource::DeadLetter => "dead letter",
        ErrorSource::Rejected => "rejected",
    };
    format!("{source} {}: {}", ago(e.at_ms, now_ms), e.message)
}

/// The whole status as text, for a terminal `width` columns wide (80 to 120 and more).
pub fn render(s: &FleetStatus, width: usize) -> String {
    let now = s.at_ms;
    let width = width.max(80);
    let mut out = String::new();
    let paused = s.tenants.iter().filter(|t| t.paused()).count();
    let alive = s.workers.iter().filter(|w| w.worker.alive).count();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "crmsync fleet `{}` at {}: {} ({paused} paused), {} alive",
        s.namespace,
        clock(now),
        plural(s.tenants.len(), "tenant"),
        plural(alive, "worker")
    );

    // 80 columns: the workers' count is in the first line and their table.
    let _ = writeln!(
        out,
        "\n{:<9} {:>8} {:>9} {:>8} {:>6} {:>8} {:>7} {:>8} {:>9}",
        "QUEUE", "PENDING", "IN FLIGHT", "DELAYED", "DEAD", "DONE/MIN", "RETRIED", "DEFERRED", "RECLAIMED"
    );
    for q in &s.queues {
        let _ = writeln!(
            out,
            "{:<9} {:>8} {:>9} {:>8} {:>6} {:>8} {:>7} {:>8} {:>9}",
            fit(&q.queue, 9),
            q.pending,
            q.in_flight,
            q.delayed,
            q.dead,
            q.last_minute.done,
            q.last_minute.retried,
            q.last_minute.deferred,
            q.last_minute.reclaimed
        );
    }

    if s.tenants.is_empty() {
        let _ = writeln!(out, "\nNo tenant yet: add one with `crmsync tenant add`.");
    } else if width >= WIDE {
        tenants_wide(&mut out, s, width);
    } else {
        tenants_narrow(&mut out, s, width);
    }

    if !s.workers.is_empty() {
        let name_w = width.saturating_sub(10 + 10 + 10 + 8 + 4).clamp(24, 56);
        let _ = writeln!(
            out,
            "\n{:<10} {:<name_w$} {:>10} {:>10} {:<8}",
            "QUEUE", "WORKER", "IN FLIGHT", "HEARTBEAT", "STATE"
        );
        for w in &s.workers {
            let state = if w.worker.alive {
                "alive"
            } else if w.worker.state == "stopped" {
                "stopped"
            } else {
                "lost"
            };
            let _ = writeln!(
                out,
                "{:<10} {:<name_w$} {:>10} {:>10} {:<8}",
                fit(&w.queue, 10),
                fit(&w.worker.name, name_w),
                format!("{}/{}", w.worker.in_flight, w.worker.concurrency),
                ago(w.worker.last_heartbeat_ms, now),
                state
            );
        }
    }
    // No trailing blanks from padded last columns.
    out.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// `-`, or the kind of the first pause (`operator`, `budget`, `429`), `+` when there are more.
fn paused_col(t: &TenantStatus) -> String {
    if t.problem.is_some() {
        return "ERROR".into();
    }
    match t.pauses.as_slice() {
        [] => "-".into(),
        [p] => p.label().into(),
        [p, ..] => format!("{}+", p.label()),
    }
}

/// When the first pause ends: `in 3h12m`, or `resume` for an operator's (until `crmsync resume`).
fn until_col(t: &TenantStatus, now: u64) -> String {
    match t.pauses.first() {
        None => "-".into(),
        Some(p) => p.until_ms().map(|u| until(u, now)).unwrap_or_else(|| "resume".into()),
    }
}

/// Every pause in words: `CRM migration (operator, since 2h ago)`.
fn why_text(t: &TenantStatus, now: u64) -> String {
    if let Some(p) = &t.problem {
        return p.clone();
    }
    t.pauses
        .iter()
        .map(|p| match p {
            Pause::Operator { reason, since_ms } => format!("{reason} (operator, since {})", ago(*since_ms, now)),
            Pause::Budget {
                until_ms,
                used,
                others,
                allowed,
                whose,
            } => match whose {
                BudgetKind::Ours => format!(
                    "budget used: crmsync used {} of {}; resumes by itself {}",
                    thousands(*used),
                    thousands(*allowed),
                    until_text(*until_ms, now)
                ),
                BudgetKind::Account => format!(
                    "the org's budget is used: its other integrations used {}, crmsync {}, of {}; resumes by itself {}",
                    thousands(*others),
                    thousands(*used),
                    thousands(*allowed),
                    until_text(*until_ms, now)
                ),
                BudgetKind::Probe => format!(
                    "the org's budget is used: its other integrations used {}, crmsync {}, of {}; its usage is read again at {} ({})",
                    thousands(*others),
                    thousands(*used),
                    thousands(*allowed),
                    utc_text(*until_ms, now),
                    until(*until_ms, now)
                ),
            },
            Pause::Cooldown { until_ms } => {
                format!("the CRM answered 429; every worker waits {}", until_text(*until_ms, now))
            }
            Pause::Blocked {
                code,
                reason,
                until_ms,
                since_ms,
            } => format!(
                "{} ({code}, since {}){}",
                reason,
                ago(*since_ms, now),
                until_ms
                    .map(|u| format!("; waits {}", until_text(u, now)))
                    .unwrap_or_default()
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `30/800 (4%)`; with the org's other integrations' usage: `30+150 others/800 (23%)`; a CRM
/// counting requests (Salesforce) says so: `30/800 req (4%)`.
fn credits_col(t: &TenantStatus) -> String {
    let others = if t.credits.others > 0 {
        format!("+{} others", thousands(t.credits.others))
    } else {
        String::new()
    };
    let unit = if t.credits.unit == "requests" { " req" } else { "" };
    format!(
        "{}{others}/{}{unit} ({:.0}%)",
        thousands(t.credits.used),
        thousands(t.credits.allowed),
        t.credits.percent
    )
}

/// Wide terminals: one row per tenant, every field a column.
fn tenants_wide(out: &mut String, s: &FleetStatus, width: usize) {
    let now = s.at_ms;
    // TENANT 14, PAUSED 9, UNTIL 10, WHY, CREDITS 24, RUN 14, LAST ERROR.
    let fixed = 14 + 9 + 10 + 24 + 14 + 6;
    let why_w = ((width - fixed) * 2 / 5).clamp(24, 60);
    let err_w = width - fixed - why_w;
    let _ = writeln!(
        out,
        "\n{:<14} {:<9} {:<10} {:<why_w$} {:<24} {:<14} LAST ERROR",
        "TENANT", "PAUSED", "UNTIL", "WHY", "BUDGET USED/ALLOWED", "RUN"
    );
    for t in &s.tenants {
        let err = t.last_error.as_ref().map(|e| error_text(e, now));
        let why = why_text(t, now);
        let _ = writeln!(
            out,
            "{:<14} {:<9} {:<10} {:<why_w$} {:<24} {:<14} {}",
            fit(&t.id, 14),
            paused_col(t),
            until_col(t, now),
            fit(if why.is_empty() { "-" } else { &why }, why_w),
            fit(&credits_col(t), 24),
            fit(&run_text(t, now), 14),
            fit(err.as_deref().unwrap_or("-"), err_w)
        );
    }
}

/// 80 to 160 columns: a row per tenant, then why it is paused and its last error on lines of
/// their own, so neither is cut short.
fn tenants_narrow(out: &mut String, s: &FleetStatus, width: usize) {
    let now = s.at_ms;
    let _ = writeln!(
        out,
        "\n{:<14} {:<9} {:<10} {:<24} RUN",
        "TENANT", "PAUSED", "UNTIL", "BUDGET USED/ALLOWED"
    );
    for t in &s.tenants {
        let _ = writeln!(
            out,
            "{:<14} {:<9} {:<10} {:<24} {}",
            fit(&t.id, 14),
            paused_col(t),
            until_col(t, now),
            fit(&credits_col(t), 24),
            fit(&run_text(t, now), width - 61)
        );
        if t.paused() || t.problem.is_some() {
            let _ = writeln!(out, "  why: {}", fit(&why_text(t, now), width - 7));
        }
        if let Some(e) = &t.last_error {
            let _ = writeln!(out, "  last error: {}", fit(&error_text(e, now), width - 14));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(40_000_000), "40,000,000");
        assert_eq!(ago(1_000, 6_000), "5s ago");
        assert_eq!(ago(0, 7_200_000), "2h ago");
        assert_eq!(until(3_600_000 + 720_000, 0), "in 1h12m");
        assert_eq!(until(65_000, 0), "in 1m05s");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("a\nb", 4), "a b");
        assert_eq!(clock(3_661_000), "01:01:01 UTC");
    }
}
