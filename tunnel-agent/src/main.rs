//! `heim-tunnel`: the user's and the machine owner's side of heim's tunnels.
//!
//! Skeleton: the commands and their help are fixed here; the tunnel itself
//! lands with its own issue (see DESIGN.md, "Tunnels").

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Carry SSH (or any TCP) over HTTPS through heim.
#[derive(Parser)]
#[command(name = "heim-tunnel", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in through the browser and keep a token for `proxy` (mode 0600).
    Login {
        /// The heim proxy, e.g. https://heim.example.com
        proxy: String,
    },
    /// ssh ProxyCommand: relay stdin/stdout to HOST[:PORT] through heim.
    /// Use in ~/.ssh/config as `ProxyCommand heim-tunnel proxy %h`.
    Proxy {
        /// Target as heim names it, e.g. desk.ssh.home.example.com[:22]
        target: String,
    },
    /// Run on a machine heim cannot reach: dial out to heim and serve the
    /// services named in the agent config through that connection.
    Agent {
        /// Agent config file.
        #[arg(long, short, value_name = "FILE")]
        config: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let what = match cli.command {
        Command::Login { .. } => "login",
        Command::Proxy { .. } => "proxy",
        Command::Agent { .. } => "agent",
    };
    eprintln!("heim-tunnel {what}: not implemented yet in this build");
    ExitCode::from(2)
}
