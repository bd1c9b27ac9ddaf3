//! The slow commit: a registry that takes long to answer the request that
//! completes an upload (the monolithic PUT, or the closing PUT of a chunked
//! upload) because it is hashing a multi-GB blob and moving it into
//! storage. A proxy in front of it (or our own commit timeout) gives up
//! first, and the blob is usually committed moments later.
//!
//! Re-uploading at once is what every other tool does: the whole layer
//! goes up again and often fails the same way. Instead, when the answer is
//! lost *after the whole body was sent*, the blob is HEADed with backoff
//! for up to `BUNDLER_COMMIT_WAIT` (seconds, default 10 min): present means
//! done. Only when it never appears is it uploaded again.
//!
//! An answer that was lost quickly (a connection dropped within a moment
//! of the last byte) is not a slow commit: one HEAD decides, so a flaky
//! network does not cost ten minutes per dropped answer. And the wait is
//! proportional to the blob: two stall timeouts plus a second per
//! [`COMMIT_BYTES_PER_SEC`] (a registry hashes and moves far faster), so
//! a small blob sent into a peer that went silent (the whole body fits in
//! the socket buffers, so it looks sent) is uploaded again within seconds,
//! while a multi-GB layer gets the full `BUNDLER_COMMIT_WAIT`.
//!
//! The upload session is not asked where it stands meanwhile: distribution
//! cancels a session whose state does not match its data, which would
//! break the very commit being waited for.
use std::time::{Duration, Instant};

use super::transport::show;
use super::uploads::Upload;
use super::RegistryClient;

/// The environment variable that bounds the wait, in seconds (decimals
/// allowed; 0 turns the wait off).
pub const COMMIT_WAIT_ENV: &str = "BUNDLER_COMMIT_WAIT";
/// How long a registry may take to commit a blob whose answer was lost.
pub const DEFAULT_COMMIT_WAIT: Duration = Duration::from_secs(600);
/// An answer lost at least this long after the last body byte went out
/// looks like a slow commit (a timeout somewhere), not a dropped line.
const SLOW_ANSWER: Duration = Duration::from_secs(1);
/// The slowest commit waited for: a registry re-reading and moving a blob
/// at this rate.
const COMMIT_BYTES_PER_SEC: u64 = 4 << 20;
/// First pause between HEADs; doubles up to [`POLL_CAP`].
const POLL_START: Duration = Duration::from_millis(250);
const POLL_CAP: Duration = Duration::from_secs(15);

/// `BUNDLER_COMMIT_WAIT`, else the default.
pub fn commit_wait_from_env() -> Duration {
    let Ok(v) = std::env::var(COMMIT_WAIT_ENV) else {
        return DEFAULT_COMMIT_WAIT;
    };
    match v.trim().parse::<f64>() {
        Ok(s) if s >= 0.0 && s.is_finite() => Duration::from_secs_f64(s),
        _ => {
            tracing::warn!("ignoring {COMMIT_WAIT_ENV}={v:?}: not a number of seconds");
            DEFAULT_COMMIT_WAIT
        }
    }
}

/// Why the answer to a completing request was lost, as far as the
/// waiting goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LostAnswer {
    /// A timeout (ours or a gateway's), or a drop long after the body was
    /// out: the registry may still be committing.
    Slow,
    /// Dropped right after the body: it committed already or never will.
    Quick,
}

impl LostAnswer {
    /// Classify a failure that came `since_body_out` after the last byte.
    pub(super) fn after(since_body_out: Duration, timed_out: bool) -> LostAnswer {
        if timed_out || since_body_out >= SLOW_ANSWER {
            LostAnswer::Slow
        } else {
            LostAnswer::Quick
        }
    }
}

/// How long a blob of `size` bytes may take to appear after its answer
/// was lost: two stall timeouts plus its size at [`COMMIT_BYTES_PER_SEC`],
/// at most `cap` (`BUNDLER_COMMIT_WAIT`).
fn commit_bound(cap: Duration, stall: Duration, size: u64) -> Duration {
    let work = Duration::from_secs_f64(size as f64 / COMMIT_BYTES_PER_SEC as f64);
    (stall * 2 + work).min(cap)
}

impl RegistryClient {
    /// The answer to the request completing `up` was lost after its whole
    /// body went out (`why`): whether the blob is in place now, HEADed
    /// once for a quick loss, with backoff up to the commit wait for a
    /// slow one. Errors of the HEADs count as "not yet".
    pub(super) async fn committed_after_all(
        &self,
        up: &Upload<'_>,
        at: &url::Url,
        why: &str,
        lost: LostAnswer,
    ) -> bool {
        let wait = match lost {
            LostAnswer::Quick => Duration::ZERO,
            LostAnswer::Slow => commit_bound(self.inner.commit_wait, self.stall(), up.size()),
        };
        let started = Instant::now();
        if lost == LostAnswer::Slow && !wait.is_zero() {
            tracing::warn!(
                "{} of {} ({} bytes): {why}; the registry may still be committing it: \
                 checking for up to {} before uploading it again ({COMMIT_WAIT_ENV})",
                show(at),
                up.digest,
                up.size(),
                super::stall::secs(wait)
            );
        }
        let mut pause = POLL_START;
        loop {
            match self.blob_exists(up.registry, up.repo, up.digest).await {
                Ok(Some(_)) => {
                    if lost == LostAnswer::Slow {
                        tracing::warn!(
                            "{} is in {}/{} after {:.1} s: the commit was slow, nothing is \
                             uploaded again",
                            up.digest,
                            up.registry,
                            up.repo,
                            started.elapsed().as_secs_f64()
                        );
                    }
                    return true;
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("checking for {} after a lost answer: {e:#}", up.digest),
            }
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(POLL_CAP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_with_the_blob_up_to_the_cap() {
        let cap = DEFAULT_COMMIT_WAIT;
        let stall = Duration::from_secs(30);
        assert_eq!(commit_bound(cap, stall, 0), Duration::from_secs(60));
        // 400 MiB: 100 s of commit work on top.
        assert_eq!(
            commit_bound(cap, stall, 400 << 20),
            Duration::from_secs(160)
        );
        // 8 GiB: capped.
        assert_eq!(commit_bound(cap, stall, 8 << 30), cap);
        assert_eq!(commit_bound(Duration::ZERO, stall, 8 << 30), Duration::ZERO);
    }

    #[test]
    fn a_timeout_or_a_late_drop_is_a_slow_commit_a_quick_drop_is_not() {
        assert_eq!(
            LostAnswer::after(Duration::from_millis(10), true),
            LostAnswer::Slow
        );
        assert_eq!(
            LostAnswer::after(Duration::from_secs(3), false),
            LostAnswer::Slow
        );
        assert_eq!(
            LostAnswer::after(Duration::from_millis(50), false),
            LostAnswer::Quick
        );
    }
}
