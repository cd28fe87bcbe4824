//! The cluster-wide migration metrics (SPEC 9, `migration_*`): kept in Redis,
//! so that every api replica reports the same values at scrape time.
//!
//! Counters live in the hash `metrics` and change only inside the scripts
//! that decide what they count, in the same atomic step:
//! - `jobs:{cmd}:{result}` (result `ok`, `exception`, `abandoned`) and the
//!   duration histogram `duration:{cmd}:le:{bound}` (one bucket per job,
//!   not cumulative), `duration:{cmd}:count`, `duration:{cmd}:sum_ms`: in
//!   `job_finish.lua` (ok/exception) and `job_claim.lua` (a refused job is an
//!   exception, an abandoned one abandoned);
//! - `takeovers`: in `job_claim.lua`, at every takeover of an expired lease;
//! - `positions_migrated`, `events_migrated` (live events read): in
//!   `engine_checkpoint.lua`, with the checkpoint that makes the batch durable.
//!   Counting there rather than at job finish means a run killed mid-way is
//!   counted for what it made durable, a long run shows progress while it
//!   runs, and a takeover neither loses nor doubles a position (a resume's
//!   redone positions pay off a debt instead of counting twice).
//!
//! The gauges are read from the keys they describe: `migration_fencing_token`
//! from the lock (or, while nobody holds it, the fencing counter),
//! `migration_workers_live` from `workers`, `migration_job_running` from the
//! current job's state. This module reads them; rendering them for
//! Prometheus is the api's.

use std::collections::{BTreeMap, HashMap};

use redis::aio::ConnectionLike;
use redis::RedisResult;

use crate::jobs::JobCommand;
use crate::keys::Keys;
use crate::presence::live_worker_count;

/// Upper bounds (seconds) of the job duration histogram's buckets; a `+Inf`
/// bucket follows. Passed to the scripts, so that this is their one source.
pub const JOB_DURATION_BUCKETS_SECONDS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0, 43200.0,
];

/// The job results counted in `migration_jobs_total`.
pub const JOB_RESULTS: [&str; 3] = ["ok", "exception", "abandoned"];

/// The commands that run as jobs.
pub const JOB_COMMANDS: [JobCommand; 3] =
    [JobCommand::Migrate, JobCommand::Finalize, JobCommand::Reset];

/// The bucket bounds as the scripts take them (`ARGV`): space-separated,
/// each formatted as in the hash's field names.
pub fn duration_bounds_arg() -> String {
    JOB_DURATION_BUCKETS_SECONDS
        .iter()
        .map(|bound| bound.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One command's job durations, as Prometheus histograms are encoded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DurationHistogram {
    /// `(upper bound in seconds, jobs in this bucket only)`, ascending; the
    /// last bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Jobs observed.
    pub count: u64,
    /// Total duration, seconds.
    pub sum_seconds: f64,
}

/// Every cluster-wide figure, read at one scrape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterMetrics {
    /// `(command, result)` -> finished jobs; every command and result is present.
    pub jobs: BTreeMap<(&'static str, &'static str), u64>,
    /// command -> job durations; every command is present.
    pub durations: BTreeMap<&'static str, DurationHistogram>,
    /// Positions made durable in the migration area by checkpoints.
    pub positions_migrated: u64,
    /// Live events those positions held.
    pub events_migrated: u64,
    /// Jobs taken over after their worker's lease expired.
    pub takeovers: u64,
    /// The lock holder's fencing token; while nobody holds the lock, the last
    /// one handed out (0 before the first claim).
    pub fencing_token: u64,
    /// Workers whose presence has not expired.
    pub workers_live: u64,
    /// Whether a job is queued or running (what `progress` calls
    /// `migration_running`).
    pub job_running: bool,
}

/// Reads every cluster-wide figure: the counters and the lock in one
/// `MULTI`, then the current job's state and the live workers.
pub async fn read<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
) -> RedisResult<ClusterMetrics> {
    let (counters, held_token, counter, current): (
        HashMap<String, String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = redis::pipe()
        .atomic()
        .hgetall(keys.metrics())
        .hget(keys.lock(), "fencing_token")
        .get(keys.fencing_counter())
        .get(keys.current_job())
        .query_async(conn)
        .await?;
    let job_running = match current {
        Some(id) => {
            let state: Option<String> = redis::cmd("HGET")
                .arg(keys.job(&id))
                .arg("state")
                .query_async(conn)
                .await?;
            matches!(state.as_deref(), Some("queued" | "running"))
        }
        None => false,
    };
    let workers_live = live_worker_count(conn, keys).await?;
    let number = |value: Option<&String>| value.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let field = |name: &str| number(counters.get(name));

    let mut metrics = ClusterMetrics {
        positions_migrated: field("positions_migrated"),
        events_migrated: field("events_migrated"),
        takeovers: field("takeovers"),
        fencing_token: number(held_token.as_ref().or(counter.as_ref())),
        workers_live,
        job_running,
        ..ClusterMetrics::default()
    };
    for command in JOB_COMMANDS {
        let cmd = command.as_str();
        for result in JOB_RESULTS {
            metrics
                .jobs
                .insert((cmd, result), field(&format!("jobs:{cmd}:{result}")));
        }
        let mut buckets: Vec<(f64, u64)> = JOB_DURATION_BUCKETS_SECONDS
            .iter()
            .map(|bound| (*bound, field(&format!("duration:{cmd}:le:{bound}"))))
            .collect();
        buckets.push((f64::INFINITY, field(&format!("duration:{cmd}:le:+Inf"))));
        metrics.durations.insert(
            cmd,
            DurationHistogram {
                buckets,
                count: field(&format!("duration:{cmd}:count")),
                sum_seconds: field(&format!("duration:{cmd}:sum_ms")) as f64 / 1000.0,
            },
        );
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::jobs::lock::finish;
    use crate::jobs::{claim, enqueue, ClaimOutcome, ClaimedJob, EnqueueOutcome, MAX_TAKEOVERS};
    use crate::redis_client::RedisConnection;
    use crate::test_support::RedisServer;

    async fn setup() -> (RedisServer, RedisConnection, Keys) {
        let server = RedisServer::start();
        let conn = server.connection_manager().await;
        (server, conn, Keys::new("t"))
    }

    /// Accepts `command`, reads the result (so the next is accepted) and
    /// has `worker` claim it with `lease`.
    async fn running(
        conn: &mut RedisConnection,
        keys: &Keys,
        command: JobCommand,
        fingerprint: &str,
        lease: Duration,
    ) -> ClaimOutcome {
        if let Some(job) = crate::jobs::current_job(conn, keys).await.unwrap() {
            crate::jobs::mark_result_read(conn, keys, &job.id)
                .await
                .unwrap();
        }
        match enqueue(conn, keys, command, false, "fp").await.unwrap() {
            EnqueueOutcome::Accepted { .. } => {}
            other => panic!("expected accepted, got {other:?}"),
        }
        claim(conn, keys, "w1", fingerprint, lease, None)
            .await
            .unwrap()
    }

    fn claimed(outcome: ClaimOutcome) -> ClaimedJob {
        match outcome {
            ClaimOutcome::Claimed(job) => job,
            other => panic!("expected claimed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn finishing_counts_the_result_and_the_duration_once() {
        let (_server, mut conn, keys) = setup().await;
        let lease = Duration::from_secs(10);
        let job = claimed(running(&mut conn, &keys, JobCommand::Migrate, "fp", lease).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
        finish(&mut conn, &keys, &job.job_id, job.fencing_token, None)
            .await
            .unwrap();
        // a second finish is fenced: counted nothing
        assert!(
            finish(&mut conn, &keys, &job.job_id, job.fencing_token, None)
                .await
                .is_err()
        );
        let job = claimed(running(&mut conn, &keys, JobCommand::Reset, "fp", lease).await);
        let last_token = job.fencing_token;
        finish(
            &mut conn,
            &keys,
            &job.job_id,
            job.fencing_token,
            Some("boom"),
        )
        .await
        .unwrap();

        let metrics = read(&mut conn, &keys).await.unwrap();
        assert_eq!(metrics.jobs[&("migrate", "ok")], 1);
        assert_eq!(metrics.jobs[&("reset", "exception")], 1);
        assert_eq!(metrics.jobs.values().sum::<u64>(), 2);
        let migrate = &metrics.durations["migrate"];
        assert_eq!(migrate.count, 1);
        assert!(migrate.sum_seconds >= 0.15, "{migrate:?}");
        // at least 150 ms: not in the 0.1 s bucket, in exactly one bucket
        assert_eq!(migrate.buckets[0], (0.1, 0));
        assert_eq!(migrate.buckets.iter().map(|(_, n)| n).sum::<u64>(), 1);
        assert_eq!(metrics.durations["reset"].count, 1);
        assert_eq!(metrics.durations["finalize"].count, 0);
        // the lock is free: the last token handed out
        assert_eq!(metrics.fencing_token, last_token);
        assert!(!metrics.job_running);
    }

    #[tokio::test]
    async fn takeovers_refusals_and_abandoned_jobs_are_counted_by_the_claim() {
        let (_server, mut conn, keys) = setup().await;
        let short = Duration::from_millis(60);
        let mut holder =
            claimed(running(&mut conn, &keys, JobCommand::Finalize, "fp", short).await);
        for _ in 1..=MAX_TAKEOVERS {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let next = claimed(
                claim(&mut conn, &keys, "w2", "fp", short, None)
                    .await
                    .unwrap(),
            );
            let metrics = read(&mut conn, &keys).await.unwrap();
            assert!(metrics.job_running);
            // the holder's token, above the one before
            assert_eq!(metrics.fencing_token, next.fencing_token);
            assert!(next.fencing_token > holder.fencing_token);
            holder = next;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(matches!(
            claim(&mut conn, &keys, "w3", "fp", short, None)
                .await
                .unwrap(),
            ClaimOutcome::Abandoned { .. }
        ));
        assert!(matches!(
            running(&mut conn, &keys, JobCommand::Migrate, "other-fp", short).await,
            ClaimOutcome::Refused { .. }
        ));

        let metrics = read(&mut conn, &keys).await.unwrap();
        assert_eq!(metrics.takeovers, u64::from(MAX_TAKEOVERS));
        assert_eq!(metrics.jobs[&("finalize", "abandoned")], 1);
        assert_eq!(metrics.jobs[&("migrate", "exception")], 1);
        assert_eq!(metrics.jobs.values().sum::<u64>(), 2);
        assert_eq!(metrics.durations["finalize"].count, 1);
        assert_eq!(metrics.durations["migrate"].count, 1);
        assert!(!metrics.job_running);
        // no claim since the last takeover's
        assert_eq!(metrics.fencing_token, holder.fencing_token);
    }

    #[test]
    fn bounds_are_ascending_and_formatted_as_the_field_names() {
        assert!(JOB_DURATION_BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
        let arg = duration_bounds_arg();
        assert!(arg.starts_with("0.1 0.5 1 5 15 60"), "{arg}");
    }
}
