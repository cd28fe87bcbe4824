//! `POST /internal/migrations` (and with a trailing `/`): SPEC section 4.
//!
//! Three steps, as every route: parse the body into a [`MigrationRequest`]
//! (SPEC 4.3), apply it, answer SPEC 4.1. `stats` reads the migration state;
//! `progress` reads the current job; `migrate`/`finalize`/`reset` enqueue a
//! job with `job_enqueue.lua` (the one atomic place that decides who may run,
//! SPEC 4.2) and wait up to `MIGRATION_WAIT_MS` for it, blocked on the job's
//! output stream (no polling). All state is in Redis, so every replica
//! answers alike.
//!
//! `progress` and `stats` are reads and ride out a short Redis restart
//! (`crate::retry`); the commands are not retried. Concurrent `progress`
//! polls on one replica share one read that started after each of them
//! arrived (`crate::coalesced_read`): the operator tools poll it often, and
//! one Redis round trip per poll made Redis the route's bound. The command wait is
//! capped so that the answer fits in the route's budget
//! (`crate::route_class`).
//!
//! A final result (the job finished) is answered with the datastore's
//! state, the full output and the exception, and only then marked as read,
//! so a new command is never accepted before someone saw the last result.
//! Running the job is the worker's.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;
use migration_shared::jobs::{
    self, EnqueueOutcome, JobCommand, JobState, MigrationProgress, NOT_READ_MESSAGE,
    RUNNING_MESSAGE,
};
use serde_json::{json, Value};

use super::JsonBody;
use crate::coalesced_read::ReadLost;
use crate::error::ApiError;
use crate::retry::{self, ConnectionError};
use crate::route_class::{COMMAND_WAIT_CAP, REQUEST_BUDGET};
use crate::state::AppState;
use migration_shared::stats::read_stats;

/// A migration route request that cannot be handled (mapped to a response
/// in `crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum MigrationRouteError {
    /// The body is not a JSON object.
    #[error("request body must be a JSON object like {{\"cmd\": \"progress\"}}")]
    NotAnObject,
    /// `cmd` is missing (or null).
    #[error(
        "No command provided: the body needs a 'cmd' (migrate, finalize, reset, stats or progress)"
    )]
    NoCommand,
    /// `cmd` is not a string.
    #[error("'cmd' must be a string (migrate, finalize, reset, stats or progress), got {0}")]
    CommandNotString(String),
    /// `cmd` names no command.
    #[error("Unknown command: '{0}' (expected migrate, finalize, reset, stats or progress)")]
    UnknownCommand(String),
    /// `verbose` is neither a boolean nor null.
    #[error("'verbose' must be a boolean, got {0}")]
    VerboseNotBoolean(String),
    /// A job is queued or running (SPEC 4.2, exact).
    #[error("{RUNNING_MESSAGE}")]
    MigrationRunning,
    /// The last job's result was never returned (SPEC 4.2, exact).
    #[error("{NOT_READ_MESSAGE}")]
    OutputNotRead,
    /// Redis failed: nothing (more) happened.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// The shared `progress` read this request waited for failed
    /// unexpectedly (a bug: it panicked).
    #[error(transparent)]
    ReadLost(ReadLost),
}

impl ConnectionError for MigrationRouteError {
    fn is_connection_class(&self) -> bool {
        match self {
            MigrationRouteError::Redis(err) => retry::is_connection_class(err),
            _ => false,
        }
    }
}

/// What the route was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationRequest {
    /// `stats`.
    Stats,
    /// `progress`.
    Progress,
    /// `migrate`, `finalize` or `reset`.
    Run {
        /// The command.
        command: JobCommand,
        /// `verbose` (absent or null: false).
        verbose: bool,
    },
}

impl MigrationRequest {
    /// Validates the body (SPEC 4.3).
    pub fn parse(body: Value) -> Result<MigrationRequest, MigrationRouteError> {
        let Value::Object(body) = body else {
            return Err(MigrationRouteError::NotAnObject);
        };
        let name = match body.get("cmd") {
            None | Some(Value::Null) => return Err(MigrationRouteError::NoCommand),
            Some(Value::String(name)) => name.as_str(),
            Some(other) => return Err(MigrationRouteError::CommandNotString(other.to_string())),
        };
        let verbose = match body.get("verbose") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(verbose)) => *verbose,
            Some(other) => return Err(MigrationRouteError::VerboseNotBoolean(other.to_string())),
        };
        match name {
            "stats" => Ok(MigrationRequest::Stats),
            "progress" => Ok(MigrationRequest::Progress),
            _ => match JobCommand::parse(name) {
                Some(command) => Ok(MigrationRequest::Run { command, verbose }),
                None => Err(MigrationRouteError::UnknownCommand(name.to_string())),
            },
        }
    }
}

/// The handler of both paths.
pub async fn migrations(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = MigrationRequest::parse(body)?;
    let answer = match request {
        // Reads ride out a short Redis restart; commands are never retried
        // (their enqueue may have happened).
        MigrationRequest::Stats => {
            Json(retry::read("stats", || stats(&state)).await?).into_response()
        }
        MigrationRequest::Progress => {
            json_body(retry::read("progress", || progress(&state)).await?)
        }
        MigrationRequest::Run { command, verbose } => run_command(&state, command, verbose).await?,
    };
    Ok(answer)
}

/// `stats`: refused like every command but `progress` while a job is
/// queued or running, or its result is unread (SPEC 4.2). Only reads, so the
/// check needs no script: a job accepted right after it changes nothing
/// `stats` could break.
async fn stats(state: &AppState) -> Result<Value, MigrationRouteError> {
    let mut conn = state.redis.clone();
    if let Some(job) = jobs::current_job(&mut conn, &state.keys).await? {
        match job.state {
            JobState::Queued | JobState::Running => {
                return Err(MigrationRouteError::MigrationRunning)
            }
            JobState::Finished if !job.result_read => {
                return Err(MigrationRouteError::OutputNotRead)
            }
            JobState::Finished => {}
        }
    }
    let stats = read_stats(&mut conn, &state.keys, &state.registry).await?;
    Ok(json!({"success": true, "stats": stats}))
}

/// `progress`: the current job's output so far, or its final result, or the
/// datastore's state when no command has run since the output was cleared.
///
/// Concurrent polls on this replica share one read
/// (`crate::coalesced_read`), always one that started after the poll
/// arrived, so an answer is never older than its request. Every waiter gets
/// the read's error as its own read would have failed, and retries it as
/// such (`crate::retry`, around this).
async fn progress(state: &AppState) -> Result<Bytes, MigrationRouteError> {
    let reader = state.clone();
    let read = move || {
        let state = reader.clone();
        async move { bounded_progress_read(&state).await }
    };
    let answer = state
        .progress_reads
        .read(read)
        .await
        .map_err(MigrationRouteError::ReadLost)?;
    Ok(answer?)
}

/// [`read_progress`], given up after [`REQUEST_BUDGET`]: the reads of a
/// replica run one after the other, so a read that hangs on a hung Redis
/// (whose connection may take far longer to time out) would hold back
/// every later poll. Its waiters all arrived before it started, so their
/// own budget has run out by then: nobody is left who could use it.
async fn bounded_progress_read(state: &AppState) -> Result<Bytes, redis::RedisError> {
    match tokio::time::timeout(REQUEST_BUDGET, read_progress(state)).await {
        Ok(answer) => answer,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no answer within {} s (redis hangs or the network to it is cut)",
                REQUEST_BUDGET.as_secs_f64()
            ),
        )
        .into()),
    }
}

/// One read of the `progress` answer, as SPEC 4.1 renders it.
///
/// The output comes from the replica's cache plus the stream entries it has
/// not seen (`crate::output_cache`): one round trip for a running job.
async fn read_progress(state: &AppState) -> Result<Bytes, redis::RedisError> {
    let mut conn = state.redis.clone();
    let base = state.output_cache.latest();
    let read = jobs::read_current_output(
        &mut conn,
        &state.keys,
        base.as_ref().map(|snapshot| &snapshot.cursor),
    )
    .await?;
    let Some((job, snapshot)) = state.output_cache.update(base.as_ref(), read) else {
        let stats = read_stats(&mut conn, &state.keys, &state.registry).await?;
        let answer = json!({"success": true, "status": stats.status});
        return Ok(Bytes::from(answer.to_string()));
    };
    if job.state != JobState::Finished {
        return Ok(with_progress(snapshot.running_body(), &job.progress));
    }
    // The final result: the datastore's state after the job, then marked as
    // returned (once is enough: the record says so) before anyone gets it.
    let stats = read_stats(&mut conn, &state.keys, &state.registry).await?;
    let body = snapshot.final_body(stats.status, job.exception.as_deref());
    if !job.result_read {
        jobs::mark_result_read(&mut conn, &state.keys, &job.id).await?;
    }
    Ok(with_progress(body, &job.progress))
}

/// The output stream's `result` event: the `progress` answer, as JSON.
pub(crate) async fn progress_answer(state: AppState) -> Result<Value, MigrationRouteError> {
    let body = progress(&state).await?;
    serde_json::from_slice(&body).map_err(|err| {
        MigrationRouteError::Redis(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "rendering the answer",
            err.to_string(),
        )))
    })
}

/// Adds the job's structured `progress` (SPEC 9: the numbers the stream and
/// `migrationctl` show) to a rendered answer `{...}`, when there is one. The
/// cached body stays as it is; only the small object is spliced in.
fn with_progress(body: Bytes, progress: &Option<MigrationProgress>) -> Bytes {
    let Some(progress) = progress else {
        return body;
    };
    let Some(rest) = body.strip_prefix(b"{") else {
        return body;
    };
    let mut spliced = Vec::with_capacity(body.len() + 256);
    spliced.extend_from_slice(b"{\"progress\":");
    spliced.extend_from_slice(&serde_json::to_vec(progress).unwrap_or_else(|_| b"null".to_vec()));
    spliced.push(b',');
    spliced.extend_from_slice(rest);
    Bytes::from(spliced)
}

/// A rendered JSON answer.
fn json_body(body: Bytes) -> Response {
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

/// `migrate`/`finalize`/`reset`: enqueue, wait a little, answer.
async fn run_command(
    state: &AppState,
    command: JobCommand,
    verbose: bool,
) -> Result<Response, MigrationRouteError> {
    let mut conn = state.redis.clone();
    let fingerprint = state.registry.fingerprint();
    let job_id = match jobs::enqueue(&mut conn, &state.keys, command, verbose, &fingerprint).await?
    {
        EnqueueOutcome::Accepted { job_id } => job_id,
        EnqueueOutcome::Running { .. } => return Err(MigrationRouteError::MigrationRunning),
        EnqueueOutcome::NotRead { .. } => return Err(MigrationRouteError::OutputNotRead),
    };
    tracing::info!(job_id = %job_id, command = %command, verbose, "migration job queued");
    // The whole request must fit in the route's budget.
    let wait = state.config.migration_wait.min(COMMAND_WAIT_CAP);
    wait_for_job(state, &job_id, wait).await;
    // The answer is that of `progress` now: the job's final result if it
    // finished, else its output so far (or, if it finished, was read and
    // replaced by a newer command meanwhile, what is current). Reading it
    // is a read, retried like one; the enqueue above is not.
    retry::read("command answer", || progress(state))
        .await
        .map(json_body)
}

/// Waits up to `wait` for the job to finish. A failure here is only logged:
/// the job was accepted, and the answer says how far it is.
async fn wait_for_job(state: &AppState, job_id: &str, wait: Duration) {
    if wait.is_zero() {
        return;
    }
    let waited = async {
        let mut dedicated =
            migration_shared::redis_client::dedicated_connection(&state.config.redis_url).await?;
        jobs::wait_until_finished(&mut dedicated, &state.keys, job_id, wait).await
    };
    // The BLOCK argument bounds the wait; this bounds a hung connection, so
    // that the answer (the job's state so far) still fits in the budget.
    match tokio::time::timeout(wait + Duration::from_millis(500), waited).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(job_id, error = %err, "waiting for the job failed"),
        Err(_) => tracing::warn!(job_id, "waiting for the job timed out"),
    }
}
