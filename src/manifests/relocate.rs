//! Relocation of a manifests tree: every image reference rewritten to the
//! private registry, every other byte kept.
//!
//! - Plain YAML (a file, a directory): each reference is swapped inside the
//!   source text of its scalar with the comment-preserving editor
//!   ([`crate::chart::yamledit`]): comments, key order, quoting and the
//!   other documents of a multi-document file stay as they were.
//! - Kustomize trees: container images get an `images:` override appended
//!   to the top kustomization (kustomize's own mechanism; entries run in
//!   order, so ours act on what the tree's own entries produced, and bases
//!   stay untouched). References that `images:` cannot reach (args, env,
//!   ConfigMap data from a `configMapGenerator` file, custom resource
//!   fields outside `containers`) are swapped in the file that holds them:
//!   kustomize recomputes the generated ConfigMap's hash suffix itself.
//! - Hints are applied where they point.
//!
//! The result is proven by the caller: built (or read) again and scanned,
//! every image must name the target registry.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;

use super::hints::{self, ManifestHint};
use super::scan::{replace_tokens, scan_documents, split_documents, Occurrence, Place};
use super::tree::{Tree, TreeKind};
use crate::chart::yamledit;

/// The images a tree uses, by where they were read.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// (source: a file of the tree, or the kustomize build), occurrences.
    pub sources: Vec<(String, Vec<Occurrence>)>,
    /// Images the hints name.
    pub hinted: Vec<String>,
}

impl Found {
    /// Every distinct reference, as written.
    pub fn literals(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .sources
            .iter()
            .flat_map(|(_, o)| o.iter().map(|o| o.literal.clone()))
            .collect();
        out.extend(self.hinted.iter().cloned());
        out
    }

    pub fn count(&self) -> usize {
        self.sources.iter().map(|(_, o)| o.len()).sum::<usize>() + self.hinted.len()
    }
}

/// Read (or build, in `scratch`) the tree and find its images; check that
/// every hint holds.
pub fn find(tree: &Tree, hints: &[ManifestHint], scratch: &Path) -> anyhow::Result<Found> {
    let mut found = Found::default();
    if tree.kind == TreeKind::Kustomize {
        tree.write_to(scratch)?;
    }
    for (label, text) in tree.rendered(scratch)? {
        let occ = scan_documents(&text, &label)?;
        found.sources.push((label, occ));
    }
    for h in hints {
        let text = text_of(tree, &h.file)?;
        let (_, n) = hints::apply(h, text, &h.image)?;
        if n == 0 {
            bail!(
                "hint: {} does not contain {}{} as a whole reference; fix the hint",
                h.file,
                h.image,
                h.path
                    .as_ref()
                    .map(|p| format!(" at {}", yamledit::path_string(p)))
                    .unwrap_or_default()
            );
        }
        found.hinted.push(h.image.clone());
    }
    Ok(found)
}

fn text_of<'t>(tree: &'t Tree, file: &str) -> anyhow::Result<&'t str> {
    let bytes = tree
        .files
        .get(file)
        .with_context(|| format!("hint: the tree has no file {file}"))?;
    std::str::from_utf8(bytes).with_context(|| format!("{file}: not UTF-8"))
}

/// One change relocation made.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Edit {
    pub file: String,
    /// `Kind/name path` for YAML edits, `images:` for overrides.
    pub at: String,
    pub from: String,
    pub to: String,
}

pub struct Relocated {
    pub tree: Tree,
    pub edits: Vec<Edit>,
}

/// Rewrite every reference `found` lists with `target_of` (the sync
/// config's rewrite rules).
pub fn relocate(
    tree: &Tree,
    hints: &[ManifestHint],
    found: &Found,
    target_of: &dyn Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<Relocated> {
    let mut out = tree.clone();
    let mut edits = Vec::new();
    match tree.kind {
        TreeKind::File | TreeKind::Directory => {
            for (file, occ) in &found.sources {
                let text = text_of(tree, file)?;
                let new = relocate_yaml_file(file, text, occ, target_of, &mut edits)?;
                out.files.insert(file.clone(), new.into_bytes());
            }
        }
        TreeKind::Kustomize => relocate_kustomize(&mut out, found, target_of, &mut edits)?,
    }
    for h in hints {
        let to = target_of(&h.image)?;
        let (new, n) = hints::apply(h, text_of(&out, &h.file)?, &to)?;
        if n == 0 {
            bail!(
                "hint: {} no longer contains {} after relocation",
                h.file,
                h.image
            );
        }
        edits.push(Edit {
            file: h.file.clone(),
            at: h
                .path
                .as_ref()
                .map(|p| yamledit::path_string(p))
                .unwrap_or_else(|| "(hint)".into()),
            from: h.image.clone(),
            to,
        });
        out.files.insert(h.file.clone(), new.into_bytes());
    }
    Ok(Relocated { tree: out, edits })
}

fn relocate_yaml_file(
    file: &str,
    text: &str,
    occ: &[Occurrence],
    target_of: &dyn Fn(&str) -> anyhow::Result<String>,
    edits: &mut Vec<Edit>,
) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len() + 256);
    for (i, (s, e)) in split_documents(text).into_iter().enumerate() {
        let mut doc = text[s..e].to_string();
        // One edit per (path, reference): it swaps every occurrence of the
        // reference in that scalar (a script may name an image twice).
        let mut done = std::collections::BTreeSet::new();
        for o in occ.iter().filter(|o| o.doc == i) {
            if !done.insert((&o.path, &o.literal)) {
                continue;
            }
            let to = target_of(&o.literal)?;
            let mut n = 0;
            let at = format!("{} {}", o.object, yamledit::path_string(&o.path));
            doc = yamledit::edit_scalar_source(&doc, &o.path, |src| {
                let (t, k) = replace_tokens(src, &o.literal, &to);
                n = k;
                t
            })
            .with_context(|| format!("{file}: {at}"))?
            .with_context(|| format!("{file}: {at}: not a string any more"))?;
            if n == 0 {
                bail!(
                    "{file}: {at}: {} is not written there as it reads (an escape or a line fold?); relocate it with a hint",
                    o.literal
                );
            }
            edits.push(Edit {
                file: file.to_string(),
                at,
                from: o.literal.clone(),
                to,
            });
        }
        out.push_str(&doc);
    }
    Ok(out)
}

/// `name[:tag][@digest]` → name
fn name_part(literal: &str) -> &str {
    let no_digest = literal.split('@').next().unwrap_or(literal);
    match (no_digest.rfind(':'), no_digest.rfind('/')) {
        (Some(c), Some(s)) if c > s => &no_digest[..c],
        (Some(c), None) => &no_digest[..c],
        _ => no_digest,
    }
}

fn relocate_kustomize(
    out: &mut Tree,
    found: &Found,
    target_of: &dyn Fn(&str) -> anyhow::Result<String>,
    edits: &mut Vec<Edit>,
) -> anyhow::Result<()> {
    let top = out
        .top_kustomization()
        .context("the kustomize tree has no top kustomization")?;
    let mut overrides: BTreeMap<String, Override> = BTreeMap::new();
    let mut in_files: BTreeSet<&str> = BTreeSet::new();
    for (_, occ) in &found.sources {
        for o in occ {
            if o.in_container && o.place == Place::Field {
                let to = crate::oci::Reference::parse(&target_of(&o.literal)?)?;
                let from = crate::oci::Reference::parse(&o.literal)?;
                let new_tag = (to.tag != from.tag).then(|| to.tag.clone()).flatten();
                let digest = (to.digest != from.digest)
                    .then(|| to.digest.as_ref().map(|d| d.to_string()))
                    .flatten();
                overrides.insert(
                    name_part(&o.literal).to_string(),
                    Override {
                        new_name: to.name(),
                        new_tag,
                        digest,
                    },
                );
            } else {
                in_files.insert(&o.literal);
            }
        }
    }
    for literal in in_files {
        let to = target_of(literal)?;
        let mut total = 0;
        for (name, bytes) in out.files.iter_mut() {
            if super::tree::KUSTOMIZATION_NAMES
                .iter()
                .any(|k| name == k || name.ends_with(&format!("/{k}")))
            {
                continue;
            }
            let Ok(text) = std::str::from_utf8(bytes) else {
                continue;
            };
            let (new, n) = replace_tokens(text, literal, &to);
            if n > 0 {
                *bytes = new.into_bytes();
                total += n;
                edits.push(Edit {
                    file: name.clone(),
                    at: format!("{n}×"),
                    from: literal.to_string(),
                    to: to.clone(),
                });
            }
        }
        if total == 0 {
            bail!(
                "{literal}: the kustomize build names it outside a container, but no file of the tree holds it as written; add a hint"
            );
        }
    }
    if !overrides.is_empty() {
        let text =
            std::str::from_utf8(&out.files[&top]).with_context(|| format!("{top}: not UTF-8"))?;
        let new = append_images_override(text, &overrides).with_context(|| top.clone())?;
        for (name, o) in &overrides {
            edits.push(Edit {
                file: top.clone(),
                at: "images:".into(),
                from: name.clone(),
                to: o.new_name.clone(),
            });
        }
        out.files.insert(top, new.into_bytes());
    }
    Ok(())
}

/// One `images:` entry sync appends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub new_name: String,
    pub new_tag: Option<String>,
    /// Set when the relocated reference is pinned and the original was not
    /// (an untagged image: sync pushes it by digest, not as `latest`).
    pub digest: Option<String>,
}

/// Append `{name, newName[, newTag][, digest]}` entries to the end of the top-level
/// `images:` list of a kustomization (creating the key when absent); every
/// other byte is kept.
pub fn append_images_override(
    text: &str,
    overrides: &BTreeMap<String, Override>,
) -> anyhow::Result<String> {
    let entry = |indent: &str| -> String {
        let mut s = String::new();
        for (name, o) in overrides {
            s.push_str(&format!("{indent}- name: {}\n", yaml_str(name)));
            s.push_str(&format!("{indent}  newName: {}\n", yaml_str(&o.new_name)));
            if let Some(t) = &o.new_tag {
                s.push_str(&format!("{indent}  newTag: {}\n", yaml_str(t)));
            }
            if let Some(d) = &o.digest {
                s.push_str(&format!("{indent}  digest: {}\n", yaml_str(d)));
            }
        }
        s
    };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let key = lines.iter().position(|l| {
        let l = l.trim_end();
        l == "images:" || l.starts_with("images:") && l[7..].trim_start().starts_with('#')
    });
    let Some(key) = key else {
        if lines.iter().any(|l| l.starts_with("images:")) {
            bail!("its images: list is written in flow style ([...]); write it as a block list");
        }
        let mut s = text.to_string();
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("# image overrides added by bundler sync (relocation to the private registry)\nimages:\n");
        s.push_str(&entry(""));
        return Ok(s);
    };
    // The list ends at the first content line that is not an item or
    // inside one (less indented, or at item indent without '-').
    let mut item_indent: Option<usize> = None;
    let mut last_content = key;
    for (i, l) in lines.iter().enumerate().skip(key + 1) {
        let t = l.trim_start();
        if t.trim().is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = l.len() - t.len();
        let ii = *item_indent.get_or_insert(ind);
        if ind < ii || (ind == ii && !t.starts_with('-')) {
            break;
        }
        last_content = i;
    }
    let indent = " ".repeat(item_indent.unwrap_or(0));
    let mut s = String::with_capacity(text.len() + 256);
    for (i, l) in lines.iter().enumerate() {
        s.push_str(l);
        if i == last_content {
            if !l.ends_with('\n') {
                s.push('\n');
            }
            s.push_str(&entry(&indent));
        }
    }
    Ok(s)
}

fn yaml_str(s: &str) -> String {
    if yamledit::plain_safe(s) {
        s.to_string()
    } else {
        yamledit::double_quoted(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_appended_after_existing_entries() {
        let k = "bases:\n  - ../base\n\nimages:\n- name: a/b\n  newTag: \"1\"\n# trailing comment\n\nvars: []\n";
        let o = BTreeMap::from([(
            "a/b".to_string(),
            Override {
                new_name: "r:5000/a/b".to_string(),
                new_tag: None,
                digest: None,
            },
        )]);
        let got = append_images_override(k, &o).unwrap();
        assert_eq!(
            got,
            "bases:\n  - ../base\n\nimages:\n- name: a/b\n  newTag: \"1\"\n- name: a/b\n  newName: r:5000/a/b\n# trailing comment\n\nvars: []\n"
        );
        let none = append_images_override("resources: [a.yaml]", &o).unwrap();
        assert!(none.ends_with("images:\n- name: a/b\n  newName: r:5000/a/b\n"));
    }

    #[test]
    fn a_reference_twice_in_one_script_is_one_edit() {
        let text = "kind: ConfigMap\nmetadata: {name: c}\ndata:\n  run.sh: |\n    # keep me\n    docker pull gcr.io/a/b:1\n    docker run gcr.io/a/b:1\n";
        let tree = Tree {
            kind: TreeKind::File,
            apply: "c.yaml".into(),
            files: BTreeMap::from([("c.yaml".to_string(), text.as_bytes().to_vec())]),
        };
        let found = find(&tree, &[], Path::new("/nonexistent")).unwrap();
        assert_eq!(found.count(), 2);
        let to = |l: &str| Ok(format!("r:5000/{l}"));
        let r = relocate(&tree, &[], &found, &to).unwrap();
        assert_eq!(
            String::from_utf8(r.tree.files["c.yaml"].clone()).unwrap(),
            text.replace("gcr.io/a/b:1", "r:5000/gcr.io/a/b:1")
        );
        assert_eq!(r.edits.len(), 1);
    }

    #[test]
    fn names() {
        assert_eq!(name_part("a/b:1@sha256:00"), "a/b");
        assert_eq!(name_part("h:5000/a/b"), "h:5000/a/b");
        assert_eq!(name_part("busybox"), "busybox");
    }
}
