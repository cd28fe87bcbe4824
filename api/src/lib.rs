//! `migration-api`: the HTTP face of the migration service (SPEC sections 3,
//! 4 and 5.1). Any number of replicas may run; all state lives in Redis, so
//! every replica answers every request the same way.
//!
//! The api validates, authenticates, reads and enqueues; it never changes the
//! migration area (that is `migration-worker`).

pub mod auth;
pub mod coalesced_read;
pub mod error;
pub mod metrics;
pub mod output_cache;
pub mod retry;
pub mod route_class;
pub mod route_guard;
pub mod routes;
pub mod startup;
pub mod state;
