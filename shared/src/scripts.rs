//! Every Lua script of the product, in one registry.
//!
//! Each script is a file under `shared/lua/` whose header lists its `KEYS`
//! and `ARGV` and what it guarantees; here it is embedded with
//! `include_str!` and built once as a [`redis::Script`]. `Script` calls
//! EVALSHA and falls back to EVAL (loading the script) on `NOSCRIPT`, so a
//! restarted or failed-over Redis needs no extra step.
//!
//! Scripts receive every key they touch in `KEYS` (never built in Lua), so
//! that Redis Cluster routes them to the node owning the `{PREFIX}` slot.
//! The guarantees are tested directly against a real Redis by the tests of
//! the modules that call them (`jobs`, `datastore`, the worker's engine).

use std::sync::LazyLock;

use redis::Script;

/// Error code a fenced script returns when the lock's `fencing_token` is not
/// the caller's (`redis::RedisError::code()`).
pub const FENCED: &str = "FENCED";
/// Error code a script returns when what the caller read is no longer what
/// Redis holds (the caller reads again and retries).
pub const STALE: &str = "STALE";

// Each path is written out (no `concat!`), so that tools scanning for
// embedded files (the Dockerfile check) see every script.
macro_rules! script {
    ($name:ident, $file:literal, $source:expr) => {
        #[doc = concat!("`shared/lua/", $file, "`.")]
        pub static $name: LazyLock<Script> = LazyLock::new(|| Script::new($source));
    };
}

// ----- the datastore -----
script!(
    DATASTORE_COMMIT,
    "datastore_commit.lua",
    include_str!("../lua/datastore_commit.lua")
);
script!(
    IDEMPOTENCY_BEGIN,
    "datastore_idempotency_begin.lua",
    include_str!("../lua/datastore_idempotency_begin.lua")
);
script!(
    WRITER_TOKEN_RELEASE,
    "datastore_writer_token_release.lua",
    include_str!("../lua/datastore_writer_token_release.lua")
);
script!(
    IDEMPOTENCY_SETTLE,
    "datastore_idempotency_settle.lua",
    include_str!("../lua/datastore_idempotency_settle.lua")
);

// ----- the migration engine and stats -----
script!(
    STATS,
    "engine_stats.lua",
    include_str!("../lua/engine_stats.lua")
);
script!(
    CHECKPOINT,
    "engine_checkpoint.lua",
    include_str!("../lua/engine_checkpoint.lua")
);
script!(
    FINALIZE,
    "engine_finalize.lua",
    include_str!("../lua/engine_finalize.lua")
);
script!(
    RESET,
    "engine_reset.lua",
    include_str!("../lua/engine_reset.lua")
);

// ----- jobs, the lock, output and workers -----
script!(
    ENQUEUE,
    "job_enqueue.lua",
    include_str!("../lua/job_enqueue.lua")
);
script!(
    CURRENT,
    "job_current.lua",
    include_str!("../lua/job_current.lua")
);
script!(
    PROGRESS,
    "job_progress.lua",
    include_str!("../lua/job_progress.lua")
);
script!(
    MARK_READ,
    "job_mark_read.lua",
    include_str!("../lua/job_mark_read.lua")
);
script!(CLAIM, "job_claim.lua", include_str!("../lua/job_claim.lua"));
script!(
    RENEW,
    "lock_renew.lua",
    include_str!("../lua/lock_renew.lua")
);
script!(
    APPEND_OUTPUT,
    "output_append.lua",
    include_str!("../lua/output_append.lua")
);
script!(
    FINISH,
    "job_finish.lua",
    include_str!("../lua/job_finish.lua")
);
script!(
    HAND_BACK,
    "job_hand_back.lua",
    include_str!("../lua/job_hand_back.lua")
);
script!(
    WORKERS_HEARTBEAT,
    "job_workers_heartbeat.lua",
    include_str!("../lua/job_workers_heartbeat.lua")
);
