//! The bounded target keyframe (`target_keyframe.rs`) and the checkpoint
//! pipeline: a cache far smaller than the datastore's models, and several
//! checkpoints in flight, give byte for byte what an uninterrupted run with
//! everything in memory gives, also across stops and lost locks.

use std::sync::Arc;
use std::time::Duration;

use migration_shared::migrations::Registry;
use migration_tests::engine::*;
use migration_worker::engine::{Command, Engine, EngineError, EngineOptions};
use serde_json::json;

const POSITIONS: u64 = 60;

fn verbose() -> EngineOptions {
    EngineOptions {
        verbose: true,
        max_positions_per_second: 0,
    }
}

/// The reference: the default engine (cache larger than the datastore) on
/// the history of `positions` positions over `ids` ids per collection; the
/// area after `migrate`, and the whole datastore after `finalize`.
async fn reference(
    registry: &Arc<Registry>,
    positions: u64,
    ids: u64,
) -> (serde_json::Value, serde_json::Value) {
    let mut setup = Setup::new();
    rich_history_of(&mut setup, positions, 42, ids);
    setup.run_ok(registry, Command::Migrate).await;
    let area = json!(setup.dump_area());
    setup.run_ok(registry, Command::Finalize).await;
    (area, json!(setup.dump()))
}

/// An engine whose cache holds 2 models (the history has 12), flushing at
/// every checkpoint, so that models are evicted and read back from Redis
/// all the time.
async fn tiny_cache(setup: &Setup, registry: &Arc<Registry>, options: EngineOptions) -> Engine {
    setup
        .engine(registry, options)
        .await
        .with_batch_positions(2)
        .with_keyframe_cache_models(2)
        .with_flush_intervals(Duration::ZERO, Duration::ZERO)
}

/// `HMGET` calls Redis has answered so far.
fn hmget_calls(setup: &Setup) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut setup.server.connection())
        .unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_hmget:calls="))
        .and_then(|value| value.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[tokio::test]
async fn a_cache_smaller_than_the_models_gives_the_same_area_and_datastore() {
    // 12 models through a cache of 2; 80 through caches of 2, 24 and 48
    // (partly evicted: models kept and models read back in one batch).
    for (positions, ids, capacity) in [
        (POSITIONS, 6, 2),
        (400, 40, 2),
        (400, 40, 24),
        (400, 40, 48),
    ] {
        let registry = declarative_chain_registry();
        let (expected_area, expected_final) = reference(&registry, positions, ids).await;
        let (_, all_reads) = migrate_with_cache(&registry, positions, ids, 100_000).await;
        let (mut setup, reads) = migrate_with_cache(&registry, positions, ids, capacity).await;
        // Evicted models were read back from the stored keyframe.
        assert!(
            reads > all_reads,
            "cache {capacity}: {reads} HMGETs, all in memory: {all_reads}"
        );
        assert_eq!(json!(setup.dump_area()), expected_area, "cache {capacity}");
        setup.run_ok(&registry, Command::Finalize).await;
        assert_eq!(json!(setup.dump()), expected_final, "cache {capacity}");
    }
}

/// Migrates the history with a cache of `capacity` models, a flush at every
/// checkpoint; returns the setup and the `HMGET`s the run made.
async fn migrate_with_cache(
    registry: &Arc<Registry>,
    positions: u64,
    ids: u64,
    capacity: usize,
) -> (Setup, u64) {
    let mut setup = Setup::new();
    rich_history_of(&mut setup, positions, 42, ids);
    let engine = setup
        .engine(registry, EngineOptions::default())
        .await
        .with_batch_positions(2)
        .with_keyframe_cache_models(capacity)
        .with_flush_intervals(Duration::ZERO, Duration::ZERO);
    let before = hmget_calls(&setup);
    let mut sink = VecSink::default();
    let result = engine.run(Command::Migrate, &mut sink).await;
    assert!(result.is_ok(), "{result:?} {:?}", sink.lines);
    let reads = hmget_calls(&setup) - before;
    (setup, reads)
}

#[tokio::test]
async fn stopped_with_checkpoints_in_flight_resumes_identically() {
    for registry in [declarative_chain_registry(), chain_registry()] {
        let (expected_area, expected_final) = reference(&registry, POSITIONS, 6).await;
        for k in [1usize, 5, 17, 40] {
            let mut setup = Setup::new();
            rich_history(&mut setup, POSITIONS, 42);
            let cancel = tokio_util::sync::CancellationToken::new();
            // One position per checkpoint and the default depth: when the
            // cancel comes, up to three checkpoints are in flight.
            let engine = setup
                .engine_with(&registry, verbose(), TOKEN, cancel.clone())
                .await
                .with_batch_positions(1)
                .with_keyframe_cache_models(2);
            let mut sink = CancelAfter {
                lines: Vec::new(),
                token: cancel,
                after_verbose_lines: k,
            };
            let result = engine.run(Command::Migrate, &mut sink).await;
            assert!(
                matches!(result, Err(EngineError::Cancelled)),
                "k={k} {result:?}"
            );
            let last = sink.lines.last().unwrap();
            let stopped: u64 = last
                .strip_prefix("Stopped after position ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|number| number.parse().ok())
                .unwrap_or_else(|| panic!("{last}"));
            // Every batch sent before the stop landed, no more than the
            // pipeline's depth beyond the k-th position.
            assert!(
                (k as u64 + 1..=k as u64 + 3).contains(&stopped),
                "k={k}: {last}"
            );
            let state = setup.dump_area()["{t}:mig:state"].clone();
            assert_eq!(state["cursor"], json!(stopped.to_string()), "k={k}");
            assert_eq!(state["keyframe_cursor"], json!(stopped.to_string()));
            // The resume reads none of the live events already migrated.
            forget_live_events(&mut setup, 1..=stopped);
            let engine = tiny_cache(&setup, &registry, EngineOptions::default()).await;
            let mut sink = VecSink::default();
            let result = engine.run(Command::Migrate, &mut sink).await;
            assert!(result.is_ok(), "k={k}: {result:?} {:?}", sink.lines);
            assert!(
                !sink.lines.iter().any(|l| l.starts_with("Rebuilding")) || registry.reads_context(),
                "{:?}",
                sink.lines
            );
            assert_eq!(json!(setup.dump_area()), expected_area, "k={k}");
            setup.run_ok(&registry, Command::Finalize).await;
            assert_eq!(json!(setup.dump()), expected_final, "k={k}");
        }
    }
}

#[tokio::test]
async fn fenced_with_checkpoints_in_flight_resumes_identically() {
    let registry = declarative_chain_registry();
    let (expected_area, _) = reference(&registry, POSITIONS, 6).await;
    for k in [2usize, 9, 30] {
        let mut setup = Setup::new();
        rich_history(&mut setup, POSITIONS, 42);
        let mut conn = setup.server.connection();
        // Flushes only when forced: a crash redoes from the last flush.
        let engine = setup
            .engine(&registry, verbose())
            .await
            .with_batch_positions(1)
            .with_keyframe_cache_models(2)
            .with_flush_intervals(Duration::from_secs(3600), Duration::from_secs(3600));
        let mut sink = FenceAfter {
            conn: &mut conn,
            left: k,
        };
        let result = engine.run(Command::Migrate, &mut sink).await;
        assert!(matches!(result, Err(EngineError::Fenced)), "{result:?}");
        let state = setup.dump_area()["{t}:mig:state"].clone();
        let cursor: u64 = state["cursor"].as_str().unwrap().parse().unwrap();
        // The checkpoints sent before the token changed landed; the first
        // one after it was refused and the rest were never sent.
        assert!(
            (k as u64..=k as u64 + 3).contains(&cursor),
            "k={k} {state:?}"
        );
        set_token(&mut setup.conn, TOKEN);
        let engine = tiny_cache(&setup, &registry, EngineOptions::default()).await;
        engine
            .run(Command::Migrate, &mut VecSink::default())
            .await
            .unwrap();
        assert_eq!(json!(setup.dump_area()), expected_area, "k={k}");
    }
}
