//! Work a stop lets finish: the chunk of a chunked upload in flight.
//!
//! distribution (and Harbor, built on it) keeps an upload's offset in the
//! signed `_state` of the URL each PATCH answers with. A PATCH cut off in
//! the middle leaves part of its chunk in the session, and the URL of the
//! last whole chunk no longer matches it: the registry answers
//! `BLOB_UPLOAD_INVALID` to it, and the next run has to start that blob
//! over. So on SIGINT or SIGTERM, [`crate::interrupt`] first lets every
//! chunk in flight finish (its URL is saved for the next run), for up to
//! [`GRACE`]; no new chunk starts; a second signal stops at once. A
//! registry that tracks the offset itself answers the next run's `GET` on
//! the session with the bytes it holds, and the upload goes on from there
//! either way.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Longest a stop waits for the chunks in flight.
pub const GRACE: Duration = Duration::from_secs(60);

static STOPPING: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A stop was asked for: start no new chunk.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// A chunk in flight; the stop waits until it is dropped.
#[must_use]
pub struct Hold(());

impl Drop for Hold {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Hold off a stop while one chunk goes up; `None` when a stop is already
/// under way (then the chunk must not start).
pub fn hold() -> Option<Hold> {
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    if stopping() {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    Some(Hold(()))
}

/// Chunks in flight now.
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::SeqCst)
}

/// Stop: no new chunk starts; returns once none is in flight, or after
/// `grace`.
pub async fn drain(grace: Duration) {
    STOPPING.store(true, Ordering::SeqCst);
    let until = tokio::time::Instant::now() + grace;
    while in_flight() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Park a task whose next chunk may not start: the stop handler ends the
/// process once the chunks in flight are in.
pub async fn park_if_stopping() {
    if stopping() {
        std::future::pending::<()>().await;
    }
}
