//! The DNS wire decoder of the DNS-01 solvers (`heim_proxy::acme::dns`):
//! what a DNS server, or anyone who can spoof its answers, sends heim.
//!
//! Properties, for any input: no panic and no endless loop (compression
//! pointers may only point backwards; names are at most 255 bytes); a
//! message that decodes, encoded again by heim (uncompressed), decodes to
//! the same message (TSIG-signed ones excepted: the record is split off).

/// Runs every property on one input.
pub fn check(data: &[u8]) {
    heim_proxy::acme::dns::fuzz_decode(data);
}
