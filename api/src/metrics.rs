//! Metrics for Prometheus (SPEC 9): this replica's HTTP figures, recorded by
//! a middleware layer, and the cluster-wide migration figures, read from
//! Redis at each scrape (`migration_shared::metrics`), rendered together as
//! OpenMetrics text by the Prometheus project's `prometheus-client`.
//!
//! `http_*` are per replica (Prometheus adds the `instance` label), so they
//! live in this process. Their `route` label is the matched path template,
//! never the raw path: every request that matched no route is counted under
//! [`UNMATCHED_ROUTE`], so a scanner probing random paths cannot blow up the
//! number of series. A response's duration ends when its head is ready
//! (for the SSE stream: when the stream starts).
//!
//! `migration_*` are the same on every replica because they come from Redis.
//! When Redis cannot be read the scrape still answers `200` with the `http_*`
//! figures and `migration_redis_up 0`, so a Redis outage shows as such rather
//! than as a missing target.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use futures_util::future::BoxFuture;
use migration_shared::metrics::ClusterMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// The `route` label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Content type of the OpenMetrics text that `prometheus-client` writes
/// (Prometheus negotiates and parses it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the request duration histogram.
const REQUEST_DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Labels of `http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

/// Labels of `http_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

fn request_duration_histogram() -> Histogram {
    Histogram::new(REQUEST_DURATION_BUCKETS)
}

/// This replica's HTTP figures; cheap to clone (the families are shared).
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(request_duration_histogram),
        }
    }
}

impl HttpMetrics {
    /// Counts one answered request.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// The whole scrape: these HTTP figures, then the cluster's (or
    /// `migration_redis_up 0` when Redis could not be read).
    pub fn render(&self, cluster: Option<ClusterMetrics>) -> String {
        let mut registry = Registry::default();
        registry.register(
            "http_requests",
            "HTTP requests answered by this replica, by route template and status",
            self.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time until the response head was ready, by route template",
            self.durations.clone(),
        );
        registry.register_collector(Box::new(ClusterCollector(cluster)));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// The layer that feeds [`HttpMetrics`] and logs every answer (at `debug`).
/// It must wrap the routes (`Router::layer`), where the matched path is
/// known; unmatched requests reach it through the router's fallback.
///
/// A service of its own rather than `axum::middleware::from_fn`, which
/// boxes the inner service again for every request: this layer runs on
/// every request of the replica (see `crate::route_guard`).
#[derive(Clone)]
pub struct TrackRequestsLayer {
    metrics: HttpMetrics,
}

impl TrackRequestsLayer {
    pub fn new(metrics: HttpMetrics) -> TrackRequestsLayer {
        TrackRequestsLayer { metrics }
    }
}

impl<S> Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> TrackRequests<S> {
        TrackRequests {
            metrics: self.metrics.clone(),
            inner,
        }
    }
}

/// A route whose answers [`TrackRequestsLayer`] counts.
#[derive(Clone)]
pub struct TrackRequests<S> {
    metrics: HttpMetrics,
    inner: S,
}

impl<S> Service<Request> for TrackRequests<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = answer.await;
            let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
            let status = response.status().as_u16();
            let seconds = started.elapsed().as_secs_f64();
            metrics.observe(route, status, seconds);
            tracing::debug!(%method, route, status, ms = seconds * 1000.0, "answered");
            Ok(response)
        })
    }
}

/// The cluster-wide figures of one scrape, encoded as constant metrics.
#[derive(Debug)]
struct ClusterCollector(Option<ClusterMetrics>);

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let up = ConstGauge::new(i64::from(self.0.is_some()));
        up.encode(encoder.encode_descriptor(
            "migration_redis_up",
            "1 when this scrape could read the migration figures from Redis",
            None,
            up.metric_type(),
        )?)?;
        let Some(cluster) = &self.0 else {
            return Ok(());
        };

        let mut jobs = encoder.encode_descriptor(
            "migration_jobs",
            "Finished migration jobs by command and result (ok, exception, abandoned), cluster-wide",
            None,
            MetricType::Counter,
        )?;
        for ((command, result), count) in &cluster.jobs {
            let labels = [("command", *command), ("result", *result)];
            ConstCounter::new(*count).encode(jobs.encode_family(&labels)?)?;
        }

        let mut durations = encoder.encode_descriptor(
            "migration_job_duration_seconds",
            "Duration of finished migration jobs from their first claim, by command, cluster-wide",
            None,
            MetricType::Histogram,
        )?;
        for (command, histogram) in &cluster.durations {
            let labels = [("command", *command)];
            durations
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_seconds,
                    histogram.count,
                    &histogram.buckets,
                    None,
                )?;
        }

        let counters = [
            (
                "migration_positions_migrated",
                "Positions made durable in the migration area (each counted once, also across takeovers)",
                cluster.positions_migrated,
            ),
            (
                "migration_events_migrated",
                "Live events of the migrated positions",
                cluster.events_migrated,
            ),
            (
                "migration_takeovers",
                "Jobs taken over after their worker's lease expired",
                cluster.takeovers,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }

        let gauges = [
            (
                "migration_fencing_token",
                "Fencing token of the lock holder (while the lock is free: the last one handed out)",
                cluster.fencing_token as i64,
            ),
            (
                "migration_workers_live",
                "Workers whose presence has not expired",
                cluster.workers_live as i64,
            ),
            (
                "migration_job_running",
                "1 while a migration job is queued or running",
                i64::from(cluster.job_running),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}
