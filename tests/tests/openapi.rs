//! `GET /internal/openapi.json` (SPEC 9): the document lists every route the
//! router serves and nothing else, each documented route answers the real
//! binary with a status its operation lists, and the route needs the
//! internal password.

use std::collections::BTreeSet;
use std::sync::Arc;

use clap::Parser;
use migration_api::routes::openapi::documented_routes;
use migration_api::state::AppState;
use migration_shared::config::{Cli, Config};
use migration_shared::migrations::Registry;
use migration_tests::TestCluster;
use serde_json::{json, Value};

/// The paths the api's router serves, read from the router itself. axum
/// has no public route listing; its `Debug` output names every path, so a
/// route added to the router shows up here without anyone listing it.
fn router_paths() -> BTreeSet<String> {
    // Redis is never contacted: the connection is lazy and the router is
    // only printed (port 1: nothing listens, never the default 6379).
    let cli = Cli::try_parse_from(["migration-api", "--redis-url", "redis://127.0.0.1:1/0"])
        .expect("arguments");
    let config = Config::from_cli(cli).expect("config");
    let registry = Arc::new(Registry::load_at_start(&config).expect("registry"));
    let router = migration_api::startup::router(AppState::new(config, registry).expect("state"));
    let debug = format!("{router:?}");
    // The routes are in `path_router`; the `fallback_router` after it holds
    // axum's own catch-all paths, which no request is routed to by name.
    let routes = debug
        .split("fallback_router")
        .next()
        .expect("a Debug output");
    let paths: BTreeSet<String> = routes
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|text| text.starts_with('/'))
        .map(str::to_owned)
        .collect();
    // Guards against an axum whose Debug output no longer names paths.
    assert!(
        paths.contains("/health") && paths.contains("/internal/migrations"),
        "cannot read the router's paths from its Debug output: {debug}"
    );
    paths
}

#[tokio::test]
async fn the_document_lists_exactly_the_routers_paths() {
    let router = router_paths();
    let documented: BTreeSet<String> = documented_routes()
        .into_iter()
        .map(|(_, path)| path)
        .collect();
    let undocumented: Vec<_> = router.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routed but missing from the OpenAPI document: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&router).collect();
    assert!(
        unrouted.is_empty(),
        "in the OpenAPI document but not routed: {unrouted:?}"
    );
}

#[tokio::test]
async fn every_documented_route_answers_with_a_status_it_documents() {
    let cluster = TestCluster::spawn_app();
    let client = cluster.client();
    let (status, document) = client.get("/internal/openapi.json").await;
    assert_eq!(status, 200, "{document}");
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{document}"
    );
    // The served document is the generated one.
    let mut served: Vec<(String, String)> = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            served.push((method.to_uppercase(), path.clone()));
            let (status, body) = match method.as_str() {
                "get" => client.get(path).await,
                // an empty object: every POST route refuses it with a 400
                "post" => client.post_json(path, &json!({})).await,
                other => panic!("unexpected method {other} for {path}"),
            };
            let listed: Vec<&str> = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert!(
                listed.contains(&status.to_string().as_str()),
                "{method} {path} answered {status} {body}, documented: {listed:?}"
            );
            if method == "post" {
                assert_eq!(status, 400, "{path}: {body}");
            } else {
                assert_eq!(status, 200, "{path}: {body}");
            }
        }
    }
    let mut generated = documented_routes();
    generated.sort();
    served.sort();
    assert_eq!(served, generated);
}

#[tokio::test]
async fn the_document_needs_the_internal_password() {
    let cluster = TestCluster::spawn_app();
    let (status, body) = cluster
        .client()
        .without_auth()
        .get("/internal/openapi.json")
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["success"], Value::Bool(false));
    let (status, _) = cluster
        .client()
        .with_auth(migration_tests::client::Auth::password("wrong"))
        .get("/internal/openapi.json")
        .await;
    assert_eq!(status, 401);
}
