//! The command line (CONTRACT §8). Parsing only; each command lives in its own module.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// KafClaw: a security-first gateway between chat channels, operators and a tool-running agent.
#[derive(Debug, Parser)]
#[command(name = "kafclaw", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Root directory instead of $KAFCLAW_HOME or the user's home.
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// One JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The settings value.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground.
    Gateway(GatewayArgs),
    /// Print the version.
    Version,
}

/// `kafclaw gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// Interface to bind (overrides gateway.host).
    #[arg(long)]
    pub host: Option<String>,
    /// Gateway port (0 = any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Dashboard/admin port (0 = any free port).
    #[arg(long)]
    pub dashboard_port: Option<u16>,
    /// Allow running as root with a non-loopback bind (not recommended).
    #[arg(long)]
    pub allow_root: bool,
}
