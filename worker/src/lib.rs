//! `migration-worker`: takes migration jobs from Redis and runs them under a
//! leased, fenced global lock (SPEC section 7).
//!
//! [`engine`] changes the migration area (migrate, finalize, reset);
//! [`runner`] is the job loop around it: claim, lease renewal, takeover,
//! presence, output, shutdown.

pub mod engine;
pub mod memory;
pub mod runner;
