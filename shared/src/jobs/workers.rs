//! Worker presence: the sorted set `workers` (worker id -> expiry in ms,
//! by Redis's clock). Each worker refreshes its entry in a heartbeat task;
//! `/health` reports how many entries have not expired
//! ([`crate::presence::live_worker_count`]).
//!
//! Presence is informational (health, operators): correctness never depends
//! on it; the lock's lease alone decides who may run a job.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::RedisResult;

use crate::keys::Keys;
use crate::scripts;

/// Says `worker_id` is alive for `ttl` more (Redis time); drops expired
/// entries. Returns the number of live workers.
pub async fn heartbeat<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    worker_id: &str,
    ttl: Duration,
) -> RedisResult<u64> {
    scripts::WORKERS_HEARTBEAT
        .key(keys.workers())
        .arg(worker_id)
        .arg(ttl.as_millis() as u64)
        .invoke_async(conn)
        .await
}

/// Removes `worker_id` (a clean shutdown), so the count drops at once.
pub async fn leave<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    worker_id: &str,
) -> RedisResult<()> {
    redis::cmd("ZREM")
        .arg(keys.workers())
        .arg(worker_id)
        .query_async(conn)
        .await
}
