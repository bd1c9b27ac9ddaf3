//! A real CNCF distribution registry (`docker-registry` from Debian) started
//! for one test on a free port of 127.0.0.1, killed on drop.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "tester";
pub const PASSWORD: &str = "s3cret-Passw0rd";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    BasicAuth,
    Tls,
    TlsBasicAuth,
}

pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub mode: Mode,
    /// CA certificate that signed the server certificate (TLS modes).
    pub ca_file: Option<PathBuf>,
}

impl Registry {
    pub fn start(mode: Mode) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let root = dir.path();
        std::fs::create_dir_all(root.join("data")).unwrap();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: testsecret\n",
            root.join("data").display()
        );
        let mut ca_file = None;
        if matches!(mode, Mode::Tls | Mode::TlsBasicAuth) {
            let (ca, cert, key) = make_certs(root);
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            ca_file = Some(ca);
        }
        if matches!(mode, Mode::BasicAuth | Mode::TlsBasicAuth) {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd (apache2-utils) is needed");
            assert!(out.status.success());
            std::fs::write(root.join("htpasswd"), &out.stdout).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                root.join("htpasswd").display()
            ));
        }
        std::fs::write(root.join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(root.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry is needed (apt-get install docker-registry)");
        let reg = Registry {
            child,
            dir,
            port,
            mode,
            ca_file,
        };
        reg.wait_ready();
        reg
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.mode, Mode::Tls | Mode::TlsBasicAuth)
    }

    pub fn has_auth(&self) -> bool {
        matches!(self.mode, Mode::BasicAuth | Mode::TlsBasicAuth)
    }

    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.is_tls() { "https" } else { "http" },
            self.host()
        )
    }

    /// skopeo flags to talk to this registry.
    pub fn skopeo_flags(&self, dest: bool) -> Vec<String> {
        let side = if dest { "dest" } else { "src" };
        let mut v = Vec::new();
        if self.is_tls() {
            let dir = self.dir.path().join("certs.d");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(self.ca_file.as_ref().unwrap(), dir.join("ca.crt")).unwrap();
            v.push(format!("--{side}-cert-dir={}", dir.display()));
        } else {
            v.push(format!("--{side}-tls-verify=false"));
        }
        if self.has_auth() {
            v.push(format!("--{side}-creds={USER}:{PASSWORD}"));
        }
        v
    }

    /// Path of the registry's log (for debugging a failed test).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "registry on port {} did not start: {}",
            self.port,
            self.log()
        );
    }

    /// Copy an image into this registry with skopeo (e.g. from an OCI
    /// layout `oci:/path:tag`), returning nothing; panics on failure.
    pub fn skopeo_copy_in(&self, src: &str, dest_ref: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--preserve-digests", "--all"]);
        cmd.args(self.skopeo_flags(true));
        cmd.arg(src)
            .arg(format!("docker://{}/{}", self.host(), dest_ref));
        let out = cmd.output().expect("skopeo is needed");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `skopeo inspect --raw` of an image in this registry; None if absent.
    pub fn raw_manifest(&self, reference: &str) -> Option<Vec<u8>> {
        let mut cmd = Command::new("skopeo");
        cmd.args(["inspect", "--raw"]);
        cmd.args(
            self.skopeo_flags(false)
                .iter()
                .map(|s| s.replace("--src-", "--")),
        );
        cmd.arg(format!("docker://{}/{}", self.host(), reference));
        let out = cmd.output().expect("skopeo");
        out.status.success().then_some(out.stdout)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a server certificate it signs (CA:FALSE, SAN IP:127.0.0.1 and
/// localhost): rustls refuses a self-signed certificate that is its own CA.
pub fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=bundler test CA",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}
