//! SPEC section 5 through the real `migration-api`: how write requests
//! become positions and stored events, the event-application rules, the
//! all-or-nothing body, the `migration_index` rules and concurrent writers.
//!
//! What a reader answers is checked through the reader routes; what was
//! stored is checked in Redis (`ds:*` keys, see `docs/redis-keys.md`), and
//! every refused write is checked to have changed nothing.

use std::collections::BTreeSet;

use migration_shared::datastore::{Event, Fields, ListValues};
use migration_tests::requests::{
    assert_error, create, delete, names_request_index, restore, update, update_lists,
    write_request_with_mi,
};
use migration_tests::{write_request, ApiClient, TestCluster};
use serde_json::{json, Value};

/// Writes one request and returns `(status, body)`.
async fn write(api: &ApiClient, events: Value) -> (u16, Value) {
    api.write(write_request(events)).await
}

/// The reader's view of `fqid`; panics unless `200`.
async fn model(api: &ApiClient, fqid: &str) -> Value {
    let (status, body) = api.get_model(fqid).await;
    assert_eq!(status, 200, "get {fqid}: {body}");
    assert_eq!(body["success"], json!(true), "{body}");
    body["model"].clone()
}

/// Asserts that writing `events` as one request is refused with `400`, that
/// the message names the fqid and contains `reason`, and that nothing in the
/// datastore changed.
async fn assert_refused(cluster: &TestCluster, events: Value, fqid: &str, reason: &str) {
    let before = cluster.snapshot();
    let (status, body) = write(&cluster.client(), events.clone()).await;
    let message = assert_error(status, &body, 400);
    assert!(
        message.contains(fqid),
        "message should name {fqid}: {message}"
    );
    assert!(
        message.to_lowercase().contains(reason),
        "message should say '{reason}': {message}"
    );
    assert_eq!(
        cluster.snapshot(),
        before,
        "a refused write changed the datastore: {events}"
    );
}

/// A fresh app whose datastore holds `motion/1` with `fields` (position 1),
/// and a client for it.
async fn app_with_motion(fields: Value) -> (TestCluster, ApiClient) {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    api.write_events(json!([create("motion/1", fields)])).await;
    (cluster, api)
}

fn fields(value: Value) -> Fields {
    value.as_object().expect("an object").clone()
}

fn lists(value: Value) -> ListValues {
    serde_json::from_value(value).expect("field -> list of values")
}

// ----- positions and the reader view -----

#[tokio::test]
async fn each_request_becomes_one_position_in_commit_order() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    let (status, body) = api
        .write(json!([
            write_request(json!([create("motion/1", json!({"title": "A"}))])),
            write_request(json!([create("motion/2", json!({"title": "B"}))])),
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"success": true, "positions": [1, 2]}));
    let (status, body) = write(&api, json!([create("motion/3", json!({}))])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["positions"], json!([3]));
    assert_eq!(cluster.stored_position(), Some(3));
    let snapshot = cluster.snapshot();
    assert_eq!(
        snapshot.events.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(snapshot.event_count, Some(3));
    // Position metadata keeps user_id and information.
    let meta: Value = serde_json::from_str(&snapshot.positions[&1]).unwrap();
    assert_eq!(meta["user_id"], json!(1));
    assert_eq!(meta["information"], json!({}));
}

#[tokio::test]
async fn get_returns_exactly_the_fields_and_meta_position() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    write(&api, json!([create("topic/9", json!({"title": "x"}))])).await;
    let position = api
        .write_events(json!([create(
            "motion/1",
            json!({"title": "A", "tag_ids": [1, 2], "nested": {"a": [true, null]}, "n": 12345678901234567_u64})
        )]))
        .await;
    assert_eq!(position, 2);
    assert_eq!(
        model(&api, "motion/1").await,
        json!({"title": "A", "tag_ids": [1, 2], "nested": {"a": [true, null]},
               "n": 12345678901234567_u64, "meta_position": 2})
    );
    // meta_position follows the last position that changed the model.
    let position = api
        .write_events(json!([update("motion/1", json!({"title": "B"}))]))
        .await;
    assert_eq!(
        model(&api, "motion/1").await["meta_position"],
        json!(position)
    );
    assert_eq!(model(&api, "topic/9").await["meta_position"], json!(1));
}

// ----- the update request split (SPEC 5.1) -----

#[tokio::test]
async fn an_update_request_is_stored_as_update_deletefields_listfields_in_that_order() {
    let (cluster, api) = app_with_motion(json!({"title": "A", "text": "t", "tag_ids": [1]})).await;
    let position = api
        .write_events(json!([update_lists(
            "motion/1",
            json!({"title": "B", "text": null}),
            json!({"tag_ids": [2]}),
            json!({})
        )]))
        .await;
    let fqid = "motion/1".parse().unwrap();
    let mut add = ListValues::new();
    add.insert("tag_ids".into(), vec![json!(2)]);
    assert_eq!(
        cluster.stored_events(position),
        vec![
            Event::Update {
                fqid: "motion/1".parse().unwrap(),
                fields: fields(json!({"title": "B"})),
            },
            Event::Deletefields {
                fqid: "motion/1".parse().unwrap(),
                fields: vec!["text".into()],
            },
            Event::Listfields {
                fqid,
                add,
                remove: ListValues::new(),
            },
        ]
    );
    assert_eq!(
        model(&api, "motion/1").await,
        json!({"title": "B", "tag_ids": [1, 2], "meta_position": position})
    );
}

#[tokio::test]
async fn an_update_request_stores_only_its_non_empty_parts() {
    let (cluster, api) =
        app_with_motion(json!({"title": "A", "text": "t", "tag_ids": [1, 2]})).await;
    let fqid = || "motion/1".parse().unwrap();

    let only_nulls = api
        .write_events(json!([update("motion/1", json!({"text": null}))]))
        .await;
    assert_eq!(
        cluster.stored_events(only_nulls),
        vec![Event::Deletefields {
            fqid: fqid(),
            fields: vec!["text".into()]
        }]
    );

    let only_lists = api
        .write_events(json!([update_lists(
            "motion/1",
            json!({}),
            json!({}),
            json!({"tag_ids": [1]})
        )]))
        .await;
    assert_eq!(
        cluster.stored_events(only_lists),
        vec![Event::Listfields {
            fqid: fqid(),
            add: ListValues::new(),
            remove: lists(json!({"tag_ids": [1]})),
        }]
    );

    let only_values = api
        .write_events(json!([update("motion/1", json!({"title": "C"}))]))
        .await;
    assert_eq!(
        cluster.stored_events(only_values),
        vec![Event::Update {
            fqid: fqid(),
            fields: fields(json!({"title": "C"}))
        }]
    );
    assert_eq!(
        model(&api, "motion/1").await,
        json!({"title": "C", "tag_ids": [2], "meta_position": only_values})
    );
}

#[tokio::test]
async fn stored_events_keep_the_request_order_and_types() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    let position = api
        .write_events(json!([
            create("motion/1", json!({"title": "A"})),
            delete("motion/1"),
            restore("motion/1"),
        ]))
        .await;
    let types: Vec<&str> = cluster
        .stored_events(position)
        .iter()
        .map(Event::type_name)
        .collect();
    assert_eq!(types, ["create", "delete", "restore"]);
    assert_eq!(cluster.snapshot().event_count, Some(3));
}

// ----- event-application rules (SPEC 5) -----

#[tokio::test]
async fn create_on_an_existing_fqid_is_refused() {
    let (cluster, api) = app_with_motion(json!({"title": "A"})).await;
    assert_refused(
        &cluster,
        json!([create("motion/1", json!({"title": "again"}))]),
        "motion/1",
        "exists",
    )
    .await;
    // A deleted model still exists: create is refused, restore is the way back.
    api.write_events(json!([delete("motion/1")])).await;
    assert_refused(
        &cluster,
        json!([create("motion/1", json!({"title": "again"}))]),
        "motion/1",
        "exists",
    )
    .await;
}

#[tokio::test]
async fn every_other_event_on_a_missing_fqid_is_refused() {
    // Not empty, so the refusals are checked against a real datastore.
    let (cluster, _) = app_with_motion(json!({"title": "A"})).await;
    for event in [
        update("motion/2", json!({"title": "B"})),
        update("motion/2", json!({"title": null})),
        update_lists("motion/2", json!({}), json!({"tag_ids": [1]}), json!({})),
        delete("motion/2"),
        restore("motion/2"),
        update("topic/1", json!({"title": "B"})),
    ] {
        let fqid = event["fqid"].as_str().unwrap().to_string();
        assert_refused(&cluster, json!([event]), &fqid, "not exist").await;
    }
}

#[tokio::test]
async fn changes_to_a_deleted_model_are_refused() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    api.write_events(json!([
        create("motion/1", json!({"title": "A", "tag_ids": [1]})),
        delete("motion/1"),
    ]))
    .await;
    for event in [
        update("motion/1", json!({"title": "B"})),
        update("motion/1", json!({"title": null})),
        update_lists("motion/1", json!({}), json!({"tag_ids": [2]}), json!({})),
        update_lists("motion/1", json!({}), json!({}), json!({"tag_ids": [1]})),
        delete("motion/1"),
    ] {
        assert_refused(&cluster, json!([event]), "motion/1", "deleted").await;
    }
}

#[tokio::test]
async fn restore_on_a_live_model_is_refused() {
    let (cluster, _) = app_with_motion(json!({"title": "A"})).await;
    assert_refused(
        &cluster,
        json!([restore("motion/1")]),
        "motion/1",
        "not deleted",
    )
    .await;
}

#[tokio::test]
async fn delete_hides_the_model_and_restore_brings_its_fields_back() {
    let (_cluster, api) = app_with_motion(json!({"title": "A", "tag_ids": [1, 2]})).await;
    api.write_events(json!([update("motion/1", json!({"text": "t"}))]))
        .await;
    api.write_events(json!([delete("motion/1")])).await;
    let (status, body) = api.get_model("motion/1").await;
    assert_error(status, &body, 404);
    let (status, body) = api.get_all("motion").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["models"], json!({}));

    let restored_at = api.write_events(json!([restore("motion/1")])).await;
    assert_eq!(
        model(&api, "motion/1").await,
        json!({"title": "A", "tag_ids": [1, 2], "text": "t", "meta_position": restored_at})
    );
    // Restored models are live again: they can be changed and deleted again.
    api.write_events(json!([update("motion/1", json!({"title": "B"}))]))
        .await;
    api.write_events(json!([delete("motion/1")])).await;
}

#[tokio::test]
async fn listfields_add_appends_only_new_values_and_creates_missing_lists() {
    let (_cluster, api) = app_with_motion(json!({"tag_ids": [1, 2], "names": ["a"]})).await;
    api.write_events(json!([update_lists(
        "motion/1",
        json!({}),
        json!({"tag_ids": [2, 3, 3], "names": ["a", "b"], "new_ids": [7]}),
        json!({})
    )]))
    .await;
    let current = model(&api, "motion/1").await;
    assert_eq!(current["tag_ids"], json!([1, 2, 3]));
    assert_eq!(current["names"], json!(["a", "b"]));
    assert_eq!(current["new_ids"], json!([7]), "add creates the list");
}

#[tokio::test]
async fn listfields_remove_takes_values_out_and_ignores_absent_ones() {
    let (_cluster, api) = app_with_motion(json!({"tag_ids": [1, 2, 3], "names": ["a", "b"]})).await;
    api.write_events(json!([update_lists(
        "motion/1",
        json!({}),
        json!({}),
        json!({"tag_ids": [1, 9], "names": ["b"]})
    )]))
    .await;
    let current = model(&api, "motion/1").await;
    assert_eq!(current["tag_ids"], json!([2, 3]));
    assert_eq!(current["names"], json!(["a"]));
}

#[tokio::test]
async fn listfields_on_a_field_that_is_not_a_list_is_refused() {
    let (cluster, _) = app_with_motion(json!({"title": "A"})).await;
    assert_refused(
        &cluster,
        json!([update_lists(
            "motion/1",
            json!({}),
            json!({"title": [1]}),
            json!({})
        )]),
        "motion/1",
        "title",
    )
    .await;
}

#[tokio::test]
async fn update_with_null_removes_the_field() {
    let (_cluster, api) = app_with_motion(json!({"title": "A", "text": "t"})).await;
    let position = api
        .write_events(json!([update(
            "motion/1",
            json!({"text": null, "weight": 3})
        )]))
        .await;
    assert_eq!(
        model(&api, "motion/1").await,
        json!({"title": "A", "weight": 3, "meta_position": position})
    );
}

// ----- all-or-nothing bodies (SPEC 5.1) -----

#[tokio::test]
async fn an_invalid_last_request_writes_nothing() {
    let (cluster, api) = app_with_motion(json!({"title": "A"})).await;
    let before = cluster.snapshot();
    let (status, body) = api
        .write(json!([
            write_request(json!([create("motion/5", json!({"title": "new"}))])),
            write_request(json!([update("motion/1", json!({"title": "changed"}))])),
            write_request(json!([update("motion/7", json!({"title": "missing"}))])),
        ]))
        .await;
    let message = assert_error(status, &body, 400);
    assert!(message.contains("motion/7"), "{message}");
    assert!(
        names_request_index(&message, 2),
        "should name request 2: {message}"
    );
    assert!(message.to_lowercase().contains("not exist"), "{message}");
    assert_eq!(cluster.snapshot(), before);
    assert_eq!(model(&api, "motion/1").await["title"], json!("A"));
    let (status, body) = api.get_model("motion/5").await;
    assert_error(status, &body, 404);
}

#[tokio::test]
async fn an_invalid_event_after_valid_ones_in_one_request_writes_nothing() {
    let (cluster, _) = app_with_motion(json!({"title": "A"})).await;
    assert_refused(
        &cluster,
        json!([
            update("motion/1", json!({"title": "B"})),
            create("motion/2", json!({})),
            restore("motion/1"),
        ]),
        "motion/1",
        "not deleted",
    )
    .await;
}

#[tokio::test]
async fn later_requests_are_validated_against_earlier_ones_of_the_same_body() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    let (status, body) = api
        .write(json!([
            write_request(json!([create("motion/1", json!({"title": "A"}))])),
            write_request(json!([update("motion/1", json!({"title": "B"}))])),
            write_request(json!([delete("motion/1")])),
            write_request(json!([restore("motion/1")])),
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["positions"], json!([1, 2, 3, 4]));
    assert_eq!(
        model(&api, "motion/1").await,
        json!({"title": "B", "meta_position": 4})
    );

    let before = cluster.snapshot();
    let (status, body) = api
        .write(json!([
            write_request(json!([create("topic/1", json!({}))])),
            write_request(json!([create("topic/1", json!({}))])),
        ]))
        .await;
    let message = assert_error(status, &body, 400);
    assert!(message.contains("topic/1"), "{message}");
    assert!(
        names_request_index(&message, 1),
        "should name request 1: {message}"
    );
    assert_eq!(cluster.snapshot(), before);
}

// ----- migration_index (SPEC 5.1) -----

/// A registry with two migrations: target migration index 3.
const TWO_MIGRATIONS: &str = r#"{"migrations": [
  {"name": "0002_rename_title", "ops": [
    {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"}]},
  {"name": "0003_defaults", "ops": [
    {"op": "add_field", "collection": "motion", "field": "weight", "default": 0}]}
]}"#;

fn cluster_with_two_migrations() -> TestCluster {
    TestCluster::builder().migrations(TWO_MIGRATIONS).start()
}

#[tokio::test]
async fn the_first_position_gets_the_given_migration_index() {
    let cluster = cluster_with_two_migrations();
    let api = cluster.client();
    let (status, body) = api
        .write(write_request_with_mi(
            json!([create("motion/1", json!({"title": "A"}))]),
            2,
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cluster.stored_migration_index(), Some(2));
    assert_eq!(cluster.stored_position_mi(1), Some(2));
    // Later positions without a migration_index carry the current one.
    api.write_events(json!([update("motion/1", json!({"title": "B"}))]))
        .await;
    assert_eq!(cluster.stored_position_mi(2), Some(2));
}

#[tokio::test]
async fn the_first_position_defaults_to_the_target_migration_index() {
    let cluster = cluster_with_two_migrations();
    let api = cluster.client();
    api.write_events(json!([create("motion/1", json!({"title": "A"}))]))
        .await;
    assert_eq!(cluster.stored_migration_index(), Some(3));
    assert_eq!(cluster.stored_position_mi(1), Some(3));
}

#[tokio::test]
async fn on_a_non_empty_datastore_the_migration_index_must_be_the_current_one() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    let (status, body) = api
        .write(write_request_with_mi(
            json!([create("motion/1", json!({"title": "A"}))]),
            1,
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .write(write_request_with_mi(
            json!([update("motion/1", json!({"title": "B"}))]),
            1,
        ))
        .await;
    assert_eq!(status, 200, "{body}");

    let before = cluster.snapshot();
    for wrong in [0, 2, 99] {
        let (status, body) = api
            .write(write_request_with_mi(
                json!([update("motion/1", json!({"title": "C"}))]),
                wrong,
            ))
            .await;
        let message = assert_error(status, &body, 400);
        assert!(
            message.to_lowercase().contains("migration"),
            "the message should be about the migration index: {message}"
        );
        assert_eq!(cluster.snapshot(), before);
    }
    // Also inside a multi-request body: the valid first request is not written.
    let (status, body) = api
        .write(json!([
            write_request(json!([update("motion/1", json!({"title": "D"}))])),
            write_request_with_mi(json!([update("motion/1", json!({"title": "E"}))]), 5),
        ]))
        .await;
    assert_error(status, &body, 400);
    assert_eq!(cluster.snapshot(), before);
}

// ----- concurrent writers (SPEC 5.1) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_get_gap_free_positions() {
    const WRITERS: u64 = 8;
    const WRITES_EACH: u64 = 6;
    let cluster = TestCluster::spawn_app();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let api = cluster.client();
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for write in 0..WRITES_EACH {
                let id = writer * WRITES_EACH + write + 1;
                let (status, body) = api
                    .write(write_request(json!([
                        create(&format!("motion/{id}"), json!({"writer": writer})),
                        create(&format!("topic/{id}"), json!({"writer": writer})),
                    ])))
                    .await;
                assert_eq!(status, 200, "{body}");
                positions.push(body["positions"][0].as_u64().unwrap());
            }
            positions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let total = WRITERS * WRITES_EACH;
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "gap-free and unique");
    let snapshot = cluster.snapshot();
    assert_eq!(snapshot.position, Some(total));
    assert_eq!(snapshot.event_count, Some(2 * total));
    // Never interleaved within a position: each position holds exactly the
    // two creates of one request, of the same id.
    for position in 1..=total {
        let events = cluster.stored_events(position);
        assert_eq!(events.len(), 2, "position {position}");
        assert_eq!(events[0].fqid().id(), events[1].fqid().id());
    }
    let (_, body) = cluster.client().get_all("motion").await;
    assert_eq!(body["models"].as_object().unwrap().len() as u64, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_creates_of_one_fqid_exactly_one_succeeds() {
    const WRITERS: usize = 8;
    let cluster = TestCluster::spawn_app();
    // A first position, so the race is on a non-empty datastore too.
    cluster
        .client()
        .write_events(json!([create("topic/1", json!({}))]))
        .await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let api = cluster.client();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            api.write(write_request(json!([create(
                "motion/1",
                json!({"writer": writer})
            )])))
            .await
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            200 => winners.push(body),
            _ => {
                let message = assert_error(status, &body, 400);
                assert!(message.contains("motion/1"), "{message}");
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins: {winners:?}");
    assert_eq!(winners[0]["positions"], json!([2]));
    assert_eq!(cluster.stored_position(), Some(2));
    let distinct: BTreeSet<u64> = cluster.snapshot().events.keys().copied().collect();
    assert_eq!(distinct, BTreeSet::from([1, 2]));
}

// ----- writes while a job runs (SPEC 5.1) -----

/// Makes `job:current` name a job with `cmd` and `state`, as the job queue
/// does (the job record's fields are documented in `docs/redis-keys.md`).
fn set_current_job(cluster: &TestCluster, cmd: &str, state: &str) {
    use redis::Commands;
    let keys = cluster.keys();
    let mut conn = cluster.redis_connection();
    let _: () = conn.set(keys.current_job(), "job-under-test").unwrap();
    let _: () = conn
        .hset_multiple(
            keys.job("job-under-test"),
            &[("cmd", cmd), ("state", state)],
        )
        .unwrap();
}

#[tokio::test]
async fn writes_during_a_finalize_are_503_and_write_nothing() {
    let (cluster, api) = app_with_motion(json!({"title": "A"})).await;
    for state in ["queued", "running"] {
        set_current_job(&cluster, "finalize", state);
        let before = cluster.snapshot();
        let (status, body) = write(&api, json!([update("motion/1", json!({"title": "B"}))])).await;
        let message = assert_error(status, &body, 503);
        assert!(
            message.to_lowercase().contains("finaliz"),
            "the message should say the datastore is being finalized: {message}"
        );
        assert_eq!(cluster.snapshot(), before);
        // Readers go on.
        assert_eq!(model(&api, "motion/1").await["title"], json!("A"));
    }
    set_current_job(&cluster, "finalize", "finished");
    let position = api
        .write_events(json!([update("motion/1", json!({"title": "B"}))]))
        .await;
    assert_eq!(position, 2);
}

#[tokio::test]
async fn writes_go_on_during_a_migrate() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    set_current_job(&cluster, "migrate", "running");
    let position = api
        .write_events(json!([create("motion/1", json!({"title": "A"}))]))
        .await;
    assert_eq!(position, 1);
}

// ----- replicas (SPEC 1) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_replicas_share_one_datastore_and_one_position_sequence() {
    const WRITES_EACH: u64 = 10;
    let cluster = TestCluster::builder().apis(2).start();
    let mut tasks = Vec::new();
    for replica in 0..2 {
        let api = cluster.client_for(replica);
        tasks.push(tokio::spawn(async move {
            let mut positions = Vec::new();
            for write in 0..WRITES_EACH {
                let id = replica as u64 * WRITES_EACH + write + 1;
                positions.push(
                    api.write_events(json!([create(&format!("motion/{id}"), json!({}))]))
                        .await,
                );
            }
            positions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=2 * WRITES_EACH).collect::<Vec<_>>());
    // What one replica wrote, the other reads.
    let (_, from_first) = cluster.client_for(0).get_all("motion").await;
    let (_, from_second) = cluster.client_for(1).get_all("motion").await;
    assert_eq!(from_first, from_second);
    assert_eq!(
        from_first["models"].as_object().unwrap().len() as u64,
        2 * WRITES_EACH
    );
}
