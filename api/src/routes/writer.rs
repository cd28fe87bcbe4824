//! `POST /internal/datastore/writer/write` (SPEC 5.1): one write request or
//! an array of them, committed all-or-nothing.
//!
//! With an `Idempotency-Key` header the datastore keeps the answer (`200`
//! or `400`) with the commit and replays it for every retry with the same
//! key and body, on any replica; without one, the body is executed as sent.
//! A body that is not JSON at all is refused (`400`) before the key is
//! looked at: it never reaches Redis, so its retries are safe anyway.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use migration_shared::datastore::{
    parse_write_body, IdempotencyKey, WriteAnswer, IDEMPOTENCY_KEY_HEADER,
};
use serde_json::json;

use super::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;

/// Validates and commits the body; answers the new position numbers.
pub async fn write(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    match idempotency_key(&headers)? {
        Some(key) => {
            let answer = state.datastore.write_idempotent(&key, body).await?;
            Ok(kept_answer(answer))
        }
        None => {
            let requests = parse_write_body(body).map_err(ApiError::BadRequest)?;
            let positions = state.datastore.write(requests).await?;
            Ok(Json(json!({"success": true, "positions": positions})).into_response())
        }
    }
}

/// The header, validated (SPEC 5.1: 1-255 visible ASCII characters).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(format!(
            "send one {IDEMPOTENCY_KEY_HEADER} header, not several"
        )));
    }
    IdempotencyKey::parse(value.as_bytes())
        .map(Some)
        .map_err(ApiError::BadRequest)
}

/// An answer exactly as the datastore keeps it.
fn kept_answer(answer: WriteAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response()
}
