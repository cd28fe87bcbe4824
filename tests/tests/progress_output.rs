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

use std::time::Duration;

use migration_tests::migration_jobs::*;
use migration_tests::{ApiClient, TestCluster};
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
