//! `migrate` and `finalize` semantics (SPEC 6.1): what ends up in the
//! migration area and, after finalize, in the live datastore.

use migration_shared::datastore::Model;
use migration_tests::engine::*;
use migration_worker::engine::{Command, EngineError, EngineOptions};
use serde_json::json;

fn motion_history(setup: &mut Setup, mi: u64) {
    setup.write(
        mi,
        vec![
            json!({"type": "create", "fqid": "motion/1", "fields": {"title": "A", "tag_ids": [1]}}),
        ],
    );
    setup.write(
        mi,
        vec![
            json!({"type": "update", "fqid": "motion/1", "fields": {"title": "B"}}),
            json!({"type": "create", "fqid": "motion/2", "fields": {"title": "C", "text": "x"}}),
        ],
    );
    setup.write(mi, vec![json!({"type": "listfields", "fqid": "motion/1", "add": {"tag_ids": [2]}, "remove": {"tag_ids": [1]}})]);
    setup.write(
        mi,
        vec![json!({"type": "deletefields", "fqid": "motion/2", "fields": ["title", "text"]})],
    );
    setup.write(mi, vec![json!({"type": "delete", "fqid": "motion/2"})]);
    setup.write(mi, vec![json!({"type": "restore", "fqid": "motion/2"})]);
}

#[tokio::test]
async fn rename_on_every_event_type_then_finalize() {
    let mut setup = Setup::new();
    motion_history(&mut setup, 1);
    let registry = registry(vec![rename_field("0002_rename", "motion", "title", "name")]);
    let before = setup.dump();

    let lines = setup.run_ok(&registry, Command::Migrate).await;
    assert!(lines[0].starts_with("Started migrate"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("6 positions and 7 events to migrate")),
        "{lines:?}"
    );
    assert!(
        lines.last().unwrap().contains("Migrate finished"),
        "{lines:?}"
    );
    // Live data untouched.
    let after = setup.dump();
    for (key, value) in &before {
        assert_eq!(after.get(key), Some(value), "{key}");
    }
    let area = setup.dump_area();
    assert_eq!(
        area["{t}:mig:position_mi"],
        json!({"1":"2","2":"2","3":"2","4":"2","5":"2","6":"2"})
    );
    assert_eq!(area["{t}:mig:mi_counts"], json!({"2": "6"}));
    let events = &area["{t}:mig:events"];
    assert_eq!(
        events["1"],
        json!(r#"[{"type":"create","fqid":"motion/1","fields":{"name":"A","tag_ids":[1]}}]"#)
    );
    assert_eq!(
        events["4"],
        json!(r#"[{"type":"deletefields","fqid":"motion/2","fields":["name","text"]}]"#)
    );
    // Unchanged positions keep their live JSON byte for byte.
    assert_eq!(events["3"], before["{t}:ds:events"]["3"]);

    let lines = setup.run_ok(&registry, Command::Finalize).await;
    assert!(
        lines
            .last()
            .unwrap()
            .contains("Finalize finished: 6 positions with 7 events"),
        "{lines:?}"
    );
    let models = setup.live_models();
    assert_eq!(
        models["motion/1"].fields,
        json!({"name": "B", "tag_ids": [2]})
            .as_object()
            .unwrap()
            .clone()
    );
    assert_eq!(
        models["motion/2"],
        Model {
            fields: Default::default(),
            position: 6,
            deleted: false
        }
    );
    assert_eq!(setup.get("ds:migration_index").as_deref(), Some("2"));
    assert_eq!(setup.get("ds:event_count").as_deref(), Some("7"));
    let all = setup.dump();
    assert!(
        all.keys().all(|k| !k.starts_with("{t}:mig:")),
        "migration area left: {all:?}"
    );
    assert_eq!(
        all["{t}:ds:position_mi"],
        json!({"1":"2","2":"2","3":"2","4":"2","5":"2","6":"2"})
    );
    assert_eq!(all["{t}:ds:positions"], before["{t}:ds:positions"]);
    assert_eq!(all["{t}:ds:position"], json!("6"));

    // Finalize again: nothing to do, nothing changes.
    let lines = setup.run_ok(&registry, Command::Finalize).await;
    assert!(
        lines.iter().any(|l| l.contains("nothing to migrate")),
        "{lines:?}"
    );
    assert_eq!(setup.dump(), all);
}

#[tokio::test]
async fn fencing_a_wrong_token_writes_nothing() {
    let mut setup = Setup::new();
    motion_history(&mut setup, 1);
    let registry = registry(vec![rename_field("0002_rename", "motion", "title", "name")]);
    let before = setup.dump();
    let engine = setup
        .engine_with(
            &registry,
            EngineOptions::default(),
            TOKEN + 1,
            Default::default(),
        )
        .await;
    for command in [Command::Migrate, Command::Finalize, Command::Reset] {
        let mut sink = VecSink::default();
        let result = engine.run(command, &mut sink).await;
        assert!(
            matches!(result, Err(EngineError::Fenced)),
            "{command:?}: {result:?}"
        );
        assert_eq!(setup.dump(), before, "{command:?}");
    }
}

#[tokio::test]
async fn add_and_remove_on_every_event_type() {
    let mut setup = Setup::new();
    motion_history(&mut setup, 1);
    setup.write(
        1,
        vec![json!({"type": "update", "fqid": "motion/1", "fields": {"tag_ids": [5]}})],
    );
    let registry = registry(vec![
        add_field("0002_add", "motion", "weight", json!(0)),
        remove_field("0003_remove", "motion", "tag_ids"),
    ]);
    setup.run_ok(&registry, Command::Migrate).await;
    let events = setup.dump_area()["{t}:mig:events"].clone();
    let parsed =
        |p: &str| serde_json::from_str::<serde_json::Value>(events[p].as_str().unwrap()).unwrap();
    assert_eq!(
        parsed("1"),
        json!([{"type":"create","fqid":"motion/1","fields":{"title":"A","weight":0}}])
    );
    assert_eq!(
        parsed("2"),
        json!([
        {"type":"create","fqid":"motion/2","fields":{"title":"C","text":"x","weight":0}},
        {"type":"update","fqid":"motion/1","fields":{"title":"B"}}])
    );
    // listfields only on the removed field: empty, dropped.
    assert_eq!(parsed("3"), json!([]));
    assert_eq!(
        parsed("4"),
        json!([{"type":"deletefields","fqid":"motion/2","fields":["title","text"]}])
    );
    assert_eq!(parsed("5"), json!([{"type":"delete","fqid":"motion/2"}]));
    assert_eq!(parsed("6"), json!([{"type":"restore","fqid":"motion/2"}]));
    // update only of the removed field: empty, dropped.
    assert_eq!(parsed("7"), json!([]));
    let lines = setup.run_ok(&registry, Command::Finalize).await;
    assert!(
        lines.last().unwrap().contains("7 positions with 6 events"),
        "{lines:?}"
    );
    let models = setup.live_models();
    assert_eq!(
        models["motion/1"],
        Model {
            fields: json!({"title": "B", "weight": 0})
                .as_object()
                .unwrap()
                .clone(),
            position: 2,
            deleted: false,
        }
    );
    assert_eq!(
        models["motion/2"].fields,
        json!({"weight": 0}).as_object().unwrap().clone()
    );
}

#[tokio::test]
async fn three_chained_migrations_one_to_four() {
    let mut setup = Setup::new();
    setup.write(
        1,
        vec![
            json!({"type": "create", "fqid": "motion/1", "fields": {"title": "A", "legacy": 1}}),
            json!({"type": "create", "fqid": "topic/1", "fields": {"title": "T", "legacy": 1}}),
        ],
    );
    setup.write(
        1,
        vec![json!({"type": "update", "fqid": "motion/1", "fields": {"title": "B", "legacy": 2}})],
    );
    setup.write(
        1,
        vec![json!({"type": "create", "fqid": "motion/2", "fields": {"title": "C", "weight": 7}})],
    );
    let registry = chain_registry();
    let lines = setup.run_ok(&registry, Command::Finalize).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("current migration index 1, target migration index 4")),
        "{lines:?}"
    );
    let models = setup.live_models();
    assert_eq!(
        models["motion/1"].fields,
        json!({"name": "B", "weight": 0})
            .as_object()
            .unwrap()
            .clone()
    );
    assert_eq!(
        models["motion/2"].fields,
        json!({"name": "C", "weight": 7})
            .as_object()
            .unwrap()
            .clone()
    );
    // Other collections are untouched.
    assert_eq!(
        models["topic/1"].fields,
        json!({"title": "T", "legacy": 1})
            .as_object()
            .unwrap()
            .clone()
    );
    assert_eq!(setup.get("ds:migration_index").as_deref(), Some("4"));
    assert_eq!(
        setup.dump()["{t}:ds:position_mi"],
        json!({"1": "4", "2": "4", "3": "4"})
    );
}

#[tokio::test]
async fn one_event_into_several_and_dropped_events() {
    let mut setup = Setup::new();
    setup.write(
        1,
        vec![json!({"type": "create", "fqid": "motion/1", "fields": {"title": "A"}})],
    );
    setup.write(
        1,
        vec![
            json!({"type": "create", "fqid": "log/1", "fields": {"text": "x"}}),
            json!({"type": "update", "fqid": "motion/1", "fields": {"title": "B"}}),
        ],
    );
    // Every motion create also creates a motion_history model; every log
    // event disappears.
    let split: std::sync::Arc<dyn migration_shared::migrations::Migration> =
        std::sync::Arc::new(MapEvents {
            name: "0002_split".into(),
            collection: "motion".into(),
            f: Box::new(|event| match &event {
                migration_shared::datastore::Event::Create { fqid, fields } => vec![
                    event.clone(),
                    migration_shared::datastore::Event::Create {
                        fqid: format!("motion_history/{}", fqid.id()).parse().unwrap(),
                        fields: fields.clone(),
                    },
                ],
                _ => vec![event],
            }),
        });
    let drop: std::sync::Arc<dyn migration_shared::migrations::Migration> =
        std::sync::Arc::new(MapEvents {
            name: "0003_drop_logs".into(),
            collection: "log".into(),
            f: Box::new(|_| vec![]),
        });
    let registry = registry(vec![split, drop]);
    setup.run_ok(&registry, Command::Finalize).await;
    let models = setup.live_models();
    assert_eq!(
        models.keys().collect::<Vec<_>>(),
        ["motion/1", "motion_history/1"]
    );
    assert_eq!(
        models["motion_history/1"].fields,
        json!({"title": "A"}).as_object().unwrap().clone()
    );
    let all = setup.dump();
    assert_eq!(
        all["{t}:ds:collections"],
        json!(["motion", "motion_history"]),
        "log collection deleted"
    );
    assert!(!all.contains_key("{t}:ds:models:log"));
    assert_eq!(all["{t}:ds:event_count"], json!("3"));
}

#[tokio::test]
async fn migrations_read_old_and_new_context() {
    let mut setup = Setup::new();
    setup.write(
        1,
        vec![json!({"type": "create", "fqid": "motion/1", "fields": {"title": "A"}})],
    );
    setup.write(
        1,
        vec![json!({"type": "update", "fqid": "motion/1", "fields": {"title": "B"}})],
    );
    setup.write(
        1,
        vec![json!({"type": "update", "fqid": "motion/1", "fields": {"text": "t"}})],
    );
    let registry = registry(vec![
        rename_field("0002_rename", "motion", "title", "name"),
        std::sync::Arc::new(ReadsContext),
    ]);
    setup.run_ok(&registry, Command::Migrate).await;
    let events = setup.dump_area()["{t}:mig:events"].clone();
    let parsed =
        |p: &str| serde_json::from_str::<serde_json::Value>(events[p].as_str().unwrap()).unwrap();
    // At position 2 the migration 2 -> 3 sees the model before position 2:
    // old (MI 2) has name "A", new (MI 3) too; at position 3 both see "B".
    assert_eq!(
        parsed("2")[0]["fields"],
        json!({"name": "B", "seen_old": "A", "seen_new": "A"})
    );
    assert_eq!(
        parsed("3")[0]["fields"],
        json!({"text": "t", "seen_old": "B", "seen_new": "B"})
    );
    // And old really is the unmigrated view for the first migration.
    let registry = migration_tests::engine::registry(vec![
        std::sync::Arc::new(ReadsContext),
        identity("0003_noop"),
    ]);
    let mut setup2 = Setup::new();
    setup2.write(
        1,
        vec![json!({"type": "create", "fqid": "motion/1", "fields": {"title": "A"}})],
    );
    setup2.write(
        1,
        vec![json!({"type": "update", "fqid": "motion/1", "fields": {"title": "B"}})],
    );
    setup2.write(
        1,
        vec![json!({"type": "update", "fqid": "motion/1", "fields": {"title": "C"}})],
    );
    setup2.run_ok(&registry, Command::Migrate).await;
    let events = setup2.dump_area()["{t}:mig:events"].clone();
    let parsed =
        |p: &str| serde_json::from_str::<serde_json::Value>(events[p].as_str().unwrap()).unwrap();
    // The new view includes the migrated update of position 2 (with seen_*).
    assert_eq!(
        parsed("3")[0]["fields"],
        json!({"title": "C", "seen_old": "B", "seen_new": "B"})
    );
    let keyframe = setup2.dump_area()["{t}:mig:keyframe:2:motion"]["1"].clone();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(keyframe.as_str().unwrap()).unwrap(),
        json!({"title": "C", "seen_old": "B", "seen_new": "B", "meta_position": 3})
    );
}

#[tokio::test]
async fn output_lines_verbose_and_progress() {
    let mut setup = Setup::new();
    rich_history(&mut setup, 30, 5);
    let registry = chain_registry();
    let engine = setup
        .engine(
            &registry,
            EngineOptions {
                verbose: true,
                max_positions_per_second: 0,
            },
        )
        .await;
    let mut sink = VecSink::default();
    engine.run(Command::Migrate, &mut sink).await.unwrap();
    let lines = sink.lines;
    assert_eq!(
        lines[0],
        "Started migrate (target migration index 4, 3 migrations in the registry)"
    );
    assert!(lines[1].starts_with("State: migration_required; current migration index 1, target migration index 4; 30 positions and "), "{lines:?}");
    let verbose: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("Position "))
        .collect();
    assert_eq!(verbose.len(), 30);
    assert_eq!(verbose[0], "Position 1 from MI 1 to MI 4");
    assert_eq!(verbose[29], "Position 30 from MI 1 to MI 4");
    assert_eq!(lines.last().unwrap(), "Migrate finished: all 30 positions are migrated to migration index 4; call finalize to make them live");
    // A short run stays brief: no progress line within the first second.
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("Migrated ") && l.contains('%')),
        "{lines:?}"
    );

    // Already migrated: says so.
    let lines = setup.run_ok(&registry, Command::Migrate).await;
    assert!(
        lines[1].starts_with("State: finalization_required;")
            && lines[1].contains("0 positions and 0 events to migrate"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn throttle_limits_the_rate_and_reports_progress() {
    let mut setup = Setup::new();
    rich_history(&mut setup, 30, 6);
    let registry = chain_registry();
    let engine = setup
        .engine(
            &registry,
            EngineOptions {
                verbose: false,
                max_positions_per_second: 20,
            },
        )
        .await;
    let mut sink = VecSink::default();
    let started = std::time::Instant::now();
    engine.run(Command::Migrate, &mut sink).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    // 30 positions at 20/s: the last batch starts after ~1.4 s.
    assert!(elapsed >= 1.3, "throttle not applied: {elapsed}s");
    assert!(elapsed < 4.0, "too slow: {elapsed}s");
    let progress: Vec<&String> = sink.lines.iter().filter(|l| l.contains('%')).collect();
    assert!(
        !progress.is_empty() && progress.len() <= 2,
        "{:?}",
        sink.lines
    );
    assert!(
        progress[0].starts_with("Migrated ") && progress[0].contains(" of 30 positions ("),
        "{progress:?}"
    );
}

#[tokio::test]
async fn writes_between_migrate_and_finalize_are_migrated_by_finalize() {
    let registry = chain_registry();
    let mut setup = Setup::new();
    rich_history(&mut setup, 20, 8);
    setup.run_ok(&registry, Command::Migrate).await;
    setup.write(1, vec![json!({"type": "create", "fqid": "motion/99", "fields": {"title": "late", "legacy": 1}})]);
    setup.write(
        1,
        vec![json!({"type": "update", "fqid": "motion/99", "fields": {"title": "later"}})],
    );
    let lines = setup.run_ok(&registry, Command::Finalize).await;
    assert!(
        lines.iter().any(|l| l
            .contains("2 positions and 2 events to migrate (20 of 22 positions already migrated)")),
        "{lines:?}"
    );

    let mut reference = Setup::new();
    rich_history(&mut reference, 20, 8);
    reference.write(1, vec![json!({"type": "create", "fqid": "motion/99", "fields": {"title": "late", "legacy": 1}})]);
    reference.write(
        1,
        vec![json!({"type": "update", "fqid": "motion/99", "fields": {"title": "later"}})],
    );
    reference.run_ok(&registry, Command::Finalize).await;
    assert_eq!(setup.dump(), reference.dump());
    assert_eq!(
        setup.live_models()["motion/99"].fields,
        json!({"name": "later", "weight": 0})
            .as_object()
            .unwrap()
            .clone()
    );
}

#[tokio::test]
async fn migrate_then_reset_is_a_dry_run() {
    let mut setup = Setup::new();
    rich_history(&mut setup, 15, 2);
    let before = setup.dump();
    let registry = chain_registry();
    setup.run_ok(&registry, Command::Migrate).await;
    assert!(!setup.dump_area().is_empty());
    let lines = setup.run_ok(&registry, Command::Reset).await;
    assert_eq!(
        lines.last().unwrap(),
        "Reset finished: deleted the migration data of 15 positions"
    );
    assert_eq!(setup.dump(), before);
    let lines = setup.run_ok(&registry, Command::Reset).await;
    assert_eq!(
        lines.last().unwrap(),
        "Reset finished: there was no migration data"
    );
    assert_eq!(setup.dump(), before);
}

#[tokio::test]
async fn nothing_to_migrate_on_empty_or_current_datastore() {
    let mut setup = Setup::new();
    let registry = chain_registry();
    for command in [Command::Migrate, Command::Finalize] {
        let lines = setup.run_ok(&registry, command).await;
        assert!(
            lines.iter().any(|l| l.contains("nothing to migrate")),
            "{lines:?}"
        );
        assert!(setup.dump().is_empty());
    }
    setup.write(
        4,
        vec![json!({"type": "create", "fqid": "motion/1", "fields": {"name": "A"}})],
    );
    let before = setup.dump();
    for command in [Command::Migrate, Command::Finalize] {
        let lines = setup.run_ok(&registry, command).await;
        assert!(
            lines.iter().any(|l| l.contains("nothing to migrate")),
            "{lines:?}"
        );
        assert_eq!(setup.dump(), before);
    }
}

#[tokio::test]
async fn the_run_future_is_send_so_the_runner_can_spawn_it() {
    fn assert_send<T: Send>(value: T) -> T {
        value
    }
    let setup = Setup::new();
    let registry = registry(vec![identity("0002_noop")]);
    let engine = setup.engine(&registry, EngineOptions::default()).await;
    let mut sink = VecSink::default();
    let result = tokio::spawn(async move {
        assert_send(engine.run(Command::Migrate, &mut sink)).await?;
        Ok::<Vec<String>, EngineError>(sink.lines)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        result.iter().any(|l| l.contains("nothing to migrate")),
        "{result:?}"
    );
}

/// Positions whose events end as they were keep their live JSON byte for
/// byte, also when several steps changed them and the last undid the
/// changes, and when the live JSON is not how the events serialise (other
/// key order, spaces, `1.50`). The engine learns "unchanged" from the
/// steps' reports, comparing only where one step may undo another.
#[tokio::test]
async fn changes_undone_by_a_later_step_keep_the_live_json() {
    let there_and_back = |first: &str, second: &str| {
        json!([
            {"name": first, "ops": [
                {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"}]},
            {"name": second, "ops": [
                {"op": "rename_field", "collection": "motion", "old": "name", "new": "title"},
                {"op": "remove_fields", "collection": "topic", "fields": ["legacy"]}]}
        ])
    };
    let registries = [
        // Declarative, across two steps (engine keeps only the target).
        file_registry(json!({"migrations": there_and_back("0002_there", "0003_back")})),
        // Declarative, inside one step.
        file_registry(json!({"migrations": [{"name": "0002_both", "ops": [
            {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"},
            {"op": "rename_field", "collection": "motion", "old": "name", "new": "title"}]}]})),
        // Rust migrations (every MI's keyframe kept).
        registry(vec![
            rename_field("0002_there", "motion", "title", "name"),
            rename_field("0003_back", "motion", "name", "title"),
        ]),
    ];
    let live = [
        r#"[ {"fqid": "motion/1", "type": "create", "fields": {"title": "A", "weight": 1.50}} ]"#,
        r#"[{"fields":{"title":"B"},"fqid":"motion/1","type":"update"}]"#,
        r#"[{"type":"create","fqid":"topic/1","fields":{"title":"T","legacy":1}}]"#,
    ];
    for registry in registries {
        let mut setup = Setup::new();
        setup.write(
            1,
            vec![json!({"type": "create", "fqid": "motion/1", "fields": {"title": "A", "weight": 1.5}})],
        );
        setup.write(
            1,
            vec![json!({"type": "update", "fqid": "motion/1", "fields": {"title": "B"}})],
        );
        setup.write(
            1,
            vec![
                json!({"type": "create", "fqid": "topic/1", "fields": {"title": "T", "legacy": 1}}),
            ],
        );
        for (index, json) in live.iter().enumerate() {
            let _: () =
                redis::Commands::hset(&mut setup.conn, keys().events(), index + 1, *json).unwrap();
        }
        setup.run_ok(&registry, Command::Migrate).await;
        let events = &setup.dump_area()["{t}:mig:events"];
        assert_eq!(events["1"], json!(live[0]), "{registry:?}");
        assert_eq!(events["2"], json!(live[1]), "{registry:?}");
        // The topic lost `legacy` in the first registry only.
        let topic = if registry.migrations().len() == 2 && !registry.reads_context() {
            json!(r#"[{"type":"create","fqid":"topic/1","fields":{"title":"T"}}]"#)
        } else {
            json!(live[2])
        };
        assert_eq!(events["3"], topic, "{registry:?}");
    }
}
