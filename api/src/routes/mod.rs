//! One module per route group; each handler parses, calls the domain and maps
//! the result. Bodies are read through [`JsonBody`] so that every malformed
//! body gets the same `{"success": false, "message"}` answer.

pub mod health;
pub mod metrics;
pub mod migrations;
pub mod openapi;
pub mod reader;
pub mod writer;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde_json::Value;

use crate::error::ApiError;

/// Largest accepted request body (SPEC 4.3: larger is `413`).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A request body parsed as JSON, whatever its content type (operator tools
/// do not always send one). Errors are [`ApiError`]s: 400 or 413.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge {
                        limit: MAX_BODY_BYTES,
                    }
                } else {
                    ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|err| ApiError::BadRequest(format!("request body is not valid JSON: {err}")))
    }
}

/// The body as an object, or a 400 naming what was expected.
pub fn expect_object(value: Value, what: &str) -> Result<serde_json::Map<String, Value>, ApiError> {
    match value {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::BadRequest(format!(
            "request body must be a JSON object with {what}"
        ))),
    }
}
