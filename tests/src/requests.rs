//! Builders for the JSON of SPEC section 5.1 and checks for the error shape
//! of SPEC sections 3 and 4.3, so tests state intent instead of JSON noise.

use serde_json::{json, Value};

/// A `create` request event.
pub fn create(fqid: &str, fields: Value) -> Value {
    json!({"type": "create", "fqid": fqid, "fields": fields})
}

/// An `update` request event (a `null` field removes it).
pub fn update(fqid: &str, fields: Value) -> Value {
    json!({"type": "update", "fqid": fqid, "fields": fields})
}

/// An `update` request event with `list_fields` (`add`, `remove`: field ->
/// values) and the given plain fields.
pub fn update_lists(fqid: &str, fields: Value, add: Value, remove: Value) -> Value {
    json!({"type": "update", "fqid": fqid, "fields": fields,
           "list_fields": {"add": add, "remove": remove}})
}

/// A `delete` request event.
pub fn delete(fqid: &str) -> Value {
    json!({"type": "delete", "fqid": fqid})
}

/// A `restore` request event.
pub fn restore(fqid: &str) -> Value {
    json!({"type": "restore", "fqid": fqid})
}

/// One write request with an explicit `migration_index`.
pub fn write_request_with_mi(events: Value, migration_index: u64) -> Value {
    json!({"user_id": 1, "information": {}, "migration_index": migration_index, "events": events})
}

/// Asserts the SPEC error shape `{"success": false, "message": "<non-empty>"}`
/// with status `expected`; returns the message.
#[track_caller]
pub fn assert_error(status: u16, body: &Value, expected: u16) -> String {
    assert_eq!(
        status, expected,
        "expected {expected}, got {status}: {body}"
    );
    assert_eq!(body["success"], json!(false), "error body: {body}");
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error body without a message string: {body}"));
    assert!(!message.trim().is_empty(), "empty message: {body}");
    message.to_string()
}

/// True when `message` names the request at 0-based `index` (the writer may
/// count from 0 or from 1): the word "request" followed shortly by the
/// number.
pub fn names_request_index(message: &str, index: usize) -> bool {
    let lower = message.to_lowercase();
    lower.match_indices("request").any(|(at, word)| {
        let after = &lower[at + word.len()..];
        let number: String = after
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        let distance = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(usize::MAX);
        distance <= 4 && (number == index.to_string() || number == (index + 1).to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_index_is_found_zero_or_one_based() {
        assert!(names_request_index(
            "request 2: motion/1: model does not exist",
            2
        ));
        assert!(names_request_index("Request #3 (motion/1) invalid", 2));
        assert!(names_request_index("invalid event in request[2]", 2));
        assert!(!names_request_index("request 5: motion/2", 2));
        assert!(!names_request_index("motion/2 does not exist", 2));
    }
}
