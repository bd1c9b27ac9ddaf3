//! Reading chart archives (`.tgz`) with bounds that hold before anything
//! is read.
//!
//! A chart archive is small when compressed and may be anything once
//! expanded: a GNU long name or PAX header of 256 MiB is 256 KB of gzip,
//! and a general-purpose tar reader reads such a header whole into memory
//! (and error messages quote it). Here every header extension is bounded
//! by its *declared* size before a byte of it is read ([`MAX_NAME_LEN`],
//! [`MAX_PAX_LEN`]), and the expanded size of a chart *with all its
//! subcharts* is counted in one streaming pass ([`check_tree_files`],
//! [`check_tree_tgz`]): nested `charts/*.tgz` are decompressed on the fly
//! from inside their parent, nothing is kept, so a bomb is refused in
//! constant memory before any of it is loaded. Entry names in error lines
//! are cut short ([`short_name`]) and come with the entry's offset in the
//! decompressed stream.
use std::io::{self, Read};

use anyhow::{bail, Context};

use super::load::{MAX_ENTRIES, MAX_FILE_SIZE, MAX_TOTAL_SIZE};

/// Longest GNU long name / long link name accepted (Linux `PATH_MAX`).
pub const MAX_NAME_LEN: u64 = 4096;
/// Largest PAX extended header accepted (names, times, a few attributes).
pub const MAX_PAX_LEN: u64 = 64 << 10;
/// Deepest subchart nesting followed (Helm's own charts stay below 5).
const MAX_NESTING: usize = 20;

/// An entry name as it may appear in an error line: at most 80
/// characters, with its full length when cut.
pub fn short_name(name: &str) -> String {
    const KEEP: usize = 80;
    if name.chars().count() <= KEEP {
        return format!("{name:?}");
    }
    let head: String = name.chars().take(KEEP).collect();
    format!("{head:?}... ({} bytes)", name.len())
}

/// One tar entry header, as read (extensions applied).
pub struct TarHeader {
    /// The name (GNU long name, PAX `path` or ustar prefix applied).
    pub name: String,
    /// The tar type flag (`b'0'`, `b'5'`, ...).
    pub typeflag: u8,
    /// Size of the entry's data.
    pub size: u64,
    /// Offset of the entry's header block in the (decompressed) tar.
    pub offset: u64,
}

impl TarHeader {
    /// A regular file (`0`, NUL, `7`), not a directory written as a file.
    pub fn is_file(&self) -> bool {
        matches!(self.typeflag, b'0' | b'7') || (self.typeflag == 0 && !self.name.ends_with('/'))
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.typeflag == b'5' || (self.typeflag == 0 && self.name.ends_with('/'))
    }

    /// `entry "name" at offset N`, for error lines.
    pub fn describe(&self) -> String {
        format!("entry {} at offset {}", short_name(&self.name), self.offset)
    }
}

/// A reader that counts what it has read.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Read as much of `buf` as the stream has (less only at its end).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A numeric header field: octal text, or GNU base-256 (high bit set).
fn parse_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// The `path` and `size` records of a PAX extended header.
fn parse_pax(mut rest: &[u8], at: u64) -> anyhow::Result<(Option<Vec<u8>>, Option<u64>)> {
    let (mut path, mut size) = (None, None);
    while !rest.is_empty() && rest[0] != 0 {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .with_context(|| format!("malformed PAX header at offset {at}"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|l| *l > sp && *l <= rest.len())
            .with_context(|| format!("malformed PAX record length at offset {at}"))?;
        let rec = &rest[sp + 1..len];
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        if let Some(eq) = rec.iter().position(|&b| b == b'=') {
            match &rec[..eq] {
                b"path" => path = Some(rec[eq + 1..].to_vec()),
                b"size" => {
                    size = Some(
                        std::str::from_utf8(&rec[eq + 1..])
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .with_context(|| format!("invalid PAX size at offset {at}"))?,
                    )
                }
                _ => {}
            }
        }
        rest = &rest[len..];
    }
    Ok((path, size))
}

/// Read a header extension of `size` bytes (already bounded).
fn read_extension(r: &mut impl Read, size: u64, at: u64) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    if read_full(r, &mut buf)? < buf.len() {
        bail!("tar archive truncated in the header extension at offset {at}");
    }
    skip(r, padding(size), at)?;
    Ok(buf)
}

fn padding(size: u64) -> u64 {
    (512 - size % 512) % 512
}

fn skip(r: &mut impl Read, n: u64, at: u64) -> anyhow::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        bail!("tar archive truncated in the entry at offset {at}");
    }
    Ok(())
}

/// Walk the entries of an (uncompressed) tar stream: `f` gets each entry's
/// header and a reader of its data (what `f` leaves unread is skipped).
/// GNU long names and PAX headers are applied, and refused past their
/// bounds before they are read; header checksums are checked.
pub fn walk_tar<R: Read>(
    r: R,
    mut f: impl FnMut(&TarHeader, &mut dyn Read) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut r = Counting { inner: r, pos: 0 };
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax_path: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    let mut block = [0u8; 512];
    loop {
        let at = r.pos;
        match read_full(&mut r, &mut block).context("reading the tar stream")? {
            0 => break, // no end-of-archive blocks: accepted, as tar does
            512 => {}
            n => bail!("tar archive truncated: {n} bytes of a header at offset {at}"),
        }
        if block.iter().all(|&b| b == 0) {
            break;
        }
        let stored = parse_number(&block[148..156]);
        let computed: u64 = (block.iter().enumerate())
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u64
                }
            })
            .sum();
        if stored != Some(computed) {
            bail!("bad tar header checksum at offset {at}: not a tar archive, or corrupted");
        }
        let typeflag = block[156];
        let mut size = parse_number(&block[124..136])
            .with_context(|| format!("invalid size field in the tar header at offset {at}"))?;
        match typeflag {
            b'L' | b'K' => {
                if size > MAX_NAME_LEN {
                    bail!(
                        "GNU long {} of {size} bytes at offset {at}: refused (names are at most \
                         {MAX_NAME_LEN} bytes; a decompression bomb?)",
                        if typeflag == b'L' {
                            "name"
                        } else {
                            "link name"
                        }
                    );
                }
                let buf = read_extension(&mut r, size, at)?;
                if typeflag == b'L' {
                    long_name = Some(cstr(&buf).to_vec());
                }
                continue;
            }
            b'x' | b'g' => {
                if size > MAX_PAX_LEN {
                    bail!(
                        "PAX header of {size} bytes at offset {at}: refused (at most \
                         {MAX_PAX_LEN} bytes; a decompression bomb?)"
                    );
                }
                let buf = read_extension(&mut r, size, at)?;
                if typeflag == b'x' {
                    (pax_path, pax_size) = parse_pax(&buf, at)?;
                }
                continue;
            }
            _ => {}
        }
        let mut name = cstr(&block[0..100]).to_vec();
        if &block[257..263] == b"ustar\0" {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                name = [prefix, b"/", &name].concat();
            }
        }
        if let Some(n) = long_name.take().or(pax_path.take()) {
            name = n;
        }
        if let Some(s) = pax_size.take() {
            size = s;
        }
        let name = String::from_utf8(name).map_err(|e| {
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            anyhow::anyhow!(
                "entry {} at offset {at}: name is not UTF-8",
                short_name(&lossy)
            )
        })?;
        let header = TarHeader {
            name,
            typeflag,
            size,
            offset: at,
        };
        let mut data = (&mut r).take(size);
        f(&header, &mut data)?;
        let left = data.limit();
        skip(&mut r, left + padding(size), at)?;
    }
    if long_name.is_some() || pax_path.is_some() {
        bail!("tar archive ends after a long-name/PAX header without its entry");
    }
    Ok(())
}

/// Whether a path relative to a chart root is a packaged subchart
/// (`charts/x.tgz`, also inside an unpacked subchart's `charts/`).
pub fn is_subchart_archive(rel: &str) -> bool {
    rel.ends_with(".tgz") && rel.rsplit('/').nth(1) == Some("charts")
}

/// The expanded size of a chart tree so far, against its limit.
pub struct Budget {
    limit: u64,
    used: u64,
    entries: usize,
}

impl Budget {
    pub fn new(limit: u64) -> Self {
        Budget {
            limit,
            used: 0,
            entries: 0,
        }
    }

    fn add(&mut self, size: u64, what: impl FnOnce() -> String) -> anyhow::Result<()> {
        self.used = self.used.saturating_add(size);
        self.entries += 1;
        if self.used > self.limit {
            bail!(
                "the chart with its subcharts expands to more than {} MiB (at {}): refused \
                 (a decompression bomb?)",
                self.limit >> 20,
                what()
            );
        }
        if self.entries > MAX_ENTRIES {
            bail!(
                "the chart with its subcharts has more than {MAX_ENTRIES} files (at {}): refused",
                what()
            );
        }
        Ok(())
    }
}

/// Count a chart archive and, nested, every subchart archive in it,
/// streaming: nothing is kept.
fn count_tgz(r: impl Read, budget: &mut Budget, depth: usize) -> anyhow::Result<()> {
    if depth > MAX_NESTING {
        bail!("subcharts nested more than {MAX_NESTING} deep: refused");
    }
    walk_tar(flate2::read::GzDecoder::new(r), |h, data| {
        if !h.is_file() {
            return Ok(());
        }
        if h.size > MAX_FILE_SIZE {
            bail!("{} is too large ({} bytes)", h.describe(), h.size);
        }
        budget.add(h.size, || h.describe())?;
        let rel = h.name.split_once('/').map_or("", |(_, r)| r);
        if is_subchart_archive(rel) {
            count_tgz(data, budget, depth + 1)
                .with_context(|| format!("subchart {}", short_name(rel)))?;
        }
        Ok(())
    })
}

/// Refuse a chart archive whose expansion (subcharts included) passes
/// [`MAX_TOTAL_SIZE`], or whose headers are out of bounds; constant memory.
pub fn check_tree_tgz(tgz: &[u8]) -> anyhow::Result<()> {
    check_tree_tgz_limited(tgz, MAX_TOTAL_SIZE)
}

pub fn check_tree_tgz_limited(tgz: &[u8], limit: u64) -> anyhow::Result<()> {
    count_tgz(tgz, &mut Budget::new(limit), 0)
}

/// Refuse a chart, given as its files, whose files and packaged subcharts
/// (expanded, nested) pass [`MAX_TOTAL_SIZE`] together.
pub fn check_tree_files(files: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    check_tree_files_limited(files, MAX_TOTAL_SIZE)
}

pub fn check_tree_files_limited(files: &[(String, Vec<u8>)], limit: u64) -> anyhow::Result<()> {
    let mut budget = Budget::new(limit);
    for (path, data) in files {
        budget.add(data.len() as u64, || short_name(path))?;
        if is_subchart_archive(path) {
            count_tgz(data.as_slice(), &mut budget, 1)
                .with_context(|| format!("subchart {}", short_name(path)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A gzip'd tar of raw (name bytes, data) pairs, names as GNU long
    /// names when long.
    pub fn tgz(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            if name.len() > 99 {
                let mut l = tar::Header::new_gnu();
                l.set_entry_type(tar::EntryType::GNULongName);
                l.set_size(name.len() as u64 + 1);
                l.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
                l.set_cksum();
                let mut n = name.to_vec();
                n.push(0);
                t.append(&l, n.as_slice()).unwrap();
                h.as_gnu_mut().unwrap().name[..5].copy_from_slice(b"dummy");
            } else {
                h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            }
            h.set_cksum();
            t.append(&h, *data).unwrap();
        }
        let mut gz = t.into_inner().unwrap();
        gz.flush().unwrap();
        gz.finish().unwrap()
    }

    const CHART_YAML: &[u8] = b"apiVersion: v2\nname: sub\nversion: 1.0.0\n";

    #[test]
    fn a_huge_long_name_is_refused_by_its_declared_size() {
        let name = vec![b'a'; 8 << 20];
        let bomb = tgz(&[(&name, b"x")]);
        let e = format!("{:#}", check_tree_tgz(&bomb).unwrap_err());
        assert!(
            e.contains("GNU long name of 8388609 bytes at offset 0"),
            "{e}"
        );
        assert!(e.len() < 300, "{}", e.len());
        // A long name within bounds passes, and is cut in messages.
        let name = [b"sub/".as_slice(), &vec![b'b'; 3000]].concat();
        let ok = tgz(&[(b"sub/Chart.yaml", CHART_YAML), (&name, b"x")]);
        check_tree_tgz(&ok).unwrap();
        assert!(short_name(std::str::from_utf8(&name).unwrap()).len() < 120);
    }

    #[test]
    fn subcharts_count_against_one_budget() {
        let big = vec![0u8; 3 << 20];
        let sub = tgz(&[(b"sub/Chart.yaml", CHART_YAML), (b"sub/big", &big)]);
        // One subchart fits 4 MiB; three do not, whichever way they come.
        check_tree_files_limited(&[("charts/a.tgz".into(), sub.clone())], 4 << 20).unwrap();
        let files: Vec<(String, Vec<u8>)> = ["a", "b", "c"]
            .iter()
            .map(|n| (format!("charts/{n}.tgz"), sub.clone()))
            .collect();
        let e = format!(
            "{:#}",
            check_tree_files_limited(&files, 4 << 20).unwrap_err()
        );
        assert!(e.contains("more than 4 MiB"), "{e}");
        assert!(e.contains("charts/b.tgz"), "{e}");
        let parent = tgz(&[
            (b"top/Chart.yaml", CHART_YAML),
            (b"top/charts/a.tgz", &sub),
            (b"top/charts/b.tgz", &sub),
        ]);
        let e = format!(
            "{:#}",
            check_tree_tgz_limited(&parent, 4 << 20).unwrap_err()
        );
        assert!(e.contains("entry \"sub/big\" at offset 1024"), "{e}");
    }

    #[test]
    fn nested_bombs_are_found_in_subcharts_of_subcharts() {
        let name = vec![b'a'; 1 << 20];
        let bomb = tgz(&[(&name, b"x")]);
        let mid = tgz(&[
            (b"mid/Chart.yaml", CHART_YAML),
            (b"mid/charts/x.tgz", &bomb),
        ]);
        let files = vec![("charts/mid.tgz".to_string(), mid)];
        let e = format!("{:#}", check_tree_files(&files).unwrap_err());
        assert!(e.contains("subchart \"charts/mid.tgz\""), "{e}");
        assert!(e.contains("GNU long name of 1048577 bytes"), "{e}");
    }
}
