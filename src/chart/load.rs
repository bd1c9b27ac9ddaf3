//! A chart in memory: its files by path relative to the chart root.
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};

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
    /// From a chart directory.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let meta = std::fs::metadata(dir)
            .with_context(|| format!("reading chart directory {}", dir.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a chart directory", dir.display());
        }
        let mut files = Vec::new();
        let mut total = 0u64;
        walk(dir, "", &mut files, &mut total)
            .with_context(|| format!("reading chart directory {}", dir.display()))?;
        Self::from_files(files).with_context(|| format!("chart in {}", dir.display()))
    }

    /// From a packaged `.tgz` (one top-level dir).
    pub fn from_tgz(bytes: &[u8]) -> anyhow::Result<Self> {
        let gz = flate2::read::GzDecoder::new(bytes);
        let mut ar = tar::Archive::new(gz);
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut top: Option<String> = None;
        let mut total = 0u64;
        for entry in ar.entries().context("reading chart archive (gzip'd tar)")? {
            let mut entry = entry.context("reading chart archive (gzip'd tar)")?;
            let path = entry.path_bytes().into_owned();
            let path = String::from_utf8(path).context("chart archive entry name is not UTF-8")?;
            let kind = entry.header().entry_type();
            let clean = validate_entry_name(&path)?;
            if clean.is_empty() {
                continue;
            }
            match kind {
                tar::EntryType::Directory => continue,
                tar::EntryType::Regular | tar::EntryType::Continuous => {}
                // pax/GNU metadata entries are handled by the tar crate.
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
                other => bail!(
                    "chart archive entry {path:?} is a {other:?}: only regular files are accepted"
                ),
            }
            let (first, rest) = match clean.split_once('/') {
                Some((f, r)) => (f.to_string(), r.to_string()),
                None => bail!("chart archive entry {path:?} is not inside a top-level directory"),
            };
            match &top {
                None => top = Some(first),
                Some(t) if *t == first => {}
                Some(t) => bail!(
                    "chart archive has more than one top-level directory ({t:?} and {first:?})"
                ),
            }
            let size = entry.header().size().unwrap_or(0);
            if size > MAX_FILE_SIZE {
                bail!("chart archive entry {path:?} is too large ({size} bytes)");
            }
            total += size;
            if total > MAX_TOTAL_SIZE {
                bail!("chart archive is too large once unpacked (over {MAX_TOTAL_SIZE} bytes)");
            }
            if files.len() >= MAX_ENTRIES {
                bail!("chart archive has too many entries");
            }
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(MAX_FILE_SIZE + 1)
                .read_to_end(&mut data)
                .with_context(|| format!("reading {path:?} from chart archive"))?;
            files.push((rest, data));
        }
        if files.is_empty() {
            bail!("chart archive is empty");
        }
        Self::from_files(files)
    }

    /// From files already relative to the chart root (a bundle's
    /// `original-chart/`).
    pub fn from_files(mut files: Vec<(String, Vec<u8>)>) -> anyhow::Result<Self> {
        for (p, _) in &files {
            let clean = validate_entry_name(p)?;
            if clean != *p {
                bail!("chart file path {p:?} is not normalised");
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = files.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!("chart has the file {:?} twice", w[0].0);
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
    if path.starts_with('/') || path.starts_with('\\') || path.contains('\0') {
        bail!("refusing entry {path:?}: absolute path");
    }
    if path.len() > 1 && path.as_bytes()[1] == b':' {
        bail!("refusing entry {path:?}: absolute path");
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => continue,
            ".." => bail!("refusing entry {path:?}: it leaves the chart directory (`..`)"),
            p if p.contains('\\') => bail!("refusing entry {path:?}: backslash in name"),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn walk(
    root: &Path,
    rel: &str,
    out: &mut Vec<(String, Vec<u8>)>,
    total: &mut u64,
) -> anyhow::Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .collect::<Result<_, _>>()?;
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
        // Follow symlinks as helm does when loading a directory.
        let meta = std::fs::metadata(e.path())
            .with_context(|| format!("reading {}", e.path().display()))?;
        if meta.is_dir() {
            if VCS_DIRS.contains(&name.as_str()) {
                continue;
            }
            walk(root, &child, out, total)?;
        } else if meta.is_file() {
            if meta.len() > MAX_FILE_SIZE {
                bail!("{} is too large for a chart file", e.path().display());
            }
            *total += meta.len();
            if *total > MAX_TOTAL_SIZE {
                bail!("chart directory is too large (over {MAX_TOTAL_SIZE} bytes)");
            }
            let data = std::fs::read(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            out.push((child, data));
        }
    }
    Ok(())
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
