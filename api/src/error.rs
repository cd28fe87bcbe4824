//! The one place where errors become HTTP responses.
//!
//! Every failure of a request is an [`ApiError`]; its `IntoResponse` picks
//! the status and writes `{"success": false, "message": ...}` (SPEC 4.3).
//! The full error is logged here too, so handlers only use `?`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use migration_shared::datastore::{DatastoreError, WriteError};

use crate::routes::migrations::MigrationRouteError;
use serde_json::json;

/// A request that could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid request: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// No internal password configured: 500.
    #[error("{0}")]
    AuthUnavailable(String),
    /// The thing asked for does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// Body over the limit: 413.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Redis cannot be reached: 503, nothing happened.
    #[error("redis is unreachable: {0}")]
    RedisUnavailable(String),
    /// The datastore refuses writes for now (finalize running, too busy): 503.
    #[error("{0}")]
    Unavailable(String),
    /// A write whose commit may have been sent got no answer: 504 (SPEC 5.1).
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A bug or corrupt data: 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::AuthUnavailable(_) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RedisUnavailable(_) | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::OutcomeUnknown(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let body = json!({"success": false, "message": self.to_string()});
        (status, Json(body)).into_response()
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> Self {
        // Every Redis failure is reported as unreachable: from the client's
        // point of view the request could not be served and changed nothing
        // (each change is a single script: all or nothing).
        ApiError::RedisUnavailable(err.to_string())
    }
}

impl From<DatastoreError> for ApiError {
    fn from(err: DatastoreError) -> Self {
        match err {
            DatastoreError::Redis(err) => err.into(),
            DatastoreError::Corrupt(message) => ApiError::Internal(message),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(err: WriteError) -> Self {
        match err {
            WriteError::Invalid(message) => ApiError::BadRequest(message),
            WriteError::Finalizing | WriteError::Busy => ApiError::Unavailable(err.to_string()),
            WriteError::Store(err) => err.into(),
        }
    }
}

impl From<MigrationRouteError> for ApiError {
    fn from(err: MigrationRouteError) -> Self {
        match err {
            // A reply the scripts never give: corrupt job keys, not an outage.
            MigrationRouteError::Redis(err)
                if err.kind() == redis::ErrorKind::UnexpectedReturnType =>
            {
                ApiError::Internal(err.to_string())
            }
            MigrationRouteError::Redis(err) => err.into(),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}
