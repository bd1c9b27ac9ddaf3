//! Request routing: the read-only OCI distribution API under `/v2/` and the
//! chart repository under `/charts/`. Every write method answers 405 with
//! the distribution spec's error body (`UNSUPPORTED`).
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::blobs::{self, Body, RangeAsk, Verifier};
use super::charts::ChartRepo;
use super::index::{Catalog, Repo};
use super::log::{AccessLog, Entry};
use crate::oci::media::Platform;
use crate::oci::Digest;

pub struct State {
    pub catalog: Catalog,
    pub charts: ChartRepo,
    pub verifier: Verifier,
    pub auth: Option<Arc<super::auth::Htpasswd>>,
    pub log: AccessLog,
    /// The platform served to clients that do not accept an index.
    pub platform: Platform,
}

/// Most entries of one `tags/list` or `_catalog` page without `n`.
const DEFAULT_PAGE: usize = 1000;

pub async fn handle(
    state: Arc<State>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let method = req.method().clone();
    let mut user = None;
    let resp = match &state.auth {
        Some(auth) => {
            let header = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            user = auth.check(header).await;
            if user.is_none() {
                unauthorized()
            } else {
                route(&state, &req).await
            }
        }
        None => route(&state, &req).await,
    };
    let bytes = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    state.log.write(&Entry {
        remote,
        method: method.as_str(),
        target: &target,
        status: resp.status().as_u16(),
        bytes,
        user: user.as_deref(),
        started,
    });
    Ok(resp)
}

async fn route(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().replace("%3A", ":").replace("%3a", ":");
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "this registry is read-only (bundler serve): push to a registry with bundler sync",
        );
    }
    let query = Query::parse(req.uri().query());
    if path == "/v2" || path == "/v2/" {
        return json(StatusCode::OK, b"{}".to_vec(), head);
    }
    if let Some(rest) = path.strip_prefix("/charts/") {
        return chart(&state.charts, rest, head);
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return not_found();
    };
    if rest == "_catalog" {
        return catalog(&state.catalog, &query, head);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        let Some((_, repo)) = state.catalog.resolve(name, query.ns.as_deref()) else {
            return name_unknown(name);
        };
        return tags(name, repo, &query, head);
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let Some((_, repo)) = state.catalog.resolve(name, query.ns.as_deref()) else {
            return name_unknown(name);
        };
        return manifest(state, repo, name, reference, req, head);
    }
    if rest.contains("/blobs/uploads") {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "this registry is read-only: there are no uploads",
        );
    }
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        let Some((served, _)) = state.catalog.resolve(name, query.ns.as_deref()) else {
            return name_unknown(name);
        };
        return referrers(state, served, digest, req.uri().query(), head);
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        let Some((_, repo)) = state.catalog.resolve(name, query.ns.as_deref()) else {
            return name_unknown(name);
        };
        return blob(state, repo, digest, req, head).await;
    }
    not_found()
}

#[derive(Default)]
struct Query {
    ns: Option<String>,
    n: Option<usize>,
    last: Option<String>,
}

impl Query {
    fn parse(q: Option<&str>) -> Query {
        let mut out = Query::default();
        for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "ns" => out.ns = Some(v.into_owned()),
                "n" => out.n = v.parse().ok(),
                "last" => out.last = Some(v.into_owned()),
                _ => {}
            }
        }
        out
    }
}

/// One page of `items` (sorted) after `last`, at most `n`, and the
/// `Link` to the next page when more remain.
fn page<'a>(
    items: impl Iterator<Item = &'a String>,
    q: &Query,
    base: &str,
) -> (Vec<&'a String>, Option<String>) {
    let n = q.n.unwrap_or(DEFAULT_PAGE);
    let mut rest = items.filter(|t| q.last.as_ref().is_none_or(|l| t.as_str() > l.as_str()));
    let chosen: Vec<&String> = rest.by_ref().take(n).collect();
    let more = rest.next().is_some();
    let link = match (more, chosen.last()) {
        (true, Some(last)) => {
            let last: String = url::form_urlencoded::byte_serialize(last.as_bytes()).collect();
            Some(format!("<{base}?n={n}&last={last}>; rel=\"next\""))
        }
        _ => None,
    };
    (chosen, link)
}

fn tags(name: &str, repo: &Repo, q: &Query, head: bool) -> Response<Body> {
    let (tags, link) = page(repo.tags.keys(), q, &format!("/v2/{name}/tags/list"));
    let body =
        serde_json::to_vec(&serde_json::json!({"name": name, "tags": tags})).unwrap_or_default();
    with_link(json(StatusCode::OK, body, head), link)
}

fn catalog(c: &Catalog, q: &Query, head: bool) -> Response<Body> {
    let (repos, link) = page(c.repos.keys(), q, "/v2/_catalog");
    let body = serde_json::to_vec(&serde_json::json!({"repositories": repos})).unwrap_or_default();
    with_link(json(StatusCode::OK, body, head), link)
}

fn with_link(mut r: Response<Body>, link: Option<String>) -> Response<Body> {
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LINK, l);
    }
    r
}

fn manifest(
    state: &State,
    repo: &Repo,
    name: &str,
    reference: &str,
    req: &Request<Incoming>,
    head: bool,
) -> Response<Body> {
    let by_tag = !reference.contains(':');
    let digest = if by_tag {
        match repo.tags.get(reference) {
            Some(d) => d.clone(),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    &format!("{name}:{reference} is not in the bundles"),
                )
            }
        }
    } else {
        match reference.parse::<Digest>() {
            Ok(d) => d,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    &format!("{reference:?} is neither a tag nor a sha256 digest"),
                )
            }
        }
    };
    let doc = match state.catalog.manifests.get(&digest) {
        Some(doc) if repo.manifests.contains(&digest) => doc,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                &format!("{name}@{digest} is not in the bundles"),
            )
        }
    };
    let accept = super::negotiate::accepted(req.headers());
    let doc =
        match super::negotiate::choose(&state.catalog, repo, doc, by_tag, &accept, &state.platform)
        {
            Ok(d) => d,
            Err(msg) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    &format!("{name}:{reference}: {msg}"),
                )
            }
        };
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, doc.media_type.as_str())
        .header(header::CONTENT_LENGTH, doc.bytes.len())
        .header("Docker-Content-Digest", doc.digest.to_string())
        .header(header::ETAG, format!("\"{}\"", doc.digest));
    r = r.header("Docker-Distribution-API-Version", "registry/2.0");
    let body = if head {
        empty()
    } else {
        full(doc.bytes.clone())
    };
    r.body(body)
        .unwrap_or_else(|_| internal("building a response"))
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=]`: an OCI index of
/// what refers to the digest (empty when nothing does), as OCI 1.1 says.
fn referrers(
    state: &State,
    name: &str,
    digest: &str,
    query: Option<&str>,
    head: bool,
) -> Response<Body> {
    let Ok(digest) = digest.parse::<Digest>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            &format!("{digest:?} is not a sha256 digest"),
        );
    };
    let artifact_type = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "artifactType")
        .map(|(_, v)| v.into_owned());
    let body = state
        .catalog
        .referrers
        .index(name, &digest, artifact_type.as_deref());
    let mut r = json(StatusCode::OK, body, head);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::oci::media::OCI_INDEX),
    );
    if artifact_type.is_some() {
        r.headers_mut().insert(
            "OCI-Filters-Applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    r
}

async fn blob(
    state: &State,
    repo: &Repo,
    digest: &str,
    req: &Request<Incoming>,
    head: bool,
) -> Response<Body> {
    let Ok(d) = digest.parse::<Digest>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            &format!("{digest:?} is not a sha256 digest"),
        );
    };
    // Manifests are blobs too (some clients fetch them here).
    if repo.manifests.contains(&d) {
        if let Some(doc) = state.catalog.manifests.get(&d) {
            return blob_headers(StatusCode::OK, &d, doc.bytes.len() as u64, None)
                .body(if head {
                    empty()
                } else {
                    full(doc.bytes.clone())
                })
                .unwrap_or_else(|_| internal("building a response"));
        }
    }
    let loc = match state.catalog.blobs.get(&d) {
        Some(loc) if repo.blobs.contains(&d) => *loc,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                &format!("blob {d} is not in the bundles"),
            )
        }
    };
    let source = &state.catalog.sources[loc.source];
    if let Some(Err(msg)) = state.verifier.known(&d, &source.file) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "BLOB_UNKNOWN", &msg);
    }
    let size = loc.extent.size;
    let range = blobs::parse_range(
        req.headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok()),
        size,
    );
    if head {
        return blob_headers(StatusCode::OK, &d, size, None)
            .body(empty())
            .unwrap_or_else(|_| internal("building a response"));
    }
    let (start, end) = match range {
        RangeAsk::Unsatisfiable => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .body(empty())
                .unwrap_or_else(|_| internal("building a response"))
        }
        RangeAsk::Whole => (0, size.saturating_sub(1)),
        RangeAsk::Part(a, b) => (a, b),
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let check = match range {
        RangeAsk::Whole => state.verifier.stream_check(&d, size, &source.file),
        _ => None,
    };
    if check.is_none() {
        if let Err(msg) = state
            .verifier
            .ensure(&d, source.file.clone(), loc, &source.label)
            .await
        {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "BLOB_UNKNOWN", &msg);
        }
    }
    let content_range =
        matches!(range, RangeAsk::Part(..)).then(|| format!("bytes {start}-{end}/{size}"));
    let status = if content_range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let body = blobs::stream(
        source.file.clone(),
        loc.extent.offset + start,
        len,
        check.map(|cell| (d.clone(), cell, source.label.clone())),
    );
    blob_headers(status, &d, len, content_range)
        .body(body)
        .unwrap_or_else(|_| internal("building a response"))
}

fn blob_headers(
    status: StatusCode,
    d: &Digest,
    len: u64,
    range: Option<String>,
) -> hyper::http::response::Builder {
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("Docker-Content-Digest", d.to_string())
        .header(header::ETAG, format!("\"{d}\""));
    if let Some(r) = range {
        b = b.header(header::CONTENT_RANGE, r);
    }
    b
}

fn chart(charts: &ChartRepo, file: &str, head: bool) -> Response<Body> {
    let (ctype, bytes) = if file == "index.yaml" {
        ("application/x-yaml", Bytes::from(charts.index_yaml.clone()))
    } else if let Some(tgz) = charts.archives.get(file) {
        ("application/gzip", Bytes::from(tgz.clone()))
    } else {
        return not_found();
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(if head { empty() } else { full(bytes) })
        .unwrap_or_else(|_| internal("building a response"))
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn json(status: StatusCode, body: Vec<u8>, head: bool) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .body(if head { empty() } else { full(body) })
        .unwrap_or_else(|_| internal("building a response"))
}

/// The distribution spec's error body.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::to_vec(&serde_json::json!({
        "errors": [{"code": code, "message": message, "detail": null}]
    }))
    .unwrap_or_default();
    json(status, body, false)
}

fn name_unknown(name: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        &format!("repository {name} is not in the bundles"),
    )
}

fn unauthorized() -> Response<Body> {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"bundler serve\""),
    );
    r
}

fn not_found() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full("404 page not found\n"))
        .unwrap_or_else(|_| internal("building a response"))
}

fn internal(what: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("internal error {what}\n")));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}
