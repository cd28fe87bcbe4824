//! `migration-worker`: reads the configuration once, loads the migrations
//! registry (exit 2 with `MIGRATIONS_FILE: <error>` when it is invalid) and
//! runs jobs until SIGTERM/SIGINT, then hands its job back and exits 0.

use std::sync::Arc;

use migration_shared::config::{exit_with_config_error, Config};
use migration_shared::migrations::Registry;
use migration_worker::runner::{self, WorkerSettings};

#[tokio::main]
async fn main() {
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
