//! The agent protocol, as both heim (`heim-proxy`) and `heim-tunnel agent`
//! speak it. No dependencies, so that neither side links the other.
//!
//! 1. The agent opens TLS to heim and sends, over HTTP/1.1,
//!    `GET /.heim/agent/connect` with `Connection: upgrade`,
//!    `Upgrade: heim-agent/1`, `Authorization: Bearer TOKEN`,
//!    `Heim-Agent-Name: NAME` and `Heim-Agent-Services: ssh,db`.
//! 2. heim checks the token against its `[[agent]]` of that name and
//!    answers `101 Switching Protocols` (or 401, and logs why).
//! 3. The roles flip: on the connection it dialed, the agent is the
//!    HTTP/2 server and heim the client. Each user connection is one
//!    `CONNECT SERVICE:0` stream (`:authority` names the service); the
//!    agent dials the local address its own config gives that service and
//!    answers 200, or 404 when it has no such service and 502 when the
//!    local address refuses, with [`REASON`] saying why.
//!
//! Stream identity is the HTTP/2 stream of one connection: no numbering is
//! shared between connections, so two agents never see each other's bytes.

/// Where an agent dials in.
pub const CONNECT_PATH: &str = "/.heim/agent/connect";
/// The `Upgrade` token of the agent protocol.
pub const PROTOCOL: &str = "heim-agent/1";
/// The agent's name, as heim's `[[agent]] name` has it.
pub const AGENT_NAME: &str = "heim-agent-name";
/// The agent's services, comma separated (for heim's error messages: the
/// agent itself decides what it serves).
pub const AGENT_SERVICES: &str = "heim-agent-services";
/// On a stream: who asked for it (for the agent's log).
pub const USER: &str = "heim-user";
/// On a refused stream or connection: why, in a few words.
pub const REASON: &str = "heim-reason";

/// HTTP/2 flow control on agent links, the same on both sides: fixed
/// windows large enough for bulk (a 2 MiB stream window moves ~1 GB/s at
/// 2 ms of round trip) and for many streams at once (16 MiB per link).
/// Adaptive windows start small, and h2 then treats a burst of small DATA
/// frames from many streams (150 ssh sessions each sending a keystroke) as
/// a flood and ends the link with GOAWAY ENHANCE_YOUR_CALM.
pub const STREAM_WINDOW: u32 = 2 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// Bytes copied per read between a stream and its TCP side.
pub const COPY_BUFFER: usize = 64 << 10;

/// What [`valid_name`] admits, for error messages.
pub const NAME_RULE: &str = "1 to 63 of a-z, 0-9, - and _, starting with a letter or digit";

/// The longest agent or service name.
pub const NAME_MAX: usize = 63;

/// Agent and service names: 1 to 63 of `a-z 0-9 - _`, starting with a
/// letter or digit. They are DNS-label-like so that a service name is a
/// valid `:authority` host.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= NAME_MAX
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// The `:authority` of the stream for `service`.
pub fn stream_authority(service: &str) -> String {
    format!("{service}:0")
}

/// The service a stream's `:authority` names, if it is a valid name.
pub fn service_of(authority: &str) -> Option<&str> {
    let name = authority.strip_suffix(":0")?;
    valid_name(name).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["ssh", "db-1", "a_b", "0", &"x".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "SSH", "a.b", "a:b", "a b", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn authority_round_trip() {
        assert_eq!(service_of(&stream_authority("ssh")), Some("ssh"));
        assert_eq!(service_of("ssh:22"), None);
        assert_eq!(service_of("127.0.0.1:0"), None);
        assert_eq!(service_of("../x:0"), None);
    }
}
