//! SIGINT and SIGTERM during `pack` and `sync`.
//!
//! Without this, a signal kills the process where it stands: a full-size
//! `.NAME.bundle.tar.partial-PID` stays in the output directory and temp
//! files stay beside the LOCAL repo. With [`install`], a dedicated thread
//! waits for either signal, removes every file this run registered with
//! [`create_tracked`] and not yet [`untrack`]ed (temp files, never
//! finished outputs), prints one line saying what was interrupted, and
//! exits 130 (SIGINT) or 143 (SIGTERM), as shells report a process killed
//! by those signals. State meant to survive a stop (chunked-upload
//! sessions, which let the next `sync` resume) is not registered, so it
//! stays.
//!
//! Registration and file creation happen under the same lock the handler
//! takes, so a file is either removed by the handler or never created.
//!
//! A run killed harder (SIGKILL, power loss) cannot clean up; the next
//! `pack` into the same directory removes partial files whose PID no
//! longer runs ([`remove_stale_partials`]).
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::atomic_file::PARTIAL_MARK;

struct Tracked {
    files: Vec<PathBuf>,
    /// Finished outputs this run created (they did not exist before it):
    /// an interrupted run removes them too, so that it leaves the output
    /// directory as it found it rather than half of a new set.
    outputs: Vec<PathBuf>,
    /// What the run is doing, for the message ("writing X").
    doing: String,
}

static TRACKED: Mutex<Tracked> = Mutex::new(Tracked {
    files: Vec::new(),
    outputs: Vec::new(),
    doing: String::new(),
});

fn tracked() -> std::sync::MutexGuard<'static, Tracked> {
    TRACKED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Create a file with `open` and register `path` for removal on interrupt,
/// atomically with respect to the signal handler.
pub fn create_tracked(
    path: &Path,
    open: impl FnOnce() -> std::io::Result<File>,
) -> std::io::Result<File> {
    let mut t = tracked();
    let f = open()?;
    t.files.push(path.to_path_buf());
    Ok(f)
}

/// `path` is finished (renamed into place) or removed: no longer ours to
/// clean up.
pub fn untrack(path: &Path) {
    tracked().files.retain(|p| p != path);
}

/// `path` is a finished output this run created (not a file it replaced).
pub fn created(path: &Path) {
    tracked().outputs.push(path.to_path_buf());
}

/// The run's outputs are complete: an interrupt from now on removes none.
pub fn outputs_complete() {
    tracked().outputs.clear();
}

/// Say what the run is doing now (shown if it is interrupted).
pub fn doing(what: impl Into<String>) {
    tracked().doing = what.into();
}

/// Handle SIGINT and SIGTERM for `verb` from now on (once per process).
pub fn install(verb: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The handlers are registered on the signal thread's own runtime
        // (install may be called from inside another runtime); install
        // returns once they are, so a signal right after it is ours.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let (name, code) = rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let sigs = signal(SignalKind::interrupt())
                    .and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
                let (mut int, mut term) = match sigs {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return std::future::pending().await;
                    }
                };
                let first = tokio::select! {
                    _ = int.recv() => ("SIGINT", 130),
                    _ = term.recv() => ("SIGTERM", 143),
                };
                // Chunks of uploads in flight finish first (see `graceful`);
                // a second signal stops at once.
                if crate::graceful::in_flight() > 0 {
                    eprintln!(
                        "bundler {verb}: {}: finishing the upload chunks in flight so the next run resumes after them (signal again to stop now)",
                        first.0
                    );
                }
                tokio::select! {
                    _ = crate::graceful::drain(crate::graceful::GRACE) => {}
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                first
            });
            on_signal(verb, name, code)
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot handle signals: {e}"),
            Err(_) => tracing::warn!("cannot handle signals: the signal thread stopped"),
        }
    });
}

fn on_signal(verb: &str, signal: &str, code: i32) -> ! {
    // Keep the lock until exit: no new temp file is created after this.
    let t = tracked();
    let mut removed = 0;
    for p in &t.files {
        if std::fs::remove_file(p).is_ok() {
            removed += 1;
        }
    }
    let mut outputs = 0;
    for p in &t.outputs {
        if std::fs::remove_file(p).is_ok() {
            outputs += 1;
        }
    }
    let outputs = if outputs == 0 {
        String::new()
    } else {
        format!(
            " and {outputs} finished file{} it had written",
            if outputs == 1 { "" } else { "s" }
        )
    };
    let doing = if t.doing.is_empty() {
        String::new()
    } else {
        format!(" while {}", t.doing)
    };
    let after = match verb {
        "sync" => "; run sync again to resume (finished pushes and chunked uploads are kept)",
        _ => "; run it again to start over",
    };
    eprintln!(
        "bundler {verb}: interrupted by {signal}{doing}; removed {removed} partial file{}{outputs}{after}",
        if removed == 1 { "" } else { "s" }
    );
    std::process::exit(code)
}

/// Is process `pid` running (or at least present)?
fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The PID in a temp name `.NAME.partial-PID[-SEQ]`.
fn partial_pid(name: &str) -> Option<i32> {
    if !name.starts_with('.') {
        return None;
    }
    let i = name.rfind(PARTIAL_MARK)?;
    let rest = &name[i + PARTIAL_MARK.len()..];
    let pid = rest.split('-').next()?;
    let seq_ok = rest[pid.len()..]
        .strip_prefix('-')
        .is_none_or(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    if !seq_ok {
        return None;
    }
    pid.parse().ok()
}

/// Remove partial files in `dir` left by processes that no longer run;
/// returns what was removed. Files of live processes stay.
pub fn remove_stale_partials(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(partial_pid) else {
            continue;
        };
        if pid_alive(pid) || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let p = e.path();
        if std::fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names() {
        assert_eq!(partial_pid(".a_1.0.bundle.tar.partial-123"), Some(123));
        assert_eq!(partial_pid(".index.yaml.partial-77-3"), Some(77));
        assert_eq!(partial_pid("a.partial-77"), None);
        assert_eq!(partial_pid(".a.partial-77-x"), None);
        assert_eq!(partial_pid(".a.partial-"), None);
    }

    #[test]
    fn stale_partials_of_dead_processes_go_live_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = d.path().join(format!(".x.bundle.tar.partial-{dead}"));
        let live = d
            .path()
            .join(format!(".x.bundle.tar.partial-{}-0", std::process::id()));
        let other = d.path().join("x.bundle.tar");
        for p in [&stale, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove_stale_partials(d.path()), vec![stale.clone()]);
        assert!(!stale.exists() && live.exists() && other.exists());
    }
}
