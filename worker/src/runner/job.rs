//! Running one claimed job: the engine under a renewed lease, then finish,
//! hand back, or let go (SPEC 7).
//!
//! How a run ends decides the job's fate:
//! - the command succeeded or failed (`EngineError::Failed`): `job_finish.lua`
//!   with the exception, fenced;
//! - shutdown (`EngineError::Cancelled` while the lease holds): the engine
//!   stopped at a durable point; `job_hand_back.lua` queues the job again so
//!   another worker continues at once;
//! - the lease was lost or the writes were fenced: write nothing more;
//! - Redis failed: stop renewing and let the lease expire, so the job is
//!   taken over (counted, and abandoned after too many). Handing it back
//!   would not be counted and could loop forever on a persistent failure.

use std::time::Duration;

use migration_shared::jobs::lock::{self, LeaseError};
use migration_shared::jobs::{ClaimedJob, JobCommand};
use migration_shared::redis_client::RedisConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::keep_renewed;
use super::sink::{RedisOutputSink, SinkOutcome};
use super::WorkerSettings;
use crate::engine::{Command, Engine, EngineError, EngineOptions, Fence};

/// Runs `job` to its end. Returns false when Redis failed under it (the
/// caller pauses before claiming again).
pub(super) async fn run_claimed(
    settings: &WorkerSettings,
    conn: &RedisConnection,
    worker_id: &str,
    job: ClaimedJob,
    claimed_at: Instant,
    shutdown: &CancellationToken,
) -> bool {
    let lease_lost = CancellationToken::new();
    let lease_done = CancellationToken::new();
    let lease_task = tokio::spawn(keep_renewed(
        conn.clone(),
        settings.keys.clone(),
        job.fencing_token,
        settings.lease,
        claimed_at,
        lease_done.clone(),
        lease_lost.clone(),
    ));
    // The engine stops on shutdown and, at once, when the lease is lost.
    let engine_cancel = CancellationToken::new();
    let cancel_forwarder = {
        let engine_cancel = engine_cancel.clone();
        let shutdown = shutdown.clone();
        let lease_lost = lease_lost.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = lease_lost.cancelled() => {}
            }
            engine_cancel.cancel();
        })
    };

    let mut sink = RedisOutputSink::start(
        conn.clone(),
        settings.keys.clone(),
        job.job_id.clone(),
        job.fencing_token,
        job.output_lines,
        lease_lost.clone(),
    );
    let engine = Engine::new(
        conn.clone(),
        settings.keys.clone(),
        settings.registry.clone(),
        Fence {
            token: job.fencing_token,
        },
        EngineOptions {
            verbose: job.verbose,
            max_positions_per_second: settings.max_positions_per_second,
        },
        engine_cancel.clone(),
    );
    let result = engine.run(engine_command(job.command), &mut sink).await;
    let sink_outcome = sink.close().await;

    let mut redis_failed = false;
    let lost = lease_lost.is_cancelled() || sink_outcome != SinkOutcome::Written;
    match result {
        _ if lost => {
            tracing::warn!(job_id = %job.job_id, "lost the job's lease; it is someone else's now");
        }
        Ok(()) => settle(conn, settings, &job, &lease_lost, Settle::Finish(None)).await,
        Err(EngineError::Failed(exception)) => {
            tracing::info!(job_id = %job.job_id, exception = %exception, "command failed");
            settle(
                conn,
                settings,
                &job,
                &lease_lost,
                Settle::Finish(Some(&exception)),
            )
            .await
        }
        Err(EngineError::Cancelled) => {
            let line = format!(
                "Worker {worker_id} is shutting down: job handed back at a durable point, another worker continues"
            );
            settle(conn, settings, &job, &lease_lost, Settle::HandBack(&line)).await
        }
        Err(EngineError::Fenced) => {
            tracing::warn!(job_id = %job.job_id, "fenced out: the lock is someone else's now");
        }
        Err(EngineError::Redis(err)) => {
            tracing::warn!(job_id = %job.job_id, error = %err,
                "Redis failed during the job; letting the lease expire so it is taken over");
            redis_failed = true;
        }
    }

    lease_done.cancel();
    cancel_forwarder.abort();
    let _ = lease_task.await;
    !redis_failed
}

enum Settle<'a> {
    Finish(Option<&'a str>),
    HandBack(&'a str),
}

/// Finishes or hands back the job, retrying Redis failures while the lease
/// holds. A retry refused as fenced after a failed attempt most likely means
/// the first attempt did apply (its reply was lost).
async fn settle(
    conn: &RedisConnection,
    settings: &WorkerSettings,
    job: &ClaimedJob,
    lease_lost: &CancellationToken,
    how: Settle<'_>,
) {
    let mut conn = conn.clone();
    let mut delay = Duration::from_millis(50);
    let mut retried = false;
    loop {
        let result = match how {
            Settle::Finish(exception) => {
                lock::finish(
                    &mut conn,
                    &settings.keys,
                    &job.job_id,
                    job.fencing_token,
                    exception,
                )
                .await
            }
            Settle::HandBack(line) => {
                lock::hand_back(
                    &mut conn,
                    &settings.keys,
                    &job.job_id,
                    job.fencing_token,
                    line,
                )
                .await
            }
        };
        match result {
            Ok(()) => {
                match how {
                    Settle::Finish(_) => tracing::info!(job_id = %job.job_id, "job finished"),
                    Settle::HandBack(_) => tracing::info!(job_id = %job.job_id, "job handed back"),
                }
                return;
            }
            Err(LeaseError::Fenced) if retried => {
                tracing::info!(job_id = %job.job_id, "settled by an earlier attempt whose reply was lost, or the lease was lost");
                return;
            }
            Err(LeaseError::Fenced) => {
                tracing::warn!(job_id = %job.job_id, "cannot settle the job: the lock is no longer ours");
                return;
            }
            Err(LeaseError::Redis(err)) => {
                tracing::warn!(job_id = %job.job_id, error = %err, "settling the job failed; retrying");
                retried = true;
                tokio::select! {
                    _ = lease_lost.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn engine_command(command: JobCommand) -> Command {
    match command {
        JobCommand::Migrate => Command::Migrate,
        JobCommand::Finalize => Command::Finalize,
        JobCommand::Reset => Command::Reset,
    }
}
