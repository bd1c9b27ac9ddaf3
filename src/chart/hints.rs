//! Image hints in relok8s syntax: a YAML list of templates such as
//! `"{{ .image.registry }}/{{ .image.repository }}:{{ .image.tag }}"`.
//!
//! A template is literal text and `{{ .a.b.c }}` placeholders naming value
//! paths (`.Values.` and `$.Values.` prefixes are accepted; `{{-`/`-}}` trim
//! markers are ignored since hints have no surrounding whitespace). It is
//! rendered against the chart's merged values: the top-level `values.yaml`,
//! each subchart's values under its name (or alias), parent values winning,
//! and `global` propagated from parent to subcharts as Helm does.
use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde_yaml_ng::Value;

use crate::oci::Reference;

use super::Chart;

/// What part of the image reference a placeholder renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PartRole {
    /// The registry host (with or without a path prefix), followed by more
    /// name in the template: `{{ .image.registry }}/...`.
    Registry,
    /// A part of the name after the registry: `.../{{ .image.repository }}`.
    Repository,
    /// The whole name (registry and repository): `{{ .image.repository }}:...`.
    Name,
    /// The whole reference with tag and/or digest: `{{ .x.image }}`.
    Full,
    Tag,
    Digest,
    /// Anything else (a placeholder straddling parts).
    Other,
}

/// One placeholder of a resolved hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintPart {
    /// Value path in the merged values (`["subchart-1", "image", "tag"]`).
    pub path: Vec<String>,
    pub role: PartRole,
    /// What it rendered to.
    pub value: String,
}

/// One hint resolved against a chart's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedHint {
    pub template: String,
    /// The image it renders to.
    pub reference: Reference,
    /// The template as rendered (before dropping an empty tag's `:`).
    pub rendered: String,
    /// The placeholders, in template order.
    pub parts: Vec<HintPart>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Hints {
    pub templates: Vec<String>,
}

/// A piece of a hint template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Lit(String),
    /// A value path.
    Ph(Vec<String>),
}

/// Split a template into literal text and placeholders.
pub fn parse_template(template: &str) -> anyhow::Result<Vec<Segment>> {
    Ok(parse_template_with_defaults(template)?
        .into_iter()
        .map(|(s, _)| s)
        .collect())
}

/// [`parse_template`], with the default of each placeholder written
/// `{{ or .a.b "default" }}` (Go's `or`: the value when it is set and not
/// empty, else the default). Learned hints use it for values that are
/// null in `values.yaml` and defaulted inside the chart's templates.
pub fn parse_template_with_defaults(
    template: &str,
) -> anyhow::Result<Vec<(Segment, Option<String>)>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push((Segment::Lit(rest[..open].to_string()), None));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .with_context(|| format!("hint {template:?}: `{{{{` without `}}}}`"))?;
        let mut expr = after[..close].trim();
        expr = expr.strip_prefix('-').unwrap_or(expr);
        expr = expr.strip_suffix('-').unwrap_or(expr).trim();
        let (expr, default) = match expr.strip_prefix("or ") {
            Some(e) => {
                let e = e.trim_start();
                let (path, lit) = e.split_once(char::is_whitespace).with_context(|| {
                    format!("hint {template:?}: `or` needs a value path and a quoted default")
                })?;
                let lit: String = serde_json::from_str(lit.trim()).with_context(|| {
                    format!("hint {template:?}: the default of `or {path}` is not a quoted string")
                })?;
                (path, Some(lit))
            }
            None => (expr, None),
        };
        out.push((
            Segment::Ph(parse_path(expr).with_context(|| {
                format!("hint {template:?}: unsupported expression {{{{ {expr} }}}}")
            })?),
            default,
        ));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push((Segment::Lit(rest.to_string()), None));
    }
    Ok(out)
}

fn parse_path(expr: &str) -> anyhow::Result<Vec<String>> {
    let e = expr.strip_prefix('$').unwrap_or(expr);
    if !e.starts_with('.') || e.len() < 2 {
        bail!("expected a value path such as .image.repository");
    }
    let mut parts: Vec<String> = Vec::new();
    for p in e[1..].split('.') {
        if p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            bail!("expected a value path such as .image.repository");
        }
        parts.push(p.to_string());
    }
    if parts.first().map(String::as_str) == Some("Values") && parts.len() > 1 {
        parts.remove(0);
    }
    Ok(parts)
}

impl Hints {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let v: Value =
            crate::yaml_bounds::from_str(text).context("hints file is not valid YAML")?;
        let list = match v {
            Value::Null => Vec::new(),
            Value::Sequence(s) => s,
            _ => bail!("hints file must be a YAML list of image templates"),
        };
        let mut templates = Vec::new();
        for (i, item) in list.into_iter().enumerate() {
            match item {
                Value::String(s) => {
                    parse_template(&s)?;
                    templates.push(s);
                }
                other => bail!(
                    "hint #{} is not a string: {}",
                    i + 1,
                    serde_yaml_ng::to_string(&other).unwrap_or_default().trim()
                ),
            }
        }
        Ok(Hints { templates })
    }

    /// The YAML text as written into a bundle.
    pub fn to_yaml(&self) -> String {
        if self.templates.is_empty() {
            return "[]\n".to_string();
        }
        let mut out = String::new();
        for t in &self.templates {
            out.push_str("- ");
            out.push_str(&super::yamledit::double_quoted(t));
            out.push('\n');
        }
        out
    }

    /// Render every hint against the chart's merged values.
    pub fn resolve(&self, chart: &Chart) -> anyhow::Result<Vec<ResolvedHint>> {
        let merged = MergedValues::of(chart)?;
        self.templates
            .iter()
            .map(|t| resolve_one(t, &merged.values))
            .collect()
    }
}

/// Render one template against merged values.
pub fn resolve_one(template: &str, values: &Value) -> anyhow::Result<ResolvedHint> {
    let segs = parse_template_with_defaults(template)?;
    let mut rendered = String::new();
    let mut spans = Vec::new();
    for (seg, default) in &segs {
        match seg {
            Segment::Lit(s) => rendered.push_str(s),
            Segment::Ph(path) => {
                let s = match (lookup(values, path), default) {
                    (Some(v), Some(d)) => match scalar_string(v) {
                        Some(s) if !s.is_empty() && s != "false" => s,
                        _ => d.clone(),
                    },
                    (None, Some(d)) => d.clone(),
                    (Some(v), None) => scalar_string(v).with_context(|| {
                        format!(
                            "hint {template:?}: the value .{} is not a single value",
                            path.join(".")
                        )
                    })?,
                    (None, None) => anyhow::bail!(
                        "hint {template:?}: the value .{} is not set in the chart's values",
                        path.join(".")
                    ),
                };
                let start = rendered.len();
                rendered.push_str(&s);
                spans.push((path.clone(), start, rendered.len(), s));
            }
        }
    }
    let mut text = rendered.as_str();
    // `repo:{{ .tag }}` with an empty tag: the chart falls back to something
    // else (appVersion); the image is the name alone.
    while let Some(t) = text.strip_suffix([':', '@']) {
        text = t;
    }
    let reference = Reference::parse(text)
        .with_context(|| format!("hint {template:?} renders {rendered:?}"))?;
    let (name_end, tag_end) = name_and_tag_end(&rendered);
    let parts = spans
        .into_iter()
        .map(|(path, s, e, value)| {
            let role = if s == 0 && e > name_end {
                PartRole::Full
            } else if s == 0 && e == name_end {
                PartRole::Name
            } else if s == 0 {
                PartRole::Registry
            } else if e <= name_end {
                PartRole::Repository
            } else if s > name_end && e <= tag_end {
                PartRole::Tag
            } else if s > tag_end {
                PartRole::Digest
            } else {
                PartRole::Other
            };
            HintPart { path, role, value }
        })
        .collect();
    Ok(ResolvedHint {
        template: template.to_string(),
        reference,
        rendered,
        parts,
    })
}

/// In a rendered reference, the end of the name (where `:tag` or `@digest`
/// starts) and the end of the tag (where `@digest` starts).
pub fn name_and_tag_end(s: &str) -> (usize, usize) {
    let at = s.find('@').unwrap_or(s.len());
    let before = &s[..at];
    let slash = before.rfind('/').map(|i| i + 1).unwrap_or(0);
    let name_end = before[slash..].find(':').map(|i| slash + i).unwrap_or(at);
    (name_end, at)
}

pub fn lookup<'v>(values: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut v = values;
    for k in path {
        v = match v {
            // Lists of image maps: `{{ .sidecars.0.image }}`.
            Value::Sequence(s) => s.get(k.parse::<usize>().ok()?)?,
            _ => v.as_mapping()?.get(Value::String(k.clone()))?,
        };
    }
    Some(v)
}

/// A value as a template would print it.
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Tagged(t) => scalar_string(&t.value),
        _ => None,
    }
}

/// A subchart in the values tree.
#[derive(Clone, Debug, Default)]
pub struct SubchartNode {
    /// Path of the subchart inside its parent (`charts/common` or
    /// `charts/common-1.10.0.tgz`).
    pub file: String,
    /// The subchart's `appVersion` (what its templates default a tag to).
    pub app_version: Option<String>,
    pub children: BTreeMap<String, SubchartNode>,
}

/// A chart's values as Helm coalesces them.
#[derive(Clone, Debug)]
pub struct MergedValues {
    pub values: Value,
    /// Subcharts by values key (name or alias).
    pub subcharts: BTreeMap<String, SubchartNode>,
    /// The top chart's `appVersion`.
    pub app_version: Option<String>,
}

impl MergedValues {
    pub fn of(chart: &Chart) -> anyhow::Result<Self> {
        let mut subcharts = BTreeMap::new();
        let values = coalesce(chart, Value::Mapping(Default::default()), &mut subcharts, 0)?;
        Ok(MergedValues {
            values,
            subcharts,
            app_version: chart.metadata()?.app_version,
        })
    }

    /// The `appVersion` of the chart whose values hold `path` (the
    /// deepest subchart on the path, else the top chart).
    pub fn app_version_at(&self, path: &[String]) -> Option<String> {
        let mut level = &self.subcharts;
        let mut found = self.app_version.clone();
        for k in path {
            match level.get(k) {
                Some(n) => {
                    found = n.app_version.clone();
                    level = &n.children;
                }
                None => break,
            }
        }
        found
    }

    /// Whether `path` (a prefix of keys) names a subchart.
    pub fn is_subchart(&self, path: &[String]) -> bool {
        let mut level = &self.subcharts;
        for (i, k) in path.iter().enumerate() {
            match level.get(k) {
                Some(n) if i + 1 == path.len() => {
                    let _ = n;
                    return true;
                }
                Some(n) => level = &n.children,
                None => return false,
            }
        }
        false
    }
}

/// The chart's own `values.yaml` parsed (empty map when absent or empty).
pub fn own_values(chart: &Chart) -> anyhow::Result<Value> {
    match chart.file("values.yaml") {
        None => Ok(Value::Mapping(Default::default())),
        Some(b) => {
            let v: Value = crate::yaml_bounds::from_slice(b).with_context(|| {
                format!("values.yaml of chart {} is not valid YAML", chart.name)
            })?;
            Ok(match v {
                Value::Null => Value::Mapping(Default::default()),
                Value::Mapping(_) => v,
                _ => bail!("values.yaml of chart {} is not a mapping", chart.name),
            })
        }
    }
}

/// `over` wins; maps merge deeply.
pub fn deep_merge(over: Value, under: Value) -> Value {
    match (over, under) {
        (Value::Mapping(mut o), Value::Mapping(u)) => {
            for (k, uv) in u {
                match o.remove(&k) {
                    Some(ov) => {
                        o.insert(k, deep_merge(ov, uv));
                    }
                    None => {
                        o.insert(k, uv);
                    }
                }
            }
            Value::Mapping(o)
        }
        (Value::Null, u) => u,
        (o, _) => o,
    }
}

fn coalesce(
    chart: &Chart,
    overrides: Value,
    tree: &mut BTreeMap<String, SubchartNode>,
    depth: usize,
) -> anyhow::Result<Value> {
    if depth > 20 {
        bail!("subcharts nested too deeply");
    }
    let mut v = deep_merge(overrides, own_values(chart)?);
    let meta = chart.metadata()?;
    for (file, sub) in chart.subcharts()? {
        let aliases: Vec<String> = meta
            .dependencies
            .iter()
            .filter(|d| d.name == sub.name)
            .filter_map(|d| d.alias.clone())
            .collect();
        let keys = if aliases.is_empty() {
            vec![sub.name.clone()]
        } else {
            aliases
        };
        for key in keys {
            let map = v.as_mapping_mut().expect("values are a mapping");
            let kv = Value::String(key.clone());
            let mut sv = match map.remove(&kv) {
                Some(Value::Mapping(m)) => Value::Mapping(m),
                _ => Value::Mapping(Default::default()),
            };
            // Parent globals win over the subchart's.
            if let Some(g) = map.get(Value::String("global".into())).cloned() {
                let sg = sv
                    .as_mapping_mut()
                    .unwrap()
                    .remove(Value::String("global".into()))
                    .unwrap_or(Value::Null);
                sv.as_mapping_mut()
                    .unwrap()
                    .insert(Value::String("global".into()), deep_merge(g, sg));
            }
            let mut node = SubchartNode {
                file: file.clone(),
                app_version: sub.metadata()?.app_version,
                children: BTreeMap::new(),
            };
            let merged = coalesce(&sub, sv, &mut node.children, depth + 1)?;
            v.as_mapping_mut().unwrap().insert(kv, merged);
            tree.insert(key, node);
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let s = parse_template(
            "{{.global.imageRegistry}}/{{ .subchart-1.deployment.imageName }}:{{ .Values.t }}",
        )
        .unwrap();
        assert_eq!(
            s,
            vec![
                Segment::Ph(vec!["global".into(), "imageRegistry".into()]),
                Segment::Lit("/".into()),
                Segment::Ph(vec![
                    "subchart-1".into(),
                    "deployment".into(),
                    "imageName".into()
                ]),
                Segment::Lit(":".into()),
                Segment::Ph(vec!["t".into()]),
            ]
        );
        assert!(parse_template("{{ include \"x\" . }}").is_err());
        assert!(parse_template("{{ .a ").is_err());
    }

    #[test]
    fn roles_and_empty_tag() {
        let v: Value = serde_yaml_ng::from_str(
            "image: {registry: docker.io, repository: bitnami/kafka, tag: 2.8.1}\nx: {image: 'busybox:1'}\nn: {repository: nginx, tag: ''}",
        )
        .unwrap();
        let r = resolve_one(
            "{{ .image.registry }}/{{ .image.repository }}:{{ .image.tag }}",
            &v,
        )
        .unwrap();
        assert_eq!(r.reference.to_string(), "docker.io/bitnami/kafka:2.8.1");
        let roles: Vec<_> = r.parts.iter().map(|p| p.role).collect();
        assert_eq!(
            roles,
            vec![PartRole::Registry, PartRole::Repository, PartRole::Tag]
        );
        let r = resolve_one("{{ .x.image }}", &v).unwrap();
        assert_eq!(r.parts[0].role, PartRole::Full);
        let r = resolve_one("{{ .n.repository }}:{{ .n.tag }}", &v).unwrap();
        assert_eq!(r.reference.to_string(), "docker.io/library/nginx");
        assert_eq!(r.parts[0].role, PartRole::Name);
        assert!(resolve_one("{{ .missing }}", &v).is_err());
    }

    #[test]
    fn or_defaults_stand_for_null_and_absent_values() {
        let v: Value =
            serde_yaml_ng::from_str("image: {registry: null, repository: acme/app, tag: ''}")
                .unwrap();
        let r = resolve_one(
            "{{ or .image.registry \"docker.io\" }}/{{ .image.repository }}:{{ or .image.tag \"v1.0\" }}/{{ or .global.imageRegistry \"x\" }}",
            &v,
        );
        assert!(r.is_err(), "a trailing path is not a reference");
        let r = resolve_one(
            "{{ or .global.imageRegistry \"docker.io\" }}/{{ .image.repository }}:{{ or .image.tag \"v1.0\" }}",
            &v,
        )
        .unwrap();
        assert_eq!(r.reference.to_string(), "docker.io/acme/app:v1.0");
        assert_eq!(r.parts[0].path, vec!["global", "imageRegistry"]);
        assert_eq!(r.parts[0].value, "docker.io");
        assert_eq!(r.parts[2].role, PartRole::Tag);
        assert!(parse_template("{{ or .a }}").is_err());
        assert!(parse_template("{{ or .a b }}").is_err());
    }

    #[test]
    fn yaml_round_trip() {
        let h =
            Hints::parse("- \"{{ .image.repository }}:{{ .image.tag }}\"\n- '{{ .a.image }}'\n")
                .unwrap();
        assert_eq!(h.templates.len(), 2);
        assert_eq!(Hints::parse(&h.to_yaml()).unwrap(), h);
        assert!(Hints::parse("a: b").is_err());
        assert_eq!(Hints::parse("").unwrap().templates.len(), 0);
    }
}
