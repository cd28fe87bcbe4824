//! The write path against a real (private) Redis: atomicity, concurrency,
//! the finalize refusal and the MI rules of SPEC 5.1.

use migration_shared::datastore::{parse_write_body, Datastore, Fqid, WriteError, WriteRequest};
use migration_shared::keys::Keys;
use migration_tests::RedisServer;
use redis::Commands;
use serde_json::{json, Value};
use std::time::Duration;

async fn datastore(redis: &RedisServer) -> Datastore {
    Datastore::new(redis.connection_manager().await, Keys::new("t"), 3)
}

fn body(value: Value) -> Vec<WriteRequest> {
    parse_write_body(value).unwrap()
}

fn create(fqid: &str) -> Value {
    json!({"user_id": 1, "events": [{"type": "create", "fqid": fqid, "fields": {"title": fqid}}]})
}

#[tokio::test]
async fn concurrent_writers_never_interleave_and_leave_no_gaps() {
    let redis = RedisServer::start();
    let store = datastore(&redis).await;
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for round in 0..25 {
                let a = format!("motion/{}", writer * 1000 + round * 2 + 1);
                let b = format!("motion/{}", writer * 1000 + round * 2 + 2);
                let written = store
                    .write(body(json!([create(&a), create(&b)])))
                    .await
                    .unwrap();
                assert_eq!(written.len(), 2);
                assert_eq!(
                    written[1],
                    written[0] + 1,
                    "one body's positions are consecutive"
                );
                positions.extend(written);
            }
            positions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=400).collect::<Vec<u64>>(),
        "gap-free, each position once"
    );
    let mut conn = redis.connection();
    let keys = Keys::new("t");
    let last: u64 = conn.get(keys.position()).unwrap();
    let events: u64 = conn.get(keys.event_count()).unwrap();
    let stored: u64 = conn.hlen(keys.events()).unwrap();
    assert_eq!((last, events, stored), (400, 400, 400));
}

#[tokio::test]
async fn a_contested_create_succeeds_exactly_once() {
    let redis = RedisServer::start();
    let store = datastore(&redis).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.write(body(create("motion/1"))).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(positions) => {
                ok += 1;
                assert_eq!(positions, vec![1]);
            }
            Err(WriteError::Invalid(message)) => {
                assert!(
                    message.contains("motion/1") && message.contains("already exists"),
                    "{message}"
                )
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn an_invalid_last_request_writes_nothing() {
    let redis = RedisServer::start();
    let store = datastore(&redis).await;
    store.write(body(create("motion/1"))).await.unwrap();
    let err = store
        .write(body(json!([
            create("motion/2"),
            {"user_id": 1, "events": [{"type": "update", "fqid": "motion/2", "fields": {"x": 1}}]},
            {"user_id": 1, "events": [{"type": "delete", "fqid": "motion/3"}]},
        ])))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("request 2: motion/3:"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    let motion2: Fqid = "motion/2".parse().unwrap();
    assert!(store.get(&motion2).await.unwrap().is_none());
    let mut conn = redis.connection();
    let last: u64 = conn.get(Keys::new("t").position()).unwrap();
    assert_eq!(last, 1);
}

#[tokio::test]
async fn writes_are_refused_while_a_finalize_job_is_current() {
    let redis = RedisServer::start();
    let store = datastore(&redis).await;
    let keys = Keys::new("t");
    let mut conn = redis.connection();
    let _: () = conn.set(keys.current_job(), "j1").unwrap();
    let _: () = conn
        .hset_multiple(keys.job("j1"), &[("cmd", "finalize"), ("state", "running")])
        .unwrap();
    assert!(matches!(
        store.write(body(create("motion/1"))).await,
        Err(WriteError::Finalizing)
    ));
    let exists: bool = conn.exists(keys.position()).unwrap();
    assert!(!exists, "nothing written");
    // A running migrate does not block writes; a finished finalize neither.
    let _: () = conn.hset(keys.job("j1"), "cmd", "migrate").unwrap();
    store.write(body(create("motion/1"))).await.unwrap();
    let _: () = conn
        .hset_multiple(
            keys.job("j1"),
            &[("cmd", "finalize"), ("state", "finished")],
        )
        .unwrap();
    store.write(body(create("motion/2"))).await.unwrap();
}

#[tokio::test]
async fn migration_index_rules() {
    let redis = RedisServer::start();
    let store = datastore(&redis).await;
    let keys = Keys::new("t");
    let mut conn = redis.connection();
    // Empty datastore: the first position takes the given MI ...
    let mut first = create("motion/1");
    first["migration_index"] = json!(1);
    let mut second = create("motion/2");
    second["migration_index"] = json!(2);
    let err = store
        .write(body(json!([first.clone(), second])))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("request 1: migration_index 2"),
        "{err}"
    );
    store.write(body(first)).await.unwrap();
    let mi: u64 = conn.get(keys.migration_index()).unwrap();
    assert_eq!(mi, 1);
    // ... later ones must match it, or give none.
    let mut wrong = create("motion/3");
    wrong["migration_index"] = json!(3);
    assert!(matches!(
        store.write(body(wrong)).await,
        Err(WriteError::Invalid(_))
    ));
    store.write(body(create("motion/3"))).await.unwrap();
    let position_mi: u64 = conn.hget(keys.position_mi(), 2).unwrap();
    assert_eq!(position_mi, 1);
    // Without any MI the first position gets the registry's target.
    let other = Datastore::new(redis.connection_manager().await, Keys::new("u"), 3);
    other.write(body(create("motion/1"))).await.unwrap();
    let mi: u64 = conn.get(Keys::new("u").migration_index()).unwrap();
    assert_eq!(mi, 3);
}

#[tokio::test]
async fn a_bulk_body_of_ten_thousand_positions_is_one_commit() {
    let redis = RedisServer::start();
    // The product's connection (long response timeout) and no 5 s route
    // bound: this is about one commit of a very large body, also on a
    // loaded debug build.
    let conn = migration_shared::redis_client::connection_manager(&redis.url()).unwrap();
    let store =
        Datastore::new(conn, Keys::new("t"), 3).with_write_deadline(Duration::from_secs(60));
    let requests: Vec<Value> = (1..=10_000)
        .map(|id| {
            json!({"user_id": 1, "events": [
                {"type": "create", "fqid": format!("motion/{id}"), "fields": {"title": "t", "number": id}},
                {"type": "update", "fqid": format!("motion/{id}"), "fields": {"state": "new"}}]})
        })
        .collect();
    let positions = store.write(body(Value::Array(requests))).await.unwrap();
    assert_eq!(positions.len(), 10_000);
    let models = store.get_all("motion").await.unwrap();
    assert_eq!(models.len(), 10_000);
    assert_eq!(models[&10_000].fields["number"], json!(10_000));
    assert_eq!(models[&10_000].position, 10_000);
    let mut conn = redis.connection();
    let events: u64 = conn.get(Keys::new("t").event_count()).unwrap();
    assert_eq!(events, 20_000);
}

#[tokio::test]
async fn writers_of_the_same_model_retry_and_lose_no_update() {
    let redis = RedisServer::start();
    let store = datastore(&redis).await;
    store.write(body(create("motion/1"))).await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..10 {
                let value = writer * 100 + round;
                store
                    .write(body(
                        json!({"user_id": 1, "events": [{"type": "update", "fqid": "motion/1",
                        "list_fields": {"add": {"tag_ids": [value]}}}]}),
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let model = store
        .get(&"motion/1".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut tags: Vec<u64> = serde_json::from_value(model.fields["tag_ids"].clone()).unwrap();
    tags.sort_unstable();
    let expected: Vec<u64> = (0..6)
        .flat_map(|writer| (0..10).map(move |round| writer * 100 + round))
        .collect();
    assert_eq!(tags, expected, "every concurrent update survived");
    assert_eq!(model.position, 61, "meta_position is the last position");
    let mut conn = redis.connection();
    let stored: u64 = conn.hlen(Keys::new("t").events()).unwrap();
    assert_eq!(stored, 61, "gap-free");
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_refused_before_any_write() {
    let redis = RedisServer::start();
    let store = datastore(&redis).await;
    let keys = Keys::new("t");
    store.write(body(create("motion/1"))).await.unwrap();
    let mut conn = redis.connection();
    // The last key the commit writes: a check half way would leave the
    // positions and models written.
    let _: () = conn.del(keys.event_count()).unwrap();
    let _: () = conn.rpush(keys.event_count(), "x").unwrap();
    let err = store.write(body(create("motion/2"))).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("WRONGTYPE") && message.contains(&keys.event_count()),
        "{message}"
    );
    let last: u64 = conn.get(keys.position()).unwrap();
    let events: u64 = conn.hlen(keys.events()).unwrap();
    let motion2: Option<String> = conn.hget(keys.models("motion"), 2).unwrap();
    assert_eq!((last, events, motion2), (1, 1, None), "nothing written");
}

#[tokio::test]
async fn a_body_that_updates_deletes_and_restores_keeps_the_stored_model_exact() {
    let redis = RedisServer::start();
    let store = datastore(&redis).await;
    store
        .write(body(
            json!({"user_id": 1, "events": [{"type": "create", "fqid": "motion/1",
            "fields": {"title": "A", "big": 12345678901234567_u64, "empty": {}}}]}),
        ))
        .await
        .unwrap();
    store
        .write(body(json!([
            {"user_id": 1, "events": [{"type": "delete", "fqid": "motion/1"}]},
            {"user_id": 1, "events": [{"type": "create", "fqid": "motion/2"}]},
        ])))
        .await
        .unwrap();
    let mut conn = redis.connection();
    let keys = Keys::new("t");
    let deleted: String = conn.hget(keys.models("motion"), 1).unwrap();
    let empty: String = conn.hget(keys.models("motion"), 2).unwrap();
    let parsed: Value = serde_json::from_str(&deleted).unwrap();
    assert_eq!(
        parsed,
        json!({"title": "A", "big": 12345678901234567_u64, "empty": {}, "meta_position": 2, "meta_deleted": true})
    );
    assert_eq!(empty, r#"{"meta_position":3}"#);
    store
        .write(body(
            json!({"user_id": 1, "events": [{"type": "restore", "fqid": "motion/1"}]}),
        ))
        .await
        .unwrap();
    let model = store
        .get(&"motion/1".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        model.fields["big"],
        json!(12345678901234567_u64),
        "integers stay exact"
    );
    assert_eq!(model.position, 4);
}
