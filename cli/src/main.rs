//! `migrationctl`: parses the command line and runs it; the exit code says
//! how the command ended (0 without exception, 1 with one, 2 request error).

fn main() -> std::process::ExitCode {
    let args = <migration_cli::args::Args as clap::Parser>::parse();
    migration_cli::run(args)
}
