//! A real nginx (Debian's `nginx` package) as a reverse proxy in front of
//! a test registry, with a `client_max_body_size` limit: the body-size
//! limit sites put in front of their registry. Started in the foreground
//! on a free port of 127.0.0.1 with everything (config, temp dirs, logs)
//! in its own temp dir; killed on drop.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::registry::free_port;

pub struct Nginx {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

/// The nginx binary: `$BUNDLER_TEST_NGINX`, else `nginx` on PATH, else
/// `/usr/sbin/nginx` (Debian's, not on a normal user's PATH).
pub fn nginx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BUNDLER_TEST_NGINX") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nginx").is_file()))
        .unwrap_or(false);
    if on_path {
        PathBuf::from("nginx")
    } else {
        PathBuf::from("/usr/sbin/nginx")
    }
}

impl Nginx {
    /// Proxy `127.0.0.1:<upstream_port>` with `client_max_body_size
    /// <max_body>` (nginx syntax: `1m`, `512k`).
    pub fn start(upstream_port: u16, max_body: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 128; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size {max_body};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"#,
            d = d.display()
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(d)
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("stderr.log")).unwrap())
            .spawn()
            .expect("nginx is needed (apt-get install nginx; scripts/setup.sh)");
        let n = Nginx { child, dir, port };
        n.wait_ready();
        n
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// nginx's error log and stderr (for a failed test's message).
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }

    /// The access log: one line per request nginx answered.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Requests nginx refused with 413.
    pub fn refused_413(&self) -> usize {
        self.access_log()
            .lines()
            .filter(|l| l.contains("\" 413 "))
            .count()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx on port {} did not start: {}", self.port, self.log());
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
