//! `heim-ingress`: the Kubernetes ingress controller and heim's data plane.

use std::process::ExitCode;

use clap::Parser;

/// As in heim-proxy: mimalloc's per-thread heaps suit the workers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // `heim-ingress migrate ...`: the report, then exit.
    if std::env::args_os().nth(1).is_some_and(|a| a == "migrate") {
        let args = std::iter::once(std::ffi::OsString::from("heim-ingress migrate"))
            .chain(std::env::args_os().skip(2));
        let m = heim_ingress::migrate::Migrate::parse_from(args);
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("heim-ingress migrate: {e}");
                return ExitCode::from(2);
            }
        };
        return match rt.block_on(heim_ingress::migrate::run(m)) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("heim-ingress migrate: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let opts = heim_ingress::Options::parse();
    heim_proxy::init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("heim-ingress")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("heim-ingress: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(heim_ingress::controller::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<heim_proxy::config::ConfigErrors>() {
                Some(errors) => heim_proxy::reload::log_errors(&errors.0),
                None => tracing::error!("{e:#}"),
            }
            eprintln!("heim-ingress: {e:#}");
            ExitCode::FAILURE
        }
    }
}
