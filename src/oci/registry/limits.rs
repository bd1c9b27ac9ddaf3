//! Body-size limits: a proxy in front of a registry (nginx's
//! `client_max_body_size`, 1 MiB by default) answers 413 to any request
//! body over its limit. Re-sending the same body cannot help; smaller
//! bodies can. So the first 413 from a registry switches it, for the rest
//! of the run, to chunked uploads whose chunk is halved (to a power of two
//! below the refused body) each time one is refused, down to
//! [`MIN_CHUNK_SIZE`]; that is said once per registry. Below the floor
//! the error names `BUNDLER_CHUNK_SIZE`, which sets the chunk size
//! outright.
use reqwest::StatusCode;
use url::Url;

use super::transport::show;
use super::RegistryClient;
use crate::progress::human_bytes;

/// The smallest chunk the client shrinks to by itself after 413s.
pub const MIN_CHUNK_SIZE: u64 = 256 << 10;

/// A request body the registry (or a proxy in front of it) refused as too
/// large (413).
#[derive(Debug)]
pub struct PayloadTooLarge {
    /// Size of the refused body.
    pub body: u64,
    /// What answered, and how.
    pub detail: String,
}

impl std::fmt::Display for PayloadTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}
impl std::error::Error for PayloadTooLarge {}

/// A body-size limit below the smallest chunk tried: final, another
/// session cannot help.
#[derive(Debug)]
pub(super) struct LimitBelowFloor(String);

impl std::fmt::Display for LimitBelowFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for LimitBelowFloor {}

impl PayloadTooLarge {
    pub(super) fn new(method: &str, url: &Url, body: u64) -> Self {
        PayloadTooLarge {
            body,
            detail: format!(
                "{method} {} answered {} to a body of {body} bytes",
                show(url),
                StatusCode::PAYLOAD_TOO_LARGE
            ),
        }
    }
}

/// The largest power of two below `n` (n > 1).
fn power_of_two_below(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

impl RegistryClient {
    /// The largest body `registry` is known to take in one request, once
    /// it refused one; `None` while it has not.
    pub(super) fn body_limit(&self, registry: &str) -> Option<u64> {
        self.inner
            .body_limits
            .lock()
            .unwrap()
            .get(registry)
            .copied()
    }

    /// Bytes per PATCH for `registry`: the configured chunk size, or less
    /// once the registry refused bodies that large.
    pub(super) fn chunk_size_for(&self, registry: &str) -> u64 {
        let configured = self.inner.opts.chunk_size.max(1);
        self.body_limit(registry)
            .map_or(configured, |l| configured.min(l))
    }

    /// A 413 to a body of `refused.body` bytes: remember a smaller chunk
    /// size for `registry` (saying so the first time), or fail when it
    /// would go below the floor.
    pub(super) fn shrink_after_413(
        &self,
        registry: &str,
        refused: &PayloadTooLarge,
    ) -> anyhow::Result<u64> {
        let next = if refused.body > 1 {
            power_of_two_below(refused.body)
        } else {
            0
        };
        if next < MIN_CHUNK_SIZE {
            return Err(anyhow::Error::new(LimitBelowFloor(format!(
                "{registry} refuses request bodies of {} bytes as too large ({refused}), \
                 and bundler does not shrink its upload chunks below {} by itself: raise \
                 the body-size limit of the proxy in front of the registry (nginx: \
                 client_max_body_size) or set BUNDLER_CHUNK_SIZE to a number of bytes it \
                 accepts",
                refused.body,
                human_bytes(MIN_CHUNK_SIZE)
            ))));
        }
        let mut limits = self.inner.body_limits.lock().unwrap();
        let first = !limits.contains_key(registry);
        let limit = limits.entry(registry.to_string()).or_insert(next);
        *limit = (*limit).min(next);
        let limit = *limit;
        drop(limits);
        if first {
            tracing::warn!(
                "{registry} refused a request body of {} as too large (413: a body-size \
                 limit such as nginx's client_max_body_size); uploads to it now go in chunks \
                 of at most {}, smaller if those are refused too (BUNDLER_CHUNK_SIZE sets the \
                 chunk size)",
                human_bytes(refused.body),
                human_bytes(limit)
            );
        } else {
            tracing::debug!(
                "{registry} refused {} bytes; chunks of at most {limit} now",
                refused.body
            );
        }
        Ok(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_halve_to_powers_of_two() {
        assert_eq!(power_of_two_below(3 << 20), 2 << 20);
        assert_eq!(power_of_two_below(2 << 20), 1 << 20);
        assert_eq!(power_of_two_below((1 << 20) + 1), 1 << 20);
        assert_eq!(power_of_two_below(2), 1);
    }
}
