//! Benchmark of the migration engine (run by `scripts/bench.sh`, which
//! starts the private redis-server and strings the steps together).
//!
//! Every step is its own process, so that each engine run's peak RSS
//! (`VmHWM`) is that run's alone (not the seeder's, not an earlier run's),
//! and so that a run can be pinned to one core (`taskset`) or killed
//! (`kill -9`) without touching the others. Each step prints one JSON object
//! on stdout; `report` merges them into the final line and derives the
//! ratios.
//!
//! - `bench seed <url> <positions> <models>`: writes `positions` x 10 events
//!   in the live datastore format (docs/redis-keys.md, "Live datastore"),
//!   pipelined; exactly `models` models are created, spread evenly over the
//!   positions, every other event updates a random existing model (5 fields).
//!   The random sequence is fixed, so runs are comparable.
//! - `bench migrate <url> <role>`: one `migrate` with the bench's
//!   `rename_field` migration. `role` names its figures: `full` (the main
//!   run), `1core` (the same, run by the script under `taskset -c 0`),
//!   `resume` (the run after a kill), `killed` (the run `kill-at` kills).
//! - `bench kill-at <url> <percent>`: runs `bench migrate <url> killed` as a
//!   child and kills it with SIGKILL once the durable cursor (`mig:state`
//!   `cursor`) reaches `percent` % of the positions.
//! - `bench reset <url>` / `bench finalize <url>`: the engine's commands.
//! - `bench report`: reads the steps' JSON lines on stdin, prints one object
//!   with every figure and the ratios.
//!
//! The engine is driven only through its public API (`Engine::new`, `run`,
//! the `with_*` builders), so the bench measures whatever the engine does
//! inside.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command as Process, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use migration_shared::datastore::{apply_event, Event, Fields, Fqid, Models};
use migration_shared::keys::Keys;
use migration_shared::migrations::Registry;
use migration_worker::engine::{Command, Engine, EngineError, EngineOptions, Fence, OutputSink};
use serde_json::{json, Map, Value};

const PREFIX: &str = "bench";
const TOKEN: u64 = 1;
const COLLECTION: &str = "motion";
const EVENTS_PER_POSITION: u64 = 10;
/// The live MI of the seeded data; the registry's one migration targets 2.
const LIVE_MI: u64 = 1;
/// Positions per seeding pipeline: large enough that the round trip is
/// amortised, small enough that one reply does not hold Redis for long.
const SEED_BATCH_POSITIONS: usize = 2_000;
/// Models per `HSET` when the final models are written.
const SEED_BATCH_MODELS: usize = 5_000;
/// How often `kill-at` reads the cursor: the engine checkpoints every few
/// milliseconds, so a coarser poll would overshoot the kill point.
const KILL_POLL: Duration = Duration::from_millis(2);

/// Why a bench step failed.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("usage: {0}")]
    Usage(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Invalid(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// xorshift64: a fixed, dependency-free sequence, so every run seeds the
/// same data (the seed is the one the bench always used).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        Rng(0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The bench's history: what each position holds, generated in order.
///
/// Position `p` creates `ceil(p*M/P) - ceil((p-1)*M/P)` models, so the
/// creates are spread evenly, position 1 creates at least one (every update
/// has a model to change) and exactly `M` exist at the end. With `M = P`
/// (the default) every position creates one model followed by 9 updates:
/// the same data, in the same random sequence, as the bench always seeded.
struct History {
    positions: u64,
    models: u64,
    created: u64,
    rng: Rng,
}

impl History {
    fn new(positions: u64, models: u64) -> Result<History, BenchError> {
        if positions == 0 || models == 0 || models > positions * EVENTS_PER_POSITION {
            return Err(BenchError::Invalid(format!(
                "need 1 <= models <= {EVENTS_PER_POSITION} x positions (got {models} models, {positions} positions)"
            )));
        }
        Ok(History {
            positions,
            models,
            created: 0,
            rng: Rng::new(),
        })
    }

    /// Models created by the end of `position`.
    fn created_by(&self, position: u64) -> u64 {
        let (p, m, n) = (
            u128::from(position),
            u128::from(self.models),
            u128::from(self.positions),
        );
        // Below `models <= 10 * positions`, so it fits back into a u64.
        p.saturating_mul(m).div_ceil(n) as u64
    }

    /// The events of the next position (`position` counts from 1).
    fn events(&mut self, position: u64) -> Vec<Event> {
        let creates = self.created_by(position) - self.created_by(position - 1);
        let mut events = Vec::with_capacity(EVENTS_PER_POSITION as usize);
        for _ in 0..creates {
            self.created += 1;
            let id = self.created;
            events.push(Event::Create {
                fqid: fqid(id),
                fields: fields(json!({
                    "title": format!("Motion {id}"),
                    "text": "Lorem ipsum dolor sit amet, consectetur adipiscing elit",
                    "number": id,
                    "tag_ids": [1, 2, 3],
                    "state_id": 4
                })),
            });
        }
        for update in 0..EVENTS_PER_POSITION - creates {
            let id = self.rng.next() % self.created + 1;
            events.push(Event::Update {
                fqid: fqid(id),
                fields: fields(json!({
                    "title": format!("Motion {id} v{update}"),
                    "text": format!("Changed at position {position}"),
                    "number": self.rng.next() % 1000,
                    "weight": update,
                    "state_id": self.rng.next() % 10
                })),
            });
        }
        events
    }
}

fn fqid(id: u64) -> Fqid {
    Fqid::new(COLLECTION, id).expect("a valid collection and a positive id")
}

fn fields(value: Value) -> Fields {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// What `seed` wrote.
struct Seeded {
    positions: u64,
    events: u64,
    models: u64,
}

/// Writes the whole history to the live datastore under `keys`, with the
/// lock's fencing token set to [`TOKEN`].
///
/// Faster than writing position by position (as `LiveWriter` does, which is
/// what the tests compare it with): each pipeline sets 2,000 positions with
/// one multi-field `HSET` per hash, and every model is written once, as it
/// is after the last position, instead of after each event. A second thread
/// sends the pipelines, so generating the next batch overlaps Redis
/// executing the previous one.
fn seed(url: &str, keys: &Keys, positions: u64, models: u64) -> Result<Seeded, BenchError> {
    let mut history = History::new(positions, models)?;
    let client = redis::Client::open(url)?;
    let mut conn = client.get_connection()?;
    let (send, receive) = mpsc::sync_channel::<redis::Pipeline>(2);
    let sender = std::thread::spawn(move || -> Result<(), redis::RedisError> {
        for pipe in receive {
            pipe.query::<()>(&mut conn)?;
        }
        Ok(())
    });
    let mut live = Models::new();
    let mut events_total = 0u64;
    let mut batch = SeedBatch::default();
    for position in 1..=positions {
        let events = history.events(position);
        for event in &events {
            apply_event(&mut live, event, position)
                .map_err(|err| BenchError::Invalid(format!("position {position}: {err}")))?;
        }
        events_total += events.len() as u64;
        batch.add(position, &events)?;
        let full = batch.len() == SEED_BATCH_POSITIONS || position == positions;
        // A closed channel means the sender stopped on an error: the join
        // below reports it.
        if full
            && send
                .send(std::mem::take(&mut batch).pipeline(keys))
                .is_err()
        {
            break;
        }
    }
    let mut stored: Vec<(u64, String)> = live
        .iter()
        .map(|(fqid, model)| (fqid.id(), model.to_stored_json()))
        .collect();
    drop(live);
    stored.sort_unstable_by_key(|(id, _)| *id);
    for chunk in stored.chunks(SEED_BATCH_MODELS) {
        let mut pipe = redis::pipe();
        pipe.hset_multiple(keys.models(COLLECTION), chunk);
        if send.send(pipe).is_err() {
            break;
        }
    }
    let mut pipe = redis::pipe();
    pipe.sadd(keys.collections(), COLLECTION)
        .set(keys.position(), positions)
        .set(keys.event_count(), events_total)
        .set(keys.migration_index(), LIVE_MI)
        .hset(keys.lock(), "fencing_token", TOKEN);
    let _ = send.send(pipe);
    drop(send);
    sender
        .join()
        .map_err(|_| BenchError::Invalid("the seeding thread panicked".into()))??;
    Ok(Seeded {
        positions,
        events: events_total,
        models: stored.len() as u64,
    })
}

/// The live hashes' fields of up to [`SEED_BATCH_POSITIONS`] positions.
#[derive(Default)]
struct SeedBatch {
    positions: Vec<(u64, String)>,
    position_mi: Vec<(u64, u64)>,
    events: Vec<(u64, String)>,
}

impl SeedBatch {
    fn len(&self) -> usize {
        self.events.len()
    }

    fn add(&mut self, position: u64, events: &[Event]) -> Result<(), BenchError> {
        // The write route's position record (`LiveWriter` writes the same).
        self.positions.push((
            position,
            format!(
                r#"{{"timestamp":{},"user_id":1,"information":{{}}}}"#,
                1_700_000_000 + position
            ),
        ));
        self.position_mi.push((position, LIVE_MI));
        self.events.push((position, serde_json::to_string(events)?));
        Ok(())
    }

    fn pipeline(self, keys: &Keys) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        if !self.events.is_empty() {
            pipe.hset_multiple(keys.positions(), &self.positions)
                .hset_multiple(keys.position_mi(), &self.position_mi)
                .hset_multiple(keys.events(), &self.events);
        }
        pipe
    }
}

/// One field of `INFO <section>`, as a number.
fn info_field(conn: &mut redis::Connection, section: &str, field: &str) -> Option<f64> {
    let info: String = redis::cmd("INFO").arg(section).query(conn).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
}

/// Redis's own CPU time so far (user + sys), to tell what a run costs the
/// server from what it costs the engine.
fn redis_cpu_s(conn: &mut redis::Connection) -> f64 {
    info_field(conn, "cpu", "used_cpu_user").unwrap_or(0.0)
        + info_field(conn, "cpu", "used_cpu_sys").unwrap_or(0.0)
}

fn megabytes(bytes: Option<f64>) -> Value {
    bytes.map_or(Value::Null, |bytes| json!(round(bytes / 1e6, 1)))
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// A `/proc/self/status` field in kB (`VmHWM`: the peak resident set).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

/// This process's CPU time (user + sys) in seconds, from `/proc/self/stat`
/// (in clock ticks of 1/100 s, the fixed `USER_HZ` of Linux's user ABI).
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces; count from its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: Vec<f64> = rest
        .split_whitespace()
        .skip(11) // fields 3..=13; utime and stime are fields 14 and 15
        .take(2)
        .filter_map(|field| field.parse().ok())
        .collect();
    ticks.iter().sum::<f64>() / 100.0
}

struct Quiet(Vec<String>);

impl OutputSink for Quiet {
    async fn line(&mut self, line: String) -> Result<(), EngineError> {
        self.0.push(line);
        Ok(())
    }
}

/// The engine every run uses: one declarative `rename_field` migration (the
/// `MIGRATIONS_FILE` kind) that changes every event. `BENCH_BATCH_POSITIONS`
/// and `BENCH_KEYFRAME_FLUSH_MODELS` tune the engine for experiments;
/// `WORKER_KEYFRAME_CACHE_MODELS` is the worker's own setting.
fn engine(url: &str) -> Result<Engine, BenchError> {
    let conn = migration_shared::redis_client::connection_manager(url)?;
    let registry = Registry::from_json(
        std::path::Path::new("bench"),
        r#"{"migrations": [{"name": "0002_rename_title", "ops": [
            {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"}]}]}"#,
    )
    .map_err(|err| BenchError::Invalid(format!("the bench registry: {err}")))?;
    let engine = Engine::new(
        conn,
        Keys::new(PREFIX),
        Arc::new(registry),
        Fence { token: TOKEN },
        EngineOptions::default(),
        Default::default(),
    );
    let engine = match env_number("WORKER_KEYFRAME_CACHE_MODELS")? {
        Some(models) => engine.with_keyframe_cache_models(models as usize),
        None => engine,
    };
    let engine = match env_number("BENCH_KEYFRAME_FLUSH_MODELS")? {
        Some(models) => engine.with_keyframe_flush_models(models as usize),
        None => engine,
    };
    Ok(match env_number("BENCH_BATCH_POSITIONS")? {
        Some(positions) => engine.with_batch_positions(positions),
        None => engine,
    })
}

fn env_number(name: &str) -> Result<Option<u64>, BenchError> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map(Some)
            .map_err(|_| BenchError::Invalid(format!("{name}={value}: not a number"))),
        Err(_) => Ok(None),
    }
}

/// Runs one engine command; prints its output lines on stderr; returns its
/// wall time in seconds.
async fn run_command(url: &str, command: Command) -> Result<f64, BenchError> {
    let engine = engine(url)?;
    let mut sink = Quiet(Vec::new());
    let started = Instant::now();
    let result = engine.run(command, &mut sink).await;
    let elapsed = started.elapsed().as_secs_f64();
    for line in &sink.0 {
        eprintln!("{line}");
    }
    result?;
    Ok(elapsed)
}

fn sync_connection(url: &str) -> Result<redis::Connection, BenchError> {
    Ok(redis::Client::open(url)?.get_connection()?)
}

fn live_figures(conn: &mut redis::Connection) -> Result<(u64, u64), BenchError> {
    let keys = Keys::new(PREFIX);
    let positions: u64 = redis::cmd("GET").arg(keys.position()).query(conn)?;
    let events: u64 = redis::cmd("GET").arg(keys.event_count()).query(conn)?;
    Ok((positions, events))
}

/// `migrate` once; the figures are named after `role`.
async fn migrate(url: &str, role: &str) -> Result<Value, BenchError> {
    let mut conn = sync_connection(url)?;
    let (_, events) = live_figures(&mut conn)?;
    let redis_cpu_before = redis_cpu_s(&mut conn);
    let cpu_before = process_cpu_s();
    let migrate_s = run_command(url, Command::Migrate).await?;
    let engine_cpu_s = round(process_cpu_s() - cpu_before, 2);
    let redis_cpu_s = round(redis_cpu_s(&mut conn) - redis_cpu_before, 2);
    let peak_rss_kb = status_kb("VmHWM");
    let per_s = (events as f64 / migrate_s).round();
    let seconds = round(migrate_s, 3);
    Ok(match role {
        "full" => json!({
            "migrate_s": seconds,
            "migrate_events_per_s": per_s,
            "migrate_engine_cpu_s": engine_cpu_s,
            "migrate_redis_cpu_s": redis_cpu_s,
            "engine_peak_rss_kb": peak_rss_kb,
            "redis_used_memory_mb_after_migrate": megabytes(info_field(&mut conn, "memory", "used_memory")),
            "redis_used_memory_peak_mb": megabytes(info_field(&mut conn, "memory", "used_memory_peak")),
        }),
        "1core" => json!({
            "migrate_s_1core": seconds,
            "migrate_events_per_s_1core": per_s,
            "migrate_engine_cpu_s_1core": engine_cpu_s,
            "migrate_redis_cpu_s_1core": redis_cpu_s,
            "engine_peak_rss_kb_1core": peak_rss_kb,
        }),
        "resume" => json!({
            "resume_s": seconds,
            "resume_engine_cpu_s": engine_cpu_s,
            "resume_redis_cpu_s": redis_cpu_s,
            "resume_peak_rss_kb": peak_rss_kb,
        }),
        "killed" => json!({}),
        other => return Err(BenchError::Usage(format!("unknown migrate role '{other}'"))),
    })
}

/// Runs `migrate` in a child process and kills it (SIGKILL, no chance to
/// checkpoint or clean up) once `mig:state`'s durable cursor reaches
/// `percent` % of the positions.
fn kill_at(url: &str, percent: f64) -> Result<Value, BenchError> {
    let keys = Keys::new(PREFIX);
    let mut conn = sync_connection(url)?;
    let (positions, _) = live_figures(&mut conn)?;
    let kill_cursor = ((positions as f64) * percent / 100.0).ceil() as u64;
    let mut child = Process::new(std::env::current_exe()?)
        .args(["migrate", url, "killed"])
        .stdout(Stdio::null())
        .spawn()?;
    let started = Instant::now();
    let cursor = |conn: &mut redis::Connection, field: &str| -> Result<u64, BenchError> {
        let value: Option<u64> = redis::cmd("HGET")
            .arg(keys.mig_state())
            .arg(field)
            .query(conn)?;
        Ok(value.unwrap_or(0))
    };
    loop {
        if cursor(&mut conn, "cursor")? >= kill_cursor {
            child.kill()?;
            child.wait()?;
            break;
        }
        if let Some(status) = child.try_wait()? {
            return Err(BenchError::Invalid(format!(
                "migrate ended ({status}) before its cursor reached {kill_cursor} ({percent} %)"
            )));
        }
        std::thread::sleep(KILL_POLL);
    }
    let killed_after_s = started.elapsed().as_secs_f64();
    Ok(json!({
        "resume_at_percent": percent,
        "killed_at_cursor": cursor(&mut conn, "cursor")?,
        "killed_at_keyframe_cursor": cursor(&mut conn, "keyframe_cursor")?,
        "killed_after_s": round(killed_after_s, 3),
    }))
}

/// Merges the steps' objects (one a line) and derives the ratios.
fn report(lines: impl Iterator<Item = String>) -> Result<Value, BenchError> {
    let mut figures = BTreeMap::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line)? {
            Value::Object(object) => figures.extend(object),
            _ => return Err(BenchError::Invalid(format!("not a JSON object: {line}"))),
        }
    }
    let number = |name: &str| figures.get(name).and_then(Value::as_f64);
    let mut derived = Vec::new();
    let mut ratio = |name: &str, over: &str, under: &str| {
        if let (Some(over), Some(under)) = (number(over), number(under)) {
            if under > 0.0 {
                derived.push((name.to_string(), json!(round(over / under, 3))));
            }
        }
    };
    ratio(
        "migrate_events_per_s / redis_set_per_s",
        "migrate_events_per_s",
        "redis_set_per_s",
    );
    ratio(
        "migrate_events_per_s / migrate_events_per_s_1core",
        "migrate_events_per_s",
        "migrate_events_per_s_1core",
    );
    // The uninterrupted run of the same data is the main migrate.
    ratio("resume_s / full_s", "resume_s", "migrate_s");
    if number("resume_s").is_some() {
        if let Some(full) = figures.get("migrate_s").cloned() {
            derived.push(("full_s".into(), full));
        }
    }
    let mut object: Map<String, Value> = figures.into_iter().collect();
    object.extend(derived);
    Ok(Value::Object(object))
}

/// The same allocator as the `migration-worker` binary, so the figures are
/// the worker's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str =
    "bench seed <url> <positions> <models> | migrate <url> full|1core|resume|killed \
    | kill-at <url> <percent> | reset <url> | finalize <url> | report < figures";

fn arg<T: std::str::FromStr>(args: &[String], index: usize) -> Result<T, BenchError> {
    args.get(index)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| BenchError::Usage(USAGE.into()))
}

async fn step(args: &[String]) -> Result<Value, BenchError> {
    let command = args.get(1).map(String::as_str);
    let url: String = arg(args, 2).unwrap_or_default();
    match command {
        Some("seed") if args.len() == 5 => {
            let (positions, models) = (arg(args, 3)?, arg(args, 4)?);
            let mut conn = sync_connection(&url)?;
            let redis_cpu_before = redis_cpu_s(&mut conn);
            let started = Instant::now();
            let seeded = seed(&url, &Keys::new(PREFIX), positions, models)?;
            let seed_s = started.elapsed().as_secs_f64();
            Ok(json!({
                "positions": seeded.positions,
                "events": seeded.events,
                "models": seeded.models,
                "seed_s": round(seed_s, 2),
                "seed_events_per_s": (seeded.events as f64 / seed_s).round(),
                "seed_cpu_s": round(process_cpu_s(), 2),
                "seed_redis_cpu_s": round(redis_cpu_s(&mut conn) - redis_cpu_before, 2),
                "seed_peak_rss_kb": status_kb("VmHWM"),
                "redis_used_memory_mb_after_seed": megabytes(info_field(&mut conn, "memory", "used_memory")),
            }))
        }
        Some("migrate") if args.len() == 4 => migrate(&url, &args[3]).await,
        Some("kill-at") if args.len() == 4 => kill_at(&url, arg(args, 3)?),
        Some("reset") if args.len() == 3 => {
            run_command(&url, Command::Reset).await?;
            Ok(json!({}))
        }
        Some("finalize") if args.len() == 3 => {
            let finalize_s = run_command(&url, Command::Finalize).await?;
            Ok(json!({
                "finalize_s": round(finalize_s, 3),
                "finalize_peak_rss_kb": status_kb("VmHWM"),
            }))
        }
        Some("report") if args.len() == 2 => {
            report(std::io::stdin().lock().lines().map_while(Result::ok))
        }
        _ => Err(BenchError::Usage(USAGE.into())),
    }
}

#[tokio::main]
async fn main() {
    // As the worker binary does, so the memory figures are the worker's.
    migration_worker::memory::disable_transparent_huge_pages();
    let args: Vec<String> = std::env::args().collect();
    match step(&args).await {
        Ok(figures) => println!("{figures}"),
        Err(err) => {
            eprintln!("bench {}: {err}", args.get(1).map_or("", String::as_str));
            std::process::exit(if matches!(err, BenchError::Usage(_)) {
                2
            } else {
                1
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use migration_tests::engine::{keys, Setup};

    use super::*;

    fn history(positions: u64, models: u64) -> Vec<Vec<Event>> {
        let mut history = History::new(positions, models).unwrap();
        (1..=positions).map(|p| history.events(p)).collect()
    }

    fn creates(events: &[Event]) -> Vec<u64> {
        events
            .iter()
            .filter(|event| matches!(event, Event::Create { .. }))
            .map(|event| event.fqid().id())
            .collect()
    }

    #[test]
    fn by_default_every_position_creates_its_own_model_first() {
        for (index, events) in history(300, 300).iter().enumerate() {
            let position = index as u64 + 1;
            assert_eq!(events.len(), 10);
            assert_eq!(creates(events), vec![position]);
            assert!(matches!(events[0], Event::Create { .. }));
            for event in &events[1..] {
                assert!(event.fqid().id() <= position, "{event:?}");
            }
        }
    }

    #[test]
    fn models_and_positions_vary_independently() {
        for (positions, models) in [(1000, 37), (1000, 1), (100, 1000), (500, 499)] {
            let history = history(positions, models);
            let ids: Vec<u64> = history.iter().flat_map(|events| creates(events)).collect();
            assert_eq!(
                ids,
                (1..=models).collect::<Vec<_>>(),
                "{positions}/{models}"
            );
            assert!(history.iter().all(|events| events.len() == 10));
            assert!(!creates(&history[0]).is_empty(), "position 1 creates");
            // Every update changes a model that exists by then.
            let mut models_so_far = Models::new();
            for (index, events) in history.iter().enumerate() {
                for event in events {
                    apply_event(&mut models_so_far, event, index as u64 + 1).unwrap();
                }
            }
            assert_eq!(models_so_far.len() as u64, models);
        }
        // The creates are spread: with 10 positions per model, one in ten.
        let spread = history(1000, 100);
        let creating: Vec<usize> = (0..1000)
            .filter(|&i| !creates(&spread[i]).is_empty())
            .collect();
        assert_eq!(creating.len(), 100);
        assert!(
            creating.windows(2).all(|pair| pair[1] - pair[0] == 10),
            "{creating:?}"
        );
        assert!(History::new(10, 101).is_err());
        assert!(History::new(10, 0).is_err());
    }

    #[test]
    fn the_history_is_the_same_in_every_run() {
        assert_eq!(history(200, 50), history(200, 50));
    }

    /// The bulk seeder writes exactly what the reference writer of the
    /// live format (`LiveWriter`, position by position) writes.
    #[test]
    fn seeding_writes_the_live_format() {
        for (positions, models) in [(2_345, 2_345), (2_345, 300)] {
            let mut bulk = Setup::new();
            let seeded = seed(&bulk.server.url(), &keys(), positions, models).unwrap();
            assert_eq!(
                (seeded.positions, seeded.events, seeded.models),
                (positions, positions * 10, models)
            );

            let mut reference = Setup::new();
            let mut history = History::new(positions, models).unwrap();
            let mut pipe = redis::pipe();
            for position in 1..=positions {
                let events = history.events(position);
                reference.writer.stage_trusted(&mut pipe, LIVE_MI, &events);
                if position % 500 == 0 || position == positions {
                    pipe.query::<()>(&mut reference.conn).unwrap();
                    pipe = redis::pipe();
                }
            }
            let dump = reference.dump();
            assert_eq!(dump.len(), 8, "{:?}", dump.keys());
            assert_eq!(bulk.dump(), dump);
        }
    }

    #[test]
    fn the_report_merges_the_steps_and_derives_the_ratios() {
        let lines = [
            r#"{"positions": 10, "redis_set_per_s": 1000000.0}"#,
            r#"{"migrate_s": 2.0, "migrate_events_per_s": 250000.0}"#,
            r#"{"migrate_events_per_s_1core": 125000.0}"#,
            r#"{"resume_s": 0.5}"#,
        ];
        let report = report(lines.iter().map(|line| line.to_string())).unwrap();
        assert_eq!(
            report["migrate_events_per_s / redis_set_per_s"],
            json!(0.25)
        );
        assert_eq!(
            report["migrate_events_per_s / migrate_events_per_s_1core"],
            json!(2.0)
        );
        assert_eq!(report["resume_s / full_s"], json!(0.25));
        assert_eq!(report["full_s"], json!(2.0));
        assert_eq!(report["positions"], json!(10));
        let plain = super::report([lines[0], lines[1]].iter().map(|l| l.to_string())).unwrap();
        assert!(plain.get("resume_s / full_s").is_none());
        assert!(plain.get("full_s").is_none());
    }
}
