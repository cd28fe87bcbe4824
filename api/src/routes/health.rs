//! `GET /health` and `GET /system/action/health` (SPEC section 7): no
//! password; 200 with the number of live workers, or 503 when Redis cannot
//! be reached. Load balancers poll this route, so it answers within
//! [`HEALTH_TIMEOUT`] even when Redis hangs instead of refusing.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use migration_shared::presence::live_worker_count;
use serde_json::json;

use crate::state::AppState;

/// Longest time the health check waits for Redis.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers both health routes.
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let mut conn = state.redis.clone();
    let check = async {
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        live_worker_count(&mut conn, &state.keys).await
    };
    let failure = match tokio::time::timeout(HEALTH_TIMEOUT, check).await {
        Ok(Ok(workers)) => {
            return (
                StatusCode::OK,
                Json(json!({"status": "running", "redis": "ok", "workers": workers})),
            )
        }
        Ok(Err(err)) => format!("unreachable: {err}"),
        Err(_) => format!("no answer within {} s", HEALTH_TIMEOUT.as_secs()),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "running", "redis": failure})),
    )
}
