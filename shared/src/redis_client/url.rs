//! `REDIS_URL`: which kind of deployment, told by the scheme alone (SPEC 2, 8).
//!
//! `redis://` and `rediss://` are the redis crate's own single-server URLs
//! and are handed to it unchanged. `redis+sentinel://` and
//! `redis+cluster://` name several hosts in one authority
//! (`h1:26379,h2:26379`), which no URL parser accepts, so they are split
//! here into the lists the crate's Sentinel and Cluster clients take. This
//! is only parsing: finding the primary and the slot map is the crate's job.
//!
//! Credentials (`user:password@`) in a Sentinel URL are those of the Redis
//! nodes, not of the sentinels (which usually run without a password, and
//! refuse an `AUTH` they do not expect). Error messages never repeat a
//! password: they show the URL through [`redact`].

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

/// The default port of a sentinel, when a host of a Sentinel URL has none.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;
/// The default port of a Redis node, when a host of a Cluster URL has none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// The schemes `REDIS_URL` accepts, as the error message lists them.
const SUPPORTED: &str = "redis://, rediss://, redis+sentinel:// or redis+cluster://";

/// Where the product's Redis is, parsed from `REDIS_URL`.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One server (`redis://`, `rediss://` for TLS, `redis+unix://` or
    /// `unix://` for a Unix socket).
    Single(ConnectionInfo),
    /// A primary that Sentinel names (`redis+sentinel://`).
    Sentinel(SentinelTarget),
    /// A Redis Cluster (`redis+cluster://`).
    Cluster(ClusterTarget),
}

/// `redis+sentinel://[user:password@]h1:26379,h2:26379/<service>[/<db>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The sentinels to ask, in order.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub service: String,
    /// The database on the primary.
    pub db: i64,
    /// The Redis nodes' user (ACL), if any.
    pub username: Option<String>,
    /// The Redis nodes' password, if any.
    pub password: Option<String>,
}

/// `redis+cluster://[user:password@]h1:7000,h2:7001`: some nodes of the
/// Cluster, from which the crate learns the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    /// The seed nodes.
    pub nodes: Vec<(String, u16)>,
    /// The nodes' user (ACL), if any.
    pub username: Option<String>,
    /// The nodes' password, if any.
    pub password: Option<String>,
}

impl ClusterTarget {
    /// The seed nodes as the crate's connection infos (with credentials).
    pub fn node_infos(&self) -> Vec<ConnectionInfo> {
        self.nodes
            .iter()
            .map(|(host, port)| {
                let mut settings = redis::RedisConnectionInfo::default();
                if let Some(username) = &self.username {
                    settings = settings.set_username(username);
                }
                if let Some(password) = &self.password {
                    settings = settings.set_password(password);
                }
                ConnectionAddr::Tcp(host.clone(), *port)
                    .into_connection_info()
                    .expect("a TCP address is always a valid connection info")
                    .set_redis_settings(settings)
            })
            .collect()
    }
}

/// Why a `REDIS_URL` is unusable; the message names the problem, never the
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid URL '{url}': {problem}")]
pub struct RedisUrlError {
    /// The URL with its password replaced by `***`.
    pub url: String,
    /// What is wrong.
    pub problem: String,
}

impl RedisTarget {
    /// Parses `REDIS_URL`.
    pub fn parse(url: &str) -> Result<RedisTarget, RedisUrlError> {
        let fail = |problem: String| RedisUrlError {
            url: redact(url),
            problem,
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(fail(format!("no scheme (expected {SUPPORTED})")));
        };
        match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => url
                .into_connection_info()
                .map(RedisTarget::Single)
                .map_err(|err| fail(err.to_string())),
            "redis+sentinel" => {
                let parts = split_multi_host(rest, DEFAULT_SENTINEL_PORT).map_err(fail)?;
                let mut segments = parts.path.split('/');
                let service = segments.next().unwrap_or_default();
                if service.is_empty() {
                    return Err(fail(
                        "no service name (expected redis+sentinel://h1:26379,h2:26379/<service>[/<db>])".into(),
                    ));
                }
                let db = match segments.next() {
                    None | Some("") => 0,
                    Some(db) => db
                        .parse::<i64>()
                        .ok()
                        .filter(|db| *db >= 0)
                        .ok_or_else(|| {
                            fail(format!("database '{db}' is not a non-negative integer"))
                        })?,
                };
                if segments.any(|segment| !segment.is_empty()) {
                    return Err(fail(
                        "too many path segments (expected /<service>[/<db>])".into(),
                    ));
                }
                Ok(RedisTarget::Sentinel(SentinelTarget {
                    sentinels: parts.hosts,
                    service: service.to_string(),
                    db,
                    username: parts.username,
                    password: parts.password,
                }))
            }
            "redis+cluster" => {
                let parts = split_multi_host(rest, DEFAULT_REDIS_PORT).map_err(fail)?;
                if !matches!(parts.path.as_str(), "" | "0") {
                    return Err(fail(format!(
                        "a Redis Cluster has only database 0, not '/{}'",
                        parts.path
                    )));
                }
                Ok(RedisTarget::Cluster(ClusterTarget {
                    nodes: parts.hosts,
                    username: parts.username,
                    password: parts.password,
                }))
            }
            other => Err(fail(format!(
                "unsupported scheme '{other}' (expected {SUPPORTED})"
            ))),
        }
    }

    /// A short description for logs: the kind and the hosts, no password.
    pub fn describe(&self) -> String {
        let hosts = |hosts: &[(String, u16)]| {
            hosts
                .iter()
                .map(|(host, port)| format!("{host}:{port}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            RedisTarget::Single(info) => format!("single server {}", info.addr()),
            RedisTarget::Sentinel(target) => format!(
                "Sentinel service '{}' via {}",
                target.service,
                hosts(&target.sentinels)
            ),
            RedisTarget::Cluster(target) => format!("Redis Cluster via {}", hosts(&target.nodes)),
        }
    }
}

/// The parts of a multi-host URL after the scheme.
struct MultiHost {
    hosts: Vec<(String, u16)>,
    username: Option<String>,
    password: Option<String>,
    /// The path without its leading `/`.
    path: String,
}

fn split_multi_host(rest: &str, default_port: u16) -> Result<MultiHost, String> {
    if rest.contains(['?', '#']) {
        return Err("query parameters and fragments are not supported here".into());
    }
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path.trim_end_matches('/')),
        None => (rest, ""),
    };
    let (userinfo, host_list) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => credentials(userinfo)?,
    };
    let hosts = host_list
        .split(',')
        .map(|host| host_and_port(host, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MultiHost {
        hosts,
        username,
        password,
        path: path.to_string(),
    })
}

/// Percent-decodes `user:password` the way the crate does for `redis://`.
fn credentials(userinfo: &str) -> Result<(Option<String>, Option<String>), String> {
    let info = format!("redis://{userinfo}@127.0.0.1/")
        .into_connection_info()
        .map_err(|_| "the user or password part does not parse".to_string())?;
    let settings = info.redis_settings();
    Ok((
        settings.username().map(str::to_string),
        settings.password().map(str::to_string),
    ))
}

fn host_and_port(entry: &str, default_port: u16) -> Result<(String, u16), String> {
    let entry = entry.trim();
    let (host, port) = if let Some(bracketed) = entry.strip_prefix('[') {
        // [::1]:7000
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("host '{entry}' has an unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("host '{entry}' does not parse")),
        }
    } else {
        match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    if host.is_empty() {
        return Err("empty host (expected host:port, separated by commas)".into());
    }
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("port '{port}' of host '{host}' is not a port number"))?,
    };
    Ok((host.to_string(), port))
}

/// The URL with the password of its user part replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => userinfo.to_string(),
            };
            format!("{scheme}://{user}@{hosts}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> SentinelTarget {
        match RedisTarget::parse(url).unwrap() {
            RedisTarget::Sentinel(target) => target,
            other => panic!("{url} is not a Sentinel URL: {other:?}"),
        }
    }

    fn cluster(url: &str) -> ClusterTarget {
        match RedisTarget::parse(url).unwrap() {
            RedisTarget::Cluster(target) => target,
            other => panic!("{url} is not a Cluster URL: {other:?}"),
        }
    }

    fn problem(url: &str) -> String {
        RedisTarget::parse(url).unwrap_err().to_string()
    }

    #[test]
    fn single_server_urls_are_the_crates_own() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "redis://:pw@localhost/3",
            "rediss://redis.example:6380/0",
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock",
        ] {
            assert!(matches!(
                RedisTarget::parse(url).unwrap(),
                RedisTarget::Single(_)
            ));
        }
        let RedisTarget::Single(info) = RedisTarget::parse("rediss://h:6380/2").unwrap() else {
            unreachable!()
        };
        assert!(
            matches!(info.addr(), ConnectionAddr::TcpTls { host, port: 6380, .. } if host == "h")
        );
        assert_eq!(info.redis_settings().db(), 2);
    }

    #[test]
    fn sentinel_urls_name_hosts_service_and_db() {
        let target = sentinel("redis+sentinel://h1:26379,h2:26380/mymaster");
        assert_eq!(
            target.sentinels,
            vec![("h1".to_string(), 26379), ("h2".to_string(), 26380)]
        );
        assert_eq!(target.service, "mymaster");
        assert_eq!(target.db, 0);
        assert_eq!(target.password, None);

        let target = sentinel("redis+sentinel://:s%40cret@h1,[::1]:5000/svc/4/");
        assert_eq!(
            target.sentinels,
            vec![("h1".to_string(), 26379), ("::1".to_string(), 5000)]
        );
        assert_eq!(target.db, 4);
        assert_eq!(target.password.as_deref(), Some("s@cret"));
    }

    #[test]
    fn cluster_urls_name_the_seed_nodes() {
        let target = cluster("redis+cluster://a:7000,b:7001");
        assert_eq!(
            target.nodes,
            vec![("a".to_string(), 7000), ("b".to_string(), 7001)]
        );
        let target = cluster("redis+cluster://user:pw@a/");
        assert_eq!(target.nodes, vec![("a".to_string(), 6379)]);
        assert_eq!(target.username.as_deref(), Some("user"));
        assert_eq!(target.password.as_deref(), Some("pw"));
        assert_eq!(
            target.node_infos()[0].redis_settings().password(),
            Some("pw")
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(problem("localhost:6379").contains("no scheme"));
        assert!(problem("http://h:1").contains("unsupported scheme 'http'"));
        assert!(problem("redis+sentinel://h1:26379").contains("no service name"));
        assert!(problem("redis+sentinel://h1:26379/").contains("no service name"));
        assert!(problem("redis+sentinel://h1:26379/svc/x").contains("database 'x'"));
        assert!(problem("redis+sentinel://h1:26379/svc/1/2").contains("too many"));
        assert!(problem("redis+sentinel://h1:0/svc").contains("port '0'"));
        assert!(problem("redis+sentinel://h1:26379,,h2/svc").contains("empty host"));
        assert!(problem("redis+cluster://h1:70000").contains("port '70000'"));
        assert!(problem("redis+cluster://h1:7000/3").contains("only database 0"));
        assert!(problem("redis+cluster://h1:7000?x=1").contains("query"));
        assert!(problem("redis://:pw@h:notaport/0").starts_with("invalid URL"));
    }

    #[test]
    fn errors_never_show_the_password() {
        let message = problem("redis+sentinel://user:topsecret@h1:26379");
        assert!(!message.contains("topsecret"), "{message}");
        assert!(message.contains("user:***@h1:26379"), "{message}");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
    }
}
