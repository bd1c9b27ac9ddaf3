//! Error kinds that decide the exit status. Everything else is `anyhow`
//! with context; these typed errors are attached at the point where we know
//! what kind of failure it is, and `cli` maps them to exit codes.
use std::fmt;

/// Exit status for invalid input (config, manifest, flags): nothing was done.
pub const EXIT_USAGE: i32 = 2;
/// Exit status for everything else that failed.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status when an `upgrade` failed and was rolled back.
pub const EXIT_ROLLED_BACK: i32 = 4;
/// Exit status when an `upgrade` failed and was NOT put back: the rollback
/// failed too, or `--no-rollback` left a release that failed its check.
pub const EXIT_NOT_ROLLED_BACK: i32 = 3;

/// A problem with user input found before anything was changed: a config or
/// manifest that does not parse or validate. Exit status 2.
#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for InputError {}

/// Credentials were refused (401/403 after authenticating) or missing.
#[derive(Debug)]
pub struct CredentialError {
    pub registry: String,
    pub detail: String,
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "credentials rejected by {}: {} (check the username/password in the config, \
             the TARGET_*/SOURCE_* environment variables, or ~/.docker/config.json)",
            self.registry, self.detail
        )
    }
}
impl std::error::Error for CredentialError {}

/// An upgrade failed and the release was rolled back; the message says how to
/// restore by hand.
#[derive(Debug)]
pub struct RolledBack(pub String);

impl fmt::Display for RolledBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for RolledBack {}

/// An upgrade failed and the site was not put back (see [`EXIT_NOT_ROLLED_BACK`]).
#[derive(Debug)]
pub struct NotRolledBack(pub String);

impl fmt::Display for NotRolledBack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotRolledBack {}

/// Shorthand for returning an [`InputError`].
pub fn input_error(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(msg.into()))
}

/// The exit status for an error chain.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<InputError>().is_some() {
            return EXIT_USAGE;
        }
        if cause.downcast_ref::<RolledBack>().is_some() {
            return EXIT_ROLLED_BACK;
        }
        if cause.downcast_ref::<NotRolledBack>().is_some() {
            return EXIT_NOT_ROLLED_BACK;
        }
    }
    EXIT_FAILURE
}

/// Remove anything that looks like a secret from a message before it is
/// printed: `Authorization` headers, bearer tokens, `user:password@` in URLs.
/// Used as a last line of defence; secrets are never formatted on purpose.
pub fn redact(text: &str) -> String {
    use std::sync::OnceLock;
    static PATTERNS: OnceLock<Vec<(regex::Regex, &'static str)>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        vec![
            (
                regex::Regex::new(r"(?i)(authorization:\s*)(basic|bearer)\s+[A-Za-z0-9._~+/=-]+").unwrap(),
                "${1}${2} [redacted]",
            ),
            (
                regex::Regex::new(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}").unwrap(),
                "${1} [redacted]",
            ),
            (
                regex::Regex::new(r"(?i)(https?://)[^/@\s:]+:[^/@\s]+@").unwrap(),
                "${1}[redacted]@",
            ),
            (
                regex::Regex::new(r#"(?i)("?(?:password|token|access_token|refresh_token)"?\s*[:=]\s*)"?[^"\s,}]+"?"#).unwrap(),
                "${1}[redacted]",
            ),
        ]
    });
    let mut out = text.to_string();
    for (re, rep) in patterns {
        out = re.replace_all(&out, *rep).into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_headers_tokens_and_url_passwords() {
        let s = redact("Authorization: Basic YWRtaW46SGFyYm9yMTIzNDU= then bearer abcdefghijklmnop and http://admin:Harbor12345@host/x password: \"Harbor12345\"");
        assert!(!s.contains("YWRtaW46"), "{s}");
        assert!(!s.contains("abcdefghijklmnop"), "{s}");
        assert!(!s.contains("Harbor12345"), "{s}");
    }

    #[test]
    fn input_errors_exit_2() {
        let e = input_error("bad").context("loading");
        assert_eq!(exit_code(&e), EXIT_USAGE);
        assert_eq!(exit_code(&anyhow::anyhow!("x")), EXIT_FAILURE);
    }
}
