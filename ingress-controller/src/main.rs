//! `heim-ingress`: the Kubernetes ingress controller (skeleton).

use std::process::ExitCode;

use clap::Parser;

/// heim's ingress controller: turns the cluster's Ingress objects into heim
/// routes and certificates. Not implemented yet in this build.
#[derive(Parser)]
#[command(name = "heim-ingress", version)]
struct Cli {}

fn main() -> ExitCode {
    let _ = Cli::parse();
    eprintln!("heim-ingress: not implemented yet in this build");
    ExitCode::from(2)
}
