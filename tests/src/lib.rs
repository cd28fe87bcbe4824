//! The one test harness of the workspace: the end-to-end tests
//! (`tests/tests/`) run a private `redis-server` and the REAL
//! `migration-api` / `migration-worker` binaries, each test its own; the
//! engine tests (`worker/tests/`) and the writer tests (`shared/tests/`) use
//! the same crate as a dev-dependency.
//!
//! A test reads like the SPEC:
//!
//! ```no_run
//! # async fn example() {
//! use migration_tests::TestCluster;
//! use serde_json::json;
//!
//! let cluster = TestCluster::spawn_app();
//! let api = cluster.client();
//! let (status, body) = api.write(json!({"user_id": 1, "information": {}, "events": [
//!     {"type": "create", "fqid": "motion/1", "fields": {"title": "A"}}]})).await;
//! assert_eq!(status, 200, "{body}");
//! # }
//! ```
//!
//! - [`TestCluster`]: one private Redis ([`RedisServer`], from
//!   `migration_shared::test_support`), any number of api replicas and workers
//!   on it, one temp dir (password file, process logs). Dropping it kills
//!   everything, also when the test panics.
//! - [`ApiProcess`] / [`WorkerProcess`]: one real process each, configured
//!   only through the SPEC section 2 environment variables
//!   ([`ServiceOptions`]), with signal helpers for crash and shutdown tests.
//! - [`RedisProxy`]: a relay between an api and the Redis that acts at an
//!   exact moment of the traffic (freeze Redis right after a commit was
//!   sent, hold a commit while another replica is asked).
//! - [`ApiClient`]: HTTP with the SPEC section 3 `Authorization` header, the
//!   datastore routes and the migration route.
//!
//! - [`migration_jobs`]: the migrations, seed data and job-key looks of the
//!   migration-route tests.
//! - [`engine`]: the engine tests' set-up ([`engine::Setup`]: a private Redis
//!   with the job lock held), output sinks, key dumps, and the test
//!   migrations of [`test_migrations`]; [`LiveWriter`] writes live datastore
//!   content in the documented format without the writer.
//!
//! - [`topology`]: the Redis deployments of SPEC 8 as loopback processes
//!   (Sentinel, Cluster, TLS); [`deployment`]: the binaries on any
//!   `REDIS_URL` and prefix, and the route flow each deployment must pass.
//!
//! [`RedisServer`] itself stays in `migration_shared::test_support`, because
//! the unit tests inside `migration-shared` and `migration-worker` use it and
//! cannot depend on this crate; it is re-exported here.
//!
//! The binaries are looked up next to the test executable and built once per
//! test process ([`binaries`]). Nothing here talks to the Redis on port 6379:
//! every inherited SPEC variable is removed from the child's environment.

pub mod binaries;
pub mod client;
pub mod cluster;
pub mod deployment;
pub mod engine;
pub mod inspect;
pub mod live_writer;
pub mod migration_jobs;
pub mod options;
pub mod process;
pub mod proxy;
pub mod requests;
pub mod test_migrations;
pub mod topology;

pub use binaries::{binary_path, Binary};
pub use client::{write_request, ApiClient, Auth};
pub use cluster::{TestCluster, TestClusterBuilder};
pub use inspect::DatastoreSnapshot;
pub use live_writer::LiveWriter;
pub use migration_shared::keys::Keys;
pub use migration_shared::test_support::RedisServer;
pub use options::ServiceOptions;
pub use process::{ApiProcess, WorkerProcess};
pub use proxy::RedisProxy;
