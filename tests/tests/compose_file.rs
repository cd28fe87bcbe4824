//! The deployment files as structure: `docker-compose.yml` (parsed, not
//! grepped), the `Dockerfile` and `.dockerignore`, and `deploy/redis.conf`
//! loaded by a real `redis-server`.
//!
//! No Docker engine runs where the tests run, so this checks what breaks a
//! deployment silently: the services and what each one runs, SPEC 2 names
//! in their environment, the secret behind `INTERNAL_AUTH_PASSWORD_FILE`,
//! the health checks and grace periods, that the image builds and ships the
//! binaries compose runs, and that every file the sources embed (the Lua
//! scripts) is in the build context. Whether the image builds and the
//! containers start needs Docker. The routes compose relies on are tested
//! where they live: `/health` in `datastore_routes.rs`, the README's
//! compose walk-through (the example datastore and migrations) in
//! `docs_examples.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use migration_shared::migrations::Registry;
use migration_shared::test_support::free_port;
use migration_tests::binaries::workspace_root;
use migration_tests::options::SPEC_VARIABLES;
use serde_json::{json, Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// `docker-compose.yml` as JSON, aliases and `<<` merge keys resolved as
/// compose resolves them.
fn compose() -> Value {
    let documents = YamlLoader::load_from_str(&read("docker-compose.yml")).expect("valid YAML");
    assert_eq!(documents.len(), 1, "docker-compose.yml holds one document");
    yaml_to_json(&documents[0])
}

fn yaml_to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(value) => json!(value),
        Yaml::Integer(value) => json!(value),
        Yaml::Real(text) | Yaml::String(text) => json!(text),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(hash) => {
            let mut object = Map::new();
            // The mapping's own keys override the merged ones.
            if let Some(Value::Object(merged)) =
                hash.get(&Yaml::String("<<".into())).map(yaml_to_json)
            {
                object.extend(merged);
            }
            for (key, value) in hash {
                let key = key.as_str().expect("string keys").to_string();
                if key != "<<" {
                    object.insert(key, yaml_to_json(value));
                }
            }
            Value::Object(object)
        }
        Yaml::Alias(_) | Yaml::BadValue => panic!("unresolvable YAML node: {yaml:?}"),
    }
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    let service = &compose["services"][name];
    assert!(
        service.is_object(),
        "docker-compose.yml has no service `{name}`"
    );
    service
}

fn strings(value: &Value) -> Vec<String> {
    let items = value
        .as_array()
        .unwrap_or_else(|| panic!("a list: {value}"));
    items
        .iter()
        .map(|item| item.as_str().unwrap().into())
        .collect()
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    let map = service["environment"]
        .as_object()
        .expect("environment as a mapping");
    let text = |value: &Value| value.as_str().expect("quoted values").to_string();
    map.iter()
        .map(|(name, value)| (name.clone(), text(value)))
        .collect()
}

/// The repository file a service bind-mounts at `target`, and whether it
/// is mounted read-only.
fn mounted_file(service: &Value, target: &str) -> (PathBuf, bool) {
    strings(&service["volumes"])
        .iter()
        .find_map(|volume| {
            let parts: Vec<&str> = volume.split(':').collect();
            let source = parts[0].strip_prefix("./")?;
            (parts[1] == target)
                .then(|| (workspace_root().join(source), parts.get(2) == Some(&"ro")))
        })
        .unwrap_or_else(|| panic!("nothing from the repository is mounted at {target}"))
}

/// `30s`, `1m30s` (compose durations) in seconds.
fn seconds(duration: &str) -> u64 {
    let (minutes, rest) = duration.split_once('m').unwrap_or(("0", duration));
    let seconds = rest.strip_suffix('s').unwrap_or(rest);
    minutes.parse::<u64>().unwrap() * 60 + seconds.parse::<u64>().unwrap_or(0)
}

#[test]
fn compose_runs_redis_an_api_and_workers_from_one_image() {
    let compose = compose();
    let names: BTreeSet<&str> = compose["services"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, BTreeSet::from(["api", "redis", "worker"]));
    let (api, worker) = (service(&compose, "api"), service(&compose, "worker"));
    assert_eq!(strings(&api["command"]), ["migration-api"]);
    assert_eq!(strings(&worker["command"]), ["migration-worker"]);
    for (name, service) in [("api", api), ("worker", worker)] {
        assert_eq!(service["build"]["dockerfile"], "Dockerfile", "{name}");
        assert_eq!(service["image"], api["image"], "{name}: one image for both");
        assert_eq!(
            service["depends_on"]["redis"]["condition"], "service_healthy",
            "{name}"
        );
    }
    let replicas = worker["deploy"]["replicas"]
        .as_u64()
        .expect("deploy.replicas");
    assert!(replicas >= 2, "one worker takes over when another dies");
}

#[test]
fn api_and_workers_share_one_environment_of_spec_names() {
    let compose = compose();
    let (api, worker) = (service(&compose, "api"), service(&compose, "worker"));
    let (api_env, worker_env) = (environment(api), environment(worker));
    for variable in api_env.keys().chain(worker_env.keys()) {
        assert!(
            SPEC_VARIABLES.contains(&variable.as_str()),
            "{variable} is no SPEC 2 variable"
        );
    }
    // Same Redis, prefix and registry (a worker refuses a job whose registry
    // fingerprint differs); only the api, which serves routes, gets the
    // password.
    let api_only: Vec<&String> = api_env
        .keys()
        .filter(|name| !worker_env.contains_key(*name))
        .collect();
    assert_eq!(api_only, ["INTERNAL_AUTH_PASSWORD_FILE"]);
    for (variable, value) in &worker_env {
        assert_eq!(
            &api_env[variable], value,
            "api and worker disagree on {variable}"
        );
    }
    assert!(
        api_env["REDIS_URL"].starts_with("redis://redis:6379/"),
        "REDIS_URL names the redis service"
    );
    // Both binaries load MIGRATIONS_FILE at start and exit 2 on a bad one.
    for service in [api, worker] {
        let (path, read_only) = mounted_file(service, &api_env["MIGRATIONS_FILE"]);
        assert!(read_only, "{} is mounted read-only", path.display());
        let registry = Registry::load(Some(&path)).unwrap_or_else(|err| panic!("{err}"));
        assert!(
            registry.target_migration_index() > 1,
            "the example defines migrations"
        );
    }
}

#[test]
fn the_password_secret_is_the_file_the_api_reads() {
    let compose = compose();
    let api = service(&compose, "api");
    let path = environment(api)["INTERNAL_AUTH_PASSWORD_FILE"].clone();
    let secret = path
        .strip_prefix("/run/secrets/")
        .expect("a compose secret");
    assert_eq!(strings(&api["secrets"]), [secret]);
    let file = compose["secrets"][secret]["file"]
        .as_str()
        .expect("a file secret");
    let password = read(file.strip_prefix("./").unwrap());
    // An empty password file means "no password": every internal route 500.
    assert!(!password.trim().is_empty(), "the example password is empty");
}

#[test]
fn health_checks_and_grace_periods() {
    let compose = compose();
    let redis = service(&compose, "redis");
    assert_eq!(
        strings(&redis["healthcheck"]["test"]),
        ["CMD", "redis-cli", "ping"]
    );

    // The api listens on API_ADDR's default (compose leaves it unset),
    // publishes that port and checks itself there; `--fail` turns the
    // `503` of an unreachable Redis into an unhealthy container.
    let api = service(&compose, "api");
    assert!(!environment(api).contains_key("API_ADDR"));
    let port = migration_shared::config::DEFAULT_API_ADDR
        .rsplit(':')
        .next()
        .unwrap();
    assert_eq!(strings(&api["ports"]), [format!("{port}:{port}")]);
    let test = strings(&api["healthcheck"]["test"]);
    assert_eq!(
        test[..2],
        ["CMD", "curl"],
        "exec form; the image installs curl"
    );
    assert!(test.contains(&"--fail".to_string()), "{test:?}");
    assert_eq!(
        test.last().unwrap(),
        &format!("http://127.0.0.1:{port}/health")
    );

    // SIGTERM: the api drains, a worker runs to its next durable point and
    // hands the job back. Docker's default of 10 s is too short for that.
    for name in ["api", "worker"] {
        let grace = service(&compose, name)["stop_grace_period"]
            .as_str()
            .expect("stop_grace_period");
        assert!(seconds(grace) > 10, "{name}: stop_grace_period {grace}");
    }
}

/// A `redis-server` started with `deploy/redis.conf`; killed on drop
/// (before its temp dir, declared first, is removed).
struct ConfiguredRedis(Child);

impl Drop for ConfiguredRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn redis_runs_deploy_redis_conf_with_aof_and_noeviction() {
    let compose = compose();
    let redis = service(&compose, "redis");
    let config = strings(&redis["command"]).last().unwrap().clone();
    assert_eq!(
        mounted_file(redis, &config).0,
        workspace_root().join("deploy/redis.conf")
    );
    let data = strings(&redis["volumes"])
        .into_iter()
        .find(|volume| volume.ends_with(":/data"));
    let volume = data
        .expect("a volume on /data")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert!(
        compose["volumes"].get(&volume).is_some(),
        "/data is the named volume {volume}"
    );
    assert!(
        redis.get("ports").is_none(),
        "Redis is not published to the host"
    );

    // The file as Redis reads it: a bad directive stops redis-server.
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
    let mut server = ConfiguredRedis(child);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("redis-server refused deploy/redis.conf ({status})");
        }
        if let Ok(conn) = client.get_connection_with_timeout(Duration::from_millis(200)) {
            break conn;
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    for (name, expected) in [("appendonly", "yes"), ("maxmemory-policy", "noeviction")] {
        let (_, value): (String, String) = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(&mut conn)
            .unwrap();
        assert_eq!(value, expected, "CONFIG GET {name}");
    }
}

/// The Dockerfile's instructions per stage: (KEYWORD, arguments), with
/// continuation lines joined and comments dropped.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let mut stages: Vec<Vec<(String, String)>> = vec![Vec::new()];
    let mut pending = String::new();
    for line in read("Dockerfile").lines().map(str::trim) {
        if line.starts_with('#') || (pending.is_empty() && line.is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let (keyword, arguments) = pending.split_once(' ').unwrap_or((&pending, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .unwrap()
            .push((keyword, arguments.trim().to_string()));
        pending.clear();
    }
    stages.remove(0); // the global ARGs
    stages
}

fn instructions<'a>(stage: &'a [(String, String)], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, arguments)| arguments.as_str())
        .collect()
}

#[test]
fn the_image_builds_and_ships_the_binaries_compose_runs() {
    let stages = dockerfile_stages();
    let (build, runtime) = (&stages[0], stages.last().unwrap());
    let compose = compose();
    let builds: Vec<&str> = instructions(build, "RUN")
        .into_iter()
        .filter(|run| run.contains("cargo build"))
        .collect();
    let real_build = builds.last().expect("a cargo build");
    // COPY keeps the context's mtimes, older than the stub build of the
    // dependency layer: without the touch cargo ships the stub binaries.
    assert!(real_build.contains("touch"), "{real_build}");
    for name in ["api", "worker"] {
        let binary = &strings(&service(&compose, name)["command"])[0];
        assert!(
            real_build.contains(&format!("-p {binary}")),
            "the image does not build {binary}"
        );
        assert!(
            instructions(runtime, "COPY")
                .iter()
                .any(|copy| copy.starts_with("--from=build")
                    && copy.contains(&format!("/{binary} "))),
            "the runtime stage does not ship {binary}"
        );
    }
    // Cargo refuses a workspace with a member's manifest missing, also in
    // the dependency layer.
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find(|line| line.starts_with("members"))
        .unwrap();
    for member in members.split('"').skip(1).step_by(2) {
        assert!(
            instructions(build, "COPY")
                .contains(&format!("{member}/Cargo.toml {member}/Cargo.toml").as_str()),
            "the dependency layer does not copy {member}/Cargo.toml"
        );
    }
    let user = instructions(runtime, "USER").last().copied().expect("USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0:"),
        "runs as root: {user}"
    );
}

/// Every file the image's crates embed (`include_str!`, `include_bytes!`),
/// relative to the workspace.
fn embedded_files() -> BTreeSet<PathBuf> {
    fn visit(dir: &Path, found: &mut BTreeSet<PathBuf>) {
        for path in std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
        {
            if path.is_dir() {
                visit(&path, found);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let after = |marker| text.split(marker).skip(1);
                for rest in after("include_str!(\"").chain(after("include_bytes!(\"")) {
                    let literal = &rest[..rest.find('"').unwrap()];
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
    let root = workspace_root();
    let mut found = BTreeSet::new();
    for crate_dir in ["api", "shared", "worker"] {
        visit(&root.join(crate_dir).join("src"), &mut found);
    }
    found
        .into_iter()
        .map(|path| path.strip_prefix(&root).unwrap().to_path_buf())
        .collect()
}

#[test]
fn every_embedded_file_is_in_the_build_context() {
    let embedded = embedded_files();
    for script in std::fs::read_dir(workspace_root().join("shared/lua")).unwrap() {
        let script = Path::new("shared/lua").join(script.unwrap().file_name());
        assert!(
            embedded.contains(&script),
            "{} is not embedded",
            script.display()
        );
    }
    let stages = dockerfile_stages();
    // COPY <source>... <destination>, from the build context.
    let copied: Vec<&str> = instructions(&stages[0], "COPY")
        .into_iter()
        .flat_map(|copy| {
            let words: Vec<&str> = copy.split_whitespace().collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.trim_start_matches("**/").to_string())
        .collect();
    for file in &embedded {
        assert!(
            copied.iter().any(|copy| file.starts_with(copy)),
            "the build does not copy {}",
            file.display()
        );
        assert!(
            !ignored
                .iter()
                .any(|pattern| file.starts_with(pattern) || file.ends_with(pattern)),
            ".dockerignore leaves {} out of the build context",
            file.display()
        );
    }
}
