//! Who may hold a connection: `serve` is reachable by anyone on the
//! network, so one host must not be able to hold every file descriptor.
//!
//! - A connection that sends nothing within [`idle_timeout`] of being
//!   accepted is closed (hyper's header timer only starts at the first
//!   byte, and the HTTP version sniffing before it waits forever); the same
//!   bound applies to a TLS handshake and, through hyper's header-read
//!   timeout, to an idle keep-alive connection.
//! - At most [`MAX_PER_PEER`] connections per client address and
//!   [`MAX_TOTAL`] in all; past a cap new connections are closed at once,
//!   and the log says so once per cap (not once per refused connection,
//!   which would let a flood fill the log).
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections one client address may hold at once (a node's container
/// runtime uses a handful; a site behind one NAT address, a few dozen).
pub const MAX_PER_PEER: usize = 128;
/// Connections held at once in all.
pub const MAX_TOTAL: usize = 1024;
/// How long a connection may stay silent.
const IDLE: Duration = Duration::from_secs(10);

/// The idle bound: 10 s, or less when `BUNDLER_SERVE_IDLE_SECS` asks for
/// less (a test knob; it can only lower the bound).
pub fn idle_timeout() -> Duration {
    std::env::var("BUNDLER_SERVE_IDLE_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(IDLE, |s| Duration::from_secs(s).min(IDLE))
}

#[derive(Default)]
pub struct Limits {
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
    warned_peer: AtomicBool,
    warned_total: AtomicBool,
}

/// A held connection slot, given back when dropped.
pub struct Slot {
    limits: Arc<Limits>,
    peer: IpAddr,
}

impl Limits {
    /// A slot for a new connection from `peer`, or None (close it).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.0 >= MAX_TOTAL {
            if !self.warned_total.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{MAX_TOTAL} connections are open: closing new ones until some end \
                     (said once; the newest came from {peer})"
                );
            }
            return None;
        }
        let n = held.1.entry(peer).or_insert(0);
        if *n >= MAX_PER_PEER {
            if !self.warned_peer.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{peer} holds {MAX_PER_PEER} connections: closing its new ones until some \
                     end (said once, whichever client reaches the cap)"
                );
            }
            return None;
        }
        *n += 1;
        held.0 += 1;
        Some(Slot {
            limits: self.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.limits.held.lock().unwrap_or_else(|e| e.into_inner());
        held.0 = held.0.saturating_sub(1);
        if let Some(n) = held.1.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                held.1.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_peer_and_slots_come_back() {
        let l = Arc::new(Limits::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let slots: Vec<Slot> = (0..MAX_PER_PEER).map(|_| l.admit(a).unwrap()).collect();
        assert!(l.admit(a).is_none());
        assert!(l.admit(b).is_some());
        drop(slots);
        assert!(l.admit(a).is_some());
        assert_eq!(l.held.lock().unwrap().0, 0);
    }
}
