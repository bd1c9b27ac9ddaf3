//! Running the `helm` CLI: version detection (v3 and v4 differ in a few
//! flags), and the JSON outputs of `list` and `history`.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::error::redact;

#[derive(Clone, Debug)]
pub struct Helm {
    pub path: PathBuf,
    /// Major version (3 or 4).
    pub major: u32,
    pub version: String,
}

/// One entry of `helm list -o json` (revision is a string there).
#[derive(Clone, Debug, Deserialize)]
pub struct ListedRelease {
    pub name: String,
    pub namespace: String,
    #[serde(deserialize_with = "string_or_number")]
    pub revision: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub chart: String,
    #[serde(default)]
    pub app_version: String,
}

impl ListedRelease {
    /// The chart version from `chart` (`skoala-init-0.28.1` → `0.28.1`).
    pub fn chart_version(&self) -> Option<String> {
        split_chart(&self.chart).map(|(_, v)| v)
    }
    pub fn chart_name(&self) -> Option<String> {
        split_chart(&self.chart).map(|(n, _)| n)
    }
}

/// Split `name-version` where the version is the part after the first `-`
/// followed by a digit (or `v` and a digit).
pub fn split_chart(chart: &str) -> Option<(String, String)> {
    let b = chart.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'-' {
            let rest = &chart[i + 1..];
            let r = rest.strip_prefix('v').unwrap_or(rest);
            if r.starts_with(|c: char| c.is_ascii_digit()) {
                return Some((chart[..i].to_string(), rest.to_string()));
            }
        }
    }
    None
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// One entry of `helm history -o json`.
#[derive(Clone, Debug, Deserialize)]
pub struct HistoryEntry {
    #[serde(deserialize_with = "string_or_number")]
    pub revision: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub chart: String,
}

pub struct Ran {
    pub stdout: String,
    pub stderr: String,
    pub ok: bool,
}

impl Helm {
    /// `--helm`, else `$BUNDLER_HELM` (both through clap), else `helm` on PATH.
    pub async fn detect(path: Option<&Path>) -> anyhow::Result<Helm> {
        let path = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("helm"));
        let out = tokio::process::Command::new(&path)
            .args(["version", "--short"])
            .output()
            .await
            .with_context(|| {
                format!(
                    "cannot run helm ({}): install helm v3 or v4, or give its path with --helm or $BUNDLER_HELM",
                    path.display()
                )
            })?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            bail!(
                "`{} version --short` failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let major = text
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .with_context(|| format!("cannot read helm's version from {text:?}"))?;
        if major < 3 {
            bail!("helm {text} is too old: bundler needs helm v3 or v4");
        }
        Ok(Helm {
            path,
            major,
            version: text,
        })
    }

    /// `--wait` for v3; v4 made it a strategy (`--wait=watcher`).
    pub fn wait_flag(&self) -> &'static str {
        if self.major >= 4 {
            "--wait=watcher"
        } else {
            "--wait"
        }
    }

    pub async fn run(&self, args: &[String]) -> anyhow::Result<Ran> {
        tracing::debug!("running {}", display_command(&self.path, args));
        let out = tokio::process::Command::new(&self.path)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", self.path.display()))?;
        Ok(Ran {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            ok: out.status.success(),
        })
    }

    /// Run and require success; the error carries helm's stderr.
    pub async fn run_ok(&self, args: &[String]) -> anyhow::Result<String> {
        let r = self.run(args).await?;
        if !r.ok {
            bail!(
                "`{}` failed: {}",
                display_command(&self.path, args),
                redact(r.stderr.trim())
            );
        }
        Ok(r.stdout)
    }

    /// Releases named `release` (in `namespace`, or in every namespace).
    pub async fn find_release(
        &self,
        release: &str,
        namespace: Option<&str>,
    ) -> anyhow::Result<Vec<ListedRelease>> {
        let mut args: Vec<String> = vec!["list".into()];
        match namespace {
            Some(ns) => args.extend(["-n".into(), ns.into()]),
            None => args.push("-A".into()),
        }
        // `--all` also shows failed/pending releases, which an upgrade may
        // repair; the filter is an anchored regex on the name.
        args.extend([
            "--all".into(),
            "--filter".into(),
            format!("^{}$", regex::escape(release)),
            "-o".into(),
            "json".into(),
        ]);
        let out = self.run_ok(&args).await?;
        let list: Vec<ListedRelease> = parse_json_list(&out)
            .with_context(|| format!("reading `helm list` output: {}", out.trim()))?;
        Ok(list.into_iter().filter(|r| r.name == release).collect())
    }

    pub async fn history(&self, release: &str, ns: &str) -> anyhow::Result<Vec<HistoryEntry>> {
        let out = self
            .run_ok(&[
                "history".into(),
                release.into(),
                "-n".into(),
                ns.into(),
                "-o".into(),
                "json".into(),
            ])
            .await?;
        parse_json_list(&out)
            .with_context(|| format!("reading `helm history` output: {}", out.trim()))
    }
}

fn parse_json_list<T: serde::de::DeserializeOwned>(out: &str) -> anyhow::Result<Vec<T>> {
    let t = out.trim();
    if t.is_empty() || t == "null" {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_str(t)?)
}

/// A command line as a user would type it (POSIX shell quoting).
pub fn display_command(program: &Path, args: &[String]) -> String {
    let mut s = shell_quote(&program.to_string_lossy());
    for a in args {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+^".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_and_version_split() {
        assert_eq!(
            split_chart("skoala-init-0.28.1"),
            Some(("skoala-init".into(), "0.28.1".into()))
        );
        assert_eq!(
            split_chart("demo-v1.2.3-rc.1"),
            Some(("demo".into(), "v1.2.3-rc.1".into()))
        );
        assert_eq!(split_chart("nover"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a=b"), "a=b");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
