//! Shutdown and the throttle in every phase of a run (issue 8, item 8): a
//! cancel during the validation pass, while the keyframes are loaded, while
//! the lowest keyframe is rebuilt, or between two throttled batches ends the
//! run promptly with `EngineError::Cancelled`, and nothing is changed beyond
//! a durable point (a landed checkpoint). Each phase is throttled so that it
//! would last far longer than the test allows: a run that ignored the cancel
//! token or ran the phase at full speed would fail the assertions.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use migration_shared::migrations::Registry;
use migration_tests::engine::*;
use migration_worker::engine::{Command, EngineError, EngineOptions, OutputSink};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Longest time a stop may take after the cancel: generous for a loaded CI;
/// every phase below would run for minutes.
const PROMPT: Duration = Duration::from_secs(20);

/// Cancels `token` `delay` after the first line starting with `trigger`,
/// and records when.
struct CancelLater {
    lines: Vec<String>,
    token: CancellationToken,
    trigger: &'static str,
    delay: Duration,
    cancelled_at: Arc<Mutex<Option<Instant>>>,
    armed: bool,
}

impl OutputSink for CancelLater {
    async fn line(&mut self, line: String) -> Result<(), EngineError> {
        if !self.armed && line.starts_with(self.trigger) {
            self.armed = true;
            let (token, delay, at) = (self.token.clone(), self.delay, self.cancelled_at.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                *at.lock().unwrap() = Some(Instant::now());
                token.cancel();
            });
        }
        self.lines.push(line);
        Ok(())
    }
}

/// Runs `command` throttled to `rate`, cancelled 300 ms after the line
/// starting with `trigger`; asserts it stopped promptly with `Cancelled` and
/// returns the output.
async fn cancelled_during(
    setup: &Setup,
    registry: &Arc<Registry>,
    command: Command,
    rate: u32,
    trigger: &'static str,
) -> Vec<String> {
    let token = CancellationToken::new();
    let engine = setup
        .engine_with(
            registry,
            EngineOptions {
                verbose: true,
                max_positions_per_second: rate,
            },
            TOKEN,
            token.clone(),
        )
        .await;
    let cancelled_at = Arc::new(Mutex::new(None));
    let mut sink = CancelLater {
        lines: Vec::new(),
        token,
        trigger,
        delay: Duration::from_millis(300),
        cancelled_at: cancelled_at.clone(),
        armed: false,
    };
    let result = tokio::time::timeout(Duration::from_secs(120), engine.run(command, &mut sink))
        .await
        .unwrap_or_else(|_| panic!("the run did not stop: {:?}", sink.lines));
    let stopped = Instant::now();
    assert!(
        matches!(result, Err(EngineError::Cancelled)),
        "{result:?} {:?}",
        sink.lines
    );
    let cancelled_at = cancelled_at
        .lock()
        .unwrap()
        .unwrap_or_else(|| panic!("never cancelled: {:?}", sink.lines));
    assert!(
        stopped - cancelled_at < PROMPT,
        "stopped {:?} after the cancel: {:?}",
        stopped - cancelled_at,
        sink.lines
    );
    sink.lines
}

/// `positions` positions at MI 1, each creating `models` motions.
fn wide_history(setup: &mut Setup, positions: u64, models: u64) {
    for position in 0..positions {
        let events = (1..=models)
            .map(|i| {
                json!({"type": "create", "fqid": format!("motion/{}", position * models + i),
                    "fields": {"title": format!("m{i}"), "legacy": 1}})
            })
            .collect();
        setup.write(1, events);
    }
}

/// `positions` positions at MI 1 after a create: each updates `motion/1`.
fn long_history(setup: &mut Setup, positions: u64) {
    setup.write(
        1,
        vec![json!({"type": "create", "fqid": "motion/1", "fields": {"title": "t"}})],
    );
    for position in 2..=positions {
        setup.write(
            1,
            vec![json!({"type": "update", "fqid": "motion/1", "fields": {"title": format!("t{position}")}})],
        );
    }
}

#[tokio::test]
async fn cancel_during_the_validation_pass_changes_nothing() {
    let mut setup = Setup::new();
    // 2000 MIs at 2 positions a second of budget: the pass would take 50 s.
    long_history(&mut setup, 2000);
    let before = setup.dump();
    let lines = cancelled_during(&setup, &chain_registry(), Command::Migrate, 2, "Started").await;
    assert_eq!(
        lines.last().unwrap(),
        "Stopped while checking the positions' migration indices, before migrating anything in this run; nothing was changed",
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("State:")), "{lines:?}");
    assert_eq!(setup.dump(), before);
}

#[tokio::test]
async fn cancel_while_the_keyframes_load_changes_nothing() {
    let mut setup = Setup::new();
    wide_history(&mut setup, 40, 50);
    let registry = chain_registry();
    // A clean stop after about 20 positions: about 1000 models per MI are
    // stored, 4000 in all; loaded at 40 a second they would take 100 s.
    let (result, _) = run_stopping(&setup, &registry, Command::Migrate, 5, 18).await;
    assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
    let before = setup.dump();
    let lines = cancelled_during(&setup, &registry, Command::Migrate, 2, "State:").await;
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("Stopped while loading the keyframes"),
        "{lines:?}"
    );
    assert_eq!(setup.dump(), before);
}

#[tokio::test]
async fn cancel_while_the_lowest_keyframe_is_rebuilt_changes_nothing() {
    let mut setup = Setup::new();
    long_history(&mut setup, 400);
    let registry = chain_registry();
    // Keyframes flushed up to K, the lowest never stored: the resume
    // replays 1..K, at 10 positions a second (about 30 s).
    let engine = setup
        .engine(
            &registry,
            EngineOptions {
                verbose: true,
                max_positions_per_second: 0,
            },
        )
        .await
        .with_batch_positions(1)
        .with_flush_intervals(Duration::ZERO, Duration::from_secs(3600));
    // Another worker takes the lock after 300 checkpoints.
    let mut conn = setup.server.connection();
    let mut sink = FenceAfter {
        conn: &mut conn,
        left: 300,
    };
    let result = engine.run(Command::Migrate, &mut sink).await;
    assert!(matches!(result, Err(EngineError::Fenced)), "{result:?}");
    set_token(&mut setup.conn, TOKEN);
    let state = setup.dump_area()["{t}:mig:state"].clone();
    assert!(state.get("lowest_cursor").is_none(), "{state:?}");

    let before = setup.dump();
    let lines = cancelled_during(&setup, &registry, Command::Migrate, 10, "Rebuilding").await;
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("Stopped while loading the keyframes"),
        "{lines:?}"
    );
    assert_eq!(setup.dump(), before);
}

#[tokio::test]
async fn cancel_between_throttled_batches_stops_at_the_next_checkpoint() {
    let mut setup = Setup::new();
    long_history(&mut setup, 400);
    let registry = chain_registry();
    // 400 positions at 10 a second: 40 s; cancelled after 300 ms.
    let lines = cancelled_during(&setup, &registry, Command::Migrate, 10, "State:").await;
    let last = lines.last().unwrap();
    assert!(last.starts_with("Stopped after position "), "{lines:?}");
    let position: u64 = last["Stopped after position ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(position < 400, "{lines:?}");
    // The durable point: everything up to it, keyframes included.
    let state = setup.dump_area()["{t}:mig:state"].clone();
    for field in ["cursor", "keyframe_cursor", "lowest_cursor"] {
        assert_eq!(
            state[field],
            json!(position.to_string()),
            "{field}: {state:?}"
        );
    }
    // And the rest follows as if nothing had happened.
    let mut reference = Setup::new();
    long_history(&mut reference, 400);
    reference.run_ok(&registry, Command::Migrate).await;
    setup.run_ok(&registry, Command::Migrate).await;
    assert_eq!(setup.dump_area(), reference.dump_area());
}
