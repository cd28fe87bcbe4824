//! The worker's side: claim the current job under the global lock, renew
//! the lease, append output, finish or hand back the job, all fenced.
//!
//! The lock is the hash `lock` (`job_id`, `worker_id`, `fencing_token`)
//! whose TTL is the lease. Every claim takes a new token, larger than
//! `lock:fencing_counter` (the last one handed out) and never below Redis's
//! clock in microseconds, so tokens never repeat even when Redis loses its
//! last acknowledged writes (SPEC 7.1; the argument is in
//! `docs/redis-keys.md`, "Fencing tokens"). Every later write by the holder
//! passes its token and the script refuses it when the lock holds another
//! (or none). So a worker that lost its lease (paused, partitioned) can
//! never write again, whatever its own clock believes. The migration area's
//! scripts (the engine's) check the same field.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::RedisResult;

use super::queue::current_job_id;
use super::{too_many_changes, unexpected_reply, JobCommand, MAX_TAKEOVERS, STALE_RETRIES};
use crate::keys::Keys;
use crate::{metrics, scripts};

/// A job this worker now holds the lock for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The job id.
    pub job_id: String,
    /// What to run.
    pub command: JobCommand,
    /// Whether to write one line per position.
    pub verbose: bool,
    /// This hold's fencing token: pass it to every write.
    pub fencing_token: u64,
    /// Takeovers so far (0 for a first or handed-back run).
    pub attempts: u32,
    /// Lines in the output stream right after the claim (for [`append_output`]).
    pub output_lines: u64,
    /// Why this worker may run it.
    pub how: ClaimKind,
}

/// How a job came to be claimed (the line `job_claim.lua` wrote says so too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// Its first run.
    Started,
    /// Handed back by a stopping worker.
    Continued,
    /// Its worker's lease expired: counted in `attempts`.
    TakenOver,
    /// This worker's own job again, after it lost touch with Redis: not
    /// counted (SPEC 7.1).
    Resumed,
}

impl ClaimKind {
    fn parse(value: &str) -> Option<ClaimKind> {
        match value {
            "started" => Some(ClaimKind::Started),
            "continued" => Some(ClaimKind::Continued),
            "taken_over" => Some(ClaimKind::TakenOver),
            "resumed" => Some(ClaimKind::Resumed),
            _ => None,
        }
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// No queued or running job.
    Idle,
    /// The job runs under another worker's live lease.
    Busy {
        /// The running job.
        job_id: String,
    },
    /// The job was accepted by an api with another registry: it was
    /// finished with an exception naming both fingerprints.
    Refused {
        /// The refused job.
        job_id: String,
        /// The job's fingerprint.
        job_fingerprint: String,
    },
    /// The job's lease expired after [`MAX_TAKEOVERS`] takeovers: it was
    /// finished with an exception saying it was abandoned.
    Abandoned {
        /// The abandoned job.
        job_id: String,
    },
    /// The job is ours.
    Claimed(ClaimedJob),
}

/// A fenced write failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lock no longer holds our token: we lost the lease; write nothing more.
    #[error("the lock is no longer held with this fencing token")]
    Fenced,
    /// Redis failed; the write may or may not have happened.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// Takes the current job if it is queued, or running with an expired lease
/// (a takeover), or, with `resume` naming it, running as this worker's own
/// job (SPEC 7.1: after losing touch with Redis; not a takeover, whether its
/// lease expired meanwhile or is still its own); see `job_claim.lua`.
///
/// `resume` must only name a job whose run this worker has stopped: the
/// claim replaces even this worker's own live lease with a new token.
pub async fn claim<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    worker_id: &str,
    fingerprint: &str,
    lease: Duration,
    resume: Option<&str>,
) -> RedisResult<ClaimOutcome> {
    // The script gets the job's keys, so the caller names the job: read
    // job:current here; the script re-checks it.
    for _ in 0..STALE_RETRIES {
        let Some(id) = current_job_id(conn, keys).await? else {
            return Ok(ClaimOutcome::Idle);
        };
        let resuming = resume == Some(id.as_str());
        let reply: Vec<String> = scripts::CLAIM
            .key(keys.current_job())
            .key(keys.lock())
            .key(keys.fencing_counter())
            .key(keys.job(&id))
            .key(keys.job_output(&id))
            .key(keys.metrics())
            .arg(&id)
            .arg(worker_id)
            .arg(fingerprint)
            .arg(lease.as_millis() as u64)
            .arg(MAX_TAKEOVERS)
            .arg(if resuming { "1" } else { "0" })
            .arg(metrics::duration_bounds_arg())
            .invoke_async(conn)
            .await?;
        if matches!(reply.as_slice(), [kind] if kind == "stale") {
            continue;
        }
        return parse_claim(&reply).ok_or_else(|| unexpected_reply("job_claim", &reply));
    }
    Err(too_many_changes("job_claim"))
}

fn parse_claim(reply: &[String]) -> Option<ClaimOutcome> {
    match reply {
        [kind] if kind == "idle" => Some(ClaimOutcome::Idle),
        [kind, id] if kind == "busy" => Some(ClaimOutcome::Busy { job_id: id.clone() }),
        [kind, id] if kind == "abandoned" => Some(ClaimOutcome::Abandoned { job_id: id.clone() }),
        [kind, id, job_fingerprint] if kind == "refused" => Some(ClaimOutcome::Refused {
            job_id: id.clone(),
            job_fingerprint: job_fingerprint.clone(),
        }),
        [kind, id, cmd, verbose, token, attempts, lines, how] if kind == "claimed" => {
            Some(ClaimOutcome::Claimed(ClaimedJob {
                job_id: id.clone(),
                command: JobCommand::parse(cmd)?,
                verbose: verbose == "1",
                fencing_token: token.parse().ok()?,
                attempts: attempts.parse().ok()?,
                output_lines: lines.parse().ok()?,
                how: ClaimKind::parse(how)?,
            }))
        }
        _ => None,
    }
}

/// Extends the lease; false when the lock no longer holds `fencing_token`
/// (the caller must stop at once). A refused token still raises the
/// fencing counter to itself if Redis forgot it, so it is never handed out
/// again.
pub async fn renew<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    fencing_token: u64,
    lease: Duration,
) -> RedisResult<bool> {
    let renewed: i64 = scripts::RENEW
        .key(keys.lock())
        .key(keys.fencing_counter())
        .arg(fencing_token)
        .arg(lease.as_millis() as u64)
        .invoke_async(conn)
        .await?;
    Ok(renewed == 1)
}

/// Appends `lines` to the job's output, fenced. `lines_before` is how many
/// lines the caller knows the stream held before this batch: a retry of a
/// batch whose reply was lost does not write it twice. Returns the number of
/// lines in the stream afterwards.
pub async fn append_output<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    job_id: &str,
    fencing_token: u64,
    lines_before: u64,
    lines: &[String],
) -> Result<u64, LeaseError> {
    let written: i64 = scripts::APPEND_OUTPUT
        .key(keys.lock())
        .key(keys.job(job_id))
        .key(keys.job_output(job_id))
        .arg(fencing_token)
        .arg(lines_before)
        .arg(lines)
        .invoke_async(conn)
        .await?;
    u64::try_from(written).map_err(|_| LeaseError::Fenced)
}

/// Finishes the job (with `exception` when the command failed) and frees
/// the lock, fenced; wakes everyone waiting on the output stream.
pub async fn finish<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    job_id: &str,
    fencing_token: u64,
    exception: Option<&str>,
) -> Result<(), LeaseError> {
    let done: i64 = scripts::FINISH
        .key(keys.lock())
        .key(keys.job(job_id))
        .key(keys.job_output(job_id))
        .key(keys.metrics())
        .arg(fencing_token)
        .arg(exception.unwrap_or(""))
        .arg(metrics::duration_bounds_arg())
        .invoke_async(conn)
        .await?;
    if done == 1 {
        Ok(())
    } else {
        Err(LeaseError::Fenced)
    }
}

/// Gives the job back to the queue (state `queued`, lock freed, `line`
/// appended, a worker woken), fenced: used when this worker stops.
pub async fn hand_back<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    job_id: &str,
    fencing_token: u64,
    line: &str,
) -> Result<(), LeaseError> {
    let done: i64 = scripts::HAND_BACK
        .key(keys.lock())
        .key(keys.job(job_id))
        .key(keys.job_output(job_id))
        .key(keys.job_wakeup())
        .arg(fencing_token)
        .arg(line)
        .arg(job_id)
        .invoke_async(conn)
        .await?;
    if done == 1 {
        Ok(())
    } else {
        Err(LeaseError::Fenced)
    }
}
