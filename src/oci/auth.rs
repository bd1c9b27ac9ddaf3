//! Registry credentials: explicit ones (config, flags, environment) per
//! registry host, then docker `config.json` (`$DOCKER_CONFIG`,
//! `~/.docker/config.json`, `auths`, `credHelpers`, `credsStore`).
//!
//! Also the parser of `WWW-Authenticate` challenges used by the registry
//! client.
//!
//! CONTRACT (filled in by the registry work): `Credentials` never prints its
//! password (Debug/Display redact it).
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: [redacted] }}",
            self.username
        )
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The value of an `Authorization: Basic ...` header. Never log it.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where credentials come from, most specific first.
#[derive(Clone, Debug, Default)]
pub struct CredentialStore {
    /// Explicit credentials by registry host (`host[:port]`).
    pub explicit: HashMap<String, Credentials>,
    /// Credentials for any host not listed (e.g. `target.containers.auth`
    /// applies to whatever registry the rewrite rules point at).
    pub default: Option<Credentials>,
    /// Read docker `config.json` for hosts with no explicit credentials.
    pub use_docker_config: bool,
    /// Directory holding docker's `config.json`; `None` means
    /// `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
}

/// Docker Hub's names, as they appear as keys in `config.json`.
const DOCKER_HUB_ALIASES: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];
/// The server URL docker uses for Docker Hub in `config.json` and helpers.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

impl CredentialStore {
    /// Only docker `config.json` from `dir` (for tests and `--docker-config`).
    pub fn with_docker_config_dir(dir: impl Into<PathBuf>) -> Self {
        CredentialStore {
            use_docker_config: true,
            docker_config_dir: Some(dir.into()),
            ..Default::default()
        }
    }

    /// Credentials for `registry` (host[:port]), if any: explicit ones,
    /// then the default, then docker `config.json` (when enabled). Problems
    /// reading the docker config are logged (without secrets) and skipped.
    pub fn lookup(&self, registry: &str) -> Option<Credentials> {
        if let Some(c) = self.explicit.get(registry) {
            return Some(c.clone());
        }
        if let Some(c) = &self.default {
            return Some(c.clone());
        }
        if self.use_docker_config {
            match self.lookup_docker_config(registry) {
                Ok(c) => return c,
                Err(e) => {
                    tracing::warn!(
                        "docker config: no credentials for {registry}: {}",
                        crate::error::redact(&format!("{e:#}"))
                    );
                }
            }
        }
        None
    }

    /// The directory of docker's `config.json`.
    pub fn docker_config_path(&self) -> Option<PathBuf> {
        if let Some(d) = &self.docker_config_dir {
            return Some(d.join("config.json"));
        }
        if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(d).join("config.json"));
        }
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
    }

    /// Credentials for `registry` from docker's `config.json`.
    pub fn lookup_docker_config(&self, registry: &str) -> anyhow::Result<Option<Credentials>> {
        let Some(path) = self.docker_config_path() else {
            return Ok(None);
        };
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let cfg: DockerConfig = serde_json::from_slice(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a valid docker config: {e}", path.display()))?;
        cfg.lookup(registry)
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthEntry { [redacted] }")
    }
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `host:5000` stays.
fn normalize_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    k.to_ascii_lowercase()
}

fn is_docker_hub(host: &str) -> bool {
    DOCKER_HUB_ALIASES.contains(&host)
}

impl DockerConfig {
    fn lookup(&self, registry: &str) -> anyhow::Result<Option<Credentials>> {
        let want = normalize_key(registry);
        let hub = is_docker_hub(&want);
        let matches = |key: &str| {
            let k = normalize_key(key);
            k == want || (hub && is_docker_hub(&k))
        };
        let server_url = if hub {
            DOCKER_HUB_SERVER.to_string()
        } else {
            registry.to_string()
        };
        // credHelpers for this host first.
        if let Some((_, helper)) = self.cred_helpers.iter().find(|(k, _)| matches(k)) {
            return credential_helper_get(&format!("docker-credential-{helper}"), &server_url);
        }
        // Then the global store.
        if let Some(store) = self.creds_store.as_deref().filter(|s| !s.is_empty()) {
            match credential_helper_get(&format!("docker-credential-{store}"), &server_url) {
                Ok(Some(c)) => return Ok(Some(c)),
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "docker credsStore {store:?}: {}",
                    crate::error::redact(&format!("{e:#}"))
                ),
            }
        }
        // Then inline `auths`; prefer an exact key over an alias.
        let mut entries: Vec<(&String, &AuthEntry)> =
            self.auths.iter().filter(|(k, _)| matches(k)).collect();
        entries.sort_by_key(|(k, _)| normalize_key(k) != want);
        for (key, entry) in entries {
            if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| {
                        anyhow::anyhow!("docker config: `auth` of {key:?} is not valid base64")
                    })?;
                let raw = String::from_utf8(raw).map_err(|_| {
                    anyhow::anyhow!("docker config: `auth` of {key:?} is not UTF-8")
                })?;
                let Some((u, p)) = raw.split_once(':') else {
                    anyhow::bail!("docker config: `auth` of {key:?} is not `user:password`");
                };
                return Ok(Some(Credentials::new(u, p)));
            }
            if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
                return Ok(Some(Credentials::new(u.clone(), p.clone())));
            }
        }
        Ok(None)
    }
}

/// Run a docker credential helper (`docker-credential-<name> get`) with the
/// server URL on stdin. `None` when it has no credentials for the server.
pub(crate) fn credential_helper_get(
    program: &str,
    server_url: &str,
) -> anyhow::Result<Option<Credentials>> {
    // Output read while it runs; done at its exit plus a grace (a child it
    // left holding stdout cannot hang us); killed at 30 s (a helper that
    // waits for a desktop prompt).
    let out = super::helper_exec::run(
        program,
        &["get"],
        server_url.as_bytes(),
        Duration::from_secs(30),
        Duration::from_secs(2),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).to_string() + &stdout;
        if msg.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // The helper's output is not echoed: it could hold a secret.
        anyhow::bail!(
            "credential helper {program} failed for {server_url} ({})",
            out.status
        );
    }
    #[derive(serde::Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let parsed: HelperOut = serde_json::from_str(stdout.trim()).map_err(|_| {
        anyhow::anyhow!("credential helper {program} printed something that is not its JSON")
    })?;
    if parsed.username == "<token>" {
        // An identity (OAuth refresh) token: not supported; behave as if
        // there were no credentials rather than send it as a password.
        tracing::warn!("credential helper {program} returned an identity token for {server_url}; identity tokens are not supported");
        return Ok(None);
    }
    if parsed.username.is_empty() && parsed.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::new(parsed.username, parsed.secret)))
}

/// Path of a helper program given explicitly (tests).
#[allow(dead_code)]
pub(crate) fn helper_program(path: &Path) -> String {
    path.display().to_string()
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        /// Space-separated scopes the registry asked for, if any.
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` header value (`Basic realm="x"`,
/// `Bearer realm="https://auth",service="reg",scope="repository:a:pull"`).
/// Only the first challenge is used.
pub fn parse_www_authenticate(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = match value.find(char::is_whitespace) {
        Some(i) => (&value[..i], value[i..].trim_start()),
        None => (value, ""),
    };
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(pk, _)| pk.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic {
            realm: get("realm"),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `k="v", k2=v2` with quoted strings that may hold commas and `\"`.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'=') {
            // A token without value (or a second challenge's scheme): stop.
            break;
        }
        chars.next();
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
            val = val.trim().to_string();
        }
        out.push((key, val));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_with_commas_in_scope() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push repository:c:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull,push repository:c:pull".into()),
            }
        );
    }

    #[test]
    fn parses_basic_and_odd_spacing() {
        assert_eq!(
            parse_www_authenticate(r#"Basic realm="test-realm""#),
            Some(Challenge::Basic {
                realm: Some("test-realm".into())
            })
        );
        assert_eq!(
            parse_www_authenticate("basic"),
            Some(Challenge::Basic { realm: None })
        );
        assert_eq!(
            parse_www_authenticate(r#"Bearer  realm = "http://h/t\"x" , service=reg"#),
            Some(Challenge::Bearer {
                realm: "http://h/t\"x".into(),
                service: Some("reg".into()),
                scope: None
            })
        );
        assert_eq!(parse_www_authenticate("Bearer service=x"), None);
        assert_eq!(parse_www_authenticate("Negotiate abc"), None);
    }

    #[test]
    fn docker_config_auths_with_and_without_scheme() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("hubuser:hubpass");
        std::fs::write(
            dir.path().join("config.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},
                "reg.example.com:5000":{{"username":"u2","password":"p2"}},
                "http://other.example.com/v2/":{{"auth":"{b64}"}}}}}}"#
            ),
        )
        .unwrap();
        let store = CredentialStore::with_docker_config_dir(dir.path());
        assert_eq!(
            store.lookup("docker.io"),
            Some(Credentials::new("hubuser", "hubpass"))
        );
        assert_eq!(
            store.lookup("reg.example.com:5000"),
            Some(Credentials::new("u2", "p2"))
        );
        assert_eq!(
            store.lookup("other.example.com"),
            Some(Credentials::new("hubuser", "hubpass"))
        );
        assert_eq!(store.lookup("nowhere.example.com"), None);
        // explicit and default come first
        let mut s2 = store.clone();
        s2.default = Some(Credentials::new("d", "dp"));
        assert_eq!(s2.lookup("docker.io"), Some(Credentials::new("d", "dp")));
    }

    #[test]
    fn credential_helper_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("docker-credential-fake");
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread host\nif [ \"$host\" = \"reg.example.com\" ]; then\n  echo '{\"ServerURL\":\"reg.example.com\",\"Username\":\"helperuser\",\"Secret\":\"helpersecret\"}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let prog = helper_program(&script);
        assert_eq!(
            credential_helper_get(&prog, "reg.example.com").unwrap(),
            Some(Credentials::new("helperuser", "helpersecret"))
        );
        assert_eq!(credential_helper_get(&prog, "other").unwrap(), None);
        let e = credential_helper_get("/nonexistent/docker-credential-x", "h").unwrap_err();
        assert!(format!("{e:#}").contains("credential helper"));
    }

    #[test]
    fn debug_redacts() {
        let c = Credentials::new("u", "topsecret");
        assert!(!format!("{c:?}").contains("topsecret"));
        let e = AuthEntry {
            auth: Some("c2VjcmV0".into()),
            ..Default::default()
        };
        assert!(!format!("{e:?}").contains("c2VjcmV0"));
    }
}
