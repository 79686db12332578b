//! What ACME keeps on disk, under `acme.storage_dir`:
//!
//! ```text
//! accounts/<directory host>.json     account key and URL (0600)
//! certificates/<name>/cert.pem       the chain as the CA sent it
//! certificates/<name>/key.pem        its private key (0600)
//! certificates/<name>/lock           held while one process orders <name>
//! ```
//!
//! A wildcard `*.example.com` is stored as `_wildcard.example.com`. Files
//! are written to a temporary name and renamed, so a crash never leaves half
//! a certificate; the directories are 0700.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The storage directory of one `[acme]` section.
#[derive(Clone, Debug)]
pub struct Storage {
    root: PathBuf,
}

/// A stored certificate: the PEM chain and key, as written.
pub struct Stored {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl Storage {
    pub fn new(root: &Path) -> Storage {
        Storage {
            root: root.to_path_buf(),
        }
    }

    fn cert_dir(&self, name: &str) -> PathBuf {
        let dir = match name.strip_prefix("*.") {
            Some(rest) => format!("_wildcard.{rest}"),
            None => name.to_string(),
        };
        self.root.join("certificates").join(dir)
    }

    /// The account file for an ACME directory URL (one per CA).
    pub fn account_path(&self, directory: &str) -> PathBuf {
        let host: String = directory
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
            .unwrap_or_else(|| "default".into())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.root.join("accounts").join(format!("{host}.json"))
    }

    /// The stored certificate for `name`, if both files are there.
    pub fn load(&self, name: &str) -> std::io::Result<Option<Stored>> {
        let dir = self.cert_dir(name);
        let read = |f: &str| match std::fs::read(dir.join(f)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        match (read("cert.pem")?, read("key.pem")?) {
            (Some(chain_pem), Some(key_pem)) => Ok(Some(Stored { chain_pem, key_pem })),
            _ => Ok(None),
        }
    }

    /// Stores a new certificate for `name`: the key first, then the chain,
    /// each replaced atomically.
    pub fn save(&self, name: &str, chain_pem: &[u8], key_pem: &[u8]) -> std::io::Result<()> {
        let dir = self.cert_dir(name);
        make_dir(&dir)?;
        write_private(&dir.join("key.pem"), key_pem)?;
        write_private(&dir.join("cert.pem"), chain_pem)
    }

    /// Takes the order lock of `name` without waiting: `None` while another
    /// process holds it. Released when the file is dropped.
    pub fn try_lock(&self, name: &str) -> std::io::Result<Option<File>> {
        let dir = self.cert_dir(name);
        make_dir(&dir)?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("lock"))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

fn make_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        make_dir(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saves_privately_and_locks_one_orderer() {
        let root = std::env::temp_dir().join(format!("heim-acme-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let s = Storage::new(&root);
        assert!(s.load("*.ssh.example.com").expect("load").is_none());
        s.save("*.ssh.example.com", b"chain", b"key").expect("save");
        let got = s.load("*.ssh.example.com").expect("load").expect("stored");
        assert_eq!(
            (got.chain_pem.as_slice(), got.key_pem.as_slice()),
            (&b"chain"[..], &b"key"[..])
        );
        let key = root.join("certificates/_wildcard.ssh.example.com/key.pem");
        assert_eq!(
            std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
            0o600
        );
        let first = s.try_lock("app.example.com").expect("lock");
        assert!(first.is_some());
        assert!(s.try_lock("app.example.com").expect("lock").is_none());
        drop(first);
        assert!(s.try_lock("app.example.com").expect("lock").is_some());
        assert!(s
            .account_path("https://127.0.0.1:14000/dir")
            .ends_with("accounts/127.0.0.1_14000.json"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
