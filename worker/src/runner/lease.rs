//! Lease renewal, in a task of its own so that a busy migration never delays
//! it (SPEC 7).
//!
//! Every third of the lease it renews the lock through `lock_renew.lua`,
//! which extends it only while the lock still holds our fencing token. The
//! job's work is cancelled at once when a renewal is refused (someone took
//! the job over), or when no renewal has succeeded for three quarters of a
//! lease (Redis unreachable: soon the lock expires and someone else may take
//! the job).
//! The fencing check in every write stops a late writer anyway; cancelling
//! only stops it from trying.

use std::time::Duration;

use migration_shared::jobs::lock;
use migration_shared::keys::Keys;
use migration_shared::redis_client::RedisConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Renews until `done` is cancelled; cancels `lost` when the lease is lost
/// or can no longer be trusted. `held_since` is when the claim was sent.
pub(super) async fn keep_renewed(
    mut conn: RedisConnection,
    keys: Keys,
    fencing_token: u64,
    lease: Duration,
    held_since: Instant,
    done: CancellationToken,
    lost: CancellationToken,
) {
    let interval = lease / 3;
    let give_up_after = lease * 3 / 4;
    // The lock expires no earlier than `lease` after the last renewal was
    // *sent* (Redis executes it later), so that is the safe reference.
    let mut last_renewed = held_since;
    loop {
        // Wake no later than the give-up point: after fast failures (a
        // refused connection) the next regular renewal would come up to one
        // interval too late to stop the job in time.
        let until_give_up =
            (last_renewed + give_up_after).saturating_duration_since(Instant::now());
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(interval.min(until_give_up)) => {}
        }
        let sent_at = Instant::now();
        // A renewal that hangs must not carry us past the point of giving up.
        let budget = interval
            .min((last_renewed + give_up_after).saturating_duration_since(sent_at))
            .max(Duration::from_millis(1));
        let renewal =
            tokio::time::timeout(budget, lock::renew(&mut conn, &keys, fencing_token, lease)).await;
        match renewal {
            Ok(Ok(true)) => last_renewed = sent_at,
            Ok(Ok(false)) => {
                tracing::warn!(
                    fencing_token,
                    "lease lost: the lock is no longer ours; stopping the job"
                );
                lost.cancel();
                return;
            }
            Ok(Err(err)) => tracing::warn!(error = %err, "lease renewal failed"),
            Err(_) => tracing::warn!("lease renewal timed out"),
        }
        if last_renewed.elapsed() >= give_up_after {
            tracing::warn!(
                since_ms = last_renewed.elapsed().as_millis() as u64,
                "Redis unreachable for most of the lease; stopping the job"
            );
            lost.cancel();
            return;
        }
    }
}
