//! The read-only migration state (`stats`, SPEC 4.1 and 6.1), computed from a
//! handful of counters in one script, so the api can answer it on every
//! replica without scanning positions.
//!
//! Invariants it relies on (kept by the worker's engine): `mig:mi_counts`
//! counts the positions of the migration area per migrated MI, and
//! `mig:state` names the target MI and registry fingerprint the migration area
//! was built for. Migration data built for another registry is stale: the
//! engine redoes it from the live data, so it counts as partially migrated,
//! never as fully migrated. `migration_running` is never returned here: only
//! the job record knows that (the api overrides the status).

use std::collections::HashMap;

use crate::redis_client::RedisConnection;
use serde::Serialize;

use crate::keys::Keys;
use crate::migrations::Registry;
use crate::scripts;

/// The migration state of SPEC 4.1, in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// A migration job is queued or running.
    MigrationRunning,
    /// Some position is not fully migrated.
    MigrationRequired,
    /// Every position is fully migrated, not yet finalized.
    FinalizationRequired,
    /// The live MI is the target.
    NoMigrationRequired,
}

/// The `stats` object of SPEC 4.1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Stats {
    /// The datastore's migration state.
    pub status: MigrationState,
    /// The live MI (empty datastore: the target).
    pub current_migration_index: u64,
    /// The registry's target MI.
    pub target_migration_index: u64,
    /// Live positions.
    pub positions: u64,
    /// Live events.
    pub events: u64,
    /// Positions with migration data that is not at the target (or stale).
    pub partially_migrated_positions: u64,
    /// Positions whose migrated MI is the target.
    pub fully_migrated_positions: u64,
}

/// Reads the stats of the datastore under `keys` for `registry`.
pub async fn read_stats(
    conn: &mut RedisConnection,
    keys: &Keys,
    registry: &Registry,
) -> Result<Stats, redis::RedisError> {
    type Snapshot = (
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Option<String>,
        HashMap<u64, u64>,
    );
    let (position, migration_index, event_count, state_target, state_fingerprint, mi_counts): Snapshot =
        scripts::STATS
            .key(keys.position())
            .key(keys.migration_index())
            .key(keys.event_count())
            .key(keys.mig_state())
            .key(keys.mig_mi_counts())
            .invoke_async(conn)
            .await?;
    let target = registry.target_migration_index();
    let positions = position.unwrap_or(0);
    let current = match position {
        Some(p) if p > 0 => migration_index.unwrap_or(target),
        _ => target,
    };
    let area_is_current = state_target == Some(target)
        && state_fingerprint.as_deref() == Some(registry.fingerprint().as_str());
    let (fully, partially) = if area_is_current {
        let fully = mi_counts.get(&target).copied().unwrap_or(0);
        let partially = mi_counts
            .iter()
            .filter(|(mi, _)| **mi != target)
            .map(|(_, count)| count)
            .sum();
        (fully, partially)
    } else {
        (0, mi_counts.values().sum())
    };
    let status = if current == target {
        MigrationState::NoMigrationRequired
    } else if fully >= positions {
        MigrationState::FinalizationRequired
    } else {
        MigrationState::MigrationRequired
    };
    Ok(Stats {
        status,
        current_migration_index: current,
        target_migration_index: target,
        positions,
        events: event_count.unwrap_or(0),
        partially_migrated_positions: partially,
        fully_migrated_positions: fully,
    })
}
