//! Blobs, streamed by positioned reads from the bundle file (constant
//! memory per client: one chunk in flight), with `Range`.
//!
//! A blob whose bytes do not match its digest is never served whole:
//! - a full GET of an unchecked blob hashes while streaming and checks the
//!   digest before the last chunk leaves; on a mismatch the connection is
//!   cut (the client never gets a complete body) and the blob is marked bad;
//! - a range of an unchecked blob, or a small blob, is hashed first (once,
//!   however many clients ask at the same time);
//! - `--verify` checks every blob at start.
//!
//! The outcome is remembered per digest, so each blob is hashed once.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use super::index::BlobLoc;
use crate::oci::Digest;
use crate::package::source::PackageFile;

/// Bytes per positioned read.
const CHUNK: u64 = 256 << 10;
/// Blobs up to this size are hashed before their first byte is sent.
const CHECK_FIRST_MAX: u64 = 16 << 20;

pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

type Outcome = Result<(), Arc<str>>;

/// What a check outcome is valid for: the bundle file's identity, size
/// and modification time when it was checked. Bytes copied over the bundle
/// in place (`cp` keeps the inode) change the time: the blob is checked
/// again instead of being served under the old outcome.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(file: &PackageFile) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let f = match file {
            PackageFile::Plain(f) => f,
            // A split package's volumes: read through parity, which
            // repairs or refuses damage itself; one stamp for all.
            PackageFile::Volumes(_) => {
                return Some(Stamp {
                    dev: 0,
                    ino: 0,
                    size: 0,
                    mtime: (0, 0),
                })
            }
        };
        let m = f.metadata().ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

#[derive(Default)]
pub struct Verifier {
    cells: Mutex<HashMap<Digest, (Option<Stamp>, Arc<OnceCell<Outcome>>)>>,
}

impl Verifier {
    /// The outcome cell of `d` as read from `file` now: a fresh one when
    /// the file changed since the last check.
    fn cell(&self, d: &Digest, file: &PackageFile) -> Arc<OnceCell<Outcome>> {
        let now = Stamp::of(file);
        let mut cells = self.cells.lock().unwrap();
        let entry = cells
            .entry(d.clone())
            .or_insert_with(|| (now, Arc::default()));
        if entry.0 != now {
            *entry = (now, Arc::default());
        }
        entry.1.clone()
    }

    /// What is known about `d` in `file` (None: not checked yet).
    pub fn known(&self, d: &Digest, file: &PackageFile) -> Option<Outcome> {
        self.cell(d, file).get().cloned()
    }

    pub fn mark_ok(&self, d: &Digest, file: &PackageFile) {
        let _ = self.cell(d, file).set(Ok(()));
    }

    /// Hash the blob now unless it was (one hash however many callers).
    pub async fn ensure(
        &self,
        d: &Digest,
        file: Arc<crate::package::source::PackageFile>,
        loc: BlobLoc,
        label: &str,
    ) -> Outcome {
        let cell = self.cell(d, &file);
        let label = label.to_string();
        let want = d.clone();
        cell.get_or_init(|| async move {
            let ext = loc.extent;
            let r = tokio::task::spawn_blocking(move || {
                let mut buf = Vec::new();
                crate::bundle::reader::hash_range(&file, ext.offset, ext.size, &mut buf)
            })
            .await;
            match r {
                Ok(Ok(got)) if got == want => Ok(()),
                Ok(Ok(got)) => Err(damaged(&want, &got, &label)),
                Ok(Err(e)) => Err(format!("reading blob {want} from {label}: {e}").into()),
                Err(e) => Err(format!("checking blob {want}: {e}").into()),
            }
        })
        .await
        .clone()
    }

    /// Whether a full GET of this blob should hash while streaming.
    pub fn stream_check(
        &self,
        d: &Digest,
        size: u64,
        file: &PackageFile,
    ) -> Option<Arc<OnceCell<Outcome>>> {
        let cell = self.cell(d, file);
        (cell.get().is_none() && size > CHECK_FIRST_MAX).then_some(cell)
    }
}

fn damaged(want: &Digest, got: &Digest, label: &str) -> Arc<str> {
    let msg = format!(
        "blob {want} in {label} is damaged (its content has digest {got}); it is not served: re-make or re-copy the bundle"
    );
    tracing::error!("{msg}");
    msg.into()
}

/// A requested byte range, inclusive end.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum RangeAsk {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// Parse a `Range` header for a blob of `size` bytes. Only a single
/// `bytes=` range is honoured; anything else is served whole, as RFC 9110
/// allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last b bytes.
        let Ok(n) = b.parse::<u64>() else {
            return RangeAsk::Whole;
        };
        if n == 0 || size == 0 {
            return RangeAsk::Unsatisfiable;
        }
        return RangeAsk::Part(size.saturating_sub(n), size - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeAsk::Whole;
    };
    if start >= size {
        return RangeAsk::Unsatisfiable;
    }
    let end = if b.is_empty() {
        size - 1
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e.min(size - 1),
            _ => return RangeAsk::Whole,
        }
    };
    RangeAsk::Part(start, end)
}

struct Streaming {
    file: Arc<crate::package::source::PackageFile>,
    pos: u64,
    end: u64,
    check: Option<Check>,
}

struct Check {
    hasher: Sha256,
    digest: Digest,
    cell: Arc<OnceCell<Outcome>>,
    label: String,
}

/// A body streaming `len` bytes at `offset` of `file`; with `check`, the
/// whole blob is hashed on the way and the last chunk is held back unless
/// it matches.
pub fn stream(
    file: Arc<crate::package::source::PackageFile>,
    offset: u64,
    len: u64,
    check: Option<(Digest, Arc<OnceCell<Outcome>>, String)>,
) -> Body {
    let st = Streaming {
        file,
        pos: offset,
        end: offset + len,
        check: check.map(|(digest, cell, label)| Check {
            hasher: Sha256::new(),
            digest,
            cell,
            label,
        }),
    };
    let s = futures_util::stream::try_unfold(st, |mut st| async move {
        if st.pos >= st.end {
            return Ok(None);
        }
        let n = (st.end - st.pos).min(CHUNK) as usize;
        let (file, pos) = (st.file.clone(), st.pos);
        let buf = tokio::task::spawn_blocking(move || {
            let mut b = vec![0u8; n];
            file.read_exact_at(&mut b, pos).map(|_| b)
        })
        .await
        .map_err(std::io::Error::other)??;
        st.pos += n as u64;
        if let Some(c) = st.check.as_mut() {
            c.hasher.update(&buf);
        }
        if st.pos >= st.end {
            if let Some(c) = st.check.take() {
                let got = Digest::from_sha256(c.hasher);
                if got != c.digest {
                    let msg = damaged(&c.digest, &got, &c.label);
                    let _ = c.cell.set(Err(msg.clone()));
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        msg.to_string(),
                    ));
                }
                let _ = c.cell.set(Ok(()));
            }
        }
        Ok(Some((Frame::data(Bytes::from(buf)), st)))
    });
    StreamBody::new(s).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), RangeAsk::Part(0, 3));
        assert_eq!(parse_range(Some("bytes=4-"), 10), RangeAsk::Part(4, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeAsk::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), RangeAsk::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeAsk::Whole);
    }
}
