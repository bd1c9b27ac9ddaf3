//! Real container runtimes for tests, each started here as root in a temp
//! dir: containerd without its CRI plugin, dockerd without iptables or a
//! bridge, on the vfs storage driver. Where a daemon cannot start (not
//! root, not installed), `start_*` says why and the caller skips.
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{stderr, stdout};

/// A daemon started for one test; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    name: &'static str,
    child: Child,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Wait for the socket; Err(why) when the daemon exits or never listens.
    fn wait_ready(mut self) -> Result<Daemon, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) at start: {}",
                    self.name,
                    tail(&self.log())
                ));
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(self);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "{} did not listen on {} within 60s: {}",
            self.name,
            self.socket.display(),
            tail(&self.log())
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop the containerd it started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Why a daemon cannot run here, if it cannot (not root, not installed).
fn cannot_run(binary: &str) -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some(format!("{binary} needs root and this test is not root"));
    }
    match Command::new(binary).arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some(format!(
            "{binary} is not installed (scripts/setup.sh installs it)"
        )),
    }
}

fn short_tempdir(prefix: &str) -> tempfile::TempDir {
    // Unix socket paths are limited to 108 bytes: stay in /tmp.
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap()
}

pub fn start_containerd() -> Result<Daemon, String> {
    if let Some(why) = cannot_run("containerd") {
        return Err(why);
    }
    let dir = short_tempdir("ctrd");
    let d = dir.path();
    let socket = d.join("c.sock");
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"{sock}.debug\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(d.join("log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("containerd did not start: {e}"))?;
    Daemon {
        name: "containerd",
        child,
        dir,
        socket,
    }
    .wait_ready()
}

/// dockerd (its own containerd under its exec root), trusting the
/// `insecure` registries over plain HTTP.
pub fn start_dockerd(insecure: &[&str]) -> Result<Daemon, String> {
    if let Some(why) = cannot_run("dockerd") {
        return Err(why);
    }
    let dir = short_tempdir("dkd");
    let d = dir.path();
    let socket = d.join("d.sock");
    // Its own (empty) daemon.json: a machine-wide /etc/docker/daemon.json
    // must not change what is tested.
    std::fs::write(d.join("daemon.json"), "{}").unwrap();
    let log = std::fs::File::create(d.join("log")).unwrap();
    let mut cmd = Command::new("dockerd");
    for r in insecure {
        cmd.arg("--insecure-registry").arg(r);
    }
    let child = cmd
        .args(["--iptables=false", "--bridge=none", "--storage-driver=vfs"])
        .arg("--config-file")
        .arg(d.join("daemon.json"))
        .arg("--data-root")
        .arg(d.join("data"))
        .arg("--exec-root")
        .arg(d.join("exec"))
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .arg("--pidfile")
        .arg(d.join("docker.pid"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("dockerd did not start: {e}"))?;
    Daemon {
        name: "dockerd",
        child,
        dir,
        socket,
    }
    .wait_ready()
}

pub fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("run");
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

pub fn ctr(d: &Daemon) -> Command {
    let mut c = Command::new("ctr");
    c.arg("--address").arg(&d.socket).args(["-n", "k8s.io"]);
    c
}

pub fn docker(d: &Daemon) -> Command {
    let mut c = Command::new("docker");
    c.arg("-H").arg(format!("unix://{}", d.socket.display()));
    c
}
