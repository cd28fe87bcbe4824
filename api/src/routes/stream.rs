//! `GET /internal/migrations/stream`: the current job's output as
//! Server-Sent Events (SPEC 9).
//!
//! One `event: line` per output line (`id:` the Redis stream entry id,
//! `data:` the line), an `event: progress` whenever the job's structured
//! progress changes (`data:` the [`MigrationProgress`] JSON, no `id:`), then one
//! `event: result` whose data is the final `progress` answer, and the
//! stream ends. No current job: one `event: result` at once. A client that
//! reconnects with `Last-Event-ID` gets the lines after that entry.
//!
//! Everything is read from Redis, so any replica serves any job, also across
//! a worker takeover (the new worker appends to the same stream). Each open
//! stream blocks with `XREAD BLOCK` on a connection of its own, never on the
//! shared one; [`StreamSlots`] caps how many are open at once (`503` past
//! the cap), since each holds a connection and a task. Redis failures while
//! streaming are retried on a fresh connection (the client only sees
//! keep-alive comments meanwhile); shutdown of the api ends every stream
//! without a result, and the client resumes on another replica.
//!
//! This route is deliberately without a request timeout: a migration may run
//! for hours.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use migration_shared::jobs::{self, JobRecord, JobState, MigrationProgress};
use migration_shared::redis_client::{self, BlockingConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use serde_json::Value;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::migrations::progress_answer;
use crate::error::ApiError;
use crate::state::AppState;

/// How long one `XREAD` blocks: also how late a progress change (which
/// appends no entry) is sent at worst, and how soon a closed client is
/// noticed.
const BLOCK: Duration = Duration::from_millis(1000);
/// Entries per read.
const COUNT: usize = 500;
/// How often a comment keeps idle connections (and proxies) open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Events buffered for a slow client before the reader waits for it.
const BUFFER: usize = 256;

/// The cap on concurrent streams of one replica (`MIGRATION_STREAM_MAX_CLIENTS`).
#[derive(Clone)]
pub struct StreamSlots {
    slots: Arc<Semaphore>,
    max: usize,
}

impl StreamSlots {
    /// At most `max` streams at once.
    pub fn new(max: usize) -> StreamSlots {
        StreamSlots {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    fn take(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::Unavailable(format!(
                "too many output streams are open on this replica (MIGRATION_STREAM_MAX_CLIENTS = {}); retry later or poll 'progress'",
                self.max
            ))
        })
    }
}

/// The handler: checks the cap, `Last-Event-ID` and Redis, then streams.
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = state.stream_slots.take()?;
    let resume_after = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(parse_entry_id(value.to_str().unwrap_or("")).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Last-Event-ID must be an output stream entry id like 1700000000000-0, got {value:?}"
            ))
        })?),
    };
    // Both before the response starts, so an unreachable Redis is a 503.
    let mut conn = state.redis.clone();
    let job = jobs::current_job(&mut conn, &state.keys).await?;
    let blocking = redis_client::dedicated_connection(&state.config.redis_url).await?;

    let (sender, receiver) = mpsc::channel(BUFFER);
    let follower = Follower {
        state,
        sender,
        blocking: Some(blocking),
        last_id: resume_after.unwrap_or_else(|| "0-0".to_string()),
        progress_sent: None,
    };
    tokio::spawn(follower.run(job, permit));
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        Some((Ok(event), receiver))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// `<ms>-<seq>`, both decimal: what XADD `*` produces.
fn parse_entry_id(text: &str) -> Option<String> {
    let (ms, seq) = text.trim().split_once('-')?;
    let ms: u64 = ms.parse().ok()?;
    let seq: u64 = seq.parse().ok()?;
    Some(format!("{ms}-{seq}"))
}

/// The client went away or the api is shutting down: stop quietly.
struct Gone;

/// The task behind one open stream.
struct Follower {
    state: AppState,
    sender: mpsc::Sender<Event>,
    /// The dedicated connection for `XREAD BLOCK`; reopened after a failure.
    blocking: Option<BlockingConnection>,
    /// The last entry sent (or skipped, for control entries).
    last_id: String,
    /// `updated_at` of the last progress sent.
    progress_sent: Option<u64>,
}

impl Follower {
    async fn run(mut self, job: Option<JobRecord>, _permit: OwnedSemaphorePermit) {
        let shutdown = self.state.shutdown.clone();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.follow(job) => {}
        }
    }

    async fn follow(&mut self, job: Option<JobRecord>) -> Result<(), Gone> {
        let Some(job) = job else {
            let answer = self.retrying(progress_answer).await?;
            return self.send_result(answer).await;
        };
        let job_id = job.id.clone();
        let mut record = Some(job);
        // A job finished before the stream opened needs no waiting; a
        // running one first gets the lines it has, then its progress.
        let mut wait = record.as_ref().map(|job| job.state) != Some(JobState::Finished);
        loop {
            if wait {
                self.wait_for_entries(&job_id).await?;
                record = self
                    .retrying(|state| {
                        let job_id = job_id.clone();
                        async move {
                            let mut conn = state.redis.clone();
                            jobs::job(&mut conn, &state.keys, &job_id).await
                        }
                    })
                    .await?;
            }
            wait = true;
            let Some(job) = record.take() else {
                // Replaced by a newer command: its job is not this one.
                let answer = self.retrying(progress_answer).await?;
                return self.send_result(answer).await;
            };
            if job.state == JobState::Finished {
                // Lines are never appended after the finish: what is in the
                // stream now is all of them.
                self.drain(&job_id).await?;
                self.send_progress(job.progress).await?;
                // The `progress` answer: this job's final result while it
                // is current (as it is unless a newer command was accepted).
                let answer = self.retrying(progress_answer).await?;
                return self.send_result(answer).await;
            }
            self.send_progress(job.progress).await?;
        }
    }

    /// Sends what the stream holds after `last_id`, blocking up to
    /// [`BLOCK`] when there is nothing yet.
    async fn wait_for_entries(&mut self, job_id: &str) -> Result<(), Gone> {
        let stream = self.state.keys.job_output(job_id);
        let conn = match self.blocking.as_mut() {
            Some(conn) => conn,
            None => match redis_client::dedicated_connection(&self.state.config.redis_url).await {
                Ok(conn) => self.blocking.insert(conn),
                Err(err) => {
                    tracing::warn!(error = %err, "output stream: cannot reconnect; retrying");
                    return self.pause().await;
                }
            },
        };
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&self.last_id);
        let read = command.query_async::<Option<StreamReadReply>>(conn);
        // BLOCK bounds the wait; this bounds a hung connection.
        let result = tokio::select! {
            _ = self.sender.closed() => return Err(Gone),
            result = tokio::time::timeout(BLOCK + Duration::from_secs(5), read) => result,
        };
        match result {
            Ok(Ok(reply)) => {
                let entries = reply
                    .into_iter()
                    .flat_map(|reply| reply.keys)
                    .flat_map(|key| key.ids);
                for entry in entries {
                    self.send_entry(entry).await?;
                }
                Ok(())
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "output stream: XREAD failed; reconnecting");
                self.blocking = None;
                self.pause().await
            }
            Err(_) => {
                self.blocking = None;
                Ok(())
            }
        }
    }

    /// Sends every entry after `last_id` (no blocking), in chunks.
    async fn drain(&mut self, job_id: &str) -> Result<(), Gone> {
        let stream = self.state.keys.job_output(job_id);
        loop {
            let start = format!("({}", self.last_id);
            let reply = self
                .retrying(|state| {
                    let (stream, start) = (stream.clone(), start.clone());
                    async move {
                        let mut conn = state.redis.clone();
                        redis::cmd("XRANGE")
                            .arg(&stream)
                            .arg(&start)
                            .arg("+")
                            .arg("COUNT")
                            .arg(COUNT)
                            .query_async::<StreamRangeReply>(&mut conn)
                            .await
                    }
                })
                .await?;
            let count = reply.ids.len();
            for entry in reply.ids {
                self.send_entry(entry).await?;
            }
            if count < COUNT {
                return Ok(());
            }
        }
    }

    async fn send_entry(&mut self, entry: StreamId) -> Result<(), Gone> {
        self.last_id = entry.id.clone();
        // Control entries (field `control`) only wake readers.
        let Some(line) = entry.get::<String>("line") else {
            return Ok(());
        };
        // An SSE data field cannot hold a carriage return; output lines
        // never contain one, but a hand-written entry might.
        let line = line.replace('\r', " ");
        self.send(Event::default().event("line").id(entry.id).data(line))
            .await
    }

    async fn send_progress(&mut self, progress: Option<MigrationProgress>) -> Result<(), Gone> {
        let Some(progress) = progress else {
            return Ok(());
        };
        if self.progress_sent == Some(progress.updated_at) {
            return Ok(());
        }
        self.progress_sent = Some(progress.updated_at);
        let data = serde_json::to_string(&progress).unwrap_or_default();
        self.send(Event::default().event("progress").data(data))
            .await
    }

    async fn send_result(&mut self, answer: Value) -> Result<(), Gone> {
        self.send(Event::default().event("result").data(answer.to_string()))
            .await
    }

    async fn send(&mut self, event: Event) -> Result<(), Gone> {
        self.sender.send(event).await.map_err(|_| Gone)
    }

    /// Runs a Redis read until it succeeds (Redis restarts, failovers),
    /// unless the client leaves meanwhile.
    async fn retrying<T, E, F, Fut>(&mut self, mut read: F) -> Result<T, Gone>
    where
        F: FnMut(AppState) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        loop {
            match read(self.state.clone()).await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    tracing::warn!(error = %err, "output stream: reading Redis failed; retrying");
                    self.pause().await?;
                }
            }
        }
    }

    async fn pause(&mut self) -> Result<(), Gone> {
        tokio::select! {
            _ = self.sender.closed() => Err(Gone),
            _ = tokio::time::sleep(Duration::from_millis(500)) => Ok(()),
        }
    }
}
