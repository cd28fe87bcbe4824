//! `migration-worker`: reads the configuration once, loads the migrations
//! registry (exit 2 with `MIGRATIONS_FILE: <error>` when it is invalid) and
//! runs jobs until SIGTERM/SIGINT, then hands its job back and exits 0.

use std::sync::Arc;

use migration_shared::config::{exit_with_config_error, Config, ConfigError};
use migration_shared::migrations::Registry;
use migration_worker::runner::{self, WorkerSettings};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    let config = Config::from_args_or_exit();
    migration_shared::telemetry::init(&config);
    let registry = Registry::load(config.migrations_file.as_deref())
        .map_err(ConfigError::from)
        .unwrap_or_else(|err| exit_with_config_error(&err));
    let fingerprint = registry.fingerprint();
    let registry = Arc::new(registry);
    let settings = WorkerSettings::new(&config, registry, fingerprint);

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    if let Err(err) = runner::run(settings, shutdown).await {
        eprintln!("{err}");
        std::process::exit(2);
    }
}

/// Cancels `shutdown` at the first SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown requested: handing the job back at the next durable point");
    shutdown.cancel();
}
