//! Local users: a `users_file` of `name:hash` lines (bcrypt, as
//! `htpasswd -B` writes them, or argon2id) and heim's own sign-in form.
//!
//! An unknown name is checked against a real hash too, so the answer and
//! its timing are the same as for a wrong password. Failed attempts are
//! counted per name and address (3 free), per address (10) and per name
//! (20); past those, further attempts are refused for a while that doubles
//! with each failure (up to 15 minutes), whether the name exists or not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One user's stored hash.
#[derive(Clone, Debug)]
enum Hash {
    Bcrypt(String),
    Argon2(String),
}

impl Hash {
    fn parse(s: &str) -> Option<Hash> {
        if s.starts_with("$2a$") || s.starts_with("$2b$") || s.starts_with("$2y$") {
            s.parse::<bcrypt::HashParts>().ok()?;
            Some(Hash::Bcrypt(s.to_string()))
        } else if s.starts_with("$argon2id$") || s.starts_with("$argon2i$") {
            argon2::PasswordHash::new(s).ok()?;
            Some(Hash::Argon2(s.to_string()))
        } else {
            None
        }
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Hash::Argon2(h) => {
                use argon2::PasswordVerifier;
                argon2::PasswordHash::new(h).is_ok_and(|parsed| {
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
            }
        }
    }
}

/// The users of one `local` provider.
#[derive(Debug)]
pub struct Users {
    users: HashMap<String, Hash>,
    /// Checked for unknown names, so that they cost what a real one does.
    decoy: Hash,
}

impl Users {
    /// Reads a users file; errors name the line.
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Users, String> {
        let mut users = HashMap::new();
        let mut first = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: not `name:hash`", i + 1))?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!(
                    "line {}: a user name without spaces is needed",
                    i + 1
                ));
            }
            let hash = Hash::parse(hash).ok_or_else(|| {
                format!(
                    "line {}: not a bcrypt ($2y$...) or argon2id ($argon2id$...) hash",
                    i + 1
                )
            })?;
            first.get_or_insert_with(|| hash.clone());
            users.insert(name.to_string(), hash);
        }
        let decoy = first.ok_or("lists no user")?;
        Ok(Users { users, decoy })
    }

    /// True when `name` exists and `password` is its password. Slow on
    /// purpose (bcrypt, argon2): call it off the event loop.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        match self.users.get(name) {
            Some(h) => h.verify(password),
            None => {
                let _ = self.decoy.verify(password);
                false
            }
        }
    }
}

/// Failures allowed before the slow-down, per key: a name from one
/// address (the guessing), an address (for any name: credential stuffing),
/// a name from anywhere (a spread-out attack; high, so that nobody can lock
/// another user out cheaply).
const FREE_PER_PAIR: u32 = 3;
const FREE_PER_ADDRESS: u32 = 10;
const FREE_PER_NAME: u32 = 20;
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Entries kept before old ones are swept.
const MAX_ENTRIES: usize = 100_000;

/// Failed sign-in attempts, shared by every worker (and kept across
/// reloads). An attempt counts as failed from the moment it starts, so
/// attempts sent in parallel cannot slip past the count; a success gives
/// its count back.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    fn keys(name: &str, client: IpAddr) -> [(String, u32); 3] {
        // IPv6 clients are counted by /64: one host has a whole one.
        let client = match client {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            v4 => v4.to_string(),
        };
        [
            (format!("pair:{name}|{client}"), FREE_PER_PAIR),
            (format!("ip:{client}"), FREE_PER_ADDRESS),
            (format!("user:{name}"), FREE_PER_NAME),
        ]
    }

    /// Starts an attempt: `Err(wait)` while attempts for `name` from
    /// `client` are refused; else the attempt is counted as a failure
    /// until [`Throttle::succeeded`] says otherwise.
    pub fn begin(&self, name: &str, client: IpAddr) -> Result<(), Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let keys = Self::keys(name, client);
        let mut wait = Duration::ZERO;
        for (key, free) in &keys {
            if let Some((count, last)) = map.get(key) {
                wait = wait.max(lock_for(*count, *free).saturating_sub(last.elapsed()));
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (_, last)| last.elapsed() < MAX_LOCK);
        }
        for (key, _) in keys {
            let e = map.entry(key).or_insert((0, Instant::now()));
            e.0 = e.0.saturating_add(1);
            e.1 = Instant::now();
        }
        Ok(())
    }

    /// The attempt `begin` counted succeeded: its count is given back, and
    /// the name's own slate from this address is wiped.
    pub fn succeeded(&self, name: &str, client: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let [pair, ip, user] = Self::keys(name, client);
        map.remove(&pair.0);
        for (key, _) in [ip, user] {
            if let Some(e) = map.get_mut(&key) {
                e.0 = e.0.saturating_sub(1);
            }
        }
    }
}

/// How long attempts are refused after `failures` in a row, `free` of
/// them allowed.
fn lock_for(failures: u32, free: u32) -> Duration {
    if failures < free {
        return Duration::ZERO;
    }
    let secs = 1u64 << (failures - free).min(20);
    Duration::from_secs(secs).min(MAX_LOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_and_argon2id_lines() {
        let bcrypt = bcrypt::hash("s3cret", 4).unwrap();
        let argon = {
            use argon2::password_hash::{PasswordHasher, SaltString};
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            argon2::Argon2::default()
                .hash_password(b"hunter2", &salt)
                .unwrap()
                .to_string()
        };
        let users = Users::parse(&format!("# users\nalice:{bcrypt}\n\nbob:{argon}\n")).unwrap();
        assert!(users.verify("alice", "s3cret"));
        assert!(!users.verify("alice", "S3cret"));
        assert!(users.verify("bob", "hunter2"));
        assert!(!users.verify("bob", "s3cret"));
        assert!(!users.verify("carol", "s3cret"), "unknown user");
        assert!(Users::parse("alice:plaintext").is_err());
        assert!(Users::parse("alice").is_err());
        assert!(Users::parse("# nobody").is_err());
        // htpasswd -B writes $2y$.
        let y = bcrypt.replacen("$2b$", "$2y$", 1);
        assert!(Users::parse(&format!("alice:{y}"))
            .unwrap()
            .verify("alice", "s3cret"));
    }

    #[test]
    fn failures_slow_down_per_name_and_address() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        // Attempts count when they start: parallel ones cannot slip by.
        for _ in 0..FREE_PER_PAIR {
            assert!(t.begin("alice", ip).is_ok());
        }
        assert!(
            t.begin("alice", ip).is_err(),
            "locked after the free failures"
        );
        // Another address is not locked out of alice, nor is bob from here.
        assert!(t.begin("alice", other).is_ok());
        assert!(t.begin("bob", ip).is_ok());
        t.succeeded("bob", ip);
        // A success gives its count back and clears the pair.
        t.succeeded("alice", other);
        assert!(t.begin("alice", other).is_ok());
        // Many names from one address: the address is slowed down.
        let stuffing: IpAddr = "198.51.100.9".parse().unwrap();
        for i in 0..FREE_PER_ADDRESS {
            assert!(t.begin(&format!("user{i}"), stuffing).is_ok());
        }
        assert!(t.begin("someone-else", stuffing).is_err());
        // IPv6 by /64.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff".parse().unwrap();
        for _ in 0..FREE_PER_PAIR {
            assert!(t.begin("carol", a).is_ok());
        }
        assert!(t.begin("carol", b).is_err(), "same /64");
        assert_eq!(lock_for(2, 3), Duration::ZERO);
        assert_eq!(lock_for(3, 3), Duration::from_secs(1));
        assert_eq!(lock_for(5, 3), Duration::from_secs(4));
        assert_eq!(lock_for(60, 3), MAX_LOCK);
    }
}
