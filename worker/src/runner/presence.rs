//! Worker presence: refresh this worker's entry in the `workers` set every
//! third of its ttl until shutdown, then remove it (so `/health` counts a
//! stopped worker out at once; a killed one drops out when its entry expires).

use std::time::Duration;

use migration_shared::jobs::workers;
use migration_shared::keys::Keys;
use migration_shared::redis_client::RedisConnection;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown`; Redis errors are logged and retried at the next beat.
pub(super) async fn keep_present(
    mut conn: RedisConnection,
    keys: Keys,
    worker_id: String,
    ttl: Duration,
    shutdown: CancellationToken,
) {
    let beat = ttl / 3;
    loop {
        match tokio::time::timeout(beat, workers::heartbeat(&mut conn, &keys, &worker_id, ttl))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::debug!(error = %err, "presence heartbeat failed"),
            Err(_) => tracing::debug!("presence heartbeat timed out"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(beat) => {}
        }
    }
    if let Err(err) = workers::leave(&mut conn, &keys, &worker_id).await {
        tracing::debug!(error = %err, "could not leave the workers set; the entry will expire");
    }
}
