//! The access log: one line per request on stderr, plain text or JSON
//! (`--json`). Never the Authorization header or a password, only the user
//! name that authenticated.
use std::net::SocketAddr;
use std::time::Instant;

pub struct AccessLog {
    pub json: bool,
}

pub struct Entry<'a> {
    pub remote: SocketAddr,
    pub method: &'a str,
    pub target: &'a str,
    pub status: u16,
    pub bytes: Option<u64>,
    pub user: Option<&'a str>,
    pub started: Instant,
}

impl AccessLog {
    pub fn write(&self, e: &Entry) {
        let ms = e.started.elapsed().as_secs_f64() * 1000.0;
        if self.json {
            let line = serde_json::json!({
                "time": crate::chart::package::now_rfc3339(),
                "remote": e.remote.to_string(),
                "method": e.method,
                "path": e.target,
                "status": e.status,
                "bytes": e.bytes,
                "user": e.user,
                "ms": (ms * 10.0).round() / 10.0,
            });
            eprintln!("{line}");
        } else {
            eprintln!(
                "{} {} {} \"{} {}\" {} {} {:.1}ms",
                crate::chart::package::now_rfc3339(),
                e.remote,
                e.user.unwrap_or("-"),
                e.method,
                e.target,
                e.status,
                e.bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                ms
            );
        }
    }
}
