//! containerd and dockerd started by hand for one test (root needed), each
//! with its root, state and socket in a temp dir so nothing touches the
//! machine's own daemons; killed on drop. `None` (and a message saying
//! why) when the daemon cannot start here, so the caller can skip.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    child: Child,
    pub dir: tempfile::TempDir,
    /// The daemon's API socket.
    pub socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM first so the daemon unmounts what it mounted.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
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

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn wait_for(child: &mut Child, socket: &std::path::Path, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if socket.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited ({status}) before it listened"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{what} did not listen within 60s"))
}

/// containerd with the CRI plugin disabled.
pub fn containerd() -> Result<Daemon, String> {
    if !is_root() {
        return Err("containerd needs root".into());
    }
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("containerd is not installed (scripts/setup.sh installs it)".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("ctrd")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let d = dir.path();
    let socket = d.join("c.sock");
    let config = d.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n[ttrpc]\n  address = \"{}\"\n[debug]\n  address = \"{}\"\n",
            d.join("root").display(),
            d.join("state").display(),
            socket.display(),
            d.join("t.sock").display(),
            d.join("d.sock").display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let log = d.join("containerd.log");
    let mut child = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("starting containerd: {e}"))?;
    if let Err(e) = wait_for(&mut child, &socket, "containerd") {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "{e}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    Ok(Daemon {
        child,
        dir,
        socket,
        log,
    })
}

/// dockerd without iptables or a bridge, vfs storage, its own containerd
/// (dockerd starts one under its exec root), trusting `insecure` registries
/// over plain HTTP.
pub fn dockerd(insecure: &[&str]) -> Result<Daemon, String> {
    if !is_root() {
        return Err("dockerd needs root".into());
    }
    if Command::new("dockerd").arg("--version").output().is_err() {
        return Err("dockerd is not installed (scripts/setup.sh installs docker.io)".into());
    }
    let dir = tempfile::Builder::new()
        .prefix("dckr")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let d = dir.path();
    let socket = d.join("d.sock");
    let log = d.join("dockerd.log");
    let mut cmd = Command::new("dockerd");
    cmd.args(["--iptables=false", "--bridge=none", "--storage-driver=vfs"])
        .arg("--data-root")
        .arg(d.join("data"))
        .arg("--exec-root")
        .arg(d.join("exec"))
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .arg("--pidfile")
        .arg(d.join("docker.pid"));
    for r in insecure {
        cmd.arg("--insecure-registry").arg(r);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("starting dockerd: {e}"))?;
    if let Err(e) = wait_for(&mut child, &socket, "dockerd") {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "{e}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    Ok(Daemon {
        child,
        dir,
        socket,
        log,
    })
}
