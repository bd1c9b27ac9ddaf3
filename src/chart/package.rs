//! Packaging a chart as `<name>-<version>.tgz` (deterministic) and writing
//! repository `index.yaml` files as `helm repo index` does.
use std::io::Write;

use anyhow::Context;
use serde_yaml_ng::{Mapping, Value};

use super::Chart;
use crate::oci::Digest;

/// A gzip'd tar of `<name>/<path>` for every file: sorted, mtime 0, uid/gid
/// 0, mode 0644, no directory entries (as `helm package` writes). The same
/// chart always gives the same bytes.
pub fn package_tgz(chart: &Chart) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut files: Vec<&(String, Vec<u8>)> = chart.files.iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let name = format!("{}/{}", chart.name, path);
        tar.append_data(&mut header, &name, data.as_slice())
            .with_context(|| format!("packaging {name}"))?;
    }
    let gz = tar.into_inner().context("finishing chart archive")?;
    let mut bytes = gz.finish().context("finishing chart archive")?;
    bytes.flush()?;
    Ok(bytes)
}

/// `<name>-<version>.tgz`
pub fn archive_name(chart: &Chart) -> String {
    format!("{}-{}.tgz", chart.name, chart.version)
}

/// The `index.yaml` entry for a packaged chart: every `Chart.yaml` field,
/// plus `created`, `digest` (sha256 hex of the archive) and `urls`.
pub fn index_entry(chart: &Chart, tgz: &[u8], url: &str, created: &str) -> anyhow::Result<Value> {
    let meta = chart.metadata()?;
    let mut m = match meta.raw {
        Value::Mapping(m) => m,
        _ => Mapping::new(),
    };
    // helm repo index fills in apiVersion v1 for charts that have none.
    let key = |s: &str| Value::String(s.to_string());
    if !m.contains_key(key("apiVersion")) {
        m.insert(key("apiVersion"), key("v1"));
    }
    m.insert(key("created"), Value::String(created.to_string()));
    m.insert(
        key("digest"),
        Value::String(Digest::of(tgz).hex().to_string()),
    );
    m.insert(
        key("urls"),
        Value::Sequence(vec![Value::String(url.to_string())]),
    );
    Ok(Value::Mapping(sort_keys(m)))
}

fn sort_keys(m: Mapping) -> Mapping {
    let mut items: Vec<(Value, Value)> = m.into_iter().collect();
    items.sort_by(|a, b| {
        let ka = a.0.as_str().unwrap_or("");
        let kb = b.0.as_str().unwrap_or("");
        ka.cmp(kb)
    });
    items.into_iter().collect()
}

/// RFC 3339 time now, as Helm writes `created` and `generated`.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// An `index.yaml` (existing text, or a new one) with `entry` added,
/// replacing the entry of the same name and version. Entries per chart are
/// sorted newest version first, as `helm repo index` does.
pub fn merge_index(existing: Option<&str>, entry: Value) -> anyhow::Result<String> {
    let key = |s: &str| Value::String(s.to_string());
    let mut root = match existing {
        Some(t) if !t.trim().is_empty() => {
            let v: Value =
                crate::yaml_bounds::from_str(t).context("existing index.yaml is not YAML")?;
            match v {
                Value::Mapping(m) => m,
                _ => anyhow::bail!("existing index.yaml is not a mapping"),
            }
        }
        _ => Mapping::new(),
    };
    let name = entry
        .get("name")
        .and_then(Value::as_str)
        .context("index entry has no name")?
        .to_string();
    let version = entry
        .get("version")
        .and_then(Value::as_str)
        .context("index entry has no version")?
        .to_string();
    root.insert(key("apiVersion"), key("v1"));
    let entries = root
        .entry(key("entries"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !entries.is_mapping() {
        *entries = Value::Mapping(Mapping::new());
    }
    let entries = entries.as_mapping_mut().unwrap();
    let list = entries
        .entry(Value::String(name.clone()))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if !list.is_sequence() {
        *list = Value::Sequence(Vec::new());
    }
    let list = list.as_sequence_mut().unwrap();
    list.retain(|e| e.get("version").and_then(Value::as_str) != Some(version.as_str()));
    list.push(entry);
    list.sort_by(|a, b| {
        let va = a.get("version").and_then(Value::as_str).unwrap_or("");
        let vb = b.get("version").and_then(Value::as_str).unwrap_or("");
        compare_versions(vb, va)
    });
    let entries_sorted = sort_keys(std::mem::take(entries));
    *entries = entries_sorted;
    root.insert(key("generated"), Value::String(now_rfc3339()));
    let root = sort_keys(root);
    serde_yaml_ng::to_string(&Value::Mapping(root)).context("writing index.yaml")
}

/// Find `name` at `version` (the newest when `None`) in an index; the entry.
pub fn find_in_index<'a>(index: &'a Value, name: &str, version: Option<&str>) -> Option<&'a Value> {
    let list = index.get("entries")?.get(name)?.as_sequence()?;
    match version {
        Some(v) => list
            .iter()
            .find(|e| e.get("version").and_then(Value::as_str) == Some(v)),
        None => list
            .iter()
            .filter(|e| {
                let v = e.get("version").and_then(Value::as_str).unwrap_or("");
                !v.contains('-')
            })
            .max_by(|a, b| {
                let va = a.get("version").and_then(Value::as_str).unwrap_or("");
                let vb = b.get("version").and_then(Value::as_str).unwrap_or("");
                compare_versions(va, vb)
            })
            .or_else(|| list.first()),
    }
}

/// SemVer-ish comparison (numeric parts, pre-release lower than release).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(v: &str) -> (Vec<u64>, Option<&str>) {
        let v = v.trim_start_matches('v');
        let v = v.split('+').next().unwrap_or(v);
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (v, None),
        };
        (
            core.split('.').map(|p| p.parse().unwrap_or(0)).collect(),
            pre,
        )
    }
    let (ca, pa) = split(a);
    let (cb, pb) = split(b);
    ca.cmp(&cb).then_with(|| match (pa, pb) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (Some(_), None) => std::cmp::Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart::from_files(vec![
            (
                "Chart.yaml".into(),
                b"apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: \"4\"\ndescription: d\n"
                    .to_vec(),
            ),
            ("values.yaml".into(), b"a: 1\n".to_vec()),
            ("templates/cm.yaml".into(), b"kind: ConfigMap\n".to_vec()),
        ])
        .unwrap()
    }

    #[test]
    fn deterministic_and_loadable() {
        let c = chart();
        let a = package_tgz(&c).unwrap();
        let b = package_tgz(&c).unwrap();
        assert_eq!(a, b);
        let back = Chart::from_tgz(&a).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn index_merge() {
        let c = chart();
        let tgz = package_tgz(&c).unwrap();
        let e = index_entry(&c, &tgz, "demo-1.2.3.tgz", "2024-01-01T00:00:00Z").unwrap();
        let t = merge_index(None, e.clone()).unwrap();
        let t = merge_index(Some(&t), e).unwrap();
        let v: Value = serde_yaml_ng::from_str(&t).unwrap();
        assert_eq!(v["entries"]["demo"].as_sequence().unwrap().len(), 1);
        assert_eq!(
            find_in_index(&v, "demo", None).unwrap()["digest"].as_str(),
            Some(Digest::of(&tgz).hex())
        );
        assert_eq!(
            compare_versions("1.10.0", "1.9.0"),
            std::cmp::Ordering::Greater
        );
    }
}
