//! Safe retries of the write route: the `Idempotency-Key` of SPEC 5.1.
//!
//! A key's life, all in one Redis hash (`ds:idempotency:<key>`):
//!
//! 1. `datastore_idempotency_begin.lua` claims the key for one attempt
//!    (`pending`, with a fresh owner token and the body's fingerprint), or
//!    answers what became of it: the kept answer (`done`), `422` for another
//!    body, `409` while another attempt holds the claim.
//! 2. The holder's commit script checks that it still holds the claim and
//!    stores the `200` answer in the same script as the commit, so "written"
//!    and "answer kept" can never be told apart. A refusal that is part of
//!    the contract (a `400`) is kept by `datastore_idempotency_settle.lua`;
//!    a refusal that wrote nothing and may succeed later (finalizing, too
//!    busy) gives the key back.
//! 3. Answers are kept [`ANSWER_TTL`]; a claim whose holder died (or whose
//!    Redis hung) expires after [`CLAIM_TTL`], after which the key is free
//!    again. A commit still queued in a hung Redis that runs after its claim
//!    expired finds the claim gone and writes nothing, so even then a key is
//!    written at most once.
//!
//! "Same body" means the same JSON value: the fingerprint is the SHA-1 of
//! the body's canonical JSON (object keys sorted, no whitespace, numbers
//! and strings as serde_json prints them), so key order and formatting do
//! not matter, while any change of a value does. SHA-1 is enough here: the
//! fingerprint tells a client's own retries from its own mistakes, it is no
//! defence against an attacker (who would only collide with their own key).

use std::time::Duration;

use serde_json::Value;

/// The name of the header.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// How long the answer of a finished write is kept (SPEC 5.1: at least 24 h).
pub const ANSWER_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a claim lives without an answer: well over the write route's
/// deadline (so a live attempt never loses it), short enough that a client
/// retrying after a crashed replica gets `409` only briefly.
pub const CLAIM_TTL: Duration = Duration::from_secs(10);
/// Longest key accepted (SPEC 5.1).
pub const MAX_KEY_LEN: usize = 255;

/// A valid `Idempotency-Key`: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a header value; the error says what is wrong.
    pub fn parse(value: &[u8]) -> Result<IdempotencyKey, String> {
        if value.is_empty() {
            return Err(format!("{IDEMPOTENCY_KEY_HEADER} is empty: send 1 to {MAX_KEY_LEN} visible ASCII characters"));
        }
        if value.len() > MAX_KEY_LEN {
            return Err(format!(
                "{IDEMPOTENCY_KEY_HEADER} is {} characters long: at most {MAX_KEY_LEN} are allowed",
                value.len()
            ));
        }
        if let Some(at) = value.iter().position(|byte| !byte.is_ascii_graphic()) {
            return Err(format!(
                "{IDEMPOTENCY_KEY_HEADER} holds a character that is not visible ASCII (byte {:#04x} at {at}): only '!' to '~' are allowed",
                value[at]
            ));
        }
        // Visible ASCII is valid UTF-8.
        Ok(IdempotencyKey(String::from_utf8_lossy(value).into_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The fingerprint of a body: SHA-1 hex of its canonical JSON.
pub fn body_fingerprint(body: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(body, &mut canonical);
    sha1_smol::Sha1::from(canonical).digest().to_string()
}

/// Writes `value` with object keys sorted at every level, whatever the map
/// type serde_json was built with.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(&String, &Value)> = object.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (name, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(name.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A write route answer as it is sent and kept: status and JSON body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteAnswer {
    /// The HTTP status (200 or 400).
    pub status: u16,
    /// The JSON body, exactly as sent the first time.
    pub body: String,
}

impl WriteAnswer {
    /// The `400` answer for a refused body (SPEC 4.3 shape).
    pub fn invalid(message: &str) -> WriteAnswer {
        WriteAnswer {
            status: 400,
            body: serde_json::json!({"success": false, "message": message}).to_string(),
        }
    }
}

/// One attempt's claim on a key: the record and the owner token.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) record: String,
    pub(crate) owner: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert_eq!(IdempotencyKey::parse(b"a").unwrap().as_str(), "a");
        let longest = "~".repeat(MAX_KEY_LEN);
        assert!(IdempotencyKey::parse(longest.as_bytes()).is_ok());
        assert!(IdempotencyKey::parse(b"!{key}:with/every-sign~").is_ok());
        for bad in [
            b"".to_vec(),
            "x".repeat(MAX_KEY_LEN + 1).into_bytes(),
            b"with space".to_vec(),
            b"tab\t".to_vec(),
            "caf\u{e9}".as_bytes().to_vec(),
            b"\x7f".to_vec(),
        ] {
            let err = IdempotencyKey::parse(&bad).unwrap_err();
            assert!(err.contains(IDEMPOTENCY_KEY_HEADER), "{err}");
        }
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_sees_every_value() {
        let a = json!({"user_id": 1, "events": [{"type": "create", "fqid": "a/1", "fields": {"x": 1, "y": "z"}}]});
        let b: Value = serde_json::from_str(
            r#"{ "events": [ {"fields": {"y": "z", "x": 1}, "fqid": "a/1", "type": "create"} ], "user_id": 1 }"#,
        )
        .unwrap();
        assert_eq!(body_fingerprint(&a), body_fingerprint(&b));
        let mut c = a.clone();
        c["events"][0]["fields"]["x"] = json!(2);
        assert_ne!(body_fingerprint(&a), body_fingerprint(&c));
        // A one-request array is another body than the bare request.
        assert_ne!(body_fingerprint(&a), body_fingerprint(&json!([a])));
    }
}
