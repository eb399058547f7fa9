//! Operator actions, shared by `crmsync` (the CLI) and the dashboard so both act the same way
//! and say the same thing: dead letters listed, retried and purged ([`dead`]); rejected records
//! listed and retried ([`rejected`]); tenants paused and resumed, runs cancelled ([`tenant`]).
//!
//! Every action that changes the fleet is recorded in the **audit stream** ([`audit`]): who
//! (an [`Actor`]: a login on a host, or a dashboard session), what, on which target, why, and
//! what came of it. The callers cannot forget it: the actions take the actor and write the
//! entry themselves, after the change (an entry says what happened, not what was tried).

pub mod audit;
pub mod dead;
pub mod rejected;
pub mod site;
pub mod tenant;

pub use audit::{Audit, AuditEntry};
pub use site::Site;

/// Who acts: shown in the audit stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A person or a session: `alice@ops-1`, `alice (dashboard, 10.0.0.7)`.
    pub who: String,
    /// Through what: `cli` or `dashboard`.
    pub via: &'static str,
}

impl Actor {
    /// The person running the CLI: `$USER@host` (`$LOGNAME`, else `unknown`).
    pub fn cli() -> Self {
        let user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
            .or_else(login_of_uid)
            .unwrap_or_else(|| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        Self {
            who: format!("{user}@{host}"),
            via: "cli",
        }
    }

    /// A dashboard session.
    pub fn dashboard(who: impl Into<String>) -> Self {
        Self {
            who: who.into(),
            via: "dashboard",
        }
    }
}

/// The login of this process's user from `/proc` and `/etc/passwd` (when `$USER` is unset, as
/// under cron or a service manager), or `uid <n>`.
fn login_of_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_owned())
    });
    Some(name.unwrap_or_else(|| format!("uid {uid}")))
}

/// An action could not be done.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// What it names does not exist (a tenant, a run, a dead letter).
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (an unknown code, an empty selection).
    #[error("{0}")]
    Invalid(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Queue(#[from] crmsync_queue::QueueError),
    #[error("{0}")]
    Tenants(crmsync_tenants::StoreError),
    #[error("runs: {0}")]
    Runs(crmsync_producer::RunError),
    #[error("write buffer: {0}")]
    Buffer(#[from] crmsync_producer::BufferError),
}

impl From<crmsync_tenants::StoreError> for OpsError {
    fn from(e: crmsync_tenants::StoreError) -> Self {
        match e {
            crmsync_tenants::StoreError::NotFound(t) => OpsError::NotFound(no_tenant(&t)),
            e => OpsError::Tenants(e),
        }
    }
}

impl From<crmsync_producer::RunError> for OpsError {
    fn from(e: crmsync_producer::RunError) -> Self {
        match e {
            crmsync_producer::RunError::NotFound(r) => {
                OpsError::NotFound(format!("no run `{r}`; list runs with `crmsync runs`"))
            }
            crmsync_producer::RunError::NoTenant(t) => OpsError::NotFound(no_tenant(&t)),
            crmsync_producer::RunError::Redis(e) => OpsError::Redis(e),
            e => OpsError::Runs(e),
        }
    }
}

/// The one wording of an unknown tenant.
pub fn no_tenant(tenant: &str) -> String {
    format!("no tenant `{tenant}`; list tenants with `crmsync tenant list`")
}

/// Text from a stranger (a form, a flag), made safe to store and show: trimmed, then
/// [`one_line`].
pub fn clean(s: &str, max: usize) -> String {
    one_line(s.trim(), max)
}

/// `s` on one line (every control character, escape codes included, becomes a space) and at
/// most `max` characters (cut with `…`); leading spaces are kept (indented output).
pub fn one_line(s: &str, max: usize) -> String {
    let line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if line.chars().count() <= max {
        return line;
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_actor_names_a_login_even_without_user() {
        let login = login_of_uid().expect("a Linux /proc");
        assert!(!login.is_empty() && !login.contains(':'), "{login}");
        assert!(Actor::cli().who.contains('@'));
    }

    #[test]
    fn text_from_strangers_is_one_bounded_line() {
        assert_eq!(clean("  a\nb\x1b[31mc ", 100), "a b [31mc");
        assert_eq!(clean("abcdef", 4), "abc…");
        assert_eq!(clean("ééé", 3), "ééé");
        assert_eq!(one_line("  a\tb", 10), "  a b", "indentation is kept");
    }
}
