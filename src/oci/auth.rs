//! Registry credentials: explicit ones (config, flags, environment) per
//! registry host, then docker `config.json` (`$DOCKER_CONFIG`,
//! `~/.docker/config.json`, `auths`, `credHelpers`, `credsStore`).
//!
//! CONTRACT (filled in by the registry work): `Credentials` never prints its
//! password (Debug/Display redact it).
use std::collections::HashMap;
use std::fmt;

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
}

impl CredentialStore {
    /// Credentials for `registry` (host[:port]), if any.
    pub fn lookup(&self, registry: &str) -> Option<Credentials> {
        if let Some(c) = self.explicit.get(registry) {
            return Some(c.clone());
        }
        if let Some(c) = &self.default {
            return Some(c.clone());
        }
        None
    }
}
