//! The api's side of the queue: accept a command as the new job (or refuse
//! it, SPEC 4.2), read the current job, mark a final result as returned.
//!
//! Who may run when is decided inside `job_enqueue.lua` alone, so two
//! replicas accepting at the same moment can never both succeed.

use redis::aio::ConnectionLike;
use redis::RedisResult;

use super::{unexpected_reply, JobCommand, JobRecord};
use crate::keys::Keys;
use crate::scripts;

/// What `enqueue` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// The job was created and is the current one.
    Accepted {
        /// The new job's id.
        job_id: String,
    },
    /// Refused: a job is queued or running ([`super::RUNNING_MESSAGE`]).
    Running {
        /// The current job.
        job_id: String,
    },
    /// Refused: the last job's result was never returned ([`super::NOT_READ_MESSAGE`]).
    NotRead {
        /// The current (finished) job.
        job_id: String,
    },
}

/// Accepts `command` as the new current job, deleting the previous job and
/// its output, and wakes a worker; or refuses (SPEC 4.2). `fingerprint` is
/// the registry fingerprint of the accepting api.
pub async fn enqueue<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    command: JobCommand,
    verbose: bool,
    fingerprint: &str,
) -> RedisResult<EnqueueOutcome> {
    let job_id = uuid::Uuid::new_v4().to_string();
    let first_line = format!(
        "Job {job_id} queued: {command}{}",
        if verbose { " (verbose)" } else { "" }
    );
    let reply: Vec<String> = scripts::ENQUEUE
        .key(keys.current_job())
        .key(keys.job_wakeup())
        .arg(keys.base())
        .arg(&job_id)
        .arg(command.as_str())
        .arg(if verbose { "1" } else { "0" })
        .arg(fingerprint)
        .arg(first_line)
        .invoke_async(conn)
        .await?;
    match reply.as_slice() {
        [kind, id] if kind == "accepted" => Ok(EnqueueOutcome::Accepted { job_id: id.clone() }),
        [kind, id] if kind == "running" => Ok(EnqueueOutcome::Running { job_id: id.clone() }),
        [kind, id] if kind == "not_read" => Ok(EnqueueOutcome::NotRead { job_id: id.clone() }),
        _ => Err(unexpected_reply("job_enqueue", &reply)),
    }
}

/// The current job (queued, running or finished), if any.
pub async fn current_job<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
) -> RedisResult<Option<JobRecord>> {
    let fields: std::collections::HashMap<String, String> = scripts::CURRENT
        .key(keys.current_job())
        .arg(keys.base())
        .invoke_async(conn)
        .await?;
    JobRecord::from_fields(fields)
}

/// The job `job_id`, if it still exists.
pub async fn job<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    job_id: &str,
) -> RedisResult<Option<JobRecord>> {
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.job(job_id))
        .query_async(conn)
        .await?;
    JobRecord::from_fields(fields)
}

/// Records that the final result of the finished job `job_id` was returned,
/// so new commands are accepted. Returns false when the job is not finished.
pub async fn mark_result_read<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    job_id: &str,
) -> RedisResult<bool> {
    let marked: i64 = scripts::MARK_READ
        .key(keys.job(job_id))
        .invoke_async(conn)
        .await?;
    Ok(marked == 1)
}
