//! SPEC section 7 through the real binaries: workers that crash, pause, stop
//! or run other migrations, with two workers (and two api replicas) on one
//! private Redis and a 1 s lease.

use std::time::{Duration, Instant};

use migration_tests::migration_jobs::*;
use migration_tests::{ApiClient, TestCluster};
use redis::Commands;

/// Index of the worker process that holds the lock now.
fn holder_index(cluster: &TestCluster, worker_ids: &[String]) -> usize {
    let lock = lock(cluster);
    let holder = lock
        .get("worker_id")
        .unwrap_or_else(|| panic!("nobody holds the lock: {:?}", current_job(cluster)))
        .clone();
    worker_ids
        .iter()
        .position(|id| *id == holder)
        .unwrap_or_else(|| panic!("lock held by unknown worker {holder}"))
}

/// Posts `migrate`, lets the job run for half a second and returns the index
/// of the worker process holding it.
async fn migrating_holder(
    cluster: &TestCluster,
    client: &ApiClient,
    worker_ids: &[String],
) -> usize {
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    wait_for_job_state(cluster, "running", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder_index(cluster, worker_ids)
}

/// Starts the workers one by one and learns their ids from `workers`.
async fn start_workers(cluster: &mut TestCluster, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut conn = cluster.redis_connection();
    for started in 1..=count {
        cluster.start_worker();
        cluster
            .wait_for_workers(started as u64, Duration::from_secs(20))
            .await;
        let members: Vec<String> = conn.zrange(cluster.keys().workers(), 0, -1).unwrap();
        let new = members
            .into_iter()
            .find(|id| !ids.contains(id))
            .expect("a new worker id");
        ids.push(new);
    }
    ids
}

/// `cache_models`: the workers' `WORKER_KEYFRAME_CACHE_MODELS` (default:
/// unset), so that the survivor also resumes with most models in Redis.
async fn killed_mid_command_gives_the_uninterrupted_result(
    crash_during: &str,
    cache_models: Option<&'static str>,
) {
    const POSITIONS: u64 = 40;
    let expected = control_run(POSITIONS).await;

    let mut cluster = match cache_models {
        None => cluster(2, 0, 20, 0),
        Some(models) => TestCluster::builder()
            .apis(2)
            .workers(0)
            .migrations(MIGRATIONS)
            .configure(move |options| {
                options
                    .worker_lock_ttl_ms(LEASE_MS)
                    .worker_max_positions_per_second(20)
                    .migration_wait_ms(0)
                    .env("WORKER_KEYFRAME_CACHE_MODELS", models)
            })
            .start(),
    };
    let ids = start_workers(&mut cluster, 2).await;
    let client = cluster.client();
    seed(&client, POSITIONS).await;
    // finalize migrates everything itself, then flips: the same result as
    // migrate + finalize
    let (status, answer) = client.post_migration(crash_during).await;
    assert_eq!(status, 200, "{answer}");
    wait_for_job_state(&cluster, "running", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let victim = holder_index(&cluster, &ids);
    let victim_id = ids[victim].clone();
    cluster.workers[victim].kill9();

    let answer = finished(&cluster.client_for(1), Duration::from_secs(60)).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    let output = output_of(&answer);
    let survivor_id = &ids[1 - victim];
    assert!(
        output.contains(&format!(
            "Worker {survivor_id} took the job over from worker {victim_id}"
        )),
        "{output}"
    );
    let job = current_job(&cluster);
    assert_eq!(job["attempts"], "1");
    if crash_during == "migrate" {
        let (status, answer) = client.post_migration("finalize").await;
        assert_eq!(status, 200, "{answer}");
        finished(&client, Duration::from_secs(30)).await;
    }
    assert_eq!(migrated_content(cluster.snapshot()), expected);
}

#[tokio::test]
async fn kill_9_mid_migrate_the_other_worker_finishes_like_an_uninterrupted_run() {
    killed_mid_command_gives_the_uninterrupted_result("migrate", None).await;
}

#[tokio::test]
async fn kill_9_mid_finalize_the_other_worker_finishes_like_an_uninterrupted_run() {
    killed_mid_command_gives_the_uninterrupted_result("finalize", None).await;
}

#[tokio::test]
async fn kill_9_mid_migrate_with_a_two_model_keyframe_cache_finishes_like_an_uninterrupted_run() {
    // 27 models through caches of 2: both workers read most of the target
    // keyframe back from Redis, the survivor from what the victim flushed.
    killed_mid_command_gives_the_uninterrupted_result("migrate", Some("2")).await;
}

#[tokio::test]
async fn sigterm_hands_the_job_over_at_once_without_waiting_for_the_lease() {
    // A 60 s lease: a takeover would take a minute; a hand-over takes none.
    let mut cluster = TestCluster::builder()
        .apis(1)
        .migrations(MIGRATIONS)
        .configure(|options| {
            options
                .worker_lock_ttl_ms(60_000)
                .worker_max_positions_per_second(10)
                .migration_wait_ms(0)
        })
        .start();
    let ids = start_workers(&mut cluster, 2).await;
    let client = cluster.client();
    seed(&client, 30).await;
    let leaving = migrating_holder(&cluster, &client, &ids).await;
    let started = Instant::now();
    let status = cluster.workers[leaving].sigterm();
    assert_eq!(status.code(), Some(0), "{}", cluster.log_tails());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slow shutdown: {:?}",
        started.elapsed()
    );
    let answer = finished(&client, Duration::from_secs(30)).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "hand-over waited for the lease"
    );
    assert!(answer.get("exception").is_none(), "{answer}");
    let output = output_of(&answer);
    let (gone, stays) = (&ids[leaving], &ids[1 - leaving]);
    assert!(
        output.contains(&format!("Worker {gone} is shutting down")),
        "{output}"
    );
    assert!(
        output.contains(&format!("Worker {stays} continues job")),
        "{output}"
    );
    assert_eq!(
        current_job(&cluster)["attempts"],
        "0",
        "a hand-over is no takeover"
    );
    assert_eq!(answer["status"], "finalization_required");
}

#[tokio::test]
async fn a_worker_paused_past_its_lease_writes_nothing_after_it_wakes() {
    let mut cluster = cluster(1, 0, 10, 0);
    let ids = start_workers(&mut cluster, 2).await;
    let client = cluster.client();
    seed(&client, 30).await;
    let paused = migrating_holder(&cluster, &client, &ids).await;
    let paused_id = ids[paused].clone();
    cluster.workers[paused].sigstop();
    // the other worker takes over after the lease and finishes the job
    let job = wait_for_job(&cluster, "the takeover", Duration::from_secs(10), |job| {
        job.get("attempts").map(String::as_str) == Some("1")
    })
    .await;
    assert_ne!(job["worker_id"], paused_id);
    wait_for_job_state(&cluster, "finished", Duration::from_secs(30)).await;
    let output_before = read_all_output(&cluster);
    let area_before = migration_area(&cluster);
    cluster.workers[paused].sigcont();
    // it wakes, notices it lost the lock and stops trying ...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = cluster.workers[paused].log();
        if log.contains("no longer ours") || log.contains("lost the job's lease") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the woken worker never noticed:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and wrote nothing meanwhile, nor later
    tokio::time::sleep(Duration::from_millis(LEASE_MS)).await;
    assert!(
        cluster.workers[paused].is_running(),
        "the woken worker must not crash"
    );
    assert_eq!(
        read_all_output(&cluster),
        output_before,
        "the woken worker wrote output"
    );
    assert_eq!(
        migration_area(&cluster),
        area_before,
        "the woken worker wrote to the migration area"
    );
    let answer = finished(&client, Duration::from_secs(5)).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    assert_eq!(answer["status"], "finalization_required");
}

/// Every entry of the current job's output stream: id, line, control.
fn read_all_output(cluster: &TestCluster) -> Vec<(String, Option<String>, Option<String>)> {
    let mut conn = cluster.redis_connection();
    let id: String = conn.get(cluster.keys().current_job()).unwrap();
    let entries: redis::streams::StreamRangeReply =
        conn.xrange_all(cluster.keys().job_output(&id)).unwrap();
    entries
        .ids
        .into_iter()
        .map(|entry| {
            let line = entry.get::<String>("line");
            let control = entry.get::<String>("control");
            (entry.id, line, control)
        })
        .collect()
}

#[tokio::test]
async fn a_worker_with_another_migrations_file_refuses_the_job() {
    let mut cluster = cluster(1, 0, 0, 5_000);
    let other = cluster.write_file(
        "other.json",
        r#"{"migrations": [{"name": "0002_other", "ops": []}]}"#,
    );
    let options = cluster.options().clone().migrations_file(&other);
    cluster.start_worker_with(options);
    cluster.wait_for_workers(1, Duration::from_secs(20)).await;
    let client = cluster.client();
    seed(&client, 3).await;
    let fingerprint = api_fingerprint();
    let answer = final_answer(&client, "migrate", Duration::from_secs(20)).await;
    assert_eq!(
        answer["status"], "migration_required",
        "nothing ran: {answer}"
    );
    let exception = answer["exception"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(
        exception.contains(&fingerprint),
        "names the job's fingerprint: {exception}"
    );
    let worker_fingerprint = exception
        .split_whitespace()
        .map(|word| word.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|word| word.len() == 40 && word.chars().all(|c| c.is_ascii_hexdigit()))
        .find(|word| *word != fingerprint);
    assert!(
        worker_fingerprint.is_some(),
        "names the worker's fingerprint: {exception}"
    );
    assert!(migration_area(&cluster).is_empty());
}

/// The fingerprint of [`MIGRATIONS`], as the api stamps it on a job.
fn api_fingerprint() -> String {
    migration_shared::migrations::Registry::from_json(std::path::Path::new("m.json"), MIGRATIONS)
        .expect("the test migrations are valid")
        .fingerprint()
}

#[tokio::test]
async fn a_worker_warns_when_redis_may_evict_keys() {
    let mut cluster = cluster(0, 0, 0, 0);
    let mut conn = cluster.redis_connection();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut conn)
        .unwrap();
    cluster.start_worker();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.workers[0].log().contains("maxmemory-policy") {
        assert!(
            Instant::now() < deadline,
            "no warning:\n{}",
            cluster.workers[0].log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cluster.workers[0].log().contains("allkeys-lru"));
}
