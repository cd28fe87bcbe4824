//! The command line (SPEC 9), parsed once with clap. The environment is read
//! only here: `MIGRATION_API_URL` and `INTERNAL_AUTH_PASSWORD_FILE`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Where `migrationctl` looks for the api when neither `--url` nor
/// `MIGRATION_API_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9002";

/// The operator tool of the migration service: sends one command to the
/// migration route, follows a running job with a live progress bar and
/// prints every output line once.
#[derive(Debug, Clone, Parser)]
#[command(name = "migrationctl", version, about)]
pub struct Args {
    /// The command to send.
    #[arg(value_enum)]
    pub command: CommandName,
    /// One output line per migrated position.
    #[arg(long)]
    pub verbose: bool,
    /// Base URL of a migration-api replica.
    #[arg(long, env = "MIGRATION_API_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// File whose content is the internal password (sent base64-encoded).
    #[arg(long, env = "INTERNAL_AUTH_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Follow a running job until it ends (default for migrate and finalize
    /// when stdout is a terminal): the output stream when the api has one,
    /// polling `progress` otherwise.
    #[arg(long)]
    pub follow: bool,
    /// Print the final response as one JSON object (and no output lines).
    #[arg(long)]
    pub json: bool,
}

/// The commands of the migration route (SPEC 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CommandName {
    /// Migrate into the migration area.
    Migrate,
    /// Migrate what is left, then make it live.
    Finalize,
    /// Delete the migration area.
    Reset,
    /// The migration state of the datastore.
    Stats,
    /// The output and result of the current or last command.
    Progress,
}

impl CommandName {
    /// The `cmd` value of the request.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Migrate => "migrate",
            CommandName::Finalize => "finalize",
            CommandName::Reset => "reset",
            CommandName::Stats => "stats",
            CommandName::Progress => "progress",
        }
    }

    /// Whether `--follow` is the default on a terminal.
    pub fn follows_on_a_terminal(self) -> bool {
        matches!(self, CommandName::Migrate | CommandName::Finalize)
    }
}
