//! Rewriting image references in a chart's top-level `values.yaml`.
//!
//! For each hint: render it against the merged values, apply the rewrite
//! rules, and find which values the placeholders must take so that the hint
//! renders the new reference (literal text kept; the placeholder holding the
//! registry takes the new registry; placeholders whose value need not change
//! keep it). Those values are written into the top-level `values.yaml` only
//! (subchart values under the subchart's key, `global` as `global`), with a
//! comment-preserving editor, so packaged subcharts stay byte-identical.
use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use serde_yaml_ng::Value;

use super::hints::{self, Hints, MergedValues, PartRole, Segment};
use super::yamledit::{self, Seg};
use super::Chart;
use crate::oci::reference::RewriteRules;
use crate::oci::{Digest, Reference};

/// What relocation changed.
#[derive(Clone, Debug, Default)]
pub struct Relocation {
    /// (original image, new image) per hint.
    pub images: Vec<(Reference, Reference)>,
    /// Unified-diff-like summary of changed values lines, for `--dry-run`.
    pub diff: String,
}

/// Relocate `chart` in place: apply `rules` to every hinted image and edit
/// the top-level values.yaml minimally; re-point dependencies whose
/// repository is `source_repo` to `target_repo`. `digest_map` maps an
/// index digest to the platform manifest digest that was kept.
pub fn relocate(
    chart: &mut Chart,
    hints: &Hints,
    rules: &RewriteRules,
    digest_map: &HashMap<Digest, Digest>,
    repos: Option<(&str, &str)>,
) -> anyhow::Result<Relocation> {
    let merged = MergedValues::of(chart)?;
    let mut writes: BTreeMap<Vec<Seg>, (String, String, String)> = BTreeMap::new();
    let mut images = Vec::new();
    let mut expected: Vec<(String, String)> = Vec::new();
    for template in &hints.templates {
        let hint = hints::resolve_one(template, &merged.values)
            .with_context(|| format!("chart {} {}", chart.name, chart.version))?;
        let original = hint.reference.clone();
        let new_digest = original
            .digest
            .as_ref()
            .map(|d| digest_map.get(d).cloned().unwrap_or_else(|| d.clone()));
        let rw = rules.rewrite(&original)?;
        let mut target = rw.target.clone();
        target.digest = new_digest.clone();
        images.push((original.clone(), target.clone()));
        if target == original {
            expected.push((template.clone(), hint.rendered.clone()));
            continue;
        }
        let (name_end, _) = hints::name_and_tag_end(&hint.rendered);
        let mut tail = hint.rendered[name_end..].to_string();
        if let (Some(od), Some(nd)) = (&original.digest, &new_digest) {
            tail = tail.replace(&od.to_string(), &nd.to_string());
        }
        let new_rendered = format!("{}/{}{}", rw.registry, rw.repository, tail);
        let segs = hints::parse_template(template)?;
        let assignment = match_segments(&segs, &hint.parts, &new_rendered, &rw.registry)
            .with_context(|| {
                format!(
                    "cannot relocate hint {template:?} of chart {}: its values cannot render {new_rendered:?}",
                    chart.name
                )
            })?;
        for (part, new_value) in hint.parts.iter().zip(assignment) {
            if part.value == new_value {
                continue;
            }
            let top = top_level_path(&merged, &part.path);
            match writes.get(&top) {
                Some((_, prev, prev_t)) if *prev != new_value => bail!(
                    "hints {prev_t:?} and {template:?} of chart {} need different values for {}: {prev:?} and {new_value:?}",
                    chart.name,
                    yamledit::path_string(&top)
                ),
                Some(_) => {}
                None => {
                    writes.insert(
                        top,
                        (part.value.clone(), new_value.clone(), template.clone()),
                    );
                }
            }
        }
        expected.push((template.clone(), new_rendered));
    }

    // Guards that refuse substituted images (Bitnami's
    // `global.security.allowInsecureImages`) are set with the images.
    let mut guards = Vec::new();
    if !writes.is_empty() {
        for g in super::learn_controls::guard_paths(&merged) {
            let top = top_level_path(&merged, &g);
            if !writes.contains_key(&top) {
                writes.insert(
                    top.clone(),
                    ("false".into(), "true".into(), "(guard)".into()),
                );
                guards.push(top);
            }
        }
    }
    let mut diff = String::new();
    if !writes.is_empty() {
        let text = match chart.file("values.yaml") {
            Some(b) => String::from_utf8(b.to_vec()).context("values.yaml is not UTF-8")?,
            None => String::new(),
        };
        let mut text = text;
        for (path, (old, new, _)) in &writes {
            let before = yamledit::get(&text, path)?;
            text = yamledit::set(&text, path, new).with_context(|| {
                format!(
                    "editing {} in values.yaml of chart {}",
                    yamledit::path_string(path),
                    chart.name
                )
            })?;
            diff.push_str(&format!(
                "values.yaml {}: {} -> {}\n",
                yamledit::path_string(path),
                match before {
                    Some(b) => format!("{b:?}"),
                    None => format!("(unset; was {old:?} from the chart defaults)"),
                },
                format_args!("{new:?}")
            ));
        }
        for g in &guards {
            text = comment_guard(&text, g);
        }
        chart.set_file("values.yaml", text.into_bytes());
        // Check: every hint now renders what we meant.
        let merged = MergedValues::of(chart)?;
        for (template, want) in &expected {
            let got = hints::resolve_one(template, &merged.values)?;
            if got.rendered != *want {
                bail!(
                    "relocating chart {}: hint {template:?} renders {:?} after editing values.yaml, expected {want:?}",
                    chart.name,
                    got.rendered
                );
            }
        }
    }
    if let Some((source, target)) = repos {
        diff.push_str(&repoint_dependencies(chart, source, target)?);
    }
    Ok(Relocation { images, diff })
}

/// Say why a guard was set, on its line (`allowInsecureImages: true  #
/// set by bundler: ...`), when the line can be found unambiguously.
fn comment_guard(text: &str, path: &[Seg]) -> String {
    let Some(Seg::Key(key)) = path.last() else {
        return text.to_string();
    };
    // yamledit writes the string "true"; a guard is a boolean (schemas
    // say so).
    let quoted = format!("{key}: \"true\"");
    let want = format!("{key}: true");
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == want || l.trim() == quoted)
        .map(|(i, _)| i)
        .collect();
    if hits.len() != 1 {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 120);
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i == hits[0] {
            let (body, nl) = match l.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (l, ""),
            };
            out.push_str(&body.replace(&quoted, &want));
            out.push_str(
                "  # set by bundler: the chart refuses relocated (substituted) images without it",
            );
            out.push_str(nl);
        } else {
            out.push_str(l);
        }
    }
    out
}

/// The path in the top-level values.yaml that sets the merged value at
/// `path`: the same keys, except that a subchart's `global` is the
/// top-level `global`.
fn top_level_path(merged: &MergedValues, path: &[String]) -> Vec<Seg> {
    let mut i = 0;
    while i < path.len() && merged.is_subchart(&path[..=i]) {
        i += 1;
    }
    let start = if i > 0 && path.get(i).map(String::as_str) == Some("global") {
        i
    } else {
        0
    };
    // A list index (`sidecars.0.image`) is an index in values.yaml too.
    let mut segs = Vec::new();
    for (i, k) in path.iter().enumerate().skip(start) {
        let in_list = matches!(
            hints::lookup(&merged.values, &path[..i]),
            Some(Value::Sequence(_))
        );
        match k.parse::<usize>() {
            Ok(n) if in_list => segs.push(Seg::Index(n)),
            _ => segs.push(Seg::Key(k.clone())),
        }
    }
    segs
}

/// Values for the placeholders of `segs` such that the template renders
/// `target`: literal text must match, placeholders that held the registry
/// prefer the new registry, others prefer their old value.
fn match_segments(
    segs: &[Segment],
    parts: &[hints::HintPart],
    target: &str,
    new_registry: &str,
) -> anyhow::Result<Vec<String>> {
    struct Ctx<'a> {
        segs: &'a [Segment],
        parts: &'a [hints::HintPart],
        target: &'a str,
        new_registry: &'a str,
        best: Option<(i64, Vec<String>)>,
        steps: usize,
    }
    fn go(c: &mut Ctx<'_>, si: usize, pi: usize, pos: usize, acc: &mut Vec<String>, score: i64) {
        c.steps += 1;
        if c.steps > 200_000 {
            return;
        }
        if si == c.segs.len() {
            if pos == c.target.len() && c.best.as_ref().is_none_or(|(s, _)| score > *s) {
                c.best = Some((score, acc.clone()));
            }
            return;
        }
        match &c.segs[si] {
            Segment::Lit(l) => {
                if c.target[pos..].starts_with(l.as_str()) {
                    go(c, si + 1, pi, pos + l.len(), acc, score);
                }
            }
            Segment::Ph(_) => {
                let part = &c.parts[pi];
                let last = si + 1 == c.segs.len();
                let ends: Vec<usize> = if last {
                    vec![c.target.len()]
                } else {
                    (pos..=c.target.len())
                        .filter(|e| c.target.is_char_boundary(*e))
                        .collect()
                };
                for e in ends {
                    let v = &c.target[pos..e];
                    if v.is_empty() && !part.value.is_empty() {
                        continue;
                    }
                    let mut s = score;
                    if v == part.value {
                        s += 1;
                    }
                    if matches!(part.role, PartRole::Registry) && v == c.new_registry {
                        s += 2;
                    }
                    // A bare name that gains a `/` changes meaning in
                    // charts that take a name with a `/` as a whole
                    // reference (dapr's `image.name`): keep its shape.
                    if !part.value.is_empty() && !part.value.contains('/') && v.contains('/') {
                        s -= 3;
                    }
                    acc.push(v.to_string());
                    go(c, si + 1, pi + 1, e, acc, s);
                    acc.pop();
                }
            }
        }
    }
    let mut c = Ctx {
        segs,
        parts,
        target,
        new_registry,
        best: None,
        steps: 0,
    };
    go(&mut c, 0, 0, 0, &mut Vec::new(), 0);
    match c.best {
        Some((_, v)) => Ok(v),
        None => bail!("the literal text of the hint does not fit the new reference"),
    }
}

/// Point `dependencies[].repository == source` at `target` in Chart.yaml and
/// Chart.lock, and recompute the lock digest as Helm does.
fn repoint_dependencies(chart: &mut Chart, source: &str, target: &str) -> anyhow::Result<String> {
    let norm = |s: &str| s.trim_end_matches('/').to_string();
    let (source, target) = (norm(source), norm(target));
    let mut diff = String::new();
    let mut changed = false;
    for file in ["Chart.yaml", "Chart.lock"] {
        let Some(bytes) = chart.file(file) else {
            continue;
        };
        let mut text =
            String::from_utf8(bytes.to_vec()).with_context(|| format!("{file} is not UTF-8"))?;
        let v: Value = crate::yaml_bounds::from_str(&text)
            .with_context(|| format!("{file} is not valid YAML"))?;
        let Some(deps) = v.get("dependencies").and_then(Value::as_sequence) else {
            continue;
        };
        for (i, d) in deps.iter().enumerate() {
            let repo = d.get("repository").and_then(Value::as_str).unwrap_or("");
            if !repo.is_empty() && norm(repo) == source {
                let path = vec![
                    Seg::Key("dependencies".into()),
                    Seg::Index(i),
                    Seg::Key("repository".into()),
                ];
                text = yamledit::set(&text, &path, &target)?;
                diff.push_str(&format!(
                    "{file} {}: {repo:?} -> {target:?}\n",
                    yamledit::path_string(&path)
                ));
                changed = true;
            }
        }
        chart.set_file(file, text.into_bytes());
    }
    if changed {
        if let (Some(cy), Some(cl)) = (chart.file("Chart.yaml"), chart.file("Chart.lock")) {
            let cy: Value = crate::yaml_bounds::from_slice(cy)?;
            let cl: Value = crate::yaml_bounds::from_slice(cl)?;
            let digest = helm_lock_digest(cy.get("dependencies"), cl.get("dependencies"))?;
            let text = String::from_utf8(chart.file("Chart.lock").unwrap().to_vec())?;
            let old = cl
                .get("digest")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let text = yamledit::set(&text, &[Seg::Key("digest".into())], &digest)?;
            diff.push_str(&format!("Chart.lock digest: {old:?} -> {digest:?}\n"));
            chart.set_file("Chart.lock", text.into_bytes());
        }
    }
    Ok(diff)
}

/// Helm's `HashReq`: sha256 of the JSON of `[requirements, locked]` where
/// each is a list of `chart.Dependency` (Go field order and omitempty).
pub fn helm_lock_digest(req: Option<&Value>, lock: Option<&Value>) -> anyhow::Result<String> {
    fn dep_json(d: &Value) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let s = |k: &str| d.get(k).and_then(hints::scalar_string).unwrap_or_default();
        m.insert("name".into(), s("name").into());
        if !s("version").is_empty() {
            m.insert("version".into(), s("version").into());
        }
        m.insert("repository".into(), s("repository").into());
        if !s("condition").is_empty() {
            m.insert("condition".into(), s("condition").into());
        }
        if let Some(Value::Sequence(tags)) = d.get("tags") {
            if !tags.is_empty() {
                m.insert(
                    "tags".into(),
                    tags.iter()
                        .map(|t| hints::scalar_string(t).unwrap_or_default().into())
                        .collect::<Vec<serde_json::Value>>()
                        .into(),
                );
            }
        }
        if d.get("enabled").and_then(Value::as_bool) == Some(true) {
            m.insert("enabled".into(), true.into());
        }
        if let Some(Value::Sequence(iv)) = d.get("import-values") {
            if !iv.is_empty() {
                m.insert(
                    "import-values".into(),
                    to_json(&Value::Sequence(iv.clone())),
                );
            }
        }
        if !s("alias").is_empty() {
            m.insert("alias".into(), s("alias").into());
        }
        serde_json::Value::Object(m)
    }
    fn to_json(v: &Value) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Number(n) => serde_json::to_value(n).unwrap_or(serde_json::Value::Null),
            Value::String(s) => s.clone().into(),
            Value::Sequence(s) => s.iter().map(to_json).collect::<Vec<_>>().into(),
            Value::Mapping(m) => {
                // Go marshals maps with sorted keys.
                let mut items: Vec<(String, serde_json::Value)> = m
                    .iter()
                    .map(|(k, v)| (hints::scalar_string(k).unwrap_or_default(), to_json(v)))
                    .collect();
                items.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(items.into_iter().collect())
            }
            Value::Tagged(t) => to_json(&t.value),
        }
    }
    let list = |v: Option<&Value>| match v {
        Some(Value::Sequence(s)) => serde_json::Value::Array(s.iter().map(dep_json).collect()),
        _ => serde_json::Value::Null,
    };
    let json = serde_json::Value::Array(vec![list(req), list(lock)]);
    let text = serde_json::to_string(&json)?;
    // Go's encoder escapes these for HTML safety.
    let text = text
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    Ok(format!("sha256:{}", Digest::of(text.as_bytes()).hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_lock_digest_matches_helm() {
        let cy: Value = serde_yaml_ng::from_str(
            "dependencies:\n  - name: subchart-1\n    version: 0.1.0\n  - name: subchart-2\n    version: 0.1.0\n",
        )
        .unwrap();
        let cl: Value = serde_yaml_ng::from_str("dependencies:\n- name: subchart-1\n  repository: \"\"\n  version: 0.1.0\n- name: subchart-2\n  repository: \"\"\n  version: 0.1.0\n").unwrap();
        assert_eq!(
            helm_lock_digest(cy.get("dependencies"), cl.get("dependencies")).unwrap(),
            "sha256:a7493ea91a9ff512f9eb05db01b79fddaf56214ecf45c049d0d18f57363e93ef"
        );
    }

    fn chart(values: &str) -> Chart {
        Chart::from_files(vec![
            ("Chart.yaml".into(), b"name: c\nversion: 1.0.0\n".to_vec()),
            ("values.yaml".into(), values.as_bytes().to_vec()),
        ])
        .unwrap()
    }

    #[test]
    fn relocates_split_and_whole_references() {
        let mut c = chart("# c\nimage:\n  registry: docker.io # r\n  repository: bitnami/kafka\n  tag: 2.8.1\nx:\n  image: \"busybox:1.36\"\ny:\n  repository: quay.io/a/b\n  tag: v1\n");
        let h = Hints {
            templates: vec![
                "{{ .image.registry }}/{{ .image.repository }}:{{ .image.tag }}".into(),
                "{{ .x.image }}".into(),
                "{{ .y.repository }}:{{ .y.tag }}".into(),
            ],
        };
        let rules = RewriteRules {
            prefix_registry: Some("10.0.0.1:5000".into()),
            ..Default::default()
        };
        let r = relocate(&mut c, &h, &rules, &HashMap::new(), None).unwrap();
        let v = String::from_utf8(c.file("values.yaml").unwrap().to_vec()).unwrap();
        assert_eq!(
            v,
            "# c\nimage:\n  registry: 10.0.0.1:5000 # r\n  repository: docker.io/bitnami/kafka\n  tag: 2.8.1\nx:\n  image: \"10.0.0.1:5000/docker.io/library/busybox:1.36\"\ny:\n  repository: 10.0.0.1:5000/quay.io/a/b\n  tag: v1\n"
        );
        assert_eq!(r.images.len(), 3);
        assert!(r.diff.contains("image.registry"));
    }

    #[test]
    fn digest_map_and_globals() {
        let idx = Digest::of(b"index");
        let kept = Digest::of(b"amd64");
        let mut c = chart(&format!(
            "global:\n  imageRegistry: docker.io\nimage:\n  repository: bitnami/kafka\n  digest: \"{idx}\"\n"
        ));
        let h = Hints {
            templates: vec![
                "{{ .global.imageRegistry }}/{{ .image.repository }}@{{ .image.digest }}".into(),
            ],
        };
        let rules = RewriteRules {
            registry: Some("r.local".into()),
            ..Default::default()
        };
        let map = HashMap::from([(idx.clone(), kept.clone())]);
        let r = relocate(&mut c, &h, &rules, &map, None).unwrap();
        assert_eq!(
            r.images[0].1.to_string(),
            format!("r.local/bitnami/kafka@{kept}")
        );
        let v = String::from_utf8(c.file("values.yaml").unwrap().to_vec()).unwrap();
        assert_eq!(
            v,
            format!("global:\n  imageRegistry: r.local\nimage:\n  repository: bitnami/kafka\n  digest: \"{kept}\"\n")
        );
    }
}
