//! Benchmark of the migration engine (run by `scripts/bench.sh`).
//!
//! `bench seed <redis-url> <positions>`: writes `positions` x 10 events
//! (1 create + 9 updates of existing models, 5 fields each) in the live
//! datastore format, pipelined.
//! `bench run <redis-url> <redis-set-per-s>`: runs `migrate` then `finalize`
//! with one declarative `rename_field` migration (the `MIGRATIONS_FILE` kind) and prints one JSON line with the
//! figures. Seeding runs in its own process so that the engine's peak RSS
//! (VmHWM) is the engine's alone.

use std::sync::Arc;
use std::time::Instant;

use migration_shared::datastore::{Event, Fields};
use migration_shared::keys::Keys;
use migration_shared::migrations::Registry;
use migration_tests::LiveWriter;
use migration_worker::engine::{Command, Engine, EngineError, EngineOptions, Fence, OutputSink};
use serde_json::json;

const PREFIX: &str = "bench";
const TOKEN: u64 = 1;

struct Quiet(Vec<String>);

impl OutputSink for Quiet {
    async fn line(&mut self, line: String) -> Result<(), EngineError> {
        self.0.push(line);
        Ok(())
    }
}

fn fields(value: serde_json::Value) -> Fields {
    value.as_object().cloned().unwrap_or_default()
}

fn seed(url: &str, positions: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let mut writer = LiveWriter::new(Keys::new(PREFIX));
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut pipe = redis::pipe();
    for position in 1..=positions {
        let mut events = vec![Event::Create {
            fqid: format!("motion/{position}").parse()?,
            fields: fields(json!({
                "title": format!("Motion {position}"),
                "text": "Lorem ipsum dolor sit amet, consectetur adipiscing elit",
                "number": position,
                "tag_ids": [1, 2, 3],
                "state_id": 4
            })),
        }];
        for update in 0..9u64 {
            let id = next() % position + 1;
            events.push(Event::Update {
                fqid: format!("motion/{id}").parse()?,
                fields: fields(json!({
                    "title": format!("Motion {id} v{update}"),
                    "text": format!("Changed at position {position}"),
                    "number": next() % 1000,
                    "weight": update,
                    "state_id": next() % 10
                })),
            });
        }
        writer.stage_trusted(&mut pipe, 1, &events);
        if position % 500 == 0 || position == positions {
            pipe.query::<()>(&mut conn)?;
            pipe = redis::pipe();
        }
    }
    redis::cmd("HSET")
        .arg(Keys::new(PREFIX).lock())
        .arg("fencing_token")
        .arg(TOKEN)
        .query::<()>(&mut conn)?;
    Ok(())
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

async fn run(url: &str, redis_set_per_s: f64) -> Result<(), Box<dyn std::error::Error>> {
    let conn = migration_shared::redis_client::connection_manager(url)?;
    let keys = Keys::new(PREFIX);
    let mut sync = redis::Client::open(url)?.get_connection()?;
    let positions: u64 = redis::cmd("GET").arg(keys.position()).query(&mut sync)?;
    let events: u64 = redis::cmd("GET").arg(keys.event_count()).query(&mut sync)?;
    let registry = Arc::new(Registry::from_json(
        std::path::Path::new("bench"),
        r#"{"migrations": [{"name": "0002_rename_title", "ops": [
            {"op": "rename_field", "collection": "motion", "old": "title", "new": "name"}]}]}"#,
    )?);
    let engine = Engine::new(
        conn,
        keys,
        registry,
        Fence { token: TOKEN },
        EngineOptions::default(),
        Default::default(),
    );
    let engine = match std::env::var("BENCH_KEYFRAME_FLUSH_MODELS") {
        Ok(models) => engine.with_keyframe_flush_models(models.parse()?),
        Err(_) => engine,
    };
    let engine = match std::env::var("BENCH_BATCH_POSITIONS") {
        Ok(positions) => engine.with_batch_positions(positions.parse()?),
        Err(_) => engine,
    };
    let mut sink = Quiet(Vec::new());
    let started = Instant::now();
    engine.run(Command::Migrate, &mut sink).await?;
    let migrate_s = started.elapsed().as_secs_f64();
    let rss_after_migrate = peak_rss_kb();
    let started = Instant::now();
    engine.run(Command::Finalize, &mut sink).await?;
    let finalize_s = started.elapsed().as_secs_f64();
    for line in &sink.0 {
        eprintln!("{line}");
    }
    let per_s = events as f64 / migrate_s;
    println!(
        "{}",
        json!({
            "positions": positions,
            "events": events,
            "migrate_s": (migrate_s * 1000.0).round() / 1000.0,
            "migrate_events_per_s": per_s.round(),
            "finalize_s": (finalize_s * 1000.0).round() / 1000.0,
            "engine_peak_rss_kb_after_migrate": rss_after_migrate,
            "engine_peak_rss_kb": peak_rss_kb(),
            "redis_set_per_s": redis_set_per_s,
            "migrate_events_per_s / redis_set_per_s": ((per_s / redis_set_per_s) * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}

/// The same allocator as the `migration-worker` binary, so the figures are
/// the worker's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("seed") if args.len() == 4 => seed(&args[2], args[3].parse()?),
        Some("run") if args.len() == 4 => run(&args[2], args[3].parse()?).await,
        _ => {
            eprintln!("usage: bench seed <redis-url> <positions> | bench run <redis-url> <redis-set-per-s>");
            std::process::exit(2);
        }
    }
}
