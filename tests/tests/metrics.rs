//! `GET /metrics` (SPEC 9) through the real binaries: two api replicas and
//! two workers on one private Redis. The `migration_*` figures are the
//! cluster's, so both replicas report them identically and correctly, after
//! a migrate and after a takeover (kill -9 of the running worker); the
//! `http_*` figures are each replica's own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use migration_tests::migration_jobs::*;
use migration_tests::{ApiClient, TestCluster};
use redis::Commands;

/// One scrape: `series{labels}` -> value.
type Scrape = BTreeMap<String, f64>;

/// Scrapes `client`'s replica (no password), checking the answer's form.
async fn scrape(client: &ApiClient) -> Scrape {
    let response = reqwest::get(format!("{}/metrics", client.base_url()))
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// The scrape's cluster-wide part.
fn migration_figures(scrape: &Scrape) -> Scrape {
    scrape
        .iter()
        .filter(|(series, _)| series.starts_with("migration_"))
        .map(|(series, value)| (series.clone(), *value))
        .collect()
}

fn value(scrape: &Scrape, series: &str) -> f64 {
    *scrape
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {scrape:#?}"))
}

/// Scrapes both replicas until their `migration_*` figures agree and
/// `settled` holds for them (workers' presence expires on its own clock),
/// then returns them; panics after 20 s with both scrapes.
async fn agreed_figures(cluster: &TestCluster, settled: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let first = migration_figures(&scrape(&cluster.client_for(0)).await);
        let second = migration_figures(&scrape(&cluster.client_for(1)).await);
        if first == second && settled(&first) {
            return first;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas disagree or never settled:\n{first:#?}\n{second:#?}\n{}",
            cluster.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn jobs(command: &str, result: &str) -> String {
    format!("migration_jobs_total{{command=\"{command}\",result=\"{result}\"}}")
}

fn duration_count(command: &str) -> String {
    format!("migration_job_duration_seconds_count{{command=\"{command}\"}}")
}

/// The worker ids in `workers`, in start order.
async fn start_workers(cluster: &mut TestCluster, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut conn = cluster.redis_connection();
    for started in 1..=count {
        cluster.start_worker();
        cluster
            .wait_for_workers(started as u64, Duration::from_secs(20))
            .await;
        let members: Vec<String> = conn.zrange(cluster.keys().workers(), 0, -1).unwrap();
        ids.push(
            members
                .into_iter()
                .find(|id| !ids.contains(id))
                .expect("a new worker id"),
        );
    }
    ids
}

#[tokio::test]
async fn both_replicas_report_the_cluster_figures_after_a_migrate_and_a_takeover() {
    const POSITIONS: u64 = 40;
    // 20 positions/s: a run of 40 positions takes 2 s, time to kill its worker.
    let mut cluster = cluster(2, 0, 20, 0);
    let ids = start_workers(&mut cluster, 2).await;
    let client = cluster.client_for(0);

    // Nothing ran yet: every series is there, at zero.
    let figures = agreed_figures(&cluster, |_| true).await;
    for command in ["migrate", "finalize", "reset"] {
        for result in ["ok", "exception", "abandoned"] {
            assert_eq!(value(&figures, &jobs(command, result)), 0.0);
        }
    }
    // no claim yet: no token handed out
    assert_eq!(value(&figures, "migration_fencing_token"), 0.0);
    assert_eq!(value(&figures, "migration_workers_live"), 2.0);
    assert_eq!(value(&figures, "migration_redis_up"), 1.0);

    // ----- a migrate, undisturbed -----
    seed(&client, POSITIONS).await;
    let seeded_events = client.stats().await["events"].as_f64().unwrap();
    let (status, answer) = client.post_migration("migrate").await;
    assert_eq!(status, 200, "{answer}");
    let running = agreed_figures(&cluster, |f| value(f, "migration_job_running") == 1.0).await;
    assert_eq!(value(&running, &jobs("migrate", "ok")), 0.0);
    let answer = finished(&client, Duration::from_secs(30)).await;
    assert!(answer.get("exception").is_none(), "{answer}");

    let figures = agreed_figures(&cluster, |_| true).await;
    assert_eq!(value(&figures, &jobs("migrate", "ok")), 1.0);
    assert_eq!(value(&figures, &jobs("migrate", "exception")), 0.0);
    assert_eq!(value(&figures, &duration_count("migrate")), 1.0);
    assert_eq!(
        value(
            &figures,
            "migration_job_duration_seconds_bucket{le=\"+Inf\",command=\"migrate\"}"
        ),
        1.0
    );
    // throttled to 20/s, 40 positions take well over a second
    assert!(
        value(
            &figures,
            "migration_job_duration_seconds_bucket{le=\"1.0\",command=\"migrate\"}"
        ) == 0.0
            && value(
                &figures,
                "migration_job_duration_seconds_sum{command=\"migrate\"}"
            ) > 1.0,
        "{figures:#?}"
    );
    assert_eq!(
        value(&figures, "migration_positions_migrated_total"),
        POSITIONS as f64
    );
    assert_eq!(
        value(&figures, "migration_events_migrated_total"),
        seeded_events
    );
    assert_eq!(value(&figures, "migration_takeovers_total"), 0.0);
    // the lock is free: the last token handed out, the migrate's
    let migrate_token = value(&figures, "migration_fencing_token");
    assert_eq!(migrate_token, fencing_counter(&cluster));
    assert!(migrate_token > 0.0);
    assert_eq!(value(&figures, "migration_job_running"), 0.0);
    assert_eq!(value(&figures, "migration_workers_live"), 2.0);

    // ----- a finalize whose worker is killed mid-run -----
    // 40 more live positions: finalize migrates them (throttled) first.
    seed_more(&client, POSITIONS).await;
    let (status, answer) = client.post_migration("finalize").await;
    assert_eq!(status, 200, "{answer}");
    wait_for_job_state(&cluster, "running", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let held = lock(&cluster);
    let holder = held["worker_id"].clone();
    let finalize_token: f64 = held["fencing_token"].parse().unwrap();
    let victim = ids.iter().position(|id| *id == holder).expect("a holder");
    cluster.workers[victim].kill9();
    let answer = finished(&cluster.client_for(1), Duration::from_secs(60)).await;
    assert!(answer.get("exception").is_none(), "{answer}");
    assert!(output_of(&answer).contains("took the job over"), "{answer}");

    // The dead worker's presence expires on its own.
    let figures = agreed_figures(&cluster, |f| value(f, "migration_workers_live") == 1.0).await;
    assert_eq!(value(&figures, &jobs("migrate", "ok")), 1.0);
    assert_eq!(value(&figures, &jobs("finalize", "ok")), 1.0);
    assert_eq!(value(&figures, &jobs("finalize", "abandoned")), 0.0);
    assert_eq!(value(&figures, &duration_count("finalize")), 1.0);
    assert_eq!(value(&figures, "migration_takeovers_total"), 1.0);
    // the takeover's token: handed out last, above the finalize's first one
    let token = value(&figures, "migration_fencing_token");
    assert_eq!(token, fencing_counter(&cluster));
    assert!(token > finalize_token && finalize_token > migrate_token);
    // every position counted once: the takeover's redone positions are not
    // counted again
    assert_eq!(
        value(&figures, "migration_positions_migrated_total"),
        2.0 * POSITIONS as f64
    );
    // the new positions hold one event each
    assert_eq!(
        value(&figures, "migration_events_migrated_total"),
        seeded_events + POSITIONS as f64
    );
    assert_eq!(value(&figures, "migration_job_running"), 0.0);
}

/// The last fencing token handed out, as Redis holds it.
fn fencing_counter(cluster: &TestCluster) -> f64 {
    let token: String = cluster
        .redis_connection()
        .get(cluster.keys().fencing_counter())
        .unwrap();
    token.parse().unwrap()
}

/// Writes `count` more positions, each creating one model after those of
/// [`seed`] (one event each).
async fn seed_more(client: &ApiClient, count: u64) {
    let requests: Vec<serde_json::Value> = (1..=count)
        .map(|n| {
            migration_tests::requests::write_request_with_mi(
                serde_json::json!([migration_tests::requests::create(
                    &format!("motion/{}", 1000 + n),
                    serde_json::json!({"title": format!("N{n}")})
                )]),
                1,
            )
        })
        .collect();
    let (status, body) = client.write(serde_json::Value::Array(requests)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn http_figures_are_each_replicas_own_and_count_unmatched_paths_in_one_series() {
    let cluster = cluster(2, 0, 0, 100);
    let (first, second) = (cluster.client_for(0), cluster.client_for(1));
    let before = (scrape(&first).await, scrape(&second).await);

    for _ in 0..5 {
        assert_eq!(second.health().await.0, 200);
    }
    for path in ["/nope", "/nope/1", "/internal/nothing"] {
        let (status, _) = first.get(path).await;
        assert_eq!(status, 404);
    }
    let (status, _) = first
        .without_auth()
        .post_json("/internal/migrations", &serde_json::json!({"cmd": "stats"}))
        .await;
    assert_eq!(status, 401);
    let after = (scrape(&first).await, scrape(&second).await);

    let delta = |scrapes: &(Scrape, Scrape), replica: usize, series: &str| {
        let (a, b) = scrapes;
        let scrape = if replica == 0 { a } else { b };
        scrape.get(series).copied().unwrap_or(0.0)
    };
    let change = |replica: usize, series: &str| {
        delta(&after, replica, series) - delta(&before, replica, series)
    };
    let health = "http_requests_total{route=\"/health\",status=\"200\"}";
    let unmatched = "http_requests_total{route=\"unmatched\",status=\"404\"}";
    let refused = "http_requests_total{route=\"/internal/migrations\",status=\"401\"}";
    let scrapes = "http_requests_total{route=\"/metrics\",status=\"200\"}";
    assert_eq!(change(1, health), 5.0);
    assert_eq!(change(0, health), 0.0);
    // three different unknown paths, one series
    assert_eq!(change(0, unmatched), 3.0);
    assert_eq!(change(1, unmatched), 0.0);
    assert_eq!(change(0, refused), 1.0);
    assert_eq!(change(1, refused), 0.0);
    // the `before` scrape itself was counted once it was answered
    assert_eq!(change(0, scrapes), 1.0);
    assert_eq!(change(1, scrapes), 1.0);
    assert!(
        !after.0.keys().any(|series| series.contains("/nope")),
        "raw paths must not become labels: {:#?}",
        after.0
    );
    assert_eq!(
        change(1, "http_request_duration_seconds_count{route=\"/health\"}"),
        5.0
    );
    // the cluster-wide part is the same on both, whatever each served
    assert_eq!(migration_figures(&after.0), migration_figures(&after.1));
}

#[tokio::test]
async fn a_hung_redis_still_gives_a_scrape_with_the_http_figures() {
    let cluster = cluster(1, 0, 0, 100);
    let client = cluster.client();
    assert_eq!(value(&scrape(&client).await, "migration_redis_up"), 1.0);
    let pid = cluster.pause_redis();
    let figures = scrape(&client).await;
    cluster.resume_redis(pid);
    assert_eq!(value(&figures, "migration_redis_up"), 0.0);
    assert!(
        !figures
            .keys()
            .any(|series| series.starts_with("migration_jobs")),
        "{figures:#?}"
    );
    assert!(
        value(
            &figures,
            "http_requests_total{route=\"/metrics\",status=\"200\"}"
        ) >= 1.0
    );
    // and once Redis is back, the figures are back
    assert_eq!(value(&scrape(&client).await, "migration_redis_up"), 1.0);
}
