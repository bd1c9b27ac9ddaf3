//! A chart in memory: its files by path relative to the chart root.
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};

use super::helmignore::IgnoreRules;

/// Largest single file accepted in a chart archive.
pub const MAX_FILE_SIZE: u64 = 64 << 20;
/// Largest total (decompressed) size of a chart archive.
pub const MAX_TOTAL_SIZE: u64 = 512 << 20;
/// Most entries in a chart archive.
pub const MAX_ENTRIES: usize = 100_000;

/// Directories never taken into a chart (version control).
const VCS_DIRS: &[&str] = &[".git", ".hg", ".svn", ".bzr"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chart {
    pub name: String,
    pub version: String,
    /// (path relative to the chart root, e.g. `values.yaml`,
    /// `charts/common-1.10.0.tgz`, `templates/x.yaml`), sorted by path.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Chart {
    /// From a chart directory: the files `helm package` would take
    /// (`.helmignore` applied; symlinks followed only inside the chart).
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(dir)
            .with_context(|| format!("reading chart directory {}", dir.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a chart directory", dir.display());
        }
        let mut files = Vec::new();
        DirWalk::new(dir)
            .and_then(|mut w| w.walk("", &mut files))
            .with_context(|| format!("reading chart directory {}", dir.display()))?;
        Self::from_files(files).with_context(|| format!("chart in {}", dir.display()))
    }

    /// From a packaged `.tgz` (one top-level dir). Its expanded size, with
    /// its subcharts, is checked first by streaming (see [`super::tgz`]), so
    /// a bomb is refused before any of it is kept.
    pub fn from_tgz(bytes: &[u8]) -> anyhow::Result<Self> {
        super::tgz::check_tree_tgz(bytes).context("reading chart archive (gzip'd tar)")?;
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut top: Option<String> = None;
        super::tgz::walk_tar(flate2::read::GzDecoder::new(bytes), |h, data| {
            let clean = validate_entry_name(&h.name)?;
            if clean.is_empty() || h.is_dir() {
                return Ok(());
            }
            if !h.is_file() {
                bail!(
                    "chart archive {} is of tar type {:?}: only regular files are accepted",
                    h.describe(),
                    h.typeflag as char
                );
            }
            let (first, rest) = match clean.split_once('/') {
                Some((f, r)) => (f.to_string(), r.to_string()),
                None => bail!(
                    "chart archive {} is not inside a top-level directory",
                    h.describe()
                ),
            };
            match &top {
                None => top = Some(first),
                Some(t) if *t == first => {}
                Some(t) => bail!(
                    "chart archive has more than one top-level directory ({} and {})",
                    super::tgz::short_name(t),
                    super::tgz::short_name(&first)
                ),
            }
            // Sizes and entry counts were bounded by the tree check.
            let mut data_bytes = Vec::with_capacity(h.size.min(MAX_FILE_SIZE) as usize);
            data.take(MAX_FILE_SIZE + 1)
                .read_to_end(&mut data_bytes)
                .with_context(|| format!("reading {} from chart archive", h.describe()))?;
            files.push((rest, data_bytes));
            Ok(())
        })
        .context("reading chart archive (gzip'd tar)")?;
        if files.is_empty() {
            bail!("chart archive is empty");
        }
        Self::from_checked_files(files)
    }

    /// From files already relative to the chart root (a bundle's
    /// `original-chart/`).
    /// The files and the expanded packaged subcharts together stay within
    /// [`MAX_TOTAL_SIZE`] (checked streaming, nothing kept).
    pub fn from_files(files: Vec<(String, Vec<u8>)>) -> anyhow::Result<Self> {
        super::tgz::check_tree_files(&files)?;
        Self::from_checked_files(files)
    }

    /// [`Chart::from_files`] for files whose tree size was checked.
    fn from_checked_files(mut files: Vec<(String, Vec<u8>)>) -> anyhow::Result<Self> {
        for (p, _) in &files {
            let clean = validate_entry_name(p)?;
            if clean != *p {
                bail!(
                    "chart file path {} is not normalised",
                    super::tgz::short_name(p)
                );
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = files.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!(
                "chart has the file {} twice",
                super::tgz::short_name(&w[0].0)
            );
        }
        // values.yaml is read by every verb (and by helm): alias and
        // nesting bombs in it are refused when the chart loads, before any
        // of them parses it or hands it to helm.
        if let Some((_, v)) = files.iter().find(|(p, _)| p == "values.yaml") {
            if let Ok(text) = std::str::from_utf8(v) {
                crate::yaml_bounds::check(text).context("values.yaml")?;
            }
        }
        let chart_yaml = files
            .iter()
            .find(|(p, _)| p == "Chart.yaml")
            .map(|(_, d)| d)
            .context("chart has no Chart.yaml")?;
        let meta = ChartMeta::parse(chart_yaml)?;
        Ok(Chart {
            name: meta.name,
            version: meta.version,
            files,
        })
    }

    /// A file's content by path.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files
            .binary_search_by(|(p, _)| p.as_str().cmp(path))
            .ok()
            .map(|i| self.files[i].1.as_slice())
    }

    /// Replace (or add) a file, keeping the list sorted.
    pub fn set_file(&mut self, path: &str, data: Vec<u8>) {
        match self.files.binary_search_by(|(p, _)| p.as_str().cmp(path)) {
            Ok(i) => self.files[i].1 = data,
            Err(i) => self.files.insert(i, (path.to_string(), data)),
        }
    }

    /// `Chart.yaml` parsed.
    pub fn metadata(&self) -> anyhow::Result<ChartMeta> {
        ChartMeta::parse(self.file("Chart.yaml").context("chart has no Chart.yaml")?)
    }

    /// The subcharts in `charts/`: directories and packaged `.tgz` files,
    /// each loaded as a chart (path in this chart, chart).
    pub fn subcharts(&self) -> anyhow::Result<Vec<(String, Chart)>> {
        let mut out = Vec::new();
        let mut dirs: Vec<String> = Vec::new();
        for (p, data) in &self.files {
            let Some(rest) = p.strip_prefix("charts/") else {
                continue;
            };
            match rest.split_once('/') {
                Some((d, _)) if dirs.last().map(String::as_str) != Some(d) => {
                    dirs.push(d.to_string());
                }
                Some(_) => {}
                None if rest.ends_with(".tgz") => {
                    let c = Chart::from_tgz(data).with_context(|| format!("subchart {p}"))?;
                    out.push((p.clone(), c));
                }
                None => {}
            }
        }
        dirs.dedup();
        for d in dirs {
            let prefix = format!("charts/{d}/");
            let files: Vec<(String, Vec<u8>)> = self
                .files
                .iter()
                .filter_map(|(p, data)| {
                    p.strip_prefix(&prefix)
                        .map(|r| (r.to_string(), data.clone()))
                })
                .collect();
            if !files.iter().any(|(p, _)| p == "Chart.yaml") {
                continue;
            }
            let c = Chart::from_files(files).with_context(|| format!("subchart charts/{d}"))?;
            out.push((format!("charts/{d}"), c));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// The parts of `Chart.yaml` bundler reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartMeta {
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    pub description: Option<String>,
    pub api_version: Option<String>,
    pub dependencies: Vec<Dependency>,
    /// The whole document.
    pub raw: serde_yaml_ng::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Dependency {
    pub name: String,
    pub version: Option<String>,
    pub repository: Option<String>,
    pub alias: Option<String>,
}

impl ChartMeta {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let raw: serde_yaml_ng::Value =
            crate::yaml_bounds::from_slice(bytes).context("Chart.yaml is not valid YAML")?;
        let s = |v: &serde_yaml_ng::Value, k: &str| -> Option<String> {
            match v.get(k)? {
                serde_yaml_ng::Value::String(s) => Some(s.clone()),
                serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
                serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        };
        let name = s(&raw, "name")
            .filter(|n| !n.is_empty())
            .context("Chart.yaml has no name")?;
        let version = s(&raw, "version")
            .filter(|n| !n.is_empty())
            .context("Chart.yaml has no version")?;
        if name.contains(['/', '\\']) || name == ".." || name == "." {
            bail!("Chart.yaml has an invalid chart name {name:?}");
        }
        if version.contains(['/', '\\']) {
            bail!("Chart.yaml has an invalid chart version {version:?}");
        }
        let mut dependencies = Vec::new();
        if let Some(serde_yaml_ng::Value::Sequence(deps)) = raw.get("dependencies") {
            for d in deps {
                dependencies.push(Dependency {
                    name: s(d, "name").unwrap_or_default(),
                    version: s(d, "version"),
                    repository: s(d, "repository"),
                    alias: s(d, "alias").filter(|a| !a.is_empty()),
                });
            }
        }
        Ok(ChartMeta {
            app_version: s(&raw, "appVersion"),
            description: s(&raw, "description"),
            api_version: s(&raw, "apiVersion"),
            name,
            version,
            dependencies,
            raw,
        })
    }
}

/// Check an archive entry / chart file name: relative, no `..`, no empty
/// components other than a trailing slash. Returns it without `./` and
/// trailing `/`.
pub fn validate_entry_name(path: &str) -> anyhow::Result<String> {
    let shown = || super::tgz::short_name(path);
    if path.starts_with('/') || path.starts_with('\\') || path.contains('\0') {
        bail!("refusing entry {}: absolute path", shown());
    }
    if path.len() > 1 && path.as_bytes()[1] == b':' {
        bail!("refusing entry {}: absolute path", shown());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => bail!(
                "refusing entry {}: it leaves the chart directory (`..`)",
                shown()
            ),
            p if p.contains('\\') => bail!("refusing entry {}: backslash in name", shown()),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// A chart directory being read: its canonical root (symlinks must stay
/// inside it) and its `.helmignore` rules.
struct DirWalk {
    root: std::path::PathBuf,
    canonical_root: std::path::PathBuf,
    rules: IgnoreRules,
    total: u64,
}

impl DirWalk {
    fn new(root: &Path) -> anyhow::Result<Self> {
        let canonical_root =
            std::fs::canonicalize(root).with_context(|| format!("resolving {}", root.display()))?;
        let ignore_file = root.join(".helmignore");
        let rules = match std::fs::read_to_string(&ignore_file) {
            Ok(text) => IgnoreRules::parse(&text, &ignore_file.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => IgnoreRules::defaults(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", ignore_file.display())),
        };
        Ok(DirWalk {
            root: root.to_path_buf(),
            canonical_root,
            rules,
            total: 0,
        })
    }

    /// The metadata a file is read with: symlinks are followed as helm
    /// does, but only when they resolve inside the chart directory, so a
    /// link to `/etc/passwd` never carries a host file into a bundle.
    fn target_metadata(&self, path: &Path, rel: &str) -> anyhow::Result<std::fs::Metadata> {
        let lmeta = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading {}", path.display()))?;
        if lmeta.file_type().is_symlink() {
            let link = std::fs::read_link(path).unwrap_or_default();
            let resolved = std::fs::canonicalize(path).map_err(|e| {
                anyhow::anyhow!(
                    "chart file {rel} is a symlink to {} that cannot be resolved ({e}); \
                     replace it with the file itself or remove it",
                    link.display()
                )
            })?;
            if !resolved.starts_with(&self.canonical_root) {
                bail!(
                    "chart file {rel} is a symlink to {} ({}), outside the chart directory {}; \
                     refusing to package it: copy the file into the chart or remove the link",
                    link.display(),
                    resolved.display(),
                    self.root.display()
                );
            }
        }
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))
    }

    fn walk(&mut self, rel: &str, out: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        let dir = if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        };
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| anyhow::anyhow!("file name {n:?} is not UTF-8"))?;
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let meta = self.target_metadata(&e.path(), &child)?;
            if self.rules.ignored(&child, meta.is_dir()) {
                continue;
            }
            if meta.is_dir() {
                if VCS_DIRS.contains(&name.as_str()) {
                    continue;
                }
                self.walk(&child, out)?;
            } else if meta.is_file() {
                if meta.len() > MAX_FILE_SIZE {
                    bail!("{} is too large for a chart file", e.path().display());
                }
                self.total += meta.len();
                if self.total > MAX_TOTAL_SIZE {
                    bail!("chart directory is too large (over {MAX_TOTAL_SIZE} bytes)");
                }
                let data = std::fs::read(e.path())
                    .with_context(|| format!("reading {}", e.path().display()))?;
                out.push((child, data));
            } else {
                bail!(
                    "{} is not a regular file (a FIFO, socket or device); helm cannot package it either: remove it or add it to .helmignore",
                    e.path().display()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert_eq!(validate_entry_name("a/./b/").unwrap(), "a/b");
        assert!(validate_entry_name("../x").is_err());
        assert!(validate_entry_name("a/../../x").is_err());
        assert!(validate_entry_name("/etc/passwd").is_err());
    }

    #[test]
    fn from_files_needs_chart_yaml() {
        assert!(Chart::from_files(vec![("values.yaml".into(), vec![])]).is_err());
        let c = Chart::from_files(vec![
            ("values.yaml".into(), b"a: 1\n".to_vec()),
            ("Chart.yaml".into(), b"name: x\nversion: 1.0.0\n".to_vec()),
        ])
        .unwrap();
        assert_eq!((c.name.as_str(), c.version.as_str()), ("x", "1.0.0"));
        assert_eq!(c.files[0].0, "Chart.yaml");
    }
}
