//! [`ApiClient`]: HTTP to one `migration-api`, as an operator tool sends it.
//!
//! By default every request carries `Authorization: <base64 of the
//! password>` (no scheme word, SPEC section 3). [`Auth`] selects another
//! header (none, a raw value, another password) for the auth tests.
//!
//! Every call returns `(status, body)`: the body parsed as JSON, or, when it
//! is not JSON, the text as a JSON string (so a test can still print it).
//! Transport errors panic: a test that expects an answer and gets none has
//! failed.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// A request's timeout; long enough for a slow CI machine, short enough that
/// a hanging route fails the test instead of the whole suite.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The `Authorization` header to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: base64(password)`.
    Password(Vec<u8>),
    /// The header value exactly as given (e.g. not base64).
    Raw(String),
    /// No header at all.
    None,
}

impl Auth {
    /// The password as a header: `base64(password)`.
    pub fn password(password: impl AsRef<[u8]>) -> Auth {
        Auth::Password(password.as_ref().to_vec())
    }

    fn header_value(&self) -> Option<String> {
        match self {
            Auth::Password(password) => {
                Some(base64::engine::general_purpose::STANDARD.encode(password))
            }
            Auth::Raw(value) => Some(value.clone()),
            Auth::None => None,
        }
    }
}

/// A client for one api process.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base_url: String,
    http: reqwest::Client,
    auth: Auth,
}

impl ApiClient {
    /// A client for `base_url` (`http://127.0.0.1:<port>`) sending `auth`.
    pub fn new(base_url: impl Into<String>, auth: Auth) -> ApiClient {
        ApiClient {
            base_url: base_url.into(),
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("build the HTTP client"),
            auth,
        }
    }

    /// The same api with another `Authorization` header.
    pub fn with_auth(&self, auth: Auth) -> ApiClient {
        ApiClient {
            auth,
            ..self.clone()
        }
    }

    /// The same api without an `Authorization` header.
    pub fn without_auth(&self) -> ApiClient {
        self.with_auth(Auth::None)
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    // ----- raw requests -----

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.url(path))).await
    }

    /// `POST path` with `body` as JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// `POST path` with `body` sent as is (`Content-Type: application/json`,
    /// as the operator tool sends it, whatever the body is).
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    /// `POST path` with a body of exactly `len` bytes: a JSON object padded
    /// with spaces (so it is valid JSON whatever the length, from 2 bytes on).
    pub async fn post_bytes(&self, path: &str, len: usize) -> (u16, Value) {
        self.post_raw(path, padded_json_body(len)).await
    }

    /// `POST path` with `body` as JSON and one extra header.
    pub async fn post_json_with_header(
        &self,
        path: &str,
        body: &Value,
        name: &str,
        value: &str,
    ) -> (u16, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(name, value)
                .body(body.to_string()),
        )
        .await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> (u16, Value) {
        if let Some(value) = self.auth.header_value() {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("request to {} failed: {err}", self.base_url));
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .unwrap_or_else(|err| panic!("reading the response body failed: {err}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    // ----- health -----

    /// `GET /health`.
    pub async fn health(&self) -> (u16, Value) {
        self.get("/health").await
    }

    /// `GET /system/action/health`.
    pub async fn system_health(&self) -> (u16, Value) {
        self.get("/system/action/health").await
    }

    /// Polls `GET /health` until it answers `200`; panics after `timeout`
    /// (for a Redis that comes back).
    pub async fn wait_until_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.health().await;
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "health never answered 200 within {timeout:?}; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // ----- datastore (SPEC section 5.1) -----

    /// `POST /internal/datastore/writer/write` with one request or an array.
    pub async fn write(&self, body: Value) -> (u16, Value) {
        self.post_json("/internal/datastore/writer/write", &body)
            .await
    }

    /// `POST /internal/datastore/writer/write` with `Idempotency-Key: key`
    /// (SPEC 5.1).
    pub async fn write_with_key(&self, body: &Value, key: &str) -> (u16, Value) {
        self.post_json_with_header(
            "/internal/datastore/writer/write",
            body,
            "Idempotency-Key",
            key,
        )
        .await
    }

    /// Writes `events` as one request (user 1, no `migration_index`) and
    /// returns the new position; panics unless the answer is `200`.
    pub async fn write_events(&self, events: Value) -> u64 {
        let (status, body) = self.write(write_request(events)).await;
        assert_eq!(status, 200, "write failed: {body}");
        body["positions"][0]
            .as_u64()
            .unwrap_or_else(|| panic!("no position in {body}"))
    }

    /// `POST /internal/datastore/reader/get`.
    pub async fn get_model(&self, fqid: &str) -> (u16, Value) {
        self.post_json("/internal/datastore/reader/get", &json!({ "fqid": fqid }))
            .await
    }

    /// `POST /internal/datastore/reader/get_all`.
    pub async fn get_all(&self, collection: &str) -> (u16, Value) {
        self.post_json(
            "/internal/datastore/reader/get_all",
            &json!({ "collection": collection }),
        )
        .await
    }

    // ----- migrations (SPEC section 4) -----

    /// `POST /internal/migrations` with `{"cmd": cmd}`.
    pub async fn post_migration(&self, cmd: &str) -> (u16, Value) {
        self.post_json("/internal/migrations", &json!({ "cmd": cmd }))
            .await
    }

    /// `POST /internal/migrations` with `{"cmd": cmd, "verbose": verbose}`.
    pub async fn post_migration_verbose(&self, cmd: &str, verbose: bool) -> (u16, Value) {
        self.post_json(
            "/internal/migrations",
            &json!({ "cmd": cmd, "verbose": verbose }),
        )
        .await
    }

    /// `progress`.
    pub async fn progress(&self) -> (u16, Value) {
        self.post_migration("progress").await
    }

    /// `stats`; panics unless `200`; returns the `stats` object.
    pub async fn stats(&self) -> Value {
        let (status, body) = self.post_migration("stats").await;
        assert_eq!(status, 200, "stats failed: {body}");
        body["stats"].clone()
    }

    /// Polls `progress` until the status is no longer `migration_running`
    /// and returns that (final) body; panics with the last body after
    /// `timeout`.
    pub async fn wait_until_finished(&self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.progress().await;
            assert_eq!(status, 200, "progress failed: {body}");
            if body["status"] != "migration_running" {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "migration still running after {timeout:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One write request (SPEC 5.1) by user 1 with empty `information` and no
/// `migration_index`.
pub fn write_request(events: Value) -> Value {
    json!({"user_id": 1, "information": {}, "events": events})
}

/// A JSON object padded with spaces to exactly `len` bytes (`len >= 2`).
pub fn padded_json_body(len: usize) -> String {
    assert!(len >= 2, "a JSON body has at least 2 bytes");
    let mut body = String::with_capacity(len);
    body.push('{');
    body.extend(std::iter::repeat_n(' ', len - 2));
    body.push('}');
    body
}
