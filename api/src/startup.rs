//! Building and running the app: `main` and the tests call the same [`run`].

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Router};
use migration_shared::config::{Config, ConfigError};
use migration_shared::migrations::Registry;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::auth::require_internal_auth;
use crate::route_class::RouteClass;
use crate::routes::{health, metrics, migrations, openapi, reader, writer, MAX_BODY_BYTES};
use crate::state::AppState;

/// Builds the registry from `MIGRATIONS_FILE` (or the compiled-in one).
pub fn load_registry(config: &Config) -> Result<Arc<Registry>, ConfigError> {
    Registry::load_at_start(config).map(Arc::new)
}

/// The router with every route and layer.
///
/// Routes are grouped by [`RouteClass`] (budget and concurrency bound, see
/// `crate::route_class`); a new route joins the group of its class. The
/// internal password guards every `/internal/` group, outside the class
/// layers, so an unauthenticated flood never takes a slot.
pub fn router(state: AppState) -> Router {
    let internal = Router::new()
        .merge(RouteClass::Reads.apply(reader_routes()))
        .merge(RouteClass::Migrations.apply(migration_routes()))
        .merge(RouteClass::Writes.apply(writer_routes()))
        .merge(RouteClass::Reads.apply(document_routes()))
        .merge(long_lived_internal_routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_internal_auth,
        ));
    Router::new()
        .merge(RouteClass::Health.apply(health_routes()))
        .merge(RouteClass::Reads.apply(metrics_routes()))
        .merge(internal)
        // Counts every request (unmatched ones too) under its route template.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track_requests,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
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
    Router::new()
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes at the first SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> impl Future<Output = ()> + Send + 'static {
    let token = migration_shared::shutdown::cancel_on_signal("draining requests");
    async move { token.cancelled().await }
}
