//! Route classes: how long a route may take and how many of its requests one
//! replica serves at once (SPEC 4.3), enforced by `crate::route_guard` in
//! front of each group of routes.
//!
//! A Redis that hangs (stopped, partitioned) leaves its TCP connections open,
//! so no command ever fails on its own: without a bound, a request waits for
//! the connection's response timeout. The operator tool gives each request
//! 5 s and then sends it again, so every route with a budget answers within
//! [`REQUEST_BUDGET`], which leaves a margin under those 5 s. The budget is
//! a layer around the whole handler, not timers inside it, so that a new
//! route gets it by being put in its class; what a route says when its
//! budget runs out depends on what it may already have done:
//!
//! - [`RouteClass::Health`] and [`RouteClass::Reads`] changed nothing: `503`,
//!   Redis cannot be reached (health in its own shape, SPEC 7).
//! - [`RouteClass::Migrations`]: `progress` and `stats` read; `migrate`,
//!   `finalize` and `reset` may have been accepted when Redis stopped
//!   answering, so the `503` says that `progress` tells. Their
//!   `MIGRATION_WAIT_MS` wait is capped ([`COMMAND_WAIT_CAP`]) to fit.
//! - [`RouteClass::Writes`]: the commit may have been sent, so the budget's
//!   answer is `504`, outcome unknown, retry with the same `Idempotency-Key`
//!   (SPEC 5.1). The write path's own, shorter deadlines answer `503` when
//!   the write was certainly not sent; this layer is the last resort.
//!
//! Long-lived routes (the SSE output stream of SPEC 9) belong to no class:
//! they are added to the router beside the classes, without a budget.
//!
//! Every class also bounds its requests in flight per replica with one
//! semaphore shared by all its routes and sheds the excess at once (`503`,
//! try again), so a thousand pollers cannot pile up a thousand answers in
//! memory.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::error::ApiError;

/// Longest time a route with a budget takes to answer, whatever Redis does.
/// Under the operator tool's 5 s per request, with a margin for a loaded
/// machine.
pub const REQUEST_BUDGET: Duration = Duration::from_millis(4000);

/// The writes' budget: longer than the write path's own deadline
/// (`migration_shared::datastore::WRITE_DEADLINE`), so that the write path
/// answers first and can say `503` when the commit was certainly not sent;
/// this layer's `504` is the last resort. Still under 5 s.
pub const WRITE_BUDGET: Duration = Duration::from_millis(4600);

/// Longest time `migrate`/`finalize`/`reset` wait for their job
/// (`MIGRATION_WAIT_MS` is capped to this), so that enqueueing, waiting and
/// reading the answer fit in [`REQUEST_BUDGET`].
pub const COMMAND_WAIT_CAP: Duration = Duration::from_millis(2500);

/// The kinds of routes, by what they may have done when they run out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `GET /health`, `GET /system/action/health`.
    Health,
    /// The datastore readers.
    Reads,
    /// `POST /internal/migrations` (`progress`, `stats` and the commands).
    Migrations,
    /// The datastore writer.
    Writes,
}

impl RouteClass {
    /// Requests of this class one replica serves at once; more are shed.
    pub fn max_in_flight(self) -> usize {
        match self {
            RouteClass::Health => 32,
            RouteClass::Reads | RouteClass::Migrations => 128,
            // Write bodies are up to 1 MiB each and every commit is one
            // script: more in flight only queue inside Redis.
            RouteClass::Writes => 64,
        }
    }

    /// How long a request of this class may take.
    pub fn budget(self) -> Duration {
        match self {
            RouteClass::Writes => WRITE_BUDGET,
            _ => REQUEST_BUDGET,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            RouteClass::Health => "health checks",
            RouteClass::Reads => "reads",
            RouteClass::Migrations => "migration route requests",
            RouteClass::Writes => "writes",
        }
    }

    /// The answer when a request ran out of its budget.
    pub(crate) fn timed_out(self) -> Response {
        let seconds = self.budget().as_secs_f64();
        match self {
            RouteClass::Health => health_failure(format!("no answer within {seconds} s")),
            RouteClass::Reads => ApiError::RedisUnavailable(format!(
                "no answer within {seconds} s (redis hangs or the network to it is cut)"
            ))
            .into_response(),
            RouteClass::Migrations => ApiError::RedisUnavailable(format!(
                "no answer within {seconds} s (redis hangs or the network to it is cut); \
                 a migrate, finalize or reset may have been accepted: 'progress' tells"
            ))
            .into_response(),
            RouteClass::Writes => ApiError::OutcomeUnknown(format!(
                "redis did not answer within {seconds} s: the write may or may not have \
                 happened; retry with the same Idempotency-Key"
            ))
            .into_response(),
        }
    }

    /// The answer when the replica already serves [`Self::max_in_flight`]
    /// requests of this class.
    pub(crate) fn overloaded(self) -> Response {
        let message = format!(
            "too many concurrent {} on this replica (at most {}): nothing was done, retry shortly",
            self.name(),
            self.max_in_flight()
        );
        match self {
            RouteClass::Health => health_failure(format!("not checked: {message}")),
            _ => ApiError::Unavailable(message).into_response(),
        }
    }
}

/// The health routes' failure shape (SPEC 7).
pub fn health_failure(redis: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "running", "redis": redis})),
    )
        .into_response()
}
