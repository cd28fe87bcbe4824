//! The event-sourced datastore of SPEC section 5: the event model, the
//! projection rules, the write path and the readers, all over Redis.

pub mod event;
pub mod fqid;
pub mod model;

pub use event::{creates_first, Event, Fields, ListValues};
pub use fqid::{is_reserved_field, is_valid_collection, is_valid_field_name, Fqid};
pub use model::{apply_event, ApplyError, Model, Models};
