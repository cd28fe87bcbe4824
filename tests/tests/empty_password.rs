//! SPEC 3: a password file that is empty, or holds only a newline, is no
//! password. Every `/internal/` route family (writer, reader `get` and
//! `get_all`, the migration route) answers `500` through the real binary,
//! whatever `Authorization` header is sent (none, empty, the base64 of the
//! file's content, anything else), and nothing is written or queued. The
//! health routes still answer.

use migration_tests::requests::{assert_error, create};
use migration_tests::{write_request, Auth, TestCluster};
use redis::Commands;
use serde_json::{json, Value};

/// One valid request per internal route family.
fn internal_requests() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/internal/datastore/writer/write",
            write_request(json!([create("motion/1", json!({"title": "A"}))])),
        ),
        (
            "/internal/datastore/reader/get",
            json!({"fqid": "motion/1"}),
        ),
        (
            "/internal/datastore/reader/get_all",
            json!({"collection": "motion"}),
        ),
        ("/internal/migrations", json!({"cmd": "progress"})),
        ("/internal/migrations/", json!({"cmd": "stats"})),
        ("/internal/migrations", json!({"cmd": "migrate"})),
    ]
}

/// Every header a client could send to an api whose password file holds
/// `content`.
fn headers(content: &str) -> Vec<Auth> {
    vec![
        Auth::None,
        Auth::Raw(String::new()),
        Auth::Raw(" ".into()),
        Auth::password(content),
        Auth::password(content.trim_end_matches('\n')),
        Auth::password("\n"),
        Auth::password("openslides"),
        Auth::Raw("not base64!".into()),
    ]
}

async fn assert_no_route_lets_anyone_in(content: &'static str) {
    let cluster = TestCluster::builder().password(content).start();
    let client = cluster.client();
    for auth in headers(content) {
        for (path, body) in internal_requests() {
            let (status, answer) = client.with_auth(auth.clone()).post_json(path, &body).await;
            let message = assert_error(status, &answer, 500);
            assert!(
                message.contains("password"),
                "{content:?}, {auth:?}, {path}: {message}"
            );
        }
    }
    // Nothing was written, nothing queued.
    assert_eq!(cluster.stored_position(), None);
    let current: Option<String> = cluster
        .redis_connection()
        .get(cluster.keys().current_job())
        .unwrap();
    assert_eq!(current, None, "a refused migrate queued a job");
    // Health needs no password and still answers.
    let (status, body) = client.without_auth().health().await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_empty_password_file_is_500_on_every_internal_route() {
    assert_no_route_lets_anyone_in("").await;
}

#[tokio::test]
async fn a_password_file_holding_only_a_newline_is_500_on_every_internal_route() {
    assert_no_route_lets_anyone_in("\n").await;
}

#[tokio::test]
async fn a_password_file_holding_only_a_crlf_is_500_on_every_internal_route() {
    assert_no_route_lets_anyone_in("\r\n").await;
}
