//! `heim-tunnel`: the user's side of heim's tunnels.
//!
//! * `login` / `logout` / `status`: a CLI token per proxy origin, from the
//!   browser sign-in (`/.heim/cli/login`, PKCE, a loopback callback).
//! * `proxy HOST[:PORT]`: an ssh `ProxyCommand`; `CONNECT HOST:PORT` to
//!   heim with the bearer token, then stdin/stdout both ways.
//! * `forward --listen ADDR HOST:PORT`: the same for each connection to a
//!   local listener.
//! * `ssh-config DOMAIN`: the `~/.ssh/config` block.
//! * `agent --config agent.toml`: the connector on a machine heim cannot
//!   reach (see `agent`).
//!
//! stdout carries only the stream; every message goes to stderr.

mod agent;
mod client;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Carry SSH (or any TCP) over HTTPS through heim.
///
/// The proxy is HOST itself on port 443 unless `--proxy URL` (or the
/// HEIM_PROXY environment variable) names another. Tokens are kept per
/// proxy origin under $XDG_CONFIG_HOME/heim/ (mode 0600); HEIM_TOKEN, when
/// set, is used instead.
#[derive(Parser)]
#[command(name = "heim-tunnel", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ProxyArgs {
    /// The heim proxy, e.g. https://tunnel.example.com (default: the target
    /// host on 443; env HEIM_PROXY).
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// PEM file of the CA that signed heim's certificate (default: the
    /// public web PKI roots).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in through the browser and keep a token for the proxy.
    Login {
        #[command(flatten)]
        proxy: ProxyArgs,
        /// Print the sign-in URL instead of opening a browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// Forget the proxy's token (and end its session at heim).
    Logout {
        #[command(flatten)]
        proxy: ProxyArgs,
    },
    /// Who the kept token signs in as, and until when.
    Status {
        #[command(flatten)]
        proxy: ProxyArgs,
    },
    /// ssh ProxyCommand: relay stdin/stdout to HOST[:PORT] (port 22 by
    /// default) through heim. In ~/.ssh/config: `ProxyCommand heim-tunnel
    /// proxy %h`.
    Proxy {
        /// Target as heim names it, e.g. desk.ssh.home.example.com[:22]
        target: String,
        #[command(flatten)]
        proxy: ProxyArgs,
    },
    /// Listen locally and carry each connection to HOST:PORT through heim
    /// (for clients that cannot use a ProxyCommand: psql, a VNC viewer).
    Forward {
        /// Local address to listen on, e.g. 127.0.0.1:5432
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Target as heim names it, e.g. db.home.example.com:5432
        target: String,
        #[command(flatten)]
        proxy: ProxyArgs,
    },
    /// Print the ~/.ssh/config block for every host under DOMAIN.
    SshConfig {
        /// e.g. ssh.home.example.com
        domain: String,
        /// The heim proxy, when it is not the target host itself.
        #[arg(long, value_name = "URL")]
        proxy: Option<String>,
        /// The CA file the ProxyCommand is to trust (a private CA).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
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
    // The agent carries many streams: it gets a thread per core.
    let rt = match &cli.command {
        Command::Agent { .. } => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("heim-tunnel: cannot start: {e}");
            return ExitCode::from(client::EXIT_USAGE);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Login { proxy, no_browser } => {
                let p = client::Proxy::from_args(&proxy, None)?;
                token::login(&p, no_browser).await.map(|_| ())
            }
            Command::Logout { proxy } => {
                let p = client::Proxy::from_args(&proxy, None)?;
                token::logout(&p).await
            }
            Command::Status { proxy } => {
                let p = client::Proxy::from_args(&proxy, None)?;
                token::status(&p)
            }
            Command::Proxy { target, proxy } => {
                let target = client::Target::parse(&target)?;
                let p = client::Proxy::from_args(&proxy, Some(&target.host))?;
                client::proxy_stdio(&p, &target).await
            }
            Command::Forward {
                listen,
                target,
                proxy,
            } => {
                let target = client::Target::parse(&target)?;
                let p = client::Proxy::from_args(&proxy, Some(&target.host))?;
                client::forward(&p, &target, listen).await
            }
            Command::SshConfig {
                domain,
                proxy,
                ca_file,
            } => {
                print!(
                    "{}",
                    client::ssh_config(&domain, proxy.as_deref(), ca_file.as_deref())
                );
                Ok(())
            }
            Command::Agent { config } => agent::run(&config).await,
        }
    });
    // A blocking read of stdin may still be waiting (ssh keeps our stdin
    // open until our stdout ends): do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("heim-tunnel: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
