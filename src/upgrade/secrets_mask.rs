//! Masking secrets in the values `upgrade` shows (the values diff, on the
//! terminal and in `--json`).
//!
//! A release's values carry its passwords (`auth.pass`, a `db.url` with
//! userinfo, an env entry `{name: DB_PASSWORD, value: ...}`). The diff must
//! say that such a value changed without saying what it is, so both trees
//! are masked *before* they are compared: every secret scalar becomes
//! `[masked N]`, where N numbers the distinct secret values of this run.
//! Equal secrets get equal masks (no diff line), a changed secret gets a
//! new number (a diff line showing only that it changed). A URL keeps its
//! scheme, user and host; only its password is masked.
use std::collections::HashMap;

use serde_yaml_ng::Value;

/// Words in a key's last segment that make its value a secret.
const SECRET_WORDS: &[&str] = &[
    "pass",
    "secret",
    "token",
    "credential",
    "dsn",
    "apikey",
    "api_key",
    "private",
];

/// Whether a key (one path segment) names a secret value.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| k.contains(w)) || k.ends_with("key") || k == "auth"
}

/// The masks of one run: the same secret always gets the same mask.
#[derive(Default)]
pub struct Masker {
    seen: HashMap<String, usize>,
}

impl Masker {
    fn mask(&mut self, secret: &str) -> String {
        let n = self.seen.len() + 1;
        let id = *self.seen.entry(secret.to_string()).or_insert(n);
        format!("[masked {id}]")
    }

    /// `v` with every secret-looking scalar masked.
    pub fn values(&mut self, v: &Value) -> Value {
        self.walk(v, false)
    }

    fn walk(&mut self, v: &Value, secret: bool) -> Value {
        match v {
            Value::Mapping(m) => {
                // An env-style entry: `{name: DB_PASSWORD, value: ...}`.
                let named_secret = m
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(is_secret_key);
                let mut out = serde_yaml_ng::Mapping::new();
                for (k, child) in m {
                    let key = k.as_str().unwrap_or("");
                    let s = secret || is_secret_key(key) || (named_secret && key == "value");
                    out.insert(k.clone(), self.walk(child, s));
                }
                Value::Mapping(out)
            }
            Value::Sequence(items) => {
                Value::Sequence(items.iter().map(|i| self.walk(i, secret)).collect())
            }
            Value::Tagged(t) => self.walk(&t.value, secret),
            Value::Null => Value::Null,
            scalar if secret => Value::String(self.mask(&scalar_text(scalar))),
            Value::String(s) => Value::String(self.url(s)),
            other => other.clone(),
        }
    }

    /// A string with the password of any `scheme://user:password@` in it
    /// masked (a URL with only a user keeps it).
    fn url(&mut self, s: &str) -> String {
        use std::sync::OnceLock;
        static USERINFO: OnceLock<regex::Regex> = OnceLock::new();
        let re = USERINFO.get_or_init(|| {
            regex::Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:)([^/@\s]+)@").unwrap()
        });
        if !re.is_match(s) {
            return s.to_string();
        }
        let mut out = String::new();
        let mut last = 0;
        for c in re.captures_iter(s) {
            let whole = c.get(0).unwrap();
            let pass = c.get(2).unwrap();
            out.push_str(&s[last..pass.start()]);
            out.push_str(&self.mask(pass.as_str()));
            out.push('@');
            last = whole.end();
        }
        out.push_str(&s[last..]);
        out
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Both trees masked with one [`Masker`] (so equal secrets compare equal).
pub fn mask_pair(current: &Value, new: &Value) -> (Value, Value) {
    let mut m = Masker::default();
    (m.values(current), m.values(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(t: &str) -> Value {
        serde_yaml_ng::from_str(t).unwrap()
    }

    #[test]
    fn secrets_are_masked_and_changes_still_show() {
        let old = y("auth: {pass: Old-PlainPass-77, user: app}\n\
                     db: {url: 'postgres://app:S3cret-db@db:5432/x'}\n\
                     env: [{name: DB_PASSWORD, value: hunter2}, {name: MODE, value: fast}]\n\
                     same: {token: abc}\nreplicas: 1\n");
        let new = y("auth: {pass: New-PlainPass-88, user: app}\n\
                     db: {url: 'postgres://app:S3cret-db2@db:5432/x'}\n\
                     env: [{name: DB_PASSWORD, value: hunter3}, {name: MODE, value: slow}]\n\
                     same: {token: abc}\nreplicas: 2\n");
        let (a, b) = mask_pair(&old, &new);
        let text = format!("{a:?}{b:?}");
        for s in [
            "Old-PlainPass-77",
            "New-PlainPass-88",
            "S3cret-db",
            "hunter2",
            "hunter3",
            "abc",
        ] {
            assert!(!text.contains(s), "{s} in {text}");
        }
        assert_ne!(a["auth"]["pass"], b["auth"]["pass"]);
        assert_eq!(a["same"]["token"], b["same"]["token"]);
        assert_ne!(a["db"]["url"], b["db"]["url"]);
        assert!(a["db"]["url"]
            .as_str()
            .unwrap()
            .starts_with("postgres://app:[masked"));
        assert_eq!(a["env"][1]["value"].as_str(), Some("fast"));
        assert_eq!(a["replicas"], old["replicas"]);
    }
}
