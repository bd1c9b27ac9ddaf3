//! Running a docker credential helper without ever hanging on it.
//!
//! A helper's output is read while it runs, on two threads (stdout and
//! stderr), so one that prints megabytes never blocks on a full pipe. The
//! run ends at the helper's exit plus a short grace, with what it printed
//! by then: a helper that left a child holding its stdout (a keychain
//! daemon it started) would otherwise keep the pipe open forever. The
//! helper runs in its own process group,
//! which is killed at the end of the grace, so nothing it started lingers
//! holding our pipes; a helper that does not exit within the deadline is
//! killed the same way.
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Most output kept from one stream (a credential is a few hundred bytes).
pub const MAX_OUTPUT: usize = 1 << 20;

pub struct HelperOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Run `program args` with `input` on stdin; killed at `deadline`, output
/// taken until exit + `grace`.
pub fn run(
    program: &str,
    args: &[&str],
    input: &[u8],
    deadline: Duration,
    grace: Duration,
) -> anyhow::Result<HelperOutput> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("running credential helper {program}"))?;
    let pgid = child.id() as i32;
    let kill_group = || {
        // SAFETY: a signal to the helper's own process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    };
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if started.elapsed() > deadline {
            kill_group();
            let _ = child.wait();
            bail!(
                "credential helper {program} did not answer within {}s",
                deadline.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // Wait for both pipes to end, at most the grace.
    let until = Instant::now() + grace;
    let _ = out
        .1
        .recv_timeout(until.saturating_duration_since(Instant::now()));
    let _ = err
        .1
        .recv_timeout(until.saturating_duration_since(Instant::now()));
    // Whatever the helper started and left behind goes with it.
    kill_group();
    let take = |k: &Kept| std::mem::take(&mut *k.lock().unwrap_or_else(|e| e.into_inner()));
    let (stdout, over) = take(&out.0);
    if over {
        bail!("credential helper {program} printed more than {MAX_OUTPUT} bytes: not credentials");
    }
    Ok(HelperOutput {
        status,
        stdout,
        stderr: take(&err.0).0,
    })
}

/// What a pipe gave so far, and whether it gave more than [`MAX_OUTPUT`].
type Kept = std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>;

/// Read a pipe to its end on a thread, keeping at most [`MAX_OUTPUT`]
/// bytes; the receiver hears when the pipe ended.
fn drain(pipe: Option<impl Read + Send + 'static>) -> (Kept, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let kept: Kept = Default::default();
    let k = kept.clone();
    std::thread::spawn(move || {
        if let Some(mut p) = pipe {
            let mut buf = [0u8; 64 << 10];
            loop {
                match p.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut k = k.lock().unwrap_or_else(|e| e.into_inner());
                        if k.0.len() + n <= MAX_OUTPUT {
                            k.0.extend_from_slice(&buf[..n]);
                        } else {
                            k.1 = true;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let _ = tx.send(());
    });
    (kept, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &std::path::Path, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("helper");
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    #[test]
    fn a_child_holding_stdout_does_not_hang_and_big_output_does_not_stall() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "echo '{\"Username\":\"u\",\"Secret\":\"s\"}'\nsleep 300 &\nexit 0\n",
        );
        let t = Instant::now();
        let o = run(
            &p,
            &["get"],
            b"h",
            Duration::from_secs(30),
            Duration::from_millis(500),
        )
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(o.stdout, b"{\"Username\":\"u\",\"Secret\":\"s\"}\n");
        let p = script(d.path(), "head -c 2000000 /dev/zero\n");
        let t = Instant::now();
        let e = run(
            &p,
            &["get"],
            b"h",
            Duration::from_secs(30),
            Duration::from_secs(1),
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(format!("{:#}", e.err().unwrap()).contains("printed more than"));
        let p = script(d.path(), "read x; echo \"got $x\"\n");
        let o = run(
            &p,
            &["get"],
            b"host\n",
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(o.stdout, b"got host\n");
    }
}
