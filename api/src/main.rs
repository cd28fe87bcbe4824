//! `migration-api`: reads the configuration once, then runs the server until
//! SIGTERM/SIGINT, draining in-flight requests before it exits.

use migration_shared::config::{exit_with_config_error, Config};

/// The api's allocator. Under 64 concurrent `progress` polls (scripts/
/// bench-api.sh), glibc's malloc and free took about a fifth of the api's
/// CPU (perf: `malloc`, `_int_malloc`, `_int_free`, `malloc_consolidate`):
/// every request allocates and frees small buffers on whichever runtime
/// thread polls it. mimalloc, already the worker's allocator, does that
/// cheaply. Set in the binary, not the library, so embedders choose their own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let config = Config::from_args_or_exit();
    migration_shared::telemetry::init(&config);
    let registry = migration_api::startup::load_registry(&config)
        .unwrap_or_else(|err| exit_with_config_error(&err));
    let listener = match tokio::net::TcpListener::bind(config.api_addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("API_ADDR: cannot listen on {}: {err}", config.api_addr);
            std::process::exit(2);
        }
    };
    let shutdown = migration_api::startup::shutdown_on_signal();
    if let Err(err) = migration_api::startup::run(config, registry, listener, shutdown).await {
        tracing::error!(error = %err, "server failed");
        std::process::exit(1);
    }
}
