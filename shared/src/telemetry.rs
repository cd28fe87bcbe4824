//! Tracing set up in one place for both binaries: `RUST_LOG` filter,
//! `LOG_FORMAT` text or JSON lines, written to stderr.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. A filter that does not parse falls back
/// to `info` with a warning rather than stopping the process.
pub fn init(config: &Config) {
    let (filter, bad_filter) = match EnvFilter::try_new(&config.log_filter) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if result.is_ok() {
        if let Some(err) = bad_filter {
            tracing::warn!(filter = %config.log_filter, error = %err, "RUST_LOG does not parse; logging at info");
        }
    }
}
