//! The guarantees of the engine's Lua scripts, checked by calling them
//! directly: a refused script (FENCED, STALE) writes nothing.

use migration_shared::scripts::{CHECKPOINT, FENCED, FINALIZE, STALE};
use migration_tests::engine::*;
use migration_worker::engine::Command;
use serde_json::json;

fn checkpoint(
    conn: &mut redis::Connection,
    token: u64,
    mode: &str,
    from: u64,
    to: u64,
) -> redis::RedisResult<()> {
    let k = keys();
    CHECKPOINT
        .key(k.lock())
        .key(k.mig_state())
        .key(k.mig_keys())
        .key(k.mig_events())
        .key(k.mig_position_mi())
        .key(k.mig_mi_counts())
        .arg(token)
        .arg(mode)
        .arg(from)
        .arg(to)
        .arg(2)
        .arg("fp")
        .arg("")
        .arg(1)
        .arg(1)
        .arg(1)
        .arg(to)
        .arg(2)
        .arg("[]")
        .arg(0)
        .invoke(conn)
}

#[test]
fn checkpoint_refuses_a_wrong_token_and_a_wrong_cursor() {
    let mut setup = Setup::new();
    let err = checkpoint(&mut setup.conn, TOKEN + 1, "fresh", 0, 1).unwrap_err();
    assert_eq!(err.code(), Some(FENCED));
    assert!(setup.dump_area().is_empty());

    checkpoint(&mut setup.conn, TOKEN, "fresh", 0, 1).unwrap();
    let area = setup.dump_area();
    assert_eq!(area["{t}:mig:state"]["cursor"], json!("1"));
    assert_eq!(area["{t}:mig:mi_counts"], json!({"2": "1"}));

    // Continuing from a cursor the area is not at: nothing written.
    let err = checkpoint(&mut setup.conn, TOKEN, "continue", 5, 6).unwrap_err();
    assert_eq!(err.code(), Some(STALE));
    assert_eq!(setup.dump_area(), area);
    // Writing position 1 again (resume from 0) counts it once.
    checkpoint(&mut setup.conn, TOKEN, "resume", 0, 1).unwrap();
    assert_eq!(setup.dump_area()["{t}:mig:mi_counts"], json!({"2": "1"}));
}

#[tokio::test]
async fn finalize_refuses_an_incomplete_area() {
    let mut setup = Setup::new();
    rich_history(&mut setup, 5, 4);
    let registry = chain_registry();
    setup.run_ok(&registry, Command::Migrate).await;
    // A position the area does not have (a write that slipped in).
    setup.write(
        1,
        vec![json!({"type": "create", "fqid": "motion/77", "fields": {"title": "x"}})],
    );
    let before = setup.dump();
    let k = keys();
    let err = FINALIZE
        .key(k.lock())
        .key(k.mig_state())
        .key(k.mig_keys())
        .key(k.mig_events())
        .key(k.mig_position_mi())
        .key(k.mig_mi_counts())
        .key(k.events())
        .key(k.position_mi())
        .key(k.collections())
        .key(k.migration_index())
        .key(k.event_count())
        .key(k.position())
        .key(k.mig_keyframe_collections(4))
        .arg(TOKEN)
        .arg(4)
        .arg(registry.fingerprint())
        .arg(k.base())
        .invoke::<()>(&mut setup.conn)
        .unwrap_err();
    assert_eq!(err.code(), Some(STALE), "{err}");
    assert_eq!(setup.dump(), before);

    // The engine's finalize migrates the new position and flips.
    setup.run_ok(&registry, Command::Finalize).await;
    assert_eq!(
        setup.live_models()["motion/77"].fields,
        json!({"name": "x", "weight": 0})
            .as_object()
            .unwrap()
            .clone()
    );
}
