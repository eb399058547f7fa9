//! Connections to the fleet's Redis, whichever shape it has: one server, a Redis Cluster, or
//! a master watched by Redis Sentinel. [`RedisTarget::parse`] reads the URL; [`connect`] gives
//! the one connection type the rest of crmsync uses, [`RedisConn`], which reconnects by
//! itself (and, behind Sentinel, follows a failover to the new master).
//!
//! URL forms (`CRMSYNC_REDIS_URL`):
//! - `redis://[[user]:password@]host:6379[/db]`, `rediss://...` (TLS), `unix:///path`: one server;
//! - `redis+cluster://[[user]:password@]host1:port1,host2:port2,...` (`rediss+cluster://` for
//!   TLS), or several `redis://` URLs separated by commas: a Redis Cluster, found from any of
//!   the nodes given;
//! - `redis+sentinel://[[user]:password@]sentinel1:26379,sentinel2:26379/<master name>[/db]`:
//!   the master Sentinel names; the password, if any, is the master's.
//!
//! crmsync keeps everything one script touches under one hash tag, so every script runs on
//! one Cluster node; the few fleet-wide keys are only reached by single-key commands and
//! non-atomic pipelines, which a Cluster connection splits by node.

pub mod num;
mod purge;
pub mod when;

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use purge::{PurgeReport, purge_matching};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tracing::{info, warn};

/// Milliseconds since the Unix epoch (0 before it): the one clock every crate stamps with.
pub fn now_ms() -> u64 {
    system_time_ms(std::time::SystemTime::now())
}

/// Converts a wall-clock time to milliseconds since the Unix epoch (0 before the epoch).
pub fn system_time_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The Redis hash tag of a tenant's keys: `{<namespace>:t:<id>}`. Every key of a tenant
/// carries it, so a tenant's keys share one Cluster slot and its scripts run on one node.
pub fn tenant_tag(namespace: &str, id: &str) -> String {
    format!("{{{namespace}:t:{id}}}")
}

/// How long opening a connection to one server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the fleet's Redis is.
// Made once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum RedisTarget {
    /// One server.
    Single(redis::Client),
    /// A Redis Cluster.
    Cluster(ClusterClient),
    /// The master of a Sentinel-monitored group.
    Sentinel(Arc<SentinelTarget>),
}

/// A Sentinel group: the sentinels, the master's name, and the client Sentinel resolves.
pub struct SentinelTarget {
    client: tokio::sync::Mutex<SentinelClient>,
    master: String,
}

impl fmt::Debug for RedisTarget {
    // The URL may hold a password: say what kind of target it is, nothing more.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Single(_) => f.write_str("RedisTarget::Single"),
            RedisTarget::Cluster(_) => f.write_str("RedisTarget::Cluster"),
            RedisTarget::Sentinel(s) => write!(f, "RedisTarget::Sentinel({})", s.master),
        }
    }
}

fn invalid(message: String) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, "invalid Redis URL", message))
}

/// Splits `scheme://[auth@]hosts[/path]` into (auth with its `@`, hosts, path without `/`).
fn split_url<'a>(url: &'a str, scheme: &str) -> (&'a str, &'a str, &'a str) {
    let rest = &url[scheme.len() + 3..];
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    match authority.rsplit_once('@') {
        Some((auth, hosts)) => (&authority[..auth.len() + 1], hosts, path),
        None => ("", authority, path),
    }
}

impl RedisTarget {
    /// Reads a Redis URL (see the module docs for the forms).
    pub fn parse(url: &str) -> RedisResult<RedisTarget> {
        // `rediss://` speaks TLS through rustls, with ring as its crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = url.trim();
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        match scheme {
            "redis+cluster" | "rediss+cluster" => {
                let base = if scheme == "rediss+cluster" { "rediss" } else { "redis" };
                let (auth, hosts, _) = split_url(url, scheme);
                let nodes: Vec<String> = hosts
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{base}://{auth}{h}"))
                    .collect();
                Self::cluster(nodes)
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let (auth, hosts, path) = split_url(url, scheme);
                let mut parts = path.split('/').filter(|p| !p.is_empty());
                let master = parts
                    .next()
                    .ok_or_else(|| {
                        invalid("a Sentinel URL needs the master's name: redis+sentinel://host:26379/<master>".into())
                    })?
                    .to_owned();
                let db: i64 = match parts.next() {
                    Some(d) => d
                        .parse()
                        .map_err(|_| invalid(format!("database `{d}` is not a number")))?,
                    None => 0,
                };
                let sentinels: Vec<String> = hosts
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("redis://{h}"))
                    .collect();
                if sentinels.is_empty() {
                    return Err(invalid("a Sentinel URL needs at least one sentinel host".into()));
                }
                // The master's credentials come from the URL's user info.
                let mut redis_info = redis::RedisConnectionInfo::default().set_db(db);
                let userinfo = auth.trim_end_matches('@');
                if !userinfo.is_empty() {
                    let (user, pass) = userinfo.split_once(':').unwrap_or(("", userinfo));
                    if !user.is_empty() {
                        redis_info = redis_info.set_username(user);
                    }
                    if !pass.is_empty() {
                        redis_info = redis_info.set_password(pass);
                    }
                }
                let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info);
                if scheme == "rediss+sentinel" {
                    node = node.set_tls_mode(redis::TlsMode::Secure);
                }
                let client = SentinelClient::build(sentinels, master.clone(), Some(node), SentinelServerType::Master)?;
                Ok(RedisTarget::Sentinel(Arc::new(SentinelTarget {
                    client: tokio::sync::Mutex::new(client),
                    master,
                })))
            }
            _ if url.contains(',') => Self::cluster(url.split(',').map(|u| u.trim().to_owned()).collect()),
            _ => Ok(RedisTarget::Single(redis::Client::open(url)?)),
        }
    }

    fn cluster(nodes: Vec<String>) -> RedisResult<RedisTarget> {
        if nodes.is_empty() {
            return Err(invalid("a Cluster URL needs at least one node".into()));
        }
        let client = ClusterClientBuilder::new(nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            .retries(3)
            .build()?;
        Ok(RedisTarget::Cluster(client))
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }
}

impl From<redis::Client> for RedisTarget {
    fn from(c: redis::Client) -> Self {
        RedisTarget::Single(c)
    }
}

impl From<&redis::Client> for RedisTarget {
    fn from(c: &redis::Client) -> Self {
        RedisTarget::Single(c.clone())
    }
}

impl From<&RedisTarget> for RedisTarget {
    fn from(t: &RedisTarget) -> Self {
        t.clone()
    }
}

/// A connection to the fleet's Redis. Cheap to clone: clones share the connection, and
/// concurrent calls are pipelined on it. It reconnects by itself.
#[derive(Clone)]
pub struct RedisConn(Conn);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

impl fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match &self.0 {
            Conn::Single(_) => "RedisConn::Single",
            Conn::Multiplexed(_) => "RedisConn::Multiplexed",
            Conn::Cluster(_) => "RedisConn::Cluster",
            Conn::Sentinel(_) => "RedisConn::Sentinel",
        })
    }
}

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

/// Opens the shared, auto-reconnecting connection. It is lazy: a process starts while Redis
/// is down and connects when Redis comes back.
pub fn connect(target: impl Into<RedisTarget>, response_timeout: Duration) -> RedisResult<RedisConn> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(RedisConn(match target.into() {
        RedisTarget::Single(client) => Conn::Single(ConnectionManager::new_lazy_with_config(
            client,
            manager_config(response_timeout),
        )?),
        RedisTarget::Cluster(client) => Conn::Cluster(
            client.get_pending_async_connection_with_config(
                ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(response_timeout),
            ),
        ),
        RedisTarget::Sentinel(target) => Conn::Sentinel(Arc::new(SentinelConn {
            target,
            response_timeout,
            current: RwLock::new(None),
        })),
    }))
}

/// Opens a dedicated connection for blocking reads (`XREADGROUP ... BLOCK`), which would
/// stall every call queued behind them on a shared one. Its response timeout is `block` plus
/// `response_timeout`, so a frozen Redis still surfaces as an error.
pub async fn connect_blocking(
    target: &RedisTarget,
    block: Duration,
    response_timeout: Duration,
) -> RedisResult<RedisConn> {
    let timeout = block + response_timeout;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(timeout));
    Ok(RedisConn(match target {
        RedisTarget::Single(client) => {
            Conn::Multiplexed(client.get_multiplexed_async_connection_with_config(&cfg).await?)
        }
        RedisTarget::Cluster(client) => Conn::Cluster(
            client
                .get_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(CONNECT_TIMEOUT)
                        .set_response_timeout(timeout),
                )
                .await?,
        ),
        RedisTarget::Sentinel(t) => {
            let client = t.client.lock().await.async_get_client().await?;
            Conn::Multiplexed(client.get_multiplexed_async_connection_with_config(&cfg).await?)
        }
    }))
}

/// The master behind Sentinel: a connection to the master last resolved, resolved again
/// after an error that says it may have moved (connection lost, `READONLY`, `MASTERDOWN`).
struct SentinelConn {
    target: Arc<SentinelTarget>,
    response_timeout: Duration,
    /// (master address, its connection)
    current: RwLock<Option<(String, ConnectionManager)>>,
}

impl SentinelConn {
    async fn connection(&self) -> RedisResult<ConnectionManager> {
        if let Some((_, c)) = self.current.read().ok().and_then(|g| g.clone()) {
            return Ok(c);
        }
        self.resolve().await
    }

    /// Asks Sentinel for the master; keeps the connection when the master did not move.
    async fn resolve(&self) -> RedisResult<ConnectionManager> {
        let client = self.target.client.lock().await.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        if let Some((a, c)) = self.current.read().ok().and_then(|g| g.clone())
            && a == addr
        {
            return Ok(c);
        }
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config(self.response_timeout))?;
        info!(master = %self.target.master, %addr, "Redis master resolved through Sentinel");
        if let Ok(mut g) = self.current.write() {
            *g = Some((addr, conn.clone()));
        }
        Ok(conn)
    }

    /// After a failed call: resolve again when the error says the master may have moved.
    async fn after_error(&self, e: &RedisError) {
        let moved = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
        if moved && let Err(error) = self.resolve().await {
            warn!(master = %self.target.master, %error, "Sentinel could not say where the master is");
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => {
                let s = s.clone();
                Box::pin(async move {
                    let mut c = s.connection().await?;
                    let res = c.req_packed_command(cmd).await;
                    if let Err(e) = &res {
                        s.after_error(e).await;
                    }
                    res
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => {
                let mut c = c.clone();
                Box::pin(async move {
                    match c.req_packed_commands(cmd, offset, count).await {
                        // The cluster client sends a pipeline to one node only, and refuses
                        // (before sending anything) one whose keys live in several slots.
                        // Without MULTI such a pipeline promises no atomicity: send its
                        // commands one by one, in order.
                        Err(e) if e.kind() == redis::ServerErrorKind::CrossSlot.into() && !cmd.is_transaction() => {
                            let mut out = Vec::with_capacity(cmd.len());
                            for one in cmd.cmd_iter() {
                                out.push(c.req_packed_command(one).await?);
                            }
                            Ok(out)
                        }
                        other => other,
                    }
                })
            }
            Conn::Sentinel(s) => {
                let s = s.clone();
                Box::pin(async move {
                    let mut c = s.connection().await?;
                    let res = c.req_packed_commands(cmd, offset, count).await;
                    if let Err(e) = &res {
                        s.after_error(e).await;
                    }
                    res
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Single(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_kind_of_target() {
        assert!(matches!(
            RedisTarget::parse("redis://127.0.0.1:6379/0"),
            Ok(RedisTarget::Single(_))
        ));
        assert!(matches!(
            RedisTarget::parse("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000"),
            Ok(RedisTarget::Cluster(_))
        ));
        assert!(matches!(
            RedisTarget::parse("redis://10.0.0.1:7000,redis://10.0.0.2:7000"),
            Ok(RedisTarget::Cluster(_))
        ));
        match RedisTarget::parse("redis+sentinel://:pw@s1:26379,s2:26379/mymaster/2") {
            Ok(RedisTarget::Sentinel(s)) => assert_eq!(s.master, "mymaster"),
            other => panic!("{other:?}"),
        }
        assert!(
            RedisTarget::parse("redis+sentinel://s1:26379").is_err(),
            "no master name"
        );
        assert!(RedisTarget::parse("redis+sentinel://s1:26379/m/x").is_err(), "bad db");
        assert!(RedisTarget::parse("nonsense").is_err());
        let dbg = format!(
            "{:?}",
            RedisTarget::parse("redis+cluster://:secret@h:1").expect("parses")
        );
        assert!(!dbg.contains("secret"), "{dbg}");
    }
}
