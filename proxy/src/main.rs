//! `heim-proxy`: run the proxy, or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc's per-thread heaps suit heim's thread-per-core workers: the
/// allocations of a request stay on its worker (measured: glibc malloc was
/// ~4 % of heim's CPU in the keep-alive benchmark). Built without
/// transparent huge pages, which doubled the resting RSS for no gain.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// heim's data plane: terminates TLS, routes by host and path (Kubernetes
/// Ingress v1 rules), forwards to upstreams over pooled HTTP/1.1 or h2c.
///
/// Reloads its config on SIGHUP or when the config file or a certificate
/// file changes (an invalid new config is rejected and the running one keeps
/// serving). SIGTERM or SIGINT drains: stop accepting, finish requests in
/// flight up to server.drain_timeout, exit. Logs are JSON lines on stdout;
/// set RUST_LOG (default "info") to change the level. See
/// deploy/examples/quickstart.toml for every config key.
#[derive(Parser)]
#[command(name = "heim-proxy", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// The TOML config file to serve.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file, certificates included, and exit: 0 when it
    /// is valid, 1 with every error as FILE:LINE: KEY: MESSAGE (like nginx -t).
    Check {
        /// The TOML config file to check.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config }) => match heim_proxy::check(&config) {
            Ok(c) => {
                for name in c.denied_routes() {
                    eprintln!(
                        "{}: warning: route {name:?} has no policy (public = true, an allow_* rule, or a webhook): every request gets 403",
                        config.display()
                    );
                }
                println!("{}: ok ({} routes)", config.display(), c.routes.len());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                ExitCode::FAILURE
            }
        },
        None => {
            let Some(config) = cli.config else {
                eprintln!("heim-proxy: --config FILE is required (see --help)");
                return ExitCode::from(2);
            };
            heim_proxy::init_logging();
            match heim_proxy::run(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    match e.downcast_ref::<heim_proxy::config::ConfigErrors>() {
                        Some(errors) => heim_proxy::reload::log_errors(&errors.0),
                        None => tracing::error!("{e:#}"),
                    }
                    eprintln!("heim-proxy: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
