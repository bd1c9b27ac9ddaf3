//! The Kubernetes API stand-in (tests/support/kube-api-standin.py) as a
//! test fixture: started on 127.0.0.1, a kubeconfig pointing at it, and a
//! private helm home, so the real helm v3 and v4 run against it exactly as
//! against a cluster. scripts/demo.sh starts the same script.
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const HELM4: &str = "/usr/local/bin/helm";
pub const HELM3: &str = "/usr/local/bin/helm3";

/// The real helm of that major version.
pub fn real_helm(major: u32) -> PathBuf {
    let p = PathBuf::from(if major == 3 { HELM3 } else { HELM4 });
    assert!(p.exists(), "{} is needed for this test", p.display());
    p
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kube-api-standin.py")
}

pub struct KubeApi {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl KubeApi {
    /// A working API server.
    pub fn start() -> KubeApi {
        Self::spawn(&[])
    }

    /// A server that accepts connections and never answers (a hung cluster).
    pub fn start_hung() -> KubeApi {
        Self::spawn(&["--hang"])
    }

    fn spawn(extra: &[&str]) -> KubeApi {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.log");
        let mut child = Command::new("python3")
            .arg(script())
            .arg("--log")
            .arg(&log)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start python3 kube-api-standin.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("stand-in did not print its port: {line:?}"));
        let api = KubeApi { child, port, dir };
        std::fs::write(
            api.kubeconfig(),
            kubeconfig(&[("standin", &api)], "standin"),
        )
        .unwrap();
        api
    }

    pub fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig whose only (current) context is this server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Environment for helm and bundler: the kubeconfig and a private helm home.
    pub fn env(&self) -> Vec<(String, String)> {
        let home = self.dir.path().join("helm-home");
        vec![
            ("KUBECONFIG".into(), self.kubeconfig().display().to_string()),
            (
                "HELM_CONFIG_HOME".into(),
                home.join("config").display().to_string(),
            ),
            (
                "HELM_CACHE_HOME".into(),
                home.join("cache").display().to_string(),
            ),
            (
                "HELM_DATA_HOME".into(),
                home.join("data").display().to_string(),
            ),
        ]
    }

    /// Run the real helm `major` against this server; panics on failure.
    pub fn helm(&self, major: u32, args: &[&str]) -> String {
        let out = self.helm_out(major, args);
        assert!(
            out.status.success(),
            "helm{major} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn helm_out(&self, major: u32, args: &[&str]) -> Output {
        let mut cmd = Command::new(real_helm(major));
        cmd.args(args);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// `helm history` as (revision, status, chart), oldest first.
    pub fn history(&self, release: &str, ns: &str) -> Vec<(u64, String, String)> {
        let out = self.helm(4, &["history", release, "-n", ns, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["revision"].as_u64().unwrap(),
                    e["status"].as_str().unwrap().to_string(),
                    e["chart"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The revision a release stands at (`None`: not installed).
    pub fn revision(&self, release: &str, ns: &str) -> Option<u64> {
        let out = self.helm_out(4, &["history", release, "-n", ns, "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        self.history(release, ns).last().map(|h| h.0)
    }

    /// `helm get values` of one revision (user-supplied values, YAML).
    pub fn values(&self, release: &str, ns: &str, rev: u64) -> String {
        self.helm(
            4,
            &[
                "get",
                "values",
                release,
                "-n",
                ns,
                "--revision",
                &rev.to_string(),
                "-o",
                "yaml",
            ],
        )
    }

    /// Deployments matching a label selector never become ready (one per line).
    pub fn never_ready(&self, selector: &str) {
        self.control("never-ready", selector);
    }

    /// From now on, every write is accepted and never answered.
    pub fn hang_writes(&self) {
        self.control("hang-writes", "true");
    }

    fn control(&self, what: &str, body: &str) {
        let (code, text) = self.request("PUT", &format!("/standin/{what}"), body);
        assert_eq!(code, 200, "{text}");
    }

    /// A raw HTTP/1.1 request; (status, body).
    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let code = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        (code, body)
    }

    /// Every request the server answered, `METHOD PATH?QUERY CONTENT-TYPE -> STATUS`.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kubeconfig with one context per (name, server); `current` is the default.
pub fn kubeconfig(contexts: &[(&str, &KubeApi)], current: &str) -> String {
    let mut s = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (n, api) in contexts {
        s.push_str(&format!(
            "- name: {n}\n  cluster: {{server: \"{}\"}}\n",
            api.server()
        ));
    }
    s.push_str("contexts:\n");
    for (n, _) in contexts {
        s.push_str(&format!(
            "- name: {n}\n  context: {{cluster: {n}, user: tester}}\n"
        ));
    }
    s.push_str(&format!(
        "current-context: {current}\nusers:\n- name: tester\n  user: {{token: test-token}}\n"
    ));
    s
}
