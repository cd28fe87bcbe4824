//! The deployment files, checked without Docker: `docker-compose.yml`,
//! `Dockerfile`, `.dockerignore`, `deploy/redis.conf`, the example secret and
//! the examples they mount or document (`examples/*.json`).
//!
//! No Docker engine runs where these tests run, so each check compares a
//! claim of those files with the thing it points at, the real one wherever
//! possible: variable names against what the real `migration-api --help`
//! lists, the health-check path against a running `migration-api` (private
//! Redis), `deploy/redis.conf` against a real `redis-server` started with it,
//! the example datastore against the real write and read routes and the
//! example migrations (the reference cascade run on the events the writer
//! stored), `docs/configuration.md` against `--help`'s defaults, the
//! Dockerfile against the workspace (members, targets, files the sources
//! embed). What stays unchecked: that the images build and the containers
//! start; that needs Docker.
//!
//! The binaries are run with the end-to-end harness (`migration_tests`): its
//! binary lookup, `--help` reader (`binaries::help_defaults`), SPEC variable list and [`TestCluster`],
//! pointed at the repository's example password file, as compose mounts it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use migration_shared::datastore::Event;
use migration_shared::keys::Keys;
use migration_shared::migrations::examples::migrate_in_memory;
use migration_shared::migrations::Registry;
use migration_shared::test_support::free_port;
use migration_tests::binaries::{help_defaults, workspace_root, Binary};
use migration_tests::options::SPEC_VARIABLES;
use migration_tests::TestCluster;
use serde_json::{json, Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// The write route's body limit (SPEC 4.3); the example must fit in one body.
const MAX_BODY_BYTES: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Reading the files
// ---------------------------------------------------------------------------

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// `docker-compose.yml` as JSON, with aliases and `<<` merge keys resolved
/// as docker compose resolves them.
fn compose() -> Value {
    let text = read("docker-compose.yml");
    let documents = YamlLoader::load_from_str(&text).expect("docker-compose.yml is valid YAML");
    assert_eq!(documents.len(), 1, "docker-compose.yml holds one document");
    yaml_to_json(&documents[0])
}

fn yaml_to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(value) => Value::Bool(*value),
        Yaml::Integer(value) => json!(value),
        Yaml::Real(text) => json!(text.parse::<f64>().expect("a YAML real is a number")),
        Yaml::String(text) => Value::String(text.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(hash) => {
            // Merged keys first; the mapping's own keys override them.
            let mut object = Map::new();
            for (key, value) in hash {
                if key.as_str() == Some("<<") {
                    let sources = match yaml_to_json(value) {
                        Value::Array(items) => items,
                        other => vec![other],
                    };
                    for source in sources {
                        let Value::Object(source) = source else {
                            panic!("a `<<` merge key must name a mapping");
                        };
                        for (name, value) in source {
                            object.entry(name).or_insert(value);
                        }
                    }
                }
            }
            for (key, value) in hash {
                if key.as_str() == Some("<<") {
                    continue;
                }
                let name = match yaml_to_json(key) {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                object.insert(name, yaml_to_json(value));
            }
            Value::Object(object)
        }
        Yaml::Alias(_) | Yaml::BadValue => panic!("unresolvable YAML node: {yaml:?}"),
    }
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Map<String, Value> {
    compose["services"][name]
        .as_object()
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

/// A service's `environment`, in either of compose's two forms.
fn environment(service: &Map<String, Value>) -> BTreeMap<String, String> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (name.clone(), value)
            })
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let text = item.as_str().expect("environment entries are strings");
                let (name, value) = text.split_once('=').unwrap_or((text, ""));
                (name.to_string(), value.to_string())
            })
            .collect(),
        Some(other) => panic!("unexpected environment: {other}"),
    }
}

/// Short-syntax volumes of a service: (source, target, read_only).
fn volumes(service: &Map<String, Value>) -> Vec<(String, String, bool)> {
    let Some(Value::Array(items)) = service.get("volumes") else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| {
            let text = item
                .as_str()
                .expect("volumes use the short syntax SOURCE:TARGET[:MODE]");
            let parts: Vec<&str> = text.split(':').collect();
            assert!(
                parts.len() == 2 || parts.len() == 3,
                "volume `{text}` is not SOURCE:TARGET[:MODE]"
            );
            let read_only = parts
                .get(2)
                .is_some_and(|mode| mode.split(',').any(|m| m == "ro"));
            (parts[0].to_string(), parts[1].to_string(), read_only)
        })
        .collect()
}

fn is_bind_mount(source: &str) -> bool {
    source.starts_with("./") || source.starts_with("../") || source.starts_with('/')
}

/// The repository file behind a bind-mount source such as `./deploy/x`.
fn repo_path(source: &str) -> PathBuf {
    let relative = source.strip_prefix("./").unwrap_or_else(|| {
        panic!("bind mount `{source}` must be relative to the repository (./...)")
    });
    workspace_root().join(relative)
}

fn string_list(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect(),
        other => panic!("expected a string or a list of strings, found {other}"),
    }
}

// ---------------------------------------------------------------------------
// The real binaries
// ---------------------------------------------------------------------------

/// The environment variables a binary's `--help` documents.
fn help_variables(binary: Binary) -> BTreeSet<String> {
    help_defaults(binary).into_keys().collect()
}

/// A private Redis and one `migration-api` on a free port, configured as
/// compose configures it where it matters here: the example password file
/// (clients send base64 of its exact content, as docs/routes.md tells
/// operators to), the api's own default key prefix, and `migrations_file` as
/// `MIGRATIONS_FILE`. Dropping it kills both.
fn compose_api(migrations_file: Option<PathBuf>) -> TestCluster {
    TestCluster::builder()
        .password_file(workspace_root().join("deploy/internal_auth_password"))
        .configure(move |options| {
            let options = options.unset("REDIS_KEY_PREFIX").rust_log("warn");
            match migrations_file {
                Some(path) => options.migrations_file(path),
                None => options,
            }
        })
        .start()
}

// ---------------------------------------------------------------------------
// docker-compose.yml
// ---------------------------------------------------------------------------

#[test]
fn compose_sets_only_real_configuration_variables() {
    let documented = help_variables(Binary::Api);
    for name in SPEC_VARIABLES {
        assert!(
            documented.contains(name),
            "migration-api --help does not list {name}: {documented:?}"
        );
    }
    // The worker shares the configuration (SPEC 2: same names for both
    // binaries); once its binary parses it, its --help must agree.
    let worker_documented = help_variables(Binary::Worker);
    if !worker_documented.is_empty() {
        assert_eq!(worker_documented, documented, "api and worker variables");
    }
    let compose = compose();
    for name in ["api", "worker"] {
        let env = environment(service(&compose, name));
        assert!(!env.is_empty(), "service {name} sets no environment");
        for variable in env.keys() {
            assert!(
                documented.contains(variable),
                "service {name} sets {variable}, which is no configuration variable \
                 (migration-api --help lists {documented:?})"
            );
        }
    }
}

#[test]
fn configuration_doc_has_every_variable_with_its_real_default() {
    let doc = read("docs/configuration.md");
    for (variable, default) in help_defaults(Binary::Api) {
        let heading = format!("### `{variable}`");
        let section = doc
            .split(&heading)
            .nth(1)
            .unwrap_or_else(|| panic!("docs/configuration.md has no section {heading}"));
        let line = section
            .lines()
            .find(|line| line.starts_with("- **Default:**"))
            .unwrap_or_else(|| panic!("{heading} names no default"));
        let documented = line
            .split('`')
            .nth(1)
            .filter(|_| !line.contains("**Default:** unset"));
        assert_eq!(
            documented,
            default.as_deref(),
            "docs/configuration.md and migration-api --help disagree on the default of {variable}"
        );
    }
}

#[test]
fn api_and_workers_share_redis_prefix_and_migrations() {
    let compose = compose();
    let api = environment(service(&compose, "api"));
    let worker = environment(service(&compose, "worker"));
    for (variable, value) in &worker {
        assert_eq!(
            api.get(variable),
            Some(value),
            "api and worker must agree on {variable}"
        );
    }
    for variable in ["REDIS_URL", "MIGRATIONS_FILE", "RUST_LOG", "LOG_FORMAT"] {
        assert!(worker.contains_key(variable), "worker sets no {variable}");
    }
    assert_eq!(api["REDIS_URL"], "redis://redis:6379/0");
    assert!(
        compose["services"]["redis"].is_object(),
        "REDIS_URL names the `redis` service"
    );
    let api_image = &service(&compose, "api")["image"];
    for name in ["api", "worker"] {
        let service = service(&compose, name);
        assert_eq!(
            service["depends_on"]["redis"]["condition"], "service_healthy",
            "{name} waits for a healthy redis"
        );
        assert_eq!(&service["image"], api_image, "one image");
        assert!(
            service.contains_key("build"),
            "{name} is built from the Dockerfile"
        );
    }
    assert_eq!(
        string_list(&service(&compose, "api")["command"]),
        ["migration-api"]
    );
    assert_eq!(
        string_list(&service(&compose, "worker")["command"]),
        ["migration-worker"]
    );
    let replicas = service(&compose, "worker")["deploy"]["replicas"]
        .as_u64()
        .expect("worker deploy.replicas");
    assert!(replicas >= 2, "at least two workers, so one can take over");
}

#[test]
fn the_password_secret_is_mounted_where_the_api_reads_it() {
    let compose = compose();
    let api = service(&compose, "api");
    let path = environment(api)["INTERNAL_AUTH_PASSWORD_FILE"].clone();
    let secret = path
        .strip_prefix("/run/secrets/")
        .unwrap_or_else(|| panic!("INTERNAL_AUTH_PASSWORD_FILE={path} is not a compose secret"));
    assert!(
        string_list(&api["secrets"])
            .iter()
            .any(|name| name == secret),
        "the api does not mount the secret `{secret}`"
    );
    let source = compose["secrets"][secret]["file"]
        .as_str()
        .unwrap_or_else(|| panic!("secret `{secret}` has no file"));
    let content = std::fs::read_to_string(repo_path(source)).expect("the example secret");
    assert!(
        !content.trim().is_empty(),
        "the example password must not be empty"
    );
    assert!(
        !environment(api).contains_key("OPENSLIDES_DEVELOPMENT"),
        "compose must not run in development mode (fixed, public password)"
    );
}

#[test]
fn api_port_is_the_default_api_addr_port() {
    let compose = compose();
    let api = service(&compose, "api");
    let default_port: u16 = migration_shared::config::DEFAULT_API_ADDR
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .port();
    assert_eq!(default_port, 9002);
    let listen_port = match environment(api).get("API_ADDR") {
        Some(addr) => addr.parse::<std::net::SocketAddr>().unwrap().port(),
        None => default_port,
    };
    let ports = string_list(&api["ports"]);
    assert_eq!(ports.len(), 1, "the api publishes one port: {ports:?}");
    let container_port: u16 = ports[0]
        .trim_end_matches("/tcp")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric container port");
    assert_eq!(container_port, listen_port, "published port: {}", ports[0]);
    let url = health_check_url(api);
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{listen_port}/"))
            || url.starts_with(&format!("http://localhost:{listen_port}/")),
        "the health check asks the api inside its own container: {url}"
    );
}

/// The URL the api's compose health check fetches.
fn health_check_url(api: &Map<String, Value>) -> String {
    let test = string_list(&api["healthcheck"]["test"]);
    assert_eq!(test[0], "CMD", "exec form, no shell needed: {test:?}");
    assert_eq!(test[1], "curl", "the runtime image installs curl: {test:?}");
    assert!(
        test.iter().any(|arg| arg == "--fail" || arg == "-f"),
        "curl must fail on a 503: {test:?}"
    );
    test.iter()
        .find(|arg| arg.starts_with("http://"))
        .cloned()
        .expect("a URL in the health check")
}

#[tokio::test]
async fn api_health_check_path_is_a_real_route() {
    let compose = compose();
    let url = health_check_url(service(&compose, "api"));
    let path = &url[url["http://".len()..].find('/').unwrap() + "http://".len()..];
    assert_eq!(path, "/health");
    let cluster = compose_api(None);
    // As curl sends it: no Authorization header.
    let (status, body) = cluster.client().without_auth().get(path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    assert_eq!(body["status"], "running", "{body}");
    assert_eq!(body["redis"], "ok", "{body}");
}

#[test]
fn mounted_files_exist_and_the_migrations_file_parses() {
    let compose = compose();
    let mut migrations_mounted = false;
    for name in ["api", "worker"] {
        let service = service(&compose, name);
        let env = environment(service);
        for (source, target, read_only) in volumes(service) {
            assert!(is_bind_mount(&source), "{name}: unexpected volume {source}");
            let path = repo_path(&source);
            assert!(
                path.is_file(),
                "{name} mounts {}, which does not exist",
                path.display()
            );
            assert!(
                read_only,
                "{name}: configuration is mounted read-only ({source})"
            );
            if env.get("MIGRATIONS_FILE") == Some(&target) {
                migrations_mounted = true;
                // Loaded as both binaries load it at start: a file they
                // refuse would stop every container with exit code 2.
                let registry = Registry::load(Some(&path))
                    .unwrap_or_else(|err| panic!("MIGRATIONS_FILE {source}: {err}"));
                assert!(
                    registry.target_migration_index() >= 2,
                    "{source} defines no migration"
                );
            }
        }
        assert!(
            env.contains_key("MIGRATIONS_FILE"),
            "{name} sets no MIGRATIONS_FILE"
        );
    }
    assert!(
        migrations_mounted,
        "MIGRATIONS_FILE must name a mounted file"
    );
}

#[test]
fn redis_service_persists_and_is_checked() {
    let compose = compose();
    let redis = service(&compose, "redis");
    let image = redis["image"].as_str().unwrap();
    assert!(
        image == "redis:7" || image.starts_with("redis:7."),
        "{image}"
    );
    let command = string_list(&redis["command"]);
    let mounts = volumes(redis);
    let config = mounts
        .iter()
        .find(|(_, target, _)| command.contains(target))
        .unwrap_or_else(|| panic!("redis is started with a mounted config file: {command:?}"));
    assert_eq!(config.0, "./deploy/redis.conf");
    let data = mounts
        .iter()
        .find(|(_, target, _)| target == "/data")
        .expect("a volume on /data");
    assert!(!is_bind_mount(&data.0), "/data is a named volume");
    assert!(
        compose["volumes"].get(&data.0).is_some(),
        "named volume `{}` is declared",
        data.0
    );
    assert!(
        redis.get("ports").is_none(),
        "Redis is not published to the host"
    );
    let test = string_list(&redis["healthcheck"]["test"]);
    assert_eq!(test, ["CMD", "redis-cli", "ping"]);
}

/// A `redis-server` started with `deploy/redis.conf` in a temp dir on a free
/// port; killed on drop.
struct ConfiguredRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for ConfiguredRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn deploy_redis_conf_enables_aof_and_forbids_eviction_in_a_real_redis() {
    let text = read("deploy/redis.conf");
    let directives: BTreeMap<&str, &str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(char::is_whitespace))
        .collect();
    assert_eq!(directives.get("appendonly"), Some(&"yes"));
    assert_eq!(directives.get("appendfsync"), Some(&"everysec"));
    assert_eq!(directives.get("maxmemory-policy"), Some(&"noeviction"));

    // The file as Redis reads it: a typo in a directive stops redis-server.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("redis-server")
        .arg(workspace_root().join("deploy/redis.conf"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    let mut server = ConfiguredRedis {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("redis-server refused deploy/redis.conf ({status})");
        }
        let connection = redis::Client::open(format!("redis://127.0.0.1:{}/0", server.port))
            .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(200)));
        if let Ok(connection) = connection {
            break connection;
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    for (name, expected) in [
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("maxmemory-policy", "noeviction"),
    ] {
        let (_, value): (String, String) = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(&mut conn)
            .unwrap();
        assert_eq!(value, expected, "CONFIG GET {name}");
    }
}

// ---------------------------------------------------------------------------
// Dockerfile and .dockerignore
// ---------------------------------------------------------------------------

/// One Dockerfile instruction: keyword (upper case) and its arguments, with
/// continuation lines joined and comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    arguments: String,
}

fn dockerfile() -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (pending.is_empty() && trimmed.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, arguments) = pending
            .split_once(char::is_whitespace)
            .unwrap_or((&pending, ""));
        instructions.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            arguments: arguments.trim().to_string(),
        });
        pending.clear();
    }
    instructions
}

/// The instructions of each stage, FROM included.
fn stages(instructions: &[Instruction]) -> Vec<&[Instruction]> {
    let starts: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, instruction)| instruction.keyword == "FROM")
        .map(|(index, _)| index)
        .collect();
    assert!(starts.len() >= 2, "a multi-stage Dockerfile");
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = starts.get(i + 1).copied().unwrap_or(instructions.len());
            &instructions[start..end]
        })
        .collect()
}

/// `ARG NAME=value` defaults before the first FROM.
fn global_args(instructions: &[Instruction]) -> BTreeMap<String, String> {
    instructions
        .iter()
        .take_while(|instruction| instruction.keyword != "FROM")
        .filter(|instruction| instruction.keyword == "ARG")
        .filter_map(|instruction| {
            let (name, value) = instruction.arguments.split_once('=')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut text = text.to_string();
    for (name, value) in args {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    text
}

fn workspace_members() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let line = manifest
        .lines()
        .find(|line| line.trim_start().starts_with("members"))
        .expect("members = [...] in Cargo.toml");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn version_pair(text: &str) -> (u32, u32) {
    let mut parts = text.trim_matches('"').split('.');
    let major = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a major version");
    let minor = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a minor version");
    (major, minor)
}

#[test]
fn dockerfile_builds_both_binaries_in_a_pinned_toolchain() {
    let instructions = dockerfile();
    let args = global_args(&instructions);
    let stages = stages(&instructions);
    let build = stages[0];
    let from = substitute(&build[0].arguments, &args);
    assert!(
        from.starts_with("rust:"),
        "build stage on the rust image: {from}"
    );
    let rust_version = args.get("RUST_VERSION").expect("ARG RUST_VERSION=...");
    let manifest = read("Cargo.toml");
    let required = manifest
        .lines()
        .find_map(|line| line.trim().strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml");
    assert!(
        version_pair(rust_version) >= version_pair(required),
        "RUST_VERSION {rust_version} is older than the workspace's rust-version {required}"
    );
    let runtime_from = substitute(&stages.last().unwrap()[0].arguments, &args);
    let release = args.get("DEBIAN_RELEASE").expect("ARG DEBIAN_RELEASE=...");
    assert!(
        from.contains(&format!("-{release}"))
            && runtime_from.starts_with(&format!("debian:{release}-slim")),
        "build ({from}) and runtime ({runtime_from}) on the same Debian release (glibc)"
    );

    let runs: Vec<&str> = build
        .iter()
        .filter(|instruction| instruction.keyword == "RUN")
        .map(|instruction| instruction.arguments.as_str())
        .collect();
    let builds: Vec<&&str> = runs
        .iter()
        .filter(|run| run.contains("cargo build"))
        .collect();
    assert_eq!(
        builds.len(),
        2,
        "dependencies first, then the sources: {runs:?}"
    );
    for run in &builds {
        for flag in [
            "--release",
            "--locked",
            "-p migration-api",
            "-p migration-worker",
        ] {
            assert!(run.contains(flag), "`{flag}` missing in: {run}");
        }
    }
    assert!(
        builds[1].contains("touch"),
        "sources are touched after COPY, or cargo keeps the stub binaries"
    );
}

#[test]
fn dockerfile_dependency_layer_knows_every_workspace_member() {
    let instructions = dockerfile();
    let build = stages(&instructions)[0];
    let stub_build = build
        .iter()
        .position(|instruction| {
            instruction.keyword == "RUN" && instruction.arguments.contains("cargo build")
        })
        .expect("the dependency build");
    let copied_before: Vec<&str> = build[..stub_build]
        .iter()
        .filter(|instruction| instruction.keyword == "COPY")
        .map(|instruction| instruction.arguments.as_str())
        .collect();
    let stub_script = &build[stub_build].arguments;
    for member in workspace_members() {
        assert!(
            copied_before
                .iter()
                .any(|copy| copy.starts_with(&format!("{member}/Cargo.toml "))),
            "the dependency layer does not copy {member}/Cargo.toml: cargo would refuse the workspace"
        );
        let manifest = read(&format!("{member}/Cargo.toml"));
        // Explicit target paths ([[bin]] path = ...) need a stub file too.
        for path in manifest
            .lines()
            .filter_map(|line| line.trim().strip_prefix("path = \""))
            .filter_map(|rest| rest.strip_suffix('"'))
            .filter(|path| path.ends_with(".rs"))
        {
            assert!(
                stub_script.contains(&format!("{member}/{path}")),
                "the dependency layer creates no stub {member}/{path}"
            );
        }
        if !manifest.contains("[[bin]]") {
            assert!(
                stub_script.contains("for crate in") && stub_script.contains(&format!(" {member}")),
                "the dependency layer creates no stub lib.rs for {member}"
            );
        }
    }
}

#[test]
fn dockerfile_runtime_is_slim_non_root_and_runs_the_api() {
    let instructions = dockerfile();
    let stages = stages(&instructions);
    let runtime = stages.last().unwrap();
    let user = runtime
        .iter()
        .rev()
        .find(|instruction| instruction.keyword == "USER")
        .expect("the runtime stage sets USER");
    let name = user.arguments.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0",
        "the runtime runs as root: USER {}",
        user.arguments
    );
    let copies: Vec<&str> = runtime
        .iter()
        .filter(|instruction| instruction.keyword == "COPY")
        .map(|instruction| instruction.arguments.as_str())
        .collect();
    for binary in ["migration-api", "migration-worker"] {
        assert!(
            copies.iter().any(|copy| copy.starts_with("--from=")
                && copy.contains(&format!("/{binary} "))
                && copy.ends_with("/usr/local/bin/")),
            "{binary} is not copied into /usr/local/bin: {copies:?}"
        );
    }
    let installs = runtime
        .iter()
        .filter(|instruction| instruction.keyword == "RUN")
        .map(|instruction| instruction.arguments.as_str())
        .find(|run| run.contains("apt-get install"))
        .expect("the runtime installs its packages");
    for package in ["ca-certificates", "curl"] {
        assert!(installs.contains(package), "runtime lacks {package}");
    }
    assert!(installs.contains("--no-install-recommends"));
    assert!(installs.contains("rm -rf /var/lib/apt/lists"));
    let expose = runtime
        .iter()
        .find(|instruction| instruction.keyword == "EXPOSE")
        .expect("EXPOSE");
    assert_eq!(expose.arguments, "9002");
    let cmd = runtime
        .iter()
        .rev()
        .find(|instruction| instruction.keyword == "CMD")
        .expect("CMD");
    assert_eq!(cmd.arguments, r#"["migration-api"]"#);
    assert!(
        !runtime
            .iter()
            .any(|instruction| instruction.keyword == "HEALTHCHECK"),
        "no image HEALTHCHECK: the worker runs this image and serves no HTTP"
    );
}

/// Every file the image's crates embed at compile time (`include_str!`,
/// `include_bytes!`, also through `concat!`), relative to the workspace.
fn embedded_files() -> BTreeSet<PathBuf> {
    fn visit(dir: &Path, found: &mut BTreeSet<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for marker in ["include_str!(", "include_bytes!("] {
                    for rest in text.split(marker).skip(1) {
                        let rest = rest.strip_prefix("concat!(").unwrap_or(rest);
                        let Some(literal) = rest.strip_prefix('"') else {
                            continue;
                        };
                        let literal = &literal[..literal.find('"').unwrap()];
                        let mut resolved = PathBuf::new();
                        for component in path.parent().unwrap().join(literal).components() {
                            match component {
                                Component::ParentDir => {
                                    resolved.pop();
                                }
                                Component::CurDir => {}
                                other => resolved.push(other),
                            }
                        }
                        found.insert(resolved);
                    }
                }
            }
        }
    }
    let root = workspace_root();
    let mut found = BTreeSet::new();
    for crate_dir in ["api", "shared", "worker"] {
        visit(&root.join(crate_dir).join("src"), &mut found);
    }
    found
        .into_iter()
        .map(|path| {
            path.strip_prefix(&root)
                .unwrap_or_else(|_| panic!("{} is outside the workspace", path.display()))
                .to_path_buf()
        })
        .collect()
}

#[test]
fn dockerfile_copies_every_source_and_embedded_file_into_the_build() {
    let instructions = dockerfile();
    let build = stages(&instructions)[0];
    let copied: BTreeSet<String> = build
        .iter()
        .filter(|instruction| {
            instruction.keyword == "COPY" && !instruction.arguments.starts_with("--from")
        })
        .flat_map(|instruction| {
            let parts: Vec<&str> = instruction.arguments.split_whitespace().collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|part| part.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for crate_dir in ["api", "shared", "worker"] {
        assert!(
            copied.contains(crate_dir),
            "the build does not copy {crate_dir}/"
        );
    }
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert!(ignored
        .iter()
        .any(|line| line == "**/target" || line == "target"));
    let embedded = embedded_files();
    assert!(
        embedded.iter().any(|path| path.starts_with("shared/lua")),
        "the scan finds the Lua scripts: {embedded:?}"
    );
    for file in embedded {
        assert!(
            workspace_root().join(&file).is_file(),
            "{} is embedded but missing",
            file.display()
        );
        assert!(
            copied.iter().any(|copy| file.starts_with(copy)),
            "{} is embedded by the sources but the Dockerfile does not copy it (copies {copied:?})",
            file.display()
        );
        for pattern in &ignored {
            let pattern = pattern.trim_start_matches("**/").trim_end_matches('/');
            assert!(
                !file.starts_with(pattern) && !file.to_string_lossy().ends_with(pattern),
                "{} is embedded but .dockerignore excludes it ({pattern})",
                file.display()
            );
        }
    }
    for copy in &copied {
        for pattern in &ignored {
            assert_ne!(
                copy, pattern,
                ".dockerignore excludes {copy}, which the build copies"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// examples/datastore.json
// ---------------------------------------------------------------------------

fn example_datastore() -> (String, Vec<Value>) {
    let text = read("examples/datastore.json");
    let requests: Vec<Value> =
        serde_json::from_str(&text).expect("examples/datastore.json is a JSON array");
    (text, requests)
}

/// The models the example should leave, by SPEC section 5's rules, computed
/// independently of the writer: fqid -> (fields, last position, deleted).
fn expected_models(requests: &[Value]) -> BTreeMap<String, (Map<String, Value>, u64, bool)> {
    let mut models: BTreeMap<String, (Map<String, Value>, u64, bool)> = BTreeMap::new();
    for (index, request) in requests.iter().enumerate() {
        let position = index as u64 + 1;
        for event in request["events"].as_array().unwrap() {
            let fqid = event["fqid"].as_str().unwrap().to_string();
            match event["type"].as_str().unwrap() {
                "create" => {
                    let fields = event["fields"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .filter(|(_, value)| !value.is_null())
                        .map(|(name, value)| (name.clone(), value.clone()))
                        .collect();
                    assert!(models.insert(fqid, (fields, position, false)).is_none());
                }
                kind => {
                    let model = models.get_mut(&fqid).unwrap();
                    model.1 = position;
                    match kind {
                        "delete" => model.2 = true,
                        "restore" => model.2 = false,
                        "update" => {
                            for (name, value) in event["fields"].as_object().unwrap() {
                                if value.is_null() {
                                    model.0.remove(name);
                                } else {
                                    model.0.insert(name.clone(), value.clone());
                                }
                            }
                            let lists = &event["list_fields"];
                            if let Some(add) = lists["add"].as_object() {
                                for (name, values) in add {
                                    let list = model.0.entry(name.clone()).or_insert(json!([]));
                                    let list = list.as_array_mut().unwrap();
                                    for value in values.as_array().unwrap() {
                                        if !list.contains(value) {
                                            list.push(value.clone());
                                        }
                                    }
                                }
                            }
                            if let Some(remove) = lists["remove"].as_object() {
                                for (name, values) in remove {
                                    if let Some(Value::Array(list)) = model.0.get_mut(name) {
                                        list.retain(|value| {
                                            !values.as_array().unwrap().contains(value)
                                        });
                                    }
                                }
                            }
                        }
                        other => panic!("unknown event type {other}"),
                    }
                }
            }
        }
    }
    models
}

#[test]
fn example_datastore_fits_one_body_and_suits_the_example_migrations() {
    let (text, requests) = example_datastore();
    assert!(
        text.len() < MAX_BODY_BYTES,
        "{} bytes: over the write route's 1 MiB limit",
        text.len()
    );
    assert!(requests.len() >= 200, "a few hundred positions");
    assert_eq!(
        requests[0]["migration_index"], 1,
        "the migrations have work to do"
    );
    assert!(
        requests[1..]
            .iter()
            .all(|request| request.get("migration_index").is_none()),
        "only the first request sets the migration index"
    );
    let events: Vec<&Value> = requests
        .iter()
        .flat_map(|request| request["events"].as_array().unwrap())
        .collect();
    let kinds: BTreeSet<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["create", "delete", "restore", "update"])
    );
    assert!(events.iter().any(|e| e["fields"]
        .as_object()
        .is_some_and(|fields| fields.values().any(Value::is_null))));
    assert!(events.iter().any(|e| e["list_fields"]["remove"]
        .as_object()
        .is_some_and(|remove| !remove.is_empty())));

    // 0002 renames motion.title and 0004 requires the renamed field on every
    // motion create: every motion create needs a title.
    let motion_creates: Vec<&&Value> = events
        .iter()
        .filter(|e| e["type"] == "create" && e["fqid"].as_str().unwrap().starts_with("motion/"))
        .collect();
    assert!(motion_creates.len() >= 100);
    for create in &motion_creates {
        assert!(create["fields"]["title"].is_string(), "{create}");
    }
    // 0003 has work: some motions carry `legacy`, most lack `weight`. A
    // `legacy` update always comes with another field, so no position of
    // the example loses every event to the migration.
    assert!(motion_creates
        .iter()
        .any(|e| e["fields"].get("legacy").is_some()));
    assert!(motion_creates
        .iter()
        .any(|e| e["fields"].get("weight").is_none()));
    for event in &events {
        if event["type"] == "update"
            && event["fqid"].as_str().unwrap().starts_with("motion/")
            && event["fields"].get("legacy").is_some()
        {
            assert!(event["fields"].as_object().unwrap().len() >= 2, "{event}");
        }
    }
    let collections: BTreeSet<&str> = events
        .iter()
        .map(|e| e["fqid"].as_str().unwrap().split('/').next().unwrap())
        .collect();
    for collection in ["organization", "meeting", "user", "motion", "agenda_item"] {
        assert!(
            collections.contains(collection),
            "no {collection} in the example"
        );
    }
}

/// The repository file compose mounts as the api's `MIGRATIONS_FILE`.
fn compose_migrations_file() -> PathBuf {
    let compose = compose();
    let api = service(&compose, "api");
    let target = environment(api)["MIGRATIONS_FILE"].clone();
    let (source, _, _) = volumes(api)
        .into_iter()
        .find(|(_, mounted, _)| *mounted == target)
        .unwrap_or_else(|| panic!("MIGRATIONS_FILE {target} is not mounted"));
    repo_path(&source)
}

#[tokio::test]
async fn example_datastore_is_accepted_by_the_real_write_route_and_reads_back() {
    let (text, requests) = example_datastore();
    // Configured as in compose, so the example is written as an operator
    // following the quickstart writes it.
    let cluster = compose_api(Some(compose_migrations_file()));
    let api = cluster.client();

    let (status, body) = api.post_raw("/internal/datastore/writer/write", text).await;
    assert_eq!(status, 200, "{body}\n{}", cluster.api().log());
    let positions: Vec<u64> = body["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=requests.len() as u64).collect::<Vec<_>>());

    // Every collection read back equals what the events say.
    let expected = expected_models(&requests);
    let collections: BTreeSet<&str> = expected
        .keys()
        .map(|fqid| fqid.split('/').next().unwrap())
        .collect();
    for collection in collections {
        let (status, body) = api.get_all(collection).await;
        assert_eq!(status, 200, "{body}");
        let models = body["models"].as_object().unwrap();
        let live: BTreeMap<String, Value> = expected
            .iter()
            .filter(|(fqid, (_, _, deleted))| {
                !deleted && fqid.starts_with(&format!("{collection}/"))
            })
            .map(|(fqid, (fields, position, _))| {
                let mut model = fields.clone();
                model.insert("meta_position".into(), json!(position));
                (
                    fqid.split('/').nth(1).unwrap().to_string(),
                    Value::Object(model),
                )
            })
            .collect();
        let read: BTreeMap<String, Value> = models.clone().into_iter().collect();
        assert_eq!(read, live, "collection {collection}");
    }

    // A few models by name, as an operator would look at them.
    let (status, body) = api.get_model("organization/1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["model"]["active_meeting_ids"],
        json!([1, 2]),
        "meeting 3 was archived"
    );
    assert_eq!(body["model"]["meta_position"], json!(requests.len()));
    let deleted = expected
        .iter()
        .find(|(fqid, (_, _, deleted))| *deleted && fqid.starts_with("motion/"))
        .map(|(fqid, _)| fqid.clone())
        .expect("the example deletes motions for good");
    let (status, body) = api.get_model(&deleted).await;
    assert_eq!(status, 404, "{deleted} is deleted: {body}");
    // The client keeps a body that is no JSON as a string; SPEC answers are
    // JSON objects.
    assert!(body.is_object(), "a JSON answer: {body}");
    let restored = requests
        .iter()
        .flat_map(|request| request["events"].as_array().unwrap())
        .find(|event| {
            event["type"] == "restore" && event["fqid"].as_str().unwrap().starts_with("motion/")
        })
        .map(|event| event["fqid"].as_str().unwrap().to_string())
        .expect("the example restores motions");
    let (status, body) = api.get_model(&restored).await;
    assert_eq!(status, 200, "{restored} is restored: {body}");
    assert!(
        body["model"]["title"].is_string(),
        "restored with its fields: {body}"
    );
}

#[tokio::test]
async fn example_migrations_succeed_on_the_example_datastore() {
    let (text, requests) = example_datastore();
    let migrations_file = compose_migrations_file();
    let registry = Registry::load(Some(&migrations_file)).expect("the example migrations load");
    let cluster = compose_api(Some(migrations_file));
    let (status, body) = cluster
        .client()
        .post_raw("/internal/datastore/writer/write", text)
        .await;
    assert_eq!(status, 200, "{body}");

    // The events exactly as the writer stored them (default prefix `mig`),
    // the input of the worker's engine.
    let keys = Keys::new(migration_shared::config::DEFAULT_KEY_PREFIX);
    let mut conn = cluster.redis_connection();
    let live_mi: u64 = redis::cmd("GET")
        .arg(keys.migration_index())
        .query(&mut conn)
        .unwrap();
    assert_eq!(live_mi, 1, "the example is stored at MI 1");
    assert!(
        registry.target_migration_index() > live_mi,
        "there is work to do"
    );
    let stored: BTreeMap<u64, String> = redis::cmd("HGETALL")
        .arg(keys.events())
        .query(&mut conn)
        .unwrap();
    assert_eq!(stored.len(), requests.len());
    let positions: Vec<Vec<Event>> = stored
        .values()
        .map(|events| serde_json::from_str(events).expect("stored events"))
        .collect();

    // The reference run of the MI-first cascade (what migrate + finalize
    // must produce): it must succeed, and every motion must come out with
    // `name` instead of `title`, without `legacy`, with a `weight`.
    let run = migrate_in_memory(&registry, live_mi, &positions)
        .unwrap_or_else(|err| panic!("the example migrations fail on the example: {err}"));
    assert!(
        run.positions.iter().all(|events| !events.is_empty()),
        "no position of the example loses all its events"
    );
    let expected = expected_models(&requests);
    let mut motions = 0;
    for (fqid, model) in &run.models {
        let fqid = fqid.to_string();
        let (fields, _, deleted) = &expected[&fqid];
        assert_eq!(model.deleted, *deleted, "{fqid}");
        let mut fields = fields.clone();
        if fqid.starts_with("motion/") {
            motions += 1;
            let title = fields.remove("title").expect("every motion has a title");
            fields.insert("name".into(), title);
            fields.remove("legacy");
            fields.entry("weight").or_insert(json!(0));
        }
        let migrated: Map<String, Value> = model
            .fields
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        assert_eq!(migrated, fields, "{fqid} after the example migrations");
    }
    assert_eq!(run.models.len(), expected.len());
    assert!(motions >= 100);
}
