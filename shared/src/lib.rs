//! What both binaries of the migration service need: configuration, Redis key
//! names and scripts, the datastore model and the migration registry.
//!
//! This crate never changes the migration area (that is the worker's engine),
//! and depends on neither `migration-api` nor `migration-worker`.

pub mod config;
pub mod datastore;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod migrations;
pub mod presence;
pub mod redis_client;
pub mod scripts;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;
