//! A faulty HTTP/1.1 reverse proxy for tests: it stands between a client
//! (bundler, skopeo, a test's own requests) and a real registry on
//! `127.0.0.1:<upstream_port>`, and injects the faults air-gapped sites
//! have, by seeded probabilities:
//!
//! - `503 Service Unavailable` (with `Connection: close`) to ~`p503` of
//!   requests, answered *before* anything is forwarded;
//! - a dropped connection for ~`pdrop` of requests: in the middle of the
//!   request body (when there is one, half of the time) or in the middle
//!   of the response (after the head and part of the body; before anything
//!   when the response has no body);
//! - optional latency before each forwarded request;
//! - a "down" switch: every connection is closed at once, new ones are
//!   accepted and closed without a byte, until it is switched back;
//! - exact faults on demand: 503 to / drop the next N requests;
//! - slow and silent peers on demand: the next N requests are never
//!   answered (the body is not read either: the connection just hangs
//!   until the client gives up), or their response body trickles out one
//!   byte per interval;
//! - a lost answer on demand: the next N requests matching a method and a
//!   text of the request line are forwarded whole, but the registry's
//!   answer is held back past the client's patience, then the connection
//!   closes (a gateway timing out on a registry's slow commit).
//!
//! Plain HTTP only (the registry behind it runs `Mode::Plain` or
//! `Mode::BasicAuth`): it must read the messages to fault them.
//!
//! It parses request and response heads, frames bodies by `Content-Length`
//! or chunked encoding (or until close for responses that have neither) and
//! streams them in 64 KiB pieces, so multi-GiB blobs pass without being
//! buffered. It rewrites nothing but absolute `Location` headers that point
//! at the upstream (`127.0.0.1:UP` / `localhost:UP` become the proxy's
//! address), and answers `Expect: 100-continue` itself. The `Host` header
//! is passed unchanged, so the registry already builds its upload URLs on
//! the proxy's address.
//!
//! It listens on 127.0.0.1 only, every socket has read/write timeouts, and
//! everything stops when the [`FaultyProxy`] is dropped.
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Socket read/write timeout: a stuck peer never keeps a proxy thread alive
/// longer than this.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
const COPY_BUF: usize = 64 * 1024;

/// Which faults to inject, with what probability, from which seed.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Probability that a request is answered 503 before being forwarded.
    pub p503: f64,
    /// Probability that a request's connection is dropped mid-request-body
    /// or mid-response.
    pub pdrop: f64,
    /// Added before each forwarded request.
    pub latency: Duration,
    /// A uniformly random extra in `[0, latency_jitter)` on top of `latency`.
    pub latency_jitter: Duration,
    /// Seed of the fault sequence (same seed and same request order give
    /// the same faults).
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults::none()
    }
}

impl Faults {
    /// A transparent proxy.
    pub fn none() -> Faults {
        Faults {
            p503: 0.0,
            pdrop: 0.0,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            seed: 1,
        }
    }

    /// The network of issue 6: ~10 % 503s, ~3 % dropped connections.
    pub fn flaky(seed: u64) -> Faults {
        Faults {
            p503: 0.10,
            pdrop: 0.03,
            seed,
            ..Faults::none()
        }
    }
}

/// Counters of what the proxy saw and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client connections accepted while up.
    pub connections: u64,
    /// Connections accepted and closed at once while down (plus live ones
    /// closed when switched down).
    pub refused: u64,
    /// Request heads read from clients.
    pub requests: u64,
    /// Requests forwarded whose response reached the client whole.
    pub completed: u64,
    /// 503s injected.
    pub injected_503: u64,
    /// Connections dropped in the middle of a request body.
    pub dropped_request: u64,
    /// Connections dropped in the middle of (or right before) a response.
    pub dropped_response: u64,
    /// `Location` headers rewritten from the upstream's address.
    pub locations_rewritten: u64,
    /// Request body bytes forwarded upstream.
    pub bytes_up: u64,
    /// Response body bytes forwarded to clients.
    pub bytes_down: u64,
}

impl Stats {
    /// Every dropped connection.
    pub fn dropped(&self) -> u64 {
        self.dropped_request + self.dropped_response
    }
    /// Every injected fault (503s and drops).
    pub fn injected(&self) -> u64 {
        self.injected_503 + self.dropped()
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    requests: AtomicU64,
    completed: AtomicU64,
    injected_503: AtomicU64,
    dropped_request: AtomicU64,
    dropped_response: AtomicU64,
    locations_rewritten: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    silenced: AtomicU64,
    held: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::SeqCst);
}

/// splitmix64: small, seedable, good enough for fault sequences.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy, Debug)]
enum Decision {
    Forward,
    Reply503,
    /// Drop after forwarding this fraction of the request body.
    DropRequest(f64),
    /// Drop after forwarding this fraction of the response body.
    DropResponse(f64),
    /// Read nothing more, answer nothing, until the client closes.
    Silent,
    /// Forward, but send the response body one byte per interval.
    Trickle(Duration),
    /// Forward the request whole, take the registry's answer, and keep it
    /// from the client this long; then close (a gateway that timed out
    /// while the registry was committing).
    HoldAnswer(Duration),
}

struct Shared {
    upstream_port: u16,
    port: u16,
    faults: Mutex<Faults>,
    rng: Mutex<Rng>,
    down: AtomicBool,
    stop: AtomicBool,
    counters: Counters,
    /// Live sockets (client and upstream sides), so `down` and drop can
    /// close them at once.
    live: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    /// Requests still to be answered 503 / dropped whatever the odds.
    force_503: AtomicU64,
    force_drop: AtomicU64,
    /// Requests still to be left unanswered / trickled.
    force_silent: AtomicU64,
    force_trickle: AtomicU64,
    trickle_interval: Mutex<Duration>,
    /// Requests whose answer is still to be held back: how many, for how
    /// long, and which (method, text in the request line).
    force_hold: AtomicU64,
    hold_for: Mutex<Duration>,
    hold_which: Mutex<(String, String)>,
    /// Only requests with this method are silenced / trickled (None: any).
    slow_method: Mutex<Option<String>>,
}

/// Take one from a "force the next N" counter, if any is left.
fn take_one(c: &AtomicU64) -> bool {
    c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Shared {
    fn live_now(&self) -> bool {
        !self.stop.load(Ordering::SeqCst) && !self.down.load(Ordering::SeqCst)
    }

    fn decide(&self, method: &str, has_body: bool) -> (Decision, Duration) {
        let slow = self
            .slow_method
            .lock()
            .unwrap()
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        let f = self.faults.lock().unwrap().clone();
        let (r, frac, which, jit) = {
            let mut rng = self.rng.lock().unwrap();
            // Always draw the same count so the sequence does not depend on
            // which fault was chosen.
            (
                rng.next_f64(),
                rng.next_f64(),
                rng.next_f64(),
                rng.next_f64(),
            )
        };
        let frac = 0.1 + 0.8 * frac;
        let decision = if slow && take_one(&self.force_silent) {
            Decision::Silent
        } else if slow && take_one(&self.force_trickle) {
            Decision::Trickle(*self.trickle_interval.lock().unwrap())
        } else if take_one(&self.force_503) {
            Decision::Reply503
        } else if take_one(&self.force_drop) {
            if has_body && which < 0.5 {
                Decision::DropRequest(frac)
            } else {
                Decision::DropResponse(frac)
            }
        } else if r < f.p503 {
            Decision::Reply503
        } else if r < f.p503 + f.pdrop {
            if has_body && which < 0.5 {
                Decision::DropRequest(frac)
            } else {
                Decision::DropResponse(frac)
            }
        } else {
            Decision::Forward
        };
        let delay = f.latency + f.latency_jitter.mul_f64(jit);
        (decision, delay)
    }

    /// Whether the answer to this request (`start`: its request line) is
    /// to be held back, and for how long.
    fn hold(&self, start: &str) -> Option<Duration> {
        let (method, target) = self.hold_which.lock().unwrap().clone();
        let matches = start.split(' ').next() == Some(method.as_str()) && start.contains(&target);
        (matches && take_one(&self.force_hold)).then(|| *self.hold_for.lock().unwrap())
    }

    fn track(&self, s: &TcpStream) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let clone = s.try_clone().ok()?;
        self.live.lock().unwrap().insert(id, clone);
        Some(id)
    }

    fn untrack(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.live.lock().unwrap().remove(&id);
        }
    }

    fn close_all(&self) -> u64 {
        let mut live = self.live.lock().unwrap();
        let n = live.len() as u64;
        for (_, s) in live.drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
        n
    }
}

/// A running proxy; stops (and closes every connection) on drop.
pub struct FaultyProxy {
    /// The proxy's port on 127.0.0.1.
    pub port: u16,
    pub upstream_port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FaultyProxy {
    /// Listen on a free port of 127.0.0.1 and forward to
    /// `127.0.0.1:<upstream_port>` with `faults`.
    pub fn start(upstream_port: u16, faults: Faults) -> FaultyProxy {
        Self::start_on(0, upstream_port, faults)
    }

    /// Like [`FaultyProxy::start`], on a given port of 127.0.0.1 (0: any
    /// free one): a registry that appears on an address a client already
    /// tries.
    pub fn start_on(port: u16, upstream_port: u16, faults: Faults) -> FaultyProxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream_port,
            port,
            rng: Mutex::new(Rng(faults.seed)),
            faults: Mutex::new(faults),
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            force_503: AtomicU64::new(0),
            force_drop: AtomicU64::new(0),
            force_silent: AtomicU64::new(0),
            force_trickle: AtomicU64::new(0),
            trickle_interval: Mutex::new(Duration::from_secs(1)),
            force_hold: AtomicU64::new(0),
            hold_for: Mutex::new(Duration::ZERO),
            hold_which: Mutex::new((String::new(), String::new())),
            slow_method: Mutex::new(None),
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("faulty-proxy-{port}"))
            .spawn(move || accept_loop(listener, sh))
            .expect("spawn proxy thread");
        FaultyProxy {
            port,
            upstream_port,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Stats {
            connections: g(&c.connections),
            refused: g(&c.refused),
            requests: g(&c.requests),
            completed: g(&c.completed),
            injected_503: g(&c.injected_503),
            dropped_request: g(&c.dropped_request),
            dropped_response: g(&c.dropped_response),
            locations_rewritten: g(&c.locations_rewritten),
            bytes_up: g(&c.bytes_up),
            bytes_down: g(&c.bytes_down),
        }
    }

    /// Down: close every live connection now, and accept-then-close every
    /// new one until switched back up.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            let n = self.shared.close_all();
            self.shared.counters.refused.fetch_add(n, Ordering::SeqCst);
        }
    }

    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Answer 503 to the next `n` requests, whatever the odds (to test
    /// retry bounds exactly: e.g. n = max attempts - 1 must still succeed).
    pub fn fail_next_503(&self, n: u64) {
        self.shared.force_503.store(n, Ordering::SeqCst);
    }

    /// Drop the connection of the next `n` requests, whatever the odds.
    pub fn drop_next(&self, n: u64) {
        self.shared.force_drop.store(n, Ordering::SeqCst);
    }

    /// Leave the next `n` requests unanswered: their connection hangs,
    /// body unread, until the client closes it (a peer that accepted the
    /// connection and went silent).
    pub fn silence_next(&self, n: u64) {
        self.silence_next_of(None, n);
    }

    /// [`FaultyProxy::silence_next`] for requests of one method only
    /// (`Some("PUT")`: an upload whose body the peer stops reading).
    pub fn silence_next_of(&self, method: Option<&str>, n: u64) {
        *self.shared.slow_method.lock().unwrap() = method.map(String::from);
        self.shared.force_silent.store(n, Ordering::SeqCst);
    }

    /// Forward the next `n` requests, but send each response body one byte
    /// per `interval` (a peer that trickles).
    pub fn trickle_next(&self, n: u64, interval: Duration) {
        self.trickle_next_of(None, n, interval);
    }

    /// [`FaultyProxy::trickle_next`] for requests of one method only.
    pub fn trickle_next_of(&self, method: Option<&str>, n: u64, interval: Duration) {
        *self.shared.slow_method.lock().unwrap() = method.map(String::from);
        *self.shared.trickle_interval.lock().unwrap() = interval;
        self.shared.force_trickle.store(n, Ordering::SeqCst);
    }

    /// Forward the next `n` requests of `method` whose request line
    /// contains `target` whole, but keep the registry's answer from the
    /// client for `hold`, then close the connection: the request took
    /// effect, its answer is lost (a proxy in front of a registry that
    /// takes long to commit a large blob).
    pub fn hold_answer_next_of(&self, method: &str, target: &str, n: u64, hold: Duration) {
        *self.shared.hold_which.lock().unwrap() = (method.to_string(), target.to_string());
        *self.shared.hold_for.lock().unwrap() = hold;
        self.shared.force_hold.store(n, Ordering::SeqCst);
    }

    /// Answers held back so far.
    pub fn held(&self) -> u64 {
        self.shared.counters.held.load(Ordering::SeqCst)
    }

    /// Requests left unanswered so far.
    pub fn silenced(&self) -> u64 {
        self.shared.counters.silenced.load(Ordering::SeqCst)
    }

    /// Change the fault probabilities and latency from now on (the random
    /// sequence goes on; the seed of `faults` is ignored).
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ =
            TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1));
        self.shared.close_all();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = conn else { continue };
        if shared.down.load(Ordering::SeqCst) {
            inc(&shared.counters.refused);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        inc(&shared.counters.connections);
        let sh = shared.clone();
        let _ = std::thread::Builder::new()
            .name("faulty-proxy-conn".into())
            .spawn(move || {
                let mut conn = Conn::new(client, sh);
                let _ = conn.serve();
                conn.close();
            });
    }
}

/// How a message body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

struct Head {
    /// Request line or status line, without CRLF.
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
    fn framing(&self) -> io::Result<Option<Framing>> {
        if self.has_token("transfer-encoding", "chunked") {
            return Ok(Some(Framing::Chunked));
        }
        match self.get("content-length") {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(|n| Some(Framing::Length(n)))
                .map_err(|_| bad("bad Content-Length")),
            None => Ok(None),
        }
    }
    fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(self.start.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        w.write_all(&out)?;
        w.flush()
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Read a message head; `Ok(None)` on a clean EOF before any byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut total = 0usize;
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            if lines.is_empty() && total == 0 {
                return Ok(None);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        total += n;
        if total > MAX_HEAD {
            return Err(bad("message head too large"));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if line.is_empty() {
            if lines.is_empty() {
                // Tolerate empty lines before a request line.
                continue;
            }
            break;
        }
        lines.push(String::from_utf8(line).map_err(|_| bad("non-UTF-8 head"))?);
    }
    let start = lines.remove(0);
    let mut headers = Vec::with_capacity(lines.len());
    for l in lines {
        let (k, v) = l.split_once(':').ok_or_else(|| bad("bad header line"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Some(Head { start, headers }))
}

enum Copied {
    Done,
    /// Stopped on purpose after the fraction asked.
    Aborted,
}

/// Copy a body framed by `framing` from `r` to `w`, counting payload bytes
/// in `counter`. With `abort_at = Some(frac)`, stop once about that fraction
/// of the body (of a random prefix for chunked bodies) went through.
fn copy_body(
    r: &mut impl BufRead,
    w: &mut impl Write,
    framing: Framing,
    abort_at: Option<f64>,
    counter: &AtomicU64,
) -> io::Result<Copied> {
    let mut buf = vec![0u8; COPY_BUF];
    match framing {
        Framing::None => Ok(Copied::Done),
        Framing::Length(n) => {
            let limit = abort_at.map(|f| (n as f64 * f) as u64);
            let mut left = n;
            let mut sent = 0u64;
            while left > 0 {
                if let Some(l) = limit {
                    if sent >= l {
                        w.flush()?;
                        return Ok(Copied::Aborted);
                    }
                }
                let want = (left as usize).min(buf.len());
                let want = match limit {
                    Some(l) => want.min((l - sent).max(1) as usize),
                    None => want,
                };
                let got = r.read(&mut buf[..want])?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                w.write_all(&buf[..got])?;
                left -= got as u64;
                sent += got as u64;
                counter.fetch_add(got as u64, Ordering::Relaxed);
            }
            w.flush()?;
            match limit {
                // A body too small to cut: drop after it.
                Some(_) => Ok(Copied::Aborted),
                None => Ok(Copied::Done),
            }
        }
        Framing::Chunked => {
            let limit = abort_at.map(|f| (f * 256.0 * 1024.0) as u64);
            let mut sent = 0u64;
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let text = std::str::from_utf8(&line).map_err(|_| bad("bad chunk size"))?;
                let hex = text.trim().split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size"))?;
                w.write_all(&line)?;
                if size == 0 {
                    // Trailers up to the empty line.
                    loop {
                        let mut t = Vec::new();
                        if r.read_until(b'\n', &mut t)? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        w.write_all(&t)?;
                        if t == b"\r\n" || t == b"\n" {
                            break;
                        }
                    }
                    w.flush()?;
                    return Ok(if limit.is_some() {
                        Copied::Aborted
                    } else {
                        Copied::Done
                    });
                }
                let mut left = size;
                while left > 0 {
                    if let Some(l) = limit {
                        if sent >= l {
                            w.flush()?;
                            return Ok(Copied::Aborted);
                        }
                    }
                    let want = (left as usize).min(buf.len());
                    let got = r.read(&mut buf[..want])?;
                    if got == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    w.write_all(&buf[..got])?;
                    left -= got as u64;
                    sent += got as u64;
                    counter.fetch_add(got as u64, Ordering::Relaxed);
                }
                let mut crlf = Vec::new();
                r.read_until(b'\n', &mut crlf)?;
                w.write_all(&crlf)?;
            }
        }
        Framing::UntilClose => {
            let limit = abort_at.map(|f| (f * 256.0 * 1024.0) as u64);
            let mut sent = 0u64;
            loop {
                if let Some(l) = limit {
                    if sent >= l {
                        w.flush()?;
                        return Ok(Copied::Aborted);
                    }
                }
                let got = r.read(&mut buf)?;
                if got == 0 {
                    w.flush()?;
                    return Ok(Copied::Done);
                }
                w.write_all(&buf[..got])?;
                sent += got as u64;
                counter.fetch_add(got as u64, Ordering::Relaxed);
            }
        }
    }
}

struct Upstream {
    r: BufReader<TcpStream>,
    w: TcpStream,
    id: Option<u64>,
}

struct Conn {
    shared: Arc<Shared>,
    client_r: BufReader<TcpStream>,
    client_w: TcpStream,
    client_id: Option<u64>,
    upstream: Option<Upstream>,
}

impl Conn {
    fn new(client: TcpStream, shared: Arc<Shared>) -> Conn {
        let _ = client.set_read_timeout(Some(IO_TIMEOUT));
        let _ = client.set_write_timeout(Some(IO_TIMEOUT));
        let _ = client.set_nodelay(true);
        let client_id = shared.track(&client);
        let client_r =
            BufReader::with_capacity(COPY_BUF, client.try_clone().expect("clone client socket"));
        Conn {
            shared,
            client_r,
            client_w: client,
            client_id,
            upstream: None,
        }
    }

    fn close(&mut self) {
        let _ = self.client_w.shutdown(Shutdown::Both);
        self.shared.untrack(self.client_id.take());
        if let Some(u) = self.upstream.take() {
            let _ = u.w.shutdown(Shutdown::Both);
            self.shared.untrack(u.id);
        }
    }

    fn upstream(&mut self) -> io::Result<&mut Upstream> {
        if self.upstream.is_none() {
            let s = TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.shared.upstream_port).into(),
                Duration::from_secs(10),
            )?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            let _ = s.set_nodelay(true);
            let id = self.shared.track(&s);
            self.upstream = Some(Upstream {
                r: BufReader::with_capacity(COPY_BUF, s.try_clone()?),
                w: s,
                id,
            });
        }
        Ok(self.upstream.as_mut().unwrap())
    }

    fn live(&self) -> bool {
        self.shared.live_now()
    }

    /// A silent peer: read nothing, answer nothing, until the client
    /// closes (or the proxy stops; at most two minutes).
    fn hang_until_client_closes(&mut self) {
        let _ = self
            .client_w
            .set_read_timeout(Some(Duration::from_millis(100)));
        let until = std::time::Instant::now() + Duration::from_secs(120);
        let mut probe = [0u8; 1];
        while self.live() && std::time::Instant::now() < until {
            match self.client_w.peek(&mut probe) {
                Ok(0) => return,
                Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }

    /// Serve requests on this connection until one side closes or a fault
    /// ends it.
    fn serve(&mut self) -> io::Result<()> {
        let shared = self.shared.clone();
        let c = &shared.counters;
        loop {
            if !self.live() {
                return Ok(());
            }
            let Some(mut req) = read_head(&mut self.client_r)? else {
                return Ok(());
            };
            if !self.live() {
                return Ok(());
            }
            inc(&c.requests);
            let method = req.start.split(' ').next().unwrap_or("").to_string();
            let http10 = req.start.ends_with("HTTP/1.0");
            let req_framing = req.framing()?.unwrap_or(Framing::None);
            let has_body = match req_framing {
                Framing::Length(n) => n > 0,
                Framing::Chunked => true,
                _ => false,
            };
            let (mut decision, delay) = self.shared.decide(&method, has_body);
            if let Some(hold) = self.shared.hold(&req.start) {
                decision = Decision::HoldAnswer(hold);
            }
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            if let Decision::Silent = decision {
                inc(&c.silenced);
                self.hang_until_client_closes();
                return Ok(());
            }
            if let Decision::Reply503 = decision {
                inc(&c.injected_503);
                let body = "injected fault: service unavailable\n";
                let resp = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 0\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                self.client_w.write_all(resp.as_bytes())?;
                self.client_w.flush()?;
                // Read (and discard) the body the client may still be
                // sending, so it sees the 503 rather than a reset.
                let _ = self.client_w.shutdown(Shutdown::Write);
                if req.has_token("expect", "100-continue") {
                    return Ok(());
                }
                let sink_counter = AtomicU64::new(0);
                let _ = copy_body(
                    &mut self.client_r,
                    &mut io::sink(),
                    req_framing,
                    None,
                    &sink_counter,
                );
                return Ok(());
            }
            let expect_continue = req.has_token("expect", "100-continue");
            req.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("expect"));
            let client_close = req.has_token("connection", "close") || http10;

            // Forward the head, then the body.
            match self.upstream() {
                Ok(_) => {}
                Err(e) => {
                    let body = format!("proxy: upstream unreachable: {e}\n");
                    let resp = format!(
                        "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = self.client_w.write_all(resp.as_bytes());
                    return Ok(());
                }
            }
            let up = self.upstream.as_mut().expect("connected above");
            req.write_to(&mut up.w)?;
            if expect_continue {
                self.client_w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
                self.client_w.flush()?;
            }
            let abort_req = match decision {
                Decision::DropRequest(f) => Some(f),
                _ => None,
            };
            match copy_body(
                &mut self.client_r,
                &mut up.w,
                req_framing,
                abort_req,
                &shared.counters.bytes_up,
            )? {
                Copied::Done => {}
                Copied::Aborted => {
                    inc(&c.dropped_request);
                    return Ok(());
                }
            }

            // The response (skipping interim 1xx ones).
            let mut resp = loop {
                let Some(h) = read_head(&mut up.r)? else {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                };
                let code = status_code(&h.start);
                if (100..200).contains(&code) && code != 101 {
                    continue;
                }
                break h;
            };
            let code = status_code(&resp.start);
            let mut rewritten = 0;
            for (k, v) in resp.headers.iter_mut() {
                if k.eq_ignore_ascii_case("location") {
                    if let Some(nv) = rewrite_location(v, shared.upstream_port, shared.port) {
                        *v = nv;
                        rewritten += 1;
                    }
                }
            }
            shared
                .counters
                .locations_rewritten
                .fetch_add(rewritten, Ordering::SeqCst);
            let resp_framing = if method.eq_ignore_ascii_case("HEAD")
                || (100..200).contains(&code)
                || code == 204
                || code == 304
            {
                Framing::None
            } else {
                resp.framing()?.unwrap_or(Framing::UntilClose)
            };
            let server_close = resp.has_token("connection", "close")
                || resp_framing == Framing::UntilClose
                || resp.start.starts_with("HTTP/1.0");

            if let Decision::HoldAnswer(hold) = decision {
                inc(&c.held);
                let sink_counter = AtomicU64::new(0);
                let _ = copy_body(
                    &mut up.r,
                    &mut io::sink(),
                    resp_framing,
                    None,
                    &sink_counter,
                );
                let until = std::time::Instant::now() + hold;
                while std::time::Instant::now() < until && shared.live_now() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(());
            }
            if let Decision::DropResponse(f) = decision {
                inc(&c.dropped_response);
                let empty = matches!(resp_framing, Framing::None | Framing::Length(0));
                if !empty {
                    resp.write_to(&mut self.client_w)?;
                    let _ = copy_body(
                        &mut up.r,
                        &mut self.client_w,
                        resp_framing,
                        Some(f),
                        &shared.counters.bytes_down,
                    );
                }
                return Ok(());
            }
            resp.write_to(&mut self.client_w)?;
            match decision {
                Decision::Trickle(interval) => {
                    let mut w = Trickle {
                        inner: &mut self.client_w,
                        interval,
                        live: &|| shared.live_now(),
                    };
                    copy_body(
                        &mut up.r,
                        &mut w,
                        resp_framing,
                        None,
                        &shared.counters.bytes_down,
                    )?;
                    return Ok(());
                }
                _ => {
                    copy_body(
                        &mut up.r,
                        &mut self.client_w,
                        resp_framing,
                        None,
                        &shared.counters.bytes_down,
                    )?;
                }
            }
            inc(&c.completed);
            if client_close || server_close {
                return Ok(());
            }
        }
    }
}

/// A writer that passes one byte per `interval` (a trickling peer); it
/// fails once the proxy stops, so no thread outlives it.
struct Trickle<'a, W: Write> {
    inner: &'a mut W,
    interval: Duration,
    live: &'a dyn Fn() -> bool,
}

impl<W: Write> Write for Trickle<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !(self.live)() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        std::thread::sleep(self.interval);
        self.inner.write_all(&buf[..1])?;
        self.inner.flush()?;
        Ok(1)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn status_code(status_line: &str) -> u16 {
    status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `http://127.0.0.1:UP/x` (or `localhost:UP`) → `http://127.0.0.1:PORT/x`.
fn rewrite_location(v: &str, upstream_port: u16, port: u16) -> Option<String> {
    for scheme in ["http://", "https://"] {
        for host in ["127.0.0.1", "localhost"] {
            let from = format!("{scheme}{host}:{upstream_port}");
            if let Some(rest) = v.strip_prefix(&from) {
                if rest.is_empty() || rest.starts_with(['/', '?']) {
                    return Some(format!("{scheme}127.0.0.1:{port}{rest}"));
                }
            }
        }
    }
    None
}
