//! Commands that fail (SPEC 6.1): bad position MIs are refused before
//! anything is written; a failing migration names the position and the
//! migration, in the exception and in the output's last line.

use std::sync::Arc;

use migration_shared::migrations::{Migration, Registry};
use migration_tests::engine::*;
use migration_worker::engine::{Command, EngineError};
use redis::Commands;
use serde_json::json;

fn failed(result: Result<(), EngineError>) -> String {
    match result {
        Err(EngineError::Failed(message)) => message,
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// Runs `command`, asserts that it fails and that the output's last line is
/// the exception; returns the exception.
async fn failure(setup: &Setup, registry: &Arc<Registry>, command: Command) -> String {
    let (result, lines) = setup.run(registry, command).await;
    let message = failed(result);
    assert_eq!(lines.last().unwrap(), &message);
    message
}

/// Asserts that migrate and finalize both fail with `expected` (exception and
/// last output line) and change nothing at all.
async fn assert_refused_unchanged(setup: &mut Setup, registry: &Arc<Registry>, expected: &str) {
    let before = setup.dump();
    for command in [Command::Migrate, Command::Finalize] {
        let message = failure(setup, registry, command).await;
        assert_eq!(message, expected, "{command:?}");
        assert_eq!(setup.dump(), before, "{command:?}");
    }
}

#[tokio::test]
async fn position_above_the_target_changes_nothing() {
    let mut setup = Setup::new();
    rich_history(&mut setup, 6, 1);
    let _: () = setup.conn.hset(keys().position_mi(), 4, 3).unwrap();
    let registry = registry(vec![identity("0002_noop")]);
    assert_refused_unchanged(
        &mut setup,
        &registry,
        "Position 4 has migration index 3, above the target migration index 2; nothing was changed",
    )
    .await;
}

#[tokio::test]
async fn rising_migration_index_changes_nothing() {
    let mut setup = Setup::new();
    rich_history(&mut setup, 6, 1);
    let _: () = setup.conn.hset(keys().position_mi(), 5, 2).unwrap();
    let registry = registry(vec![identity("0002_noop"), identity("0003_noop")]);
    assert_refused_unchanged(
        &mut setup,
        &registry,
        "Position 5 has migration index 2, higher than position 4 with migration index 1; nothing was changed",
    )
    .await;
}

#[tokio::test]
async fn falling_migration_index_is_migrated_from_each_positions_own_index() {
    let mut setup = Setup::new();
    setup.write(
        2,
        vec![json!({"type": "create", "fqid": "motion/1", "fields": {"name": "A"}})],
    );
    setup.write(
        1,
        vec![json!({"type": "update", "fqid": "motion/1", "fields": {"title": "B"}})],
    );
    let registry = registry(vec![rename_field("0002_rename", "motion", "title", "name")]);
    setup.run_ok(&registry, Command::Finalize).await;
    let models = setup.live_models();
    assert_eq!(
        models["motion/1"].fields,
        json!({"name": "B"}).as_object().unwrap().clone()
    );
    assert_eq!(
        setup.dump()["{t}:ds:position_mi"],
        json!({"1": "2", "2": "2"})
    );
}

#[tokio::test]
async fn falling_migration_indices_give_the_same_result_on_both_paths() {
    // Rust migrations (a keyframe per MI, lower ones copied when a lower MI
    // appears) and the same operations as declarative migrations (only the
    // target keyframe) must agree on falling MIs too.
    let history = |setup: &mut Setup| {
        setup.write(
            3,
            vec![
                json!({"type": "create", "fqid": "motion/1", "fields": {"name": "A", "weight": 1}}),
            ],
        );
        setup.write(
            2,
            vec![
                json!({"type": "create", "fqid": "motion/2", "fields": {"name": "B", "legacy": 2}}),
            ],
        );
        setup.write(
            1,
            vec![
                json!({"type": "update", "fqid": "motion/1", "fields": {"title": "C", "legacy": 3}}),
                json!({"type": "create", "fqid": "motion/3", "fields": {"title": "D"}}),
                json!({"type": "create", "fqid": "topic/1", "fields": {"title": "E"}}),
            ],
        );
        setup.write(
            1,
            vec![json!({"type": "update", "fqid": "topic/1", "fields": {"title": "F"}})],
        );
    };
    let mut general = Setup::new();
    history(&mut general);
    let mut blind = Setup::new();
    history(&mut blind);
    general.run_ok(&chain_registry(), Command::Migrate).await;
    blind
        .run_ok(&declarative_chain_registry(), Command::Migrate)
        .await;
    let (general_area, blind_area) = (general.dump_area(), blind.dump_area());
    assert_eq!(
        general_area["{t}:mig:events"], blind_area["{t}:mig:events"],
        "{general_area:?}"
    );
    assert_eq!(
        general_area["{t}:mig:keyframe:4:motion"],
        blind_area["{t}:mig:keyframe:4:motion"]
    );
    assert!(!blind_area.keys().any(|k| k.contains(":mig:keyframe:3:")));
    general.run_ok(&chain_registry(), Command::Finalize).await;
    blind
        .run_ok(&declarative_chain_registry(), Command::Finalize)
        .await;
    assert_eq!(general.dump(), blind.dump());
    assert_eq!(
        blind.live_models()["motion/1"].fields,
        json!({"name": "C", "weight": 1})
            .as_object()
            .unwrap()
            .clone()
    );
}

#[tokio::test]
async fn failing_migration_names_position_and_migration() {
    let mut setup = Setup::new();
    setup.write(
        1,
        vec![json!({"type": "create", "fqid": "topic/1", "fields": {"title": "A"}})],
    );
    setup.write(
        1,
        vec![json!({"type": "create", "fqid": "motion/1", "fields": {"title": "A"}})],
    );
    let fail: Arc<dyn Migration> = Arc::new(FailOnCreate {
        name: "0003_check".into(),
        collection: "motion".into(),
    });
    let registry = registry(vec![identity("0002_noop"), fail]);
    let before = setup.dump();
    let engine = setup
        .engine(&registry, Default::default())
        .await
        .with_batch_positions(1);
    let mut sink = VecSink::default();
    let message = failed(engine.run(Command::Migrate, &mut sink).await);
    assert_eq!(
        message,
        "migration '0003_check' (to MI 3) failed at position 2: motion/1 lacks field 'name'"
    );
    assert_eq!(sink.lines.last().unwrap(), &message);
    // Live data untouched; position 1 was checkpointed before the failure.
    let after = setup.dump();
    for (key, value) in &before {
        assert_eq!(after.get(key), Some(value), "{key}");
    }
    assert_eq!(after["{t}:mig:state"]["cursor"], json!("1"));
    assert_eq!(failure(&setup, &registry, Command::Finalize).await, message);
    assert_eq!(setup.get("ds:migration_index").as_deref(), Some("1"));
}

#[tokio::test]
async fn migrated_event_that_cannot_be_applied_fails_the_migration() {
    let mut setup = Setup::new();
    setup.write(
        1,
        vec![json!({"type": "create", "fqid": "motion/1", "fields": {"title": "A"}})],
    );
    setup.write(
        1,
        vec![json!({"type": "update", "fqid": "motion/1", "fields": {"title": "B"}})],
    );
    // Turns the update into a create of an existing model.
    let broken: Arc<dyn Migration> = Arc::new(MapEvents {
        name: "0002_broken".into(),
        collection: "motion".into(),
        f: Box::new(|event| match event {
            migration_shared::datastore::Event::Update { fqid, fields } => {
                vec![migration_shared::datastore::Event::Create { fqid, fields }]
            }
            other => vec![other],
        }),
    });
    let registry = registry(vec![broken]);
    let message = failure(&setup, &registry, Command::Migrate).await;
    assert_eq!(
        message,
        "migration '0002_broken' (to MI 2) failed at position 2: its event create motion/1 cannot be applied: model already exists"
    );
    assert!(
        setup.dump_area().is_empty(),
        "nothing written: {:?}",
        setup.dump_area()
    );
}

#[tokio::test]
async fn multi_line_migration_error_is_one_output_line() {
    struct Multiline;
    impl Migration for Multiline {
        fn name(&self) -> &str {
            "0002_multiline"
        }
        fn fingerprint_source(&self) -> String {
            "multiline".into()
        }
        fn migrate(
            &self,
            _context: &migration_shared::migrations::MigrationContext<'_>,
            _events: Vec<migration_shared::datastore::Event>,
        ) -> Result<
            Vec<migration_shared::datastore::Event>,
            migration_shared::migrations::MigrationError,
        > {
            Err(migration_shared::migrations::MigrationError(
                "first\nsecond".into(),
            ))
        }
    }
    let mut setup = Setup::new();
    setup.write(
        1,
        vec![json!({"type": "create", "fqid": "motion/1", "fields": {"title": "A"}})],
    );
    let registry = registry(vec![Arc::new(Multiline)]);
    // VecSink asserts that no line contains a newline.
    let message = failure(&setup, &registry, Command::Migrate).await;
    assert_eq!(
        message,
        "migration '0002_multiline' (to MI 2) failed at position 1: first second"
    );
}

#[tokio::test]
async fn missing_live_events_fail_with_a_last_line() {
    let mut setup = Setup::new();
    rich_history(&mut setup, 4, 2);
    let _: () = setup.conn.hdel(keys().events(), 3).unwrap();
    let registry = registry(vec![identity("0002_noop")]);
    let message = failure(&setup, &registry, Command::Migrate).await;
    assert!(
        message.contains("Position 3 has no stored events"),
        "{message}"
    );
}
