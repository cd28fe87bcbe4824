//! Pacing and stopping, shared by every loop of the engine: the throttle
//! (`WORKER_MAX_POSITIONS_PER_SECOND`) and the cancel token.
//!
//! Every phase that walks the datastore (the validation pass, loading the
//! keyframes, rebuilding the lowest keyframe, the migration batches) takes
//! its work from a [`Pacer`] in units, checks the cancel token between two
//! Redis calls and stops there: none of those phases writes, so every point
//! between two calls is a durable one. The migration loop itself stops only
//! after a checkpoint landed (see `migrate/batches.rs`).
//!
//! What a unit costs: a migrated or replayed position reads a position's
//! events (and the migration loop writes them back), so the throttle `r`
//! allows `r` of them a second. Reading an MI (validation) or one stored
//! keyframe model (loading) is a small fraction of that: they are paced at
//! [`LIGHT_UNITS_PER_POSITION`] per position of budget, so a throttled run
//! never hammers Redis with reads, and the start of a run still takes a
//! small fraction of the migration it precedes.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::EngineError;

/// How many MIs, or keyframe models, cost as much as one position.
pub(crate) const LIGHT_UNITS_PER_POSITION: u64 = 20;

/// Hands out work at a fixed rate (no limit when the rate is 0) and stops
/// when the cancel token fires.
pub(crate) struct Pacer<'a> {
    /// Units per second; 0: no limit.
    rate: u64,
    started: Instant,
    taken: u64,
    cancel: &'a CancellationToken,
}

impl<'a> Pacer<'a> {
    /// A pacer of `rate` units a second (0: no limit).
    pub(crate) fn new(rate: u64, cancel: &'a CancellationToken) -> Pacer<'a> {
        Pacer {
            rate,
            started: Instant::now(),
            taken: 0,
            cancel,
        }
    }

    /// How many units one step may take: about a tenth of a second of
    /// budget, between 1 and `max` (all of `max` without a limit).
    pub(crate) fn step(&self, max: u64) -> u64 {
        if self.rate == 0 {
            max.max(1)
        } else {
            (self.rate / 10).clamp(1, max.max(1))
        }
    }

    /// `Err(Cancelled)` when the run must stop now.
    pub(crate) fn check(&self) -> Result<(), EngineError> {
        if self.cancel.is_cancelled() {
            Err(EngineError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Waits until `units` more are due, then counts them as taken. Returns
    /// `Err(Cancelled)` (at once, also during the wait) when cancelled.
    pub(crate) async fn take(&mut self, units: u64) -> Result<(), EngineError> {
        self.check()?;
        if self.rate > 0 && self.taken > 0 {
            let due = self.started + Duration::from_secs_f64(self.taken as f64 / self.rate as f64);
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = self.cancel.cancelled() => return Err(EngineError::Cancelled),
            }
        }
        self.taken += units;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_at_the_rate_and_stops_at_cancel() {
        let cancel = CancellationToken::new();
        // Before the pacer: its schedule starts when it is made, so a clock
        // started later could see the 21st unit a little before 200 ms.
        let start = Instant::now();
        let mut pacer = Pacer::new(100, &cancel);
        assert_eq!(pacer.step(1000), 10);
        assert_eq!(pacer.step(3), 3);
        for _ in 0..21 {
            pacer.take(1).await.unwrap();
        }
        // The 21st unit is due 20 units at 100 a second after the start.
        assert!(start.elapsed() >= Duration::from_millis(200));
        cancel.cancel();
        assert!(matches!(pacer.take(1).await, Err(EngineError::Cancelled)));
        let unlimited = Pacer::new(0, &cancel);
        assert_eq!(unlimited.step(100), 100);
    }

    #[tokio::test]
    async fn a_wait_ends_at_cancel() {
        let cancel = CancellationToken::new();
        let mut pacer = Pacer::new(1, &cancel);
        // 1000 units at one a second: the next one is due in 1000 s.
        pacer.take(1000).await.unwrap();
        let canceller = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                cancel.cancel();
            })
        };
        let waited = tokio::time::timeout(Duration::from_secs(60), pacer.take(1)).await;
        assert!(
            matches!(waited, Ok(Err(EngineError::Cancelled))),
            "{waited:?}"
        );
        canceller.await.unwrap();
    }
}
