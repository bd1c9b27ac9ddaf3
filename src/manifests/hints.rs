//! Hints for manifests: images no reader can see, such as a Docker Hub
//! short name inside a script in a ConfigMap. The relok8s idea (tell the
//! tool where an image is) addressed the way manifests are: by file and
//! YAML path rather than by values path.
//!
//! ```yaml
//! - file: kube-batch/deploy.yaml       # relative to the entry's path
//!   path: data.run\.sh                 # YAML path ('\.' for a dot in a key);
//!                                      # or a list: [data, run.sh]
//!   image: busybox:1.36                # the reference exactly as written there
//! - file: config/entrypoint.sh         # no path: anywhere in the file's text
//!   image: docker.io/library/alpine:3.19
//! ```
//!
//! Pack checks every hint (the file exists, the path leads to a string,
//! the reference is written there) and carries the hints file as
//! `hints.yaml`; sync rewrites each hinted reference where the hint points.
use anyhow::{bail, Context};
use serde::Deserialize;

use super::scan::{replace_tokens, split_documents};
use crate::chart::yamledit::{self, Seg};
use crate::oci::Reference;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestHint {
    pub file: String,
    pub path: Option<Vec<Seg>>,
    pub image: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHint {
    file: String,
    #[serde(default)]
    path: Option<RawPath>,
    image: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPath {
    Text(String),
    List(Vec<serde_yaml_ng::Value>),
}

/// `a.b[0].c\.d` → [a, b, 0, c.d]
fn parse_path(s: &str) -> anyhow::Result<Vec<Seg>> {
    let mut segs = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let flush = |cur: &mut String, segs: &mut Vec<Seg>| {
        if !cur.is_empty() {
            segs.push(Seg::Key(std::mem::take(cur)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.push(chars.next().context("path ends with '\\'")?),
            '.' => flush(&mut cur, &mut segs),
            '[' => {
                flush(&mut cur, &mut segs);
                let mut n = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    n.push(d);
                }
                segs.push(Seg::Index(
                    n.parse()
                        .with_context(|| format!("[{n}] is not a list index"))?,
                ));
            }
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut segs);
    if segs.is_empty() {
        bail!("empty path");
    }
    Ok(segs)
}

/// Parse a hints file's text (`what` names it in errors).
pub fn parse(text: &str, what: &str) -> anyhow::Result<Vec<ManifestHint>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<RawHint> = crate::yaml_bounds::from_str(text)
        .with_context(|| format!("{what}: expected a list of {{file, path, image}}"))?;
    let mut out = Vec::new();
    for (i, h) in raw.into_iter().enumerate() {
        let at = format!("{what}: [{i}]");
        if h.file.starts_with('/') || h.file.split('/').any(|c| c == "..") {
            bail!(
                "{at}: file {:?} must be relative to the entry's path, without '..'",
                h.file
            );
        }
        Reference::parse(&h.image).with_context(|| format!("{at}: image"))?;
        let path = match h.path {
            None => None,
            Some(RawPath::Text(s)) => {
                Some(parse_path(&s).with_context(|| format!("{at}: path {s:?}"))?)
            }
            Some(RawPath::List(items)) => Some(
                items
                    .iter()
                    .map(|v| match v {
                        serde_yaml_ng::Value::Number(n) if n.is_u64() => {
                            Ok(Seg::Index(n.as_u64().unwrap_or(0) as usize))
                        }
                        serde_yaml_ng::Value::String(s) => Ok(Seg::Key(s.clone())),
                        other => {
                            bail!("{at}: path element {other:?} is neither a key nor an index")
                        }
                    })
                    .collect::<anyhow::Result<_>>()?,
            ),
        };
        out.push(ManifestHint {
            file: h.file,
            path,
            image: h.image,
        });
    }
    Ok(out)
}

/// Apply `hint` to the text of its file: replace the reference where it
/// points with `to`. Returns the new text and how many were replaced; with
/// `to` equal to the image this is the pack-time check that the hint holds.
pub fn apply(hint: &ManifestHint, text: &str, to: &str) -> anyhow::Result<(String, usize)> {
    let Some(path) = &hint.path else {
        return Ok(replace_tokens(text, &hint.image, to));
    };
    let mut out = String::with_capacity(text.len());
    let mut total = 0;
    for (s, e) in split_documents(text) {
        let doc = &text[s..e];
        let mut n = 0;
        let edited = yamledit::edit_scalar_source(doc, path, |src| {
            let (t, k) = replace_tokens(src, &hint.image, to);
            n = k;
            t
        })
        .with_context(|| format!("{}: {}", hint.file, yamledit::path_string(path)))?;
        total += n;
        out.push_str(edited.as_deref().unwrap_or(doc));
    }
    Ok((out, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_application() {
        assert_eq!(
            parse_path("data.run\\.sh").unwrap(),
            vec![Seg::Key("data".into()), Seg::Key("run.sh".into())]
        );
        assert_eq!(
            parse_path("spec.containers[1].args").unwrap(),
            vec![
                Seg::Key("spec".into()),
                Seg::Key("containers".into()),
                Seg::Index(1),
                Seg::Key("args".into())
            ]
        );
        let h = parse(
            "- {file: a.yaml, path: [data, x.sh], image: busybox}\n",
            "h",
        )
        .unwrap();
        let text = "data:\n  x.sh: docker pull busybox # busybox\n---\ndata: {y: busybox}\n";
        let (out, n) = apply(&h[0], text, "r/busybox").unwrap();
        // The comment is not part of the value: it stays.
        assert_eq!(n, 1);
        assert_eq!(
            out,
            "data:\n  x.sh: docker pull r/busybox # busybox\n---\ndata: {y: busybox}\n"
        );
        assert!(parse("- {file: ../a.yaml, image: busybox}", "h").is_err());
    }
}
