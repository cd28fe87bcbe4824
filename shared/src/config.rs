//! Configuration: SPEC section 2, parsed once at start into [`Config`].
//!
//! Both binaries accept the same variables (and mirror them as flags, so
//! `--help` documents them). Nothing else in the code base reads the
//! environment: the binaries call [`Config::from_args`] once and pass the
//! typed result down. A bad value is a [`ConfigError`] naming the variable;
//! the binaries print it as one line and exit with code 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Default Redis URL (SPEC section 2).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Default key prefix (SPEC section 2).
pub const DEFAULT_KEY_PREFIX: &str = "mig";
/// Default api listen address (SPEC section 2).
pub const DEFAULT_API_ADDR: &str = "0.0.0.0:9002";
/// The password used in development mode (SPEC section 3).
pub const DEVELOPMENT_PASSWORD: &str = "openslides";

/// The raw command line and environment, as clap sees it. Every value is kept
/// as a string so that [`Config::from_cli`] can report a bad value with the
/// variable's name in one line, instead of clap's multi-line usage error.
#[derive(Debug, Parser, Default)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Redis holding queue, lock, output and datastore.
    #[arg(long, env = "REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,
    /// Every key starts with `{PREFIX}:` (a Redis Cluster hash tag).
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX)]
    pub redis_key_prefix: String,
    /// Where migration-api listens.
    #[arg(long, env = "API_ADDR", default_value = DEFAULT_API_ADDR)]
    pub api_addr: String,
    /// File whose content is the internal password.
    #[arg(long, env = "INTERNAL_AUTH_PASSWORD_FILE")]
    pub internal_auth_password_file: Option<PathBuf>,
    /// Development mode (1/true/on): the internal password is `openslides`.
    #[arg(long, env = "OPENSLIDES_DEVELOPMENT")]
    pub openslides_development: Option<String>,
    /// JSON file defining the migrations; unset: the compiled-in registry.
    #[arg(long, env = "MIGRATIONS_FILE")]
    pub migrations_file: Option<PathBuf>,
    /// How long a command request waits for its job before answering `migration_running`.
    #[arg(long, env = "MIGRATION_WAIT_MS", default_value = "100")]
    pub migration_wait_ms: String,
    /// Lease of the global lock; the holder renews it well before expiry.
    #[arg(long, env = "WORKER_LOCK_TTL_MS", default_value = "10000")]
    pub worker_lock_ttl_ms: String,
    /// Throttle of the worker (positions per second); 0 means no limit.
    #[arg(long, env = "WORKER_MAX_POSITIONS_PER_SECOND", default_value = "0")]
    pub worker_max_positions_per_second: String,
    /// Target keyframe models a worker keeps in memory (bounds its memory; the rest stay in Redis).
    #[arg(long, env = "WORKER_KEYFRAME_CACHE_MODELS", default_value = "50000")]
    pub worker_keyframe_cache_models: String,
    /// Most concurrent output streams (`GET /internal/migrations/stream`) per api; more get 503.
    #[arg(long, env = "MIGRATION_STREAM_MAX_CLIENTS", default_value = "64")]
    pub migration_stream_max_clients: String,
    /// Tracing filter.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
    /// `text` or `json` (JSON lines).
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the internal password comes from (SPEC section 3).
#[derive(Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// The password read from `INTERNAL_AUTH_PASSWORD_FILE`, or `openslides`
    /// in development mode.
    Password(Vec<u8>),
    /// No usable password: every `/internal/` route answers `500` with this
    /// reason. Not a start-up error, as SPEC section 3 says.
    Unavailable(String),
}

impl std::fmt::Debug for AuthConfig {
    // Never print the password itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthConfig::Password(_) => f.write_str("Password(<redacted>)"),
            AuthConfig::Unavailable(reason) => write!(f, "Unavailable({reason:?})"),
        }
    }
}

/// The typed configuration of both binaries.
#[derive(Debug, Clone)]
pub struct Config {
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX`, without braces.
    pub key_prefix: String,
    /// `API_ADDR`.
    pub api_addr: SocketAddr,
    /// From `INTERNAL_AUTH_PASSWORD_FILE` / `OPENSLIDES_DEVELOPMENT`.
    pub auth: AuthConfig,
    /// `MIGRATIONS_FILE`.
    pub migrations_file: Option<PathBuf>,
    /// `MIGRATION_WAIT_MS`.
    pub migration_wait: Duration,
    /// `WORKER_LOCK_TTL_MS`.
    pub worker_lock_ttl: Duration,
    /// `WORKER_MAX_POSITIONS_PER_SECOND`; 0 = no limit.
    pub worker_max_positions_per_second: u32,
    /// `WORKER_KEYFRAME_CACHE_MODELS`: target keyframe models a worker keeps
    /// in memory when no migration reads the context (at least 2).
    pub worker_keyframe_cache_models: usize,
    /// `MIGRATION_STREAM_MAX_CLIENTS`: open output streams per api replica
    /// (each holds a Redis connection of its own).
    pub migration_stream_max_clients: usize,
    /// `RUST_LOG`.
    pub log_filter: String,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
}

/// A bad configuration value: printed as `VARIABLE: problem`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable's name.
    pub variable: &'static str,
    /// What is wrong, including the offending value.
    pub problem: String,
}

impl ConfigError {
    /// An error about `variable`.
    pub fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        ConfigError {
            variable,
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Parses the process's command line and environment. Exits with code 2
    /// and one line on stderr for a bad value; prints help for `--help`.
    pub fn from_args_or_exit() -> Config {
        let cli = match Cli::try_parse() {
            Ok(cli) => cli,
            Err(err) => {
                use clap::error::ErrorKind;
                if matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                ) {
                    let _ = err.print();
                    std::process::exit(0);
                }
                // Keep clap's first line (it names the flag) and drop the usage block.
                let text = err.to_string();
                let first = text.lines().next().unwrap_or("invalid arguments");
                eprintln!("{first}");
                std::process::exit(2);
            }
        };
        Config::from_cli(cli).unwrap_or_else(|err| exit_with_config_error(&err))
    }

    /// Validates the raw values. Reads the password file (once, here).
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let redis_url = cli.redis_url.trim().to_string();
        crate::redis_client::RedisTarget::parse(&redis_url)
            .map_err(|err| ConfigError::new("REDIS_URL", err.to_string()))?;

        let key_prefix = cli.redis_key_prefix;
        if key_prefix.is_empty()
            || key_prefix
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace())
        {
            return Err(ConfigError::new(
                "REDIS_KEY_PREFIX",
                format!("invalid prefix '{key_prefix}': must be non-empty, without braces or white space"),
            ));
        }

        let api_addr = cli.api_addr.parse::<SocketAddr>().map_err(|err| {
            ConfigError::new(
                "API_ADDR",
                format!(
                    "invalid address '{}': {err} (expected e.g. 0.0.0.0:9002)",
                    cli.api_addr
                ),
            )
        })?;

        let development = match cli.openslides_development.as_deref() {
            None => false,
            Some(value) => parse_flag(value).ok_or_else(|| {
                ConfigError::new(
                    "OPENSLIDES_DEVELOPMENT",
                    format!("invalid value '{value}': expected 1/true/on or 0/false/off"),
                )
            })?,
        };
        let auth = load_auth(cli.internal_auth_password_file.as_deref(), development);

        let migration_wait = Duration::from_millis(parse_number::<u64>(
            "MIGRATION_WAIT_MS",
            &cli.migration_wait_ms,
        )?);
        let ttl_ms = parse_number::<u64>("WORKER_LOCK_TTL_MS", &cli.worker_lock_ttl_ms)?;
        if ttl_ms < 300 {
            return Err(ConfigError::new(
                "WORKER_LOCK_TTL_MS",
                format!("{ttl_ms} is too short: the lease must be at least 300 ms"),
            ));
        }
        let worker_max_positions_per_second = parse_number::<u32>(
            "WORKER_MAX_POSITIONS_PER_SECOND",
            &cli.worker_max_positions_per_second,
        )?;
        let worker_keyframe_cache_models = parse_number::<usize>(
            "WORKER_KEYFRAME_CACHE_MODELS",
            &cli.worker_keyframe_cache_models,
        )?;
        if worker_keyframe_cache_models < 2 {
            return Err(ConfigError::new(
                "WORKER_KEYFRAME_CACHE_MODELS",
                format!("{worker_keyframe_cache_models} is too small: at least 2 models"),
            ));
        }
        let migration_stream_max_clients = parse_number::<usize>(
            "MIGRATION_STREAM_MAX_CLIENTS",
            &cli.migration_stream_max_clients,
        )?;
        let log_format = match cli.log_format.to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("invalid value '{other}': expected text or json"),
                ))
            }
        };
        if let Some(path) = &cli.migrations_file {
            if let Err(err) = std::fs::metadata(path) {
                return Err(ConfigError::new(
                    "MIGRATIONS_FILE",
                    format!("cannot read '{}': {err}", path.display()),
                ));
            }
        }
        Ok(Config {
            redis_url,
            key_prefix,
            api_addr,
            auth,
            migrations_file: cli.migrations_file,
            migration_wait,
            worker_lock_ttl: Duration::from_millis(ttl_ms),
            worker_max_positions_per_second,
            worker_keyframe_cache_models,
            migration_stream_max_clients,
            log_filter: cli.rust_log,
            log_format,
        })
    }
}

/// Prints the error as one line and exits with code 2 (SPEC section 2).
pub fn exit_with_config_error(err: &dyn std::fmt::Display) -> ! {
    eprintln!("configuration error: {err}");
    std::process::exit(2)
}

fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Some(true),
        "0" | "false" | "off" | "no" | "" => Some(false),
        _ => None,
    }
}

fn parse_number<T: std::str::FromStr>(variable: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse::<T>().map_err(|err| {
        ConfigError::new(
            variable,
            format!("invalid value '{value}': {err} (expected a non-negative integer)"),
        )
    })
}

fn load_auth(password_file: Option<&std::path::Path>, development: bool) -> AuthConfig {
    if development {
        return AuthConfig::Password(DEVELOPMENT_PASSWORD.as_bytes().to_vec());
    }
    match password_file {
        None => AuthConfig::Unavailable(
            "no internal password configured (set INTERNAL_AUTH_PASSWORD_FILE)".into(),
        ),
        Some(path) => match std::fs::read(path) {
            // An empty password would match an empty header: SPEC 3 says such
            // a file is no password at all.
            Ok(content) if is_blank_password(&content) => AuthConfig::Unavailable(format!(
                "internal password file '{}' is empty (an empty password is no password): \
                 write the password into it",
                path.display()
            )),
            Ok(content) => AuthConfig::Password(content),
            Err(err) => AuthConfig::Unavailable(format!(
                "internal password file '{}' cannot be read: {err}",
                path.display()
            )),
        },
    }
}

/// True for a password file that holds nothing but at most one newline
/// (`\n` or `\r\n`): SPEC 3's "empty password", which is no password.
pub fn is_blank_password(content: &[u8]) -> bool {
    matches!(content, b"" | b"\n" | b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["test"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = Config::from_cli(cli(&[])).unwrap();
        assert_eq!(config.key_prefix, "mig");
        assert_eq!(config.api_addr.to_string(), "0.0.0.0:9002");
        assert_eq!(config.migration_wait, Duration::from_millis(100));
        assert_eq!(config.worker_lock_ttl, Duration::from_millis(10_000));
        assert_eq!(config.worker_max_positions_per_second, 0);
        assert_eq!(config.migration_stream_max_clients, 64);
        assert_eq!(config.worker_keyframe_cache_models, 50_000);
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = Config::from_cli(cli(&["--migration-wait-ms", "soon"])).unwrap_err();
        assert_eq!(err.variable, "MIGRATION_WAIT_MS");
        assert!(err
            .to_string()
            .starts_with("MIGRATION_WAIT_MS: invalid value 'soon'"));
        let err = Config::from_cli(cli(&["--worker-lock-ttl-ms=-5"])).unwrap_err();
        assert_eq!(err.variable, "WORKER_LOCK_TTL_MS");
        let err = Config::from_cli(cli(&["--worker-max-positions-per-second", "x"])).unwrap_err();
        assert_eq!(err.variable, "WORKER_MAX_POSITIONS_PER_SECOND");
        let err = Config::from_cli(cli(&["--worker-keyframe-cache-models", "1"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "WORKER_KEYFRAME_CACHE_MODELS: 1 is too small: at least 2 models"
        );
        let err = Config::from_cli(cli(&["--migration-stream-max-clients", "many"])).unwrap_err();
        assert_eq!(err.variable, "MIGRATION_STREAM_MAX_CLIENTS");
        let err = Config::from_cli(cli(&["--api-addr", "nowhere"])).unwrap_err();
        assert_eq!(err.variable, "API_ADDR");
        let err = Config::from_cli(cli(&["--redis-key-prefix", "a{b"])).unwrap_err();
        assert_eq!(err.variable, "REDIS_KEY_PREFIX");
        let err = Config::from_cli(cli(&["--log-format", "xml"])).unwrap_err();
        assert_eq!(err.variable, "LOG_FORMAT");
        let err = Config::from_cli(cli(&["--openslides-development", "maybe"])).unwrap_err();
        assert_eq!(err.variable, "OPENSLIDES_DEVELOPMENT");
        let err = Config::from_cli(cli(&["--migrations-file", "/nonexistent/m.json"])).unwrap_err();
        assert_eq!(err.variable, "MIGRATIONS_FILE");
    }

    #[test]
    fn redis_url_accepts_every_deployment_and_names_itself_when_bad() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "rediss://127.0.0.1:6380/0",
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/1",
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        ] {
            let config = Config::from_cli(cli(&["--redis-url", url])).unwrap();
            assert_eq!(config.redis_url, url);
        }
        for url in [
            "127.0.0.1:6379",
            "redis+sentinel://127.0.0.1:26379",
            "redis+cluster://127.0.0.1:7000/2",
            "memcached://127.0.0.1",
        ] {
            let err = Config::from_cli(cli(&["--redis-url", url])).unwrap_err();
            assert_eq!(err.variable, "REDIS_URL");
            assert!(
                err.to_string().starts_with("REDIS_URL: invalid URL '"),
                "{err}"
            );
        }
        let err =
            Config::from_cli(cli(&["--redis-url", "redis+cluster://u:hunter2@h:1/9"])).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn development_mode_uses_the_fixed_password() {
        for value in ["1", "true", "on", "TRUE"] {
            let config = Config::from_cli(cli(&["--openslides-development", value])).unwrap();
            assert_eq!(config.auth, AuthConfig::Password(b"openslides".to_vec()));
        }
        let config = Config::from_cli(cli(&["--openslides-development", "0"])).unwrap();
        assert!(matches!(config.auth, AuthConfig::Unavailable(_)));
    }

    #[test]
    fn password_file_is_read_and_missing_file_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "secret\n").unwrap();
        let config = Config::from_cli(cli(&[
            "--internal-auth-password-file",
            path.to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(config.auth, AuthConfig::Password(b"secret\n".to_vec()));
        let missing = dir.path().join("missing");
        let config = Config::from_cli(cli(&[
            "--internal-auth-password-file",
            missing.to_str().unwrap(),
        ]))
        .unwrap();
        assert!(matches!(config.auth, AuthConfig::Unavailable(_)));
    }

    #[test]
    fn an_empty_password_file_is_no_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        for content in ["", "\n", "\r\n"] {
            std::fs::write(&path, content).unwrap();
            let config = Config::from_cli(cli(&[
                "--internal-auth-password-file",
                path.to_str().unwrap(),
            ]))
            .unwrap();
            match config.auth {
                AuthConfig::Unavailable(reason) => assert!(reason.contains("empty"), "{reason}"),
                other => panic!("{content:?} gave {other:?}"),
            }
        }
        // A password of white space other than one newline is a password.
        for content in [" ", "\n\n", "\t\n"] {
            std::fs::write(&path, content).unwrap();
            let config = Config::from_cli(cli(&[
                "--internal-auth-password-file",
                path.to_str().unwrap(),
            ]))
            .unwrap();
            assert_eq!(
                config.auth,
                AuthConfig::Password(content.as_bytes().to_vec())
            );
        }
    }
}
