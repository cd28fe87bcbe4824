//! [`ServiceOptions`]: the SPEC section 2 environment of a spawned binary.
//!
//! The binaries are configured ONLY through these variables, exactly as an
//! operator would. Every SPEC variable the test process itself inherited is
//! removed from the child's environment first, so a developer's `REDIS_URL`
//! can never point a test at a real Redis. `API_ADDR` is chosen by
//! [`crate::ApiProcess`] (a free loopback port) unless a test sets it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every variable of SPEC section 2.
pub const SPEC_VARIABLES: [&str; 11] = [
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "API_ADDR",
    "INTERNAL_AUTH_PASSWORD_FILE",
    "OPENSLIDES_DEVELOPMENT",
    "MIGRATIONS_FILE",
    "MIGRATION_WAIT_MS",
    "WORKER_LOCK_TTL_MS",
    "WORKER_MAX_POSITIONS_PER_SECOND",
    "RUST_LOG",
    "LOG_FORMAT",
];

/// The environment of one spawned binary; builder-style.
///
/// ```no_run
/// # use migration_tests::ServiceOptions;
/// let options = ServiceOptions::new("redis://127.0.0.1:7000/0")
///     .migration_wait_ms(50)
///     .worker_lock_ttl_ms(1_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOptions {
    /// Variable -> value; `None` means "explicitly unset".
    vars: BTreeMap<String, Option<String>>,
}

impl ServiceOptions {
    /// Options for a binary on the Redis at `redis_url`, logging at
    /// `info` for the product's crates (the log goes to a file the harness
    /// prints when something goes wrong).
    pub fn new(redis_url: impl Into<String>) -> ServiceOptions {
        ServiceOptions {
            vars: BTreeMap::new(),
        }
        .redis_url(redis_url)
        .rust_log("info")
    }

    /// Sets any variable (SPEC or not).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), Some(value.into()));
        self
    }

    /// Removes a variable from the child's environment.
    pub fn unset(mut self, name: impl Into<String>) -> Self {
        self.vars.insert(name.into(), None);
        self
    }

    /// The value a variable will have, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).and_then(|value| value.as_deref())
    }

    /// `REDIS_URL`.
    pub fn redis_url(self, url: impl Into<String>) -> Self {
        self.env("REDIS_URL", url)
    }

    /// `REDIS_KEY_PREFIX`.
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        self.env("REDIS_KEY_PREFIX", prefix)
    }

    /// `API_ADDR`.
    pub fn api_addr(self, addr: impl Into<String>) -> Self {
        self.env("API_ADDR", addr)
    }

    /// `INTERNAL_AUTH_PASSWORD_FILE`.
    pub fn password_file(self, path: impl AsRef<Path>) -> Self {
        self.env(
            "INTERNAL_AUTH_PASSWORD_FILE",
            path.as_ref().display().to_string(),
        )
    }

    /// No `INTERNAL_AUTH_PASSWORD_FILE` and no development mode: the
    /// `/internal/` routes answer `500`.
    pub fn no_password(self) -> Self {
        self.unset("INTERNAL_AUTH_PASSWORD_FILE")
            .unset("OPENSLIDES_DEVELOPMENT")
    }

    /// `OPENSLIDES_DEVELOPMENT` (e.g. `"1"`, `"true"`, `"on"`).
    pub fn development(self, value: impl Into<String>) -> Self {
        self.env("OPENSLIDES_DEVELOPMENT", value)
    }

    /// `MIGRATIONS_FILE`.
    pub fn migrations_file(self, path: impl AsRef<Path>) -> Self {
        self.env("MIGRATIONS_FILE", path.as_ref().display().to_string())
    }

    /// `MIGRATION_WAIT_MS`.
    pub fn migration_wait_ms(self, ms: u64) -> Self {
        self.env("MIGRATION_WAIT_MS", ms.to_string())
    }

    /// `WORKER_LOCK_TTL_MS`.
    pub fn worker_lock_ttl_ms(self, ms: u64) -> Self {
        self.env("WORKER_LOCK_TTL_MS", ms.to_string())
    }

    /// `WORKER_MAX_POSITIONS_PER_SECOND`.
    pub fn worker_max_positions_per_second(self, positions: u32) -> Self {
        self.env("WORKER_MAX_POSITIONS_PER_SECOND", positions.to_string())
    }

    /// `RUST_LOG`.
    pub fn rust_log(self, filter: impl Into<String>) -> Self {
        self.env("RUST_LOG", filter)
    }

    /// `LOG_FORMAT`.
    pub fn log_format(self, format: impl Into<String>) -> Self {
        self.env("LOG_FORMAT", format)
    }

    /// The `INTERNAL_AUTH_PASSWORD_FILE` path, if set.
    pub fn password_file_path(&self) -> Option<PathBuf> {
        self.get("INTERNAL_AUTH_PASSWORD_FILE").map(PathBuf::from)
    }

    /// Applies the environment to `command`: first removes every inherited
    /// SPEC variable, then sets the configured ones.
    pub fn apply(&self, command: &mut Command) {
        for name in SPEC_VARIABLES {
            command.env_remove(name);
        }
        for (name, value) in &self.vars {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
    }
}
