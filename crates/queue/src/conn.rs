//! Connections. Non-blocking calls share one auto-reconnecting multiplexed connection per
//! process (concurrent calls are pipelined on it); each fetcher owns a dedicated connection
//! because a blocking `XREADGROUP` would stall everything queued behind it.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

/// The shared connection type of the queue.
pub type RedisConn = ConnectionManager;

/// Opens the shared, auto-reconnecting connection. It is lazy, so a worker starts even while
/// Redis is down and connects when Redis comes back.
pub fn connect(client: &redis::Client, response_timeout: Duration) -> Result<RedisConn, redis::RedisError> {
    let cfg = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client.clone(), cfg)
}

/// Opens a dedicated connection for blocking reads; its response timeout exceeds the block
/// time, so a frozen Redis still surfaces as an error.
pub(crate) async fn connect_blocking(
    client: &redis::Client,
    block: Duration,
    response_timeout: Duration,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(block + response_timeout));
    client.get_multiplexed_async_connection_with_config(&cfg).await
}
