//! Values: what the upgrade will apply (backup + `global.imageRegistry` +
//! the user's `-f`/`--set`, merged the way helm merges them), the diff
//! against the current values, and the images in rendered manifests.
use std::collections::BTreeMap;

use anyhow::Context;
use serde_yaml_ng::{Mapping, Value};

/// Parse `helm get values -o yaml` output (`null` when there are none).
pub fn parse_values(text: &str, what: &str) -> anyhow::Result<Value> {
    let v: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        crate::yaml_bounds::from_str(text).with_context(|| format!("{what} is not valid YAML"))?
    };
    Ok(match v {
        Value::Null => Value::Mapping(Mapping::new()),
        v => v,
    })
}

/// Deep merge `over` into `base` (maps merge, everything else replaces).
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_mapping() && v.is_mapping() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Apply one `--set` argument (`a.b=1,c=x`), typed like helm's `--set`
/// (`true`/`false`, integers, `null`; anything else a string).
pub fn apply_set(values: &mut Value, arg: &str) {
    for pair in split_unescaped(arg, ',') {
        let Some((key, val)) = pair.split_once('=') else {
            continue;
        };
        let typed = match val {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            v => match v.parse::<i64>() {
                Ok(i) if !v.starts_with('0') || v == "0" => Value::Number(i.into()),
                _ => Value::String(v.replace("\\,", ",")),
            },
        };
        let parts = split_unescaped(key, '.');
        set_path(values, &parts, typed);
    }
}

/// Apply one `--set-string` argument: every value a string.
pub fn apply_set_string(values: &mut Value, arg: &str) {
    for pair in split_unescaped(arg, ',') {
        let Some((key, val)) = pair.split_once('=') else {
            continue;
        };
        let parts = split_unescaped(key, '.');
        set_path(values, &parts, Value::String(val.to_string()));
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&sep) {
            out.last_mut().unwrap().push(sep);
            chars.next();
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().unwrap().push(c);
        }
    }
    out
}

fn set_path(v: &mut Value, path: &[String], leaf: Value) {
    if path.is_empty() {
        *v = leaf;
        return;
    }
    if !v.is_mapping() {
        *v = Value::Mapping(Mapping::new());
    }
    let m = v.as_mapping_mut().unwrap();
    let key = Value::String(path[0].clone());
    if path.len() == 1 {
        m.insert(key, leaf);
        return;
    }
    let child = m
        .entry(key)
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    set_path(child, &path[1..], leaf);
}

/// Flatten to `a.b.c` → scalar text (sequences shown whole, as flow YAML).
fn flatten(v: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            for (k, v) in m {
                let k = match k {
                    Value::String(s) => s.clone(),
                    other => scalar(other),
                };
                let p = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &p, out);
            }
        }
        other => {
            if !prefix.is_empty() {
                out.insert(prefix.to_string(), scalar(other));
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) | Value::Mapping(_) => serde_json::to_string(v).unwrap_or_default(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Keys whose value changes, one line each: `~ key: old -> new`,
/// `+ key: new`, `- key: old`. Keys that look like secrets show no value.
pub fn diff(current: &Value, new: &Value) -> Vec<String> {
    // Secrets are masked before comparing: a change shows, its value not.
    let (current, new) = super::secrets_mask::mask_pair(current, new);
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten(&current, "", &mut a);
    flatten(&new, "", &mut b);
    let secret = |k: &str| {
        let k = k.to_ascii_lowercase();
        ["password", "secret", "token", "dsn", "key"]
            .iter()
            .any(|s| k.rsplit('.').next().unwrap_or(&k).contains(s))
    };
    let show = |k: &str, v: &str| {
        if secret(k) {
            "[redacted]".to_string()
        } else {
            v.to_string()
        }
    };
    let mut out = Vec::new();
    for (k, nv) in &b {
        match a.get(k) {
            Some(ov) if ov == nv => {}
            Some(ov) => out.push(format!("~ {k}: {} -> {}", show(k, ov), show(k, nv))),
            None => out.push(format!("+ {k}: {}", show(k, nv))),
        }
    }
    for (k, ov) in &a {
        if !b.contains_key(k) {
            out.push(format!("- {k}: {}", show(k, ov)));
        }
    }
    out
}

/// Every container image in rendered manifests: containers, initContainers
/// and ephemeralContainers of the pod specs of Pods, Deployments,
/// StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers, Jobs and
/// CronJobs (and of `List` items). Sorted, without duplicates.
pub fn images_in_manifests(text: &str) -> anyhow::Result<Vec<String>> {
    let mut images = std::collections::BTreeSet::new();
    crate::yaml_bounds::check(text).context("rendered manifests")?;
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = <Value as serde::Deserialize>::deserialize(doc)
            .with_context(|| format!("rendered manifest document {} is not valid YAML", i + 1))?;
        collect(&v, &mut images);
    }
    Ok(images.into_iter().collect())
}

fn collect(obj: &Value, images: &mut std::collections::BTreeSet<String>) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let spec = obj.get("spec");
    let pod_spec = match kind {
        "Pod" => spec,
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => spec
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec")),
        "CronJob" => spec
            .and_then(|s| s.get("jobTemplate"))
            .and_then(|j| j.get("spec"))
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec")),
        "List" => {
            if let Some(items) = obj.get("items").and_then(Value::as_sequence) {
                for it in items {
                    collect(it, images);
                }
            }
            None
        }
        _ => None,
    };
    if let Some(ps) = pod_spec {
        for field in ["containers", "initContainers", "ephemeralContainers"] {
            if let Some(list) = ps.get(field).and_then(Value::as_sequence) {
                for c in list {
                    if let Some(img) = c.get("image").and_then(Value::as_str) {
                        if !img.trim().is_empty() {
                            images.insert(img.trim().to_string());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_merge_and_diff() {
        let mut v =
            parse_values("global:\n  imageRegistry: old.io\nui:\n  tag: v1\n", "x").unwrap();
        let cur = v.clone();
        apply_set(&mut v, "global.imageRegistry=10.0.0.1,replicas=3");
        merge(
            &mut v,
            parse_values("ui: {tag: v2}\ndb: {password: s3cret}\n", "x").unwrap(),
        );
        let d = diff(&cur, &v);
        assert_eq!(
            d,
            vec![
                "+ db.password: [redacted]",
                "~ global.imageRegistry: \"old.io\" -> \"10.0.0.1\"",
                "+ replicas: 3",
                "~ ui.tag: \"v1\" -> \"v2\"",
            ]
        );
        assert!(parse_values("null\n", "x")
            .unwrap()
            .as_mapping()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn images_from_workloads() {
        let text = "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\nkind: Deployment\nspec:\n  template:\n    spec:\n      initContainers: [{name: i, image: r/init:1}]\n      containers: [{name: a, image: r/app:1}, {name: b, image: r/app:1}]\n---\nkind: CronJob\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers: [{name: c, image: r/cron:2}]\n---\nkind: Pod\nspec:\n  ephemeralContainers: [{name: d, image: r/debug:3}]\n  containers: []\n";
        assert_eq!(
            images_in_manifests(text).unwrap(),
            vec!["r/app:1", "r/cron:2", "r/debug:3", "r/init:1"]
        );
    }
}
