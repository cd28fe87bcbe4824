//! Redis outages during a run (SPEC 7.1): the engine retries every call on a
//! connection error, with backoff, until Redis is back or the run's cancel
//! token fires. Restarts of a real `redis-server` (its data saved and loaded
//! again, as with persistence) in the middle of a throttled `migrate` and
//! `finalize` neither fail the run nor change its result: it equals an
//! uninterrupted run byte for byte.

use std::sync::Arc;
use std::time::Duration;

use migration_shared::migrations::Registry;
use migration_tests::engine::*;
use migration_worker::engine::{Command, EngineError, EngineOptions};
use tokio_util::sync::CancellationToken;

const POSITIONS: u64 = 60;

/// Restarts the server with its data: `SHUTDOWN SAVE` writes the dump and
/// stops accepting writes at once (no acknowledged write is lost), then the
/// server starts again on the same port and loads it.
fn restart_keeping_the_data(setup: &mut Setup) {
    let _ = redis::cmd("SHUTDOWN")
        .arg("SAVE")
        .query::<()>(&mut setup.conn);
    setup.server.restart();
    setup.conn = setup.server.connection();
}

async fn uninterrupted(registry: &Arc<Registry>, command: Command) -> Setup {
    let mut setup = Setup::new();
    rich_history(&mut setup, POSITIONS, 9);
    setup.run_ok(registry, command).await;
    setup
}

/// Runs `command` at 40 positions a second (about 1.5 s) and restarts Redis
/// `restarts` times while it runs; returns the output.
async fn run_across_restarts(
    setup: &mut Setup,
    registry: &Arc<Registry>,
    command: Command,
    restarts: usize,
) -> Vec<String> {
    let engine = setup
        .engine(
            registry,
            EngineOptions {
                verbose: true,
                max_positions_per_second: 40,
            },
        )
        .await
        .with_batch_positions(4);
    let run = tokio::spawn(async move {
        let mut sink = VecSink::default();
        let result = engine.run(command, &mut sink).await;
        (result, sink.lines)
    });
    for _ in 0..restarts {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!run.is_finished(), "the run ended before the restart");
        restart_keeping_the_data(setup);
    }
    let (result, lines) = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run did not end")
        .unwrap();
    assert!(result.is_ok(), "{result:?}\n{}", lines.join("\n"));
    lines
}

#[tokio::test]
async fn migrate_across_redis_restarts_equals_an_uninterrupted_run() {
    let registry = chain_registry();
    let mut reference = uninterrupted(&registry, Command::Migrate).await;
    let expected = reference.dump_area();

    let mut setup = Setup::new();
    rich_history(&mut setup, POSITIONS, 9);
    let lines = run_across_restarts(&mut setup, &registry, Command::Migrate, 3).await;
    // Every position was reported once: no batch counted twice or lost.
    let verbose = lines.iter().filter(|l| l.starts_with("Position ")).count();
    assert_eq!(verbose as u64, POSITIONS, "{lines:?}");
    assert_eq!(setup.dump_area(), expected);
}

#[tokio::test]
async fn finalize_across_redis_restarts_equals_an_uninterrupted_run() {
    let registry = chain_registry();
    let mut reference = uninterrupted(&registry, Command::Finalize).await;
    let expected = reference.dump();

    let mut setup = Setup::new();
    rich_history(&mut setup, POSITIONS, 9);
    run_across_restarts(&mut setup, &registry, Command::Finalize, 2).await;
    assert_eq!(setup.dump(), expected);
}

#[tokio::test]
async fn an_outage_is_retried_until_the_run_is_cancelled() {
    let mut setup = Setup::new();
    rich_history(&mut setup, POSITIONS, 9);
    let registry = chain_registry();
    let cancel = CancellationToken::new();
    let engine = setup
        .engine_with(
            &registry,
            EngineOptions {
                verbose: false,
                max_positions_per_second: 40,
            },
            TOKEN,
            cancel.clone(),
        )
        .await
        .with_batch_positions(4);
    let run = tokio::spawn(async move {
        let mut sink = VecSink::default();
        engine.run(Command::Migrate, &mut sink).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    setup.server.stop();
    // Redis stays away: the run neither fails nor ends...
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!run.is_finished(), "the run gave up during the outage");
    // ... until the runner cancels it (the lease is lost, or shutdown).
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the cancelled run did not stop")
        .unwrap();
    assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
}

#[tokio::test]
async fn a_call_hanging_on_a_stopped_redis_is_given_up_soon_after_the_cancel() {
    let mut setup = Setup::new();
    rich_history(&mut setup, POSITIONS, 9);
    let pid: u32 = {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut setup.conn)
            .unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    };
    let registry = chain_registry();
    let cancel = CancellationToken::new();
    let engine = setup
        .engine_with(
            &registry,
            EngineOptions {
                verbose: false,
                max_positions_per_second: 40,
            },
            TOKEN,
            cancel.clone(),
        )
        .await
        .with_batch_positions(4);
    let run = tokio::spawn(async move {
        let mut sink = VecSink::default();
        engine.run(Command::Migrate, &mut sink).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Redis hangs (a stopped process answers nothing, the connection stays).
    signal("STOP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(20), run).await;
    signal("CONT");
    let result = result.expect("the cancelled run hung with Redis").unwrap();
    assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
}

#[tokio::test]
async fn checkpoints_whose_answers_time_out_are_recognised_when_retried() {
    // Redis stalls (a long script elsewhere) while checkpoints are in
    // flight: the engine's calls time out after 100 ms although Redis runs
    // them when the stall ends. Their retries, queued behind them on the
    // same connection, find the checkpoints landed (ALREADY) instead of
    // failing as stale, and the run ends as an undisturbed one.
    let registry = chain_registry();
    let mut reference = uninterrupted(&registry, Command::Migrate).await;
    let expected = reference.dump_area();

    let mut setup = Setup::new();
    rich_history(&mut setup, POSITIONS, 9);
    let conn = migration_shared::redis_client::connection_manager_with_response_timeout(
        &setup.server.url(),
        Duration::from_millis(100),
    )
    .unwrap();
    let engine = migration_worker::engine::Engine::new(
        conn,
        keys(),
        registry.clone(),
        migration_worker::engine::Fence { token: TOKEN },
        EngineOptions {
            verbose: true,
            max_positions_per_second: 40,
        },
        CancellationToken::new(),
    )
    .with_batch_positions(2);
    let run = tokio::spawn(async move {
        let mut sink = VecSink::default();
        let result = engine.run(Command::Migrate, &mut sink).await;
        (result, sink.lines)
    });
    // Stall Redis for 400 ms, four times, while the run goes on.
    let url = setup.server.url();
    let stalls = std::thread::spawn(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(200));
            let _: () = redis::cmd("EVAL")
                .arg(
                    "local t = redis.call('TIME') \
                     local stop = t[1] * 1000000 + t[2] + 400000 \
                     repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= stop",
                )
                .arg(0)
                .query(&mut conn)
                .unwrap();
        }
    });
    let (result, lines) = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run did not end")
        .unwrap();
    stalls.join().unwrap();
    assert!(result.is_ok(), "{result:?}\n{}", lines.join("\n"));
    let verbose = lines.iter().filter(|l| l.starts_with("Position ")).count();
    assert_eq!(verbose as u64, POSITIONS, "{lines:?}");
    assert_eq!(setup.dump_area(), expected);
}
