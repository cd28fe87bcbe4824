//! SPEC 4.3 through the real binaries, with the faults as they happen:
//!
//! - a Redis restart of 1 s (data kept, `SHUTDOWN SAVE`) during a running
//!   `migrate`: operator-tool-style pollers (`progress` every ~200 ms, a
//!   5 s client timeout, four at once) never see a non-2xx answer;
//! - a hung Redis (`SIGSTOP`): every route answers within the budget with a
//!   clear message, and works again after `SIGCONT`;
//! - a thousand-poller pile-up: requests beyond the replica's bound are shed
//!   at once with a `503`, not queued.
//!
//! Bounds on time are generous (7 s for the 4 s budget): the suite runs on
//! loaded machines. They check that an answer comes, not how fast.

use std::time::{Duration, Instant};

use base64::Engine as _;
use migration_tests::migration_jobs::*;
use migration_tests::requests::create;
use migration_tests::{write_request, TestCluster};
use serde_json::{json, Value};

/// What the operator tool gives one request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The generous bound a hung-Redis answer must come within.
const ANSWER_BOUND: Duration = Duration::from_secs(7);

/// An HTTP client as the operator tool is: 5 s per request, the SPEC 3 header.
struct OperatorTool {
    http: reqwest::Client,
    base_url: String,
    authorization: String,
}

/// One answer, or what went wrong on the way.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    body: Value,
    took: Duration,
    transport_error: Option<String>,
}

impl OperatorTool {
    fn new(cluster: &TestCluster) -> OperatorTool {
        OperatorTool {
            http: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .build()
                .unwrap(),
            base_url: cluster.api().base_url(),
            authorization: base64::engine::general_purpose::STANDARD.encode(cluster.password()),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let started = Instant::now();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header(reqwest::header::AUTHORIZATION, &self.authorization);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                Answer {
                    status: Some(status),
                    body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    took: started.elapsed(),
                    transport_error: None,
                }
            }
            Err(err) => Answer {
                status: None,
                body: Value::Null,
                took: started.elapsed(),
                transport_error: Some(err.to_string()),
            },
        }
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn progress(&self) -> Answer {
        self.post("/internal/migrations", json!({"cmd": "progress"}))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_poller_never_sees_a_one_second_redis_restart() {
    // A throttled migrate that runs well past the restart.
    let mut cluster = cluster(1, 1, 10, 0);
    seed(&cluster.client(), 60).await;
    cluster.wait_for_workers(1, Duration::from_secs(30)).await;
    let (status, answer) = cluster.client().post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "migration_running", "{answer}");

    // Several tools at once: their polls share the replica's reads, and a
    // failed shared read must be retried for each of them.
    let tool = std::sync::Arc::new(OperatorTool::new(&cluster));
    let pollers: Vec<_> = (0..4)
        .map(|_| {
            let tool = tool.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(6) {
                    let sent = Instant::now();
                    let answer = tool.progress().await;
                    answers.push((sent, answer));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restart_started = Instant::now();
    tokio::task::block_in_place(|| {
        cluster
            .redis
            .restart_keeping_data(Duration::from_millis(1000))
    });
    let restart_ended = Instant::now();
    let redis_was_down = restart_ended - restart_started;
    let mut answers = Vec::new();
    for poller in pollers {
        answers.extend(poller.await.unwrap());
    }

    for (sent, answer) in &answers {
        assert!(
            answer.transport_error.is_none() && answer.status == Some(200),
            "progress sent {:?} after the restart began (Redis down for {redis_was_down:?}): \
             {answer:?}\n{}",
            sent.saturating_duration_since(restart_started),
            cluster.log_tails()
        );
        assert!(
            answer.body["output"]
                .as_str()
                .is_some_and(|output| output.starts_with("Job ")),
            "progress lost the output: {answer:?}"
        );
    }
    // The poller really polled across the restart: answers before, during
    // (delayed until Redis was back) and after it.
    let during = answers
        .iter()
        .filter(|(sent, answer)| *sent < restart_ended && *sent + answer.took > restart_started)
        .count();
    assert!(during >= 1, "no poll overlapped the restart: {answers:?}");
    assert!(answers.len() >= 10, "too few polls: {}", answers.len());
    // The job's data survived: its output is still the current one.
    let (status, answer) = cluster.client().progress().await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["output"].as_str().unwrap().starts_with("Job "));
}

#[tokio::test]
async fn with_redis_hung_every_route_answers_within_the_budget() {
    let cluster = cluster(1, 0, 0, 100);
    let client = cluster.client();
    seed(&client, 3).await;
    let tool = OperatorTool::new(&cluster);
    let pid = cluster.pause_redis();

    let write = write_request(json!([create("motion/100", json!({"title": "late"}))]));
    let (health, system_health, progress, stats, get, get_all, migrate, written) = tokio::join!(
        tool.send(reqwest::Method::GET, "/health", None),
        tool.send(reqwest::Method::GET, "/system/action/health", None),
        tool.progress(),
        tool.post("/internal/migrations", json!({"cmd": "stats"})),
        tool.post(
            "/internal/datastore/reader/get",
            json!({"fqid": "motion/1"})
        ),
        tool.post(
            "/internal/datastore/reader/get_all",
            json!({"collection": "motion"})
        ),
        tool.post("/internal/migrations", json!({"cmd": "migrate"})),
        tool.post("/internal/datastore/writer/write", write),
    );
    cluster.resume_redis(pid);

    for (route, answer) in [
        ("/health", &health),
        ("/system/action/health", &system_health),
    ] {
        assert_answered_in_time(route, answer);
        assert_eq!(answer.status, Some(503), "{route}: {answer:?}");
        assert_eq!(answer.body["status"], "running", "{route}: {answer:?}");
        let redis = answer.body["redis"].as_str().unwrap_or_default();
        assert!(redis.contains("no answer"), "{route}: {answer:?}");
    }
    for (route, answer) in [
        ("progress", &progress),
        ("stats", &stats),
        ("reader/get", &get),
        ("reader/get_all", &get_all),
        ("migrate", &migrate),
    ] {
        assert_answered_in_time(route, answer);
        assert_eq!(answer.status, Some(503), "{route}: {answer:?}");
        assert_clear_message(route, answer, "redis is unreachable: no answer within");
    }
    let migrate_message = migrate.body["message"].as_str().unwrap();
    assert!(
        migrate_message.contains("'progress' tells"),
        "{migrate_message}"
    );
    // The write was sent or not: 503 only when certainly not sent, 504
    // (retry with the same key) otherwise.
    assert_answered_in_time("write", &written);
    match written.status {
        Some(504) => assert_clear_message("write", &written, "Idempotency-Key"),
        Some(503) => assert_clear_message("write", &written, ""),
        _ => panic!("write: {written:?}"),
    }

    // Redis is back: the routes answer again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = client.health().await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "health after SIGCONT: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = client.get_model("motion/1").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn pollers_beyond_the_replicas_bound_are_shed_at_once() {
    const POLLERS: usize = 400;
    let cluster = TestCluster::spawn_app();
    let tool = std::sync::Arc::new(OperatorTool::new(&cluster));
    // With Redis hung, every admitted poll holds its slot for the whole
    // budget: the pile-up of a thousand slow pollers, made deterministic.
    let pid = cluster.pause_redis();
    let polls: Vec<_> = (0..POLLERS)
        .map(|_| {
            let tool = tool.clone();
            tokio::spawn(async move { tool.progress().await })
        })
        .collect();
    let mut answers = Vec::new();
    for poll in polls {
        answers.push(poll.await.unwrap());
    }
    cluster.resume_redis(pid);

    let shed: Vec<&Answer> = answers
        .iter()
        .filter(|answer| {
            answer.body["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("too many concurrent"))
        })
        .collect();
    for answer in &answers {
        assert_eq!(answer.status, Some(503), "{answer:?}");
        assert_eq!(answer.body["success"], false, "{answer:?}");
    }
    // At most 128 admitted per replica; the rest shed.
    assert!(
        shed.len() >= POLLERS - 128,
        "only {} of {POLLERS} polls were shed",
        shed.len()
    );
    // Shed polls are answered at once, not after the budget. (Generous: the
    // clients themselves queue on a loaded machine.)
    let quick = shed
        .iter()
        .filter(|answer| answer.took < Duration::from_secs(3))
        .count();
    assert!(quick * 2 >= shed.len(), "shed answers were slow: {shed:?}");
    let (status, body) = cluster.client().progress().await;
    assert_eq!(status, 200, "{body}");
}

#[track_caller]
fn assert_answered_in_time(route: &str, answer: &Answer) {
    assert!(
        answer.transport_error.is_none(),
        "{route} got no answer: {answer:?}"
    );
    assert!(
        answer.took < ANSWER_BOUND,
        "{route} took {:?}: {answer:?}",
        answer.took
    );
}

#[track_caller]
fn assert_clear_message(route: &str, answer: &Answer, contains: &str) {
    assert_eq!(answer.body["success"], false, "{route}: {answer:?}");
    let message = answer.body["message"].as_str().unwrap_or_default();
    assert!(
        !message.is_empty() && message.contains(contains),
        "{route}: {answer:?}"
    );
}
