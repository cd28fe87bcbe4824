//! The HTTP surface of the datastore through the real `migration-api`:
//! authentication (SPEC 3), request errors and the body limit (SPEC 4.3,
//! 5.1), the readers (SPEC 5.1), an unreachable Redis and the health routes
//! (SPEC 7).

use std::time::{Duration, Instant};

use migration_tests::requests::{assert_error, create, delete, update};
use migration_tests::{write_request, ApiClient, Auth, TestCluster};
use serde_json::{json, Value};

/// The datastore routes under `/internal/`, each with a valid body.
fn internal_routes() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/internal/datastore/writer/write",
            write_request(json!([create("motion/1", json!({"title": "A"}))])),
        ),
        (
            "/internal/datastore/reader/get",
            json!({"fqid": "motion/1"}),
        ),
        (
            "/internal/datastore/reader/get_all",
            json!({"collection": "motion"}),
        ),
    ]
}

/// The migration route (SPEC 4), written by another part of the project: it
/// shares authentication, the body limit and the Redis error with the
/// datastore routes, checked in its own test so that a failure is
/// attributed to the right route.
const MIGRATION_ROUTE: &str = "/internal/migrations";

async fn assert_every_internal_route_answers(api: &ApiClient, expected: u16) {
    for (path, body) in internal_routes() {
        let (status, answer) = api.post_json(path, &body).await;
        assert_error(status, &answer, expected);
    }
}

// ----- authentication (SPEC 3) -----

#[tokio::test]
async fn a_missing_header_is_401_on_every_internal_route() {
    let cluster = TestCluster::spawn_app();
    assert_every_internal_route_answers(&cluster.client().without_auth(), 401).await;
    assert_eq!(cluster.stored_position(), None, "nothing was written");
}

#[tokio::test]
async fn a_header_that_is_not_base64_is_401() {
    let cluster = TestCluster::spawn_app();
    let password = String::from_utf8(cluster.password().to_vec()).unwrap();
    for raw in [
        "!!not base64!!".to_string(),
        // The password in clear text is not its base64.
        password.clone(),
        // A scheme word is not part of the header (SPEC 3).
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &password)
        ),
    ] {
        let api = cluster.client().with_auth(Auth::Raw(raw));
        assert_every_internal_route_answers(&api, 401).await;
    }
}

#[tokio::test]
async fn a_wrong_password_is_401() {
    let cluster = TestCluster::spawn_app();
    let mut almost = cluster.password().to_vec();
    almost.pop();
    for wrong in [b"wrong".to_vec(), almost, Vec::new()] {
        let api = cluster.client().with_auth(Auth::Password(wrong));
        assert_every_internal_route_answers(&api, 401).await;
    }
    assert_eq!(cluster.stored_position(), None);
}

#[tokio::test]
async fn the_right_password_is_accepted() {
    let cluster = TestCluster::spawn_app();
    let (status, body) = cluster
        .client()
        .write(write_request(json!([create("motion/1", json!({}))])))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_password_file_with_a_trailing_newline_accepts_both_forms() {
    let cluster = TestCluster::builder().password("s3cret\n").start();
    let api = cluster.client();
    for (index, password) in ["s3cret\n", "s3cret"].into_iter().enumerate() {
        let (status, body) = api
            .with_auth(Auth::password(password))
            .write(write_request(json!([create(
                &format!("motion/{}", index + 1),
                json!({})
            )])))
            .await;
        assert_eq!(status, 200, "password {password:?}: {body}");
    }
    // Only ONE trailing newline is removed, nothing else is trimmed.
    for wrong in ["s3cret\n\n", " s3cret", "s3cre"] {
        let (status, body) = api
            .with_auth(Auth::password(wrong))
            .get_model("motion/1")
            .await;
        assert_error(status, &body, 401);
    }
}

#[tokio::test]
async fn only_one_trailing_newline_is_removed_from_the_password_file() {
    let cluster = TestCluster::builder().password("pw\n\n").start();
    let api = cluster.client();
    for accepted in ["pw\n\n", "pw\n"] {
        let (status, body) = api
            .with_auth(Auth::password(accepted))
            .get_all("motion")
            .await;
        assert_eq!(status, 200, "password {accepted:?}: {body}");
    }
    let (status, body) = api.with_auth(Auth::password("pw")).get_all("motion").await;
    assert_error(status, &body, 401);
}

#[tokio::test]
async fn a_password_file_without_newline_does_not_accept_an_added_one() {
    let cluster = TestCluster::builder().password("pw").start();
    let api = cluster.client();
    let (status, body) = api.with_auth(Auth::password("pw")).get_all("motion").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .with_auth(Auth::password("pw\n"))
        .get_all("motion")
        .await;
    assert_error(status, &body, 401);
}

#[tokio::test]
async fn no_password_configured_is_500_but_health_still_answers() {
    let cluster = TestCluster::builder()
        .configure(|options| options.no_password())
        .start();
    let api = cluster.client();
    assert_every_internal_route_answers(&api, 500).await;
    assert_eq!(cluster.stored_position(), None);
    let (status, body) = api.without_auth().health().await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_unreadable_password_file_is_500() {
    let cluster = TestCluster::builder()
        .configure(|options| options.password_file("/nonexistent/internal_auth_password"))
        .start();
    assert_every_internal_route_answers(&cluster.client(), 500).await;
}

#[tokio::test]
async fn development_mode_uses_the_password_openslides() {
    for flag in ["1", "true", "on"] {
        let cluster = TestCluster::builder()
            .configure(move |options| {
                options
                    .unset("INTERNAL_AUTH_PASSWORD_FILE")
                    .development(flag)
            })
            .start();
        let api = cluster.client().with_auth(Auth::password("openslides"));
        let (status, body) = api
            .write(write_request(json!([create("motion/1", json!({}))])))
            .await;
        assert_eq!(status, 200, "OPENSLIDES_DEVELOPMENT={flag}: {body}");
        let (status, body) = api
            .with_auth(Auth::password("wrong"))
            .get_model("motion/1")
            .await;
        assert_error(status, &body, 401);
        let (status, body) = api.without_auth().get_model("motion/1").await;
        assert_error(status, &body, 401);
    }
}

#[tokio::test]
async fn health_routes_need_no_password() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client().with_auth(Auth::Raw("garbage".into()));
    let (status, body) = api.health().await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.without_auth().system_health().await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_migration_route_shares_auth_body_limit_and_redis_errors() {
    let mut cluster = TestCluster::spawn_app();
    let api = cluster.client();
    let stats = json!({"cmd": "stats"});
    let (status, body) = api.post_json(MIGRATION_ROUTE, &stats).await;
    assert_eq!(status, 200, "{body}");
    for wrong in [
        api.without_auth(),
        api.with_auth(Auth::Raw("!!".into())),
        api.with_auth(Auth::password("wrong")),
    ] {
        let (status, body) = wrong.post_json(MIGRATION_ROUTE, &stats).await;
        assert_error(status, &body, 401);
    }
    let (status, body) = api.post_bytes(MIGRATION_ROUTE, 1024 * 1024 + 1).await;
    assert_error(status, &body, 413);
    cluster.redis.stop();
    let (status, body) = api.post_json(MIGRATION_ROUTE, &stats).await;
    let message = assert_error(status, &body, 503);
    assert!(message.to_lowercase().contains("redis"), "{message}");
}

#[tokio::test]
async fn the_migration_route_is_500_without_a_configured_password() {
    let cluster = TestCluster::builder()
        .configure(|options| options.no_password())
        .start();
    let (status, body) = cluster
        .client()
        .post_json(MIGRATION_ROUTE, &json!({"cmd": "stats"}))
        .await;
    assert_error(status, &body, 500);
}

// ----- request errors (SPEC 4.3, 5.1) -----

#[tokio::test]
async fn bodies_that_are_not_json_or_not_an_object_are_400() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    let paths = [
        "/internal/datastore/writer/write",
        "/internal/datastore/reader/get",
        "/internal/datastore/reader/get_all",
    ];
    for path in paths {
        for body in [
            "",
            "not json",
            "{\"fqid\": ",
            "42",
            "\"motion/1\"",
            "null",
            "true",
        ] {
            let (status, answer) = api.post_raw(path, body).await;
            assert_error(status, &answer, 400);
        }
    }
    // The readers take one object; an array is not a request for them.
    for path in &paths[1..] {
        let (status, answer) = api.post_raw(path, "[]").await;
        assert_error(status, &answer, 400);
    }
    // The writer takes an object or an array of objects only.
    for body in ["[1]", "[\"x\"]", "[[]]", "[null]"] {
        let (status, answer) = api.post_raw(paths[0], body).await;
        assert_error(status, &answer, 400);
    }
    assert_eq!(cluster.stored_position(), None);
}

#[tokio::test]
async fn write_requests_with_wrong_types_or_names_are_400_and_write_nothing() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    api.write_events(json!([create("motion/1", json!({"title": "A"}))]))
        .await;
    let before = cluster.snapshot();
    let bad_bodies = [
        json!({"user_id": 1, "information": {}}),
        json!({"user_id": 1, "information": {}, "events": "create"}),
        json!({"user_id": 1, "information": {}, "events": [42]}),
        json!({"user_id": "one", "information": {}, "events": [create("motion/2", json!({}))]}),
        json!({"user_id": 1, "information": {}, "migration_index": "1",
               "events": [create("motion/2", json!({}))]}),
        json!({"user_id": 1, "information": {}, "migration_index": -1,
               "events": [create("motion/2", json!({}))]}),
        write_request(json!([{"type": "bogus", "fqid": "motion/2"}])),
        write_request(json!([{"fqid": "motion/2", "fields": {}}])),
        write_request(json!([{"type": "create", "fields": {}}])),
        write_request(json!([{"type": "create", "fqid": 7, "fields": {}}])),
        write_request(json!([{"type": "create", "fqid": "motion/2", "fields": ["a"]}])),
        write_request(json!([create("motion", json!({}))])),
        write_request(json!([create("motion/0", json!({}))])),
        write_request(json!([create("motion/-1", json!({}))])),
        write_request(json!([create("motion/x", json!({}))])),
        write_request(json!([create("Motion/2", json!({}))])),
        write_request(json!([create("motion_/2", json!({}))])),
        write_request(json!([create("motion/2", json!({"Title": "A"}))])),
        write_request(json!([create("motion/2", json!({"1title": "A"}))])),
        write_request(json!([create("motion/2", json!({"meta_position": 5}))])),
        write_request(json!([create("motion/2", json!({"meta_deleted": true}))])),
        write_request(json!([update("motion/1", json!({"meta_x": 1}))])),
        write_request(json!([update("motion/1", json!({"bad-name": 1}))])),
        write_request(json!([{"type": "update", "fqid": "motion/1", "fields": {},
                              "list_fields": {"add": {"tag_ids": 5}}}])),
        write_request(json!([{"type": "update", "fqid": "motion/1", "fields": {},
                              "list_fields": {"add": {"tag_ids": [{"a": 1}]}}}])),
        // One bad request among good ones fails the whole body.
        json!([
            write_request(json!([create("motion/3", json!({}))])),
            write_request(json!([create("motion/4", json!({"Bad": 1}))])),
        ]),
    ];
    for body in bad_bodies {
        let (status, answer) = api.write(body.clone()).await;
        assert_eq!(status, 400, "{body} -> {status} {answer}");
        assert_error(status, &answer, 400);
        assert_eq!(cluster.snapshot(), before, "written by {body}");
    }
}

#[tokio::test]
async fn reader_requests_with_wrong_types_are_400() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    for body in [
        json!({}),
        json!({"fqid": 1}),
        json!({"fqid": null}),
        json!({"fqid": "motion"}),
        json!({"fqid": "motion/0"}),
        json!({"fqid": "Motion/1"}),
        json!({"fqid": "motion/one"}),
    ] {
        let (status, answer) = api.post_json("/internal/datastore/reader/get", &body).await;
        assert_eq!(status, 400, "get {body} -> {answer}");
        assert_error(status, &answer, 400);
    }
    for body in [
        json!({}),
        json!({"collection": 5}),
        json!({"collection": ["motion"]}),
        json!({"collection": "Motion"}),
        json!({"collection": "motion/1"}),
        json!({"collection": ""}),
    ] {
        let (status, answer) = api
            .post_json("/internal/datastore/reader/get_all", &body)
            .await;
        assert_eq!(status, 400, "get_all {body} -> {answer}");
        assert_error(status, &answer, 400);
    }
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413_and_writes_nothing() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    for path in [
        "/internal/datastore/writer/write",
        "/internal/datastore/reader/get",
        "/internal/datastore/reader/get_all",
    ] {
        let (status, body) = api.post_bytes(path, 1024 * 1024 + 1).await;
        assert_error(status, &body, 413);
    }
    // A valid write just over the limit is refused as well.
    let big = "x".repeat(1024 * 1024);
    let (status, body) = api
        .write(write_request(json!([create(
            "motion/1",
            json!({"text": big})
        )])))
        .await;
    assert_error(status, &body, 413);
    assert_eq!(cluster.stored_position(), None);
}

#[tokio::test]
async fn a_write_just_under_one_mebibyte_is_accepted() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    let text = "y".repeat(1024 * 1024 - 512);
    let body = write_request(json!([create("motion/1", json!({"text": text}))]));
    assert!(body.to_string().len() < 1024 * 1024);
    let (status, answer) = api.write(body).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = api.get_model("motion/1").await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["model"]["text"].as_str().map(str::len),
        Some(text.len())
    );
}

// ----- readers (SPEC 5.1) -----

#[tokio::test]
async fn get_is_404_for_a_model_that_never_existed_or_is_deleted() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    // Empty datastore, then unknown id, then unknown collection.
    let (status, body) = api.get_model("motion/1").await;
    assert_error(status, &body, 404);
    api.write_events(json!([create("motion/1", json!({"title": "A"}))]))
        .await;
    for fqid in ["motion/2", "topic/1"] {
        let (status, body) = api.get_model(fqid).await;
        assert_error(status, &body, 404);
    }
    api.write_events(json!([delete("motion/1")])).await;
    let (status, body) = api.get_model("motion/1").await;
    assert_error(status, &body, 404);
}

#[tokio::test]
async fn get_all_returns_only_live_models_keyed_by_id() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    api.write_events(json!([
        create("motion/1", json!({"title": "A"})),
        create("motion/2", json!({"title": "B"})),
        create("motion/10", json!({"title": "C"})),
        create("topic/1", json!({"title": "T"})),
    ]))
    .await;
    let deleted_at = api.write_events(json!([delete("motion/2")])).await;
    assert_eq!(deleted_at, 2);
    let (status, body) = api.get_all("motion").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"success": true, "models": {
            "1": {"title": "A", "meta_position": 1},
            "10": {"title": "C", "meta_position": 1},
        }})
    );
    // A collection with no models is an empty map, not an error.
    let (status, body) = api.get_all("agenda_item").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"success": true, "models": {}}));
}

#[tokio::test]
async fn get_answers_success_and_the_model() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    api.write_events(json!([create("motion/1", json!({"title": "A"}))]))
        .await;
    let (status, body) = api.get_model("motion/1").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"success": true, "model": {"title": "A", "meta_position": 1}})
    );
}

// ----- Redis unreachable, health (SPEC 4.3, 7) -----

#[tokio::test]
async fn health_reports_running_redis_ok_and_the_number_of_workers() {
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    for (status, body) in [api.health().await, api.system_health().await] {
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"status": "running", "redis": "ok", "workers": 0})
        );
    }
}

#[tokio::test]
async fn health_counts_live_workers() {
    let cluster = TestCluster::builder().workers(2).start();
    cluster.wait_for_workers(2, Duration::from_secs(20)).await;
    let (status, body) = cluster.client().system_health().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workers"], json!(2));
}

#[tokio::test]
async fn an_unreachable_redis_is_503_with_a_message_and_recovers() {
    let mut cluster = TestCluster::spawn_app();
    let api = cluster.client();
    api.write_events(json!([create("motion/1", json!({"title": "A"}))]))
        .await;

    cluster.redis.stop();
    for (path, body) in internal_routes() {
        let started = Instant::now();
        let (status, answer) = api.post_json(path, &body).await;
        let message = assert_error(status, &answer, 503);
        assert!(
            message.to_lowercase().contains("redis"),
            "{path}: the message should say Redis is unreachable: {message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} took {:?} to notice",
            started.elapsed()
        );
    }
    for (status, body) in [api.health().await, api.system_health().await] {
        assert_eq!(status, 503, "{body}");
        let redis = body["redis"].as_str().unwrap_or_default();
        assert!(
            !redis.is_empty() && redis != "ok",
            "health should describe the failure: {body}"
        );
    }

    // The restarted Redis is empty; the api reconnects by itself.
    cluster.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = api.health().await;
        if status == 200 {
            assert_eq!(body["redis"], json!("ok"));
            break;
        }
        assert!(Instant::now() < deadline, "health never recovered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let position = api
        .write_events(json!([create("motion/1", json!({"title": "again"}))]))
        .await;
    assert_eq!(position, 1);
    let (status, body) = api.get_model("motion/1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"]["title"], json!("again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_503_within_seconds_when_redis_is_stalled() {
    // A frozen Redis (SIGSTOP) accepts nothing and answers nothing, like a
    // partitioned one. Data routes may wait for a long script's response
    // timeout, but the health route is what load balancers and operators
    // poll: it must not hang.
    let cluster = TestCluster::spawn_app();
    let api = cluster.client();
    api.write_events(json!([create("motion/1", json!({}))]))
        .await;
    let redis_pid = cluster.pause_redis();
    let answer = tokio::time::timeout(Duration::from_secs(10), api.health()).await;
    cluster.resume_redis(redis_pid);
    let (status, body) = answer.expect("GET /health did not answer within 10 s with Redis stalled");
    assert_eq!(status, 503, "{body}");
    let (status, body) = api.get_model("motion/1").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.health().await;
    assert_eq!(status, 200, "{body}");
}

// ----- shutdown (SPEC 7) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_write_finish_then_exits_0() {
    let mut cluster = TestCluster::spawn_app();
    let api = cluster.client();
    api.write_events(json!([create("motion/1", json!({}))]))
        .await;
    // A frozen Redis keeps the next write in flight inside the api.
    let redis_pid = cluster.pause_redis();
    let in_flight = tokio::spawn(async move {
        api.write(write_request(json!([create("motion/2", json!({}))])))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.apis[0].signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.resume_redis(redis_pid);
    let (status, body) = in_flight
        .await
        .expect("the in-flight request got an answer, not a dropped connection");
    assert!(status == 200 || status == 503, "{status} {body}");
    let exit = cluster.apis[0]
        .wait_for_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("api still running after SIGTERM\n{}", cluster.log_tails()));
    assert_eq!(exit.code(), Some(0), "{}", cluster.apis[0].log_tail());
}

#[tokio::test]
async fn an_api_started_while_redis_is_down_answers_503_then_recovers() {
    let mut cluster = TestCluster::builder().apis(0).start();
    cluster.redis.stop();
    cluster.start_api();
    let api = cluster.client();
    let (status, body) = api.health().await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = api
        .write(write_request(json!([create("motion/1", json!({}))])))
        .await;
    assert_error(status, &body, 503);

    cluster.redis.restart();
    api.wait_until_healthy(Duration::from_secs(15)).await;
    assert_eq!(
        api.write_events(json!([create("motion/1", json!({}))]))
            .await,
        1
    );
}
