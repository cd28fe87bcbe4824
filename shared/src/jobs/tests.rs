//! The guarantee of each job/lock/output script, checked against a private
//! real Redis (never a mock).

use std::time::{Duration, Instant};

use crate::redis_client::RedisConnection;

use super::lock::{append_output, finish, hand_back, renew, LeaseError};
use super::workers::{heartbeat, leave};
use super::*;
use crate::keys::Keys;
use crate::presence::live_worker_count;
use crate::test_support::RedisServer;

const LEASE: Duration = Duration::from_millis(10_000);

async fn setup() -> (RedisServer, RedisConnection, Keys) {
    let server = RedisServer::start();
    let conn = server.connection_manager().await;
    (server, conn, Keys::new("t"))
}

async fn accepted(conn: &mut RedisConnection, keys: &Keys, command: JobCommand) -> String {
    match enqueue(conn, keys, command, false, "fp").await.unwrap() {
        EnqueueOutcome::Accepted { job_id } => job_id,
        other => panic!("expected accepted, got {other:?}"),
    }
}

async fn claimed(
    conn: &mut RedisConnection,
    keys: &Keys,
    worker: &str,
    lease: Duration,
) -> ClaimedJob {
    match claim(conn, keys, worker, "fp", lease, None).await.unwrap() {
        ClaimOutcome::Claimed(job) => job,
        other => panic!("expected claimed, got {other:?}"),
    }
}

/// [`append_output`] of `lines` as the holder of `token`, after the first
/// `before` lines.
async fn append(
    conn: &mut RedisConnection,
    keys: &Keys,
    id: &str,
    token: u64,
    before: u64,
    lines: &[&str],
) -> Result<u64, LeaseError> {
    let lines: Vec<String> = lines.iter().map(|line| line.to_string()).collect();
    append_output(conn, keys, id, token, before, &lines).await
}

/// The job ids on the wake-up list, oldest first.
async fn woken(conn: &mut RedisConnection, keys: &Keys) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(keys.job_wakeup())
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap()
}

/// Whether the lock key exists at all.
async fn lock_exists(conn: &mut RedisConnection, keys: &Keys) -> bool {
    redis::cmd("EXISTS")
        .arg(keys.lock())
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn enqueue_refuses_while_queued_running_or_unread_and_clears_old_output() {
    let (_server, mut conn, keys) = setup().await;
    let first = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let record = current_job(&mut conn, &keys).await.unwrap().unwrap();
    assert_eq!(record.id, first);
    assert_eq!(record.command, JobCommand::Migrate);
    assert_eq!(record.state, JobState::Queued);
    assert_eq!(record.fingerprint, "fp");
    assert!(record.created_at.is_some());
    assert_eq!(
        read_output(&mut conn, &keys, &first).await.unwrap(),
        vec![format!("Job {first} queued: migrate")]
    );
    assert_eq!(woken(&mut conn, &keys).await, vec![first.clone()]);

    // queued: refused
    assert_eq!(
        enqueue(&mut conn, &keys, JobCommand::Reset, false, "fp")
            .await
            .unwrap(),
        EnqueueOutcome::Running {
            job_id: first.clone()
        }
    );
    // running: refused
    let job = claimed(&mut conn, &keys, "w1", LEASE).await;
    assert_eq!(
        enqueue(&mut conn, &keys, JobCommand::Finalize, true, "fp")
            .await
            .unwrap(),
        EnqueueOutcome::Running {
            job_id: first.clone()
        }
    );
    // finished, unread: refused with the other reason
    finish(&mut conn, &keys, &first, job.fencing_token, None)
        .await
        .unwrap();
    assert_eq!(
        enqueue(&mut conn, &keys, JobCommand::Migrate, false, "fp")
            .await
            .unwrap(),
        EnqueueOutcome::NotRead {
            job_id: first.clone()
        }
    );
    // read: accepted, the old job and its output are gone
    assert!(mark_result_read(&mut conn, &keys, &first).await.unwrap());
    let second = accepted(&mut conn, &keys, JobCommand::Reset).await;
    assert_ne!(first, second);
    assert_eq!(super::job(&mut conn, &keys, &first).await.unwrap(), None);
    assert!(read_output(&mut conn, &keys, &first)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        current_job(&mut conn, &keys).await.unwrap().unwrap().id,
        second
    );
}

#[tokio::test]
async fn concurrent_enqueues_accept_exactly_one() {
    let (_server, conn, keys) = setup().await;
    for _round in 0..5 {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let mut conn = conn.clone();
            let keys = keys.clone();
            tasks.push(tokio::spawn(async move {
                enqueue(&mut conn, &keys, JobCommand::Migrate, false, "fp")
                    .await
                    .unwrap()
            }));
        }
        let mut accepted_ids = Vec::new();
        for task in tasks {
            if let EnqueueOutcome::Accepted { job_id } = task.await.unwrap() {
                accepted_ids.push(job_id);
            }
        }
        assert_eq!(accepted_ids.len(), 1, "{accepted_ids:?}");
        // finish and read it so that the next round may enqueue again
        let mut conn = conn.clone();
        let job = claimed(&mut conn, &keys, "w", LEASE).await;
        finish(&mut conn, &keys, &job.job_id, job.fencing_token, None)
            .await
            .unwrap();
        mark_result_read(&mut conn, &keys, &job.job_id)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn mark_read_only_marks_finished_jobs() {
    let (_server, mut conn, keys) = setup().await;
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    assert!(!mark_result_read(&mut conn, &keys, &id).await.unwrap());
    let job = claimed(&mut conn, &keys, "w", LEASE).await;
    assert!(!mark_result_read(&mut conn, &keys, &id).await.unwrap());
    finish(&mut conn, &keys, &id, job.fencing_token, Some("boom"))
        .await
        .unwrap();
    assert!(mark_result_read(&mut conn, &keys, &id).await.unwrap());
    let record = current_job(&mut conn, &keys).await.unwrap().unwrap();
    assert!(record.result_read);
    assert_eq!(record.exception.as_deref(), Some("boom"));
    assert!(!mark_result_read(&mut conn, &keys, "missing").await.unwrap());
}

#[tokio::test]
async fn claim_takes_queued_jobs_once_with_rising_fencing_tokens() {
    let (_server, mut conn, keys) = setup().await;
    assert_eq!(
        claim(&mut conn, &keys, "w1", "fp", LEASE, None)
            .await
            .unwrap(),
        ClaimOutcome::Idle
    );
    let id = accepted(&mut conn, &keys, JobCommand::Finalize).await;
    let job = claimed(&mut conn, &keys, "w1", LEASE).await;
    assert_eq!(job.job_id, id);
    assert_eq!(job.command, JobCommand::Finalize);
    assert_eq!(job.attempts, 0);
    assert_eq!(job.output_lines, 2);
    let (holder, token, ttl): (String, u64, i64) = redis::pipe()
        .hget(keys.lock(), "worker_id")
        .hget(keys.lock(), "fencing_token")
        .pttl(keys.lock())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((holder.as_str(), token), ("w1", job.fencing_token));
    assert!(ttl > 9_000 && ttl <= 10_000, "{ttl}");
    assert_eq!(
        claim(&mut conn, &keys, "w2", "fp", LEASE, None)
            .await
            .unwrap(),
        ClaimOutcome::Busy { job_id: id.clone() }
    );
    let record = current_job(&mut conn, &keys).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Running);
    assert_eq!(record.worker_id.as_deref(), Some("w1"));
    assert!(record.started_at.is_some());
    // finished jobs are not claimed
    finish(&mut conn, &keys, &id, job.fencing_token, None)
        .await
        .unwrap();
    assert_eq!(
        claim(&mut conn, &keys, "w2", "fp", LEASE, None)
            .await
            .unwrap(),
        ClaimOutcome::Idle
    );
    mark_result_read(&mut conn, &keys, &id).await.unwrap();
    accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let next = claimed(&mut conn, &keys, "w2", LEASE).await;
    assert!(next.fencing_token > job.fencing_token);
}

#[tokio::test]
async fn expired_lease_is_taken_over_three_times_then_abandoned() {
    let (_server, mut conn, keys) = setup().await;
    let short = Duration::from_millis(60);
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let mut holder = claimed(&mut conn, &keys, "w0", short).await;
    for takeover in 1..=MAX_TAKEOVERS {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let worker = format!("w{takeover}");
        let next = claimed(&mut conn, &keys, &worker, short).await;
        assert_eq!(next.attempts, takeover);
        assert!(next.fencing_token > holder.fencing_token);
        // the previous holder is fenced out of everything
        assert!(!renew(&mut conn, &keys, holder.fencing_token, short)
            .await
            .unwrap());
        assert!(matches!(
            append(&mut conn, &keys, &id, holder.fencing_token, 0, &["late"]).await,
            Err(LeaseError::Fenced)
        ));
        let lines = read_output(&mut conn, &keys, &id).await.unwrap();
        let said = format!(
            "Worker {worker} took the job over from worker w{} (its lease expired; takeover {takeover} of 3)",
            takeover - 1
        );
        assert_eq!(lines.last(), Some(&said));
        holder = next;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        claim(&mut conn, &keys, "w9", "fp", short, None)
            .await
            .unwrap(),
        ClaimOutcome::Abandoned { job_id: id.clone() }
    );
    let record = current_job(&mut conn, &keys).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Finished);
    let exception = record.exception.unwrap();
    assert!(exception.contains("abandoned"), "{exception}");
    assert!(!lines_contain(
        &read_output(&mut conn, &keys, &id).await.unwrap(),
        "late"
    ));
}

fn lines_contain(lines: &[String], text: &str) -> bool {
    lines.iter().any(|line| line.contains(text))
}

#[tokio::test]
async fn a_worker_with_another_registry_refuses_the_job() {
    let (_server, mut conn, keys) = setup().await;
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    assert_eq!(
        claim(&mut conn, &keys, "w1", "other-fp", LEASE, None)
            .await
            .unwrap(),
        ClaimOutcome::Refused {
            job_id: id.clone(),
            job_fingerprint: "fp".into()
        }
    );
    let record = current_job(&mut conn, &keys).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Finished);
    let exception = record.exception.unwrap();
    assert!(
        exception.contains("fp ") && exception.contains("other-fp"),
        "{exception}"
    );
    assert!(!lock_exists(&mut conn, &keys).await);
}

#[tokio::test]
async fn renew_extends_only_the_holders_lease() {
    let (_server, mut conn, keys) = setup().await;
    accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let job = claimed(&mut conn, &keys, "w1", Duration::from_millis(200)).await;
    assert!(renew(&mut conn, &keys, job.fencing_token, LEASE)
        .await
        .unwrap());
    let ttl: i64 = redis::cmd("PTTL")
        .arg(keys.lock())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 9_000, "{ttl}");
    assert!(!renew(&mut conn, &keys, job.fencing_token + 1, LEASE)
        .await
        .unwrap());
    redis::cmd("DEL")
        .arg(keys.lock())
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert!(!renew(&mut conn, &keys, job.fencing_token, LEASE)
        .await
        .unwrap());
    assert!(
        !lock_exists(&mut conn, &keys).await,
        "renew must never recreate a lost lock"
    );
}

#[tokio::test]
async fn append_output_is_fenced_ordered_and_idempotent_on_retry() {
    let (_server, mut conn, keys) = setup().await;
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let job = claimed(&mut conn, &keys, "w1", LEASE).await;
    let after = append(
        &mut conn,
        &keys,
        &id,
        job.fencing_token,
        job.output_lines,
        &["a", "b"],
    )
    .await
    .unwrap();
    assert_eq!(after, job.output_lines + 2);
    // the same batch again (a retry after a lost reply) plus one new line
    let after = append(
        &mut conn,
        &keys,
        &id,
        job.fencing_token,
        job.output_lines,
        &["a", "b", "c"],
    )
    .await
    .unwrap();
    assert_eq!(after, job.output_lines + 3);
    let lines = read_output(&mut conn, &keys, &id).await.unwrap();
    assert_eq!(&lines[lines.len() - 3..], &["a", "b", "c"]);
    assert_eq!(lines.len() as u64, after);
    assert!(matches!(
        append(&mut conn, &keys, &id, job.fencing_token + 1, after, &["x"]).await,
        Err(LeaseError::Fenced)
    ));
    assert_eq!(
        read_output(&mut conn, &keys, &id).await.unwrap().len() as u64,
        after
    );
}

#[tokio::test]
async fn finish_is_fenced_frees_the_lock_and_wakes_waiters() {
    let (server, mut conn, keys) = setup().await;
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let job = claimed(&mut conn, &keys, "w1", LEASE).await;
    assert!(matches!(
        finish(&mut conn, &keys, &id, job.fencing_token + 1, None).await,
        Err(LeaseError::Fenced)
    ));
    assert_eq!(
        current_job(&mut conn, &keys).await.unwrap().unwrap().state,
        JobState::Running
    );

    let url = server.url();
    let mut dedicated = crate::redis_client::dedicated_connection(&url)
        .await
        .unwrap();
    // not finished: the wait times out
    let started = Instant::now();
    assert!(
        !wait_until_finished(&mut dedicated, &keys, &id, Duration::from_millis(150))
            .await
            .unwrap()
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    // finished while waiting: the waiter returns at once, not at its timeout
    let waiter = {
        let keys = keys.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let finished = wait_until_finished(&mut dedicated, &keys, &id, Duration::from_secs(10))
                .await
                .unwrap();
            (finished, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // output lines wake the waiter too, but it keeps waiting for the finish
    append(
        &mut conn,
        &keys,
        &id,
        job.fencing_token,
        job.output_lines,
        &["x"],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    finish(&mut conn, &keys, &id, job.fencing_token, Some("it failed"))
        .await
        .unwrap();
    let (finished, elapsed) = waiter.await.unwrap();
    assert!(finished);
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");

    let record = current_job(&mut conn, &keys).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Finished);
    assert_eq!(record.exception.as_deref(), Some("it failed"));
    assert!(record.finished_at.is_some());
    assert!(!lock_exists(&mut conn, &keys).await);
    // the control entry is not an output line
    let lines = read_output(&mut conn, &keys, &id).await.unwrap();
    assert_eq!(lines.last().map(String::as_str), Some("x"));
    let mut dedicated = crate::redis_client::dedicated_connection(&url)
        .await
        .unwrap();
    assert!(
        wait_until_finished(&mut dedicated, &keys, &id, Duration::from_millis(10))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn hand_back_requeues_at_once_and_is_fenced() {
    let (_server, mut conn, keys) = setup().await;
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    redis::cmd("DEL")
        .arg(keys.job_wakeup())
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let job = claimed(&mut conn, &keys, "w1", LEASE).await;
    assert!(matches!(
        hand_back(&mut conn, &keys, &id, job.fencing_token + 1, "no").await,
        Err(LeaseError::Fenced)
    ));
    hand_back(
        &mut conn,
        &keys,
        &id,
        job.fencing_token,
        "Worker w1 stops; job handed back",
    )
    .await
    .unwrap();
    let record = current_job(&mut conn, &keys).await.unwrap().unwrap();
    assert_eq!(record.state, JobState::Queued);
    assert_eq!(woken(&mut conn, &keys).await, vec![id.clone()]);
    // another worker continues at once, without a takeover
    let next = claimed(&mut conn, &keys, "w2", LEASE).await;
    assert_eq!(next.attempts, 0);
    let lines = read_output(&mut conn, &keys, &id).await.unwrap();
    assert_eq!(lines[lines.len() - 2], "Worker w1 stops; job handed back");
    assert_eq!(
        lines[lines.len() - 1],
        format!("Worker w2 continues job {id} (handed back by worker w1)")
    );
    assert_eq!(next.output_lines, lines.len() as u64);
}

#[tokio::test]
async fn long_output_is_read_back_whole_in_chunks() {
    let (_server, mut conn, keys) = setup().await;
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let job = claimed(&mut conn, &keys, "w1", LEASE).await;
    let lines: Vec<String> = (0..2500).map(|i| format!("line {i}")).collect();
    let mut written = job.output_lines;
    for batch in lines.chunks(300) {
        written = append_output(&mut conn, &keys, &id, job.fencing_token, written, batch)
            .await
            .unwrap();
    }
    let read = read_output(&mut conn, &keys, &id).await.unwrap();
    assert_eq!(read.len(), 2 + 2500);
    assert_eq!(&read[2..], lines.as_slice());
    let text = format_output(&read);
    assert!(text.ends_with("line 2499\n"));
    assert_eq!(text.lines().count(), 2502);
}

#[tokio::test]
async fn worker_presence_counts_live_workers_by_redis_time() {
    let (_server, mut conn, keys) = setup().await;
    assert_eq!(live_worker_count(&mut conn, &keys).await.unwrap(), 0);
    assert_eq!(heartbeat(&mut conn, &keys, "a", LEASE).await.unwrap(), 1);
    assert_eq!(
        heartbeat(&mut conn, &keys, "b", Duration::from_millis(50))
            .await
            .unwrap(),
        2
    );
    assert_eq!(heartbeat(&mut conn, &keys, "a", LEASE).await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(live_worker_count(&mut conn, &keys).await.unwrap(), 1);
    leave(&mut conn, &keys, "a").await.unwrap();
    assert_eq!(live_worker_count(&mut conn, &keys).await.unwrap(), 0);
}

/// The lock's current fencing token, if any.
async fn lock_token(conn: &mut RedisConnection, keys: &Keys) -> Option<u64> {
    redis::cmd("HGET")
        .arg(keys.lock())
        .arg("fencing_token")
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn fencing_tokens_never_repeat_after_redis_lost_its_last_writes() {
    let (mut server, mut conn, keys) = setup().await;
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let before_claim = server.snapshot();
    let first = claimed(&mut conn, &keys, "w1", LEASE).await;
    // Redis forgets the claim (a restore from an older snapshot; a failover
    // to a replica that never got it); w1 still believes it holds the job.
    server.restore(&before_claim);
    let mut conn = server.connection_manager().await;
    assert_eq!(lock_token(&mut conn, &keys).await, None);
    let second = claimed(&mut conn, &keys, "w2", LEASE).await;
    assert_eq!(second.job_id, id);
    assert!(
        second.fencing_token > first.fencing_token,
        "{} after {}",
        second.fencing_token,
        first.fencing_token
    );
    // so every fenced write of w1 is refused
    assert!(!renew(&mut conn, &keys, first.fencing_token, LEASE)
        .await
        .unwrap());
    assert!(matches!(
        append(&mut conn, &keys, &id, first.fencing_token, 0, &["late"]).await,
        Err(LeaseError::Fenced)
    ));
    assert!(matches!(
        finish(&mut conn, &keys, &id, first.fencing_token, None).await,
        Err(LeaseError::Fenced)
    ));
    assert_eq!(
        lock_token(&mut conn, &keys).await,
        Some(second.fencing_token)
    );
}

#[tokio::test]
async fn fencing_tokens_rise_above_the_last_one_even_when_the_clock_is_behind() {
    let (_server, mut conn, keys) = setup().await;
    // A token handed out by a primary whose clock ran ahead of this one's.
    let ahead: u64 = 8_000_000_000_000_000;
    let _: () = redis::cmd("SET")
        .arg(keys.fencing_counter())
        .arg(ahead)
        .query_async(&mut conn)
        .await
        .unwrap();
    accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let job = claimed(&mut conn, &keys, "w1", LEASE).await;
    assert_eq!(job.fencing_token, ahead + 1);
    let counter: u64 = redis::cmd("GET")
        .arg(keys.fencing_counter())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(counter, ahead + 1);
}

#[tokio::test]
async fn a_worker_resuming_its_own_job_is_no_takeover() {
    let (_server, mut conn, keys) = setup().await;
    let short = Duration::from_millis(60);
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let first = claimed(&mut conn, &keys, "w1", LEASE).await;
    assert_eq!(first.how, ClaimKind::Started);

    // its lease still live: another worker's resume hint changes nothing
    assert_eq!(
        claim(&mut conn, &keys, "w2", "fp", LEASE, Some(&id))
            .await
            .unwrap(),
        ClaimOutcome::Busy { job_id: id.clone() }
    );
    // w1 itself re-takes its live lease with a new token
    let resumed = match claim(&mut conn, &keys, "w1", "fp", short, Some(&id))
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(job) => job,
        other => panic!("{other:?}"),
    };
    assert_eq!(resumed.how, ClaimKind::Resumed);
    assert_eq!(resumed.attempts, 0);
    assert!(resumed.fencing_token > first.fencing_token);
    assert!(!renew(&mut conn, &keys, first.fencing_token, LEASE)
        .await
        .unwrap());

    // its lease expired, nobody took the job: w1 re-takes it, uncounted
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!lock_exists(&mut conn, &keys).await);
    let again = match claim(&mut conn, &keys, "w1", "fp", short, Some(&id))
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(job) => job,
        other => panic!("{other:?}"),
    };
    assert_eq!((again.how, again.attempts), (ClaimKind::Resumed, 0));
    let lines = read_output(&mut conn, &keys, &id).await.unwrap();
    assert_eq!(
        lines.last().unwrap(),
        &format!(
            "Worker w1 resumes job {id} on its own lease after losing touch with Redis (not a takeover)"
        )
    );
    assert!(!lines_contain(&lines, "took the job over"), "{lines:?}");
    let record = current_job(&mut conn, &keys).await.unwrap().unwrap();
    assert_eq!(record.attempts, 0);

    // without the hint (the worker did not stop for an outage) an expired
    // lease of its own job is a counted takeover, so a job that fails the
    // same way every time is still abandoned in the end
    tokio::time::sleep(Duration::from_millis(150)).await;
    let counted = claimed(&mut conn, &keys, "w1", LEASE).await;
    assert_eq!((counted.how, counted.attempts), (ClaimKind::TakenOver, 1));

    // a lease another worker took after it expired is never resumed
    let mut conn2 = conn.clone();
    let _: () = redis::cmd("PEXPIRE")
        .arg(keys.lock())
        .arg(1)
        .query_async(&mut conn2)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = claimed(&mut conn, &keys, "w2", LEASE).await;
    assert_eq!(taken.how, ClaimKind::TakenOver);
    assert_eq!(
        claim(&mut conn, &keys, "w1", "fp", LEASE, Some(&id))
            .await
            .unwrap(),
        ClaimOutcome::Busy { job_id: id.clone() }
    );
}

#[tokio::test]
async fn a_resume_hint_for_a_queued_job_is_an_ordinary_claim() {
    let (_server, mut conn, keys) = setup().await;
    let id = accepted(&mut conn, &keys, JobCommand::Reset).await;
    let job = match claim(&mut conn, &keys, "w1", "fp", LEASE, Some(&id))
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(job) => job,
        other => panic!("{other:?}"),
    };
    assert_eq!((job.how, job.attempts), (ClaimKind::Started, 0));
}

#[tokio::test]
async fn job_scripts_refuse_a_current_job_that_changed_since_the_caller_read_it() {
    let (_server, mut conn, keys) = setup().await;
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let other = "00000000-0000-4000-8000-000000000000";
    let claim_reply: Vec<String> = crate::scripts::CLAIM
        .key(keys.current_job())
        .key(keys.lock())
        .key(keys.fencing_counter())
        .key(keys.job(other))
        .key(keys.job_output(other))
        .arg(other)
        .arg("w1")
        .arg("fp")
        .arg(1000)
        .arg(MAX_TAKEOVERS)
        .arg("0")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(claim_reply, vec!["stale"]);
    let current_reply: Vec<String> = crate::scripts::CURRENT
        .key(keys.current_job())
        .key(keys.job(other))
        .arg(other)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(current_reply, vec!["stale".to_string(), id.clone()]);
    // an enqueue that believes there is no current job
    let enqueue_reply: Vec<String> = crate::scripts::ENQUEUE
        .key(keys.current_job())
        .key(keys.job_wakeup())
        .key(keys.job(other))
        .key(keys.job_output(other))
        .arg("")
        .arg(other)
        .arg("reset")
        .arg("0")
        .arg("fp")
        .arg("first")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(enqueue_reply, vec!["stale"]);
    // nothing changed: the job is still queued and the only one
    let record = current_job(&mut conn, &keys).await.unwrap().unwrap();
    assert_eq!(
        (record.id.as_str(), record.state),
        (id.as_str(), JobState::Queued)
    );
    assert_eq!(super::job(&mut conn, &keys, other).await.unwrap(), None);
    assert!(!lock_exists(&mut conn, &keys).await);
}

#[tokio::test]
async fn claim_copes_with_a_job_record_missing_its_counters() {
    let (_server, mut conn, keys) = setup().await;
    let id = accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let _: () = redis::cmd("HDEL")
        .arg(keys.job(&id))
        .arg("attempts")
        .arg("output_lines")
        .query_async(&mut conn)
        .await
        .unwrap();
    let job = claimed(&mut conn, &keys, "w1", LEASE).await;
    assert_eq!(job.attempts, 0);
    // the claim's own line is the one it knows of
    assert_eq!(job.output_lines, 1);
}

#[tokio::test]
async fn a_refused_renewal_keeps_its_token_from_being_handed_out_again() {
    let (_server, mut conn, keys) = setup().await;
    // a token from a clock that ran ahead (or a counter set ahead)
    let ahead: u64 = 8_000_000_000_000_000;
    let _: () = redis::cmd("SET")
        .arg(keys.fencing_counter())
        .arg(ahead)
        .query_async(&mut conn)
        .await
        .unwrap();
    accepted(&mut conn, &keys, JobCommand::Migrate).await;
    let stale = claimed(&mut conn, &keys, "w1", LEASE).await;
    // Redis loses the claim: the counter and the lock are gone
    let _: () = redis::pipe()
        .del(keys.fencing_counter())
        .del(keys.lock())
        .query_async(&mut conn)
        .await
        .unwrap();
    // the stale holder's renewal is refused, and leaves its token behind
    assert!(!renew(&mut conn, &keys, stale.fencing_token, LEASE)
        .await
        .unwrap());
    let next = claimed(&mut conn, &keys, "w2", LEASE).await;
    assert!(
        next.fencing_token > stale.fencing_token,
        "{} after {}",
        next.fencing_token,
        stale.fencing_token
    );
}
