//! `stats` (SPEC 6.1) in every state the engine can leave the datastore in.

use std::sync::Arc;

use migration_shared::migrations::Registry;
use migration_shared::stats::{read_stats, MigrationState, Stats};
use migration_tests::engine::*;
use migration_worker::engine::{Command, EngineError};
use serde_json::json;

async fn stats(setup: &Setup, registry: &Arc<Registry>) -> Stats {
    let mut conn = setup.server.connection_manager().await;
    read_stats(&mut conn, &keys(), registry).await.unwrap()
}

#[tokio::test]
async fn stats_in_each_state() {
    let mut setup = Setup::new();
    let registry = chain_registry();
    let empty = stats(&setup, &registry).await;
    assert_eq!(
        serde_json::to_value(&empty).unwrap(),
        json!({"status": "no_migration_required", "current_migration_index": 4,
               "target_migration_index": 4, "positions": 0, "events": 0,
               "partially_migrated_positions": 0, "fully_migrated_positions": 0})
    );

    rich_history(&mut setup, 10, 3);
    let events = setup.get("ds:event_count").unwrap().parse::<u64>().unwrap();
    let before = stats(&setup, &registry).await;
    assert_eq!(before.status, MigrationState::MigrationRequired);
    assert_eq!(
        (
            before.current_migration_index,
            before.target_migration_index
        ),
        (1, 4)
    );
    assert_eq!((before.positions, before.events), (10, events));
    assert_eq!(
        (
            before.fully_migrated_positions,
            before.partially_migrated_positions
        ),
        (0, 0)
    );

    let (result, _) = run_stopping(&setup, &registry, Command::Migrate, 1, 4).await;
    assert!(matches!(result, Err(EngineError::Cancelled)));
    let partial = stats(&setup, &registry).await;
    assert_eq!(partial.status, MigrationState::MigrationRequired);
    assert_eq!(
        (
            partial.fully_migrated_positions,
            partial.partially_migrated_positions
        ),
        (5, 0)
    );

    // Another registry: the migration data is stale, not fully migrated.
    let longer = registry_with_extra();
    let stale = stats(&setup, &longer).await;
    assert_eq!(stale.status, MigrationState::MigrationRequired);
    assert_eq!(
        (
            stale.fully_migrated_positions,
            stale.partially_migrated_positions
        ),
        (0, 5)
    );
    assert_eq!(stale.target_migration_index, 5);

    setup.run_ok(&registry, Command::Migrate).await;
    let migrated = stats(&setup, &registry).await;
    assert_eq!(migrated.status, MigrationState::FinalizationRequired);
    assert_eq!(
        (
            migrated.fully_migrated_positions,
            migrated.partially_migrated_positions
        ),
        (10, 0)
    );
    assert_eq!(migrated.events, events, "live events are counted");

    setup.run_ok(&registry, Command::Finalize).await;
    let finalized = stats(&setup, &registry).await;
    assert_eq!(finalized.status, MigrationState::NoMigrationRequired);
    assert_eq!(finalized.current_migration_index, 4);
    assert_eq!(
        (
            finalized.fully_migrated_positions,
            finalized.partially_migrated_positions
        ),
        (0, 0)
    );
    assert_eq!(finalized.positions, 10);
    let live_events = setup.get("ds:event_count").unwrap().parse::<u64>().unwrap();
    assert_eq!(finalized.events, live_events);
}

fn registry_with_extra() -> Arc<Registry> {
    let mut migrations = chain_registry().migrations().to_vec();
    migrations.push(identity("0005_noop"));
    Arc::new(Registry::new(migrations))
}

#[tokio::test]
async fn registry_change_discards_the_stale_area_and_starts_over() {
    let mut setup = Setup::new();
    rich_history(&mut setup, 12, 9);
    let first = chain_registry();
    setup.run_ok(&first, Command::Migrate).await;
    let second = registry_with_extra();
    let lines = setup.run_ok(&second, Command::Migrate).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("built for another registry")),
        "{lines:?}"
    );
    let area = setup.dump_area();
    assert!(!area
        .keys()
        .any(|k| k.contains(":mig:keyframe:4:")
            && !area.contains_key("{t}:mig:keyframe:5:collections")));
    assert_eq!(area["{t}:mig:mi_counts"], json!({"5": "12"}));

    let mut fresh = Setup::new();
    rich_history(&mut fresh, 12, 9);
    fresh.run_ok(&second, Command::Migrate).await;
    assert_eq!(fresh.dump_area(), area);
}
