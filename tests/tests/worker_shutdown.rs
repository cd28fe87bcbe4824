//! SPEC 7 (`SIGTERM`) through the real binaries, on a datastore big enough
//! that a resume's first phases take a while: a worker that resumes a job
//! and gets `SIGTERM` while it still checks the positions stops there,
//! hands the job back and exits `0` well within the compose file's
//! `stop_grace_period` (30 s), and the next worker finishes the job.

use std::time::{Duration, Instant};

use migration_tests::migration_jobs::*;
use migration_tests::requests::{create, write_request_with_mi};
use migration_tests::TestCluster;
use redis::Commands;
use serde_json::{json, Value};

/// The compose file's `stop_grace_period` for the worker.
const GRACE: Duration = Duration::from_secs(30);
const POSITIONS: u64 = 10_000;

/// Writes `POSITIONS` positions at MI 1 in bodies of 2000 (under 1 MiB).
async fn seed_big(client: &migration_tests::ApiClient) {
    for first in (1..=POSITIONS).step_by(2000) {
        let requests: Vec<Value> = (first..first + 2000)
            .map(|p| {
                write_request_with_mi(
                    json!([create(
                        &format!("motion/{p}"),
                        json!({"title": format!("M{p}"), "legacy": p})
                    )]),
                    1,
                )
            })
            .collect();
        let (status, body) = client.write(Value::Array(requests)).await;
        assert_eq!(status, 200, "seeding failed: {body}");
    }
}

/// Starts a worker with `throttle` positions a second; returns its index
/// and id.
async fn start_worker(cluster: &mut TestCluster, throttle: u32) -> (usize, String) {
    let mut conn = cluster.redis_connection();
    let before: Vec<String> = conn.zrange(cluster.keys().workers(), 0, -1).unwrap();
    let options = cluster
        .options()
        .clone()
        .worker_max_positions_per_second(throttle);
    cluster.start_worker_with(options);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now: Vec<String> = conn.zrange(cluster.keys().workers(), 0, -1).unwrap();
        if let Some(id) = now.into_iter().find(|id| !before.contains(id)) {
            return (cluster.workers.len() - 1, id);
        }
        assert!(Instant::now() < deadline, "{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_holder(cluster: &TestCluster, worker_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while lock(cluster).get("worker_id").map(String::as_str) != Some(worker_id) {
        assert!(Instant::now() < deadline, "{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sigterm_during_a_resume_exits_0_within_the_grace_period() {
    let mut cluster = TestCluster::builder()
        .apis(1)
        .migrations(MIGRATIONS)
        .configure(|options| options.worker_lock_ttl_ms(10_000).migration_wait_ms(0))
        .start();
    let client = cluster.client();
    seed_big(&client).await;

    // A first worker migrates some positions and is stopped: durable
    // progress for the next one to resume.
    let (first, first_id) = start_worker(&mut cluster, 500).await;
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    wait_for_holder(&cluster, &first_id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while migration_area(&cluster).is_empty() {
        assert!(Instant::now() < deadline, "{}", cluster.log_tails());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster.workers[first].sigterm().code(), Some(0));
    let area = migration_area(&cluster);

    // The second resumes; at 50 positions a second its check of the 10 000
    // positions' MIs alone takes about 10 s: SIGTERM comes during it.
    let (second, second_id) = start_worker(&mut cluster, 50).await;
    wait_for_holder(&cluster, &second_id).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let signalled = Instant::now();
    let status = cluster.workers[second].sigterm();
    let took = signalled.elapsed();
    eprintln!("SIGTERM during the resume: exit after {took:?}");
    assert_eq!(status.code(), Some(0), "{}", cluster.log_tails());
    assert!(took < GRACE, "exit took {took:?}");
    let (_, progress) = client.progress().await;
    let output = output_of(&progress);
    assert!(
        output.contains(&format!("Worker {second_id} continues job")),
        "{output}"
    );
    assert!(
        output.contains("Stopped while checking the positions' migration indices"),
        "{output}"
    );
    assert!(
        output.contains(&format!("Worker {second_id} is shutting down")),
        "{output}"
    );
    assert_eq!(
        migration_area(&cluster),
        area,
        "the stopped resume changed nothing"
    );
    assert_eq!(current_job(&cluster)["attempts"], "0", "no takeover");

    // An unthrottled worker finishes the job.
    start_worker(&mut cluster, 0).await;
    let answer = finished(&client, Duration::from_secs(60)).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    assert_eq!(answer["status"], "finalization_required", "{answer}");
    let stats = client.stats().await;
    assert_eq!(
        stats["fully_migrated_positions"],
        json!(POSITIONS),
        "{stats}"
    );
}
