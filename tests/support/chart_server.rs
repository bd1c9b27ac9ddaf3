//! A small HTTP/1.1 server standing in for ChartMuseum and Harbor, written
//! from their published API descriptions:
//!
//! ChartMuseum: `GET /index.yaml`, `GET /charts/<file>.tgz`,
//! `POST /api/charts` (multipart field `chart`; 409 when the version exists
//! unless `?force`), `DELETE /api/charts/<name>/<version>`.
//!
//! Harbor (v2.0 API): `GET /api/v2.0/systeminfo` (`harbor_version`),
//! `POST /api/v2.0/projects` (`{"project_name": ...}`; 201, 409 when it
//! exists), and for Harbor < 2.8 the chart museum API:
//! `POST /api/chartrepo/<project>/charts` (multipart `chart`),
//! `DELETE /api/chartrepo/<project>/charts/<name>/<version>`,
//! `GET /chartrepo/<project>/index.yaml`,
//! `GET /chartrepo/<project>/charts/<file>`. Requests under `/v2/` are
//! relayed to a backing registry when one is set (Harbor ≥ 2.8 serves
//! charts as OCI artifacts on the same host).
//!
//! With `referrers_api`, the OCI 1.1 referrers API as Harbor (>= 2.9)
//! answers it in front of that registry: a manifest PUT with a `subject`
//! is refused (404 `MANIFEST_UNKNOWN`) while the subject is not in the
//! repository, else stored and answered with `OCI-Subject: <digest>`;
//! `GET /v2/<name>/referrers/<digest>` lists what was pushed with that
//! subject (`artifactType` filter, `OCI-Filters-Applied`).
//!
//! Optional basic auth on every request. One thread per connection,
//! `Connection: close` on every response. Stops when dropped.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use sha2::Digest as _;

#[derive(Default)]
struct State {
    /// (repo key: "" for ChartMuseum, project for Harbor) -> file -> bytes
    charts: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    projects: BTreeSet<String>,
    /// "METHOD path" of every request.
    log: Vec<String>,
    /// Authorization header of every request ("" when none).
    auth_log: Vec<String>,
    /// (repository, subject digest) -> descriptors of its referrers.
    referrers: BTreeMap<(String, String), Vec<serde_json::Value>>,
}

pub struct ChartServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

#[derive(Clone, Default)]
pub struct Config {
    /// (user, password) required when set.
    pub auth: Option<(String, String)>,
    /// `harbor_version` reported by systeminfo (e.g. `v2.7.1-6015b3ef`).
    pub harbor_version: String,
    /// `host:port` of a registry to relay `/v2/` to.
    pub registry: Option<String>,
    /// Harbor projects that exist from the start.
    pub projects: Vec<String>,
    /// Served as the ChartMuseum `/index.yaml` instead of the generated
    /// one (a classic repo whose index lists URLs on other hosts, or a
    /// hostile index).
    pub index_yaml: Option<String>,
    /// Answer the OCI 1.1 referrers API in front of `registry`, as Harbor does.
    pub referrers_api: bool,
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn resp(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response {
        status,
        content_type: "application/json",
        body: body.into(),
    }
}

impl ChartServer {
    pub fn start(cfg: Config) -> ChartServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State {
            projects: cfg.projects.iter().cloned().collect(),
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let cfg = Arc::new(cfg);
        std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (st, cfg) = (st.clone(), cfg.clone());
                        std::thread::spawn(move || {
                            let _ = handle(stream, &st, &cfg);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        ChartServer { port, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// "METHOD path" of every request so far.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn projects(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .projects
            .iter()
            .cloned()
            .collect()
    }

    /// Store a chart archive as `charts/<file>` of a repo without upload.
    pub fn put_chart(&self, repo: &str, file: &str, tgz: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .charts
            .entry(repo.to_string())
            .or_default()
            .insert(file.to_string(), tgz);
    }

    /// Value of the `Authorization` header of every request so far
    /// (empty when none), in order.
    pub fn auth_log(&self) -> Vec<String> {
        self.state.lock().unwrap().auth_log.clone()
    }

    /// Stored chart archive of a repo ("" for ChartMuseum, else the project).
    pub fn chart(&self, repo: &str, file: &str) -> Option<Vec<u8>> {
        self.state
            .lock()
            .unwrap()
            .charts
            .get(repo)
            .and_then(|m| m.get(file))
            .cloned()
    }
}

impl Drop for ChartServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn read_request(stream: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if stream.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        stream.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            stream.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                stream.read_line(&mut end)?;
                break;
            }
            let mut chunk = vec![0; n];
            stream.read_exact(&mut chunk)?;
            req.body.extend_from_slice(&chunk);
            let mut crlf = [0u8; 2];
            stream.read_exact(&mut crlf)?;
        }
    } else if let Some(len) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        req.body = vec![0; len];
        stream.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

fn write_response(stream: &mut TcpStream, r: &Response, head: bool) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Status",
    };
    let mut h = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    if r.status == 401 {
        h.push_str("WWW-Authenticate: Basic realm=\"charts\"\r\n");
    }
    h.push_str("\r\n");
    stream.write_all(h.as_bytes())?;
    if !head {
        stream.write_all(&r.body)?;
    }
    stream.flush()
}

fn handle(stream: TcpStream, state: &Mutex<State>, cfg: &Config) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let Some(req) = read_request(&mut reader)? else {
        return Ok(());
    };
    {
        let mut st = state.lock().unwrap();
        st.log.push(format!("{} {}", req.method, req.path));
        st.auth_log
            .push(req.header("authorization").unwrap_or("").to_string());
    }
    if req.path.starts_with("/v2/") || req.path == "/v2" {
        if let Some(reg) = &cfg.registry {
            if cfg.referrers_api {
                if let Some(raw) = referrers_api(&req, reg, state)? {
                    out.write_all(&raw)?;
                    return out.flush();
                }
            }
            return relay(&req, reg, &mut out);
        }
        return write_response(&mut out, &resp(404, "{}"), false);
    }
    if let Some((user, pass)) = &cfg.auth {
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        if req.header("authorization") != Some(want.as_str()) {
            let r = resp(
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized"}]}"#,
            );
            return write_response(&mut out, &r, req.method == "HEAD");
        }
    }
    let r = route(&req, state, cfg);
    write_response(&mut out, &r, req.method == "HEAD")
}

/// Relay one request to the backing registry and its response back.
fn relay(req: &Request, registry: &str, out: &mut TcpStream) -> std::io::Result<()> {
    let buf = relay_bytes(req, registry)?;
    out.write_all(&buf)?;
    out.flush()
}

/// The referrers API (see the module docs), or `None` for a request it
/// leaves to the registry. Returns the raw HTTP response.
fn referrers_api(
    req: &Request,
    registry: &str,
    state: &Mutex<State>,
) -> std::io::Result<Option<Vec<u8>>> {
    let path = req.path.trim_start_matches("/v2/");
    if req.method == "GET" || req.method == "HEAD" {
        let Some((repo, digest)) = path.rsplit_once("/referrers/") else {
            return Ok(None);
        };
        let want = req
            .query
            .split('&')
            .find_map(|q| q.strip_prefix("artifactType="))
            .map(|v| v.replace("%2F", "/").replace("%2B", "+"));
        let list = state
            .lock()
            .unwrap()
            .referrers
            .get(&(repo.to_string(), digest.to_string()))
            .cloned()
            .unwrap_or_default();
        let list: Vec<serde_json::Value> = list
            .into_iter()
            .filter(|d| want.as_deref().is_none_or(|w| d["artifactType"] == w))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": list,
        }))
        .unwrap();
        let mut h = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if want.is_some() {
            h.push_str("OCI-Filters-Applied: artifactType\r\n");
        }
        h.push_str("\r\n");
        let mut raw = h.into_bytes();
        if req.method == "GET" {
            raw.extend_from_slice(&body);
        }
        return Ok(Some(raw));
    }
    if req.method != "PUT" {
        return Ok(None);
    }
    let Some((repo, _reference)) = path.rsplit_once("/manifests/") else {
        return Ok(None);
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
        return Ok(None);
    };
    let Some(subject) = doc["subject"]["digest"].as_str().map(String::from) else {
        return Ok(None);
    };
    // Harbor refuses a referrer whose subject is not in the repository.
    let head = Request {
        method: "HEAD".into(),
        path: format!("/v2/{repo}/manifests/{subject}"),
        query: String::new(),
        headers: vec![
            ("Host".into(), registry.to_string()),
            (
            "Accept".into(),
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json".into(),
            ),
        ],
        body: Vec::new(),
    };
    let found = relay_bytes(&head, registry)?;
    if !found.starts_with(b"HTTP/1.1 200") {
        let body = format!(
            r#"{{"errors":[{{"code":"MANIFEST_UNKNOWN","message":"the subject {subject} of the manifest is not found"}}]}}"#
        );
        return Ok(Some(
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        ));
    }
    let raw = relay_bytes(req, registry)?;
    if !raw.starts_with(b"HTTP/1.1 201") {
        return Ok(Some(raw));
    }
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&req.body));
    let artifact_type = doc["artifactType"]
        .as_str()
        .or(doc["config"]["mediaType"].as_str())
        .unwrap_or("")
        .to_string();
    let mut desc = serde_json::json!({
        "mediaType": doc["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json"),
        "digest": digest,
        "size": req.body.len(),
        "artifactType": artifact_type,
    });
    if doc["annotations"].is_object() {
        desc["annotations"] = doc["annotations"].clone();
    }
    {
        let mut st = state.lock().unwrap();
        let list = st
            .referrers
            .entry((repo.to_string(), subject.clone()))
            .or_default();
        if !list.iter().any(|d| d["digest"] == desc["digest"]) {
            list.push(desc);
        }
    }
    // OCI-Subject after the status line.
    let at = raw.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
    let mut with = raw[..at].to_vec();
    with.extend_from_slice(format!("OCI-Subject: {subject}\r\n").as_bytes());
    with.extend_from_slice(&raw[at..]);
    Ok(Some(with))
}

/// One request to the backing registry; its raw response.
fn relay_bytes(req: &Request, registry: &str) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(registry)?;
    let target = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    let mut h = format!("{} {target} HTTP/1.1\r\n", req.method);
    for (k, v) in &req.headers {
        let kl = k.to_ascii_lowercase();
        if kl == "transfer-encoding" || kl == "content-length" || kl == "connection" {
            continue;
        }
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    up.write_all(h.as_bytes())?;
    up.write_all(&req.body)?;
    let mut buf = Vec::new();
    up.read_to_end(&mut buf)?;
    Ok(buf)
}

fn route(req: &Request, state: &Mutex<State>, cfg: &Config) -> Response {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let force = req
        .query
        .split('&')
        .any(|q| q == "force" || q == "force=true");
    let m = req.method.as_str();
    match (m, segs.as_slice()) {
        ("GET", ["api", "v2.0", "systeminfo"]) => resp(
            200,
            format!(
                r#"{{"harbor_version":"{}","with_chartmuseum":true,"auth_mode":"db_auth"}}"#,
                cfg.harbor_version
            ),
        ),
        ("POST", ["api", "v2.0", "projects"]) => {
            let v: serde_json::Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(_) => return resp(400, r#"{"errors":[{"code":"BAD_REQUEST"}]}"#),
            };
            let Some(name) = v.get("project_name").and_then(|n| n.as_str()) else {
                return resp(400, r#"{"errors":[{"code":"BAD_REQUEST"}]}"#);
            };
            let mut st = state.lock().unwrap();
            if st.projects.insert(name.to_string()) {
                resp(201, "")
            } else {
                resp(
                    409,
                    r#"{"errors":[{"code":"CONFLICT","message":"project exists"}]}"#,
                )
            }
        }
        // ChartMuseum
        ("GET" | "HEAD", ["index.yaml"]) => match &cfg.index_yaml {
            Some(text) => Response {
                status: 200,
                content_type: "application/x-yaml",
                body: text.clone().into_bytes(),
            },
            None => index(state, ""),
        },
        ("GET" | "HEAD", ["charts", file]) => file_of(state, "", file),
        ("POST", ["api", "charts"]) => upload(state, "", req, force),
        ("DELETE", ["api", "charts", name, version]) => delete(state, "", name, version),
        // Harbor chart museum API
        ("POST", ["api", "chartrepo", project, "charts"]) => {
            if !state.lock().unwrap().projects.contains(*project) {
                return resp(
                    404,
                    r#"{"errors":[{"code":"NOT_FOUND","message":"project not found"}]}"#,
                );
            }
            upload(state, project, req, false)
        }
        ("DELETE", ["api", "chartrepo", project, "charts", name, version]) => {
            delete(state, project, name, version)
        }
        ("GET" | "HEAD", ["chartrepo", project, "index.yaml"]) => {
            if !state.lock().unwrap().projects.contains(*project) {
                return resp(404, "{}");
            }
            index(state, project)
        }
        ("GET" | "HEAD", ["chartrepo", project, "charts", file]) => file_of(state, project, file),
        _ => resp(404, r#"{"error":"not found"}"#),
    }
}

/// The `chart` part of a multipart/form-data body (or the raw body for
/// ChartMuseum's `--data-binary` form).
fn chart_part(req: &Request) -> Option<Vec<u8>> {
    let ct = req.header("content-type").unwrap_or("");
    if !ct.starts_with("multipart/form-data") {
        return Some(req.body.clone());
    }
    let boundary = ct.split("boundary=").nth(1)?.trim_matches('"');
    let delim = format!("--{boundary}");
    let body = &req.body;
    let mut pos = 0;
    let find = |hay: &[u8], needle: &[u8], from: usize| -> Option<usize> {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    while let Some(start) = find(body, delim.as_bytes(), pos) {
        let hstart = start + delim.len() + 2;
        let hend = find(body, b"\r\n\r\n", hstart)?;
        let headers = String::from_utf8_lossy(&body[hstart..hend]).to_string();
        let dstart = hend + 4;
        let next = find(body, format!("\r\n{delim}").as_bytes(), dstart)?;
        if headers.contains("name=\"chart\"") {
            return Some(body[dstart..next].to_vec());
        }
        pos = next + 2;
    }
    None
}

fn chart_meta(tgz: &[u8]) -> Option<serde_yaml_ng::Mapping> {
    let gz = flate2::read::GzDecoder::new(tgz);
    let mut ar = tar::Archive::new(gz);
    for e in ar.entries().ok()? {
        let mut e = e.ok()?;
        let p = e.path().ok()?.to_string_lossy().to_string();
        if p.matches('/').count() == 1 && p.ends_with("/Chart.yaml") {
            let mut s = String::new();
            e.read_to_string(&mut s).ok()?;
            return serde_yaml_ng::from_str(&s).ok();
        }
    }
    None
}

fn upload(state: &Mutex<State>, repo: &str, req: &Request, force: bool) -> Response {
    let Some(tgz) = chart_part(req) else {
        return resp(400, r#"{"error":"no chart field"}"#);
    };
    let Some(meta) = chart_meta(&tgz) else {
        return resp(400, r#"{"error":"not a chart archive"}"#);
    };
    let get = |k: &str| {
        meta.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let file = format!("{}-{}.tgz", get("name"), get("version"));
    let mut st = state.lock().unwrap();
    let charts = st.charts.entry(repo.to_string()).or_default();
    if charts.contains_key(&file) && !force {
        return resp(409, r#"{"error":"file already exists"}"#);
    }
    charts.insert(file, tgz);
    resp(201, r#"{"saved":true}"#)
}

fn delete(state: &Mutex<State>, repo: &str, name: &str, version: &str) -> Response {
    let file = format!("{name}-{version}.tgz");
    let mut st = state.lock().unwrap();
    match st.charts.get_mut(repo).and_then(|m| m.remove(&file)) {
        Some(_) => resp(200, r#"{"deleted":true}"#),
        None => resp(404, r#"{"error":"not found"}"#),
    }
}

fn file_of(state: &Mutex<State>, repo: &str, file: &str) -> Response {
    match state
        .lock()
        .unwrap()
        .charts
        .get(repo)
        .and_then(|m| m.get(file))
    {
        Some(b) => Response {
            status: 200,
            content_type: "application/x-tar",
            body: b.clone(),
        },
        None => resp(404, r#"{"error":"not found"}"#),
    }
}

fn index(state: &Mutex<State>, repo: &str) -> Response {
    use serde_yaml_ng::Value;
    let st = state.lock().unwrap();
    let mut entries: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if let Some(charts) = st.charts.get(repo) {
        for (file, tgz) in charts {
            let Some(mut meta) = chart_meta(tgz) else {
                continue;
            };
            let name = meta
                .get("name")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string();
            meta.insert(
                "urls".into(),
                vec![Value::from(format!("charts/{file}"))].into(),
            );
            meta.insert(
                "digest".into(),
                hex::encode(sha2::Sha256::digest(tgz)).into(),
            );
            meta.insert("created".into(), "2024-01-01T00:00:00Z".into());
            entries.entry(name).or_default().push(Value::Mapping(meta));
        }
    }
    let mut root = serde_yaml_ng::Mapping::new();
    root.insert("apiVersion".into(), "v1".into());
    let mut em = serde_yaml_ng::Mapping::new();
    for (k, v) in entries {
        em.insert(k.into(), Value::Sequence(v));
    }
    root.insert("entries".into(), Value::Mapping(em));
    root.insert("generated".into(), "2024-01-01T00:00:00Z".into());
    Response {
        status: 200,
        content_type: "application/x-yaml",
        body: serde_yaml_ng::to_string(&Value::Mapping(root))
            .unwrap()
            .into_bytes(),
    }
}
