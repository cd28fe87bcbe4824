//! The one place where errors become HTTP responses.
//!
//! Every failure of a request is an [`ApiError`]; its `IntoResponse` picks
//! the status and writes `{"success": false, "message": ...}` (SPEC 4.3).
//! The full error is logged here too, so handlers only use `?`.
//!
//! Redis errors are classified here once, for every route
//! ([`classify_redis_error`]): only a Redis that cannot be reached is
//! "unreachable" (`503`); a Redis that answers but refuses (out of memory,
//! read-only, loading) is a `503` naming the cause; a key of the wrong type,
//! a failing script or a reply this code cannot read is a `500` naming the
//! cause (an operator must look, a retry will not help). Whether a write
//! may have happened is the writer's to say ([`WriteError::OutcomeUnknown`],
//! `504`), since only it knows whether its commit was sent.

use std::fmt;

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
    /// Redis answered, but with a refusal or a failure (see
    /// [`RedisFailure`]): 503 or 500.
    #[error("{0}")]
    Redis(RedisFailure),
    /// The datastore refuses writes for now (finalize running, too busy,
    /// Redis not answering before the commit was sent): 503, nothing written.
    #[error("{0}")]
    Unavailable(String),
    /// A write with the same `Idempotency-Key` is still executing: 409.
    #[error("{0}")]
    Conflict(String),
    /// The `Idempotency-Key` was used with another body: 422.
    #[error("{0}")]
    Unprocessable(String),
    /// A write may or may not have happened: 504.
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
            ApiError::Redis(failure) => failure.status(),
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
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

/// What a Redis error means for the caller; the message names the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisFailure {
    /// No connection, a dropped connection or no answer: 503.
    Unreachable(String),
    /// `OOM`: Redis reached `maxmemory` and refuses writes: 503.
    OutOfMemory(String),
    /// Redis answers but cannot serve this now (`READONLY` replica,
    /// `LOADING`, `BUSY` script, `MASTERDOWN`, `TRYAGAIN`, `CLUSTERDOWN`): 503.
    Unavailable(String),
    /// `WRONGTYPE`: a key under the prefix holds another type than the
    /// product writes (corrupt data, or another program uses the prefix): 500.
    WrongType(String),
    /// A Lua script failed (a bug, or data it cannot handle): 500.
    ScriptFailed(String),
    /// Any other error reply (`NOPERM`, `NOSCRIPT`, a failed `AUTH`, ...): 500.
    Refused(String),
    /// A reply this code cannot read: 500.
    BadReply(String),
}

impl RedisFailure {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            RedisFailure::Unreachable(_)
            | RedisFailure::OutOfMemory(_)
            | RedisFailure::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RedisFailure::WrongType(_)
            | RedisFailure::ScriptFailed(_)
            | RedisFailure::Refused(_)
            | RedisFailure::BadReply(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisFailure::Unreachable(err) => write!(f, "redis is unreachable: {err}"),
            RedisFailure::OutOfMemory(err) => write!(
                f,
                "redis is out of memory (maxmemory reached) and refuses writes: {err}; nothing was written; free memory or raise maxmemory, then retry"
            ),
            RedisFailure::Unavailable(err) => {
                write!(f, "redis cannot serve this request now: {err}; retry")
            }
            RedisFailure::WrongType(err) => write!(
                f,
                "a redis key holds the wrong type of value: {err}; the keys under the prefix are corrupt or another program writes them (see docs/redis-keys.md)"
            ),
            RedisFailure::ScriptFailed(err) => write!(f, "a redis script failed: {err}"),
            RedisFailure::Refused(err) => write!(f, "redis refused the command: {err}"),
            RedisFailure::BadReply(err) => write!(f, "unexpected reply from redis: {err}"),
        }
    }
}

/// The one classification of Redis errors, used by every route.
pub fn classify_redis_error(err: &redis::RedisError) -> RedisFailure {
    use redis::{ErrorKind, ServerErrorKind};
    let text = err.to_string();
    match err.kind() {
        ErrorKind::Server(
            ServerErrorKind::ReadOnly
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown,
        ) => RedisFailure::Unavailable(text),
        ErrorKind::Server(ServerErrorKind::ResponseError)
            if err.detail().is_some_and(|detail| {
                detail.contains("script") || detail.contains("user_function")
            }) =>
        {
            RedisFailure::ScriptFailed(text)
        }
        ErrorKind::Server(_) => RedisFailure::Refused(text),
        ErrorKind::Extension => match err.code() {
            Some("OOM") => RedisFailure::OutOfMemory(text),
            Some("WRONGTYPE") => RedisFailure::WrongType(text),
            Some("BUSY") => RedisFailure::Unavailable(text),
            _ => RedisFailure::Refused(text),
        },
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => RedisFailure::BadReply(text),
        // Reached, but it will not let us in: a configuration problem.
        ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => {
            RedisFailure::Refused(text)
        }
        _ => RedisFailure::Unreachable(text),
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> Self {
        match classify_redis_error(&err) {
            RedisFailure::Unreachable(message) => ApiError::RedisUnavailable(message),
            failure => ApiError::Redis(failure),
        }
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
            WriteError::Finalizing
            | WriteError::Busy { .. }
            | WriteError::ClaimLost
            | WriteError::NoAnswer { .. }
            | WriteError::OutOfTime { .. } => ApiError::Unavailable(err.to_string()),
            WriteError::InFlight => ApiError::Conflict(err.to_string()),
            WriteError::KeyReused => ApiError::Unprocessable(err.to_string()),
            WriteError::OutcomeUnknown { .. } => ApiError::OutcomeUnknown(err.to_string()),
            WriteError::Store(err) => err.into(),
        }
    }
}

impl From<MigrationRouteError> for ApiError {
    fn from(err: MigrationRouteError) -> Self {
        match err {
            MigrationRouteError::Redis(err) => err.into(),
            MigrationRouteError::ReadLost(err) => ApiError::Internal(err.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: &str, detail: &str) -> redis::RedisError {
        redis::make_extension_error(code.to_string(), Some(detail.to_string()))
    }

    #[test]
    fn only_a_redis_that_cannot_be_reached_is_unreachable() {
        let io = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(matches!(
            classify_redis_error(&io),
            RedisFailure::Unreachable(_)
        ));
        let oom = classify_redis_error(&server_error(
            "OOM",
            "command not allowed when used memory > 'maxmemory'.",
        ));
        assert!(matches!(oom, RedisFailure::OutOfMemory(_)), "{oom:?}");
        assert!(oom.to_string().contains("out of memory"));
        assert_eq!(oom.status(), StatusCode::SERVICE_UNAVAILABLE);
        let wrong = classify_redis_error(&server_error("WRONGTYPE", "Operation against a key"));
        assert!(matches!(wrong, RedisFailure::WrongType(_)), "{wrong:?}");
        assert_eq!(wrong.status(), StatusCode::INTERNAL_SERVER_ERROR);
        for failure in [oom, wrong] {
            assert!(!failure.to_string().contains("unreachable"), "{failure}");
        }
    }
}
