//! The faulty proxy of the test support works: in front of a real
//! registry it injects about the 503s and dropped connections it is asked
//! for (seeded, so the same seed gives the same faults), streams bodies
//! intact when it does not fault, goes down and comes back, and rewrites
//! `Location` headers that point at the upstream.
mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use support::faulty_proxy::{Faults, FaultyProxy};
use support::registry::{Mode, Registry};

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    /// Sent with `Transfer-Encoding: chunked`, in these pieces.
    Chunked(&'a [&'a [u8]]),
}

/// One request on a fresh connection (`Connection: close`); an error when
/// the connection is refused, reset or closed before a whole response.
fn http(port: u16, method: &str, path: &str, body: Body) -> io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nUser-Agent: faulty-proxy-test\r\n");
    match &body {
        Body::None if matches!(method, "PUT" | "POST" | "PATCH") => {
            head.push_str("Content-Length: 0\r\n")
        }
        Body::None => {}
        Body::Bytes(b) => head.push_str(&format!(
            "Content-Length: {}\r\nContent-Type: application/octet-stream\r\n",
            b.len()
        )),
        Body::Chunked(_) => head
            .push_str("Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n"),
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    match body {
        Body::None => {}
        Body::Bytes(b) => s.write_all(b)?,
        Body::Chunked(pieces) => {
            for p in pieces {
                s.write_all(format!("{:x}\r\n", p.len()).as_bytes())?;
                s.write_all(p)?;
                s.write_all(b"\r\n")?;
            }
            s.write_all(b"0\r\n\r\n")?;
        }
    }
    s.flush()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let _ = s.shutdown(Shutdown::Both);
    parse_response(method, &raw)
}

fn parse_response(method: &str, raw: &[u8]) -> io::Result<Resp> {
    let eof = || io::Error::new(io::ErrorKind::UnexpectedEof, "incomplete response");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(eof)?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(eof)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = raw[end + 4..].to_vec();
    let resp = Resp {
        status,
        headers,
        body,
    };
    if method != "HEAD" {
        if let Some(n) = resp.header("content-length") {
            if n.parse::<usize>().ok() != Some(resp.body.len()) {
                return Err(eof());
            }
        }
    }
    Ok(resp)
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(b)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The path and query of an absolute or relative URL.
fn path_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest[rest.find('/').unwrap_or(rest.len())..].to_string(),
        None => location.to_string(),
    }
}

/// Monolithic upload: POST then PUT ?digest=. The number of requests it
/// made, and whether it completed.
fn upload(port: u16, repo: &str, data: &[u8]) -> (u64, bool) {
    let Ok(r) = http(
        port,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        Body::None,
    ) else {
        return (1, false);
    };
    if r.status != 202 {
        return (1, false);
    }
    let loc = path_of(r.header("location").expect("Location on 202"));
    let sep = if loc.contains('?') { '&' } else { '?' };
    let put = format!("{loc}{sep}digest={}", sha256(data));
    match http(port, "PUT", &put, Body::Bytes(data)) {
        Ok(r) => (2, r.status == 201),
        Err(_) => (2, false),
    }
}

#[test]
fn injects_about_ten_percent_503s_before_forwarding() {
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(
        reg.port,
        Faults {
            p503: 0.10,
            seed: 7,
            ..Faults::none()
        },
    );
    let mut seen_503 = 0;
    let mut seen_200 = 0;
    for _ in 0..300 {
        let r = http(proxy.port, "HEAD", "/v2/", Body::None).expect("no drops asked");
        match r.status {
            503 => {
                assert_eq!(r.header("connection"), Some("close"));
                seen_503 += 1;
            }
            200 => seen_200 += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    let st = proxy.stats();
    assert_eq!(st.requests, 300);
    assert_eq!(st.injected_503, seen_503);
    assert_eq!(st.completed, seen_200);
    assert_eq!(st.dropped(), 0);
    assert!(
        (15..=50).contains(&seen_503),
        "about 10 % of 300 requests should get 503, got {seen_503}"
    );
}

#[test]
fn a_503_to_a_request_with_a_body_is_read_cleanly() {
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(
        reg.port,
        Faults {
            p503: 1.0,
            ..Faults::none()
        },
    );
    let data = support::images::pseudo_random(3, 1 << 20);
    let r = http(
        proxy.port,
        "PUT",
        "/v2/x/blobs/uploads/whatever",
        Body::Bytes(&data),
    )
    .expect("a 503, not a reset");
    assert_eq!(r.status, 503);
    assert_eq!(proxy.stats().bytes_up, 0, "nothing forwarded");
}

#[test]
fn drops_connections_mid_request_and_mid_response() {
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(
        reg.port,
        Faults {
            pdrop: 0.10,
            seed: 11,
            ..Faults::none()
        },
    );
    let mut requests = 0u64;
    let mut failed = 0u64;
    for _ in 0..150 {
        requests += 1;
        match http(proxy.port, "GET", "/v2/", Body::None) {
            Ok(r) => assert_eq!(r.status, 200),
            Err(_) => failed += 1,
        }
    }
    let mut uploaded = Vec::new();
    for i in 0..60u64 {
        let data = support::images::pseudo_random(100 + i, 64 * 1024 + i as usize);
        let (n, ok) = upload(proxy.port, "drops/test", &data);
        requests += n;
        if ok {
            uploaded.push(data);
        } else {
            failed += 1;
        }
    }
    let st = proxy.stats();
    assert_eq!(st.requests, requests);
    assert_eq!(
        st.dropped(),
        failed,
        "every failure is an injected drop: {st:?}"
    );
    assert!(st.dropped_request > 0, "{st:?}");
    assert!(st.dropped_response > 0, "{st:?}");
    let rate = st.dropped() as f64 / requests as f64;
    assert!(
        (0.04..=0.18).contains(&rate),
        "drop rate {rate} for pdrop 0.10: {st:?}"
    );
    // What went through is intact: read back from the registry directly.
    assert!(uploaded.len() > 40);
    for data in &uploaded {
        let r = http(
            reg.port,
            "GET",
            &format!("/v2/drops/test/blobs/{}", sha256(data)),
            Body::None,
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == *data, "blob bytes differ");
    }
}

#[test]
fn same_seed_same_faults() {
    let reg = Registry::start(Mode::Plain);
    let run = |seed: u64| -> Vec<Option<u16>> {
        let proxy = FaultyProxy::start(
            reg.port,
            Faults {
                p503: 0.10,
                pdrop: 0.05,
                seed,
                ..Faults::none()
            },
        );
        (0..120)
            .map(|_| {
                http(proxy.port, "GET", "/v2/", Body::None)
                    .ok()
                    .map(|r| r.status)
            })
            .collect()
    };
    let a = run(5);
    let b = run(5);
    let c = run(6);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.contains(&None) && a.contains(&Some(503)) && a.contains(&Some(200)));
}

#[test]
fn down_mode_refuses_every_connection_then_recovers() {
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(reg.port, Faults::none());
    assert_eq!(
        http(proxy.port, "GET", "/v2/", Body::None).unwrap().status,
        200
    );
    // A keep-alive connection opened while up is closed by going down.
    let mut idle = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    proxy.set_down(true);
    assert!(proxy.is_down());
    for _ in 0..5 {
        assert!(http(proxy.port, "GET", "/v2/", Body::None).is_err());
    }
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest); // EOF or reset, never a hang
    let _ = idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut after = Vec::new();
    let n = idle.read_to_end(&mut after).unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&after[..n]).contains("HTTP/1.1 200"),
        "no response after going down"
    );
    assert!(proxy.stats().refused >= 5);
    proxy.set_down(false);
    assert_eq!(
        http(proxy.port, "GET", "/v2/", Body::None).unwrap().status,
        200
    );
}

#[test]
fn location_pointing_at_the_upstream_is_rewritten() {
    // A stand-in upstream that answers with absolute Locations on its own
    // address (as a registry with `http.host` set would), and a relative one.
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = up.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for (i, conn) in up.incoming().take(3).enumerate() {
            let mut s = conn.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let loc = match i {
                0 => format!("http://127.0.0.1:{up_port}/v2/x/blobs/uploads/abc?_state=s1"),
                1 => format!("http://localhost:{up_port}/v2/x/blobs/uploads/def"),
                _ => "/v2/x/blobs/uploads/ghi".to_string(),
            };
            let _ = s.write_all(
                format!("HTTP/1.1 202 Accepted\r\nLocation: {loc}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    let proxy = FaultyProxy::start(up_port, Faults::none());
    let p = proxy.port;
    let locs: Vec<String> = (0..3)
        .map(|_| {
            http(p, "POST", "/v2/x/blobs/uploads/", Body::None)
                .unwrap()
                .header("location")
                .unwrap()
                .to_string()
        })
        .collect();
    server.join().unwrap();
    assert_eq!(
        locs,
        vec![
            format!("http://127.0.0.1:{p}/v2/x/blobs/uploads/abc?_state=s1"),
            format!("http://127.0.0.1:{p}/v2/x/blobs/uploads/def"),
            "/v2/x/blobs/uploads/ghi".to_string(),
        ]
    );
    assert_eq!(proxy.stats().locations_rewritten, 2);

    // With the real registry the upload URL keeps pointing at the proxy,
    // and a chunked PATCH then a PUT through it store the blob intact.
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(reg.port, Faults::none());
    let r = http(
        proxy.port,
        "POST",
        "/v2/loc/test/blobs/uploads/",
        Body::None,
    )
    .unwrap();
    assert_eq!(r.status, 202);
    let loc = r.header("location").unwrap().to_string();
    assert!(
        loc.starts_with(&format!("http://127.0.0.1:{}/", proxy.port)),
        "{loc}"
    );
    let data = support::images::pseudo_random(9, 300_000);
    let pieces: Vec<&[u8]> = data.chunks(70_000).collect();
    let r = http(proxy.port, "PATCH", &path_of(&loc), Body::Chunked(&pieces)).unwrap();
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    let loc = path_of(r.header("location").unwrap());
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = http(
        proxy.port,
        "PUT",
        &format!("{loc}{sep}digest={}", sha256(&data)),
        Body::None,
    )
    .unwrap();
    assert_eq!(r.status, 201);
    let back = http(
        reg.port,
        "GET",
        &format!("/v2/loc/test/blobs/{}", sha256(&data)),
        Body::None,
    )
    .unwrap();
    assert!(back.body == data);
}

#[test]
fn skopeo_pushes_through_a_clean_proxy_with_latency() {
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(
        reg.port,
        Faults {
            latency: Duration::from_millis(5),
            latency_jitter: Duration::from_millis(10),
            ..Faults::none()
        },
    );
    let work = tempfile::tempdir().unwrap();
    let big = support::images::pseudo_random(21, 8 << 20);
    let layers = [
        support::images::layer("big", &big),
        support::images::layer("small", b"small"),
    ];
    let (manifest, blobs) = support::images::image(&support::images::AMD64, &layers);
    let dir = work.path().join("layout");
    support::images::write_layout(
        &dir,
        &[("t", &manifest, support::images::OCI_MANIFEST)],
        &blobs.iter().collect::<Vec<_>>(),
    );
    let t0 = Instant::now();
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:t", dir.display()))
        .arg(format!("docker://{}/via/proxy:1", proxy.host()))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo through the proxy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t0.elapsed() >= Duration::from_millis(5));
    let raw = reg.raw_manifest("via/proxy:1").expect("pushed");
    assert_eq!(support::images::blob(raw).digest, manifest.digest);
    let st = proxy.stats();
    assert!(st.bytes_up >= 8 << 20, "{st:?}");
    assert_eq!(st.injected(), 0);
}

#[test]
fn latency_is_added_to_each_request() {
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(
        reg.port,
        Faults {
            latency: Duration::from_millis(40),
            ..Faults::none()
        },
    );
    let t0 = Instant::now();
    for _ in 0..5 {
        assert_eq!(
            http(proxy.port, "HEAD", "/v2/", Body::None).unwrap().status,
            200
        );
    }
    assert!(t0.elapsed() >= Duration::from_millis(200));
}

#[test]
fn forced_faults_hit_exactly_the_next_requests() {
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(reg.port, Faults::none());
    proxy.fail_next_503(3);
    let got: Vec<u16> = (0..5)
        .map(|_| http(proxy.port, "GET", "/v2/", Body::None).unwrap().status)
        .collect();
    assert_eq!(got, vec![503, 503, 503, 200, 200]);
    proxy.drop_next(2);
    assert!(http(proxy.port, "GET", "/v2/", Body::None).is_err());
    assert!(http(proxy.port, "GET", "/v2/", Body::None).is_err());
    assert_eq!(
        http(proxy.port, "GET", "/v2/", Body::None).unwrap().status,
        200
    );
    let st = proxy.stats();
    assert_eq!((st.injected_503, st.dropped()), (3, 2));
}

#[test]
fn expect_continue_is_answered_and_the_body_forwarded() {
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(reg.port, Faults::none());
    let r = http(
        proxy.port,
        "POST",
        "/v2/expect/test/blobs/uploads/",
        Body::None,
    )
    .unwrap();
    let loc = path_of(r.header("location").unwrap());
    let data = support::images::pseudo_random(77, 200_000);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "PUT {loc}{sep}digest={} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        sha256(&data),
        proxy.port,
        data.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(&data).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_response("PUT", &raw).unwrap().status, 201);
    let back = http(
        reg.port,
        "GET",
        &format!("/v2/expect/test/blobs/{}", sha256(&data)),
        Body::None,
    )
    .unwrap();
    assert!(back.body == data);
}
