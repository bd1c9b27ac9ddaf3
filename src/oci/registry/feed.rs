//! One read of a blob for several uploads (`sync` to `target.mirrors`).
//!
//! A [`FeedSender`] reads the blob's byte range from its file once and hands
//! each piece to every upload of it ([`FeedTap`], one per target
//! registry), through a bounded buffer each. An upload body built on a tap
//! takes its bytes from the buffer instead of the file, so N targets cost
//! one read per byte.
//!
//! A slow or failing target does not hold up the others: a tap whose
//! buffer stays full for [`DETACH_AFTER`] is let go (the sender stops
//! feeding it), and that upload reads the rest from the file itself, from
//! where it stands. A retry, a resumed or shrunk chunk (any read that does
//! not start where the tap stands) reads the file too. Memory is bounded:
//! at most [`WINDOW`] bytes buffered per tap.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::body::READ_CHUNK;

/// Bytes buffered per tap before the sender waits for it.
pub const WINDOW: usize = 8 << 20;
/// How long the sender waits for a tap with a full buffer before letting
/// it go.
pub const DETACH_AFTER: Duration = Duration::from_secs(2);

/// What one upload reads from.
#[derive(Debug)]
pub struct FeedTap {
    pub(super) state: Arc<tokio::sync::Mutex<TapState>>,
}

#[derive(Debug)]
pub(super) struct TapState {
    rx: mpsc::Receiver<Bytes>,
    /// Bytes of the blob this tap has handed out.
    pub(super) pos: u64,
    /// Taken from the buffer, not yet handed out.
    pending: Option<Bytes>,
}

impl TapState {
    /// The next bytes at `pos`, at most `max`; `None` when the sender let
    /// this tap go (or finished): the caller reads the file from `pos`.
    pub(super) async fn next(&mut self, max: usize) -> Option<Bytes> {
        let mut b = match self.pending.take() {
            Some(b) => b,
            None => self.rx.recv().await?,
        };
        if b.len() > max {
            self.pending = Some(b.split_off(max));
        }
        self.pos += b.len() as u64;
        Some(b)
    }
}

/// Reads the blob once and feeds every tap.
pub struct FeedSender {
    path: PathBuf,
    offset: u64,
    len: u64,
    txs: Vec<Option<mpsc::Sender<Bytes>>>,
}

/// A feed of `source` (`path[offset..offset+len)`) for `n` uploads.
pub fn feed(path: PathBuf, offset: u64, len: u64, n: usize) -> (FeedSender, Vec<FeedTap>) {
    let mut txs = Vec::new();
    let mut taps = Vec::new();
    for _ in 0..n {
        let (tx, rx) = mpsc::channel((WINDOW / READ_CHUNK).max(1));
        txs.push(Some(tx));
        taps.push(FeedTap {
            state: Arc::new(tokio::sync::Mutex::new(TapState {
                rx,
                pos: 0,
                pending: None,
            })),
        });
    }
    (
        FeedSender {
            path,
            offset,
            len,
            txs,
        },
        taps,
    )
}

impl FeedSender {
    /// Read the range once, piece by piece, and hand each piece to every
    /// tap still fed; stops early when none is. A read error ends the feed
    /// (each upload then reads the file itself and reports the problem).
    pub async fn run(mut self) {
        let Ok(mut f) = tokio::fs::File::open(&self.path).await else {
            return;
        };
        if f.seek(std::io::SeekFrom::Start(self.offset)).await.is_err() {
            return;
        }
        let mut left = self.len;
        while left > 0 && self.txs.iter().any(Option::is_some) {
            let n = left.min(READ_CHUNK as u64) as usize;
            let mut buf = vec![0u8; n];
            if f.read_exact(&mut buf).await.is_err() {
                return;
            }
            let piece = Bytes::from(buf);
            for slot in self.txs.iter_mut() {
                let Some(tx) = slot else { continue };
                let sent = tokio::time::timeout(DETACH_AFTER, tx.send(piece.clone())).await;
                if !matches!(sent, Ok(Ok(()))) {
                    // Too slow, or its upload is gone: it reads on its own.
                    *slot = None;
                }
            }
            left -= n as u64;
        }
    }
}

/// An upload body's reader on a tap: the tap's pieces while it is fed,
/// then the file from where the tap stands.
pub(super) struct FedReader {
    guard: tokio::sync::OwnedMutexGuard<TapState>,
    file: Option<tokio::fs::File>,
    path: PathBuf,
    offset: u64,
}

impl FedReader {
    /// A reader of the blob from `start`, when the tap stands there (else
    /// `None`: read the file).
    pub(super) async fn at(tap: &FeedTap, path: PathBuf, offset: u64, start: u64) -> Option<Self> {
        let guard = tap.state.clone().lock_owned().await;
        (guard.pos == start).then_some(FedReader {
            guard,
            file: None,
            path,
            offset,
        })
    }

    /// Exactly `n` bytes (fewer only on a read error).
    pub(super) async fn read(&mut self, n: usize) -> std::io::Result<Bytes> {
        let mut out: Option<bytes::BytesMut> = None;
        let mut have = 0usize;
        while have < n {
            if self.file.is_none() {
                if let Some(b) = self.guard.next(n - have).await {
                    if have == 0 && b.len() == n {
                        return Ok(b);
                    }
                    have += b.len();
                    out.get_or_insert_with(|| bytes::BytesMut::with_capacity(n))
                        .extend_from_slice(&b);
                    continue;
                }
                let mut f = tokio::fs::File::open(&self.path).await?;
                f.seek(std::io::SeekFrom::Start(self.offset + self.guard.pos))
                    .await?;
                self.file = Some(f);
            }
            let f = self.file.as_mut().expect("opened above");
            let mut buf = vec![0u8; n - have];
            f.read_exact(&mut buf).await?;
            self.guard.pos += buf.len() as u64;
            have = n;
            out.get_or_insert_with(|| bytes::BytesMut::with_capacity(n))
                .extend_from_slice(&buf);
        }
        Ok(out.map(|b| b.freeze()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tap_gets_every_byte_in_order_in_pieces_of_the_size_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        let data: Vec<u8> = (0..(3 * READ_CHUNK + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&p, [b"head".as_slice(), &data].concat()).unwrap();
        let (sender, taps) = feed(p, 4, data.len() as u64, 2);
        let run = tokio::spawn(sender.run());
        let mut got = Vec::new();
        let mut st = taps[0].state.lock().await;
        while let Some(b) = st.next(1000).await {
            assert!(b.len() <= 1000);
            got.extend_from_slice(&b);
        }
        run.await.unwrap();
        assert_eq!(got, data);
        assert_eq!(st.pos, data.len() as u64);
    }
}
