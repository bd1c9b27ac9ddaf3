//! Upload bodies: a byte range of a blob source streamed in read-sized
//! pieces and hashed on the way out, so that the last piece can be withheld
//! when the hash is wrong (the registry then never commits the blob).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{BlobSource, Digest};

/// Read size when streaming a blob from disk.
pub(super) const READ_CHUNK: usize = 512 << 10;

pub(super) fn corrupt_error(digest: &Digest, got: &str) -> String {
    format!(
        "blob {digest}: the source is corrupt (its content hashes to sha256:{got}); \
         the upload was aborted and nothing was committed"
    )
}

/// Shared state between an upload body stream and its driver.
#[derive(Clone, Default)]
pub(super) struct StreamShared {
    /// Bytes handed to the HTTP stack.
    pub(super) sent: Arc<AtomicU64>,
    /// Set when the stream refused to finish (digest mismatch, short file).
    pub(super) failure: Arc<Mutex<Option<String>>>,
    /// When the last byte was handed to the HTTP stack.
    pub(super) body_out: Arc<Mutex<Option<std::time::Instant>>>,
}

enum Reader {
    File(tokio::fs::File),
    Mem(Bytes, usize),
    Package(std::sync::Arc<crate::package::source::PackageFile>, u64),
    Fed(Box<super::feed::FedReader>),
}

pub(super) struct BodyState {
    reader: Reader,
    remaining: u64,
    hasher: Arc<Mutex<Sha256>>,
    /// Checked after the last byte was read, before it is sent.
    expect: Option<Digest>,
    shared: StreamShared,
    done: bool,
}

/// A streaming body of `source[start..end)`, hashed into `hasher` as it
/// goes; when `expect` is given (`end` is the blob's end), the final chunk
/// is only yielded if the hash matches, else the stream fails.
pub(super) async fn range_body(
    source: &BlobSource,
    start: u64,
    end: u64,
    hasher: Arc<Mutex<Sha256>>,
    expect: Option<Digest>,
    shared: StreamShared,
) -> anyhow::Result<reqwest::Body> {
    let stream = range_stream(source, start, end, hasher, expect, shared).await?;
    Ok(reqwest::Body::wrap_stream(stream))
}

pub(super) async fn range_stream(
    source: &BlobSource,
    start: u64,
    end: u64,
    hasher: Arc<Mutex<Sha256>>,
    expect: Option<Digest>,
    shared: StreamShared,
) -> anyhow::Result<impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static>
{
    let fed = match source {
        BlobSource::Fed {
            tap, path, offset, ..
        } => super::feed::FedReader::at(tap, path.clone(), *offset, start).await,
        _ => None,
    };
    let reader = match source {
        _ if fed.is_some() => Reader::Fed(Box::new(fed.expect("checked"))),
        BlobSource::FileRange { path, offset, .. } | BlobSource::Fed { path, offset, .. } => {
            let mut f = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            f.seek(std::io::SeekFrom::Start(offset + start))
                .await
                .with_context(|| format!("seeking in {}", path.display()))?;
            Reader::File(f)
        }
        BlobSource::Bytes(b) => Reader::Mem(b.clone(), start as usize),
        BlobSource::PackageRange { file, offset, .. } => {
            Reader::Package(file.clone(), offset + start)
        }
    };
    let state = BodyState {
        reader,
        remaining: end - start,
        hasher,
        expect,
        shared,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if st.remaining == 0 {
            // Empty range: only the digest check is left.
            st.done = true;
            *st.shared.body_out.lock().unwrap() = Some(std::time::Instant::now());
            if let Some(exp) = &st.expect {
                let got = hex::encode(st.hasher.lock().unwrap().clone().finalize());
                if got != exp.hex() {
                    let msg = corrupt_error(exp, &got);
                    *st.shared.failure.lock().unwrap() = Some(msg.clone());
                    return Some((Err(std::io::Error::other(msg)), st));
                }
            }
            return None;
        }
        let n = st.remaining.min(READ_CHUNK as u64) as usize;
        let chunk = match &mut st.reader {
            Reader::File(f) => {
                let mut buf = vec![0u8; n];
                if let Err(e) = f.read_exact(&mut buf).await {
                    st.done = true;
                    let msg = format!("reading the blob source: {e} (the file is shorter than its index says: truncated or corrupt)");
                    *st.shared.failure.lock().unwrap() = Some(msg.clone());
                    return Some((Err(std::io::Error::other(msg)), st));
                }
                Bytes::from(buf)
            }
            Reader::Mem(b, pos) => {
                let c = b.slice(*pos..*pos + n);
                *pos += n;
                c
            }
            Reader::Package(file, pos) => {
                let (file, at) = (file.clone(), *pos);
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, at).map(|_| buf)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                match read {
                    Ok(buf) => {
                        *pos += n as u64;
                        Bytes::from(buf)
                    }
                    Err(e) => {
                        st.done = true;
                        let msg = format!("reading the blob source: {e} (a volume of the split package is unreadable)");
                        *st.shared.failure.lock().unwrap() = Some(msg.clone());
                        return Some((Err(std::io::Error::other(msg)), st));
                    }
                }
            }
            Reader::Fed(r) => match r.read(n).await {
                Ok(b) => b,
                Err(e) => {
                    st.done = true;
                    let msg = format!("reading the blob source: {e} (the file is shorter than its index says: truncated or corrupt)");
                    *st.shared.failure.lock().unwrap() = Some(msg.clone());
                    return Some((Err(std::io::Error::other(msg)), st));
                }
            },
        };
        st.hasher.lock().unwrap().update(&chunk);
        st.remaining -= n as u64;
        if st.remaining == 0 {
            st.done = true;
            if let Some(exp) = &st.expect {
                let got = hex::encode(st.hasher.lock().unwrap().clone().finalize());
                if got != exp.hex() {
                    // Withhold the last bytes: the registry never sees a
                    // complete body, so it cannot commit the blob.
                    let msg = corrupt_error(exp, &got);
                    *st.shared.failure.lock().unwrap() = Some(msg.clone());
                    return Some((Err(std::io::Error::other(msg)), st));
                }
            }
        }
        st.shared.sent.fetch_add(n as u64, Ordering::Relaxed);
        if st.remaining == 0 {
            *st.shared.body_out.lock().unwrap() = Some(std::time::Instant::now());
        }
        Some((Ok::<Bytes, std::io::Error>(chunk), st))
    });
    Ok(stream)
}

/// Hash `source[0..len)` from disk into a fresh hasher (resume).
pub(super) async fn hash_prefix(source: &BlobSource, len: u64) -> anyhow::Result<Sha256> {
    match source {
        BlobSource::Bytes(b) => {
            let mut h = Sha256::new();
            h.update(&b[..len as usize]);
            Ok(h)
        }
        BlobSource::PackageRange { file, offset, .. } => {
            let (file, offset) = (file.clone(), *offset);
            tokio::task::spawn_blocking(move || -> anyhow::Result<Sha256> {
                let mut h = Sha256::new();
                let mut buf = Vec::new();
                crate::bundle::reader::hash_range_into(&file, offset, len, &mut buf, |c| {
                    h.update(c)
                })?;
                Ok(h)
            })
            .await?
        }
        BlobSource::FileRange { path, offset, .. } | BlobSource::Fed { path, offset, .. } => {
            let path = path.clone();
            let offset = *offset;
            tokio::task::spawn_blocking(move || -> anyhow::Result<Sha256> {
                use std::io::{Read, Seek};
                let mut f = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                f.seek(std::io::SeekFrom::Start(offset))?;
                let mut h = Sha256::new();
                let mut left = len;
                let mut buf = vec![0u8; 1 << 20];
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    f.read_exact(&mut buf[..n])
                        .with_context(|| format!("reading {}", path.display()))?;
                    h.update(&buf[..n]);
                    left -= n as u64;
                }
                Ok(h)
            })
            .await?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn corrupt_stream_withholds_last_chunk() {
        let data = Bytes::from(vec![7u8; READ_CHUNK * 2 + 10]);
        let src = BlobSource::Bytes(data.clone());
        // A wrong expectation: the stream fails instead of the last chunk.
        let wrong = Digest::of(b"something else");
        let shared = StreamShared::default();
        let s = range_stream(
            &src,
            0,
            data.len() as u64,
            Default::default(),
            Some(wrong.clone()),
            shared.clone(),
        )
        .await
        .unwrap();
        let items: Vec<_> = s.collect().await;
        let sent: usize = items
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|b| b.len())
            .sum();
        assert_eq!(sent, READ_CHUNK * 2, "the last chunk must be withheld");
        let err = items.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(
            err.contains(&wrong.to_string()) && err.contains("corrupt"),
            "{err}"
        );
        assert!(shared.failure.lock().unwrap().is_some());
        // The right expectation: every byte, no error.
        let right = Digest::of(&data);
        let shared = StreamShared::default();
        let s = range_stream(
            &src,
            0,
            data.len() as u64,
            Default::default(),
            Some(right),
            shared.clone(),
        )
        .await
        .unwrap();
        let items: Vec<_> = s.collect().await;
        assert!(items.iter().all(|r| r.is_ok()));
        assert_eq!(shared.sent.load(Ordering::Relaxed), data.len() as u64);
    }
}
