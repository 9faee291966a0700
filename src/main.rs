//! The sluice command line: serve | check | add-package | remove-package.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::Config;

/// A private npm registry mirror: whitelist, read-through cache, full mirror.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// The configuration file (default: conf/sluice.toml, else the embedded default).
    #[arg(long, short, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    Serve,
    /// Validate the configuration and print the effective one.
    Check,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Check => {
            sluice::plugins::build(&config)?;
            print!("{config}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let registry = sluice::server::registry(config)?;
            sluice::server::serve(registry)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
