//! The progress bars a person watches (issue 22): `sync` in a real
//! pseudo-terminal, pushing through a loopback proxy throttled like a slow
//! link, into a real `docker-registry`. At every redraw after the first
//! two seconds the ETA on the total bar is within 30 % of the time the
//! sync really took to finish (or 1 s: the ETA is shown in whole seconds),
//! and the bar says the bytes are "sent".
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::images::{image, layer, pseudo_random, write_layout, OCI_MANIFEST};
use support::registry::{Mode, Registry};
use support::{bundler, stderr};

/// A TCP proxy to `127.0.0.1:upstream` whose client-to-server direction
/// is throttled to `rate` bytes/s over all connections together (one
/// link). Its sockets have small receive buffers, so what the link has
/// not carried waits in the sender's buffers, as on a real slow link.
struct ThrottledLink {
    port: u16,
}

impl ThrottledLink {
    fn start(upstream: u16, rate: u64) -> ThrottledLink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_rcvbuf(listener.as_raw_fd(), 64 * 1024);
        let port = listener.local_addr().unwrap().port();
        let carried = Arc::new(Mutex::new((Instant::now(), 0u64)));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let carried = carried.clone();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe_throttled(client, server, carried, rate));
                std::thread::spawn(move || pipe(s2, c2));
            }
        });
        ThrottledLink { port }
    }
}

fn set_rcvbuf(fd: i32, bytes: i32) {
    let v: libc::c_int = bytes;
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Copy in 16 KiB pieces, each only when the link's budget allows it.
fn pipe_throttled(
    mut from: TcpStream,
    mut to: TcpStream,
    carried: Arc<Mutex<(Instant, u64)>>,
    rate: u64,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let due = {
            let mut c = carried.lock().unwrap();
            // An idle link does not bank bandwidth.
            let now = Instant::now();
            let at = c.0 + Duration::from_secs_f64(c.1 as f64 / rate as f64);
            if at < now {
                *c = (now, 0);
            }
            c.1 += n as u64;
            c.0 + Duration::from_secs_f64(c.1 as f64 / rate as f64)
        };
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A pseudo-terminal: (master, slave), 160 columns.
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0, "openpty");
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Pack three images of `mib` MiB each (unique random layers) from an OCI
/// layout into an image-only bundle under `dir/out`.
fn pack_big(dir: &Path, mib: usize) {
    let layout = dir.join("layout");
    let mut roots = Vec::new();
    let mut blobs = Vec::new();
    for i in 0..3u64 {
        let l = layer("data", &pseudo_random(100 + i, mib << 20));
        let (m, b) = image(&support::images::AMD64, &[l]);
        roots.push((format!("example.com/big/app{i}:1.0"), m));
        blobs.extend(b);
    }
    let roots_ref: Vec<(&str, &support::images::Blob, &str)> = roots
        .iter()
        .map(|(t, m)| (t.as_str(), m, OCI_MANIFEST))
        .collect();
    write_layout(&layout, &roots_ref, &blobs.iter().collect::<Vec<_>>());
    let manifest = dir.join("big.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {name: big, version: 1.0.0}\nspec:\n  images:\n    - archive: ./layout\n",
    )
    .unwrap();
    let o = bundler(dir, &["pack", manifest.to_str().unwrap(), "-o", "out"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn the_eta_on_a_terminal_is_honest_on_a_throttled_link() {
    const RATE: u64 = 6 << 20; // 6 MiB/s
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    pack_big(dir, 16);
    let reg = Registry::start(Mode::Plain);
    let link = ThrottledLink::start(reg.port, RATE);
    let config = dir.join("load-image.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  intermediateBundlesPath: out\ntarget:\n  containerPrefixRegistry: 127.0.0.1:{}\n",
            link.port
        ),
    )
    .unwrap();

    let (master, slave) = openpty();
    // PROGRESS_PTY_BIN runs another build (e.g. an older one) for comparison.
    let bin = std::env::var_os("PROGRESS_PTY_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(support::bundler_bin);
    let mut child = Command::new(bin)
        .current_dir(dir)
        .args(["sync", "--insecure", "--config", "load-image.yaml"])
        .env_remove("BUNDLER_LOG")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    drop(slave);
    let started = Instant::now();
    // Read the terminal: (when, text) of every chunk the bars drew.
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut chunks: Vec<(Instant, String)> = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break, // EIO once the child closed the slave
                Ok(n) => chunks.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                )),
            }
        }
        chunks
    });
    let status = child.wait().unwrap();
    let finished = Instant::now();
    let chunks = reader.join().unwrap();
    let screen: String = chunks.iter().map(|(_, t)| t.as_str()).collect();
    assert!(status.success(), "{screen}");
    let took = finished.duration_since(started).as_secs_f64();
    let bytes = 3.0 * 16.0 * 1048576.0;
    assert!(
        took > 0.8 * bytes / RATE as f64,
        "the link throttled the sync ({took:.1}s)"
    );

    let eta = regex::Regex::new(r"([0-9.]+ [KMG]?i?B)/s,? ETA (?:(\d+)m)?(\d+)s").unwrap();
    let mut samples = Vec::new();
    let mut rates = Vec::new();
    let mut at = String::new();
    for (when, text) in &chunks {
        at.push_str(text);
        // The last ETA drawn in this chunk (a redraw carries one).
        if let Some(c) = eta.captures_iter(text).last() {
            let m: f64 = c.get(2).map_or(0.0, |m| m.as_str().parse().unwrap());
            let s: f64 = c[3].parse().unwrap();
            samples.push((
                when.duration_since(started).as_secs_f64(),
                60.0 * m + s,
                finished.duration_since(*when).as_secs_f64(),
            ));
            rates.push(c[1].to_string());
        }
    }
    assert!(
        samples.len() >= 10,
        "the total bar showed an ETA on the terminal ({} samples): {screen:?}",
        samples.len()
    );
    for ((t, shown, truth), rate) in samples.iter().zip(&rates) {
        eprintln!("at {t:4.1}s: {rate}/s, ETA {shown:3}s shown, {truth:4.1}s really left");
    }
    assert!(
        screen.contains(" acknowledged, ") || screen.contains(" sent, "),
        "the total says what its bytes are: {screen:?}"
    );
    let wrong: Vec<String> = samples
        .iter()
        .filter(|(_, shown, truth)| (shown - truth).abs() > (0.3 * truth).max(1.0))
        .map(|(t, shown, truth)| format!("at {t:.1}s ETA {shown}s, really {truth:.1}s"))
        .collect();
    assert!(
        wrong.is_empty(),
        "ETA off by more than 30 %: {wrong:?} (took {took:.1}s, {} samples)",
        samples.len()
    );
}
