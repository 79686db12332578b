//! The PROXY protocol (HAProxy's, v1 text and v2 binary): how an L4
//! balancer that does not keep the client's address (a cloud load
//! balancer, HAProxy in TCP mode) tells heim whom a connection is for.
//!
//! With `proxy_protocol = true`, a connection from a `trusted_proxies`
//! address must start with a header; its source address becomes the
//! client's. A header from any other address is refused with a closed
//! connection (anyone could write one); such peers are served as they are,
//! without a header, so a listener can take balanced and direct traffic.
//! The header is read exactly, never past its end: the TLS handshake that
//! follows reads the socket itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::trust::TrustedProxies;

/// The v2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (the spec's figure).
const V1_MAX: usize = 107;
/// The longest v2 address block heim reads (TLVs included); the spec
/// allows 64 KiB, balancers send far less.
const V2_MAX_BLOCK: usize = 1024;

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyProtocolError {
    #[error("a PROXY protocol header from an address not in trusted_proxies")]
    Untrusted,
    #[error("no PROXY protocol header from a trusted proxy")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("the PROXY protocol header (or the first bytes) did not arrive in time")]
    Timeout,
    #[error("reading the PROXY protocol header: {0}")]
    Io(String),
}

/// What a complete header said.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    /// The client; `None` for `LOCAL` / `UNKNOWN` (the balancer's own
    /// connection, e.g. a health check): the peer stays the client.
    pub source: Option<SocketAddr>,
}

/// The client of a connection on a PROXY protocol listener from `peer`,
/// within `timeout` (a silent peer, trusted or not, is not waited for).
pub async fn accept(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    trusted: &TrustedProxies,
    timeout: Duration,
) -> Result<SocketAddr, ProxyProtocolError> {
    tokio::time::timeout(timeout, accept_now(tcp, peer, trusted))
        .await
        .map_err(|_| ProxyProtocolError::Timeout)?
}

async fn accept_now(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    trusted: &TrustedProxies,
) -> Result<SocketAddr, ProxyProtocolError> {
    if !trusted.contains(peer.ip()) {
        let mut first = [0u8; V2_SIG.len()];
        let n = tcp
            .peek(&mut first)
            .await
            .map_err(|e| ProxyProtocolError::Io(e.to_string()))?;
        return if looks_like_header(&first[..n]) {
            Err(ProxyProtocolError::Untrusted)
        } else {
            Ok(peer)
        };
    }
    let header = read_header(tcp).await?;
    Ok(header
        .source
        .map(|s| SocketAddr::new(crate::trust::canonical(s.ip()), s.port()))
        .unwrap_or(peer))
}

/// True when the first bytes of a connection are those of a PROXY header
/// (judged on what has arrived; a TLS or HTTP client never starts so).
pub fn looks_like_header(first: &[u8]) -> bool {
    let v1 = b"PROXY ";
    let n1 = first.len().min(v1.len());
    let n2 = first.len().min(V2_SIG.len());
    (n1 >= 5 && first[..n1] == v1[..n1]) || (n2 >= 5 && first[..n2] == V2_SIG[..n2])
}

/// Reads one header, and not a byte more.
async fn read_header(tcp: &mut TcpStream) -> Result<Header, ProxyProtocolError> {
    let io = |e: std::io::Error| ProxyProtocolError::Io(e.to_string());
    let mut head = [0u8; 16];
    tcp.read_exact(&mut head[..8]).await.map_err(io)?;
    if head[..6] == *b"PROXY " {
        // v1: a line. Peek for its end, so the common case (the whole line
        // in one segment) is one read.
        let mut line = head[..8].to_vec();
        let mut peeked = [0u8; V1_MAX];
        let n = tcp.peek(&mut peeked[..V1_MAX - 8]).await.map_err(io)?;
        match peeked[..n].windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                let mut rest = vec![0u8; end + 2];
                tcp.read_exact(&mut rest).await.map_err(io)?;
                line.extend_from_slice(&rest);
            }
            None => {
                while !line.ends_with(b"\r\n") {
                    if line.len() >= V1_MAX {
                        return Err(ProxyProtocolError::Malformed("v1 line too long"));
                    }
                    line.push(tcp.read_u8().await.map_err(io)?);
                }
            }
        }
        return parse_v1(&line);
    }
    if head[..8] != V2_SIG[..8] {
        return Err(ProxyProtocolError::Missing);
    }
    tcp.read_exact(&mut head[8..]).await.map_err(io)?;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > V2_MAX_BLOCK {
        return Err(ProxyProtocolError::Malformed("v2 address block too long"));
    }
    let mut block = vec![0u8; len];
    tcp.read_exact(&mut block).await.map_err(io)?;
    parse_v2(&head, &block)
}

/// Parses a whole v1 line (`PROXY TCP4 src dst sport dport\r\n`).
pub fn parse_v1(line: &[u8]) -> Result<Header, ProxyProtocolError> {
    let bad = ProxyProtocolError::Malformed;
    let text = std::str::from_utf8(line).map_err(|_| bad("v1 is not text"))?;
    let text = text
        .strip_suffix("\r\n")
        .ok_or(bad("v1 line without CRLF"))?;
    if line.len() > V1_MAX {
        return Err(bad("v1 line too long"));
    }
    let mut fields = text.split(' ');
    if fields.next() != Some("PROXY") {
        return Err(bad("v1 line not starting with PROXY"));
    }
    let family = fields.next().ok_or(bad("v1 without a protocol"))?;
    if family == "UNKNOWN" {
        return Ok(Header { source: None });
    }
    let parts: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = parts[..] else {
        return Err(bad("v1 needs source, destination and both ports"));
    };
    let port = |p: &str| {
        // No sign, no leading zeros (the spec's form), in range.
        (!p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (p == "0" || !p.starts_with('0')))
        .then(|| p.parse::<u16>().ok())
        .flatten()
        .ok_or(bad("v1 port"))
    };
    let (src, _dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| bad("v1 TCP4 source"))?
                .into(),
            dst.parse::<Ipv4Addr>()
                .map_err(|_| bad("v1 TCP4 destination"))?
                .into(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| bad("v1 TCP6 source"))?
                .into(),
            dst.parse::<Ipv6Addr>()
                .map_err(|_| bad("v1 TCP6 destination"))?
                .into(),
        ),
        _ => return Err(bad("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let sport = port(sport)?;
    port(dport)?;
    Ok(Header {
        source: Some(SocketAddr::new(src, sport)),
    })
}

/// Parses a v2 header: the 16 fixed bytes and the address block.
pub fn parse_v2(head: &[u8; 16], block: &[u8]) -> Result<Header, ProxyProtocolError> {
    let bad = ProxyProtocolError::Malformed;
    if head[..12] != *V2_SIG {
        return Err(bad("v2 signature"));
    }
    if head[12] >> 4 != 2 {
        return Err(bad("v2 version"));
    }
    match head[12] & 0xf {
        // LOCAL: the balancer's own connection; addresses are ignored.
        0 => return Ok(Header { source: None }),
        1 => {}
        _ => return Err(bad("v2 command")),
    }
    let source = match head[13] {
        // UNSPEC over a stream: the peer stays the client.
        0x00 => None,
        // TCP over IPv4: 4 + 4 + 2 + 2 bytes.
        0x11 => {
            let a = block.get(..12).ok_or(bad("v2 IPv4 block too short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        // TCP over IPv6: 16 + 16 + 2 + 2 bytes.
        0x21 => {
            let a = block.get(..36).ok_or(bad("v2 IPv6 block too short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        _ => return Err(bad("v2 family is not TCP over IPv4 or IPv6")),
    };
    Ok(Header { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, block: &[u8]) -> ([u8; 16], Vec<u8>) {
        let mut head = [0u8; 16];
        head[..12].copy_from_slice(V2_SIG);
        head[12] = 0x20 | cmd;
        head[13] = fam;
        head[14..].copy_from_slice(&(block.len() as u16).to_be_bytes());
        (head, block.to_vec())
    }

    #[test]
    fn v1_lines() {
        let ok = [
            (
                &b"PROXY TCP4 198.51.100.7 10.0.0.1 5000 443\r\n"[..],
                Some("198.51.100.7:5000"),
            ),
            (
                b"PROXY TCP6 2001:db8::1 ::1 65535 443\r\n",
                Some("[2001:db8::1]:65535"),
            ),
            (b"PROXY UNKNOWN\r\n", None),
            (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
        ];
        for (line, want) in ok {
            let h = parse_v1(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(h.source.map(|s| s.to_string()).as_deref(), want);
        }
        let bad: [&[u8]; 9] = [
            b"PROXY TCP4 198.51.100.7 10.0.0.1 5000 443\n",
            b"PROXY TCP4 198.51.100.7 10.0.0.1 5000\r\n",
            b"PROXY TCP4 2001:db8::1 10.0.0.1 5000 443\r\n",
            b"PROXY TCP4 198.51.100.7 10.0.0.1 65536 443\r\n",
            b"PROXY TCP4 198.51.100.7 10.0.0.1 05000 443\r\n",
            b"PROXY TCP4 198.51.100.7 10.0.0.1 +5 443\r\n",
            b"PROXY UDP4 198.51.100.7 10.0.0.1 5000 443\r\n",
            b"PROXY  TCP4 198.51.100.7 10.0.0.1 5000 443\r\n",
            b"PROXI TCP4 198.51.100.7 10.0.0.1 5000 443\r\n",
        ];
        for line in bad {
            assert!(
                parse_v1(line).is_err(),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn v2_headers() {
        let mut v4 = vec![198, 51, 100, 7, 10, 0, 0, 1];
        v4.extend(5000u16.to_be_bytes());
        v4.extend(443u16.to_be_bytes());
        let (h, b) = v2(1, 0x11, &v4);
        assert_eq!(
            parse_v2(&h, &b).unwrap().source,
            Some("198.51.100.7:5000".parse().unwrap())
        );
        // TLVs after the addresses are skipped.
        let mut with_tlv = v4.clone();
        with_tlv.extend([0x04, 0, 2, 0xab, 0xcd]);
        let (h, b) = v2(1, 0x11, &with_tlv);
        assert!(parse_v2(&h, &b).unwrap().source.is_some());
        let mut v6 = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        v6.extend(7u16.to_be_bytes());
        v6.extend(443u16.to_be_bytes());
        let (h, b) = v2(1, 0x21, &v6);
        assert_eq!(
            parse_v2(&h, &b).unwrap().source,
            Some("[2001:db8::1]:7".parse().unwrap())
        );
        let (h, b) = v2(0, 0x11, &v4);
        assert_eq!(parse_v2(&h, &b).unwrap().source, None, "LOCAL");
        for (cmd, fam, block) in [
            (1, 0x11, &v4[..11]),
            (1, 0x21, &v6[..35]),
            (2, 0x11, &v4[..]),
            (1, 0x12, &v4[..]),
            (1, 0x31, &v4[..]),
        ] {
            let (h, b) = v2(cmd, fam, block);
            assert!(
                parse_v2(&h, &b).is_err(),
                "cmd {cmd} fam {fam:#x} len {}",
                block.len()
            );
        }
        let (mut h, b) = v2(1, 0x11, &v4);
        h[12] = 0x11;
        assert!(parse_v2(&h, &b).is_err(), "version 1");
    }

    #[test]
    fn headers_are_told_from_tls_and_http() {
        assert!(looks_like_header(b"PROXY TCP4"));
        assert!(looks_like_header(b"PROXY"));
        assert!(looks_like_header(V2_SIG));
        assert!(looks_like_header(&V2_SIG[..6]));
        assert!(!looks_like_header(b"\x16\x03\x01\x02\x00"));
        assert!(!looks_like_header(b"POST / HTTP/1.1"));
        assert!(!looks_like_header(b"PRI * HTTP/2.0"));
        assert!(!looks_like_header(b"\r\n\r\nGET"));
    }
}
