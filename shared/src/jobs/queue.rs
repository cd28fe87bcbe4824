//! The api's side of the queue: accept a command as the new job (or refuse
//! it, SPEC 4.2), read the current job, mark a final result as returned.
//!
//! Who may run when is decided inside `job_enqueue.lua` alone, so two
//! replicas accepting at the same moment can never both succeed.

use redis::aio::ConnectionLike;
use redis::RedisResult;

use super::{too_many_changes, unexpected_reply, JobCommand, JobRecord, STALE_RETRIES};
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
    // The script gets every key it touches, so it cannot look up the
    // current job itself: read it here, and let the script re-check it.
    for _ in 0..STALE_RETRIES {
        let current = current_job_id(conn, keys).await?;
        let mut invocation = scripts::ENQUEUE.prepare_invoke();
        invocation
            .key(keys.current_job())
            .key(keys.job_wakeup())
            .key(keys.job(&job_id))
            .key(keys.job_output(&job_id));
        if let Some(current) = &current {
            invocation
                .key(keys.job(current))
                .key(keys.job_output(current));
        }
        let reply: Vec<String> = invocation
            .arg(current.as_deref().unwrap_or(""))
            .arg(&job_id)
            .arg(command.as_str())
            .arg(if verbose { "1" } else { "0" })
            .arg(fingerprint)
            .arg(&first_line)
            .invoke_async(conn)
            .await?;
        match reply.as_slice() {
            [kind] if kind == "stale" => continue,
            [kind, id] if kind == "accepted" => {
                return Ok(EnqueueOutcome::Accepted { job_id: id.clone() })
            }
            [kind, id] if kind == "running" => {
                return Ok(EnqueueOutcome::Running { job_id: id.clone() })
            }
            [kind, id] if kind == "not_read" => {
                return Ok(EnqueueOutcome::NotRead { job_id: id.clone() })
            }
            _ => return Err(unexpected_reply("job_enqueue", &reply)),
        }
    }
    Err(too_many_changes("job_enqueue"))
}

/// The current job (queued, running or finished), if any.
pub async fn current_job<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
) -> RedisResult<Option<JobRecord>> {
    // The script needs the job's key, so it is given the id this process
    // last saw as current (one round trip while it stays current, the
    // common case of `progress` polls); when that is no longer it, the
    // script names the current one and the call is repeated with it.
    let mut guess = last_seen_current(keys);
    for _ in 0..STALE_RETRIES {
        let reply: Vec<String> = scripts::CURRENT
            .key(keys.current_job())
            .key(keys.job(&guess))
            .arg(&guess)
            .invoke_async(conn)
            .await?;
        match reply.split_first() {
            Some((kind, [id])) if kind == "stale" => {
                guess = id.clone();
                remember_current(keys, &guess);
            }
            Some((kind, [])) if kind == "none" => return Ok(None),
            Some((kind, fields)) if kind == "record" && fields.len() % 2 == 0 => {
                let fields = fields
                    .chunks(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect();
                return JobRecord::from_fields(fields);
            }
            _ => return Err(unexpected_reply("job_current", &reply)),
        }
    }
    Err(too_many_changes("job_current"))
}

/// The current job id this process last saw, per key prefix: a guess only,
/// always re-checked by `job_current.lua`.
static LAST_SEEN_CURRENT: std::sync::Mutex<Vec<(String, String)>> =
    std::sync::Mutex::new(Vec::new());

fn last_seen_current(keys: &Keys) -> String {
    let seen = LAST_SEEN_CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    seen.iter()
        .find(|(base, _)| base == keys.base())
        .map(|(_, id)| id.clone())
        .unwrap_or_default()
}

fn remember_current(keys: &Keys, id: &str) {
    let mut seen = LAST_SEEN_CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    match seen.iter_mut().find(|(base, _)| base == keys.base()) {
        Some(entry) => entry.1 = id.to_string(),
        None => seen.push((keys.base().to_string(), id.to_string())),
    }
}

/// The id in `job:current`, if any.
pub async fn current_job_id<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
) -> RedisResult<Option<String>> {
    redis::cmd("GET")
        .arg(keys.current_job())
        .query_async(conn)
        .await
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
