//! SPEC 4.1's full `output`, read cheaply: each api replica keeps the
//! current job's output and asks Redis only for the entries it has not seen
//! (`api/src/output_cache.rs`). Through the real binaries:
//!
//! - a poll of a long verbose output costs one `XRANGE` (counted in Redis's
//!   own `INFO commandstats`), not one per thousand lines, and answers the
//!   full output, equal to the stream read directly and on every replica;
//! - while a job appends lines, every answer is a prefix of the later ones
//!   and the last equals the stream;
//! - when Redis loses entries a replica has kept (here `XDEL`, as a
//!   restore from an older snapshot would), every replica answers what the
//!   stream now holds, not its kept copy.
//!
//! And concurrent polls of one replica share one read
//! (`api/src/coalesced_read.rs`), never one older than the poll:
//!
//! - a hundred polls at once answer alike, with fewer reads than polls
//!   (counted in `INFO commandstats`);
//! - polls of a running job answer its output so far, and a poll sent once
//!   the job has finished answers the final result, both while others
//!   keep the replica reading;
//! - a poll that arrives while a read of the running job is in flight
//!   (its answer held back by a [`RedisProxy`]) after the job finished
//!   waits for the next read: it never gets the stale `migration_running`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use migration_shared::scripts::PROGRESS;
use migration_tests::migration_jobs::*;
use migration_tests::{ApiClient, RedisProxy, TestCluster};
use redis::Commands;
use serde_json::Value;

/// The output lines as Redis holds them, formatted as SPEC 4.1's `output`.
fn stream_output(cluster: &TestCluster, job_id: &str) -> String {
    let reply: redis::streams::StreamRangeReply = cluster
        .redis_connection()
        .xrange_all(cluster.keys().job_output(job_id))
        .unwrap();
    reply
        .ids
        .iter()
        .filter_map(|entry| entry.get::<String>("line"))
        .map(|line| line + "\n")
        .collect()
}

/// `calls` of one command in `INFO commandstats` (commands run by scripts
/// included).
fn command_calls(cluster: &TestCluster, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut cluster.redis_connection())
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map(|calls| calls.parse().unwrap())
        .unwrap_or(0)
}

async fn progress_output(client: &ApiClient) -> (Value, String) {
    let (status, body) = client.progress().await;
    assert_eq!(status, 200, "{body}");
    let output = output_of(&body);
    (body, output)
}

async fn run_verbose_migrate(cluster: &TestCluster) -> String {
    let client = cluster.client();
    let (status, answer) = client.post_migration_verbose("migrate", true).await;
    assert_eq!(status, 200, "{answer}");
    finished(&client, Duration::from_secs(120)).await;
    current_job(cluster)["id"].clone()
}

#[tokio::test]
async fn a_poll_of_a_long_output_costs_one_xrange_and_every_replica_answers_it_whole() {
    let cluster = cluster(2, 1, 0, 0);
    seed(&cluster.client(), 3000).await;
    cluster.wait_for_workers(1, Duration::from_secs(30)).await;
    let job_id = run_verbose_migrate(&cluster).await;
    let full = stream_output(&cluster, &job_id);
    let lines = full.lines().count();
    assert!(
        lines > 3000,
        "a verbose migrate of 3000 positions: {lines} lines"
    );

    let first = cluster.client_for(0);
    let (answer, output) = progress_output(&first).await;
    assert_eq!(output, full, "the first poll answers the whole stream");
    assert_eq!(answer["status"], "finalization_required", "{answer}");

    const POLLS: u64 = 10;
    let before = command_calls(&cluster, "xrange");
    for _ in 0..POLLS {
        let (again, output) = progress_output(&first).await;
        assert_eq!(output, full);
        assert_eq!(
            again, answer,
            "the final result is the same on every repeat"
        );
    }
    let xranges = command_calls(&cluster, "xrange") - before;
    // One per poll (the one inside job_progress.lua); re-reading the whole
    // stream would take at least 4 per poll (chunks of 1000 entries).
    assert!(
        xranges <= POLLS + 2,
        "{xranges} XRANGE calls for {POLLS} polls of {lines} lines"
    );

    let (other, output) = progress_output(&cluster.client_for(1)).await;
    assert_eq!(output, full, "the other replica answers the same output");
    assert_eq!(other, answer);
}

#[tokio::test]
async fn while_lines_are_appended_every_answer_extends_the_last_one() {
    // Throttled, so that the polls see the output grow.
    let cluster = cluster(2, 1, 200, 0);
    seed(&cluster.client(), 300).await;
    cluster.wait_for_workers(1, Duration::from_secs(30)).await;
    let (status, answer) = cluster
        .client()
        .post_migration_verbose("migrate", true)
        .await;
    assert_eq!(status, 200, "{answer}");
    let mut last = [String::new(), String::new()];
    let mut grew = 0;
    loop {
        for (replica, last) in last.iter_mut().enumerate() {
            let (body, output) = progress_output(&cluster.client_for(replica)).await;
            assert!(
                output.starts_with(last.as_str()),
                "replica {replica}: the output lost lines:\nbefore:\n{last}\nnow:\n{output}"
            );
            if output.len() > last.len() && !last.is_empty() {
                grew += 1;
            }
            *last = output;
            if body["status"] != "migration_running" {
                let job_id = current_job(&cluster)["id"].clone();
                let full = stream_output(&cluster, &job_id);
                let (_, other) = progress_output(&cluster.client_for(1 - replica)).await;
                assert_eq!(*last, full);
                assert_eq!(other, full);
                assert!(grew >= 2, "the polls never saw the output grow");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn entries_lost_by_redis_are_lost_on_every_replica_too() {
    let cluster = cluster(2, 1, 0, 0);
    seed(&cluster.client(), 20).await;
    cluster.wait_for_workers(1, Duration::from_secs(30)).await;
    let job_id = run_verbose_migrate(&cluster).await;
    // Both replicas keep the output.
    for replica in 0..2 {
        let (_, output) = progress_output(&cluster.client_for(replica)).await;
        assert_eq!(output, stream_output(&cluster, &job_id));
    }
    // Redis loses a line in the middle (as a restore from an older
    // snapshot loses the last ones).
    let before = stream_output(&cluster, &job_id);
    let stream = cluster.keys().job_output(&job_id);
    let reply: redis::streams::StreamRangeReply =
        cluster.redis_connection().xrange_all(&stream).unwrap();
    let lost = &reply.ids[reply.ids.len() / 2];
    assert!(lost.get::<String>("line").is_some(), "{lost:?}");
    let _: u64 = cluster
        .redis_connection()
        .xdel(&stream, &[&lost.id])
        .unwrap();
    let now = stream_output(&cluster, &job_id);
    assert_eq!(now.lines().count() + 1, before.lines().count());
    for replica in 0..2 {
        let (_, output) = progress_output(&cluster.client_for(replica)).await;
        assert_eq!(
            output, now,
            "replica {replica} answered its kept copy instead of the stream"
        );
    }
}

/// `n` polls sent at once to `client`; every answer must be `200`.
async fn concurrent_polls(client: &ApiClient, n: usize) -> Vec<Value> {
    let polls = (0..n).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.progress().await })
    });
    let mut answers = Vec::new();
    for poll in polls.collect::<Vec<_>>() {
        let (status, body) = poll.await.unwrap();
        assert_eq!(status, 200, "{body}");
        answers.push(body);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_polls_answer_alike_with_fewer_reads_than_polls() {
    // No worker: the job stays queued and its answer does not change.
    let cluster = cluster(1, 0, 0, 0);
    let client = cluster.client();
    let (status, answer) = client.post_migration_verbose("migrate", true).await;
    assert_eq!(status, 200, "{answer}");
    let (alone, _) = progress_output(&client).await;
    assert_eq!(alone["status"], "migration_running", "{alone}");

    const POLLS: usize = 100;
    const ROUNDS: usize = 3;
    // `job_progress.lua` runs one XRANGE per read; nothing else reads the
    // stream here.
    let before = command_calls(&cluster, "xrange");
    for _ in 0..ROUNDS {
        for answer in concurrent_polls(&client, POLLS).await {
            assert_eq!(answer, alone, "every poll answers the same");
        }
    }
    let reads = command_calls(&cluster, "xrange") - before;
    assert!(
        reads < (POLLS * ROUNDS) as u64,
        "{reads} reads for {ROUNDS} rounds of {POLLS} concurrent polls: not shared"
    );
    eprintln!("{reads} reads for {ROUNDS} rounds of {POLLS} concurrent polls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polls_of_a_running_job_answer_its_output_and_a_poll_after_the_finish_sees_it() {
    let cluster = cluster(1, 1, 150, 0);
    seed(&cluster.client(), 150).await;
    cluster.wait_for_workers(1, Duration::from_secs(30)).await;
    let client = cluster.client();
    let (status, answer) = client.post_migration_verbose("migrate", true).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "migration_running", "{answer}");

    // Pollers that keep the replica reading all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = (0..8)
        .map(|_| {
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let (status, body) = client.progress().await;
                    assert_eq!(status, 200, "{body}");
                    answers.push(body);
                }
                answers
            })
        })
        .collect();
    // The moment Redis says the job finished, one more poll.
    let deadline = Instant::now() + Duration::from_secs(120);
    let job_id = loop {
        let job = tokio::task::block_in_place(|| current_job(&cluster));
        if job.get("state").map(String::as_str) == Some("finished") {
            break job["id"].clone();
        }
        assert!(Instant::now() < deadline, "the job did not finish: {job:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (after, output) = progress_output(&client).await;
    stop.store(true, Ordering::SeqCst);
    let full = stream_output(&cluster, &job_id);
    assert_eq!(
        after["status"], "finalization_required",
        "a poll after the finish got: {after}"
    );
    assert_eq!(output, full);

    let mut running = 0;
    for poller in pollers {
        for body in poller.await.unwrap() {
            let output = output_of(&body);
            assert!(full.starts_with(&output), "not the job's output: {body}");
            if body["status"] == "migration_running" {
                running += 1;
            } else {
                assert_eq!(body, after, "every final answer is the same");
            }
        }
    }
    assert!(
        running >= 8,
        "the pollers hardly saw the job run: {running}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_arrives_during_a_read_of_the_running_job_waits_for_a_fresh_one() {
    // The job is queued and no worker runs yet; the second api reads Redis
    // through a proxy.
    let mut cluster = cluster(1, 0, 0, 0);
    seed(&cluster.client(), 5).await;
    let proxy = RedisProxy::start(cluster.redis.port());
    let options = cluster.options().clone().redis_url(proxy.url());
    cluster.start_api_with(options);
    let client = cluster.client_for(1);
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    // Loads the script over the proxy, so that the trap below catches an
    // EVALSHA.
    let (running, _) = progress_output(&client).await;
    assert_eq!(running["status"], "migration_running", "{running}");

    // The next read runs in Redis, but its answer is held until released.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    proxy.hold_replies(
        PROGRESS.get_hash().as_bytes().to_vec(),
        move || async move {
            let _ = released.await;
        },
    );
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.progress().await }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.trap_fired() {
        assert!(
            Instant::now() < deadline,
            "the first poll's read never came"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // That read saw the job queued. Now the job runs and finishes.
    cluster.start_worker();
    wait_for_job_state(&cluster, "finished", Duration::from_secs(30)).await;
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.progress().await }
    });
    // The second poll reaches the replica while the first read is in
    // flight; then that read's answer comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.send(()).unwrap();

    let (status, second) = second.await.unwrap();
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["status"], "finalization_required",
        "a poll sent after the finish was answered from an older read: {second}"
    );
    assert_eq!(current_job(&cluster)["result_read"], "1", "marked as read");
    // The first poll arrived before the finish: either answer is right,
    // but it gets one (unless the slow start of the worker used up its
    // budget: then the replica's 503).
    let (status, first) = first.await.unwrap();
    assert!(
        status == 200 || status == 503,
        "the first poll: {status} {first}"
    );
}
