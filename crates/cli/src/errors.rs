//! How a failure is told: on one line, each cause once, with what to do. An unreachable Redis
//! (the most common first-run failure) gets a line of its own naming the URL (its password
//! masked) and where the URL comes from.

use std::error::Error as StdError;
use std::io;
use std::process::ExitCode;

/// A command used wrongly in a way clap cannot see (say, a confirmation that cannot be asked):
/// exit code 2, as clap's own usage errors.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Usage {}

/// 2 for a usage error, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<Usage>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// The line printed after `error: `.
pub fn report(e: &anyhow::Error, redis_url: &str) -> String {
    if let Some(cause) = refused_credentials(e.chain()) {
        return format!(
            "Redis at {} refused the credentials ({cause}); check the user and password in CRMSYNC_REDIS_URL or --redis-url \
             (redis://:PASSWORD@host:port/ or redis://USER:PASSWORD@host:port/)",
            redact(redis_url)
        );
    }
    match unreachable_redis(e.chain()) {
        Some(cause) => format!(
            "cannot reach Redis at {} ({cause}); is it running? check CRMSYNC_REDIS_URL or --redis-url",
            redact(redis_url)
        ),
        None => chain_once(e.chain()),
    }
}

/// Redis's answer when it wants other credentials (no password, a wrong one, an unknown user),
/// also when it comes inside a pipeline's failures.
fn refused_credentials<'a>(mut chain: impl Iterator<Item = &'a (dyn StdError + 'static)>) -> Option<String> {
    chain.find_map(|e| {
        let r = e.downcast_ref::<redis::RedisError>()?;
        let text = r.to_string();
        if r.code() == Some("WRONGPASS") || text.contains("WRONGPASS") {
            Some("wrong user or password".to_owned())
        } else if r.code() == Some("NOAUTH") || text.contains("NOAUTH") {
            Some("it needs a password".to_owned())
        } else if r.kind() == redis::ErrorKind::AuthenticationFailed {
            Some("wrong user or password: authentication failed".to_owned())
        } else {
            None
        }
    })
}

/// The causes joined with `: `, each once: a wrapper whose message already ends with (or
/// holds) its cause's, as `thiserror`'s `"reading Redis: {0}"` does, is not followed by it
/// again.
fn chain_once<'a>(chain: impl Iterator<Item = &'a (dyn StdError + 'static)>) -> String {
    let mut shown: Vec<String> = Vec::new();
    for cause in chain {
        let msg = cause.to_string();
        let msg = msg.trim();
        if msg.is_empty() || shown.iter().any(|s| s.contains(msg)) {
            continue;
        }
        shown.push(msg.to_owned());
    }
    shown.join(": ")
}

/// Why Redis could not be reached, in a few words, when that is the failure.
fn unreachable_redis<'a>(chain: impl Iterator<Item = &'a (dyn StdError + 'static)>) -> Option<String> {
    let mut redis_io = false;
    let mut cause = None;
    for e in chain {
        if let Some(r) = e.downcast_ref::<redis::RedisError>() {
            if r.is_connection_refusal() || r.is_timeout() || r.is_connection_dropped() || r.is_io_error() {
                redis_io = true;
                if r.is_connection_refusal() {
                    cause = cause.or(Some("connection refused".to_owned()));
                } else if r.is_timeout() {
                    cause = cause.or(Some("timed out".to_owned()));
                }
            } else if r.kind() == redis::ErrorKind::ClusterConnectionNotFound {
                redis_io = true;
                cause = cause.or(Some("no cluster node answered".to_owned()));
            }
        } else if let Some(io) = e.downcast_ref::<io::Error>()
            && redis_io
        {
            cause = cause.or(Some(io_cause(io)));
        }
    }
    redis_io.then(|| cause.unwrap_or_else(|| "connection failed".to_owned()))
}

/// `connection refused`, `timed out`, or the OS's message without its error number.
fn io_cause(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::NotFound => "no such socket".into(),
        _ => {
            let msg = e.to_string();
            let msg = msg.split(" (os error").next().unwrap_or(&msg);
            let mut c = msg.chars();
            match c.next() {
                Some(first) => first.to_lowercase().chain(c).collect(),
                None => "connection failed".into(),
            }
        }
    }
}

/// The URL with the credentials of every `scheme://user:password@host` masked
/// (`redis://****@host:6379/`): a Redis URL often holds a password. Each of several
/// comma-separated URLs or hosts (a Cluster's, Sentinels') is masked.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|part| {
            let (scheme, rest) = match part.find("://") {
                Some(i) => part.split_at(i + 3),
                None => ("", part),
            };
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => format!("{scheme}****{}", &rest[at..]),
                None => part.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_in_every_url() {
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(redact("redis://:hunter2@h:6379/0"), "redis://****@h:6379/0");
        assert_eq!(redact("rediss://user:p@ss:w@rd@h:1"), "rediss://****@h:1");
        assert_eq!(
            redact("redis://:a@h1:1,redis://:b@h2:2"),
            "redis://****@h1:1,redis://****@h2:2"
        );
        assert_eq!(
            redact("redis+sentinel://:pw@s1:26379,s2:26379/mymaster"),
            "redis+sentinel://****@s1:26379,s2:26379/mymaster"
        );
        assert_eq!(redact("unix:///tmp/redis.sock"), "unix:///tmp/redis.sock");
        assert_eq!(
            redact("redis+cluster://h1:1,u:p@h2:2"),
            "redis+cluster://h1:1,****@h2:2"
        );
    }

    #[test]
    fn each_cause_is_told_once() {
        /// As `thiserror`'s `#[error("reading Redis: {0}")] Redis(#[from] io::Error)`.
        #[derive(Debug)]
        struct Inner(io::Error);
        impl std::fmt::Display for Inner {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "reading Redis: {}", self.0)
            }
        }
        impl StdError for Inner {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::from(Inner(io::Error::other("disk on fire"))).context("reading tenants");
        assert_eq!(report(&e, "redis://h/"), "reading tenants: reading Redis: disk on fire");
    }

    #[test]
    fn an_unreachable_redis_is_one_line_with_a_hint() {
        let refused = redis::RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        let e = anyhow::Error::from(refused).context("reading the fleet from Redis");
        let line = report(&e, "redis://:hunter2@127.0.0.1:1/");
        assert_eq!(
            line,
            "cannot reach Redis at redis://****@127.0.0.1:1/ (connection refused); is it running? \
             check CRMSYNC_REDIS_URL or --redis-url"
        );
        assert_eq!(exit_code(&e), ExitCode::FAILURE);
        assert_eq!(exit_code(&anyhow::Error::new(Usage("x".into()))), ExitCode::from(2));
    }
}
