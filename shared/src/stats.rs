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

impl MigrationState {
    /// The name as written in JSON and in the engine's output
    /// (`migration_required`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::MigrationRunning => "migration_running",
            MigrationState::MigrationRequired => "migration_required",
            MigrationState::FinalizationRequired => "finalization_required",
            MigrationState::NoMigrationRequired => "no_migration_required",
        }
    }
}

/// What the migration state of SPEC 4.1 depends on, apart from a running
/// job (only the job record knows that: callers override the state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateFacts {
    /// Live positions (0: empty datastore).
    pub positions: u64,
    /// The live MI (ignored for an empty datastore).
    pub current_migration_index: u64,
    /// The registry's target MI.
    pub target_migration_index: u64,
    /// Positions whose migration data is at the target.
    pub fully_migrated_positions: u64,
    /// The migration area was built for this registry (target and
    /// fingerprint); data built for another one is redone, so it never
    /// counts as fully migrated.
    pub area_is_current: bool,
}

/// The migration state, computed here only: the `stats` answer and the
/// engine's start line must never disagree.
pub fn migration_state(facts: StateFacts) -> MigrationState {
    if facts.positions == 0 || facts.current_migration_index == facts.target_migration_index {
        MigrationState::NoMigrationRequired
    } else if facts.area_is_current && facts.fully_migrated_positions >= facts.positions {
        MigrationState::FinalizationRequired
    } else {
        MigrationState::MigrationRequired
    }
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
    let status = migration_state(StateFacts {
        positions,
        current_migration_index: current,
        target_migration_index: target,
        fully_migrated_positions: fully,
        area_is_current,
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn state(
        positions: u64,
        current: u64,
        target: u64,
        fully: u64,
        area_is_current: bool,
    ) -> MigrationState {
        migration_state(StateFacts {
            positions,
            current_migration_index: current,
            target_migration_index: target,
            fully_migrated_positions: fully,
            area_is_current,
        })
    }

    #[test]
    fn migration_state_in_priority_order() {
        use MigrationState::*;
        // An empty datastore, or one at the target: nothing to do, whatever
        // the migration area holds.
        assert_eq!(state(0, 1, 3, 0, false), NoMigrationRequired);
        assert_eq!(state(0, 1, 3, 5, true), NoMigrationRequired);
        assert_eq!(state(10, 3, 3, 0, false), NoMigrationRequired);
        assert_eq!(state(10, 3, 3, 10, true), NoMigrationRequired);
        // Below the target: finalization once every position is migrated
        // for this registry.
        assert_eq!(state(10, 1, 3, 10, true), FinalizationRequired);
        assert_eq!(state(10, 2, 3, 11, true), FinalizationRequired);
        assert_eq!(state(10, 1, 3, 9, true), MigrationRequired);
        assert_eq!(state(10, 1, 3, 0, true), MigrationRequired);
        // Data of another registry counts for nothing.
        assert_eq!(state(10, 1, 3, 10, false), MigrationRequired);
    }

    #[test]
    fn state_names_are_the_json_names() {
        for state in [
            MigrationState::MigrationRunning,
            MigrationState::MigrationRequired,
            MigrationState::FinalizationRequired,
            MigrationState::NoMigrationRequired,
        ] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(state.as_str())
            );
        }
    }
}
