//! Stall detection for silent and slow peers.
//!
//! A connection timeout does not catch a registry (or a proxy in front of
//! it) that accepts the connection and then says nothing, nor one that
//! trickles a byte every few seconds: each read succeeds. So every transfer
//! is watched the way curl's `--speed-time`/`--speed-limit` do: when fewer
//! than [`STALL_MIN_BYTES`] moved (either direction) during one stall
//! timeout, the attempt is stalled. It fails with [`Stalled`], which the
//! request loops treat like a dropped connection (backoff, then another
//! attempt) and name in the final error.
use std::time::{Duration, Instant};

/// Stall timeout when neither the options nor `BUNDLER_STALL_TIMEOUT` set
/// one.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Fewer bytes than this in one stall timeout is no progress (a trickle).
pub const STALL_MIN_BYTES: u64 = 1024;
/// The environment variable that sets the stall timeout, in seconds
/// (decimals allowed: tests use fractions of a second).
pub const STALL_TIMEOUT_ENV: &str = "BUNDLER_STALL_TIMEOUT";

/// The stall timeout from `$BUNDLER_STALL_TIMEOUT`, if set to a positive
/// number of seconds (anything else is ignored, with a warning).
pub fn stall_timeout_from_env() -> Option<Duration> {
    let v = std::env::var(STALL_TIMEOUT_ENV).ok()?;
    match v.trim().parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
        _ => {
            tracing::warn!("ignoring {STALL_TIMEOUT_ENV}={v:?}: not a positive number of seconds");
            None
        }
    }
}

/// An attempt that made no progress for a whole stall timeout.
#[derive(Debug)]
pub struct Stalled(pub String);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Stalled {}

/// `1.5 s`, `30 s`.
pub(super) fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// What a stalled attempt says (for a transfer of `what`).
pub(super) fn stalled_text(timeout: Duration, moved: u64) -> String {
    if moved == 0 {
        format!("no response for {} (stalled)", secs(timeout))
    } else {
        format!(
            "stalled: {moved} bytes in {} (less than {STALL_MIN_BYTES} bytes moved)",
            secs(timeout)
        )
    }
}

/// The advice appended to a final error whose attempts stalled.
pub(super) fn stalled_advice() -> String {
    format!(
        "; the registry accepts connections but does not answer, or answers a \
         trickle: check it and the network path to it ({STALL_TIMEOUT_ENV}=SECONDS \
         waits longer before calling a transfer stalled)"
    )
}

/// The progress of one transfer over rolling windows of one stall timeout.
pub(super) struct StallWatch {
    timeout: Duration,
    since: Instant,
    bytes: u64,
}

impl StallWatch {
    pub(super) fn new(timeout: Duration) -> Self {
        StallWatch {
            timeout,
            since: Instant::now(),
            bytes: 0,
        }
    }

    /// Count `n` bytes moved; true when the transfer is stalled.
    pub(super) fn moved(&mut self, n: u64) -> bool {
        self.bytes += n;
        self.stalled()
    }

    /// True when a window closed with too few bytes; a window that closed
    /// with enough opens the next.
    pub(super) fn stalled(&mut self) -> bool {
        if self.since.elapsed() < self.timeout {
            return false;
        }
        if self.bytes >= STALL_MIN_BYTES {
            self.since = Instant::now();
            self.bytes = 0;
            return false;
        }
        true
    }

    /// When the current window closes.
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        (self.since + self.timeout).into()
    }

    /// Why the transfer is stalled.
    pub(super) fn text(&self) -> String {
        stalled_text(self.timeout, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_is_a_stall_and_a_steady_flow_is_not() {
        let t = Duration::from_millis(50);
        let mut w = StallWatch::new(t);
        assert!(!w.moved(10));
        std::thread::sleep(t);
        assert!(w.moved(10), "20 bytes in a window is a trickle");
        let mut w = StallWatch::new(t);
        for _ in 0..3 {
            assert!(!w.moved(STALL_MIN_BYTES));
            std::thread::sleep(t);
        }
        assert!(!w.moved(STALL_MIN_BYTES), "enough bytes every window");
        std::thread::sleep(t + t);
        assert!(w.stalled(), "then nothing for a whole window");
    }

    #[test]
    fn stall_text_says_what_happened() {
        assert_eq!(
            stalled_text(Duration::from_secs(30), 0),
            "no response for 30 s (stalled)"
        );
        assert!(stalled_text(Duration::from_millis(1500), 7).contains("7 bytes in 1.5 s"));
    }
}
