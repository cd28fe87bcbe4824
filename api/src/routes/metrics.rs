//! `GET /metrics` (SPEC 9): no password, Prometheus (OpenMetrics) text.
//!
//! The cluster-wide `migration_*` figures are read from Redis here, at
//! scrape time; the replica's `http_*` figures come from
//! [`crate::metrics::HttpMetrics`]. A Redis that fails or hangs costs at most
//! [`REDIS_READ_TIMEOUT`] and gives `migration_redis_up 0` with the HTTP
//! figures, never a failed scrape: the HTTP figures matter most then.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::metrics;
use crate::state::AppState;

/// Longest time a scrape waits for the migration figures.
pub const REDIS_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers a scrape.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut conn = state.redis.clone();
    let read = migration_shared::metrics::read(&mut conn, &state.keys);
    let cluster = match tokio::time::timeout(REDIS_READ_TIMEOUT, read).await {
        Ok(Ok(cluster)) => Some(cluster),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "metrics: cannot read the migration figures from Redis");
            None
        }
        Err(_) => {
            tracing::warn!("metrics: Redis gave no answer within {REDIS_READ_TIMEOUT:?}");
            None
        }
    };
    (
        [(CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.http_metrics.render(cluster),
    )
}
