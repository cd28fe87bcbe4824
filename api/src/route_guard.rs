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

use crate::auth;
use crate::route_class::RouteClass;
use crate::state::AppState;

/// What a group of routes requires before its handler runs.
#[derive(Clone)]
pub struct RouteGuard {
    /// `Some`: the internal password is required (every `/internal/` route).
    auth: Option<AppState>,
    /// `Some`: the class's budget and its bound on requests in flight.
    class: Option<ClassBound>,
}

/// A route class with its replica-wide slots: every group of one class
/// shares them ([`ClassBounds`]).
#[derive(Clone)]
struct ClassBound {
    class: RouteClass,
    in_flight: Arc<Semaphore>,
}

/// The slots of every class on this replica, made once per router so that
/// all groups of one class draw from the same [`RouteClass::max_in_flight`].
pub struct ClassBounds {
    bounds: Vec<ClassBound>,
}

impl ClassBounds {
    pub fn new() -> ClassBounds {
        let bounds = RouteClass::ALL
            .into_iter()
            .map(|class| ClassBound {
                class,
                in_flight: Arc::new(Semaphore::new(class.max_in_flight())),
            })
            .collect();
        ClassBounds { bounds }
    }

    fn of(&self, class: RouteClass) -> ClassBound {
        self.bounds
            .iter()
            .find(|bound| bound.class == class)
            .cloned()
            .expect("ClassBounds holds every class")
    }

    /// Routes without a password, with `class`'s budget and bound.
    pub fn open(&self, class: RouteClass) -> RouteGuard {
        RouteGuard {
            auth: None,
            class: Some(self.of(class)),
        }
    }

    /// `/internal/` routes: the password, then `class`'s budget and bound.
    pub fn internal(&self, state: &AppState, class: RouteClass) -> RouteGuard {
        RouteGuard {
            auth: Some(state.clone()),
            class: Some(self.of(class)),
        }
    }
}

impl Default for ClassBounds {
    fn default() -> Self {
        ClassBounds::new()
    }
}

impl RouteGuard {
    /// `/internal/` routes that may stay open for long (the SSE output
    /// stream): the password, no budget, no class bound (they have their
    /// own cap).
    pub fn internal_long_lived(state: &AppState) -> RouteGuard {
        RouteGuard {
            auth: Some(state.clone()),
            class: None,
        }
    }

    /// Puts every route of `routes` behind this guard.
    pub fn apply(self, routes: Router<AppState>) -> Router<AppState> {
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
        if let Some(state) = &self.guard.auth {
            let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
            if let Err(refused) = auth::check(state.auth(), header) {
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
