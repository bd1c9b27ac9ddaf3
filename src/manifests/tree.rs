//! The files a manifests entry carries, and running `kubectl kustomize`.
//!
//! A tree is held in memory as (relative path, bytes): manifests are small
//! (the whole cube-studio install is 3.9 MB), so the same value is what
//! pack reads from disk, what the bundle stores under
//! `original-manifests/`, and what sync relocates and writes out.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::ManifestsEntry;

/// Bound on what one entry may carry (files and bytes).
const MAX_FILES: usize = 5000;
const MAX_BYTES: u64 = 64 << 20;

/// How the tree is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TreeKind {
    /// One YAML file: `kubectl apply -f FILE`.
    File,
    /// A directory of YAML files: `kubectl apply -f DIR`.
    Directory,
    /// A kustomize tree: `kubectl apply -k DIR`.
    Kustomize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    pub kind: TreeKind,
    /// Relative path `kubectl apply -f`/`-k` takes (`.` for the root).
    pub apply: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

pub const KUSTOMIZATION_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

fn is_yaml_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
}

impl Tree {
    /// Read what `entry` carries from disk.
    pub fn load(entry: &ManifestsEntry) -> anyhow::Result<Tree> {
        let path = &entry.path;
        let meta = std::fs::symlink_metadata(path).with_context(|| {
            format!(
                "manifests {}: path {}: cannot read it",
                entry.name,
                path.display()
            )
        })?;
        if meta.is_file() {
            if entry.kustomize.is_some() {
                bail!(
                    "manifests {}: kustomize: is set but path {} is a file; point path at the tree's root directory",
                    entry.name,
                    path.display()
                );
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .context("file name is not UTF-8")?
                .to_string();
            let bytes = std::fs::read(path)
                .with_context(|| format!("manifests {}: reading {}", entry.name, path.display()))?;
            return Ok(Tree {
                kind: TreeKind::File,
                apply: name.clone(),
                files: BTreeMap::from([(name, bytes)]),
            });
        }
        if !meta.is_dir() {
            bail!(
                "manifests {}: path {} is neither a file nor a directory",
                entry.name,
                path.display()
            );
        }
        let kustomize_dir = match &entry.kustomize {
            Some(k) => Some(k.trim_end_matches('/').to_string()),
            None if has_kustomization(path) => Some(".".to_string()),
            None => None,
        };
        match kustomize_dir {
            Some(k) => {
                if !has_kustomization(&path.join(&k)) {
                    bail!(
                        "manifests {}: {} has no kustomization.yaml (kustomize: {k})",
                        entry.name,
                        path.join(&k).display()
                    );
                }
                let mut files = BTreeMap::new();
                read_dir_into(path, "", true, &mut files, &entry.name)?;
                Ok(Tree {
                    kind: TreeKind::Kustomize,
                    apply: k,
                    files,
                })
            }
            None => {
                let mut files = BTreeMap::new();
                read_dir_into(path, "", false, &mut files, &entry.name)?;
                files.retain(|n, _| is_yaml_name(n));
                if files.is_empty() {
                    bail!(
                        "manifests {}: directory {} has no .yaml, .yml or .json file",
                        entry.name,
                        path.display()
                    );
                }
                Ok(Tree {
                    kind: TreeKind::Directory,
                    apply: ".".to_string(),
                    files,
                })
            }
        }
    }

    /// The files `kubectl apply -f` reads (File and Directory trees).
    pub fn applied_files(&self) -> Vec<&String> {
        match self.kind {
            TreeKind::File => self.files.keys().filter(|n| **n == self.apply).collect(),
            TreeKind::Directory => self
                .files
                .keys()
                .filter(|n| !n.contains('/') && is_yaml_name(n))
                .collect(),
            TreeKind::Kustomize => Vec::new(),
        }
    }

    /// The top kustomization file (Kustomize trees).
    pub fn top_kustomization(&self) -> Option<String> {
        let dir = if self.apply == "." {
            String::new()
        } else {
            format!("{}/", self.apply)
        };
        KUSTOMIZATION_NAMES
            .iter()
            .map(|n| format!("{dir}{n}"))
            .find(|p| self.files.contains_key(p))
    }

    /// Write the files under `dir` (created; must be empty or absent).
    pub fn write_to(&self, dir: &Path) -> anyhow::Result<()> {
        for (rel, bytes) in &self.files {
            let p = dir.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }

    /// The path to give kubectl for a copy of this tree written at `dir`.
    pub fn apply_path(&self, dir: &Path) -> PathBuf {
        if self.apply == "." {
            dir.to_path_buf()
        } else {
            dir.join(&self.apply)
        }
    }

    /// The rendered objects, as kubectl would apply them: the kustomize
    /// build of a copy written to `dir`, or the applied files joined as
    /// documents. Each element is (source label, text).
    pub fn rendered(&self, dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
        match self.kind {
            TreeKind::Kustomize => {
                let out = kustomize_build(&self.apply_path(dir))?;
                Ok(vec![(format!("kubectl kustomize {}", self.apply), out)])
            }
            _ => self
                .applied_files()
                .into_iter()
                .map(|n| {
                    let text = String::from_utf8(self.files[n].clone())
                        .with_context(|| format!("{n}: not UTF-8"))?;
                    Ok((n.clone(), text))
                })
                .collect(),
        }
    }
}

fn has_kustomization(dir: &Path) -> bool {
    KUSTOMIZATION_NAMES.iter().any(|n| dir.join(n).is_file())
}

fn read_dir_into(
    root: &Path,
    rel: &str,
    recursive: bool,
    files: &mut BTreeMap<String, Vec<u8>>,
    entry: &str,
) -> anyhow::Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("manifests {entry}: reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("manifests {entry}: file name {n:?} is not UTF-8"))?;
        if name == ".git" {
            continue;
        }
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let ft = e.file_type()?;
        if ft.is_symlink() {
            bail!(
                "manifests {entry}: {} is a symbolic link; bundles carry regular files only (copy the target in)",
                root.join(&child).display()
            );
        } else if ft.is_dir() {
            if recursive {
                read_dir_into(root, &child, true, files, entry)?;
            }
        } else if ft.is_file() {
            let bytes = std::fs::read(e.path())
                .with_context(|| format!("manifests {entry}: reading {}", e.path().display()))?;
            files.insert(child, bytes);
            let total: u64 = files.values().map(|b| b.len() as u64).sum();
            if files.len() > MAX_FILES || total > MAX_BYTES {
                bail!(
                    "manifests {entry}: {} holds more than {MAX_FILES} files or {} MiB; point path at the tree itself",
                    root.display(),
                    MAX_BYTES >> 20
                );
            }
        }
    }
    Ok(())
}

/// The kubectl binary: `BUNDLER_KUBECTL`, else `kubectl` on PATH.
pub fn kubectl() -> PathBuf {
    std::env::var_os("BUNDLER_KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// `kubectl kustomize DIR`: the built objects as YAML.
pub fn kustomize_build(dir: &Path) -> anyhow::Result<String> {
    let kubectl = kubectl();
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .with_context(|| {
            format!(
                "running {} kustomize (install kubectl v1.33, or set BUNDLER_KUBECTL)",
                kubectl.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("kubectl kustomize printed non-UTF-8 output")
}
