//! heim-fuzz: the properties the `cargo fuzz` targets check, one module per
//! target, each with a `check(&[u8])` that panics when a property fails.
//!
//! The targets in `fuzz_targets/` are one-line wrappers, so the properties
//! are plain Rust that reads (and replays) without libFuzzer. Each property
//! comes from the documented contract of the heim function it attacks, not
//! from what the code happens to do today. A check narrowed to step around
//! a known heim bug says so (`KNOWN HEIM BUG`, with its reproducer in
//! `regressions/`) until the bug is fixed. See docs/fuzzing.md.

#![forbid(unsafe_code)]

pub mod config;
pub mod dns_response;
pub mod headers;
pub mod route_host;
pub mod route_path;
