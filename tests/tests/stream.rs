//! `GET /internal/migrations/stream` (SPEC 9) through the real binaries:
//! every line once with its entry id, the structured progress, the final
//! result, `Last-Event-ID` resume, the cap on open streams, keep-alive
//! comments, any replica, a worker killed mid-run, a stalled Redis, and the
//! api's shutdown.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine as _;
use migration_cli::sse::{SseEvent, SseParser};
use migration_tests::migration_jobs::*;
use migration_tests::TestCluster;
use serde_json::{json, Value};

/// Longest a stream may take to deliver its result in these tests.
const RESULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One open stream, read event by event (comments kept in `raw`).
#[derive(Debug)]
struct EventStream {
    response: reqwest::Response,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    raw: String,
}

/// `GET /internal/migrations/stream` on `base_url`: the status, and the
/// stream when it is `200`.
async fn open(
    base_url: &str,
    password: &[u8],
    last_event_id: Option<&str>,
) -> (u16, Result<EventStream, Value>) {
    let mut request = reqwest::Client::new()
        .get(format!("{base_url}/internal/migrations/stream"))
        .header(
            "Authorization",
            base64::engine::general_purpose::STANDARD.encode(password),
        );
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request
        .send()
        .await
        .expect("the stream request is answered");
    let status = response.status().as_u16();
    if status != 200 {
        let text = response.text().await.unwrap_or_default();
        return (
            status,
            Err(serde_json::from_str(&text).unwrap_or(Value::String(text))),
        );
    }
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "an event stream"
    );
    (
        status,
        Ok(EventStream {
            response,
            parser: SseParser::default(),
            ready: VecDeque::new(),
            raw: String::new(),
        }),
    )
}

async fn open_ok(cluster: &TestCluster, api: usize, last_event_id: Option<&str>) -> EventStream {
    let (status, stream) = open(
        &cluster.apis[api].base_url(),
        cluster.password(),
        last_event_id,
    )
    .await;
    assert_eq!(status, 200, "{:?}", stream.err());
    stream.ok().unwrap()
}

impl EventStream {
    /// The next event, or `None` when the api ended the stream; panics
    /// when nothing comes within `timeout`.
    async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {timeout:?}; so far:\n{}", self.raw))
                .expect("the stream does not break");
            match chunk {
                Some(bytes) => {
                    self.raw.push_str(&String::from_utf8_lossy(&bytes));
                    self.ready.extend(self.parser.push(&bytes));
                }
                None => return None,
            }
        }
    }

    /// Every event up to and including `result`; asserts the stream ends
    /// right after it.
    async fn until_result(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        loop {
            let event = self
                .next(RESULT_TIMEOUT)
                .await
                .unwrap_or_else(|| panic!("the stream ended without a result:\n{}", self.raw));
            let last = event.event == "result";
            events.push(event);
            if last {
                break;
            }
        }
        assert!(
            self.next(Duration::from_secs(10)).await.is_none(),
            "the stream ends after its result"
        );
        events
    }
}

fn lines(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event.event == "line")
        .map(|event| event.data.clone())
        .collect()
}

fn result(events: &[SseEvent]) -> Value {
    let last = events.last().expect("events");
    assert_eq!(last.event, "result");
    serde_json::from_str(&last.data).expect("the result is JSON")
}

/// Entry ids as (ms, seq), asserting every line has one and they rise.
#[track_caller]
fn assert_rising_ids(events: &[SseEvent]) {
    let ids: Vec<(u64, u64)> = events
        .iter()
        .filter(|event| event.event == "line")
        .map(|event| {
            let id = event.id.as_deref().expect("a line has an id");
            let (ms, seq) = id.split_once('-').expect("an entry id");
            (ms.parse().unwrap(), seq.parse().unwrap())
        })
        .collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
}

fn output_lines(answer: &Value) -> Vec<String> {
    output_of(answer).lines().map(str::to_string).collect()
}

#[tokio::test]
async fn a_running_job_streams_every_line_its_progress_then_the_result_on_another_replica() {
    let cluster = cluster(2, 1, 30, 0);
    let client = cluster.client_for(0);
    seed(&client, 60).await;
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    // The stream of replica 1 follows the job replica 0 accepted.
    let mut stream = open_ok(&cluster, 1, None).await;
    let events = stream.until_result().await;

    let answer = result(&events);
    assert_eq!(answer["status"], "finalization_required", "{answer}");
    assert!(answer.get("exception").is_none(), "{answer}");
    assert_eq!(lines(&events), output_lines(&answer));
    assert_rising_ids(&events);
    // The result is the final `progress` answer: the same on a repeat.
    let (_, again) = cluster.client_for(0).progress().await;
    assert_eq!(answer, again);

    // The structured progress: the same numbers the answer carries, rising
    // to the total, with a rate while it ran.
    let progress: Vec<Value> = events
        .iter()
        .filter(|event| event.event == "progress")
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    assert!(progress.len() >= 2, "{progress:?}");
    let done: Vec<u64> = progress
        .iter()
        .map(|p| p["positions_done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|pair| pair[0] <= pair[1]), "{done:?}");
    let last = progress.last().unwrap();
    assert_eq!(last, &answer["progress"]);
    assert_eq!(last["positions_done"], 60);
    assert_eq!(last["positions_total"], 60);
    assert_eq!(last["events_done"], last["events_total"]);
    assert!(
        last["positions_per_second"].as_f64().unwrap() > 0.0,
        "{last}"
    );
    assert!(last["events_per_second"].as_f64().unwrap() > 0.0, "{last}");
    assert!(
        last["updated_at"].as_u64().unwrap() >= last["started_at"].as_u64().unwrap(),
        "{last}"
    );
}

#[tokio::test]
async fn reconnecting_with_last_event_id_resumes_after_that_entry() {
    let cluster = cluster(1, 1, 30, 0);
    let client = cluster.client();
    seed(&client, 60).await;
    let (status, _) = client.post_migration("migrate").await;
    assert_eq!(status, 200);

    // Mid-run: read three lines, drop the connection, resume after the third.
    let mut first = open_ok(&cluster, 0, None).await;
    let mut before = Vec::new();
    while before.len() < 3 {
        let event = first.next(RESULT_TIMEOUT).await.expect("more events");
        if event.event == "line" {
            before.push(event);
        }
    }
    drop(first);
    let third = before[2].id.clone().unwrap();
    let mut resumed = open_ok(&cluster, 0, Some(&third)).await;
    let after = resumed.until_result().await;
    let answer = result(&after);
    let mut all: Vec<String> = before.iter().map(|event| event.data.clone()).collect();
    all.extend(lines(&after));
    assert_eq!(
        all,
        output_lines(&answer),
        "every line once across the reconnect"
    );

    // After the end: from an entry in the middle, only the lines after it.
    let whole = open_ok(&cluster, 0, None).await.until_result().await;
    let whole_lines: Vec<&SseEvent> = whole.iter().filter(|e| e.event == "line").collect();
    let middle = whole_lines[4].id.clone().unwrap();
    let tail = open_ok(&cluster, 0, Some(&middle))
        .await
        .until_result()
        .await;
    assert_eq!(lines(&tail), output_lines(&answer)[5..].to_vec());
    assert_eq!(result(&tail), answer);

    // A Last-Event-ID that is no entry id: 400, nothing streamed.
    for bad in ["yesterday", "12", "1-x", ""] {
        let (status, body) = open(&cluster.api().base_url(), cluster.password(), Some(bad)).await;
        assert_eq!(status, 400, "{bad:?}");
        let body = body.err().unwrap();
        assert_eq!(body["success"], false);
        assert!(
            body["message"].as_str().unwrap().contains("Last-Event-ID"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn with_no_current_job_the_stream_is_one_result_at_once() {
    let cluster = cluster(1, 0, 0, 0);
    seed(&cluster.client(), 3).await;
    let events = open_ok(&cluster, 0, None).await.until_result().await;
    assert_eq!(events.len(), 1, "{events:?}");
    let answer = result(&events);
    assert_eq!(
        answer,
        json!({"success": true, "status": "migration_required"})
    );
    let (_, progress) = cluster.client().progress().await;
    assert_eq!(answer, progress);
}

#[tokio::test]
async fn the_stream_needs_the_internal_password() {
    let cluster = cluster(1, 0, 0, 0);
    let (status, body) = open(&cluster.api().base_url(), b"wrong", None).await;
    assert_eq!(status, 401, "{body:?}");
    let (status, _) = cluster
        .client()
        .without_auth()
        .get("/internal/migrations/stream")
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn past_the_cap_a_stream_gets_503_and_open_streams_keep_alive() {
    let cluster = TestCluster::builder()
        .migrations(MIGRATIONS)
        .configure(|options| {
            options
                .migration_wait_ms(0)
                .env("MIGRATION_STREAM_MAX_CLIENTS", "2")
        })
        .start();
    let client = cluster.client();
    seed(&client, 3).await;
    // No worker: the job stays queued and its streams stay open.
    let (status, _) = client.post_migration("migrate").await;
    assert_eq!(status, 200);
    let mut first = open_ok(&cluster, 0, None).await;
    let _second = open_ok(&cluster, 0, None).await;
    let (status, body) = open(&cluster.api().base_url(), cluster.password(), None).await;
    assert_eq!(status, 503);
    let body = body.err().unwrap();
    assert_eq!(body["success"], false);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("MIGRATION_STREAM_MAX_CLIENTS = 2"),
        "{body}"
    );

    // The open stream got the queued line and then only keep-alive comments.
    let event = first.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(event.event, "line");
    assert!(event.data.ends_with("queued: migrate"), "{event:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !first.raw.lines().any(|line| line.starts_with(':')) {
        assert!(
            Instant::now() < deadline,
            "no keep-alive comment:\n{}",
            first.raw
        );
        // A comment is no event: next() would wait forever; read chunks.
        if let Ok(Some(bytes)) =
            tokio::time::timeout(Duration::from_secs(1), first.response.chunk())
                .await
                .map(|c| c.unwrap())
        {
            first.raw.push_str(&String::from_utf8_lossy(&bytes));
        }
    }

    // A closed stream frees its slot.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = open(&cluster.api().base_url(), cluster.password(), None).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "the slot of a closed stream was never freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_worker_killed_mid_run_the_stream_delivers_every_line_once_and_the_result() {
    let mut cluster = cluster(2, 0, 20, 0);
    cluster.start_worker();
    cluster.start_worker();
    cluster.wait_for_workers(2, Duration::from_secs(30)).await;
    let client = cluster.client_for(0);
    seed(&client, 60).await;
    let (status, _) = client.post_migration("migrate").await;
    assert_eq!(status, 200);
    let mut stream = open_ok(&cluster, 1, None).await;

    wait_for_job_state(&cluster, "running", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let holder = (0..2)
        .find(|&index| cluster.workers[index].log().contains("claimed job"))
        .expect("a worker claimed the job");
    cluster.workers[holder].kill9();

    let events = stream.until_result().await;
    let answer = result(&events);
    assert!(answer.get("exception").is_none(), "{answer}");
    assert_eq!(answer["status"], "finalization_required");
    let streamed = lines(&events);
    assert_eq!(streamed, output_lines(&answer));
    assert!(
        streamed
            .iter()
            .any(|line| line.contains("took the job over")),
        "{streamed:?}"
    );
    let ids: HashSet<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
    assert_eq!(ids.len(), streamed.len(), "one id per line, none twice");
    assert_rising_ids(&events);
    assert_eq!(current_job(&cluster)["attempts"], "1");
    // The counts survive the takeover: the total, not only this run's.
    assert_eq!(answer["progress"]["positions_done"], 60);
}

#[tokio::test]
async fn shutting_the_api_down_ends_open_streams_without_a_result() {
    let mut cluster = cluster(1, 0, 0, 0);
    seed(&cluster.client(), 3).await;
    let (status, _) = cluster.client().post_migration("migrate").await;
    assert_eq!(status, 200);
    let mut stream = open_ok(&cluster, 0, None).await;
    assert_eq!(
        stream.next(Duration::from_secs(10)).await.unwrap().event,
        "line"
    );
    let started = Instant::now();
    let exit = cluster.apis[0].sigterm();
    assert!(exit.success(), "{exit}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drain did not wait for the stream"
    );
    let mut rest = Vec::new();
    while let Some(event) = stream.next(Duration::from_secs(10)).await {
        rest.push(event);
    }
    assert!(rest.iter().all(|event| event.event != "result"), "{rest:?}");
}

#[tokio::test]
async fn a_redis_that_stalls_mid_stream_loses_and_repeats_no_line() {
    let cluster = TestCluster::builder()
        .workers(1)
        .migrations(MIGRATIONS)
        .configure(|options| {
            options
                .migration_wait_ms(0)
                .worker_max_positions_per_second(20)
                .worker_lock_ttl_ms(10_000)
        })
        .start();
    seed(&cluster.client(), 60).await;
    let (status, _) = cluster.client().post_migration("migrate").await;
    assert_eq!(status, 200);
    let mut stream = open_ok(&cluster, 0, None).await;
    let mut events = Vec::new();
    while lines(&events).len() < 4 {
        events.push(stream.next(RESULT_TIMEOUT).await.expect("more events"));
    }
    // Two seconds of a frozen Redis (SIGSTOP): the blocked XREAD and the
    // record reads hang, then go on; the stream carries on where it was.
    let pid = cluster.pause_redis();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.resume_redis(pid);
    events.extend(stream.until_result().await);

    let answer = result(&events);
    assert!(answer.get("exception").is_none(), "{answer}");
    assert_eq!(lines(&events), output_lines(&answer));
    assert_rising_ids(&events);
}
