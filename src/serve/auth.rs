//! `--htpasswd`: HTTP basic auth against an Apache htpasswd file with
//! bcrypt entries (`htpasswd -B`), as the CNCF distribution registry reads
//! it. bcrypt is slow by design, so a password that once matched is
//! remembered by a keyed hash (never the password itself) for the life of
//! the process: many clients pulling many blobs cost one bcrypt each.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context};
use base64::Engine;
use sha2::{Digest as _, Sha256};

pub struct Htpasswd {
    users: HashMap<String, String>,
    /// sha256(key ‖ user ‖ 0 ‖ password) of credentials that matched.
    accepted: Mutex<HashSet<[u8; 32]>>,
    key: [u8; 32],
}

impl Htpasswd {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --htpasswd {}", path.display()))?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                bail!(
                    "{} line {}: expected user:bcrypt-hash (make it with htpasswd -B)",
                    path.display(),
                    i + 1
                );
            };
            if !(hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$")) {
                bail!(
                    "{} line {}: the entry of {user:?} is not bcrypt; only bcrypt entries are supported (htpasswd -B)",
                    path.display(),
                    i + 1
                );
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            bail!("{}: no users in the htpasswd file", path.display());
        }
        Ok(Htpasswd {
            users,
            accepted: Mutex::new(HashSet::new()),
            key: rand::random(),
        })
    }

    fn fingerprint(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The user of an `Authorization: Basic` header whose password matches.
    pub async fn check(self: &std::sync::Arc<Self>, header: Option<&str>) -> Option<String> {
        let encoded = header?.strip_prefix("Basic ")?.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        let fp = self.fingerprint(user, password);
        if self.accepted.lock().unwrap().contains(&fp) {
            return Some(user.to_string());
        }
        let hash = self.users.get(user)?.clone();
        let password = password.to_string();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok {
            self.accepted.lock().unwrap().insert(fp);
            Some(user.to_string())
        } else {
            None
        }
    }
}
