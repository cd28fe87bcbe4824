//! SPEC section 4 through the real binaries: the migration route's request
//! errors and authentication, the responses of SPEC 4.1 and the cluster-wide
//! rules of SPEC 4.2, asked of two api replicas on one Redis.

use std::time::Duration;

use migration_tests::migration_jobs::*;
use migration_tests::requests::{assert_error, create, write_request_with_mi};
use migration_tests::Auth;
use serde_json::{json, Value};

const PATHS: [&str; 2] = ["/internal/migrations", "/internal/migrations/"];

#[tokio::test]
async fn request_errors_are_400_with_a_message_on_both_paths() {
    let cluster = cluster(1, 0, 0, 100);
    let client = cluster.client();
    for path in PATHS {
        for (body, contains) in [
            ("not json", ""),
            ("", ""),
            ("[1, 2]", ""),
            ("\"migrate\"", ""),
            ("null", ""),
            ("{}", "No command provided"),
            ("{\"cmd\": null}", "No command provided"),
            ("{\"verbose\": true}", "No command provided"),
            ("{\"cmd\": 1}", ""),
            ("{\"cmd\": [\"migrate\"]}", ""),
            ("{\"cmd\": \"fly\"}", "Unknown command"),
            ("{\"cmd\": \"Migrate\"}", "Unknown command"),
            ("{\"cmd\": \"migrate\", \"verbose\": \"yes\"}", ""),
            ("{\"cmd\": \"migrate\", \"verbose\": 1}", ""),
            ("{\"cmd\": \"progress\", \"verbose\": {}}", ""),
        ] {
            let (status, answer) = client.post_raw(path, body).await;
            let message = assert_error(status, &answer, 400);
            assert!(message.contains(contains), "{body}: {message}");
        }
        // nothing was queued by any of them
        assert!(current_job(&cluster).is_empty());
        // null verbose is absent verbose
        let (status, answer) = client
            .post_json(path, &json!({"cmd": "progress", "verbose": null}))
            .await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = client.post_bytes(path, 1024 * 1024 + 1).await;
        assert_error(status, &answer, 413);
    }
}

#[tokio::test]
async fn the_route_needs_the_internal_password() {
    let mut cluster = cluster(1, 0, 0, 100);
    let client = cluster.client();
    for auth in [
        Auth::None,
        Auth::Password(b"wrong".to_vec()),
        Auth::Raw("not base64!".into()),
    ] {
        for cmd in ["progress", "migrate", "stats"] {
            let (status, answer) = client
                .with_auth(auth.clone())
                .post_json(PATHS[0], &json!({"cmd": cmd}))
                .await;
            assert_error(status, &answer, 401);
        }
    }
    assert!(
        current_job(&cluster).is_empty(),
        "a refused request queued a job"
    );
    let options = cluster.options().clone().no_password();
    let base_url = cluster.start_api_with(options).base_url();
    let unconfigured = migration_tests::ApiClient::new(base_url, Auth::Password(b"x".to_vec()));
    let (status, answer) = unconfigured.progress().await;
    assert_error(status, &answer, 500);
}

#[tokio::test]
async fn before_any_command_progress_gives_the_state_and_stats_the_counts() {
    let cluster = cluster(2, 0, 0, 100);
    seed(&cluster.client(), 5).await;
    for index in 0..2 {
        let client = cluster.client_for(index);
        let (status, answer) = client.progress().await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer,
            json!({"success": true, "status": "migration_required"})
        );
        let (status, answer) = client.post_migration("stats").await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer,
            json!({"success": true, "stats": {
                "status": "migration_required", "current_migration_index": 1,
                "target_migration_index": 4, "positions": 5, "events": 5,
                "partially_migrated_positions": 0, "fully_migrated_positions": 0}})
        );
    }
}

#[tokio::test]
async fn a_queued_or_running_job_refuses_every_command_but_progress_on_every_replica() {
    // No worker yet: the job stays queued.
    let mut cluster = cluster(2, 0, 5, 0);
    seed(&cluster.client(), 10).await;
    let (status, answer) = cluster.client_for(0).post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "migration_running");
    let first = output_of(&answer);
    let job_id = current_job(&cluster)["id"].clone();
    assert_eq!(first, format!("Job {job_id} queued: migrate\n"));
    for phase in ["queued", "running"] {
        if phase == "running" {
            cluster.start_worker();
            wait_for_job_state(&cluster, "running", Duration::from_secs(10)).await;
        }
        for index in 0..2 {
            let client = cluster.client_for(index);
            for cmd in ["migrate", "finalize", "reset", "stats"] {
                let (status, answer) = client.post_migration_verbose(cmd, true).await;
                let message = assert_error(status, &answer, 400);
                assert_eq!(message, RUNNING, "{phase} {cmd}");
            }
            let (status, answer) = client.progress().await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["status"], "migration_running", "{phase}: {answer}");
            assert!(output_of(&answer).starts_with(&first));
            assert!(answer.get("exception").is_none());
        }
        assert_eq!(
            current_job(&cluster)["id"],
            job_id,
            "a refused command replaced the job"
        );
    }
}

#[tokio::test]
async fn an_unread_final_result_blocks_commands_until_progress_returns_it_once() {
    let cluster = cluster(2, 1, 0, 0);
    seed(&cluster.client(), 5).await;
    let (status, answer) = cluster.client_for(0).post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["status"], "migration_running",
        "MIGRATION_WAIT_MS=0 never waits"
    );
    wait_for_job_state(&cluster, "finished", Duration::from_secs(20)).await;
    for index in 0..2 {
        for cmd in ["migrate", "finalize", "reset", "stats"] {
            let (status, answer) = cluster.client_for(index).post_migration(cmd).await;
            assert_eq!(assert_error(status, &answer, 400), NOT_READ, "{cmd}");
        }
    }
    // progress on the other replica returns the final result ...
    let (status, final_answer) = cluster.client_for(1).progress().await;
    assert_eq!(status, 200, "{final_answer}");
    assert_eq!(
        final_answer["status"], "finalization_required",
        "{final_answer}"
    );
    assert!(final_answer.get("exception").is_none());
    let output = output_of(&final_answer);
    assert!(output.lines().count() >= 3, "{output}");
    // ... the same on every repeat and replica ...
    for index in [0, 1, 0] {
        let (_, again) = cluster.client_for(index).progress().await;
        assert_eq!(again, final_answer);
    }
    // ... and new commands are accepted; the old output is gone.
    let (status, answer) = cluster.client_for(0).post_migration("stats").await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = cluster.client_for(0).post_migration("reset").await;
    assert_eq!(status, 200, "{answer}");
    let output = output_of(&answer);
    assert!(
        output.starts_with("Job ") && output.lines().next().unwrap().ends_with("queued: reset")
    );
    assert!(
        !output.contains("migrate"),
        "old output not cleared: {output}"
    );
}

#[tokio::test]
async fn a_quick_command_answers_its_final_result_at_once() {
    let cluster = cluster(1, 1, 0, 10_000);
    cluster.wait_for_workers(1, Duration::from_secs(10)).await;
    seed(&cluster.client(), 3).await;
    let client = cluster.client();
    let (status, answer) = client.post_migration_verbose("migrate", true).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "finalization_required", "{answer}");
    let output = output_of(&answer);
    assert!(
        output.contains("Position 3 from MI 1 to MI 4"),
        "verbose: {output}"
    );
    // it was returned, so the next command is accepted right away
    let (status, answer) = client.post_migration("finalize").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "no_migration_required", "{answer}");
    assert_eq!(client.progress().await.1, answer);
}

#[tokio::test]
async fn a_throttled_migrate_is_seen_running_with_output_that_only_grows() {
    let cluster = cluster(2, 1, 10, 0);
    seed(&cluster.client(), 30).await;
    let (status, answer) = cluster
        .client()
        .post_migration_verbose("migrate", true)
        .await;
    assert_eq!(status, 200, "{answer}");
    let mut previous = output_of(&answer);
    let mut running_answers = 0;
    let mut grew = 0;
    let mut round = 0usize;
    let final_answer = loop {
        round += 1;
        let (status, answer) = cluster.client_for(round % 2).progress().await;
        assert_eq!(status, 200, "{answer}");
        let output = output_of(&answer);
        assert!(
            output.starts_with(&previous),
            "output shrank or changed:\n{previous}\n---\n{output}"
        );
        if output.len() > previous.len() {
            grew += 1;
        }
        previous = output;
        if answer["status"] != "migration_running" {
            break answer;
        }
        running_answers += 1;
        assert!(round < 2000, "never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        running_answers >= 10,
        "only {running_answers} running answers"
    );
    assert!(grew >= 3, "output grew only {grew} times");
    assert_eq!(final_answer["status"], "finalization_required");
    assert_eq!(cluster.client_for(0).progress().await.1, final_answer);
    assert_eq!(cluster.client_for(1).progress().await.1, final_answer);
}

#[tokio::test]
async fn migrate_then_finalize_gives_the_migrated_models() {
    let cluster = cluster(1, 1, 0, 5_000);
    let client = cluster.client();
    seed(&client, 9).await;
    let (_, before) = client.get_model("motion/1").await;
    assert_eq!(before["model"]["title"], "M1");
    let answer = final_answer(&client, "migrate", Duration::from_secs(30)).await;
    assert_eq!(answer["status"], "finalization_required", "{answer}");
    // readers still see the live (unmigrated) data
    assert_eq!(client.get_model("motion/1").await.1, before);
    let answer = final_answer(&client, "finalize", Duration::from_secs(30)).await;
    assert_eq!(answer["status"], "no_migration_required", "{answer}");
    let (status, model) = client.get_model("motion/1").await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(
        model["model"],
        json!({"name": "M1", "weight": 0, "meta_position": 1})
    );
    // motion/5 was updated at position 6: title T6, legacy removed
    let (_, model) = client.get_model("motion/5").await;
    assert_eq!(
        model["model"],
        json!({"name": "T6", "weight": 0, "meta_position": 6})
    );
    let stats = client.stats().await;
    assert_eq!(stats["current_migration_index"], 4);
    assert_eq!(stats["status"], "no_migration_required");
}

#[tokio::test]
async fn an_exception_inside_a_migration_comes_back_with_success_true() {
    let cluster = cluster(2, 1, 0, 5_000);
    let client = cluster.client();
    seed(&client, 2).await;
    // a motion without a title has no name after 0002: 0004 fails on it
    let (status, body) = client
        .write(write_request_with_mi(
            json!([create("motion/77", json!({"text": "x"}))]),
            1,
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let answer = final_answer(&client, "migrate", Duration::from_secs(30)).await;
    assert_eq!(answer["success"], true);
    assert_ne!(answer["status"], "migration_running");
    let exception = answer["exception"]
        .as_str()
        .unwrap_or_else(|| panic!("no exception: {answer}"));
    for part in ["0004_check", "motion/77", "name", "3"] {
        assert!(
            exception.contains(part),
            "exception lacks {part}: {exception}"
        );
    }
    // the same on the other replica, and the next command is accepted
    assert_eq!(cluster.client_for(1).progress().await.1, answer);
    let (status, _) = cluster.client_for(1).post_migration("reset").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn concurrent_commands_on_two_replicas_never_make_two_jobs() {
    let cluster = cluster(2, 1, 0, 0);
    seed(&cluster.client(), 3).await;
    let (a, b) = (cluster.client_for(0), cluster.client_for(1));
    for round in 0..25 {
        let (cmd_a, cmd_b) = [
            ("migrate", "reset"),
            ("reset", "migrate"),
            ("migrate", "migrate"),
        ][round % 3];
        let ((status_a, answer_a), (status_b, answer_b)) =
            tokio::join!(a.post_migration(cmd_a), b.post_migration(cmd_b));
        let answers = [(status_a, &answer_a), (status_b, &answer_b)];
        let accepted: Vec<&Value> = answers
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, a)| *a)
            .collect();
        assert_eq!(accepted.len(), 1, "round {round}: {answer_a} / {answer_b}");
        for (status, answer) in answers {
            if status != 200 {
                let message = assert_error(status, answer, 400);
                assert!(message == RUNNING || message == NOT_READ, "{message}");
            }
        }
        assert_eq!(job_hashes(&cluster), 1, "round {round}");
        let job = current_job(&cluster);
        assert!(output_of(accepted[0]).starts_with(&format!("Job {} queued", job["id"])));
        // read the result so that the next round may start
        finished(&a, Duration::from_secs(20)).await;
    }
}

#[tokio::test]
async fn with_no_worker_alive_the_job_waits_until_one_starts() {
    let mut cluster = cluster(2, 0, 0, 200);
    seed(&cluster.client(), 3).await;
    let (_, health) = cluster.client().health().await;
    assert_eq!(health["workers"], 0, "{health}");
    let (status, answer) = cluster.client().post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "migration_running");
    let queued = output_of(&answer);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for index in 0..2 {
        let (_, answer) = cluster.client_for(index).progress().await;
        assert_eq!(answer["status"], "migration_running", "{answer}");
        assert_eq!(output_of(&answer), queued);
    }
    assert_eq!(current_job(&cluster)["state"], "queued");
    cluster.start_worker();
    let answer = finished(&cluster.client_for(1), Duration::from_secs(20)).await;
    assert_eq!(answer["status"], "finalization_required", "{answer}");
    let (_, health) = cluster.client().health().await;
    assert_eq!(health["workers"], 1, "{health}");
}

#[tokio::test]
async fn with_redis_down_the_route_answers_503_and_works_again_once_it_is_back() {
    let mut cluster = cluster(2, 1, 0, 2_000);
    cluster.wait_for_workers(1, Duration::from_secs(10)).await;
    cluster.redis.stop();
    for index in 0..2 {
        for cmd in ["progress", "stats", "migrate", "finalize", "reset"] {
            let (status, answer) = cluster.client_for(index).post_migration(cmd).await;
            let message = assert_error(status, &answer, 503);
            assert!(message.to_lowercase().contains("redis"), "{message}");
        }
        let (status, _) = cluster.client_for(index).health().await;
        assert_eq!(status, 503);
    }
    // the worker rides it out (no crash) and serves again
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        cluster.workers[0].is_running(),
        "worker died with Redis:\n{}",
        cluster.log_tails()
    );
    cluster.redis.restart();
    cluster.wait_for_workers(1, Duration::from_secs(20)).await;
    for index in 0..2 {
        cluster
            .client_for(index)
            .wait_until_healthy(Duration::from_secs(20))
            .await;
    }
    let client = cluster.client_for(1);
    seed(&client, 3).await;
    let answer = final_answer(&client, "migrate", Duration::from_secs(30)).await;
    assert_eq!(answer["status"], "finalization_required", "{answer}");
}

#[tokio::test]
async fn migrate_then_reset_is_a_dry_run() {
    let cluster = cluster(2, 1, 0, 5_000);
    let client = cluster.client();
    seed(&client, 6).await;
    let before = cluster.snapshot();
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    let answer = finished(&client, Duration::from_secs(30)).await;
    assert_eq!(answer["status"], "finalization_required", "{answer}");
    assert_eq!(client.stats().await["fully_migrated_positions"], 6);
    assert!(!migration_area(&cluster).is_empty());
    let (status, answer) = cluster.client_for(1).post_migration("reset").await;
    assert_eq!(status, 200, "{answer}");
    let answer = finished(&client, Duration::from_secs(30)).await;
    assert_eq!(answer["status"], "migration_required", "{answer}");
    assert!(answer.get("exception").is_none(), "{answer}");
    assert!(migration_area(&cluster).is_empty());
    assert_eq!(cluster.snapshot(), before, "reset touched live data");
}

#[tokio::test]
async fn writes_are_refused_while_a_finalize_job_runs() {
    let cluster = cluster(1, 1, 10, 0);
    let client = cluster.client();
    seed(&client, 30).await;
    let (status, answer) = client.post_migration("finalize").await;
    assert_eq!(status, 200, "{answer}");
    wait_for_job_state(&cluster, "running", Duration::from_secs(10)).await;
    let position = cluster.stored_position();
    let (status, body) = client
        .write(write_request_with_mi(
            json!([create("motion/500", json!({"title": "x"}))]),
            1,
        ))
        .await;
    assert_error(status, &body, 503);
    assert_eq!(cluster.stored_position(), position, "a refused write wrote");
    let answer = finished(&client, Duration::from_secs(30)).await;
    assert_eq!(answer["status"], "no_migration_required", "{answer}");
    // writes go on once the finalize job finished (at the new MI)
    let (status, body) = client
        .write(write_request_with_mi(
            json!([create("motion/500", json!({"name": "x"}))]),
            4,
        ))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_corrupt_job_record_is_a_500_not_an_outage() {
    let cluster = cluster(1, 0, 0, 100);
    let keys = cluster.keys();
    let mut conn = cluster.redis_connection();
    redis::pipe()
        .set(keys.current_job(), "hand-made")
        .hset_multiple(
            keys.job("hand-made"),
            &[
                ("id", "hand-made"),
                ("cmd", "explode"),
                ("state", "running"),
            ],
        )
        .exec(&mut conn)
        .unwrap();
    let (status, answer) = cluster.client().progress().await;
    let message = assert_error(status, &answer, 500);
    assert!(message.contains("job record"), "{message}");
}
