//! `GET /health` and `GET /system/action/health` (SPEC section 7): no
//! password; 200 with the number of live workers, or 503 when Redis cannot
//! be reached.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use migration_shared::presence::live_worker_count;
use serde_json::json;

use crate::state::AppState;

/// Answers both health routes.
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let mut conn = state.redis.clone();
    let ping = redis::cmd("PING").query_async::<String>(&mut conn).await;
    let workers = match ping {
        Ok(_) => live_worker_count(&mut conn, &state.keys).await,
        Err(err) => Err(err),
    };
    match workers {
        Ok(workers) => (
            StatusCode::OK,
            Json(json!({"status": "running", "redis": "ok", "workers": workers})),
        ),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "running", "redis": format!("unreachable: {err}")})),
        ),
    }
}
