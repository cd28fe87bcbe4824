//! Worker presence, as the api's health route reads it.
//!
//! Each worker keeps its id in the `workers` sorted set with its presence
//! expiry (Redis server time, ms) as the score and refreshes it while alive;
//! a worker that died simply stops refreshing. Counting uses Redis's clock,
//! never the api host's, so clock skew between hosts cannot matter.

use redis::aio::ConnectionLike;

use crate::keys::Keys;

/// Milliseconds since the epoch, by the Redis server's clock.
pub async fn redis_time_ms<C: ConnectionLike + Send>(conn: &mut C) -> redis::RedisResult<u64> {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(seconds * 1000 + micros / 1000)
}

/// The number of workers whose presence has not expired.
pub async fn live_worker_count<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
) -> redis::RedisResult<u64> {
    let now = redis_time_ms(conn).await?;
    redis::cmd("ZCOUNT")
        .arg(keys.workers())
        .arg(format!("({now}"))
        .arg("+inf")
        .query_async(conn)
        .await
}
