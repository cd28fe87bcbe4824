//! Durability (SPEC 6.1): an interrupted `migrate` or `finalize` resumes at the
//! last checkpoint and ends byte-identical to an uninterrupted run.

use std::sync::Arc;
use std::time::Duration;

use migration_shared::migrations::Registry;
use migration_tests::engine::*;
use migration_worker::engine::{Command, EngineError};
use serde_json::json;

const POSITIONS: u64 = 25;

async fn uninterrupted(registry: &Arc<Registry>, command: Command) -> Setup {
    let mut setup = Setup::new();
    rich_history(&mut setup, POSITIONS, 42);
    setup.run_ok(registry, command).await;
    setup
}

// Each durability test runs twice: with Rust migrations (the engine keeps a
// keyframe per MI) and with the same operations as declarative migrations
// (none reads the context: only the target keyframe is kept).

#[tokio::test]
async fn migrate_stopped_after_k_positions_resumes_identically() {
    stopped_after_k_positions_resumes_identically(chain_registry()).await;
}

#[tokio::test]
async fn migrate_stopped_after_k_positions_resumes_identically_declarative() {
    stopped_after_k_positions_resumes_identically(declarative_chain_registry()).await;
}

async fn stopped_after_k_positions_resumes_identically(registry: Arc<Registry>) {
    let mut reference = uninterrupted(&registry, Command::Migrate).await;
    let expected_area = reference.dump_area();
    let expected_final = {
        reference.run_ok(&registry, Command::Finalize).await;
        reference.dump()
    };
    for k in [1usize, 2, 7, 13, 23] {
        let mut setup = Setup::new();
        rich_history(&mut setup, POSITIONS, 42);
        let (result, lines) = run_stopping(&setup, &registry, Command::Migrate, 1, k).await;
        assert!(
            matches!(result, Err(EngineError::Cancelled)),
            "k={k}: {result:?} {lines:?}"
        );
        // Cancelled while position k + 1 was being migrated: that batch is
        // written (with the keyframes) before the run stops.
        let k = k + 1;
        assert!(
            lines
                .last()
                .unwrap()
                .contains(&format!("Stopped after position {k}")),
            "{lines:?}"
        );
        let state = setup.dump_area();
        assert_eq!(
            state["{t}:mig:state"]["cursor"],
            json!(k.to_string()),
            "k={k}"
        );
        assert_eq!(
            state["{t}:mig:state"]["keyframe_cursor"],
            json!(k.to_string())
        );
        // A clean stop flushes the lowest keyframe too (when one below the
        // target is kept): the resume has nothing to replay.
        if registry.reads_context() {
            assert_eq!(
                state["{t}:mig:state"]["lowest_cursor"],
                json!(k.to_string())
            );
        }
        // The resume reads no live events of the positions already done:
        // they are gone, and it still ends identically.
        forget_live_events(&mut setup, 1..=k as u64);
        // Resume with a different batch size: the result must not depend on it.
        let (result, lines) =
            run_stopping(&setup, &registry, Command::Migrate, 3, usize::MAX).await;
        assert!(result.is_ok(), "k={k}: {result:?} {lines:?}");
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("Rebuilding the keyframe")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("({k} of {POSITIONS} positions already migrated)"))),
            "{lines:?}"
        );
        assert_eq!(setup.dump_area(), expected_area, "k={k}");
        setup.run_ok(&registry, Command::Finalize).await;
        assert_eq!(setup.dump(), expected_final, "k={k}");
    }
}

#[tokio::test]
async fn migrate_fenced_after_k_positions_resumes_identically() {
    fenced_after_k_positions_resumes_identically(chain_registry()).await;
}

#[tokio::test]
async fn migrate_fenced_after_k_positions_resumes_identically_declarative() {
    fenced_after_k_positions_resumes_identically(declarative_chain_registry()).await;
}

async fn fenced_after_k_positions_resumes_identically(registry: Arc<Registry>) {
    let mut reference = uninterrupted(&registry, Command::Migrate).await;
    let expected_area = reference.dump_area();
    // (stopped cleanly after `clean` positions or not at all, then fenced
    // after k more checkpoints): the stored keyframes lag behind the cursor.
    for (clean, k) in [(0usize, 3usize), (0, 11), (4, 6)] {
        let mut setup = Setup::new();
        rich_history(&mut setup, POSITIONS, 42);
        if clean > 0 {
            let (result, _) = run_stopping(&setup, &registry, Command::Migrate, 1, clean).await;
            assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
        }
        let flushed = setup
            .dump_area()
            .get("{t}:mig:state")
            .map(|s| s["keyframe_cursor"].clone());
        // Another worker takes the lock after k checkpoints: the next
        // checkpoint is refused and nothing more is written.
        let mut conn = setup.server.connection();
        let engine = setup
            .engine(
                &registry,
                migration_worker::engine::EngineOptions {
                    verbose: true,
                    max_positions_per_second: 0,
                },
            )
            .await
            .with_batch_positions(1)
            .with_checkpoint_depth(1);
        let mut sink = FenceAfter {
            conn: &mut conn,
            left: k,
        };
        let result = engine.run(Command::Migrate, &mut sink).await;
        assert!(matches!(result, Err(EngineError::Fenced)), "{result:?}");
        let state = setup.dump_area()["{t}:mig:state"].clone();
        let expected_cursor = if clean > 0 { clean + 1 + k } else { k };
        assert_eq!(state["cursor"], json!(expected_cursor.to_string()));
        // No flush happened in between: a later run redoes from the flush.
        assert_eq!(
            Some(state["keyframe_cursor"].clone()),
            flushed
                .or(Some(serde_json::Value::Null))
                .map(|v| if v.is_null() {
                    state["keyframe_cursor"].clone()
                } else {
                    v
                })
        );
        set_token(&mut setup.conn, TOKEN);
        let lines = setup.run_ok(&registry, Command::Migrate).await;
        assert!(
            !lines.iter().any(|l| l.contains("another registry")),
            "same registry: the area is resumed, not discarded: {lines:?}"
        );
        let resumed_from = if clean > 0 { clean + 1 } else { 0 };
        assert!(
            lines.iter().any(|l| l.contains(&format!(
                "({resumed_from} of {POSITIONS} positions already migrated)"
            ))),
            "{lines:?}"
        );
        assert_eq!(setup.dump_area(), expected_area, "clean={clean} k={k}");
    }
}

#[tokio::test]
async fn finalize_interrupted_at_each_step_ends_identically() {
    finalize_interrupted_ends_identically(chain_registry()).await;
}

#[tokio::test]
async fn finalize_interrupted_at_each_step_ends_identically_declarative() {
    finalize_interrupted_ends_identically(declarative_chain_registry()).await;
}

async fn finalize_interrupted_ends_identically(registry: Arc<Registry>) {
    let mut reference = uninterrupted(&registry, Command::Finalize).await;
    let expected = reference.dump();
    assert_eq!(expected["{t}:ds:migration_index"], json!("4"));

    // Step 1: stopped inside finalize's migrate pass, then finalize again.
    for k in [1usize, 9, 24] {
        let mut setup = Setup::new();
        rich_history(&mut setup, POSITIONS, 42);
        let (result, _) = run_stopping(&setup, &registry, Command::Finalize, 2, k).await;
        assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
        assert_eq!(
            setup.get("ds:migration_index").as_deref(),
            Some("1"),
            "live data untouched"
        );
        setup.run_ok(&registry, Command::Finalize).await;
        assert_eq!(setup.dump(), expected, "k={k}");
    }

    // Step 2: the migrate pass finished, crash before the flip: the re-run
    // only flips.
    let mut setup = Setup::new();
    rich_history(&mut setup, POSITIONS, 42);
    setup.run_ok(&registry, Command::Migrate).await;
    let lines = setup.run_ok(&registry, Command::Finalize).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("0 positions and 0 events to migrate")),
        "{lines:?}"
    );
    assert_eq!(setup.dump(), expected);

    // Step 3: the flip refused (lock lost right before it): nothing live
    // changes, the area stays complete, and the next finalize flips.
    let mut setup = Setup::new();
    rich_history(&mut setup, POSITIONS, 42);
    setup.run_ok(&registry, Command::Migrate).await;
    let before = setup.dump();
    set_token(&mut setup.conn, TOKEN + 1);
    let (result, _) = setup.run(&registry, Command::Finalize).await;
    assert!(matches!(result, Err(EngineError::Fenced)), "{result:?}");
    assert_eq!(setup.dump(), before);
    set_token(&mut setup.conn, TOKEN);
    setup.run_ok(&registry, Command::Finalize).await;
    assert_eq!(setup.dump(), expected);

    // Step 4: crash after the flip: the re-run finds nothing to do.
    let lines = setup.run_ok(&registry, Command::Finalize).await;
    assert!(
        lines.last().unwrap().contains("nothing to finalize"),
        "{lines:?}"
    );
    assert_eq!(setup.dump(), expected);
}

/// Runs `migrate` one position per checkpoint, flushing the keyframes at
/// every checkpoint but the lowest one only when forced (end, stop), and
/// fences it after `k` positions: a crash that leaves the stored lowest
/// keyframe behind `keyframe_cursor`.
async fn crash_with_the_lowest_keyframe_behind(setup: &Setup, registry: &Arc<Registry>, k: usize) {
    let mut conn = setup.server.connection();
    let engine = setup
        .engine(
            registry,
            migration_worker::engine::EngineOptions {
                verbose: true,
                max_positions_per_second: 0,
            },
        )
        .await
        .with_batch_positions(1)
        .with_checkpoint_depth(1)
        .with_flush_intervals(Duration::ZERO, Duration::from_secs(3600));
    let mut sink = FenceAfter {
        conn: &mut conn,
        left: k,
    };
    let result = engine.run(Command::Migrate, &mut sink).await;
    assert!(matches!(result, Err(EngineError::Fenced)), "{result:?}");
    set_token(&mut conn, TOKEN);
}

#[tokio::test]
async fn resumed_run_replays_only_the_positions_after_the_stored_lowest_keyframe() {
    // The first migration reads `old` (the MI 1 keyframe, the lowest: stored
    // only at lowest flushes), the second `new`.
    let registry = registry(vec![
        std::sync::Arc::new(ReadsContext),
        rename_field("0003_rename", "motion", "title", "name"),
    ]);
    let mut reference = Setup::new();
    rich_history(&mut reference, POSITIONS, 77);
    reference.run_ok(&registry, Command::Migrate).await;
    let expected = reference.dump_area();
    assert!(expected.contains_key("{t}:mig:keyframe:1:motion"));
    assert!(expected.contains_key("{t}:mig:keyframe:2:motion"));
    assert_eq!(
        expected["{t}:mig:state"]["lowest_cursor"],
        json!(POSITIONS.to_string())
    );
    for (stopped_after, k) in [(3usize, 5usize), (10, 9)] {
        let mut setup = Setup::new();
        rich_history(&mut setup, POSITIONS, 77);
        // A clean stop stores the lowest keyframe as of position L...
        let (result, _) = run_stopping(&setup, &registry, Command::Migrate, 1, stopped_after).await;
        assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
        // ... then a crash after the keyframes were flushed further, to K.
        crash_with_the_lowest_keyframe_behind(&setup, &registry, k).await;
        let state = setup.dump_area()["{t}:mig:state"].clone();
        let number = |field: &str| -> u64 { state[field].as_str().unwrap().parse().unwrap() };
        let (lowest, flushed) = (number("lowest_cursor"), number("keyframe_cursor"));
        assert_eq!(lowest, stopped_after as u64 + 1);
        assert!(flushed > lowest, "{state:?}");
        // The resume reads the live events after L only.
        forget_live_events(&mut setup, 1..=lowest);
        let lines = setup.run_ok(&registry, Command::Migrate).await;
        assert!(
            lines.iter().any(|l| l
                == &format!(
                    "Rebuilding the keyframe of migration index 1 from the live events of positions {} to {flushed}",
                    lowest + 1
                )),
            "{lines:?}"
        );
        assert_eq!(setup.dump_area(), expected, "L={lowest} K={flushed}");
    }
}

#[tokio::test]
async fn without_a_stored_lowest_keyframe_the_resume_rebuilds_it_from_position_1() {
    let registry = registry(vec![
        std::sync::Arc::new(ReadsContext),
        rename_field("0003_rename", "motion", "title", "name"),
    ]);
    let mut reference = Setup::new();
    rich_history(&mut reference, POSITIONS, 77);
    reference.run_ok(&registry, Command::Migrate).await;
    let expected = reference.dump_area();

    let mut setup = Setup::new();
    rich_history(&mut setup, POSITIONS, 77);
    crash_with_the_lowest_keyframe_behind(&setup, &registry, 7).await;
    let state = setup.dump_area()["{t}:mig:state"].clone();
    assert!(state.get("lowest_cursor").is_none(), "{state:?}");
    let flushed = state["keyframe_cursor"].as_str().unwrap().to_string();
    let lines = setup.run_ok(&registry, Command::Migrate).await;
    assert!(
        lines.iter().any(|l| l
            == &format!(
                "Rebuilding the keyframe of migration index 1 from the live events of positions 1 to {flushed}"
            )),
        "{lines:?}"
    );
    assert_eq!(setup.dump_area(), expected);
}

#[tokio::test]
async fn declarative_chain_keeps_only_the_target_keyframe_with_the_same_result() {
    // Same operations, once as Rust migrations (a keyframe per MI, MIs 2 and
    // 3 stored) and once declarative (only MI 4 kept): the migrated events,
    // the target keyframe and the finalized datastore are byte-identical.
    let mut general = uninterrupted(&chain_registry(), Command::Migrate).await;
    let mut blind = uninterrupted(&declarative_chain_registry(), Command::Migrate).await;
    let (general_area, blind_area) = (general.dump_area(), blind.dump_area());
    let keyframe_mis = |area: &std::collections::BTreeMap<String, serde_json::Value>| {
        let mut mis: Vec<String> = area
            .keys()
            .filter_map(|k| k.strip_prefix("{t}:mig:keyframe:"))
            .filter_map(|rest| rest.split(':').next())
            .map(str::to_string)
            .collect();
        mis.dedup();
        mis
    };
    // The general path stores the lowest keyframe (MI 1) too, at lowest
    // flushes (here only at the end).
    assert_eq!(keyframe_mis(&general_area), ["1", "2", "3", "4"]);
    assert_eq!(keyframe_mis(&blind_area), ["4"]);
    let same = |key: &str| general_area[key] == blind_area[key];
    for key in blind_area.keys() {
        if key.starts_with("{t}:mig:keyframe:4:")
            || ["{t}:mig:events", "{t}:mig:position_mi", "{t}:mig:mi_counts"]
                .contains(&key.as_str())
        {
            assert!(same(key), "{key}");
        }
    }
    assert_eq!(blind_area["{t}:mig:state"]["min_mi"], json!("4"));
    general.run_ok(&chain_registry(), Command::Finalize).await;
    blind
        .run_ok(&declarative_chain_registry(), Command::Finalize)
        .await;
    assert_eq!(general.dump(), blind.dump());
}
