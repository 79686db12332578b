//! TLS passthrough (ingress-nginx's `ssl-passthrough`): the server name a
//! client asks for, read from its ClientHello without consuming a byte
//! (`MSG_PEEK`), so that a connection for a passthrough host is spliced,
//! encrypted as it came, to one of the route's endpoints, and any other
//! goes on to heim's own TLS handshake untouched.
//!
//! Only the first TLS record is read (a ClientHello that spans records is
//! not a passthrough candidate: heim terminates it), at most
//! [`MAX_PEEK`] bytes, within the handshake timeout.

use std::time::Duration;

use tokio::net::TcpStream;

/// The most of a ClientHello heim reads before deciding.
pub const MAX_PEEK: usize = 16 * 1024 + 5;

/// The SNI host name of the ClientHello at the start of `tcp`, lowercase;
/// `None` when there is none, it is not TLS, or it did not arrive within
/// `timeout`.
pub async fn peek_server_name(tcp: &TcpStream, timeout: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_PEEK];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = tokio::time::timeout_at(deadline, tcp.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        match server_name(&buf[..n]) {
            Parsed::Name(name) => return Some(name),
            Parsed::None => return None,
            // The rest of the record is on its way: data already waiting
            // keeps the socket readable, so wait a little before looking
            // again (bounded by the deadline).
            Parsed::Short => {
                if tokio::time::Instant::now() + pause > deadline {
                    return None;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// Splices the client's connection, its ClientHello still unread, to one
/// of `route`'s endpoints (the next on a failed connect, up to three),
/// until either side closes.
pub async fn splice(
    mut client: TcpStream,
    route: &crate::route::Route,
    remote: std::net::SocketAddr,
) {
    let Some(group) = &route.upstream else {
        return;
    };
    let mut tried = Vec::new();
    while tried.len() < 3 {
        let Some(i) = group.pick(&tried) else {
            break;
        };
        tried.push(i);
        let ep = &group.endpoints[i];
        let connect = async {
            match &ep.addr {
                crate::upstream::UpstreamAddr::Socket(a) => TcpStream::connect(a).await,
                crate::upstream::UpstreamAddr::Name { host, port } => {
                    TcpStream::connect((host.as_str(), *port)).await
                }
            }
        };
        match tokio::time::timeout(group.limits.connect_timeout, connect).await {
            Ok(Ok(mut upstream)) => {
                group.report_success(i);
                let _ = upstream.set_nodelay(true);
                tracing::debug!(%remote, route = %route.spec.name, upstream = %ep.display, "TLS passthrough");
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return;
            }
            _ => {
                group.report_failure(i);
                tracing::warn!(route = %route.spec.name, upstream = %ep.display, "TLS passthrough: connect failed");
            }
        }
    }
}

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Name(String),
    /// Not a ClientHello with a server name.
    None,
    /// A ClientHello record, not whole yet.
    Short,
}

/// Reads the `server_name` extension (RFC 6066 §3) of a ClientHello
/// (RFC 8446 §4.1.2) in the first TLS record of `b`.
fn server_name(b: &[u8]) -> Parsed {
    // Record: type 22 (handshake), version, length.
    if b.is_empty() {
        return Parsed::Short;
    }
    if b[0] != 22 {
        return Parsed::None;
    }
    if b.len() < 5 {
        return Parsed::Short;
    }
    let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    if b.len() < 5 + len {
        return Parsed::Short;
    }
    let mut r = Reader(&b[5..5 + len]);
    parse_hello(&mut r).map_or(Parsed::None, Parsed::Name)
}

fn parse_hello(r: &mut Reader<'_>) -> Option<String> {
    // Handshake: type 1 (ClientHello), 24-bit length.
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let mut h = Reader(r.take(len)?);
    h.take(2 + 32)?; // legacy_version, random
    let session = usize::from(h.u8()?);
    h.take(session)?;
    let suites = usize::from(h.u16()?);
    h.take(suites)?;
    let compression = usize::from(h.u8()?);
    h.take(compression)?;
    let ext_len = usize::from(h.u16()?);
    let mut exts = Reader(h.take(ext_len)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let len = usize::from(exts.u16()?);
        let body = exts.take(len)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(body);
        let list_len = usize::from(list.u16()?);
        let mut names = Reader(list.take(list_len)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let len = usize::from(names.u16()?);
            let name = names.take(len)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                let valid = !name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
                return valid.then(|| name.to_ascii_lowercase());
            }
        }
        return None;
    }
    None
}

/// A cursor over bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello, as rustls's client sends it for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn the_server_name_of_a_real_client_hello() {
        let hello = client_hello("Pods.Example.com");
        assert_eq!(server_name(&hello), Parsed::Name("pods.example.com".into()));
        // Every shorter prefix is short, never a wrong answer or a panic.
        for n in 0..hello.len() {
            assert_eq!(server_name(&hello[..n]), Parsed::Short, "{n} bytes");
        }
    }

    #[test]
    fn anything_else_has_no_name() {
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), Parsed::None);
        // An IP address is sent without SNI.
        let hello = client_hello("198.51.100.7");
        assert_eq!(server_name(&hello), Parsed::None);
        // Garbage inside a well-framed record.
        let mut junk = vec![22, 3, 1, 0, 8];
        junk.extend([1, 0, 0, 200, 3, 3, 0, 0]);
        assert_eq!(server_name(&junk), Parsed::None);
    }
}
