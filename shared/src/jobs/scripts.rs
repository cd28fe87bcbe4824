//! The Lua scripts of the job queue, the fenced lock, the output stream and
//! worker presence, embedded from `shared/lua/` and built once.
//!
//! `redis::Script` calls EVALSHA and falls back to EVAL (loading the script)
//! on `NOSCRIPT`, so a restarted or failed-over Redis needs no extra step.
//! Each script's header comment lists its KEYS/ARGV and its guarantee; the
//! tests in `super::tests` check each guarantee against a real Redis.

use std::sync::LazyLock;

use redis::Script;

// Each path is written out (no `concat!`), so that tools scanning for
// embedded files (the Dockerfile check) see every script.
macro_rules! script {
    ($name:ident, $file:literal, $source:expr) => {
        #[doc = concat!("`shared/lua/", $file, "`.")]
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| Script::new($source));
    };
}

script!(
    ENQUEUE,
    "job_enqueue.lua",
    include_str!("../../lua/job_enqueue.lua")
);
script!(
    CURRENT,
    "job_current.lua",
    include_str!("../../lua/job_current.lua")
);
script!(
    MARK_READ,
    "job_mark_read.lua",
    include_str!("../../lua/job_mark_read.lua")
);
script!(
    CLAIM,
    "job_claim.lua",
    include_str!("../../lua/job_claim.lua")
);
script!(
    RENEW,
    "lock_renew.lua",
    include_str!("../../lua/lock_renew.lua")
);
script!(
    APPEND_OUTPUT,
    "output_append.lua",
    include_str!("../../lua/output_append.lua")
);
script!(
    FINISH,
    "job_finish.lua",
    include_str!("../../lua/job_finish.lua")
);
script!(
    HAND_BACK,
    "job_hand_back.lua",
    include_str!("../../lua/job_hand_back.lua")
);
script!(
    WORKERS_HEARTBEAT,
    "job_workers_heartbeat.lua",
    include_str!("../../lua/job_workers_heartbeat.lua")
);
