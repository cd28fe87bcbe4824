//! The one layer in front of each group of routes: the internal password
//! (SPEC 3, [`crate::auth`]), then the route class's bound on requests in
//! flight and its budget (SPEC 4.3, [`crate::route_class`]).
//!
//! The three are one hand-written service, not a stack of tower and axum
//! layers, because the stack cost more than the routes it guarded: axum
//! boxes and clones every layer level per request, `from_fn` adds a boxed
//! inner service, tower's global concurrency limit allocates its semaphore
//! wait, and the error-handling adapter boxes once more. Under 64
//! concurrent `progress` polls that stack took about a fifth of the api's
//! throughput (scripts/bench-api.sh). Here a request costs one permit taken
//! without waiting, one timer and one boxed future.
//!
//! The order is the one the guarantees need: the password is checked before
//! a slot is taken, so an unauthenticated flood never takes one; a request
//! over the bound is shed at once (`503`, nothing done) instead of queueing;
//! the budget covers the whole handler.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use migration_shared::config::AuthConfig;

use crate::auth;
use crate::route_class::RouteClass;

/// What a group of routes requires before its handler runs.
#[derive(Clone)]
pub struct RouteGuard {
    /// `Some`: the internal password is required (every `/internal/` route).
    auth: Option<Arc<AuthConfig>>,
    /// `Some`: the class's budget and its bound on requests in flight.
    class: Option<ClassBound>,
}

/// A route class with its replica-wide slots: every group of one class
/// shares them ([`RouteGuards`]).
#[derive(Clone)]
struct ClassBound {
    class: RouteClass,
    in_flight: Arc<Semaphore>,
}

impl ClassBound {
    fn new(class: RouteClass) -> ClassBound {
        ClassBound {
            class,
            in_flight: Arc::new(Semaphore::new(class.max_in_flight())),
        }
    }
}

/// The guards of one router: the internal password, and the slots of every
/// class, made once so that all groups of one class draw from the same
/// [`RouteClass::max_in_flight`].
pub struct RouteGuards {
    auth: Arc<AuthConfig>,
    health: ClassBound,
    reads: ClassBound,
    migrations: ClassBound,
    writes: ClassBound,
}

impl RouteGuards {
    pub fn new(auth: &AuthConfig) -> RouteGuards {
        RouteGuards {
            auth: Arc::new(auth.clone()),
            health: ClassBound::new(RouteClass::Health),
            reads: ClassBound::new(RouteClass::Reads),
            migrations: ClassBound::new(RouteClass::Migrations),
            writes: ClassBound::new(RouteClass::Writes),
        }
    }

    fn bound(&self, class: RouteClass) -> ClassBound {
        match class {
            RouteClass::Health => &self.health,
            RouteClass::Reads => &self.reads,
            RouteClass::Migrations => &self.migrations,
            RouteClass::Writes => &self.writes,
        }
        .clone()
    }

    /// Routes without a password, with `class`'s budget and bound.
    pub fn open(&self, class: RouteClass) -> RouteGuard {
        RouteGuard {
            auth: None,
            class: Some(self.bound(class)),
        }
    }

    /// `/internal/` routes: the password, then `class`'s budget and bound.
    pub fn internal(&self, class: RouteClass) -> RouteGuard {
        RouteGuard {
            auth: Some(self.auth.clone()),
            class: Some(self.bound(class)),
        }
    }

    /// `/internal/` routes that may stay open for long (the SSE output
    /// stream): the password, no budget, no class bound (they have their
    /// own cap).
    pub fn internal_long_lived(&self) -> RouteGuard {
        RouteGuard {
            auth: Some(self.auth.clone()),
            class: None,
        }
    }
}

impl RouteGuard {
    /// Puts every route of `routes` behind this guard.
    pub fn apply<S: Clone + Send + Sync + 'static>(self, routes: Router<S>) -> Router<S> {
        routes.route_layer(self)
    }
}

impl<S> Layer<S> for RouteGuard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            guard: self.clone(),
            inner,
        }
    }
}

/// A route behind its [`RouteGuard`].
#[derive(Clone)]
pub struct Guarded<S> {
    guard: RouteGuard,
    inner: S,
}

impl<S> Service<Request> for Guarded<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let Some(auth) = &self.guard.auth {
            let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
            if let Err(refused) = auth::check(auth, header) {
                return answer_now(refused.into_response());
            }
        }
        // The service that was polled ready is the one called; its clone
        // stays for the next request.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let Some(bound) = self.guard.class.clone() else {
            return Box::pin(inner.call(request));
        };
        let Ok(slot) = bound.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(
                class = bound.class.name(),
                "request shed: too many in flight"
            );
            return answer_now(bound.class.overloaded());
        };
        Box::pin(async move {
            let answer = tokio::time::timeout(bound.class.budget(), inner.call(request)).await;
            drop(slot);
            Ok(match answer {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_elapsed) => {
                    tracing::warn!(class = bound.class.name(), "request ran out of its budget");
                    bound.class.timed_out()
                }
            })
        })
    }
}

fn answer_now(response: Response) -> BoxFuture<'static, Result<Response, Infallible>> {
    Box::pin(std::future::ready(Ok(response)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use base64::Engine;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tower::ServiceExt;

    const PASSWORD: &[u8] = b"secret";

    /// A request to `path`, with the password when `authorized`.
    async fn call(router: &Router, path: &str, authorized: bool) -> (StatusCode, String) {
        let mut request = Request::get(path);
        if authorized {
            let header = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
            request = request.header(AUTHORIZATION, header);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_class_sheds_over_its_bound_across_its_groups_and_checks_the_password_first() {
        let auth = AuthConfig::Password(PASSWORD.to_vec());
        let guards = RouteGuards::new(&auth);
        let entered = Arc::new(AtomicUsize::new(0));
        // Closed until the test opens it: the held requests keep their slots.
        let gate = Arc::new(Semaphore::new(0));
        let held = {
            let (entered, gate) = (entered.clone(), gate.clone());
            move || async move {
                entered.fetch_add(1, Ordering::SeqCst);
                let _pass = gate.acquire().await;
                "held"
            }
        };
        let router: Router = Router::new()
            .merge(
                guards
                    .internal(RouteClass::Reads)
                    .apply(Router::new().route("/held", get(held))),
            )
            .merge(
                guards
                    .internal(RouteClass::Reads)
                    .apply(Router::new().route("/other-read", get(|| async { "read" }))),
            )
            .merge(
                guards
                    .internal(RouteClass::Migrations)
                    .apply(Router::new().route("/migrations", get(|| async { "migrations" }))),
            );

        let bound = RouteClass::Reads.max_in_flight();
        let holders: Vec<_> = (0..bound)
            .map(|_| {
                let router = router.clone();
                tokio::spawn(async move { call(&router, "/held", true).await })
            })
            .collect();
        while entered.load(Ordering::SeqCst) < bound {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // The other group of the class shares its slots: shed at once.
        let (status, body) = call(&router, "/other-read", true).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("too many concurrent reads"), "{body}");
        // Without the password: refused as such, no slot asked for.
        let (status, body) = call(&router, "/other-read", false).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        // Another class has slots of its own.
        let (status, body) = call(&router, "/migrations", true).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "migrations"));

        // Each answered request gives its slot back.
        gate.add_permits(bound);
        for holder in holders {
            assert_eq!(holder.await.unwrap(), (StatusCode::OK, "held".to_string()));
        }
        let (status, body) = call(&router, "/other-read", true).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "read"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_over_its_budget_gets_its_class_answer_and_frees_its_slot() {
        let auth = AuthConfig::Password(PASSWORD.to_vec());
        let guards = RouteGuards::new(&auth);
        let router: Router =
            Router::new()
                .merge(guards.internal(RouteClass::Writes).apply(
                    Router::new().route("/hangs", get(std::future::pending::<&'static str>)),
                ))
                .merge(guards.open(RouteClass::Health).apply(
                    Router::new().route("/health", get(std::future::pending::<&'static str>)),
                ));
        for _ in 0..=RouteClass::Writes.max_in_flight() {
            let (status, body) = call(&router, "/hangs", true).await;
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
            assert!(
                body.contains("retry with the same Idempotency-Key"),
                "{body}"
            );
        }
        let (status, body) = call(&router, "/health", false).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("no answer within 4 s"), "{body}");
    }
}
