//! Migration jobs (SPEC section 7): the job record, the queue, the fenced
//! global lock, the output stream and worker presence, all in Redis.
//!
//! A job is the hash `job:{id}` (fields `id`, `cmd`, `verbose`,
//! `fingerprint`, `state`, `attempts`, `worker_id`, `created_at`,
//! `started_at`, `finished_at`, `exception`, `result_read`, `output_lines`)
//! plus the stream `job:{id}:output` (one entry per line, field `line`; a
//! control entry with field `control` wakes blocked readers). `job:current`
//! names the current job; at most one job is ever queued or running.
//!
//! Every check-then-write is one Lua script (`shared/lua/job_*.lua`,
//! `lock_*.lua`, `output_*.lua`, loaded by [`scripts`]). The api uses
//! [`queue`] and [`output`]; the worker's runner uses [`lock`] and
//! [`workers`]. Running the command itself (the engine) is the worker's.

pub mod lock;
pub mod output;
pub mod queue;
pub mod workers;

use std::collections::HashMap;
use std::fmt;

pub use lock::{claim, ClaimKind, ClaimOutcome, ClaimedJob, LeaseError};
pub use output::{
    format_output, read_current_output, read_output, wait_until_finished, JobOutput, JobProgress,
    OutputCursor,
};
pub use queue::{current_job, current_job_id, enqueue, job, mark_result_read, EnqueueOutcome};

/// SPEC 4.2, exact: a job is queued or running.
pub const RUNNING_MESSAGE: &str = "Migration is running, only 'progress' command is allowed";
/// SPEC 4.2, exact: the last job finished but nobody has seen its result.
pub const NOT_READ_MESSAGE: &str =
    "Last migration output not read yet. Please call 'progress' first.";
/// A job whose lease expired this many times after takeovers is abandoned
/// (SPEC 7: "after 3 takeovers").
pub const MAX_TAKEOVERS: u32 = 3;

/// A migration command that runs as a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobCommand {
    /// Migrate into the migration area.
    Migrate,
    /// Migrate what is left, then make it live.
    Finalize,
    /// Delete the migration area.
    Reset,
}

impl JobCommand {
    /// The name used in requests and in the job's `cmd` field.
    pub fn as_str(self) -> &'static str {
        match self {
            JobCommand::Migrate => "migrate",
            JobCommand::Finalize => "finalize",
            JobCommand::Reset => "reset",
        }
    }

    /// Parses `migrate`, `finalize` or `reset`.
    pub fn parse(name: &str) -> Option<JobCommand> {
        match name {
            "migrate" => Some(JobCommand::Migrate),
            "finalize" => Some(JobCommand::Finalize),
            "reset" => Some(JobCommand::Reset),
            _ => None,
        }
    }
}

impl fmt::Display for JobCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Accepted (or handed back), waiting for a worker.
    Queued,
    /// A worker holds the lock for it.
    Running,
    /// Done, failed, refused or abandoned; `exception` says which.
    Finished,
}

impl JobState {
    /// The value of the job's `state` field.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Finished => "finished",
        }
    }

    fn parse(value: &str) -> Option<JobState> {
        match value {
            "queued" => Some(JobState::Queued),
            "running" => Some(JobState::Running),
            "finished" => Some(JobState::Finished),
            _ => None,
        }
    }
}

/// The job hash, parsed. Timestamps are ms since the epoch by Redis's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The job id (uuid v4).
    pub id: String,
    /// The command.
    pub command: JobCommand,
    /// Whether the output has one line per position.
    pub verbose: bool,
    /// Registry fingerprint of the api that accepted the job.
    pub fingerprint: String,
    /// Queued, running or finished.
    pub state: JobState,
    /// How many times the job was taken over after its lease expired.
    pub attempts: u32,
    /// The worker that runs (or last ran) the job.
    pub worker_id: Option<String>,
    /// When the job was accepted.
    pub created_at: Option<u64>,
    /// When a worker first claimed it.
    pub started_at: Option<u64>,
    /// When it finished.
    pub finished_at: Option<u64>,
    /// Why the command failed, if it did.
    pub exception: Option<String>,
    /// Whether the final result was returned to a caller.
    pub result_read: bool,
}

impl JobRecord {
    /// Parses an HGETALL reply; `None` for an empty hash. A malformed record
    /// (edited by hand) is an error, not a guess.
    pub fn from_fields(fields: HashMap<String, String>) -> redis::RedisResult<Option<JobRecord>> {
        if fields.is_empty() {
            return Ok(None);
        }
        let get = |name: &str| fields.get(name).filter(|v| !v.is_empty()).cloned();
        let number = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
        let corrupt = |what: &str| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "malformed job record",
                format!("{what}: {fields:?}"),
            ))
        };
        let id = get("id").ok_or_else(|| corrupt("no id"))?;
        let command = get("cmd")
            .as_deref()
            .and_then(JobCommand::parse)
            .ok_or_else(|| corrupt("bad cmd"))?;
        let state = get("state")
            .as_deref()
            .and_then(JobState::parse)
            .ok_or_else(|| corrupt("bad state"))?;
        Ok(Some(JobRecord {
            id,
            command,
            verbose: get("verbose").as_deref() == Some("1"),
            fingerprint: get("fingerprint").unwrap_or_default(),
            state,
            attempts: number("attempts").unwrap_or(0) as u32,
            worker_id: get("worker_id"),
            created_at: number("created_at"),
            started_at: number("started_at"),
            finished_at: number("finished_at"),
            exception: get("exception"),
            result_read: get("result_read").as_deref() == Some("1"),
        }))
    }
}

/// How often a caller reads `job:current` again when a script found it
/// changed in between (another replica accepted a job at that moment).
/// Each retry means someone else made progress, so a few suffice.
const STALE_RETRIES: usize = 16;

/// `job:current` changed between every read and its script.
fn too_many_changes(script: &'static str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        script,
        "job:current kept changing between the read and the script".to_string(),
    ))
}

/// A script replied with something it never returns.
fn unexpected_reply(script: &'static str, reply: &[String]) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        script,
        format!("unexpected reply {reply:?}"),
    ))
}

#[cfg(test)]
mod tests;
