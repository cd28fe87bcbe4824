//! Building and running the app: `main` and the tests call the same [`run`].

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use migration_shared::config::{Config, ConfigError};
use migration_shared::migrations::Registry;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

use crate::metrics::TrackRequestsLayer;
use crate::route_class::RouteClass;
use crate::route_guard::RouteGuards;
use crate::routes::{health, metrics, migrations, openapi, reader, stream, writer, MAX_BODY_BYTES};
use crate::state::AppState;

/// Builds the registry from `MIGRATIONS_FILE` (or the compiled-in one).
pub fn load_registry(config: &Config) -> Result<Arc<Registry>, ConfigError> {
    Registry::load_at_start(config).map(Arc::new)
}

/// The router with every route and layer.
///
/// Routes are grouped by [`RouteClass`] (budget and concurrency bound, see
/// `crate::route_class`); a new route joins the group of its class. Each
/// group sits behind one guard (`crate::route_guard`): the internal
/// password for every `/internal/` group, checked before the class takes a
/// slot, so an unauthenticated flood never takes one. Every group of a
/// class shares the class's slots ([`RouteGuards`]).
///
/// The layers over all routes are composed into one `Router::layer` call:
/// axum boxes and clones each such call once per request.
pub fn router(state: AppState) -> Router {
    let guards = RouteGuards::new(state.auth());
    Router::new()
        .merge(guards.open(RouteClass::Health).apply(health_routes()))
        .merge(guards.open(RouteClass::Reads).apply(metrics_routes()))
        .merge(guards.internal(RouteClass::Reads).apply(reader_routes()))
        .merge(
            guards
                .internal(RouteClass::Migrations)
                .apply(migration_routes()),
        )
        .merge(guards.internal(RouteClass::Writes).apply(writer_routes()))
        .merge(guards.internal(RouteClass::Reads).apply(document_routes()))
        .merge(
            guards
                .internal_long_lived()
                .apply(long_lived_internal_routes()),
        )
        .layer(
            ServiceBuilder::new()
                // Counts every request (unmatched ones too) under its route
                // template.
                .layer(TrackRequestsLayer::new(state.http_metrics.clone()))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .with_state(state)
}

/// No password (SPEC 7). Other routes without a password and with a budget
/// (`GET /metrics`) go in a group of their own beside this one.
fn health_routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/system/action/health", get(health::health))
}

/// The datastore readers (SPEC 5.1).
fn reader_routes() -> Router<AppState> {
    Router::new()
        .route("/internal/datastore/reader/get", post(reader::get))
        .route("/internal/datastore/reader/get_all", post(reader::get_all))
}

/// The migration route (SPEC 4), both paths.
fn migration_routes() -> Router<AppState> {
    Router::new()
        .route("/internal/migrations", post(migrations::migrations))
        .route("/internal/migrations/", post(migrations::migrations))
}

/// The datastore writer (SPEC 5.1).
fn writer_routes() -> Router<AppState> {
    Router::new().route("/internal/datastore/writer/write", post(writer::write))
}

/// The OpenAPI document of every route (SPEC 9); internal auth.
fn document_routes() -> Router<AppState> {
    Router::new().route("/internal/openapi.json", get(openapi::openapi))
}

/// The Prometheus scrape (SPEC 9): no password, a read of Redis bounded
/// inside the handler, so it always answers with this replica's figures.
fn metrics_routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics::metrics))
}

/// Internal routes that may stay open for long and so have no budget: the
/// place for `GET /internal/migrations/stream` (SSE, SPEC 9). Routes that
/// answer at once (`GET /internal/openapi.json`) go in a class group.
fn long_lived_internal_routes() -> Router<AppState> {
    Router::new().route("/internal/migrations/stream", get(stream::stream))
}

/// Serves until `shutdown` completes, then drains in-flight requests.
pub async fn run(
    config: Config,
    registry: Arc<Registry>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(config, registry).map_err(std::io::Error::other)?;
    tracing::info!(addr = %listener.local_addr()?, "migration-api listening");
    // Open output streams end when the drain starts; otherwise the drain
    // would wait for migrations to finish.
    let draining = state.shutdown.clone();
    let shutdown = async move {
        shutdown.await;
        draining.cancel();
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes at the first SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> impl Future<Output = ()> + Send + 'static {
    let token = migration_shared::shutdown::cancel_on_signal("draining requests");
    async move { token.cancelled().await }
}
