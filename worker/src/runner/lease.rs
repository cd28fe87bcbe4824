//! Lease renewal, in a task of its own and on a connection of its own
//! (`Connections::control`), so that a busy migration or a big checkpoint
//! never delays it (SPEC 7, 7.1).
//!
//! Every third of the lease (soon again after a failure) it renews the lock
//! through `lock_renew.lua`,
//! which extends it only while the lock still holds our fencing token. The
//! job's work is cancelled at once when a renewal is refused (someone took
//! the job over), or when no renewal has succeeded for three quarters of a
//! lease (Redis unreachable: soon the lock expires and someone else may take
//! the job).
//! The fencing check in every write stops a late writer anyway; cancelling
//! only stops it from trying. Either way the runner then claims the job
//! again as one to resume: `job_claim.lua` decides whether it is still ours.

use std::time::Duration;

use migration_shared::jobs::lock;
use migration_shared::keys::Keys;
use migration_shared::redis_client::RedisConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Renews until `done` is cancelled; cancels `lost` when the lease is lost
/// or can no longer be trusted. `held_since` is when the claim was sent.
/// Returns when the last successful renewal (or the claim) was sent: the
/// lease, as this worker extended it, runs out one lease after that.
pub(super) async fn keep_renewed(
    mut conn: RedisConnection,
    keys: Keys,
    fencing_token: u64,
    lease: Duration,
    held_since: Instant,
    done: CancellationToken,
    lost: CancellationToken,
) -> Instant {
    let interval = lease / 3;
    let give_up_after = lease * 3 / 4;
    // After a failed renewal, try again soon: Redis may be back at once.
    let retry_after = (lease / 12).max(Duration::from_millis(20));
    // The lock expires no earlier than `lease` after the last renewal was
    // *sent* (Redis executes it later), so that is the safe reference.
    let mut last_renewed = held_since;
    let mut next_renewal = held_since + interval;
    loop {
        let give_up_at = last_renewed + give_up_after;
        // Wake for the next renewal, or to give up on time even while
        // renewals hang or fail.
        tokio::select! {
            _ = done.cancelled() => return last_renewed,
            _ = tokio::time::sleep_until(next_renewal.min(give_up_at)) => {}
        }
        let sent_at = Instant::now();
        if sent_at >= give_up_at {
            tracing::warn!(
                since_ms = last_renewed.elapsed().as_millis() as u64,
                "Redis unreachable for most of the lease; stopping the job"
            );
            lost.cancel();
            return last_renewed;
        }
        // A renewal that hangs must not carry us past the point of giving up.
        let budget = interval
            .min(give_up_at.saturating_duration_since(sent_at))
            .max(Duration::from_millis(1));
        let renewal =
            tokio::time::timeout(budget, lock::renew(&mut conn, &keys, fencing_token, lease)).await;
        match renewal {
            Ok(Ok(true)) => {
                last_renewed = sent_at;
                next_renewal = sent_at + interval;
            }
            Ok(Ok(false)) => {
                tracing::warn!(
                    fencing_token,
                    "lease lost: the lock is no longer ours; stopping the job"
                );
                lost.cancel();
                return last_renewed;
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "lease renewal failed");
                next_renewal = Instant::now() + retry_after;
            }
            Err(_) => {
                tracing::warn!("lease renewal timed out");
                next_renewal = Instant::now() + retry_after;
            }
        }
    }
}
