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
//! A final result (the job finished) is answered with the datastore's
//! state, the full output and the exception, and only then marked as read,
//! so a new command is never accepted before someone saw the last result.
//! Running the job is the worker's.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use migration_shared::jobs::{
    self, EnqueueOutcome, JobCommand, JobRecord, JobState, NOT_READ_MESSAGE, RUNNING_MESSAGE,
};
use serde_json::{json, Map, Value};

use super::JsonBody;
use crate::error::ApiError;
use crate::state::AppState;
use migration_shared::stats::{read_stats, MigrationState};

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
) -> Result<Json<Value>, ApiError> {
    let request = MigrationRequest::parse(body)?;
    let answer = match request {
        MigrationRequest::Stats => stats(&state).await?,
        MigrationRequest::Progress => progress(&state).await?,
        MigrationRequest::Run { command, verbose } => run_command(&state, command, verbose).await?,
    };
    Ok(Json(answer))
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
/// The output stream's `result` event is this answer too.
pub(crate) async fn progress_answer(state: AppState) -> Result<Value, MigrationRouteError> {
    progress(&state).await
}

async fn progress(state: &AppState) -> Result<Value, MigrationRouteError> {
    let mut conn = state.redis.clone();
    match jobs::current_job(&mut conn, &state.keys).await? {
        None => {
            let stats = read_stats(&mut conn, &state.keys, &state.registry).await?;
            Ok(json!({"success": true, "status": stats.status}))
        }
        Some(job) => answer_for(state, &job).await,
    }
}

/// `migrate`/`finalize`/`reset`: enqueue, wait a little, answer.
async fn run_command(
    state: &AppState,
    command: JobCommand,
    verbose: bool,
) -> Result<Value, MigrationRouteError> {
    let mut conn = state.redis.clone();
    let fingerprint = state.registry.fingerprint();
    let job_id = match jobs::enqueue(&mut conn, &state.keys, command, verbose, &fingerprint).await?
    {
        EnqueueOutcome::Accepted { job_id } => job_id,
        EnqueueOutcome::Running { .. } => return Err(MigrationRouteError::MigrationRunning),
        EnqueueOutcome::NotRead { .. } => return Err(MigrationRouteError::OutputNotRead),
    };
    tracing::info!(job_id = %job_id, command = %command, verbose, "migration job queued");
    wait_for_job(state, &job_id, state.config.migration_wait).await;
    match jobs::job(&mut conn, &state.keys, &job_id).await? {
        Some(job) => answer_for(state, &job).await,
        // Finished, read and replaced by a newer command in the meantime:
        // answer what is current now.
        None => progress(state).await,
    }
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
    // The BLOCK argument bounds the wait; this bounds a hung connection.
    match tokio::time::timeout(wait + Duration::from_secs(2), waited).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::warn!(job_id, error = %err, "waiting for the job failed"),
        Err(_) => tracing::warn!(job_id, "waiting for the job timed out"),
    }
}

/// SPEC 4.1 for a job: `migration_running` with the output so far, or the
/// final result (then marked as read). Both carry the job's structured
/// `progress` once the engine reported some (SPEC 9: the same numbers the
/// stream and `migrationctl` show).
pub(crate) async fn answer_for(
    state: &AppState,
    job: &JobRecord,
) -> Result<Value, MigrationRouteError> {
    let mut conn = state.redis.clone();
    let lines = jobs::read_output(&mut conn, &state.keys, &job.id).await?;
    let output = jobs::format_output(&lines);
    let mut answer = Map::new();
    answer.insert("success".into(), Value::Bool(true));
    if let Some(progress) = &job.progress {
        answer.insert("progress".into(), json!(progress));
    }
    if job.state != JobState::Finished {
        answer.insert("status".into(), json!(MigrationState::MigrationRunning));
        answer.insert("output".into(), Value::String(output));
        return Ok(Value::Object(answer));
    }
    let stats = read_stats(&mut conn, &state.keys, &state.registry).await?;
    answer.insert("status".into(), json!(stats.status));
    answer.insert("output".into(), Value::String(output));
    if let Some(exception) = &job.exception {
        answer.insert("exception".into(), Value::String(exception.clone()));
    }
    jobs::mark_result_read(&mut conn, &state.keys, &job.id).await?;
    Ok(Value::Object(answer))
}
