//! `GET /health` and `GET /system/action/health` (SPEC section 7): no
//! password; 200 with the number of live workers, or 503 when Redis cannot
//! be reached.
//!
//! Load balancers poll this route, so it rides out a short Redis restart
//! like every read (`crate::retry`) and answers within the health class's
//! budget when Redis hangs (`crate::route_class`), in this route's own shape.
//!
//! It checks the connection every route uses (`AppState::redis`), on
//! purpose: a `200` then means the routes can reach Redis (a connection of
//! its own could be fine while the shared one is still broken), and a
//! successful check after a restart has reconnected the shared connection.
//! It does not queue behind big replies there: `progress` reads only the
//! output lines it has not seen (`crate::output_cache`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use migration_shared::presence::live_worker_count;
use serde_json::json;

use crate::retry;
use crate::route_class::health_failure;
use crate::state::AppState;

/// Answers both health routes.
pub async fn health(State(state): State<AppState>) -> Response {
    let check = retry::read("health", || async {
        let mut conn = state.redis.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        live_worker_count(&mut conn, &state.keys).await
    });
    match check.await {
        Ok(workers) => (
            StatusCode::OK,
            Json(json!({"status": "running", "redis": "ok", "workers": workers})),
        )
            .into_response(),
        Err(err) => health_failure(format!("unreachable: {err}")),
    }
}
