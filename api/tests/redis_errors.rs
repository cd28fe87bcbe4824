//! The one classification of Redis errors (`api/src/error.rs`) against the
//! errors a real Redis gives: only a Redis that cannot be reached is
//! "unreachable"; every other failure names its cause (SPEC 4.3).

use axum::http::StatusCode;
use migration_api::error::{classify_redis_error, ApiError, RedisFailure};
use migration_shared::test_support::RedisServer;

fn error_of<T: redis::FromRedisValue + std::fmt::Debug>(
    conn: &mut redis::Connection,
    cmd: &mut redis::Cmd,
) -> redis::RedisError {
    cmd.query::<T>(conn).expect_err("the command must fail")
}

/// The status and message a route answers for `err`.
fn answer_for(err: redis::RedisError) -> (StatusCode, String) {
    let api: ApiError = err.into();
    let message = api.to_string();
    assert!(!message.is_empty());
    (api.status(), message)
}

fn config_set(conn: &mut redis::Connection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(conn)
        .unwrap();
}

#[test]
fn every_redis_failure_names_its_cause() {
    let mut redis = RedisServer::start();
    let mut conn = redis.connection();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut conn)
        .unwrap();

    let wrong = error_of::<Option<String>>(&mut conn, redis::cmd("HGET").arg("k").arg("f"));
    assert!(matches!(
        classify_redis_error(&wrong),
        RedisFailure::WrongType(_)
    ));
    let (status, message) = answer_for(wrong);
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        message.contains("wrong type") && !message.contains("unreachable"),
        "{message}"
    );

    let script = error_of::<()>(
        &mut conn,
        redis::cmd("EVAL").arg("local x = nil; return x + 1").arg(0),
    );
    assert!(
        matches!(classify_redis_error(&script), RedisFailure::ScriptFailed(_)),
        "{script:?}"
    );
    let (status, message) = answer_for(script);
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        message.contains("script failed") && !message.contains("unreachable"),
        "{message}"
    );

    config_set(&mut conn, "maxmemory", "1");
    let oom = error_of::<()>(&mut conn, redis::cmd("SET").arg("k2").arg("v"));
    config_set(&mut conn, "maxmemory", "0");
    let (status, message) = answer_for(oom);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        message.contains("out of memory") && !message.contains("unreachable"),
        "{message}"
    );

    // A replica (of a master that does not exist) refuses writes.
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    let read_only = error_of::<()>(&mut conn, redis::cmd("SET").arg("k3").arg("v"));
    let (status, message) = answer_for(read_only);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        message.contains("cannot serve") && message.contains("read only"),
        "{message}"
    );

    redis.stop();
    let Err(down) = redis::Client::open(redis.url()).unwrap().get_connection() else {
        panic!("redis is stopped, yet a connection was made");
    };
    assert!(matches!(
        classify_redis_error(&down),
        RedisFailure::Unreachable(_)
    ));
    let (status, message) = answer_for(down);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(message.contains("unreachable"), "{message}");
}
