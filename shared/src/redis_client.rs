//! How both binaries connect to Redis.
//!
//! The connection manager is created lazily, so a binary starts (and its
//! health route answers 503) while Redis is down, and reconnects by itself
//! when Redis comes back. Timeouts are short so that a request against an
//! unreachable Redis fails in about a second instead of hanging: SPEC 4.3
//! wants a prompt 503.
//!
//! Blocking commands (`BLPOP`, `XREAD BLOCK`) must not run on the shared
//! manager (they would stall every other request multiplexed on it and trip
//! its response timeout): use [`dedicated_connection`] for them.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisResult};

/// Longest time one command may take before it counts as failed. Generous:
/// a bulk write or a finalize flip is one long script.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time a connection attempt may take.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The connection every route, the engine and the runner use for
/// non-blocking commands: cheap to clone, multiplexed, self-reconnecting.
/// Code outside this module names only this type, so the deployment kind
/// (single server, Sentinel, Cluster) stays this module's business.
pub type RedisConnection = ConnectionManager;

/// A connection of its own for one blocking reader (`BLPOP`, `XREAD BLOCK`).
pub type BlockingConnection = MultiplexedConnection;

/// A lazily connecting, self-reconnecting connection manager.
pub fn connection_manager(url: &str) -> RedisResult<RedisConnection> {
    let client = Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// A connection of its own, for blocking commands; no response timeout (the
/// caller's `BLOCK`/timeout argument bounds the wait).
pub async fn dedicated_connection(url: &str) -> RedisResult<BlockingConnection> {
    let client = Client::open(url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}
