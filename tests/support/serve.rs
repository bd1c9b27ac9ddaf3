//! `bundler serve` started for one test on a free port (`--listen
//! 127.0.0.1:0 --json`: the start line says where), killed on drop; and a
//! curl wrapper for raw HTTP checks (a real client, headers kept).
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use super::images::{self, Blob};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub struct Served {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    pub addr: String,
    pub start: serde_json::Value,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Start serve with `args` (paths and flags); panics with its stderr if
    /// it does not come up.
    pub fn start(args: &[&str]) -> Served {
        Self::try_start(args).unwrap_or_else(|e| panic!("bundler serve did not start: {e}"))
    }

    /// Start serve; Err(stderr) when it exits before its start line.
    pub fn try_start(args: &[&str]) -> Result<Served, String> {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let mut child = Command::new(super::bundler_bin())
            .arg("serve")
            .args(args)
            .args(if args.contains(&"--listen") {
                vec!["--json"]
            } else {
                vec!["--listen", "127.0.0.1:0", "--json"]
            })
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run bundler serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        if line.trim().is_empty() {
            let _ = child.wait();
            return Err(std::fs::read_to_string(&log).unwrap_or_default());
        }
        let start: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("start line {line:?} is not JSON: {e}"));
        let addr = start["address"].as_str().unwrap().to_string();
        Ok(Served {
            child,
            _stdout: out,
            addr,
            start,
            log,
            _dir: dir,
        })
    }

    /// The access log and messages so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP answer as curl got it.
pub struct Http {
    pub status: u16,
    /// (lower-case name, value)
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Http {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// `curl -s [extra] url`, keeping status, headers and body.
pub fn curl(extra: &[&str], url: &str) -> Http {
    let dir = tempfile::tempdir().unwrap();
    let (h, b) = (dir.path().join("h"), dir.path().join("b"));
    let o = Command::new("curl")
        .args(["-s", "-D"])
        .arg(&h)
        .arg("-o")
        .arg(&b)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl is needed");
    let status = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let raw = std::fs::read_to_string(&h).unwrap_or_default();
    // The last header block (after any 100 Continue).
    let block = raw
        .rsplit("\r\n\r\n")
        .find(|s| !s.trim().is_empty())
        .unwrap_or("");
    let headers = block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Http {
        status,
        headers,
        body: std::fs::read(&b).unwrap_or_default(),
    }
}

/// Pack the OCI layouts `archives` into bundles under `out` (no chart).
pub fn pack_archives(work: &Path, archives: &[PathBuf], out: &Path) {
    let manifest = work.join("images-manifest.yaml");
    let mut m = String::from(
        "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {name: images, version: 1.0.0}\nspec:\n  images:\n",
    );
    for a in archives {
        m.push_str(&format!("    - archive: {}\n", a.display()));
    }
    std::fs::write(&manifest, m).unwrap();
    let o = super::bundler(
        work,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--platform",
            "all",
        ],
    );
    assert!(o.status.success(), "pack failed: {}", super::stderr(&o));
}

/// Bundles of test images named as public images are named.
pub struct Fixture {
    /// Holds the layouts and bundles (removed on drop).
    pub work: tempfile::TempDir,
    pub bundles: PathBuf,
    /// busybox:1.36: (index, amd64 manifest, arm64 manifest)
    pub busybox: (Blob, Blob, Blob),
    /// busybox's amd64-only layer.
    pub amd_layer: Blob,
    /// alpine manifest (tags 3.18, 3.19, 3.20)
    pub alpine: Blob,
}

pub fn layout_of(
    work: &Path,
    name: &str,
    reference: &str,
    root: &Blob,
    mt: &str,
    blobs: &[&Blob],
) -> PathBuf {
    let dir = work.join(name);
    images::write_layout(&dir, &[(reference, root, mt)], blobs);
    dir
}

pub fn fixture() -> Fixture {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let base = images::layer("base", &images::pseudo_random(7, 200_000));
    let amd = images::layer("amd", &images::pseudo_random(8, 50_000));
    let arm = images::layer("arm", b"arm64 only");
    let clone = |b: &(Blob, String)| (images::blob(b.0.bytes.clone()), b.1.clone());
    let (m_amd, b_amd) = images::image(&images::AMD64, &[clone(&base), clone(&amd)]);
    let (m_arm, b_arm) = images::image(&images::ARM64, &[clone(&base), clone(&arm)]);
    let idx = images::index(&[(&images::AMD64, &m_amd), (&images::ARM64, &m_arm)]);
    let mut all: Vec<&Blob> = b_amd.iter().chain(b_arm.iter()).collect();
    all.push(&m_amd);
    all.push(&m_arm);
    let mut layouts = vec![layout_of(
        w,
        "busybox",
        "docker.io/library/busybox:1.36",
        &idx,
        OCI_INDEX,
        &all,
    )];
    let (m_alp, b_alp) = images::image(&images::AMD64, &[images::layer("alp", b"alpine")]);
    for t in ["3.18", "3.19", "3.20"] {
        let blobs: Vec<&Blob> = b_alp.iter().collect();
        layouts.push(layout_of(
            w,
            &format!("alpine-{t}"),
            &format!("docker.io/library/alpine:{t}"),
            &m_alp,
            OCI_MANIFEST,
            &blobs,
        ));
    }
    let (m_app, b_app) = images::image(&images::AMD64, &[images::layer("app", b"app")]);
    layouts.push(layout_of(
        w,
        "app",
        "reg.example:5000/team/app:1",
        &m_app,
        OCI_MANIFEST,
        &b_app.iter().collect::<Vec<_>>(),
    ));
    let bundles = w.join("bundles");
    pack_archives(w, &layouts, &bundles);
    Fixture {
        work,
        bundles,
        busybox: (idx, m_amd, m_arm),
        amd_layer: amd.0,
        alpine: m_alp,
    }
}
