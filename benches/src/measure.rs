//! One measured load run against one proxy: what BENCH.md counts besides the load generator's
//! own figures. The proxy's CPU per request (Δ utime+stime over all its processes ÷ completed
//! requests, the fairest figure when the load generator shares the box), its share of a core
//! (below ~95 % the run was client-bound), its peak RSS, and how busy core 0 (the client and
//! the backend) was.
//!
//! It does not run the load: the caller passes the run as a closure (wrk with a script, h2load,
//! heim-bench's own clients), so any load generator can be measured the same way.

use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use crate::load::LoadResult;
use crate::peers::{self, Proc};
use crate::report::Sample;

/// Measures `load` against `proxy`; `workers_only`: its memory is its children's (nginx's
/// workers hold the connections, the master none). `tck`: clock ticks per second.
pub fn run(
    proxy: &mut Proc,
    workers_only: bool,
    tck: u64,
    load: impl FnOnce() -> Result<LoadResult>,
) -> Result<(Sample, LoadResult)> {
    proxy.check_alive()?;
    let pids = proxy.pids();
    let cpu_before = peers::cpu_ticks(&pids)?;
    let core0_before = peers::read_core_ticks(0);
    let started = Instant::now();
    let r = load().with_context(|| format!("load against {}", proxy.name))?;
    let wall = started.elapsed().as_secs_f64();
    let core0_pct = busy_pct(core0_before, peers::read_core_ticks(0));
    proxy.check_alive()?;
    let cpu_after = peers::cpu_ticks(&pids)
        .with_context(|| format!("a {} process exited during the run", proxy.name))?;
    let memory = if workers_only && pids.len() > 1 {
        &pids[1..]
    } else {
        &pids[..]
    };
    let rss_kib = peers::peak_rss_kib(memory)?;
    ensure!(r.requests > 0, "{} completed no request", proxy.name);
    let cpu_s = cpu_after.saturating_sub(cpu_before) as f64 / tck.max(1) as f64;
    let sample = Sample {
        rps: r.rps,
        requests: r.requests,
        errors: r.errors,
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        mean_us: r.mean_us,
        max_us: r.max_us,
        cpu_us_per_req: cpu_s * 1e6 / r.requests as f64,
        cpu_pct: if wall > 0.0 {
            cpu_s / wall * 100.0
        } else {
            0.0
        },
        rss_kib,
        core0_pct,
    };
    Ok((sample, r))
}

/// % of the time a core was busy between two `(busy, total)` readings of `/proc/stat`.
fn busy_pct(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (before?, after?);
    (t1 > t0).then(|| b1.saturating_sub(b0) as f64 * 100.0 / (t1 - t0) as f64)
}

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`; Linux's 100 if that fails).
pub fn clock_ticks() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_busy_share() {
        assert_eq!(busy_pct(Some((10, 100)), Some((60, 200))), Some(50.0));
        assert_eq!(busy_pct(Some((10, 100)), Some((10, 100))), None);
        assert_eq!(busy_pct(None, Some((10, 100))), None);
    }
}
