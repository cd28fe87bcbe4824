//! The event-sourced datastore of SPEC section 5: the event model, the
//! projection rules, the write path (with safe retries) and the readers,
//! all over Redis.

pub mod event;
pub mod fqid;
pub mod idempotency;
pub mod model;
pub mod plan;
pub mod reader;
pub mod request;
pub mod writer;

pub use event::{creates_first, Event, Fields, ListValues};
pub use fqid::{is_reserved_field, is_valid_collection, is_valid_field_name, Fqid};
pub use idempotency::{body_fingerprint, IdempotencyKey, WriteAnswer, IDEMPOTENCY_KEY_HEADER};
pub use model::{apply_event, apply_event_to, ApplyError, Model, Models};
pub use plan::{plan_commit, CommitPlan, ModelWrite, Snapshot};
pub use request::{parse_write_body, RequestEvent, WriteRequest};
pub use writer::{Datastore, DatastoreError, WriteError, WRITE_DEADLINE};
