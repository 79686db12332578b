//! What ACME keeps on disk, under `acme.storage_dir`:
//!
//! ```text
//! accounts/<directory host>.json       account key and URL (0600)
//! certificates/<name>/certificate.pem  the chain as the CA sent it, then its key (0600)
//! certificates/<name>/ca               the ACME directory URL that issued it
//! certificates/<name>/lock             held while one process orders <name>
//! ```
//!
//! Chain and key are one file, written to a fresh temporary name, synced
//! and renamed over the old one (and the directory synced), so a crash
//! leaves either the old pair or the new one, never a key without its
//! certificate. A certificate imported by hand may also be a
//! `cert.pem` + `key.pem` pair without `ca`. Directories are 0700.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The storage directory of one `[acme]` section.
#[derive(Clone, Debug)]
pub struct Storage {
    root: PathBuf,
}

/// A stored certificate: the PEM chain and key, and which CA issued it.
pub struct Stored {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The ACME directory URL; None for a certificate put there by hand.
    pub directory: Option<String>,
}

impl Storage {
    pub fn new(root: &Path) -> Storage {
        Storage {
            root: root.to_path_buf(),
        }
    }

    /// A name's directory: the name itself (`*` is a valid file name
    /// character and no host name holds one, so nothing collides).
    fn cert_dir(&self, name: &str) -> PathBuf {
        self.root.join("certificates").join(name)
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

    /// The stored certificate for `name`, if there is one.
    pub fn load(&self, name: &str) -> std::io::Result<Option<Stored>> {
        let dir = self.cert_dir(name);
        let read = |f: &str| match std::fs::read(dir.join(f)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let directory = read("ca")?.map(|b| String::from_utf8_lossy(&b).trim().to_string());
        if let Some(bundle) = read("certificate.pem")? {
            return Ok(Some(Stored {
                chain_pem: bundle.clone(),
                key_pem: bundle,
                directory,
            }));
        }
        match (read("cert.pem")?, read("key.pem")?) {
            (Some(chain_pem), Some(key_pem)) => Ok(Some(Stored {
                chain_pem,
                key_pem,
                directory: None,
            })),
            _ => Ok(None),
        }
    }

    /// Stores a new certificate for `name` from the CA at `directory`.
    pub fn save(
        &self,
        name: &str,
        directory: &str,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> std::io::Result<()> {
        let dir = self.cert_dir(name);
        make_dir(&dir)?;
        let mut bundle = chain_pem.to_vec();
        if !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(key_pem);
        // The CA first: a crash after it leaves the old certificate marked
        // as the new CA's, which renews on its own schedule anyway.
        write_private(&dir.join("ca"), directory.as_bytes())?;
        write_private(&dir.join("certificate.pem"), &bundle)
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

/// Writes `bytes` to `path` (mode 0600) through a new temporary file, a
/// sync and a rename, then syncs the directory.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    make_dir(dir)?;
    let mut nonce = [0u8; 8];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| std::io::Error::other("no randomness"))?;
    let tmp = path.with_extension(format!("tmp-{}", u64::from_le_bytes(nonce)));
    let written = (|| {
        // `create_new`: never a stale file with looser permissions.
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
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
        s.save("*.ssh.example.com", "https://ca.test/dir", b"chain", b"key")
            .expect("save");
        let got = s.load("*.ssh.example.com").expect("load").expect("stored");
        assert_eq!(got.chain_pem, b"chain\nkey");
        assert_eq!(got.directory.as_deref(), Some("https://ca.test/dir"));
        let bundle = root.join("certificates/*.ssh.example.com/certificate.pem");
        assert_eq!(
            std::fs::metadata(&bundle)
                .expect("bundle")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(bundle.parent().expect("dir"))
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A pair put there by hand is read too, with no CA.
        let by_hand = root.join("certificates/app.example.com");
        std::fs::create_dir_all(&by_hand).expect("dir");
        std::fs::write(by_hand.join("cert.pem"), b"c").expect("cert");
        std::fs::write(by_hand.join("key.pem"), b"k").expect("key");
        let got = s.load("app.example.com").expect("load").expect("stored");
        assert_eq!(
            (got.chain_pem, got.key_pem, got.directory),
            (b"c".to_vec(), b"k".to_vec(), None)
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
