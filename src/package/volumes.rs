//! A package split into volumes for removable media (`pack --split SIZE
//! --parity K`), read as one byte stream.
//!
//! Layout, for a package `NAME.tar`:
//! - `NAME.tar.001` … `NAME.tar.00N`: the package's bytes cut into pieces of
//!   SIZE bytes (the last one shorter). Plain slices: `cat NAME.tar.0* >
//!   NAME.tar` gives the package back, without bundler.
//! - `NAME.tar.par1` … `NAME.tar.parK`: Reed–Solomon parity over the data
//!   volumes (each stripe: the same CHUNK-byte range of every data volume,
//!   zero-padded), so that any K missing or damaged volumes can be rebuilt.
//!   Each ends with a copy of the volume table (trailer: table JSON, its
//!   length as 8 bytes little-endian, [`TRAILER_MAGIC`]).
//! - `NAME.tar.volumes.json`: the volume table (every volume's name, size
//!   and sha256), so a reader can name a damaged volume. The table cannot be
//!   inside the stream it describes; `package.json` (in the stream, signed)
//!   records the split itself, and pins every member, so a table edited to
//!   match edited volumes still fails the member check.
//!
//! Reading: [`VolumeSet`] serves positioned reads across volume
//! boundaries; a missing or damaged data volume is rebuilt in memory one
//! stripe at a time from the others and the parity (memory: one stripe,
//! (N + K) × CHUNK bytes, while it is decoded, one decode at a time, and up
//! to 16 MiB of rebuilt
//! chunks kept for the next reads). [`repair`] writes rebuilt volumes back.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::oci::Digest;

pub const TABLE_KIND: &str = "bundler-package-volumes";
pub const TABLE_SUFFIX: &str = ".volumes.json";
pub const TRAILER_MAGIC: &[u8; 8] = b"BNDLVOL1";
/// Largest volume table read (a table of 32k volumes is ~4 MiB).
const MAX_TABLE: u64 = 8 << 20;
/// Memory for the rebuilt chunks kept for reuse.
const REBUILT_BUDGET: u64 = 16 << 20;
/// Memory for one stripe (all shards of it).
const STRIPE_BUDGET: u64 = 64 << 20;

/// The rebuilt chunks of one stripe, by data volume.
type RebuiltStripe = std::sync::Arc<HashMap<usize, Vec<u8>>>;

/// The volume table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeTable {
    pub kind: String,
    /// File name of the package the volumes make up.
    pub package: String,
    pub stream_size: u64,
    pub volume_size: u64,
    pub chunk_size: u64,
    pub data: Vec<VolumeRecord>,
    #[serde(default)]
    pub parity: Vec<VolumeRecord>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeRecord {
    pub name: String,
    /// Data volumes: the file size. Parity volumes: the parity bytes
    /// (before the trailer).
    pub size: u64,
    pub sha256: Digest,
}

/// Name of data volume `i` (1-based) of `package` (`NAME.tar`).
pub fn data_name(package: &str, i: usize, count: usize) -> String {
    let width = count.to_string().len().max(3);
    format!("{package}.{i:0width$}")
}

pub fn parity_name(package: &str, j: usize) -> String {
    format!("{package}.par{j}")
}

/// Bytes of each stripe's chunk for `n` data and `k` parity volumes of
/// `volume_size`: a multiple of 64 (the coder's unit), at most 256 KiB, and
/// small enough that one stripe stays within [`STRIPE_BUDGET`].
pub fn chunk_size(volume_size: u64, n: usize, k: usize) -> u64 {
    let by_budget = STRIPE_BUDGET / (n + k).max(1) as u64;
    let c = by_budget.clamp(4096, 256 << 10).min(volume_size.max(64));
    c.div_ceil(64) * 64
}

/// State of one volume after the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeState {
    Good,
    Missing,
    Damaged(String),
}

#[derive(Debug)]
struct Volume {
    path: PathBuf,
    record: VolumeRecord,
    file: Option<File>,
    state: VolumeState,
}

/// The volumes of a split package, opened for reading as one stream.
#[derive(Debug)]
pub struct VolumeSet {
    pub dir: PathBuf,
    pub table: VolumeTable,
    /// Where the table was read from.
    pub table_source: String,
    data: Vec<Volume>,
    parity: Vec<Volume>,
    /// The stripes rebuilt last, most recent at the back: (stripe index,
    /// data volume -> chunk). Several, because concurrent readers (blob
    /// uploads) read at different places; bounded by [`REBUILT_BUDGET`].
    stripe: Mutex<std::collections::VecDeque<(u64, RebuiltStripe)>>,
    /// Held while a stripe is decoded: one decoder's memory at a time,
    /// however many readers wait for rebuilt bytes.
    decoding: Mutex<()>,
}

/// Is `path` (by name) a volume of a split package, or its table?
pub fn is_volume_name(path: &Path) -> bool {
    base_package_name(path).is_some()
}

/// `NAME.tar` of a volume path `NAME.tar.001`, `NAME.tar.par2` or
/// `NAME.tar.volumes.json`.
fn base_package_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if let Some(b) = name.strip_suffix(TABLE_SUFFIX) {
        return Some(b.to_string());
    }
    let (base, ext) = name.rsplit_once('.')?;
    let numbered = ext.len() >= 3 && ext.bytes().all(|b| b.is_ascii_digit());
    let parity = ext
        .strip_prefix("par")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (base.ends_with(".tar") && (numbered || parity)).then(|| base.to_string())
}

/// The split packages in `dir` (by their base name `NAME.tar`).
pub fn sets_in_dir(dir: &Path) -> Vec<PathBuf> {
    let mut bases: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| base_package_name(&e.path()))
        .collect();
    bases.sort();
    bases.dedup();
    bases.into_iter().map(|b| dir.join(b)).collect()
}

fn read_table_file(path: &Path) -> anyhow::Result<VolumeTable> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > MAX_TABLE {
        bail!(
            "{}: {} bytes is too large for a volume table",
            path.display(),
            meta.len()
        );
    }
    let t: VolumeTable = serde_json::from_slice(&std::fs::read(path)?)
        .with_context(|| format!("{}: malformed volume table", path.display()))?;
    Ok(t)
}

/// The table at the end of a parity volume.
fn read_trailer(path: &Path) -> anyhow::Result<(VolumeTable, u64)> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    if len < 16 {
        bail!("too short for a parity volume");
    }
    let mut tail = [0u8; 16];
    f.read_exact_at(&mut tail, len - 16)?;
    if &tail[8..] != TRAILER_MAGIC {
        bail!("no volume table at its end");
    }
    let tlen = u64::from_le_bytes(tail[..8].try_into().unwrap());
    if tlen > MAX_TABLE || tlen + 16 > len {
        bail!("volume table length {tlen} is impossible");
    }
    let mut buf = vec![0u8; tlen as usize];
    f.read_exact_at(&mut buf, len - 16 - tlen)?;
    let t: VolumeTable = serde_json::from_slice(&buf).context("malformed volume table")?;
    Ok((t, len - 16 - tlen))
}

fn check_table(t: &VolumeTable, what: &str) -> anyhow::Result<()> {
    let n = t.data.len() as u64;
    if t.kind != TABLE_KIND
        || n == 0
        || t.volume_size == 0
        || t.chunk_size == 0
        || t.chunk_size % 64 != 0
        || t.stream_size > n * t.volume_size
        || t.stream_size <= (n - 1) * t.volume_size
    {
        bail!("{what}: the volume table is inconsistent: copy the volumes again");
    }
    for (i, v) in t.data.iter().enumerate() {
        let expect = if i + 1 < t.data.len() {
            t.volume_size
        } else {
            t.stream_size - (n - 1) * t.volume_size
        };
        if v.size != expect || v.name.contains('/') {
            bail!(
                "{what}: the volume table is inconsistent ({}): copy the volumes again",
                v.name
            );
        }
    }
    let stripes = t.volume_size.div_ceil(t.chunk_size);
    if t.parity
        .iter()
        .any(|p| p.size != stripes * t.chunk_size || p.name.contains('/'))
    {
        bail!("{what}: the volume table's parity sizes are inconsistent");
    }
    Ok(())
}

impl VolumeSet {
    /// Open the split package `base` (`DIR/NAME.tar`, the name without the
    /// volume suffix): its table, and which volumes are there at the right
    /// size. [`VolumeSet::check_digests`] finds damaged ones.
    pub fn open(base: &Path) -> anyhow::Result<VolumeSet> {
        let dir = match base.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = base
            .file_name()
            .and_then(|n| n.to_str())
            .context("volume set without a name")?
            .to_string();
        let what = format!("split package {}", base.display());
        let (table, table_source) = Self::find_table(&dir, &name, &what)?;
        check_table(&table, &what)?;
        if table.package != name {
            bail!(
                "{what}: the volume table is for {:?}: the volumes were renamed; give them their names back",
                table.package
            );
        }
        let open = |rec: &VolumeRecord, parity: bool| -> Volume {
            let path = dir.join(&rec.name);
            let (file, state) = match File::open(&path) {
                Err(_) => (None, VolumeState::Missing),
                Ok(f) => {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    let ok = if parity {
                        len > rec.size
                    } else {
                        len == rec.size
                    };
                    if ok {
                        (Some(f), VolumeState::Good)
                    } else {
                        (
                            None,
                            VolumeState::Damaged(format!(
                                "{len} bytes, expected {}{}",
                                rec.size,
                                if parity { " and a table" } else { "" }
                            )),
                        )
                    }
                }
            };
            Volume {
                path,
                record: rec.clone(),
                file,
                state,
            }
        };
        let data = table.data.iter().map(|r| open(r, false)).collect();
        let parity = table.parity.iter().map(|r| open(r, true)).collect();
        let set = VolumeSet {
            dir,
            table,
            table_source,
            data,
            parity,
            stripe: Mutex::new(std::collections::VecDeque::new()),
            decoding: Mutex::new(()),
        };
        set.require_readable(&what)?;
        Ok(set)
    }

    fn find_table(dir: &Path, name: &str, what: &str) -> anyhow::Result<(VolumeTable, String)> {
        let sidecar = dir.join(format!("{name}{TABLE_SUFFIX}"));
        if sidecar.exists() {
            match read_table_file(&sidecar) {
                Ok(t) => return Ok((t, sidecar.display().to_string())),
                Err(e) => tracing::warn!("{e:#}; looking for the copy in the parity volumes"),
            }
        }
        for j in 1..=256 {
            let p = dir.join(parity_name(name, j));
            if !p.exists() {
                continue;
            }
            if let Ok((t, _)) = read_trailer(&p) {
                return Ok((t, p.display().to_string()));
            }
        }
        bail!(
            "{what}: no volume table ({name}{TABLE_SUFFIX}, or a parity volume {name}.parN): \
             copy it from the medium too, or join the volumes (`cat {name}.0* > {name}`)"
        )
    }

    /// Data volumes that are missing or damaged, and parity volumes that are good.
    fn bad_data(&self) -> Vec<usize> {
        (0..self.data.len())
            .filter(|&i| self.data[i].state != VolumeState::Good)
            .collect()
    }

    fn good_parity(&self) -> Vec<usize> {
        (0..self.parity.len())
            .filter(|&j| self.parity[j].state == VolumeState::Good)
            .collect()
    }

    fn require_readable(&self, what: &str) -> anyhow::Result<()> {
        let bad = self.bad_data();
        if bad.len() > self.good_parity().len() {
            bail!(
                "{what}: {}; {} of {} parity volumes are usable, so it cannot be rebuilt: copy the missing volumes again",
                self.problems().join("; "),
                self.good_parity().len(),
                self.parity.len()
            );
        }
        Ok(())
    }

    /// Hash every volume against the table; damaged ones are marked (and
    /// read from parity from then on). Fails when more are bad than
    /// parity can rebuild.
    pub fn check_digests(&mut self, progress: &crate::progress::Progress) -> anyhow::Result<()> {
        let what = format!(
            "split package {}",
            self.dir.join(&self.table.package).display()
        );
        let mut buf = Vec::new();
        for v in self.data.iter_mut().chain(self.parity.iter_mut()) {
            let Some(f) = &v.file else { continue };
            let mut t = progress.transfer(&v.record.name, v.record.size);
            let got = crate::bundle::reader::hash_range(f, 0, v.record.size, &mut buf)
                .with_context(|| format!("reading {}", v.path.display()))?;
            t.inc(v.record.size);
            t.finish("checked");
            if got != v.record.sha256 {
                v.state =
                    VolumeState::Damaged(format!("sha256 {got}, expected {}", v.record.sha256));
                v.file = None;
            }
        }
        self.stripe.lock().unwrap().clear();
        self.require_readable(&what)
    }

    /// One line per volume that is not good (empty when all are).
    pub fn problems(&self) -> Vec<String> {
        self.data
            .iter()
            .chain(self.parity.iter())
            .filter_map(|v| match &v.state {
                VolumeState::Good => None,
                VolumeState::Missing => Some(format!("volume {} is missing", v.record.name)),
                VolumeState::Damaged(why) => {
                    Some(format!("volume {} is damaged ({why})", v.record.name))
                }
            })
            .collect()
    }

    pub fn stream_len(&self) -> u64 {
        self.table.stream_size
    }

    /// The first data volume's path (how the set is named in messages).
    pub fn first_volume(&self) -> PathBuf {
        self.data[0].path.clone()
    }

    /// Positioned read across volumes; bad volumes are rebuilt from parity.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
        let size = self.table.volume_size;
        if offset + buf.len() as u64 > self.table.stream_size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the split package",
            ));
        }
        while !buf.is_empty() {
            let i = (offset / size) as usize;
            let within = offset % size;
            let n = (buf.len() as u64).min(size - within) as usize;
            let (now, rest) = buf.split_at_mut(n);
            match &self.data[i].file {
                Some(f) => f.read_exact_at(now, within)?,
                None => self.read_rebuilt(i, now, within)?,
            }
            buf = rest;
            offset += n as u64;
        }
        Ok(())
    }

    fn read_rebuilt(&self, vol: usize, mut buf: &mut [u8], mut within: u64) -> std::io::Result<()> {
        let c = self.table.chunk_size;
        while !buf.is_empty() {
            let stripe = within / c;
            let at = (within % c) as usize;
            let n = buf.len().min(c as usize - at);
            let rebuilt = self.rebuilt(stripe)?;
            let chunk = &rebuilt[&vol];
            buf[..n].copy_from_slice(&chunk[at..at + n]);
            buf = &mut buf[n..];
            within += n as u64;
        }
        Ok(())
    }

    /// Stripe `stripe`'s rebuilt chunks, from the cache or decoded now.
    fn rebuilt(&self, stripe: u64) -> std::io::Result<RebuiltStripe> {
        {
            let mut cache = self.stripe.lock().unwrap();
            if let Some(pos) = cache.iter().position(|(s, _)| *s == stripe) {
                let hit = cache.remove(pos).expect("present");
                let out = hit.1.clone();
                cache.push_back(hit);
                return Ok(out);
            }
        }
        // Decoded outside the cache lock (readers of good volumes and of
        // cached stripes go on), one stripe at a time.
        let _one = self.decoding.lock().unwrap();
        if let Some((_, hit)) = self
            .stripe
            .lock()
            .unwrap()
            .iter()
            .find(|(s, _)| *s == stripe)
        {
            return Ok(hit.clone());
        }
        let fresh = std::sync::Arc::new(self.rebuild_stripe(stripe)?);
        let per_stripe = (self.bad_data().len().max(1) as u64) * self.table.chunk_size;
        let keep = (REBUILT_BUDGET / per_stripe).clamp(2, 64) as usize;
        let mut cache = self.stripe.lock().unwrap();
        if !cache.iter().any(|(s, _)| *s == stripe) {
            cache.push_back((stripe, fresh.clone()));
            while cache.len() > keep {
                cache.pop_front();
            }
        }
        Ok(fresh)
    }

    /// Chunk `stripe` of data volume `i` as coded: zero-padded to the chunk size.
    fn data_chunk(&self, i: usize, stripe: u64, out: &mut [u8]) -> std::io::Result<()> {
        out.fill(0);
        let start = stripe * self.table.chunk_size;
        let len = self.data[i].record.size;
        if start < len {
            let n = (len - start).min(out.len() as u64) as usize;
            self.data[i]
                .file
                .as_ref()
                .expect("good volume")
                .read_exact_at(&mut out[..n], start)?;
        }
        Ok(())
    }

    /// Rebuild chunk `stripe` of every bad data volume.
    fn rebuild_stripe(&self, stripe: u64) -> std::io::Result<HashMap<usize, Vec<u8>>> {
        let c = self.table.chunk_size as usize;
        let (n, k) = (self.data.len(), self.parity.len());
        let bad = self.bad_data();
        let mut dec =
            reed_solomon_simd::ReedSolomonDecoder::new(n, k, c).map_err(std::io::Error::other)?;
        let mut chunk = vec![0u8; c];
        for i in (0..n).filter(|i| !bad.contains(i)) {
            self.data_chunk(i, stripe, &mut chunk)?;
            dec.add_original_shard(i, &chunk)
                .map_err(std::io::Error::other)?;
        }
        for j in self.good_parity().into_iter().take(bad.len()) {
            let f = self.parity[j].file.as_ref().expect("good parity");
            f.read_exact_at(&mut chunk, stripe * c as u64)?;
            dec.add_recovery_shard(j, &chunk)
                .map_err(std::io::Error::other)?;
        }
        let result = dec.decode().map_err(std::io::Error::other)?;
        Ok(result
            .restored_original_iter()
            .map(|(i, d)| (i, d.to_vec()))
            .collect())
    }
}

/// Write `stream_len` bytes, read by `fill(offset, buf)`, as volumes of
/// `volume_size` plus `parity` parity volumes beside `package` (temp
/// names: returned as (temp, final) pairs for the caller to rename).
pub struct SplitWriter {
    package: PathBuf,
    volume_size: u64,
    parity: usize,
    /// (temp, final, hasher, written) of each data volume so far.
    data: Vec<(PathBuf, PathBuf, File, Sha256, u64)>,
    stream_size: u64,
}

impl SplitWriter {
    pub fn new(package: &Path, volume_size: u64, parity: usize) -> Self {
        SplitWriter {
            package: package.to_path_buf(),
            volume_size,
            parity,
            data: Vec::new(),
            stream_size: 0,
        }
    }

    fn name(&self) -> String {
        self.package
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The temporaries written so far (to discard them on failure).
    pub fn temps(&self) -> Vec<(PathBuf, PathBuf)> {
        self.data
            .iter()
            .map(|v| (v.0.clone(), v.1.clone()))
            .collect()
    }

    /// Name the data volumes (numbered now that their count is known),
    /// write the parity volumes and the table; returns the table and the
    /// (temp, final) pairs to rename.
    pub fn finish(
        mut self,
        progress: &crate::progress::Progress,
    ) -> anyhow::Result<(VolumeTable, Vec<(PathBuf, PathBuf)>)> {
        let name = self.name();
        let mut out = Vec::new();
        let mut data_records = Vec::new();
        let count = self.data.len();
        if count == 0 {
            bail!("internal: an empty package");
        }
        for (i, (tmp, _, f, h, written)) in self.data.drain(..).enumerate() {
            f.sync_all()?;
            let final_name = data_name(&name, i + 1, count);
            data_records.push(VolumeRecord {
                name: final_name.clone(),
                size: written,
                sha256: Digest::from_sha256(h),
            });
            out.push((tmp, self.package.with_file_name(final_name)));
        }
        let chunk = chunk_size(self.volume_size, count, self.parity);
        let mut table = VolumeTable {
            kind: TABLE_KIND.into(),
            package: name.clone(),
            stream_size: self.stream_size,
            volume_size: self.volume_size,
            chunk_size: chunk,
            data: data_records,
            parity: Vec::new(),
        };
        if self.parity > 0 {
            let data_files: Vec<File> = out
                .iter()
                .map(|(tmp, _)| File::open(tmp))
                .collect::<std::io::Result<_>>()?;
            let mut parity_files = Vec::new();
            for j in 1..=self.parity {
                let fin = self.package.with_file_name(parity_name(&name, j));
                let tmp = crate::atomic_file::temp_path_for(&fin);
                let f = crate::atomic_file::create_tracked(&tmp)?;
                parity_files.push((tmp, fin, Some(f), Sha256::new()));
            }
            encode_parity(&table, &data_files, &mut parity_files, progress)?;
            let stripes = self.volume_size.div_ceil(chunk);
            for (tmp, fin, _, h) in &parity_files {
                table.parity.push(VolumeRecord {
                    name: fin.file_name().unwrap().to_string_lossy().into_owned(),
                    size: stripes * chunk,
                    sha256: Digest::from_sha256(h.clone()),
                });
                let _ = tmp;
            }
            let trailer = trailer_bytes(&table)?;
            for (tmp, fin, f, _) in parity_files {
                let f = f.expect("parity file");
                f.write_all_at(&trailer, stripes * chunk)
                    .with_context(|| format!("writing {}", tmp.display()))?;
                f.sync_all()?;
                out.push((tmp, fin));
            }
        }
        let table_path = self.package.with_file_name(format!("{name}{TABLE_SUFFIX}"));
        let tmp = crate::atomic_file::temp_path_for(&table_path);
        let mut f = crate::atomic_file::create_tracked(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&table)?)?;
        f.sync_all()?;
        out.push((tmp, table_path));
        Ok((table, out))
    }
}

impl Write for SplitWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let need_new = self.data.last().is_none_or(|v| v.4 == self.volume_size);
        if need_new {
            let idx = self.data.len() + 1;
            let fin = self
                .package
                .with_file_name(format!("{}.vol{idx}", self.name()));
            let tmp = crate::atomic_file::temp_path_for(&fin);
            let f = crate::atomic_file::create_tracked(&tmp).map_err(std::io::Error::other)?;
            self.data.push((tmp, fin, f, Sha256::new(), 0));
        }
        let v = self.data.last_mut().unwrap();
        let n = (buf.len() as u64).min(self.volume_size - v.4) as usize;
        v.2.write_all(&buf[..n])?;
        v.3.update(&buf[..n]);
        v.4 += n as u64;
        self.stream_size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(v) = self.data.last_mut() {
            v.2.flush()?;
        }
        Ok(())
    }
}

fn trailer_bytes(table: &VolumeTable) -> anyhow::Result<Vec<u8>> {
    let mut t = serde_json::to_vec(table)?;
    let len = t.len() as u64;
    t.extend_from_slice(&len.to_le_bytes());
    t.extend_from_slice(TRAILER_MAGIC);
    Ok(t)
}

/// Fill the parity files stripe by stripe from the data volumes.
fn encode_parity(
    table: &VolumeTable,
    data: &[File],
    parity: &mut [(PathBuf, PathBuf, Option<File>, Sha256)],
    progress: &crate::progress::Progress,
) -> anyhow::Result<()> {
    let c = table.chunk_size as usize;
    let (n, k) = (data.len(), parity.len());
    let stripes = table.volume_size.div_ceil(table.chunk_size);
    let mut enc = reed_solomon_simd::ReedSolomonEncoder::new(n, k, c)
        .map_err(|e| anyhow::anyhow!("parity coder for {n}+{k} volumes: {e}"))?;
    let mut chunk = vec![0u8; c];
    let mut t = progress.transfer("parity", stripes * c as u64 * k as u64);
    for s in 0..stripes {
        for (i, f) in data.iter().enumerate() {
            chunk.fill(0);
            let start = s * c as u64;
            let len = table.data[i].size;
            if start < len {
                let m = (len - start).min(c as u64) as usize;
                f.read_exact_at(&mut chunk[..m], start)?;
            }
            enc.add_original_shard(&chunk)
                .map_err(|e| anyhow::anyhow!("parity: {e}"))?;
        }
        let result = enc.encode().map_err(|e| anyhow::anyhow!("parity: {e}"))?;
        for (j, rec) in result.recovery_iter().enumerate() {
            let (tmp, _, f, h) = &mut parity[j];
            if let Some(f) = f {
                f.write_all_at(rec, s * c as u64)
                    .with_context(|| format!("writing {}", tmp.display()))?;
            }
            h.update(rec);
        }
        drop(result);
        t.inc((c * k) as u64);
    }
    t.finish("parity");
    Ok(())
}

/// `bundler repair`: rebuild every missing or damaged volume (data from
/// the others and parity, parity from the data) and the table, writing
/// each atomically; returns the paths written.
pub fn repair(base: &Path, progress: &crate::progress::Progress) -> anyhow::Result<Vec<PathBuf>> {
    let mut set = VolumeSet::open(base)?;
    set.check_digests(progress)?;
    let mut written = Vec::new();
    let bad: Vec<usize> = set.bad_data();
    // Data volumes first: parity is computed from them.
    let mut renamed: BTreeMap<usize, File> = BTreeMap::new();
    for &i in &bad {
        let rec = set.data[i].record.clone();
        let fin = set.dir.join(&rec.name);
        let tmp = crate::atomic_file::temp_path_for(&fin);
        let f = crate::atomic_file::create_tracked(&tmp)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut h = Sha256::new();
        let base_off = i as u64 * set.table.volume_size;
        let mut done = 0u64;
        while done < rec.size {
            let m = (rec.size - done).min(buf.len() as u64) as usize;
            set.read_exact_at(&mut buf[..m], base_off + done)
                .with_context(|| format!("rebuilding {}", rec.name))?;
            f.write_all_at(&buf[..m], done)?;
            h.update(&buf[..m]);
            done += m as u64;
        }
        let got = Digest::from_sha256(h);
        if got != rec.sha256 {
            let _ = std::fs::remove_file(&tmp);
            crate::interrupt::untrack(&tmp);
            bail!("rebuilt {} has sha256 {got}, the table says {}: parity does not match the data; nothing was replaced", rec.name, rec.sha256);
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &fin)
            .with_context(|| format!("renaming {} to {}", tmp.display(), fin.display()))?;
        crate::interrupt::untrack(&tmp);
        renamed.insert(i, File::open(&fin)?);
        written.push(fin);
    }
    for (i, f) in renamed {
        set.data[i].file = Some(f);
        set.data[i].state = VolumeState::Good;
    }
    let bad_parity: Vec<usize> = (0..set.parity.len())
        .filter(|&j| set.parity[j].state != VolumeState::Good)
        .collect();
    if !bad_parity.is_empty() {
        let data_files: Vec<File> = set
            .data
            .iter()
            .map(|v| v.file.as_ref().unwrap().try_clone())
            .collect::<std::io::Result<_>>()?;
        let mut all = Vec::new();
        for (j, rec) in set.table.parity.iter().enumerate() {
            let fin = set.dir.join(&rec.name);
            let tmp = crate::atomic_file::temp_path_for(&fin);
            let f = if bad_parity.contains(&j) {
                Some(crate::atomic_file::create_tracked(&tmp)?)
            } else {
                None
            };
            all.push((tmp, fin, f, Sha256::new()));
        }
        encode_parity(&set.table, &data_files, &mut all, progress)?;
        let trailer = trailer_bytes(&set.table)?;
        for (j, (tmp, fin, f, h)) in all.into_iter().enumerate() {
            let Some(f) = f else { continue };
            let got = Digest::from_sha256(h);
            if got != set.table.parity[j].sha256 {
                let _ = std::fs::remove_file(&tmp);
                crate::interrupt::untrack(&tmp);
                bail!(
                    "rebuilt {} does not match the table: nothing was replaced",
                    fin.display()
                );
            }
            f.write_all_at(&trailer, set.table.parity[j].size)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &fin)?;
            crate::interrupt::untrack(&tmp);
            written.push(fin);
        }
    }
    let table_path = set.dir.join(format!("{}{TABLE_SUFFIX}", set.table.package));
    if read_table_file(&table_path).ok().as_ref() != Some(&set.table) {
        crate::atomic_file::write_atomic(&table_path, &serde_json::to_vec_pretty(&set.table)?)?;
        written.push(table_path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Write `stream` as volumes of `size` + `k` parity into `dir`.
    fn split(dir: &Path, stream: &[u8], size: u64, k: usize) -> VolumeTable {
        let quiet = crate::progress::Progress::new(crate::progress::Mode::Quiet);
        let mut w = SplitWriter::new(&dir.join("p.tar"), size, k);
        for chunk in stream.chunks(7777) {
            w.write_all(chunk).unwrap();
        }
        let (table, pairs) = w.finish(&quiet).unwrap();
        for (tmp, fin) in pairs {
            std::fs::rename(tmp, fin).unwrap();
        }
        table
    }

    #[test]
    fn reads_across_volumes_rebuild_any_k_lost_volumes_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let stream: Vec<u8> = (0..1_234_567).map(|_| rng.random()).collect();
        let table = split(dir.path(), &stream, 300_000, 2);
        assert_eq!(table.data.len(), 5);
        assert_eq!(table.data[4].size, 1_234_567 - 4 * 300_000);
        let joined: Vec<u8> = (1..=5)
            .flat_map(|i| std::fs::read(dir.path().join(data_name("p.tar", i, 5))).unwrap())
            .collect();
        assert_eq!(joined, stream, "data volumes are plain slices");
        // Lose volume 2 and damage volume 5 (the short last one).
        std::fs::remove_file(dir.path().join("p.tar.002")).unwrap();
        let last = dir.path().join("p.tar.005");
        let mut b = std::fs::read(&last).unwrap();
        b[10] ^= 1;
        std::fs::write(&last, b).unwrap();
        let quiet = crate::progress::Progress::new(crate::progress::Mode::Quiet);
        let mut set = VolumeSet::open(&dir.path().join("p.tar")).unwrap();
        set.check_digests(&quiet).unwrap();
        let problems = set.problems().join("; ");
        assert!(
            problems.contains("p.tar.002 is missing") && problems.contains("p.tar.005 is damaged"),
            "{problems}"
        );
        for _ in 0..300 {
            let off = rng.random_range(0..stream.len() as u64);
            let len = rng.random_range(0..=(stream.len() as u64 - off).min(700_000)) as usize;
            let mut buf = vec![0u8; len];
            set.read_exact_at(&mut buf, off).unwrap();
            assert!(
                buf == stream[off as usize..off as usize + len],
                "read {len} at {off}"
            );
        }
        let mut past = [0u8; 2];
        assert!(set
            .read_exact_at(&mut past, stream.len() as u64 - 1)
            .is_err());
        // A third bad volume is more than two parity volumes rebuild.
        std::fs::remove_file(dir.path().join("p.tar.par1")).unwrap();
        let mut set = VolumeSet::open(&dir.path().join("p.tar")).unwrap();
        let e = set.check_digests(&quiet).unwrap_err().to_string();
        assert!(
            e.contains("p.tar.002") && e.contains("p.tar.005") && e.contains("p.tar.par1"),
            "{e}"
        );
    }
}
