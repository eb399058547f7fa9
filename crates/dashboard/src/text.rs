//! The terminal rendering of a [`FleetStatus`] (`crmsync status`): a queues table, a tenants
//! table and a workers table, readable from 80 to 120 columns and more.
//!
//! Numbers read one way (`2,190/40,000`, from [`crmsync_redis::num`]) and times one way
//! (`14:05 UTC (in 3h12m)`, `5m ago`, from [`crmsync_redis::when`]), as in the rest of the
//! CLI.

use std::fmt::Write as _;

use crmsync_limits::BudgetKind;
use crmsync_producer::RunStatus;
pub use crmsync_redis::num::thousands;
use crmsync_redis::when::{ago_text, in_text, stamp, until_text, utc_text};

use crate::fleet::{ErrorSource, FleetStatus, LastError, Pause, RunView, StateKind, TenantStatus};

/// Terminals at least this wide get why a tenant is paused and its last error as columns;
/// narrower ones (80 to 120 columns are common) on lines of their own under the tenant.
const WIDE: usize = 160;

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(ms: u64, now_ms: u64) -> String {
    ago_text(ms, now_ms)
}

/// `in 12s`, `in 5m07s`, `in 3h12m`.
pub fn until(ms: u64, now_ms: u64) -> String {
    in_text(ms, now_ms)
}

/// `s` on one line (control characters as spaces) cut to `width` characters, with an ellipsis
/// when cut.
pub fn fit(s: &str, width: usize) -> String {
    crmsync_ops::one_line(s, width)
}

/// `text` wrapped at word boundaries into lines of at most `width` characters, at most
/// `max_lines` of them (the last one cut with an ellipsis when more would follow).
pub fn wrap(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let fits = cur.chars().count() + 1 + word.chars().count() <= width;
        if !cur.is_empty() && !fits {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    let more = lines.len() > max_lines.max(1);
    lines.truncate(max_lines.max(1));
    let n = lines.len();
    for (i, l) in lines.iter_mut().enumerate() {
        if more && i + 1 == n {
            l.push_str(" …");
        }
        *l = fit(l, width);
    }
    lines
}

/// `4/8p`, or `12p` while the last page is not known.
fn pages_text(r: &RunView) -> String {
    match r.pages.total {
        Some(total) => format!("{}/{}p", thousands(r.pages.done), thousands(total)),
        None => format!("{}p", thousands(r.pages.done)),
    }
}

/// What a run wrote, apart from the pages it read: `1,200 written · 300 waiting`.
fn records_text(r: &RunView) -> String {
    let mut s = format!("{} written", thousands(r.records.written));
    if r.records.waiting > 0 {
        let _ = write!(s, " · {} waiting", thousands(r.records.waiting));
    }
    s
}

/// A run's progress, pages read and records written apart (a run whose every page is read
/// may still have most of its records to write): `4/8p · 1,200 written · 300 waiting`; or the
/// last run's end (`done 2h ago · 1,200 written`).
pub fn run_text(t: &TenantStatus, now_ms: u64) -> String {
    if let Some(r) = &t.run {
        let what = match r.run.kind {
            crmsync_producer::RunKind::Reconcile => "rc ",
            crmsync_producer::RunKind::Backfill => "",
        };
        return format!("{what}{} · {}", pages_text(r), records_text(r));
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
            format!("{what} {} · {}", ago(when, now_ms), records_text(r))
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

/// `2 worker processes alive (6 queue workers)`: a worker process runs one queue worker per
/// queue, each with its own heartbeat, so processes are counted apart (by host and pid).
fn workers_text(s: &FleetStatus) -> String {
    let n = s.worker_processes_alive;
    let queue_workers = s.workers.iter().filter(|w| w.worker.alive).count();
    format!(
        "{n} worker process{} alive ({queue_workers} queue worker{})",
        if n == 1 { "" } else { "es" },
        if queue_workers == 1 { "" } else { "s" }
    )
}

/// The whole status as text, for a terminal `width` columns wide (80 to 120 and more).
pub fn render(s: &FleetStatus, width: usize) -> String {
    let now = s.at_ms;
    let width = width.max(80);
    let mut out = String::new();
    let paused = s.tenants.iter().filter(|t| t.paused()).count();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "crmsync fleet `{}` at {}",
        fit(&s.namespace, width.saturating_sub(40)),
        stamp(now)
    );
    let _ = writeln!(
        out,
        "{} ({paused} paused) · {}",
        plural(s.tenants.len(), "tenant"),
        workers_text(s)
    );

    // 80 columns: `maintenance` is the longest queue name.
    let _ = writeln!(
        out,
        "\n{:<11} {:>8} {:>9} {:>7} {:>5} {:>8} {:>7} {:>8} {:>9}",
        "QUEUE", "PENDING", "IN FLIGHT", "DELAYED", "DEAD", "DONE/MIN", "RETRIED", "DEFERRED", "RECLAIMED"
    );
    for q in &s.queues {
        let _ = writeln!(
            out,
            "{:<11} {:>8} {:>9} {:>7} {:>5} {:>8} {:>7} {:>8} {:>9}",
            fit(&q.queue, 11),
            thousands(q.pending),
            thousands(q.in_flight),
            thousands(q.delayed),
            thousands(q.dead),
            thousands(q.last_minute.done),
            thousands(q.last_minute.retried),
            thousands(q.last_minute.deferred),
            thousands(q.last_minute.reclaimed)
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
        let name_w = width.saturating_sub(11 + 10 + 10 + 8 + 4).clamp(24, 56);
        let _ = writeln!(
            out,
            "\n{:<11} {:<name_w$} {:>10} {:>10} {:<8}",
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
                "{:<11} {:<name_w$} {:>10} {:>10} {:<8}",
                fit(&w.queue, 11),
                fit(&w.worker.name, name_w),
                format!("{}/{}", thousands(w.worker.in_flight), thousands(w.worker.concurrency)),
                ago(w.worker.last_heartbeat_ms, now),
                state
            );
        }
    }
    // No trailing blanks from padded last columns.
    out.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

/// The tenant's state in a word or two (`running`, `paused`, `budget used`, `stalled`, ...),
/// `+` when more than one pause holds it.
fn state_col(t: &TenantStatus) -> String {
    let more = if t.pauses.len() > 1 { "+" } else { "" };
    format!("{}{more}", t.state.label)
}

/// When the state ends by itself: `in 3h12m`; `resume` for an operator's pause (it lasts until
/// `crmsync resume`); `-` otherwise.
fn until_col(t: &TenantStatus, now: u64) -> String {
    match (t.state.kind, t.state.until_ms) {
        (_, Some(u)) => until(u, now),
        (StateKind::Paused, None) => "resume".into(),
        _ => "-".into(),
    }
}

/// Every pause in words: `CRM migration (operator, since 2h ago; until `crmsync resume
/// acme`)`.
fn pauses_text(t: &TenantStatus, now: u64) -> String {
    t.pauses
        .iter()
        .map(|p| match p {
            Pause::Operator { reason, since_ms } => format!(
                "{reason} (operator, since {}; until `crmsync resume {}`)",
                ago(*since_ms, now),
                t.id
            ),
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

/// Why the tenant is in its state, with since and until when, or `None` when it runs or idles.
fn why_text(t: &TenantStatus, now: u64) -> Option<String> {
    if !t.pauses.is_empty() {
        return Some(pauses_text(t, now));
    }
    let reason = t.state.reason.clone().or_else(|| t.problem.clone())?;
    let mut s = reason;
    if let Some(since) = t.state.since_ms {
        let _ = write!(s, " (since {})", ago(since, now));
    }
    if let Some(u) = t.state.until_ms {
        let _ = write!(s, "; {}", until_text(u, now));
    }
    Some(s)
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

/// `  label: text` under a tenant's row, wrapped at words to `width` (at most 3 lines).
fn detail(out: &mut String, width: usize, label: &str, text: &str) {
    let indent = 4 + label.chars().count();
    for (i, line) in wrap(text, width - indent, 3).iter().enumerate() {
        let head = if i == 0 {
            format!("  {label}: ")
        } else {
            " ".repeat(indent)
        };
        let _ = writeln!(out, "{head}{line}");
    }
}

/// Wide terminals: one row per tenant, every field a column; a why or a last error too long
/// for its column is told in full on lines of its own under the row, never only cut.
fn tenants_wide(out: &mut String, s: &FleetStatus, width: usize) {
    let now = s.at_ms;
    // TENANT 14, STATE 16, UNTIL 10, WHY, BUDGET 24, RUN 30, LAST ERROR.
    let fixed = 14 + 16 + 10 + 24 + 30 + 6;
    let why_w = ((width - fixed) * 2 / 5).clamp(24, 60);
    let err_w = width - fixed - why_w;
    let _ = writeln!(
        out,
        "\n{:<14} {:<16} {:<10} {:<why_w$} {:<24} {:<30} LAST ERROR",
        "TENANT", "STATE", "UNTIL", "WHY", "BUDGET USED/ALLOWED", "RUN"
    );
    for t in &s.tenants {
        let err = t.last_error.as_ref().map(|e| error_text(e, now));
        let why = why_text(t, now);
        let _ = writeln!(
            out,
            "{:<14} {:<16} {:<10} {:<why_w$} {:<24} {:<30} {}",
            fit(&t.id, 14),
            fit(&state_col(t), 16),
            until_col(t, now),
            fit(why.as_deref().unwrap_or("-"), why_w),
            fit(&credits_col(t), 24),
            fit(&run_text(t, now), 30),
            fit(err.as_deref().unwrap_or("-"), err_w)
        );
        if let Some(why) = why.as_deref().filter(|w| w.chars().count() > why_w) {
            detail(out, width, "why", why);
        }
        if let Some(err) = err.as_deref().filter(|e| e.chars().count() > err_w) {
            detail(out, width, "last error", err);
        }
    }
}

/// The RUN column of a narrow table: `4/8p · 1,200 written`, or `failed 2h ago`.
fn run_cell(t: &TenantStatus, now: u64) -> String {
    match (&t.run, &t.last_run) {
        (Some(r), _) => format!("{} · {} written", pages_text(r), thousands(r.records.written)),
        (None, Some(_)) => run_text(t, now).split(" · ").next().unwrap_or_default().to_owned(),
        (None, None) => "-".into(),
    }
}

/// A running run in full, for lines of its own: `acme-2026...: 8/8 pages read · 250 written
/// · 150 waiting · 40 unchanged · 0 rejected`.
fn run_line(r: &RunView) -> String {
    let pages = match r.pages.total {
        Some(total) => format!("{} pages read", crmsync_redis::num::out_of(r.pages.done, total)),
        None => format!("{} pages read", thousands(r.pages.done)),
    };
    format!(
        "{}: {pages} · {} written · {} waiting · {} unchanged · {} rejected",
        r.run.id,
        thousands(r.records.written),
        thousands(r.records.waiting),
        thousands(r.records.unchanged),
        thousands(r.records.rejected)
    )
}

/// 80 to 160 columns: a row per tenant, then its running run, why it is in its state and its
/// last error on lines of their own, wrapped rather than cut.
fn tenants_narrow(out: &mut String, s: &FleetStatus, width: usize) {
    let now = s.at_ms;
    // TENANT 14, STATE 16, BUDGET 24, RUN: the rest (23 columns at 80).
    let run_w = width - 14 - 16 - 24 - 3;
    let _ = writeln!(
        out,
        "\n{:<14} {:<16} {:<24} RUN",
        "TENANT", "STATE", "BUDGET USED/ALLOWED"
    );
    let detail = |out: &mut String, label: &str, text: &str| detail(out, width, label, text);
    for t in &s.tenants {
        let _ = writeln!(
            out,
            "{:<14} {:<16} {:<24} {}",
            fit(&t.id, 14),
            fit(&state_col(t), 16),
            fit(&credits_col(t), 24),
            fit(&run_cell(t, now), run_w)
        );
        if let Some(r) = &t.run {
            let what = match r.run.kind {
                crmsync_producer::RunKind::Reconcile => "reconcile",
                crmsync_producer::RunKind::Backfill => "run",
            };
            detail(out, what, &run_line(r));
        }
        if let Some(why) = why_text(t, now) {
            detail(out, "why", &why);
        }
        if let Some(e) = &t.last_error {
            detail(out, "last error", &error_text(e, now));
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
    }

    #[test]
    fn long_reasons_wrap_at_words_instead_of_being_cut() {
        assert_eq!(
            wrap("budget used: crmsync used 98 of 100; resumes by itself", 20, 5),
            ["budget used: crmsync", "used 98 of 100;", "resumes by itself"]
        );
        assert_eq!(wrap("one two three four", 9, 2), ["one two", "three …"]);
        assert_eq!(wrap("", 10, 2), Vec::<String>::new());
    }
}
