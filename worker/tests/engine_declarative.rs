//! The four declarative operations of SPEC 6 (from a `MIGRATIONS_FILE`) on
//! every event type, through the engine, on data written by the real write
//! route code (`Datastore::write`) and read back with its readers.

use migration_shared::datastore::writer::Datastore;
use migration_shared::datastore::{request::WriteRequest, Fqid};
use migration_tests::engine::*;
use migration_worker::engine::{Command, EngineError};
use serde_json::{json, Value};

async fn write(datastore: &Datastore, body: Value) -> Vec<u64> {
    let requests: Vec<WriteRequest> = serde_json::from_value(body).unwrap();
    datastore.write(requests).await.unwrap()
}

async fn get(datastore: &Datastore, fqid: &str) -> Option<Value> {
    let fqid: Fqid = fqid.parse().unwrap();
    datastore
        .get(&fqid)
        .await
        .unwrap()
        .map(|model| model.reader_view())
}

#[tokio::test]
async fn every_declarative_op_on_every_event_type_with_the_real_writer() {
    let setup = Setup::new();
    let datastore = Datastore::new(setup.server.connection_manager().await, keys(), 1);
    write(&datastore, json!([
        {"user_id": 1, "migration_index": 1, "events": [
            {"type": "create", "fqid": "motion/1", "fields": {"title": "A", "legacy": 1, "tag_ids": [1], "old_ids": [7]}},
            {"type": "create", "fqid": "topic/1", "fields": {"title": "T", "legacy": 1}}]},
        {"user_id": 1, "events": [
            {"type": "update", "fqid": "motion/1", "fields": {"title": "B", "legacy": 2, "text": null},
             "list_fields": {"add": {"tag_ids": [2], "old_ids": [8]}, "remove": {"tag_ids": [1]}}}]},
        {"user_id": 1, "events": [
            {"type": "update", "fqid": "motion/1", "fields": {"title": null, "legacy": null}}]},
        {"user_id": 1, "events": [{"type": "delete", "fqid": "motion/1"}]},
        {"user_id": 1, "events": [{"type": "restore", "fqid": "motion/1"}]},
        {"user_id": 1, "events": [
            {"type": "create", "fqid": "motion/2", "fields": {"title": "C", "weight": 5}}]}
    ])).await;
    let registry = file_registry(json!({"migrations": [
        {"name": "0002_rename_title", "ops": [
            {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"},
            {"op": "rename_field", "collection": "motion", "old": "tag_ids", "new": "label_ids"}]},
        {"name": "0003_defaults", "ops": [
            {"op": "add_field", "collection": "motion", "field": "weight", "default": 0},
            {"op": "remove_fields", "collection": "motion", "fields": ["legacy", "old_ids"]}]},
        {"name": "0004_check", "ops": [
            {"op": "require_fields", "collection": "motion", "fields": ["name"]}]}
    ]}));
    setup.run_ok(&registry, Command::Migrate).await;
    // Readers still show the live (unmigrated) data.
    assert_eq!(
        get(&datastore, "motion/2").await.unwrap()["title"],
        json!("C")
    );

    let mut conn = setup.server.connection();
    let area = dump(&mut conn, "mig:events");
    let events = |p: &str| -> Value {
        serde_json::from_str(area["{t}:mig:events"][p].as_str().unwrap()).unwrap()
    };
    assert_eq!(
        events("1"),
        json!([
        {"type": "create", "fqid": "motion/1", "fields": {"name": "A", "label_ids": [1], "weight": 0}},
        {"type": "create", "fqid": "topic/1", "fields": {"title": "T", "legacy": 1}}])
    );
    assert_eq!(
        events("2"),
        json!([
        {"type": "update", "fqid": "motion/1", "fields": {"name": "B"}},
        {"type": "deletefields", "fqid": "motion/1", "fields": ["text"]},
        {"type": "listfields", "fqid": "motion/1", "add": {"label_ids": [2]}, "remove": {"label_ids": [1]}}])
    );
    assert_eq!(
        events("3"),
        json!([{"type": "deletefields", "fqid": "motion/1", "fields": ["name"]}])
    );
    assert_eq!(events("4"), json!([{"type": "delete", "fqid": "motion/1"}]));
    assert_eq!(
        events("5"),
        json!([{"type": "restore", "fqid": "motion/1"}])
    );
    assert_eq!(
        events("6"),
        json!([{"type": "create", "fqid": "motion/2", "fields": {"name": "C", "weight": 5}}])
    );

    setup.run_ok(&registry, Command::Finalize).await;
    assert_eq!(
        get(&datastore, "motion/1").await.unwrap(),
        json!({"label_ids": [2], "weight": 0, "meta_position": 5})
    );
    assert_eq!(
        get(&datastore, "motion/2").await.unwrap(),
        json!({"name": "C", "weight": 5, "meta_position": 6})
    );
    assert_eq!(
        get(&datastore, "topic/1").await.unwrap(),
        json!({"title": "T", "legacy": 1, "meta_position": 1})
    );
    // The writer goes on at the new MI on top of the finalized data.
    let positions = write(
        &datastore,
        json!([{"user_id": 1, "migration_index": 4, "events": [
        {"type": "update", "fqid": "motion/2", "fields": {"name": "D"}}]}]),
    )
    .await;
    assert_eq!(positions, vec![7]);
    assert_eq!(
        get(&datastore, "motion/2").await.unwrap()["name"],
        json!("D")
    );
}

#[tokio::test]
async fn require_fields_failure_names_migration_position_fqid_and_field() {
    let setup = Setup::new();
    let datastore = Datastore::new(setup.server.connection_manager().await, keys(), 1);
    write(
        &datastore,
        json!([
            {"user_id": 1, "migration_index": 1, "events": [
                {"type": "create", "fqid": "motion/1", "fields": {"title": "A"}}]},
            {"user_id": 1, "events": [
                {"type": "create", "fqid": "motion/2", "fields": {"text": "no title"}}]}
        ]),
    )
    .await;
    let registry = file_registry(json!({"migrations": [
        {"name": "0002_check", "ops": [
            {"op": "require_fields", "collection": "motion", "fields": ["title"]}]}
    ]}));
    let (result, lines) = setup.run(&registry, Command::Finalize).await;
    let Err(EngineError::Failed(message)) = result else {
        panic!("{result:?}")
    };
    assert!(
        message.contains("0002_check")
            && message.contains("position 2")
            && message.contains("motion/2")
            && message.contains("title"),
        "{message}"
    );
    assert_eq!(lines.last().unwrap(), &message);
    assert_eq!(
        get(&datastore, "motion/2").await.unwrap()["text"],
        json!("no title")
    );
}
