//! The runner's parts against a private real Redis: the output sink keeps
//! order and stops when fenced; lease renewal keeps the lock, reports a
//! lost one at once, and never waits behind the engine's connection.

use std::time::Duration;

use migration_shared::jobs::{self, lock, ClaimOutcome, ClaimedJob, JobCommand};
use migration_shared::keys::Keys;
use migration_shared::redis_client::RedisConnection;
use migration_shared::test_support::RedisServer;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::keep_renewed;
use super::sink::{RedisOutputSink, SinkOutcome};
use super::Connections;
use crate::engine::{EngineError, OutputSink};

async fn claimed_job(lease: Duration) -> (RedisServer, RedisConnection, Keys, ClaimedJob) {
    let server = RedisServer::start();
    let mut conn = server.connection_manager().await;
    let keys = Keys::new("r");
    jobs::enqueue(&mut conn, &keys, JobCommand::Migrate, false, "fp")
        .await
        .unwrap();
    let job = match jobs::claim(&mut conn, &keys, "w1", "fp", lease, None)
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(job) => job,
        other => panic!("{other:?}"),
    };
    (server, conn, keys, job)
}

/// Spawns [`keep_renewed`] for `job`'s lock, held from now; returns the task
/// and its `done` and `lost` tokens.
fn renewing(
    conn: &RedisConnection,
    keys: &Keys,
    job: &ClaimedJob,
    lease: Duration,
) -> (JoinHandle<Instant>, CancellationToken, CancellationToken) {
    let (done, lost) = (CancellationToken::new(), CancellationToken::new());
    let task = tokio::spawn(keep_renewed(
        conn.clone(),
        keys.clone(),
        job.fencing_token,
        lease,
        Instant::now(),
        done.clone(),
        lost.clone(),
    ));
    (task, done, lost)
}

#[tokio::test]
async fn the_sink_writes_every_line_in_order() {
    let (_server, mut conn, keys, job) = claimed_job(Duration::from_secs(10)).await;
    let mut sink = RedisOutputSink::start(
        conn.clone(),
        keys.clone(),
        job.job_id.clone(),
        job.fencing_token,
        job.output_lines,
        CancellationToken::new(),
    );
    for i in 0..2000 {
        sink.line(format!("line {i}")).await.unwrap();
    }
    assert_eq!(sink.close().await, SinkOutcome::Written);
    let lines = jobs::read_output(&mut conn, &keys, &job.job_id)
        .await
        .unwrap();
    let expected: Vec<String> = (0..2000).map(|i| format!("line {i}")).collect();
    assert_eq!(&lines[job.output_lines as usize..], expected.as_slice());
}

#[tokio::test]
async fn the_sink_stops_writing_once_fenced() {
    let (_server, mut conn, keys, job) = claimed_job(Duration::from_millis(100)).await;
    let mut sink = RedisOutputSink::start(
        conn.clone(),
        keys.clone(),
        job.job_id.clone(),
        job.fencing_token,
        job.output_lines,
        CancellationToken::new(),
    );
    sink.line("before".into()).await.unwrap();
    // the lease expires and another worker takes the job over
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = jobs::claim(&mut conn, &keys, "w2", "fp", Duration::from_secs(10), None)
        .await
        .unwrap();
    assert!(matches!(other, ClaimOutcome::Claimed(_)), "{other:?}");
    let mut refused = false;
    for i in 0..100 {
        if let Err(EngineError::Fenced) = sink.line(format!("late {i}")).await {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "the sink never reported the fence");
    assert_eq!(sink.close().await, SinkOutcome::Fenced);
    let lines = jobs::read_output(&mut conn, &keys, &job.job_id)
        .await
        .unwrap();
    assert!(lines.contains(&"before".to_string()));
    assert!(
        !lines.iter().any(|line| line.starts_with("late")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn renewal_keeps_the_lease_alive_past_its_ttl() {
    let lease = Duration::from_millis(300);
    let (_server, mut conn, keys, job) = claimed_job(lease).await;
    let (task, done, lost) = renewing(&conn, &keys, &job, lease);
    tokio::time::sleep(lease * 4).await;
    assert!(!lost.is_cancelled());
    let holder: Option<u64> = redis::cmd("HGET")
        .arg(keys.lock())
        .arg("fencing_token")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(holder, Some(job.fencing_token));
    done.cancel();
    task.await.unwrap();
    lock::finish(&mut conn, &keys, &job.job_id, job.fencing_token, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lost_lease_is_reported_within_a_renewal_interval() {
    let lease = Duration::from_millis(600);
    let (_server, mut conn, keys, job) = claimed_job(lease).await;
    let (task, _done, lost) = renewing(&conn, &keys, &job, lease);
    // someone else's token in the lock (as after a takeover)
    redis::cmd("HSET")
        .arg(keys.lock())
        .arg("fencing_token")
        .arg(job.fencing_token + 1)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    tokio::time::timeout(lease, lost.cancelled())
        .await
        .expect("the lost lease was not reported");
    assert!(started.elapsed() <= lease / 3 + Duration::from_millis(100));
    task.await.unwrap();
}

#[tokio::test]
async fn silent_redis_for_most_of_a_lease_counts_as_lost() {
    let lease = Duration::from_millis(600);
    let (mut server, conn, keys, job) = claimed_job(lease).await;
    let (task, _done, lost) = renewing(&conn, &keys, &job, lease);
    server.stop();
    let started = Instant::now();
    tokio::time::timeout(lease * 2, lost.cancelled())
        .await
        .expect("an unreachable Redis never stopped the job");
    assert!(started.elapsed() <= lease, "{:?}", started.elapsed());
    task.await.unwrap();
}

/// Holds `conn` (a multiplexed connection) busy for `seconds`: every command
/// sent on it after this one waits, as behind a big checkpoint.
fn stall(conn: &RedisConnection, seconds: u64) -> JoinHandle<()> {
    let mut conn = conn.clone();
    tokio::spawn(async move {
        let _: Option<(String, String)> = redis::cmd("BLPOP")
            .arg("nothing-ever-comes")
            .arg(seconds)
            .query_async(&mut conn)
            .await
            .unwrap();
    })
}

#[tokio::test]
async fn renewal_never_waits_behind_the_engines_connection() {
    let lease = Duration::from_millis(600);
    let (server, _conn, keys, job) = claimed_job(lease).await;
    let conns = Connections::open(&server.url()).unwrap();
    // both connected before the stall
    for conn in [&conns.engine, &conns.control] {
        let _: String = redis::cmd("PING")
            .query_async(&mut conn.clone())
            .await
            .unwrap();
    }
    let stalled = stall(&conns.engine, 4);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (task, done, lost) = renewing(&conns.control, &keys, &job, lease);
    tokio::time::sleep(lease * 3).await;
    assert!(
        !lost.is_cancelled(),
        "renewal waited behind the engine's connection"
    );
    // the engine's connection really is stalled: renewing on it fails
    let mut engine = conns.engine.clone();
    let ping = tokio::time::timeout(
        Duration::from_millis(200),
        redis::cmd("PING").query_async::<String>(&mut engine),
    )
    .await;
    assert!(ping.is_err(), "the engine's connection was not stalled");
    done.cancel();
    task.await.unwrap();
    stalled.await.unwrap();
}

#[tokio::test]
async fn a_hung_redis_stops_the_job_before_the_lease_runs_out() {
    let lease = Duration::from_millis(1200);
    let (server, conn, keys, job) = claimed_job(lease).await;
    let (task, _done, lost) = renewing(&conn, &keys, &job, lease);
    // hang right away: every renewal stays unanswered
    server.freeze();
    let started = Instant::now();
    let stopped = tokio::time::timeout(lease * 2, lost.cancelled()).await;
    server.thaw();
    stopped.expect("a hung Redis never stopped the job");
    // The lock may expire one lease after the claim: the work must stop
    // before then, whatever the renewals are doing.
    assert!(started.elapsed() < lease, "{:?}", started.elapsed());
    task.await.unwrap();
}
