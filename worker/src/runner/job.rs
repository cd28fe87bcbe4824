//! Running one claimed job: the engine under a renewed lease, then finish,
//! hand back, resume, or let go (SPEC 7 and 7.1).
//!
//! How a run ends decides the job's fate:
//! - the command succeeded or failed (`EngineError::Failed`): `job_finish.lua`
//!   with the exception, fenced;
//! - shutdown (`EngineError::Cancelled` while the lease holds): the engine
//!   stopped at a durable point; `job_hand_back.lua` queues the job again so
//!   another worker continues at once;
//! - Redis failed while the lease still holds (a restart, a failover, a
//!   dropped connection shorter than the lease): the engine runs again on
//!   the same lease, from the durable progress. Nothing is counted;
//! - the lease can no longer be trusted (a renewal was refused, Redis was
//!   unreachable for most of a lease) or a write was fenced: the job's work
//!   stops at once and the caller claims again with the job as the one to
//!   *resume*, until the lease as we last extended it would have run out.
//!   `job_claim.lua` alone decides whether it is still ours (the lock is
//!   free or our own, the job still runs under our id: resumed with a new
//!   token, not a takeover) or someone else's (then we write nothing more).
//!   After the lease ran out (an outage longer than the lease) a claim is an
//!   ordinary one: a takeover, counted, whoever makes it;
//! - Redis refused the job's writes for another reason (a script error, OOM)
//!   again and again, or runs keep failing on one lease: stop renewing and
//!   let the lease expire, so the job is taken over, counted, and abandoned
//!   after too many. Resuming it ourselves would not be counted and could
//!   loop forever on a persistent failure.

use std::time::Duration;

use migration_shared::jobs::lock::{self, LeaseError};
use migration_shared::jobs::{ClaimedJob, JobCommand};
use migration_shared::scripts::STALE;
use redis::RetryMethod;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::keep_renewed;
use super::sink::{RedisOutputSink, SinkOutcome};
use super::{Connections, WorkerSettings};
use crate::engine::{Command, Engine, EngineError, EngineOptions, Fence};

/// How many times in a row the engine may fail with a Redis error that is
/// not about the connection (a script error, OOM, a STALE that kept
/// repeating) before the worker lets the lease expire.
const REFUSED_RUNS: u32 = 3;
/// How many engine runs of one hold may fail with connection trouble
/// before the worker lets the lease expire: a Redis that restarts now and
/// then costs a run each time, but one whose connection fails every run
/// (a checkpoint that always times out) must not keep the job forever
/// without the takeover count noticing.
const FAILED_RUNS_PER_HOLD: u32 = 100;

/// How holding one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RunEnd {
    /// Finished, handed back, or clearly someone else's now.
    Settled,
    /// The lease could not be trusted or a write was fenced: claim again,
    /// resuming this job if it is still ours, until `resume_until`: when the
    /// lease, as this worker last extended it, ran out. After that the
    /// lease expired and any claim, this worker's too, is a takeover (an
    /// outage longer than the lease is a dead worker to the cluster).
    LostTouch {
        /// Until when a claim may resume the job as this worker's own.
        resume_until: Instant,
    },
    /// Redis keeps refusing the job's writes: the lease is left to expire.
    GaveUp,
}

/// Runs `job` to its end (see the module doc for how it can end).
pub(super) async fn run_claimed(
    settings: &WorkerSettings,
    conns: &Connections,
    worker_id: &str,
    job: ClaimedJob,
    claimed_at: Instant,
    shutdown: &CancellationToken,
) -> RunEnd {
    let lease_lost = CancellationToken::new();
    let lease_done = CancellationToken::new();
    // Renewal has a connection of its own: a big checkpoint or reply on the
    // engine's never delays it (SPEC 7.1).
    let lease_task = tokio::spawn(keep_renewed(
        conns.control.clone(),
        settings.keys.clone(),
        job.fencing_token,
        settings.lease,
        claimed_at,
        lease_done.clone(),
        lease_lost.clone(),
    ));
    let mut sink = RedisOutputSink::start(
        conns.engine.clone(),
        settings.keys.clone(),
        job.job_id.clone(),
        job.fencing_token,
        job.output_lines,
        lease_lost.clone(),
    );

    let hold = run_engine_until_settled(
        settings,
        conns,
        worker_id,
        &job,
        &lease_lost,
        shutdown,
        &mut sink,
    )
    .await;
    let end = match hold {
        Hold::Done(result) => {
            let sink_outcome = sink.close().await;
            conclude(
                settings,
                conns,
                worker_id,
                &job,
                &lease_lost,
                result,
                sink_outcome,
            )
            .await
        }
        Hold::LostTouch => {
            // This run is over: queued lines are dropped (a resumed run
            // writes its own).
            lease_lost.cancel();
            sink.close().await;
            Ended::LostTouch
        }
        Hold::GaveUp => {
            // Stop renewing, and drop what is queued: the lease runs out.
            lease_done.cancel();
            lease_lost.cancel();
            sink.close().await;
            Ended::GaveUp
        }
    };

    lease_done.cancel();
    let last_renewed = lease_task.await.unwrap_or(claimed_at);
    match end {
        Ended::Settled => RunEnd::Settled,
        Ended::LostTouch => RunEnd::LostTouch {
            resume_until: last_renewed + settings.lease,
        },
        Ended::GaveUp => RunEnd::GaveUp,
    }
}

/// [`RunEnd`] before the lease task said when the lease runs out.
enum Ended {
    Settled,
    LostTouch,
    GaveUp,
}

/// What the engine runs of one hold came to.
enum Hold {
    /// The engine ended the command (or was cancelled for shutdown).
    Done(Result<(), EngineError>),
    /// The lease is no longer trusted, or a write was fenced.
    LostTouch,
    /// Redis refused the job's writes [`REFUSED_RUNS`] times in a row, or
    /// [`FAILED_RUNS_PER_HOLD`] runs failed.
    GaveUp,
}

/// Runs the engine, and again after every Redis failure while the lease
/// holds, until it ends the command, is cancelled, or the lease is lost.
async fn run_engine_until_settled(
    settings: &WorkerSettings,
    conns: &Connections,
    worker_id: &str,
    job: &ClaimedJob,
    lease_lost: &CancellationToken,
    shutdown: &CancellationToken,
    sink: &mut RedisOutputSink,
) -> Hold {
    let mut delay = Duration::from_millis(50);
    let max_delay = (settings.lease / 4).max(Duration::from_millis(50));
    let mut refused_runs = 0;
    let mut failed_runs = 0;
    loop {
        let result = run_engine_once(settings, conns, job, lease_lost, shutdown, sink).await;
        if lease_lost.is_cancelled() || sink.is_fenced() {
            return Hold::LostTouch;
        }
        let err = match result {
            Err(EngineError::Fenced) => return Hold::LostTouch,
            Err(EngineError::Redis(err)) => err,
            done => return Hold::Done(done),
        };
        failed_runs += 1;
        if failed_runs >= FAILED_RUNS_PER_HOLD {
            tracing::warn!(job_id = %job.job_id, error = %err, failed_runs,
                "the job's runs keep failing; letting the lease expire so it is taken over");
            return Hold::GaveUp;
        }
        if is_connection_trouble(&err) {
            refused_runs = 0;
        } else {
            refused_runs += 1;
            if refused_runs >= REFUSED_RUNS {
                tracing::warn!(job_id = %job.job_id, error = %err,
                    "Redis keeps refusing the job's writes; letting the lease expire so it is taken over");
                return Hold::GaveUp;
            }
        }
        tracing::warn!(job_id = %job.job_id, error = %err, retry_in_ms = delay.as_millis() as u64,
            "Redis failed during the job; continuing on the same lease from the durable progress");
        // Tell the operator why the engine's lines start over.
        let _ = crate::engine::OutputSink::line(
            sink,
            format!(
                "Worker {worker_id}: Redis failed ({err}); continuing from the durable progress"
            ),
        )
        .await;
        tokio::select! {
            _ = lease_lost.cancelled() => return Hold::LostTouch,
            _ = shutdown.cancelled() => return Hold::Done(Err(EngineError::Cancelled)),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(max_delay);
    }
}

/// One engine run, cancelled at once by shutdown or a lost lease.
async fn run_engine_once(
    settings: &WorkerSettings,
    conns: &Connections,
    job: &ClaimedJob,
    lease_lost: &CancellationToken,
    shutdown: &CancellationToken,
    sink: &mut RedisOutputSink,
) -> Result<(), EngineError> {
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
    let engine = Engine::new(
        conns.engine.clone(),
        settings.keys.clone(),
        settings.registry.clone(),
        Fence {
            token: job.fencing_token,
        },
        EngineOptions {
            verbose: job.verbose,
            max_positions_per_second: settings.max_positions_per_second,
        },
        engine_cancel,
    )
    .with_keyframe_cache_models(settings.keyframe_cache_models);
    let result = engine.run(engine_command(job.command), sink).await;
    cancel_forwarder.abort();
    result
}

/// A failure of the connection or of Redis's availability (restart,
/// failover, loading, timeout), as opposed to Redis refusing the command.
fn is_connection_trouble(err: &redis::RedisError) -> bool {
    if err.code() == Some(STALE) {
        return false;
    }
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || !matches!(err.retry_method(), RetryMethod::NoRetry)
}

/// The engine ended the command or stopped for shutdown: finish or hand back.
async fn conclude(
    settings: &WorkerSettings,
    conns: &Connections,
    worker_id: &str,
    job: &ClaimedJob,
    lease_lost: &CancellationToken,
    result: Result<(), EngineError>,
    sink_outcome: SinkOutcome,
) -> Ended {
    if lease_lost.is_cancelled() || sink_outcome != SinkOutcome::Written {
        return Ended::LostTouch;
    }
    match result {
        Ok(()) => settle(conns, settings, job, lease_lost, Settle::Finish(None)).await,
        Err(EngineError::Failed(exception)) => {
            tracing::info!(job_id = %job.job_id, exception = %exception, "command failed");
            settle(
                conns,
                settings,
                job,
                lease_lost,
                Settle::Finish(Some(&exception)),
            )
            .await
        }
        Err(EngineError::Cancelled) => {
            let line = format!(
                "Worker {worker_id} is shutting down: job handed back at a durable point, another worker continues"
            );
            settle(conns, settings, job, lease_lost, Settle::HandBack(&line)).await
        }
        // Sorted out before: a fenced run or a Redis failure never concludes.
        Err(EngineError::Fenced) | Err(EngineError::Redis(_)) => Ended::LostTouch,
    }
}

enum Settle<'a> {
    Finish(Option<&'a str>),
    HandBack(&'a str),
}

/// Finishes or hands back the job, retrying Redis failures while the lease
/// holds. A retry refused as fenced after a failed attempt most likely means
/// the first attempt did apply (its reply was lost); a first attempt refused
/// as fenced, or a lease lost while retrying, leaves the question to the
/// next claim (resume or not).
async fn settle(
    conns: &Connections,
    settings: &WorkerSettings,
    job: &ClaimedJob,
    lease_lost: &CancellationToken,
    how: Settle<'_>,
) -> Ended {
    let mut conn = conns.engine.clone();
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
                return Ended::Settled;
            }
            Err(LeaseError::Fenced) if retried => {
                tracing::info!(job_id = %job.job_id, "settled by an earlier attempt whose reply was lost, or the lease was lost");
                return Ended::LostTouch;
            }
            Err(LeaseError::Fenced) => {
                tracing::warn!(job_id = %job.job_id, "cannot settle the job: the lock is no longer ours");
                return Ended::LostTouch;
            }
            Err(LeaseError::Redis(err)) => {
                tracing::warn!(job_id = %job.job_id, error = %err, "settling the job failed; retrying");
                retried = true;
                tokio::select! {
                    _ = lease_lost.cancelled() => return Ended::LostTouch,
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
