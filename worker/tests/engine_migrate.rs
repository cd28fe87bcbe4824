//! `migrate` and `finalize` semantics (SPEC 6.1): what ends up in the
//! migration area and, after finalize, in the live datastore.

mod engine_common;

use engine_common::*;
use migration_shared::datastore::Model;
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
