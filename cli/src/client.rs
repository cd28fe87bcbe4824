//! HTTP to one migration-api: the migration route and the output stream,
//! with the internal `Authorization` header (SPEC 3: base64 of the
//! password file's content, no scheme word).
//!
//! Every failure is a [`RequestError`] whose text is what the operator
//! reads before `migrationctl` exits with code 2.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::sse::{SseEvent, SseParser};

/// A command request may wait this long: the api answers within
/// `MIGRATION_WAIT_MS` plus its own bounds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The api sends a keep-alive comment every few seconds: this much silence
/// means the connection is dead.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A request that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// `--url` / `MIGRATION_API_URL` is no http(s) URL.
    #[error("invalid api URL '{url}': {reason} (expected e.g. http://127.0.0.1:9002)")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The password file cannot be read.
    #[error("cannot read the password file {path}: {reason}")]
    PasswordFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// No connection or no answer.
    #[error("cannot reach the migration api at {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The api refused the request (status >= 400).
    #[error("the api answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The `message` of the answer (or its body).
        message: String,
        /// The answer, when it was JSON (`--json` prints it).
        body: Option<Value>,
    },
    /// A 200 whose body is not the JSON the SPEC describes.
    #[error("the api answered something unexpected: {0}")]
    Malformed(String),
}

impl RequestError {
    /// Whether a stream request failed because the api has no stream (an
    /// older api, or the cap on open streams): then poll instead.
    pub fn means_no_stream(&self) -> bool {
        matches!(self, RequestError::Refused { status, .. } if *status == 404 || *status == 405 || *status == 503)
    }
}

/// A client of one api replica.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base_url: String,
    authorization: Option<String>,
    requests: reqwest::Client,
    streams: reqwest::Client,
}

impl ApiClient {
    /// A client for `url`, authenticating with the content of
    /// `password_file` (none: no header; the api then says what is wrong).
    pub fn new(url: &str, password_file: Option<&Path>) -> Result<ApiClient, RequestError> {
        let bad_url = |reason: String| RequestError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = reqwest::Url::parse(url).map_err(|err| bad_url(err.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad_url(format!(
                "the scheme must be http or https, not {}",
                parsed.scheme()
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad_url("a base URL has no query or fragment".to_string()));
        }
        let authorization = match password_file {
            None => None,
            Some(path) => {
                let password = std::fs::read(path).map_err(|err| RequestError::PasswordFile {
                    path: path.display().to_string(),
                    reason: err.to_string(),
                })?;
                Some(base64::engine::general_purpose::STANDARD.encode(password))
            }
        };
        let build = |builder: reqwest::ClientBuilder| {
            builder
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .map_err(|err| RequestError::Unreachable {
                    url: url.to_string(),
                    reason: err.to_string(),
                })
        };
        Ok(ApiClient {
            base_url: url.trim_end_matches('/').to_string(),
            authorization,
            requests: build(reqwest::Client::builder().timeout(REQUEST_TIMEOUT))?,
            streams: build(reqwest::Client::builder().read_timeout(STREAM_READ_TIMEOUT))?,
        })
    }

    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let request = client.request(method, format!("{}{path}", self.base_url));
        match &self.authorization {
            Some(value) => request.header(reqwest::header::AUTHORIZATION, value),
            None => request,
        }
    }

    fn unreachable(&self, err: reqwest::Error) -> RequestError {
        RequestError::Unreachable {
            url: self.base_url.clone(),
            reason: error_chain(&err),
        }
    }

    /// `POST /internal/migrations` with `{"cmd", "verbose"}`: the answer of
    /// a `200`, or why there is none.
    pub async fn command(&self, cmd: &str, verbose: bool) -> Result<Value, RequestError> {
        let response = self
            .request(
                &self.requests,
                reqwest::Method::POST,
                "/internal/migrations",
            )
            .json(&json!({"cmd": cmd, "verbose": verbose}))
            .send()
            .await
            .map_err(|err| self.unreachable(err))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|err| self.unreachable(err))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if status >= 400 {
            return Err(refused(status, body, &text));
        }
        match body {
            Some(body @ Value::Object(_)) if body["success"] == Value::Bool(true) => Ok(body),
            _ => Err(RequestError::Malformed(text)),
        }
    }

    /// Opens `GET /internal/migrations/stream`, resuming after entry
    /// `last_event_id` when given.
    pub async fn open_stream(
        &self,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, RequestError> {
        let mut request = self
            .request(
                &self.streams,
                reqwest::Method::GET,
                "/internal/migrations/stream",
            )
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.map_err(|err| self.unreachable(err))?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response.text().await.unwrap_or_default();
            let body = serde_json::from_str(&text).ok();
            return Err(refused(status, body, &text));
        }
        Ok(EventStream {
            response,
            parser: SseParser::default(),
            ready: Vec::new(),
        })
    }
}

/// An open output stream.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    parser: SseParser,
    ready: Vec<SseEvent>,
}

impl EventStream {
    /// The next event; `Ok(None)` when the api ended the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, String> {
        loop {
            if !self.ready.is_empty() {
                return Ok(Some(self.ready.remove(0)));
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.ready = self.parser.push(&bytes),
                Ok(None) => return Ok(None),
                Err(err) => return Err(error_chain(&err)),
            }
        }
    }
}

fn refused(status: u16, body: Option<Value>, text: &str) -> RequestError {
    let message = body
        .as_ref()
        .and_then(|body| body["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().to_string());
    RequestError::Refused {
        status,
        message,
        body,
    }
}

/// The error and its sources in one line (reqwest's own text says only
/// "error sending request").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = cause_source(source);
    }
    text
}

fn cause_source<'a>(
    err: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    err.and_then(|err| err.source())
}
