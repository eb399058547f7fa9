//! Connections (see `crmsync-redis`). Non-blocking calls share one auto-reconnecting
//! connection per process (concurrent calls are pipelined on it); each fetcher owns a
//! dedicated connection because a blocking `XREADGROUP` would stall everything queued behind
//! it. Every key of a queue carries the queue's hash tag, so on a Redis Cluster a queue and
//! its scripts live on one node.

pub use crmsync_redis::{RedisConn, RedisTarget, connect, connect_blocking};
