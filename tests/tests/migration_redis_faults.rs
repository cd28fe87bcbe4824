//! SPEC 7.1 through the real binaries: a Redis that restarts, drops every
//! connection, hangs, stays away longer than a lease, refuses the job's
//! writes, or comes back from an older snapshot (lost acknowledged writes)
//! while a throttled migrate runs. Each result is compared with an
//! undisturbed run of the same data.

use std::time::{Duration, Instant};

use migration_tests::migration_jobs::*;
use migration_tests::{ApiClient, TestCluster};
use redis::Commands;
use serde_json::Value;

/// A cluster of one api and no workers yet, with a lease of `lease_ms` and
/// a throttle, so a migrate of the seed runs for seconds.
fn throttled_cluster(lease_ms: u64, throttle: u32) -> TestCluster {
    TestCluster::builder()
        .apis(1)
        .migrations(MIGRATIONS)
        .configure(move |options| {
            options
                .worker_lock_ttl_ms(lease_ms)
                .worker_max_positions_per_second(throttle)
                .migration_wait_ms(0)
        })
        .start()
}

/// Starts a worker and returns its id (from the `workers` set).
async fn start_worker(cluster: &mut TestCluster) -> String {
    let mut conn = cluster.redis_connection();
    let before: Vec<String> = conn.zrange(cluster.keys().workers(), 0, -1).unwrap();
    cluster.start_worker();
    cluster
        .wait_for_workers(before.len() as u64 + 1, Duration::from_secs(20))
        .await;
    let after: Vec<String> = conn.zrange(cluster.keys().workers(), 0, -1).unwrap();
    after
        .into_iter()
        .find(|id| !before.contains(id))
        .expect("the new worker's id")
}

/// `progress` until it answers 200 (the api's first request after a Redis
/// restart may still meet the broken connection), then its final result.
async fn final_progress(client: &ApiClient) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = client.progress().await;
        if status == 200 && body["status"] != "migration_running" {
            return body;
        }
        assert!(Instant::now() < deadline, "progress: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts `command` once the api answers again (it may meet a connection
/// broken by the last restart first).
async fn post_when_back(client: &ApiClient, command: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = client.post_migration(command).await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{command}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The migration cursor (`mig:state` field `cursor`), 0 before any
/// checkpoint.
fn cursor(cluster: &TestCluster) -> u64 {
    let state: Option<u64> = cluster
        .redis_connection()
        .hget(cluster.keys().mig_state(), "cursor")
        .unwrap();
    state.unwrap_or(0)
}

/// Waits until the lock names `worker_id`; returns its fencing token.
async fn wait_for_holder(cluster: &TestCluster, worker_id: &str, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let lock = lock(cluster);
        if lock.get("worker_id").map(String::as_str) == Some(worker_id) {
            return lock["fencing_token"].parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "worker {worker_id} never held the lock: {lock:?}\n{}",
            cluster.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until worker `index`'s log contains `text`.
async fn wait_for_log(cluster: &mut TestCluster, index: usize, text: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !cluster.workers[index].log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "worker {index} never logged {text:?}:\n{}",
            cluster.workers[index].log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_restore_from_an_older_snapshot_never_hands_a_live_workers_token_to_another() {
    const POSITIONS: u64 = 40;
    let expected = control_run(POSITIONS).await;

    let mut cluster = throttled_cluster(1000, 10);
    let client = cluster.client();
    seed(&client, POSITIONS).await;
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    // the job is queued, nobody holds a token yet: what the backup holds
    let before_any_claim = cluster.redis.snapshot();

    let a = start_worker(&mut cluster).await;
    let token_a = wait_for_holder(&cluster, &a, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while cursor(&cluster) == 0 {
        assert!(Instant::now() < deadline, "worker A made no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.workers[0].sigstop();

    // Redis comes back from the backup: it has forgotten A's claim and
    // every write A made; A still believes it holds the job.
    cluster.redis.restore(&before_any_claim);
    assert!(lock(&cluster).is_empty());
    let b = start_worker(&mut cluster).await;
    let token_b = wait_for_holder(&cluster, &b, Duration::from_secs(10)).await;
    assert!(
        token_b > token_a,
        "B's token {token_b} must exceed the token {token_a} A still holds"
    );
    cluster.workers[0].sigcont();

    // A wakes, finds its writes refused and leaves the job to B
    wait_for_log(
        &mut cluster,
        0,
        "lost the job's lease; it is someone else's now",
        Duration::from_secs(15),
    )
    .await;
    let job = wait_for_job_state(&cluster, "finished", Duration::from_secs(60)).await;
    assert_eq!(job["worker_id"], b);
    assert_eq!(job["attempts"], "0", "B started a queued job: no takeover");
    assert!(cluster.workers[0].is_running(), "A must not crash");
    assert_eq!(
        lock(&cluster).get("fencing_token"),
        None,
        "B finished and released the lock"
    );
    let answer = final_progress(&client).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    let output = output_of(&answer);
    assert!(
        !output.contains(&format!("Worker {a}")),
        "A wrote output after the restore:\n{output}"
    );
    assert_eq!(
        output.matches("Started migrate").count(),
        1,
        "only B's run wrote output:\n{output}"
    );
    assert!(!output.contains("took the job over"), "{output}");

    let answer = final_answer(&client, "finalize", Duration::from_secs(60)).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    assert_eq!(migrated_content(cluster.snapshot()), expected);
}

#[tokio::test]
async fn six_redis_restarts_during_a_migrate_are_no_takeover() {
    six_disruptions_are_no_takeover(|cluster| cluster.redis.restart_keeping_data(Duration::ZERO))
        .await;
}

#[tokio::test]
async fn six_dropped_connections_during_a_migrate_are_no_takeover() {
    six_disruptions_are_no_takeover(|cluster| {
        // every client but this one loses its connection at once
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query(&mut cluster.redis_connection())
            .unwrap();
        assert!(killed > 0);
    })
    .await;
}

/// A throttled migrate, with a second worker waiting, disrupted six times
/// by `disrupt`, each time after fresh durable progress: no takeover, and
/// the result of an undisturbed run.
async fn six_disruptions_are_no_takeover(disrupt: impl Fn(&mut TestCluster)) {
    const POSITIONS: u64 = 80;
    let expected = control_run(POSITIONS).await;

    let mut cluster = throttled_cluster(2000, 10);
    start_worker(&mut cluster).await;
    // a second worker waits to take the job over, should anyone let it go
    start_worker(&mut cluster).await;
    let client = cluster.client();
    seed(&client, POSITIONS).await;
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    wait_for_job_state(&cluster, "running", Duration::from_secs(10)).await;
    let holder = lock(&cluster)["worker_id"].clone();

    // Each restart comes after the job made durable progress since the
    // one before, so every run continues from a later cursor.
    let mut cursor_at_restart = 0;
    for restart in 1..=6 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while cursor(&cluster) <= cursor_at_restart {
            assert!(
                Instant::now() < deadline,
                "no progress before restart {restart}\n{}",
                cluster.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cursor_at_restart = cursor(&cluster);
        let job = current_job(&cluster);
        assert_eq!(
            job["state"], "running",
            "the migrate ended before restart {restart}: slow it down\n{job:?}"
        );
        assert!(cursor_at_restart < POSITIONS, "{cursor_at_restart}");
        disrupt(&mut cluster);
    }

    let job = wait_for_job_state(&cluster, "finished", Duration::from_secs(90)).await;
    assert_eq!(job["attempts"], "0", "{job:?}\n{}", cluster.log_tails());
    assert_eq!(job["worker_id"], holder, "the job changed hands");
    let answer = final_progress(&client).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    let output = output_of(&answer);
    assert!(!output.contains("took the job over"), "{output}");
    assert_eq!(answer["status"], "finalization_required", "{answer}");

    post_when_back(&client, "finalize").await;
    let answer = final_progress(&client).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    assert_eq!(migrated_content(cluster.snapshot()), expected);
}

#[tokio::test]
async fn a_redis_outage_longer_than_the_lease_is_a_takeover() {
    const POSITIONS: u64 = 40;
    const LEASE: u64 = 1000;
    let expected = control_run(POSITIONS).await;

    let mut cluster = throttled_cluster(LEASE, 10);
    start_worker(&mut cluster).await;
    start_worker(&mut cluster).await;
    let client = cluster.client();
    seed(&client, POSITIONS).await;
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    wait_for_job_state(&cluster, "running", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    cluster.redis.stop_keeping_data();
    tokio::time::sleep(Duration::from_millis(3 * LEASE)).await;
    cluster.redis.start_again();

    let job = wait_for_job_state(&cluster, "finished", Duration::from_secs(60)).await;
    assert_eq!(job["attempts"], "1", "{job:?}\n{}", cluster.log_tails());
    let answer = final_progress(&client).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    let output = output_of(&answer);
    assert!(output.contains("took the job over"), "{output}");
    assert!(!output.contains("resumes job"), "{output}");

    post_when_back(&client, "finalize").await;
    let answer = final_progress(&client).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    assert_eq!(migrated_content(cluster.snapshot()), expected);
}

#[tokio::test]
async fn a_worker_that_stopped_for_a_hung_redis_resumes_its_own_lease() {
    const POSITIONS: u64 = 60;
    const LEASE: u64 = 4000;
    let expected = control_run(POSITIONS).await;

    let mut cluster = throttled_cluster(LEASE, 10);
    let ids = [
        start_worker(&mut cluster).await,
        start_worker(&mut cluster).await,
    ];
    let client = cluster.client();
    seed(&client, POSITIONS).await;
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    wait_for_job_state(&cluster, "running", Duration::from_secs(10)).await;
    let holder = lock(&cluster)["worker_id"].clone();
    let holder_index = ids.iter().position(|id| *id == holder).unwrap();

    // Hang Redis right after a renewal: the holder gives up at 3/4 of the
    // lease, and Redis answers again before the lease runs out.
    let mut conn = cluster.redis_connection();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ttl: i64 = conn.pttl(cluster.keys().lock()).unwrap();
        if ttl > LEASE as i64 - 150 {
            break;
        }
        assert!(Instant::now() < deadline, "no renewal seen (pttl {ttl})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.redis.freeze();
    tokio::time::sleep(Duration::from_millis(LEASE * 85 / 100)).await;
    cluster.redis.thaw();
    assert!(
        cluster.workers[holder_index]
            .log()
            .contains("Redis unreachable for most of the lease"),
        "the holder did not stop its work:\n{}",
        cluster.workers[holder_index].log()
    );

    let job = wait_for_job_state(&cluster, "finished", Duration::from_secs(60)).await;
    assert_eq!(job["attempts"], "0", "{job:?}\n{}", cluster.log_tails());
    assert_eq!(job["worker_id"], holder);
    let answer = final_progress(&client).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    let output = output_of(&answer);
    assert!(
        output.contains(&format!("Worker {holder} resumes job")),
        "{output}"
    );
    assert!(!output.contains("took the job over"), "{output}");

    post_when_back(&client, "finalize").await;
    let answer = final_progress(&client).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    assert_eq!(migrated_content(cluster.snapshot()), expected);
}

#[tokio::test]
async fn a_redis_that_keeps_refusing_the_jobs_writes_ends_in_abandonment_not_a_loop() {
    let mut cluster = throttled_cluster(1000, 0);
    start_worker(&mut cluster).await;
    let client = cluster.client();
    seed(&client, 5).await;
    // a key of the wrong type where the engine keeps its state: every run
    // fails with WRONGTYPE, not with a connection problem
    let _: () = cluster
        .redis_connection()
        .set(cluster.keys().mig_state(), "not a hash")
        .unwrap();
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    // (the job record, not `progress`: the api's own state read trips
    // over the same key)
    let job = wait_for_job_state(&cluster, "finished", Duration::from_secs(60)).await;
    assert!(job["exception"].contains("abandoned"), "{job:?}");
    assert_eq!(job["attempts"], "3");
    assert!(
        cluster.workers[0]
            .log()
            .contains("Redis keeps refusing the job's writes"),
        "{}",
        cluster.workers[0].log()
    );
}
