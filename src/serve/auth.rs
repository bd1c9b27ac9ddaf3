//! `--htpasswd`: HTTP basic auth against an Apache htpasswd file with
//! bcrypt entries (`htpasswd -B`), as the CNCF distribution registry reads
//! it.
//!
//! bcrypt is slow by design, which makes it both a side channel and a load:
//! - an unknown user is checked against a dummy hash of the same cost, so
//!   a wrong password takes as long for an unknown user as for a known one
//!   (user names cannot be listed by timing);
//! - bcrypt runs on its own small pool ([`BCRYPT_THREADS`] threads; checks
//!   wait their turn in order, at most [`MAX_WAIT`], then are refused),
//!   never on the blocking pool that reads blobs: a crowd of wrong
//!   passwords slows down new logins, not authenticated pulls;
//! - a header that matched is remembered for [`CACHE_TTL`] by a keyed hash
//!   of the header (never the password itself): many clients pulling many
//!   blobs cost one bcrypt each per minute.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use sha2::{Digest as _, Sha256};

/// Threads that run bcrypt.
const BCRYPT_THREADS: usize = 2;
/// How long a check waits for a bcrypt thread before it is refused.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// How long a matched header is remembered.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most headers remembered at once.
const CACHE_MAX: usize = 4096;

pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash of a random password at the users' cost, for unknown users.
    dummy: String,
    /// sha256(key ‖ header) of headers that matched, and when.
    accepted: Mutex<HashMap<[u8; 32], (Instant, String)>>,
    key: [u8; 32],
    pool: rayon::ThreadPool,
    waiting: std::sync::Arc<tokio::sync::Semaphore>,
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
        // The highest cost in the file (`$2y$10$...`), so that no user's
        // check takes visibly longer than an unknown user's.
        let cost = (users.values())
            .filter_map(|h| h.get(4..6).and_then(|c| c.parse::<u32>().ok()))
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST)
            .clamp(4, 31);
        let random: [u8; 16] = rand::random();
        let dummy = bcrypt::hash(hex::encode(random), cost).context("making the dummy hash")?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(BCRYPT_THREADS)
            .thread_name(|i| format!("bcrypt-{i}"))
            .build()
            .context("starting the bcrypt threads")?;
        Ok(Htpasswd {
            users,
            dummy,
            accepted: Mutex::new(HashMap::new()),
            key: rand::random(),
            pool,
            waiting: std::sync::Arc::new(tokio::sync::Semaphore::new(BCRYPT_THREADS)),
        })
    }

    fn fingerprint(&self, header: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(header.as_bytes());
        h.finalize().into()
    }

    /// The user of a header that matched within [`CACHE_TTL`].
    fn remembered(&self, fp: &[u8; 32]) -> Option<String> {
        let cache = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        let (at, user) = cache.get(fp)?;
        (at.elapsed() < CACHE_TTL).then(|| user.clone())
    }

    fn remember(&self, fp: [u8; 32], user: &str) {
        let mut cache = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(fp, (Instant::now(), user.to_string()));
    }

    /// bcrypt on the pool, in turn (the semaphore is fair); None when the
    /// turn does not come within [`MAX_WAIT`].
    async fn verify(&self, password: String, hash: String) -> Option<bool> {
        let _permit = tokio::time::timeout(MAX_WAIT, self.waiting.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pool.spawn(move || {
            let _ = tx.send(bcrypt::verify(password, &hash).unwrap_or(false));
        });
        rx.await.ok()
    }

    /// The user of an `Authorization: Basic` header whose password matches.
    pub async fn check(self: &std::sync::Arc<Self>, header: Option<&str>) -> Option<String> {
        let header = header?;
        let fp = self.fingerprint(header);
        if let Some(user) = self.remembered(&fp) {
            return Some(user);
        }
        let encoded = header.strip_prefix("Basic ")?.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        // An unknown user costs the same bcrypt as a known one.
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let ok = self.verify(password.to_string(), hash).await? && known;
        if !ok {
            return None;
        }
        self.remember(fp, user);
        Some(user.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_users_cost_a_bcrypt_and_matches_are_remembered() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("htpasswd");
        std::fs::write(&p, format!("ann:{}\n", bcrypt::hash("pw", 6).unwrap())).unwrap();
        let h = std::sync::Arc::new(Htpasswd::load(&p).unwrap());
        assert!(h.dummy.starts_with("$2b$06$"), "{}", h.dummy);
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            h.check(Some(&basic("ann:pw"))).await.as_deref(),
            Some("ann")
        );
        assert_eq!(h.check(Some(&basic("ann:no"))).await, None);
        assert_eq!(h.check(Some(&basic("bob:pw"))).await, None);
        assert!(h.remembered(&h.fingerprint(&basic("ann:pw"))).is_some());
        assert!(h.remembered(&h.fingerprint(&basic("ann:no"))).is_none());
    }
}
