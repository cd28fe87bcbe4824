//! Structured progress of the running job: the `progress_*` fields of the
//! job hash (SPEC 9: the numbers behind the progress bar).
//!
//! The engine reports a [`ProgressUpdate`] whenever a checkpoint lands; the
//! worker's output sink writes it with `job_record_progress.lua`, fenced like every
//! job write, so only the lock holder moves the numbers. Every reader (the
//! `progress` answer, the output stream, `migrationctl`, the metrics) reads
//! the same fields through [`MigrationProgress`]; none computes its own figures.
//! The rates are computed inside the script by Redis's clock over the
//! current run (since the last claim), so a takeover restarts the rate but
//! not the counts, which are absolute (earlier runs included).
//!
//! What is not here: the output lines (they are the stream's), and the
//! durable migration state (`stats` reads it from the migration area).

use std::collections::HashMap;

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

use super::lock::LeaseError;
use crate::keys::Keys;
use crate::scripts;

/// Field names of the job hash (documented in `docs/redis-keys.md`).
pub mod fields {
    /// Positions of the snapshot migrated so far, earlier runs included.
    pub const POSITIONS_DONE: &str = "progress_positions_done";
    /// Positions of the snapshot the command migrates.
    pub const POSITIONS_TOTAL: &str = "progress_positions_total";
    /// Events of the snapshot migrated so far, earlier runs included.
    pub const EVENTS_DONE: &str = "progress_events_done";
    /// Events of the snapshot.
    pub const EVENTS_TOTAL: &str = "progress_events_total";
    /// When the current run began counting (ms since the epoch, Redis time).
    pub const STARTED_AT: &str = "progress_started_at";
    /// When the numbers were last written (ms since the epoch, Redis time).
    pub const UPDATED_AT: &str = "progress_updated_at";
    /// Positions per second over the current run.
    pub const POSITIONS_PER_SECOND: &str = "progress_positions_per_second";
    /// Events per second over the current run.
    pub const EVENTS_PER_SECOND: &str = "progress_events_per_second";
    /// The fencing token of the run that wrote them (a new run restarts
    /// `progress_started_at`).
    pub const FENCING_TOKEN: &str = "progress_fencing_token";
}

/// The fields of [`MigrationProgress`], in the order `job_progress.lua`
/// (the api's read for `progress`) reads them.
pub const READ_FIELDS: [&str; 8] = [
    fields::POSITIONS_DONE,
    fields::POSITIONS_TOTAL,
    fields::EVENTS_DONE,
    fields::EVENTS_TOTAL,
    fields::STARTED_AT,
    fields::UPDATED_AT,
    fields::POSITIONS_PER_SECOND,
    fields::EVENTS_PER_SECOND,
];

/// What the engine knows when a checkpoint has landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgressUpdate {
    /// Positions migrated, earlier runs included.
    pub positions_done: u64,
    /// Positions of the snapshot.
    pub positions_total: u64,
    /// Events migrated, earlier runs included.
    pub events_done: u64,
    /// Events of the snapshot.
    pub events_total: u64,
    /// Positions migrated by this run (for the rate).
    pub run_positions: u64,
    /// Events migrated by this run (for the rate).
    pub run_events: u64,
}

/// The progress a reader sees; serialized as the `progress` object of the
/// migration route's answers and of the stream's `progress` events.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MigrationProgress {
    /// Positions migrated, earlier runs included.
    pub positions_done: u64,
    /// Positions of the snapshot the command migrates.
    pub positions_total: u64,
    /// Events migrated, earlier runs included.
    pub events_done: u64,
    /// Events of the snapshot.
    pub events_total: u64,
    /// When the current run began counting (ms since the epoch).
    pub started_at: u64,
    /// When these numbers were written (ms since the epoch).
    pub updated_at: u64,
    /// Positions per second over the current run.
    pub positions_per_second: f64,
    /// Events per second over the current run.
    pub events_per_second: f64,
}

impl MigrationProgress {
    /// The progress in a job hash; `None` until the engine first reported
    /// (a queued job, a `reset`, or a run before its migrate loop).
    pub fn from_fields(hash: &HashMap<String, String>) -> Option<MigrationProgress> {
        let number = |name: &str| hash.get(name)?.parse::<u64>().ok();
        let rate = |name: &str| hash.get(name)?.parse::<f64>().ok();
        Some(MigrationProgress {
            positions_done: number(fields::POSITIONS_DONE)?,
            positions_total: number(fields::POSITIONS_TOTAL)?,
            events_done: number(fields::EVENTS_DONE)?,
            events_total: number(fields::EVENTS_TOTAL)?,
            started_at: number(fields::STARTED_AT)?,
            updated_at: number(fields::UPDATED_AT)?,
            positions_per_second: rate(fields::POSITIONS_PER_SECOND).unwrap_or(0.0),
            events_per_second: rate(fields::EVENTS_PER_SECOND).unwrap_or(0.0),
        })
    }
}

impl MigrationProgress {
    /// The progress from values read in the order of [`READ_FIELDS`].
    pub fn from_values(values: Vec<Option<String>>) -> Option<MigrationProgress> {
        let hash: HashMap<String, String> = READ_FIELDS
            .iter()
            .zip(values)
            .filter_map(|(name, value)| Some((name.to_string(), value?)))
            .collect();
        MigrationProgress::from_fields(&hash)
    }
}

/// Writes `update` to job `job_id`'s record, fenced by `fencing_token`.
pub async fn record_progress<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    job_id: &str,
    fencing_token: u64,
    update: &ProgressUpdate,
) -> Result<(), LeaseError> {
    let written: i64 = scripts::RECORD_PROGRESS
        .key(keys.lock())
        .key(keys.job(job_id))
        .arg(fencing_token)
        .arg(update.positions_done)
        .arg(update.positions_total)
        .arg(update.events_done)
        .arg(update.events_total)
        .arg(update.run_positions)
        .arg(update.run_events)
        .invoke_async(conn)
        .await?;
    if written == 1 {
        Ok(())
    } else {
        Err(LeaseError::Fenced)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::jobs::{claim, current_job, enqueue, ClaimOutcome, EnqueueOutcome, JobCommand};
    use crate::test_support::RedisServer;

    async fn claimed_token(
        conn: &mut crate::redis_client::RedisConnection,
        keys: &Keys,
        worker: &str,
    ) -> u64 {
        match claim(conn, keys, worker, "fp", Duration::from_millis(300), None)
            .await
            .unwrap()
        {
            ClaimOutcome::Claimed(job) => job.fencing_token,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    fn update(done: u64, run: u64) -> ProgressUpdate {
        ProgressUpdate {
            positions_done: done,
            positions_total: 100,
            events_done: done * 3,
            events_total: 300,
            run_positions: run,
            run_events: run * 3,
        }
    }

    #[tokio::test]
    async fn only_the_holder_records_progress_and_a_new_run_restarts_the_rate_not_the_counts() {
        let server = RedisServer::start();
        let mut conn = server.connection_manager().await;
        let keys = Keys::new("t");
        let EnqueueOutcome::Accepted { job_id } =
            enqueue(&mut conn, &keys, JobCommand::Migrate, false, "fp")
                .await
                .unwrap()
        else {
            panic!("not accepted")
        };
        // Nothing reported yet: no progress.
        assert_eq!(
            current_job(&mut conn, &keys)
                .await
                .unwrap()
                .unwrap()
                .progress,
            None
        );

        let first = claimed_token(&mut conn, &keys, "w1").await;
        record_progress(&mut conn, &keys, &job_id, first, &update(0, 0))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        record_progress(&mut conn, &keys, &job_id, first, &update(40, 40))
            .await
            .unwrap();
        let progress = current_job(&mut conn, &keys)
            .await
            .unwrap()
            .unwrap()
            .progress
            .unwrap();
        assert_eq!(
            (
                progress.positions_done,
                progress.positions_total,
                progress.events_done,
                progress.events_total
            ),
            (40, 100, 120, 300)
        );
        let seconds = (progress.updated_at - progress.started_at) as f64 / 1000.0;
        assert!(seconds >= 0.1, "{progress:?}");
        // The rate is the run's count over the run's time (one decimal).
        assert!(
            (progress.positions_per_second - 40.0 / seconds).abs() < 0.1,
            "{progress:?}"
        );
        assert!(
            (progress.events_per_second - 120.0 / seconds).abs() < 0.1,
            "{progress:?}"
        );

        // The lease expires; another worker takes over with a new token.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let second = claimed_token(&mut conn, &keys, "w2").await;
        assert_ne!(first, second);
        // The old holder is refused and changes nothing.
        assert!(matches!(
            record_progress(&mut conn, &keys, &job_id, first, &update(99, 99)).await,
            Err(LeaseError::Fenced)
        ));
        assert_eq!(
            current_job(&mut conn, &keys)
                .await
                .unwrap()
                .unwrap()
                .progress,
            Some(progress)
        );
        // The new run: absolute counts go on, the start time is the run's.
        record_progress(&mut conn, &keys, &job_id, second, &update(40, 0))
            .await
            .unwrap();
        let resumed = current_job(&mut conn, &keys)
            .await
            .unwrap()
            .unwrap()
            .progress
            .unwrap();
        assert_eq!(resumed.positions_done, 40);
        assert!(resumed.started_at > progress.started_at, "{resumed:?}");
        assert_eq!(resumed.started_at, resumed.updated_at);
        assert_eq!(resumed.positions_per_second, 0.0);

        // The same holder runs the engine again (after a Redis outage, on
        // its lease): its report of 0 done restarts the run's clock too.
        tokio::time::sleep(Duration::from_millis(50)).await;
        record_progress(&mut conn, &keys, &job_id, second, &update(40, 20))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        record_progress(&mut conn, &keys, &job_id, second, &update(40, 0))
            .await
            .unwrap();
        let again = current_job(&mut conn, &keys)
            .await
            .unwrap()
            .unwrap()
            .progress
            .unwrap();
        assert!(again.started_at >= resumed.started_at + 100, "{again:?}");
        assert_eq!(again.started_at, again.updated_at);
    }
}
