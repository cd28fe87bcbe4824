//! `migration-worker`: reads the configuration once, loads the migrations
//! registry (exit 2 with `MIGRATIONS_FILE: <error>` when it is invalid) and
//! runs jobs until SIGTERM/SIGINT, then hands its job back and exits 0.

use std::sync::Arc;

use migration_shared::config::{exit_with_config_error, Config};
use migration_shared::migrations::Registry;
use migration_worker::runner::{self, WorkerSettings};

/// The worker's allocator. The engine allocates and frees millions of small
/// strings and maps per run (JSON values, model fields), often on another
/// thread than the one that allocated them; with glibc's malloc that was over
/// a quarter of the engine's CPU, and mimalloc made the 100 000-position
/// benchmark 20-35 % faster at the same peak memory (docs/engine.md). Set in
/// the binaries, not the library, so that embedders choose their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    migration_worker::memory::disable_transparent_huge_pages();
    let config = Config::from_args_or_exit();
    migration_shared::telemetry::init(&config);
    let registry =
        Registry::load_at_start(&config).unwrap_or_else(|err| exit_with_config_error(&err));
    let fingerprint = registry.fingerprint();
    let registry = Arc::new(registry);
    let settings = WorkerSettings::new(&config, registry, fingerprint);

    let shutdown = migration_shared::shutdown::cancel_on_signal(
        "handing the job back at the next durable point",
    );
    if let Err(err) = runner::run(settings, shutdown).await {
        eprintln!("{err}");
        std::process::exit(2);
    }
}
