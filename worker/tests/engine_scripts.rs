//! The guarantees of the engine's Lua scripts, checked by calling them
//! directly: a refused script (FENCED, STALE) writes nothing, a write
//! repeated after its answer was lost is recognised and changes nothing, and
//! every key a script touches is one it was given in KEYS and checked.

use migration_shared::scripts::{CHECKPOINT, FENCED, FINALIZE, RESET, STALE};
use migration_tests::engine::*;
use migration_worker::engine::Command;
use redis::Commands;
use serde_json::json;

/// One checkpoint of position `to` (events `[]` at MI 2), optionally
/// flushing one keyframe model `motion/<to>` at MI 2 (then `min_mi` 2).
struct Call<'a> {
    token: u64,
    mode: &'a str,
    from: u64,
    to: u64,
    flush: bool,
    /// The old area keys a `fresh` checkpoint deletes (as read by the caller).
    old_keys: Vec<String>,
}

impl Call<'_> {
    fn new(mode: &str, from: u64, to: u64) -> Call<'_> {
        Call {
            token: TOKEN,
            mode,
            from,
            to,
            flush: false,
            old_keys: Vec::new(),
        }
    }

    fn invoke(&self, conn: &mut redis::Connection) -> redis::RedisResult<String> {
        let k = keys();
        let mut invocation = CHECKPOINT.prepare_invoke();
        invocation
            .key(k.lock())
            .key(k.mig_state())
            .key(k.mig_keys())
            .key(k.mig_events())
            .key(k.mig_position_mi())
            .key(k.mig_mi_counts());
        invocation
            .arg(self.token)
            .arg(self.mode)
            .arg(self.from)
            .arg(self.to)
            .arg(2)
            .arg("fp")
            .arg(if self.flush { "2" } else { "" })
            .arg(1)
            .arg(1)
            .arg("")
            .arg(1)
            .arg(self.to)
            .arg(2)
            .arg("[]");
        if self.flush {
            invocation
                .key(k.mig_keyframe(2, "motion"))
                .key(k.mig_keyframe_collections(2));
            invocation
                .arg(1)
                .arg(7)
                .arg(8)
                .arg("motion")
                .arg(1)
                .arg(self.to)
                .arg(r#"{"meta_position":1}"#);
        } else {
            invocation.arg(0);
        }
        invocation.arg(self.old_keys.len());
        for key in &self.old_keys {
            invocation.key(key);
        }
        invocation.invoke(conn)
    }
}

fn area_keys(conn: &mut redis::Connection) -> Vec<String> {
    conn.smembers(keys().mig_keys()).unwrap()
}

#[test]
fn checkpoint_refuses_a_wrong_token_and_a_wrong_cursor() {
    let mut setup = Setup::new();
    let mut wrong_token = Call::new("fresh", 0, 1);
    wrong_token.token = TOKEN + 1;
    let err = wrong_token.invoke(&mut setup.conn).unwrap_err();
    assert_eq!(err.code(), Some(FENCED));
    assert!(setup.dump_area().is_empty());

    assert_eq!(
        Call::new("fresh", 0, 1).invoke(&mut setup.conn).unwrap(),
        "OK"
    );
    let area = setup.dump_area();
    assert_eq!(area["{t}:mig:state"]["cursor"], json!("1"));
    assert_eq!(area["{t}:mig:mi_counts"], json!({"2": "1"}));

    // Continuing from a cursor the area is not at: nothing written.
    let err = Call::new("continue", 5, 6)
        .invoke(&mut setup.conn)
        .unwrap_err();
    assert_eq!(err.code(), Some(STALE));
    assert_eq!(setup.dump_area(), area);
    // Writing position 1 again (resume from 0) counts it once.
    Call::new("resume", 0, 1).invoke(&mut setup.conn).unwrap();
    assert_eq!(setup.dump_area()["{t}:mig:mi_counts"], json!({"2": "1"}));
}

#[test]
fn a_checkpoint_sent_again_after_its_answer_was_lost_is_recognised_and_changes_nothing() {
    let mut setup = Setup::new();
    Call::new("fresh", 0, 1).invoke(&mut setup.conn).unwrap();
    for flush in [false, true] {
        let from: u64 = setup.dump_area()["{t}:mig:state"]["cursor"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let mut call = Call::new("continue", from, from + 1);
        call.flush = flush;
        assert_eq!(call.invoke(&mut setup.conn).unwrap(), "OK");
        let landed = setup.dump_area();
        assert_eq!(
            landed["{t}:mig:state"]["cursor"],
            json!((from + 1).to_string())
        );
        // The same call again: the cursor is already at its target.
        assert_eq!(
            call.invoke(&mut setup.conn).unwrap(),
            "ALREADY",
            "flush={flush}"
        );
        assert_eq!(setup.dump_area(), landed, "flush={flush}");
        // Another checkpoint from the old cursor is still refused.
        let err = Call::new("continue", from, from + 2)
            .invoke(&mut setup.conn)
            .unwrap_err();
        assert_eq!(err.code(), Some(STALE));
        assert_eq!(setup.dump_area(), landed);
    }

    // A resume that flushes, sent twice: the keyframe cursor moved to its
    // target, so the second is recognised.
    let state = setup.dump_area()["{t}:mig:state"].clone();
    let flushed: u64 = state["keyframe_cursor"].as_str().unwrap().parse().unwrap();
    let mut resume = Call::new("resume", flushed, flushed + 1);
    resume.flush = true;
    assert_eq!(resume.invoke(&mut setup.conn).unwrap(), "OK");
    let landed = setup.dump_area();
    assert_eq!(resume.invoke(&mut setup.conn).unwrap(), "ALREADY");
    assert_eq!(setup.dump_area(), landed);
    // A resume without a flush leaves the keyframe cursor: sent twice, it is
    // written again, to the same bytes.
    let resume = Call::new("resume", flushed + 1, flushed + 2);
    resume.invoke(&mut setup.conn).unwrap();
    let landed = setup.dump_area();
    resume.invoke(&mut setup.conn).unwrap();
    assert_eq!(setup.dump_area(), landed);
}

#[test]
fn a_resume_of_an_area_without_a_cursor_field_does_no_arithmetic_on_it() {
    let mut setup = Setup::new();
    // A state with the registry's target and fingerprint but no cursor at
    // all (as a hand-edited or half-restored area may look).
    let _: () = setup
        .conn
        .hset_multiple(
            keys().mig_state(),
            &[("target", "2"), ("fingerprint", "fp")],
        )
        .unwrap();
    assert_eq!(
        Call::new("resume", 0, 1).invoke(&mut setup.conn).unwrap(),
        "OK"
    );
    assert_eq!(setup.dump_area()["{t}:mig:state"]["cursor"], json!("1"));
}

#[test]
fn a_fresh_checkpoint_deletes_exactly_the_area_keys_it_was_given() {
    let mut setup = Setup::new();
    let mut call = Call::new("fresh", 0, 1);
    call.flush = true;
    call.invoke(&mut setup.conn).unwrap();
    // An area key the caller did not read (a stale list): refused.
    let mut stale = Call::new("fresh", 0, 1);
    stale.old_keys = vec![keys().mig_events()];
    let before = setup.dump_area();
    let err = stale.invoke(&mut setup.conn).unwrap_err();
    assert_eq!(err.code(), Some(STALE));
    assert_eq!(setup.dump_area(), before);
    // The exact list: the old keyframe is gone.
    let mut fresh = Call::new("fresh", 0, 1);
    fresh.old_keys = area_keys(&mut setup.conn);
    fresh.invoke(&mut setup.conn).unwrap();
    let area = setup.dump_area();
    assert!(
        !area.contains_key(&keys().mig_keyframe(2, "motion")),
        "{area:?}"
    );
    assert_eq!(area["{t}:mig:state"]["cursor"], json!("1"));
}

/// The flip with the keys and names the caller passes.
fn finalize_with(
    conn: &mut redis::Connection,
    target: u64,
    fingerprint: &str,
    live: &[String],
    keyframes: &[String],
    area: &[String],
) -> redis::RedisResult<(u64, u64, u64)> {
    let k = keys();
    let mut invocation = FINALIZE.prepare_invoke();
    invocation
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
        .key(k.mig_keyframe_collections(target));
    for collection in live {
        invocation.key(k.models(collection));
    }
    for collection in keyframes {
        invocation
            .key(k.mig_keyframe(target, collection))
            .key(k.models(collection));
    }
    for key in area {
        invocation.key(key);
    }
    invocation
        .arg(TOKEN)
        .arg(target)
        .arg(fingerprint)
        .arg(live.len())
        .arg(keyframes.len())
        .arg(area.len());
    for name in live.iter().chain(keyframes) {
        invocation.arg(name);
    }
    invocation.invoke(conn)
}

/// The sets the flip's keys come from, as the engine reads them.
fn finalize_sets(conn: &mut redis::Connection, target: u64) -> [Vec<String>; 3] {
    let k = keys();
    [
        conn.smembers(k.collections()).unwrap(),
        conn.smembers(k.mig_keyframe_collections(target)).unwrap(),
        conn.smembers(k.mig_keys()).unwrap(),
    ]
}

/// A migrated, not yet finalized datastore (target 4).
async fn migrated() -> (
    Setup,
    std::sync::Arc<migration_shared::migrations::Registry>,
) {
    let mut setup = Setup::new();
    rich_history(&mut setup, 5, 4);
    let registry = chain_registry();
    setup.run_ok(&registry, Command::Migrate).await;
    (setup, registry)
}

#[tokio::test]
async fn finalize_refuses_an_incomplete_area() {
    let (mut setup, registry) = migrated().await;
    // A position the area does not have (a write that slipped in).
    setup.write(
        1,
        vec![json!({"type": "create", "fqid": "motion/77", "fields": {"title": "x"}})],
    );
    let before = setup.dump();
    let [live, keyframes, area] = finalize_sets(&mut setup.conn, 4);
    let err = finalize_with(
        &mut setup.conn,
        4,
        &registry.fingerprint(),
        &live,
        &keyframes,
        &area,
    )
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

#[tokio::test]
async fn finalize_checks_every_rename_source_before_its_first_write() {
    let (mut setup, registry) = migrated().await;
    // A keyframe listed in its collections set but missing: the RENAME
    // would fail half-way; the script refuses before writing anything.
    let _: () = setup.conn.del(keys().mig_keyframe(4, "topic")).unwrap();
    let before = setup.dump();
    let [live, keyframes, area] = finalize_sets(&mut setup.conn, 4);
    assert!(keyframes.contains(&"topic".to_string()), "{keyframes:?}");
    let err = finalize_with(
        &mut setup.conn,
        4,
        &registry.fingerprint(),
        &live,
        &keyframes,
        &area,
    )
    .unwrap_err();
    assert_eq!(err.code(), Some(STALE), "{err}");
    assert!(err.to_string().contains("is missing"), "{err}");
    assert_eq!(setup.dump(), before);
}

#[tokio::test]
async fn finalize_refuses_keys_that_are_not_the_sets_members() {
    let (mut setup, registry) = migrated().await;
    let before = setup.dump();
    let [live, keyframes, area] = finalize_sets(&mut setup.conn, 4);
    let fingerprint = registry.fingerprint();
    let fewer = |list: &[String]| list[1..].to_vec();
    let mut other = live.clone();
    other[0] = "other".into();
    for (live, keyframes, area) in [
        (fewer(&live), keyframes.clone(), area.clone()),
        (other, keyframes.clone(), area.clone()),
        (live.clone(), fewer(&keyframes), area.clone()),
        (live.clone(), keyframes.clone(), fewer(&area)),
    ] {
        let err =
            finalize_with(&mut setup.conn, 4, &fingerprint, &live, &keyframes, &area).unwrap_err();
        assert_eq!(err.code(), Some(STALE), "{err}");
        assert_eq!(setup.dump(), before);
    }
}

#[tokio::test]
async fn a_flip_sent_again_after_its_answer_was_lost_is_recognised_and_changes_nothing() {
    let (mut setup, registry) = migrated().await;
    let fingerprint = registry.fingerprint();
    let [live, keyframes, area] = finalize_sets(&mut setup.conn, 4);
    let (positions, events, already) =
        finalize_with(&mut setup.conn, 4, &fingerprint, &live, &keyframes, &area).unwrap();
    assert_eq!((positions, already), (5, 0));
    let flipped = setup.dump();
    assert_eq!(flipped["{t}:ds:migration_index"], json!("4"));
    // The same call again (the sets it names have changed since): it landed.
    let again = finalize_with(&mut setup.conn, 4, &fingerprint, &live, &keyframes, &area).unwrap();
    assert_eq!(again, (positions, events, 1));
    assert_eq!(setup.dump(), flipped);
}

/// `engine_reset.lua` with the area keys passed.
fn reset_with(conn: &mut redis::Connection, area: &[String]) -> redis::RedisResult<u64> {
    let k = keys();
    let mut invocation = RESET.prepare_invoke();
    invocation
        .key(k.lock())
        .key(k.mig_keys())
        .key(k.mig_state())
        .key(k.mig_events())
        .key(k.mig_position_mi())
        .key(k.mig_mi_counts());
    for key in area {
        invocation.key(key);
    }
    invocation.arg(TOKEN).invoke(conn)
}

#[tokio::test]
async fn reset_deletes_exactly_the_area_keys_it_was_given_and_twice_is_harmless() {
    let (mut setup, _registry) = migrated().await;
    let live = setup.dump();
    let live: std::collections::BTreeMap<_, _> = live
        .into_iter()
        .filter(|(key, _)| !key.starts_with("{t}:mig:"))
        .collect();
    let area = area_keys(&mut setup.conn);
    assert!(area.len() > 3, "{area:?}");
    let before = setup.dump();
    let err = reset_with(&mut setup.conn, &area[1..]).unwrap_err();
    assert_eq!(err.code(), Some(STALE));
    assert_eq!(setup.dump(), before);

    assert_eq!(reset_with(&mut setup.conn, &area).unwrap(), 5);
    assert_eq!(setup.dump(), live, "only the migration area is gone");
    // Sent again after its answer was lost: nothing left, nothing changed.
    assert_eq!(reset_with(&mut setup.conn, &[]).unwrap(), 0);
    assert_eq!(setup.dump(), live);
}

#[test]
fn engine_scripts_free_keys_with_unlink_only() {
    // DEL frees a big hash in the script's own time, blocking Redis; UNLINK
    // frees it in a background thread.
    for (name, source) in [
        (
            "engine_checkpoint",
            include_str!("../../shared/lua/engine_checkpoint.lua"),
        ),
        (
            "engine_finalize",
            include_str!("../../shared/lua/engine_finalize.lua"),
        ),
        (
            "engine_reset",
            include_str!("../../shared/lua/engine_reset.lua"),
        ),
    ] {
        let code: String = source
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!code.contains("'DEL'"), "{name} uses DEL");
        assert!(code.contains("'UNLINK'"), "{name}");
        // Keys come from KEYS, never concatenated from names in the script.
        assert!(!code.contains("base .."), "{name} builds a key name");
        assert!(
            !code.contains("'mig:") && !code.contains("'ds:"),
            "{name} builds a key name"
        );
    }
}
