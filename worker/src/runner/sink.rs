//! The engine's [`OutputSink`] into the job's Redis stream: batched, ordered
//! and fenced.
//!
//! `line` only queues the line (a bounded channel, so a slow Redis slows the
//! engine down instead of growing memory); one writer task drains the queue
//! and appends everything queued so far with one `output_append.lua` call.
//! So the engine never waits for a round trip per line, lines reach Redis in
//! order and promptly, and while one append is in flight the next batch
//! gathers. The script checks the fencing token: a worker that lost the lock
//! writes nothing more, and `line` then fails with [`EngineError::Fenced`].
//! A Redis failure is retried (the script skips lines a lost reply already
//! wrote) until the lease is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use migration_shared::jobs::lock::{self, LeaseError};
use migration_shared::keys::Keys;
use migration_shared::redis_client::RedisConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::{EngineError, OutputSink};

/// Lines queued before `line` waits for the writer.
const QUEUE: usize = 1024;
/// Most lines per append call.
const BATCH: usize = 256;

/// How the writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkOutcome {
    /// Every line was written.
    Written,
    /// The lock holds another token: lines were dropped.
    Fenced,
    /// The lease was lost while Redis failed: lines were dropped.
    LeaseLost,
}

/// Output lines of one job run, written to `job:{id}:output`.
pub struct RedisOutputSink {
    sender: Option<mpsc::Sender<String>>,
    fenced: Arc<AtomicBool>,
    writer: JoinHandle<SinkOutcome>,
}

impl RedisOutputSink {
    /// Starts the writer for job `job_id`, held with `fencing_token`;
    /// `output_lines` is the stream's line count at claim time. The writer
    /// gives up retrying when `lease_lost` is cancelled.
    pub fn start(
        conn: RedisConnection,
        keys: Keys,
        job_id: String,
        fencing_token: u64,
        output_lines: u64,
        lease_lost: CancellationToken,
    ) -> RedisOutputSink {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let fenced = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_lines(
            Writer {
                conn,
                keys,
                job_id,
                fencing_token,
                written: output_lines,
                fenced: fenced.clone(),
                lease_lost,
            },
            receiver,
        ));
        RedisOutputSink {
            sender: Some(sender),
            fenced,
            writer,
        }
    }

    /// Whether the writer found the lock holding another token.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Writes what is still queued and stops the writer.
    pub async fn close(mut self) -> SinkOutcome {
        self.sender = None;
        match (&mut self.writer).await {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::error!(error = %err, "output writer task failed");
                SinkOutcome::LeaseLost
            }
        }
    }
}

impl OutputSink for RedisOutputSink {
    async fn line(&mut self, line: String) -> Result<(), EngineError> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(EngineError::Fenced);
        }
        let sender = self.sender.as_ref().ok_or(EngineError::Fenced)?;
        // The writer only stops early when fenced or the lease is lost.
        sender.send(line).await.map_err(|_| EngineError::Fenced)
    }
}

struct Writer {
    conn: RedisConnection,
    keys: Keys,
    job_id: String,
    fencing_token: u64,
    /// Lines in the stream, as far as this writer knows.
    written: u64,
    fenced: Arc<AtomicBool>,
    lease_lost: CancellationToken,
}

async fn write_lines(mut writer: Writer, mut receiver: mpsc::Receiver<String>) -> SinkOutcome {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = receiver.recv().await {
        batch.clear();
        batch.push(first);
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        if let Err(outcome) = writer.append(&batch).await {
            return outcome;
        }
    }
    SinkOutcome::Written
}

impl Writer {
    async fn append(&mut self, batch: &[String]) -> Result<(), SinkOutcome> {
        let mut delay = Duration::from_millis(50);
        loop {
            let call = lock::append_output(
                &mut self.conn,
                &self.keys,
                &self.job_id,
                self.fencing_token,
                self.written,
                batch,
            );
            // A call hanging on an unreachable Redis must not keep the job
            // alive once the lease is gone (the fence refuses it anyway).
            let result = tokio::select! {
                result = call => result,
                _ = self.lease_lost.cancelled() => return Err(SinkOutcome::LeaseLost),
            };
            match result {
                Ok(written) => {
                    self.written = written;
                    return Ok(());
                }
                Err(LeaseError::Fenced) => {
                    self.fenced.store(true, Ordering::Release);
                    tracing::warn!(job_id = %self.job_id, "output refused: the lock is no longer ours");
                    return Err(SinkOutcome::Fenced);
                }
                Err(LeaseError::Redis(err)) => {
                    tracing::warn!(job_id = %self.job_id, error = %err, "writing output failed; retrying");
                    tokio::select! {
                        _ = self.lease_lost.cancelled() => return Err(SinkOutcome::LeaseLost),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
