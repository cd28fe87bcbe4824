//! Helpers of the migration-route end-to-end tests
//! (`tests/tests/migration_*.rs`): the migrations they run, a datastore to
//! migrate, and looks into the job's Redis keys.
//!
//! Everything runs through the real binaries ([`TestCluster`]); Redis is
//! only read here (or stopped), never written behind the product's back.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::requests::{create, update, write_request_with_mi};
use crate::{ApiClient, DatastoreSnapshot, TestCluster};
use redis::Commands;
use serde_json::{json, Value};

/// SPEC 4.2, exact.
pub const RUNNING: &str = "Migration is running, only 'progress' command is allowed";
/// SPEC 4.2, exact.
pub const NOT_READ: &str = "Last migration output not read yet. Please call 'progress' first.";

/// Three migrations (MI 1 -> 4) over `motion`, as in SPEC section 6.
pub const MIGRATIONS: &str = r#"{"migrations": [
  {"name": "0002_rename_title", "ops": [
    {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"}]},
  {"name": "0003_defaults", "ops": [
    {"op": "add_field", "collection": "motion", "field": "weight", "default": 0},
    {"op": "remove_fields", "collection": "motion", "fields": ["legacy"]}]},
  {"name": "0004_check", "ops": [
    {"op": "require_fields", "collection": "motion", "fields": ["name"]}]}
]}"#;

/// Short leases keep takeovers fast.
pub const LEASE_MS: u64 = 1000;

/// A cluster with `apis` replicas and `workers` workers over [`MIGRATIONS`],
/// a 1 s lease, `throttle` positions per second and a command wait of
/// `wait_ms`.
pub fn cluster(apis: usize, workers: usize, throttle: u32, wait_ms: u64) -> TestCluster {
    TestCluster::builder()
        .apis(apis)
        .workers(workers)
        .migrations(MIGRATIONS)
        .configure(move |options| {
            options
                .worker_lock_ttl_ms(LEASE_MS)
                .worker_max_positions_per_second(throttle)
                .migration_wait_ms(wait_ms)
        })
        .start()
}

/// Writes `positions` positions at MI 1 (one request each, in one body):
/// position `p` creates `motion/p` (`title`, `legacy`), except every third
/// from 6 on, which updates `motion/{p-1}` (new `title`, `legacy` removed):
/// so every migration has work.
pub async fn seed(client: &ApiClient, positions: u64) {
    let requests: Vec<Value> = (1..=positions)
        .map(|p| {
            // every third position from 6 on updates the motion created
            // just before it
            let events = if p % 3 == 0 && p > 3 {
                json!([update(
                    &format!("motion/{}", p - 1),
                    json!({"title": format!("T{p}"), "legacy": null})
                )])
            } else {
                json!([create(
                    &format!("motion/{p}"),
                    json!({"title": format!("M{p}"), "legacy": p})
                )])
            };
            write_request_with_mi(events, 1)
        })
        .collect();
    let (status, body) = client.write(Value::Array(requests)).await;
    assert_eq!(status, 200, "seeding failed: {body}");
}

/// The current job's hash (empty when there is none).
pub fn current_job(cluster: &TestCluster) -> HashMap<String, String> {
    let keys = cluster.keys();
    let mut conn = cluster.redis_connection();
    let id: Option<String> = conn.get(keys.current_job()).unwrap();
    match id {
        Some(id) => conn.hgetall(keys.job(&id)).unwrap(),
        None => HashMap::new(),
    }
}

/// Waits until the current job's `state` is `state`; panics after `timeout`.
pub async fn wait_for_job_state(
    cluster: &TestCluster,
    state: &str,
    timeout: Duration,
) -> HashMap<String, String> {
    wait_for_job(cluster, &format!("state {state}"), timeout, |job| {
        job.get("state").map(String::as_str) == Some(state)
    })
    .await
}

/// Waits until `condition` holds for the current job; panics after `timeout`.
pub async fn wait_for_job(
    cluster: &TestCluster,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let job = current_job(cluster);
        if condition(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}: {job:?}\n{}",
            cluster.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The lock hash (empty when free).
pub fn lock(cluster: &TestCluster) -> HashMap<String, String> {
    cluster
        .redis_connection()
        .hgetall(cluster.keys().lock())
        .unwrap()
}

/// How many job hashes exist (never more than one).
pub fn job_hashes(cluster: &TestCluster) -> usize {
    let mut conn = cluster.redis_connection();
    let pattern = format!("{}job:*", cluster.keys().base());
    let keys: Vec<String> = conn.keys(pattern).unwrap();
    keys.iter()
        .filter(|key| {
            let kind: String = redis::cmd("TYPE")
                .arg(key.as_str())
                .query(&mut conn)
                .unwrap();
            kind == "hash"
        })
        .count()
}

/// Every migration-area key and its serialized value (to prove nobody
/// wrote to it).
pub fn migration_area(cluster: &TestCluster) -> BTreeMap<String, Vec<u8>> {
    let mut conn = cluster.redis_connection();
    let pattern = format!("{}mig:*", cluster.keys().base());
    let keys: Vec<String> = conn.keys(pattern).unwrap();
    keys.into_iter()
        .map(|key| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query(&mut conn).unwrap();
            (key, dump)
        })
        .collect()
}

/// The `output` of a response, asserting the SPEC 4.1 shape.
#[track_caller]
pub fn output_of(body: &Value) -> String {
    assert_eq!(body["success"], json!(true), "{body}");
    let output = body["output"]
        .as_str()
        .unwrap_or_else(|| panic!("no output in {body}"));
    assert!(
        output.ends_with('\n'),
        "output lines end in \\n: {output:?}"
    );
    output.to_string()
}

/// Sends `progress` until it stops saying `migration_running`.
pub async fn finished(client: &ApiClient, timeout: Duration) -> Value {
    client.wait_until_finished(timeout).await
}

/// Posts `command`, asserts `200`, and returns its final answer: the answer
/// itself, or, while it says `migration_running`, what [`finished`] returns
/// within `timeout`.
pub async fn final_answer(client: &ApiClient, command: &str, timeout: Duration) -> Value {
    let (status, answer) = client.post_migration(command).await;
    assert_eq!(status, 200, "{answer}");
    if answer["status"] == "migration_running" {
        finished(client, timeout).await
    } else {
        answer
    }
}

/// What a migration must reproduce exactly: position, MI, event count,
/// events, per-position MIs and models (position metadata carries
/// timestamps, which differ between two clusters).
pub type MigratedContent = (
    Option<u64>,
    Option<u64>,
    Option<u64>,
    BTreeMap<u64, String>,
    BTreeMap<u64, u64>,
    BTreeMap<String, BTreeMap<u64, String>>,
);

/// The part of `snapshot` a migration must reproduce exactly.
pub fn migrated_content(snapshot: DatastoreSnapshot) -> MigratedContent {
    (
        snapshot.position,
        snapshot.migration_index,
        snapshot.event_count,
        snapshot.events,
        snapshot.position_mi,
        snapshot.models,
    )
}

/// The datastore after an undisturbed migrate + finalize of the seed of
/// `positions` positions: what a disturbed run must equal.
pub async fn control_run(positions: u64) -> MigratedContent {
    let cluster = cluster(1, 1, 0, 5_000);
    let client = cluster.client();
    seed(&client, positions).await;
    for cmd in ["migrate", "finalize"] {
        let answer = final_answer(&client, cmd, Duration::from_secs(30)).await;
        assert!(answer.get("exception").is_none(), "{answer}");
    }
    migrated_content(cluster.snapshot())
}
