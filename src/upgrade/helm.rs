//! Running the `helm` CLI: version detection (v3 and v4 differ in a few
//! flags), a time bound on every call (a hung helm is killed, the error
//! names the command), the cluster flags, and the JSON outputs of `list`
//! and `history`. Only flags that both v3.18 and v4.1 accept are used.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::error::redact;

#[derive(Clone, Debug)]
pub struct Helm {
    pub path: PathBuf,
    /// Major version (3 or 4).
    pub major: u32,
    pub version: String,
    /// `--kube-context` / `--kubeconfig`, for every call that reaches the cluster.
    pub cluster: Vec<String>,
    /// The fixed bound of read-only calls (see [`query_bound`]).
    pub query_bound: Duration,
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
    /// Set when helm did not finish within its bound and was killed.
    pub killed_after: Option<Duration>,
}

/// How long `version`, `get`, `list`, `history`, `template`, `registry
/// login` and `repo update` may take: 2 minutes, or
/// `$BUNDLER_HELM_QUERY_TIMEOUT` (a helm duration such as `5s`, or seconds).
/// It is also the slack an upgrade or rollback gets beyond its `--timeout`
/// (rendering, fetching the chart, talking to the API before the wait).
pub fn query_bound() -> anyhow::Result<Duration> {
    match std::env::var("BUNDLER_HELM_QUERY_TIMEOUT") {
        Ok(v) if !v.trim().is_empty() => parse_duration(v.trim()).with_context(|| {
            format!("BUNDLER_HELM_QUERY_TIMEOUT={v:?} is not a duration (e.g. 90s, 2m)")
        }),
        _ => Ok(Duration::from_secs(120)),
    }
}

/// A Go duration as helm's `--timeout` takes it (`10m`, `1h30m`, `90s`,
/// `500ms`), or a bare number of seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let re = regex::Regex::new(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)").expect("static regex");
    let mut total = 0f64;
    let mut consumed = 0;
    for c in re.captures_iter(s) {
        let m = c.get(0).expect("whole match");
        if m.start() != consumed {
            bail!("not a duration: {s:?}");
        }
        consumed = m.end();
        let n: f64 = c[1].parse()?;
        total += n * match &c[2] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            _ => 3600.0,
        };
    }
    if consumed == 0 || consumed != s.len() {
        bail!("not a duration: {s:?} (use e.g. 90s, 10m, 1h30m)");
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration as a person reads it (`2m`, `1m30s`, `5s`).
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (m, s) = (s / 60, s % 60);
    match (m, s) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

impl Helm {
    /// `--helm`, else `$BUNDLER_HELM` (both through clap), else `helm` on
    /// PATH. `cluster` holds `--kube-context`/`--kubeconfig`, appended to
    /// every call that reaches the cluster.
    pub async fn detect(path: Option<&Path>, cluster: Vec<String>) -> anyhow::Result<Helm> {
        let path = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("helm"));
        let mut helm = Helm {
            path,
            major: 0,
            version: String::new(),
            cluster,
            query_bound: query_bound()?,
        };
        let out = helm
            .exec(&["version".into(), "--short".into()], None, helm.query_bound)
            .await
            .with_context(|| {
                format!(
                    "cannot run helm ({}): install helm v3 or v4, or give its path with --helm or $BUNDLER_HELM",
                    helm.path.display()
                )
            })?;
        let text = out.stdout.trim().to_string();
        if !out.ok {
            bail!(
                "`{} version --short` failed: {}",
                helm.path.display(),
                out.stderr.trim()
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
        helm.major = major;
        helm.version = text;
        Ok(helm)
    }

    /// `--wait` for v3; v4 made it a strategy (`--wait=watcher`).
    pub fn wait_flag(&self) -> &'static str {
        if self.major >= 4 {
            "--wait=watcher"
        } else {
            "--wait"
        }
    }

    /// `args` plus the cluster flags: the argv of a call that reaches the cluster.
    pub fn on_cluster(&self, mut args: Vec<String>) -> Vec<String> {
        args.extend(self.cluster.iter().cloned());
        args
    }

    /// Run helm with `args` (and `stdin` fed to it), killed when it takes
    /// longer than `bound`. Only a failure to start is an error.
    pub async fn exec(
        &self,
        args: &[String],
        stdin: Option<&[u8]>,
        bound: Duration,
    ) -> anyhow::Result<Ran> {
        use tokio::io::AsyncWriteExt;
        tracing::debug!("running {}", display_command(&self.path, args));
        let mut child = tokio::process::Command::new(&self.path)
            .args(args)
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", self.path.display()))?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(data).await.ok();
            drop(pipe);
        }
        match tokio::time::timeout(bound, child.wait_with_output()).await {
            Ok(out) => {
                let out = out.with_context(|| format!("running {}", self.path.display()))?;
                Ok(Ran {
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    ok: out.status.success(),
                    killed_after: None,
                })
            }
            // the future owned the child: dropping it kills helm (kill_on_drop)
            Err(_) => Ok(Ran {
                stdout: String::new(),
                stderr: format!(
                    "`{}` did not finish within {} and was killed (is the Kubernetes API reachable? \
                     check --kube-context/--kubeconfig)",
                    display_command(&self.path, args),
                    show_duration(bound)
                ),
                ok: false,
                killed_after: Some(bound),
            }),
        }
    }

    /// A read-only call (get, list, history, template, login) within the fixed bound.
    pub async fn query(&self, args: &[String]) -> anyhow::Result<Ran> {
        self.exec(args, None, self.query_bound).await
    }

    /// Run within the fixed bound and require success; the error carries
    /// helm's stderr and names the command.
    pub async fn query_ok(&self, args: &[String]) -> anyhow::Result<String> {
        let r = self.query(args).await?;
        if r.killed_after.is_some() {
            bail!("{}", r.stderr);
        }
        if !r.ok {
            bail!(
                "`{}` failed: {}",
                display_command(&self.path, args),
                redact(r.stderr.trim())
            );
        }
        Ok(r.stdout)
    }

    /// An upgrade, rollback or uninstall: bounded by its `--timeout` plus
    /// the fixed bound as slack.
    pub async fn change(&self, args: &[String], timeout: Duration) -> anyhow::Result<Ran> {
        self.exec(args, None, timeout + self.query_bound).await
    }

    /// Releases named `release` (in `namespace`, or in every namespace),
    /// whatever their status: the state flags together are what v3 called
    /// `--all` (which v4 refuses); both versions take them.
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
        for state in [
            "--deployed",
            "--failed",
            "--pending",
            "--superseded",
            "--uninstalling",
            "--uninstalled",
        ] {
            args.push(state.into());
        }
        args.extend([
            "--filter".into(),
            format!("^{}$", regex::escape(release)),
            "-o".into(),
            "json".into(),
        ]);
        let out = self.query_ok(&self.on_cluster(args)).await?;
        let list: Vec<ListedRelease> = parse_json_list(&out)
            .with_context(|| format!("reading `helm list` output: {}", out.trim()))?;
        Ok(list.into_iter().filter(|r| r.name == release).collect())
    }

    /// The newest revision of a release (`helm history --max 1`).
    pub async fn latest(&self, release: &str, ns: &str) -> anyhow::Result<Option<HistoryEntry>> {
        let args = self.on_cluster(
            ["history", release, "-n", ns, "--max", "1", "-o", "json"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let r = self.query(&args).await?;
        if !r.ok && r.killed_after.is_none() && r.stderr.contains("not found") {
            return Ok(None);
        }
        if !r.ok {
            bail!(
                "`{}` failed: {}",
                display_command(&self.path, &args),
                redact(r.stderr.trim())
            );
        }
        let list: Vec<HistoryEntry> = parse_json_list(&r.stdout)
            .with_context(|| format!("reading `helm history` output: {}", r.stdout.trim()))?;
        Ok(list.into_iter().last())
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
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("42").unwrap(), Duration::from_secs(42));
        for bad in ["", "m", "10x", "5m junk", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(show_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(show_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a=b"), "a=b");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
