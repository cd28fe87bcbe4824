//! Reading a job's output stream, and waiting for a job to finish without
//! polling.
//!
//! The stream holds one entry per output line (field `line`) and control
//! entries (field `control`) that only wake blocked readers; readers skip
//! them. The stream is never trimmed while its job is the current one (it
//! is deleted whole when the next command is accepted), so the full output
//! can always be read back.

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::RedisResult;

use crate::keys::Keys;

/// Entries read per XRANGE call: long outputs are read in chunks so that one
/// call never blocks Redis for long.
const CHUNK: usize = 1000;

/// Every output line of job `job_id`, in order (empty when it has none).
pub async fn read_output<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    job_id: &str,
) -> RedisResult<Vec<String>> {
    let stream = keys.job_output(job_id);
    let mut lines = Vec::new();
    let mut start = "-".to_string();
    loop {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(CHUNK)
            .query_async(conn)
            .await?;
        let count = reply.ids.len();
        for entry in &reply.ids {
            if let Some(line) = entry.get::<String>("line") {
                lines.push(line);
            }
        }
        match reply.ids.last() {
            Some(last) if count == CHUNK => start = format!("({}", last.id),
            _ => return Ok(lines),
        }
    }
}

/// The `output` text of SPEC 4.1: every line ending in `\n`.
pub fn format_output(lines: &[String]) -> String {
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Waits up to `timeout` for job `job_id` to finish; true when it has.
///
/// Blocks with `XREAD BLOCK` on the job's output stream. `conn` must be a
/// connection of its own ([`crate::redis_client::dedicated_connection`]): a
/// blocking command would stall every other request pipelined on a shared
/// multiplexed connection. Every new entry wakes it to look at the
/// state again; the finish script appends a control entry, so the finish is
/// seen at once. False also when the job no longer exists.
pub async fn wait_until_finished<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    job_id: &str,
    timeout: Duration,
) -> RedisResult<bool> {
    let deadline = Instant::now() + timeout;
    let job = keys.job(job_id);
    let stream = keys.job_output(job_id);
    loop {
        // The state and the last entry id in one step: an entry appended
        // after this read is then always seen by the XREAD below.
        let (state, last): (Option<String>, StreamRangeReply) = redis::pipe()
            .atomic()
            .hget(&job, "state")
            .cmd("XREVRANGE")
            .arg(&stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        match state.as_deref() {
            Some("finished") => return Ok(true),
            None => return Ok(false),
            Some(_) => {}
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        // BLOCK 0 would mean "forever".
        let block_ms = remaining.as_millis().min(u64::MAX as u128) as u64;
        if block_ms == 0 {
            return Ok(false);
        }
        let last_id = last
            .ids
            .last()
            .map(|entry| entry.id.clone())
            .unwrap_or_else(|| "0-0".to_string());
        let _: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&stream)
            .arg(last_id)
            .query_async(conn)
            .await?;
    }
}
