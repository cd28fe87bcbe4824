//! Reading a job's output stream, and waiting for a job to finish without
//! polling.
//!
//! The stream holds one entry per output line (field `line`) and control
//! entries (field `control`) that only wake blocked readers; readers skip
//! them. The stream is never trimmed while its job is the current one (it
//! is deleted whole when the next command is accepted), so the full output
//! can always be read back.
//!
//! `progress` is polled (every ~200 ms by the operator tool, on every
//! replica), so a reader that keeps what it has read asks only for the
//! entries after its [`OutputCursor`]: [`read_current_output`] costs one
//! round trip for a running job however long its output is, instead of one
//! `XRANGE` per thousand lines. The stream's length, read in the same atomic
//! step, tells whether the kept lines are still the stream's (entries lost
//! by Redis, or a stream that was replaced, make the count disagree; the
//! reader then reads the whole stream again), so every replica answers the
//! same full output.

use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{RedisResult, Value};

use super::{unexpected_reply, JobCommand, JobState};
use crate::keys::Keys;
use crate::scripts;

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

/// How far a reader has read the output stream of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputCursor {
    /// The job whose output was read.
    pub job_id: String,
    /// The id of the last entry read; `None` when the stream was empty.
    pub last_entry_id: Option<String>,
    /// Entries read so far, lines and control entries alike (what `XLEN`
    /// counts).
    pub entries: u64,
}

/// What `progress` needs of the current job's record (a poll reads only
/// these fields, so that its reply stays small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobProgress {
    /// The job id.
    pub id: String,
    /// Queued, running or finished.
    pub state: JobState,
    /// Why the command failed, if it did.
    pub exception: Option<String>,
    /// Whether the final result was returned to a caller.
    pub result_read: bool,
}

/// The current job and the output lines a reader had not seen, as
/// [`read_current_output`] found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutput {
    /// The current job's state, of the same moment as the lines.
    pub job: JobProgress,
    /// Where the reader stands after this read.
    pub cursor: OutputCursor,
    /// The lines after the given cursor when `continued`; otherwise every
    /// line of the job's output.
    pub lines: Vec<String>,
    /// True when `lines` continue the lines read up to the given cursor.
    pub continued: bool,
}

/// The current job and its output after `after` (every line when `after`
/// is `None`, is of another job, or no longer matches the stream); `None`
/// when there is no current job.
///
/// One `job_progress.lua` call when nothing or little is new; long outputs
/// read for the first time continue in chunks of [`CHUNK`] entries.
pub async fn read_current_output<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    after: Option<&OutputCursor>,
) -> RedisResult<Option<JobOutput>> {
    let mut base = after.cloned();
    let mut job_id = base.as_ref().map(|c| c.job_id.clone()).unwrap_or_default();
    // A new job is accepted between two calls only when a command was
    // accepted in that instant; a few attempts always suffice.
    for _ in 0..4 {
        let start = match &base {
            Some(OutputCursor {
                last_entry_id: Some(id),
                ..
            }) => format!("({id}"),
            _ => "-".to_string(),
        };
        let reply: Vec<Value> = scripts::PROGRESS
            .key(keys.current_job())
            .key(keys.job(&job_id))
            .key(keys.job_output(&job_id))
            .arg(&job_id)
            .arg(&start)
            .arg(CHUNK)
            .invoke_async(conn)
            .await?;
        let mut reply = reply.into_iter();
        let tag: Option<String> = reply.next().map(redis::from_redis_value).transpose()?;
        match tag.as_deref() {
            None => return Ok(None),
            Some("other") => {
                job_id = reply
                    .next()
                    .map(redis::from_redis_value)
                    .transpose()?
                    .ok_or_else(|| unexpected_reply("job_progress", &["other".into()]))?;
                base = None;
                continue;
            }
            Some("job") => {}
            Some(other) => return Err(unexpected_reply("job_progress", &[other.to_string()])),
        }
        type Fields = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (Some(record), Some(length), Some(entries)) =
            (reply.next(), reply.next(), reply.next())
        else {
            return Err(unexpected_reply("job_progress", &["job".into()]));
        };
        let (id, command, state, exception, result_read): Fields = redis::from_redis_value(record)?;
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            // job:current names a job whose record is gone: as no job.
            return Ok(None);
        };
        // A record edited by hand is an error, not a guess (as in
        // `JobRecord::from_fields`).
        let corrupt = |what: String| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "malformed job record",
                format!("job {id}: {what}"),
            ))
        };
        if command.as_deref().and_then(JobCommand::parse).is_none() {
            return Err(corrupt(format!("bad cmd {command:?}")));
        }
        let job = JobProgress {
            state: state
                .as_deref()
                .and_then(JobState::parse)
                .ok_or_else(|| corrupt(format!("bad state {state:?}")))?,
            id,
            exception: exception.filter(|exception| !exception.is_empty()),
            result_read: result_read.as_deref() == Some("1"),
        };
        let mut length: u64 = redis::from_redis_value(length)?;
        let mut chunk: StreamRangeReply = redis::from_redis_value(entries)?;
        let mut cursor = base.clone().unwrap_or(OutputCursor {
            job_id: job_id.clone(),
            last_entry_id: None,
            entries: 0,
        });
        let mut lines = Vec::new();
        loop {
            let full = chunk.ids.len() == CHUNK;
            take_lines(&mut chunk, &mut cursor, &mut lines);
            if !full {
                break;
            }
            // More than one chunk is new (a first read of a long output):
            // the rest with the length of the same moment.
            let after_id = cursor.last_entry_id.clone().unwrap_or_default();
            (chunk, length) = redis::pipe()
                .atomic()
                .cmd("XRANGE")
                .arg(keys.job_output(&job_id))
                .arg(format!("({after_id}"))
                .arg("+")
                .arg("COUNT")
                .arg(CHUNK)
                .cmd("XLEN")
                .arg(keys.job_output(&job_id))
                .query_async(conn)
                .await?;
        }
        if cursor.entries != length && base.is_some() {
            // The lines read before are not (all) in the stream any more:
            // read it whole.
            tracing::warn!(
                job_id,
                read = cursor.entries,
                length,
                "output stream no longer matches what was read; reading it again"
            );
            base = None;
            continue;
        }
        return Ok(Some(JobOutput {
            job,
            cursor,
            lines,
            continued: base.is_some(),
        }));
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
        "the current job changed during every attempt to read it",
    )))
}

fn take_lines(chunk: &mut StreamRangeReply, cursor: &mut OutputCursor, lines: &mut Vec<String>) {
    for entry in &chunk.ids {
        if let Some(line) = entry.get::<String>("line") {
            lines.push(line);
        }
    }
    if let Some(last) = chunk.ids.last() {
        cursor.last_entry_id = Some(last.id.clone());
    }
    cursor.entries += chunk.ids.len() as u64;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{enqueue, EnqueueOutcome, JobCommand};
    use crate::test_support::RedisServer;

    async fn add_lines(conn: &mut crate::redis_client::RedisConnection, stream: &str, n: usize) {
        let mut pipe = redis::pipe();
        for i in 0..n {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("line")
                .arg(format!("line {i}"))
                .ignore();
        }
        pipe.query_async::<()>(conn).await.unwrap();
    }

    #[tokio::test]
    async fn a_reader_gets_only_new_entries_and_all_of_them_when_its_copy_is_stale() {
        let server = RedisServer::start();
        let mut conn = server.connection_manager().await;
        let keys = Keys::new("t");
        assert_eq!(
            read_current_output(&mut conn, &keys, None).await.unwrap(),
            None
        );

        let EnqueueOutcome::Accepted { job_id } =
            enqueue(&mut conn, &keys, JobCommand::Migrate, true, "fp")
                .await
                .unwrap()
        else {
            panic!("not accepted");
        };
        let first = read_current_output(&mut conn, &keys, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.job.id, job_id);
        assert!(!first.continued);
        assert_eq!(first.lines.len(), 1, "the queued line: {:?}", first.lines);
        assert_eq!(first.cursor.entries, 1);

        // More than two chunks at once, then nothing new.
        let stream = keys.job_output(&job_id);
        add_lines(&mut conn, &stream, 2 * CHUNK + 500).await;
        let more = read_current_output(&mut conn, &keys, Some(&first.cursor))
            .await
            .unwrap()
            .unwrap();
        assert!(more.continued);
        assert_eq!(more.lines.len(), 2 * CHUNK + 500);
        assert_eq!(more.lines[0], "line 0");
        assert_eq!(more.cursor.entries, 2 * CHUNK as u64 + 501);
        let same = read_current_output(&mut conn, &keys, Some(&more.cursor))
            .await
            .unwrap()
            .unwrap();
        assert!(same.continued && same.lines.is_empty());
        assert_eq!(same.cursor, more.cursor);

        // An entry lost: the whole stream again.
        let (ids,): (StreamRangeReply,) = redis::pipe()
            .cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(10)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: u64 = redis::cmd("XDEL")
            .arg(&stream)
            .arg(&ids.ids[5].id)
            .query_async(&mut conn)
            .await
            .unwrap();
        let again = read_current_output(&mut conn, &keys, Some(&same.cursor))
            .await
            .unwrap()
            .unwrap();
        assert!(!again.continued);
        assert_eq!(again.lines.len(), 2 * CHUNK + 500);
        assert_eq!(again.cursor.entries, 2 * CHUNK as u64 + 500);

        // A cursor of another job: the current job's whole output.
        let elsewhere = OutputCursor {
            job_id: "another".into(),
            last_entry_id: Some("1-0".into()),
            entries: 3,
        };
        let whole = read_current_output(&mut conn, &keys, Some(&elsewhere))
            .await
            .unwrap()
            .unwrap();
        assert!(!whole.continued);
        assert_eq!(whole.job.id, job_id);
        assert_eq!(whole.lines, again.lines);
    }
}
