//! `POST /internal/datastore/writer/write` (SPEC 5.1): one write request or
//! an array of them, committed all-or-nothing.

use axum::extract::State;
use axum::Json;
use migration_shared::datastore::parse_write_body;
use serde_json::{json, Value};

use super::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// Validates and commits the body; answers the new position numbers.
pub async fn write(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let requests = parse_write_body(body).map_err(ApiError::BadRequest)?;
    let positions = state.datastore.write(requests).await?;
    Ok(Json(json!({"success": true, "positions": positions})))
}
