//! `bundler serve` against real clients: curl for the raw distribution API
//! (negotiation, headers, Range, pagination, 405s, the mirror form),
//! skopeo (inspect, copy out to a real docker-registry), helm (repo add,
//! pull, template, original and relocated charts), TLS with a CA,
//! htpasswd auth, damaged blobs, 50 concurrent pulls, a 2 GiB layer in
//! bounded memory, containerd (direct and through a hosts.toml mirror),
//! dockerd and podman.
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::images;
use support::registry::{Mode, Registry};
use support::serve::{curl, fixture, layout_of, pack_archives, Served, OCI_INDEX, OCI_MANIFEST};
use support::{stderr, stdout};

fn sha256(b: &[u8]) -> String {
    images::blob(b.to_vec()).digest
}

#[test]
fn the_distribution_api_answers_as_a_registry_does() {
    let f = fixture();
    let s = Served::start(&[f.bundles.to_str().unwrap()]);
    let base = format!("http://{}", s.addr);
    let (idx, amd, _) = &f.busybox;

    let r = curl(&[], &format!("{base}/v2/"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // The catalog, paginated with a Link to the next page.
    let all = curl(&[], &format!("{base}/v2/_catalog")).json();
    let repos: Vec<&str> = all["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        repos,
        [
            "docker.io/library/alpine",
            "docker.io/library/busybox",
            "reg.example_5000/team/app"
        ]
    );
    let p1 = curl(&[], &format!("{base}/v2/_catalog?n=2"));
    assert_eq!(p1.json()["repositories"].as_array().unwrap().len(), 2);
    let link = p1.header("link").expect("Link header on a partial page");
    assert!(
        link.contains("last=docker.io%2Flibrary%2Fbusybox") && link.contains("rel=\"next\""),
        "{link}"
    );

    // tags/list with n and last.
    let t = curl(
        &[],
        &format!("{base}/v2/docker.io/library/alpine/tags/list?n=2"),
    );
    assert_eq!(t.json()["tags"], serde_json::json!(["3.18", "3.19"]));
    assert!(t.header("link").unwrap().contains("last=3.19"));
    let t2 = curl(
        &[],
        &format!("{base}/v2/docker.io/library/alpine/tags/list?n=2&last=3.19"),
    );
    assert_eq!(t2.json()["tags"], serde_json::json!(["3.20"]));
    assert!(t2.header("link").is_none());

    // Negotiation: the index only to a client that accepts it.
    let url = format!("{base}/v2/docker.io/library/busybox/manifests/1.36");
    let r = curl(
        &["-H", &format!("Accept: {OCI_MANIFEST}, {OCI_INDEX}")],
        &url,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, idx.bytes);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.header("docker-content-digest"), Some(idx.digest.as_str()));
    assert_eq!(
        r.header("content-length"),
        Some(idx.bytes.len().to_string().as_str())
    );
    let r = curl(&["-H", &format!("Accept: {OCI_MANIFEST}")], &url);
    assert_eq!(
        r.body, amd.bytes,
        "a client that does not accept an index gets linux/amd64"
    );
    assert_eq!(r.header("docker-content-digest"), Some(amd.digest.as_str()));
    assert_eq!(sha256(&r.body), amd.digest);
    // By digest: exactly what was named.
    let r = curl(
        &["-H", &format!("Accept: {OCI_MANIFEST}")],
        &format!(
            "{base}/v2/docker.io/library/busybox/manifests/{}",
            idx.digest
        ),
    );
    assert_eq!(r.body, idx.bytes);
    // HEAD: the headers, no body.
    let r = curl(&["-I", "-H", &format!("Accept: {OCI_INDEX}")], &url);
    // (curl -I writes the headers where the body would go.)
    assert_eq!(r.status, 200);
    assert!(!String::from_utf8_lossy(&r.body).contains("schemaVersion"));
    assert_eq!(r.header("docker-content-digest"), Some(idx.digest.as_str()));
    assert_eq!(
        r.header("content-length"),
        Some(idx.bytes.len().to_string().as_str())
    );
    // containerd's mirror form.
    let r = curl(
        &["-H", &format!("Accept: {OCI_INDEX}")],
        &format!("{base}/v2/library/busybox/manifests/1.36?ns=docker.io"),
    );
    assert_eq!((r.status, r.body.clone()), (200, idx.bytes.clone()));
    let r = curl(
        &[],
        &format!("{base}/v2/team/app/tags/list?ns=reg.example:5000"),
    );
    assert_eq!(r.json()["tags"], serde_json::json!(["1"]));

    // Blobs, whole and by Range.
    let blob_url = format!(
        "{base}/v2/docker.io/library/busybox/blobs/{}",
        f.amd_layer.digest
    );
    let r = curl(&[], &blob_url);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, f.amd_layer.bytes);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(f.amd_layer.digest.as_str())
    );
    let r = curl(&["-H", "Range: bytes=100-1099"], &blob_url);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &f.amd_layer.bytes[100..1100]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-1099/{}", f.amd_layer.bytes.len()).as_str())
    );
    let r = curl(&["-H", "Range: bytes=-10"], &blob_url);
    assert_eq!(r.body, &f.amd_layer.bytes[f.amd_layer.bytes.len() - 10..]);
    let r = curl(
        &["-H", &format!("Range: bytes={}-", f.amd_layer.bytes.len())],
        &blob_url,
    );
    assert_eq!(r.status, 416);
    // A blob of another repository is not served here.
    let r = curl(
        &[],
        &format!(
            "{base}/v2/docker.io/library/alpine/blobs/{}",
            f.amd_layer.digest
        ),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["errors"][0]["code"], "BLOB_UNKNOWN");

    // Unknown names and tags.
    let r = curl(
        &[],
        &format!("{base}/v2/docker.io/library/busybox/manifests/9.9"),
    );
    assert_eq!(
        (r.status, r.json()["errors"][0]["code"].as_str()),
        (404, Some("MANIFEST_UNKNOWN"))
    );
    let r = curl(&[], &format!("{base}/v2/nope/manifests/1"));
    assert_eq!(
        (r.status, r.json()["errors"][0]["code"].as_str()),
        (404, Some("NAME_UNKNOWN"))
    );

    // Every write method: 405 with UNSUPPORTED.
    for (method, path) in [
        ("PUT", "/v2/docker.io/library/busybox/manifests/1.36"),
        ("DELETE", "/v2/docker.io/library/busybox/manifests/1.36"),
        ("POST", "/v2/docker.io/library/busybox/blobs/uploads/"),
        ("PATCH", "/v2/docker.io/library/busybox/blobs/uploads/x"),
        ("PUT", "/charts/index.yaml"),
    ] {
        let r = curl(
            &["-X", method, "--data-binary", "x"],
            &format!("{base}{path}"),
        );
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(
            r.json()["errors"][0]["code"],
            "UNSUPPORTED",
            "{method} {path}"
        );
    }

    // JSON access log lines.
    let log = s.log();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["method"] == "PATCH")
        .unwrap_or_else(|| panic!("no JSON log line for the PATCH: {log}"));
    assert_eq!(line["status"], 405);
    assert!(line["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    // The start line lists what is served.
    let names: Vec<&str> = s.start["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"docker.io/library/busybox:1.36"),
        "{names:?}"
    );
}

#[test]
fn skopeo_inspects_and_copies_out_to_a_registry_with_equal_digests() {
    let f = fixture();
    let s = Served::start(&[f.bundles.to_str().unwrap()]);
    let (idx, amd, arm) = &f.busybox;
    let src = format!("docker://{}/docker.io/library/busybox:1.36", s.addr);
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw", &src])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, idx.bytes);
    let o = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            &src,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Digest"], idx.digest.as_str());
    assert_eq!(v["Architecture"], "arm64");

    let reg = Registry::start(Mode::Plain);
    let o = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &src,
        ])
        .arg(format!("docker://{}/copied/busybox:1.36", reg.host()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let got = reg
        .raw_manifest("copied/busybox:1.36")
        .expect("copied index");
    assert_eq!(sha256(&got), idx.digest);
    for m in [amd, arm] {
        let got = reg
            .raw_manifest(&format!("copied/busybox@{}", m.digest))
            .expect("copied platform manifest");
        assert_eq!(sha256(&got), m.digest);
    }
}

fn write_chart(dir: &Path, source: &str) -> PathBuf {
    let c = dir.join("web");
    std::fs::create_dir_all(c.join("templates")).unwrap();
    std::fs::write(
        c.join("Chart.yaml"),
        "apiVersion: v2\nname: web\nversion: 1.2.3\n",
    )
    .unwrap();
    std::fs::write(
        c.join("values.yaml"),
        format!("image:\n  registry: {source}\n  repository: shop/web\n  tag: \"1.0\"\n"),
    )
    .unwrap();
    std::fs::write(
        c.join("templates/deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: {{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}\n",
    )
    .unwrap();
    c
}

fn rendered_image(manifests: &str) -> String {
    manifests
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: "))
        .unwrap_or_else(|| panic!("no image in {manifests}"))
        .trim_matches('"')
        .to_string()
}

/// helm repo add + pull + template against serve's /charts/.
fn helm_template(helm: &Path, repo_url: &str, extra: &[&str]) -> String {
    let home = tempfile::tempdir().unwrap();
    let h = |args: &[&str]| {
        let o = Command::new(helm)
            .args(args)
            .args(extra)
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_DATA_HOME", home.path().join("data"))
            .current_dir(home.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "helm {args:?}: {}", stderr(&o));
        stdout(&o)
    };
    h(&["repo", "add", "site", repo_url]);
    h(&["pull", "site/web", "--version", "1.2.3"]);
    assert!(home.path().join("web-1.2.3.tgz").exists());
    let out = Command::new(helm)
        .args(["template", "web", "web-1.2.3.tgz"])
        .current_dir(home.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn helm_pulls_original_and_relocated_charts_whose_images_pull_from_serve() {
    let src = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let digest = images::push_simple(&src, w, "shop/web:1.0", &[b"web layer"]);
    let chart = write_chart(w, &src.host());
    let manifest = w.join("web.yaml");
    std::fs::write(
        &manifest,
        format!("apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: web, version: 1.2.3}}\nspec:\n  charts:\n    - name: web\n      version: 1.2.3\n      path: {}\n", chart.display()),
    )
    .unwrap();
    let out = w.join("out");
    let o = support::bundler(
        w,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--insecure",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let src_host = src.host();
    drop(src); // from here on, only serve has the image

    // Default: the original chart; its image is served under its origin.
    let s = Served::start(&[out.to_str().unwrap()]);
    for helm in [support::helm(), PathBuf::from("helm3")] {
        let text = helm_template(&helm, &format!("http://{}/charts", s.addr), &[]);
        assert_eq!(rendered_image(&text), format!("{src_host}/shop/web:1.0"));
    }
    drop(s);

    // --config: named by the rewrite rules, the chart relocated to them.
    let port = support::registry::free_port();
    let serve_host = format!("127.0.0.1:{port}");
    let cfg = w.join("load-image.yaml");
    std::fs::write(
        &cfg,
        format!("source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {serve_host}\n  repo:\n    kind: LOCAL\n    path: ./unused\n", out.display()),
    )
    .unwrap();
    let s2 = Served::start(&[
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        &serve_host,
    ]);
    let text = helm_template(
        &support::helm(),
        &format!("http://{serve_host}/charts"),
        &[],
    );
    let image = rendered_image(&text);
    assert_eq!(
        image,
        format!("{serve_host}/{}/shop/web:1.0", src_host.replace(':', "_"))
    );
    // The relocated chart's image pulls from serve unchanged.
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha256(&o.stdout), digest);
    // containerd's mirror form for the rules' registry finds the same image.
    let (host, rest) = image.split_once('/').unwrap();
    let (repo, tag) = rest.rsplit_once(':').unwrap();
    let r = curl(
        &["-H", &format!("Accept: {OCI_MANIFEST}")],
        &format!("http://{serve_host}/v2/{repo}/manifests/{tag}?ns={host}"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(sha256(&r.body), digest);
    assert!(s2.start["images"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with(&src_host.replace(':', "_")));
}

#[test]
fn tls_with_a_ca_and_htpasswd_auth() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = support::registry::make_certs(dir.path());
    let password = "serve-S3cret-pw";
    let o = Command::new("htpasswd")
        .args(["-Bbn", "alice", password])
        .output()
        .unwrap();
    assert!(o.status.success());
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, &o.stdout).unwrap();
    let s = Served::start(&[
        f.bundles.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--htpasswd",
        htpasswd.to_str().unwrap(),
    ]);
    assert!(s.start["url"].as_str().unwrap().starts_with("https://"));
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let src = format!("docker://{}/docker.io/library/alpine:3.20", s.addr);
    let inspect = |creds: Option<&str>| {
        let mut c = Command::new("skopeo");
        c.args(["inspect", "--raw", "--cert-dir", certs.to_str().unwrap()]);
        if let Some(cr) = creds {
            c.args(["--creds", cr]);
        }
        c.arg(&src).output().unwrap()
    };
    let o = inspect(Some(&format!("alice:{password}")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha256(&o.stdout), f.alpine.digest);
    let o = inspect(Some("alice:wrong"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).to_lowercase().contains("unauthorized") || stderr(&o).contains("401"),
        "{}",
        stderr(&o)
    );
    let o = inspect(None);
    assert!(!o.status.success());
    // Without the CA the certificate is not trusted.
    let o = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--creds",
            &format!("alice:{password}"),
            &src,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("certificate"), "{}", stderr(&o));
    // Raw: 401 with a Basic challenge; helm with the CA and credentials.
    let r = curl(
        &["--cacert", ca.to_str().unwrap()],
        &format!("https://{}/v2/", s.addr),
    );
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic "));
    assert_eq!(r.json()["errors"][0]["code"], "UNAUTHORIZED");
    let r = curl(
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "-u",
            &format!("alice:{password}"),
        ],
        &format!("https://{}/charts/index.yaml", s.addr),
    );
    assert_eq!(r.status, 200);
    let log = s.log();
    assert!(log.contains("\"user\":\"alice\""), "{log}");
    assert!(!log.contains(password));
}

/// Flip one byte of `blob` where it sits in `file`.
fn damage(file: &Path, blob: &[u8]) {
    let mut bytes = std::fs::read(file).unwrap();
    let probe = &blob[blob.len() / 2..blob.len() / 2 + 64];
    let at = bytes
        .windows(64)
        .position(|w| w == probe)
        .expect("blob bytes in the bundle");
    bytes[at] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_damaged_blob_is_never_served() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let small = images::layer("small", &images::pseudo_random(21, 100_000));
    // Larger than what is hashed before the first byte: hashed while streaming.
    let big = images::layer("big", &images::pseudo_random(22, 20 << 20));
    let (m, blobs) = images::image(&images::AMD64, &[small, big]);
    let layout = layout_of(
        w,
        "img",
        "docker.io/library/dmg:1",
        &m,
        OCI_MANIFEST,
        &blobs.iter().collect::<Vec<_>>(),
    );
    let out = w.join("out");
    pack_archives(w, &[layout], &out);
    // The bundle (not the offline package beside it, which serve refuses
    // whole when a member changed).
    let bundle = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".bundle.tar"))
        .unwrap();
    let (small, big) = (&blobs[1], &blobs[2]);
    damage(&bundle, &small.bytes);
    damage(&bundle, &big.bytes);

    // --verify refuses to start, naming the blob.
    let e = Served::try_start(&[bundle.to_str().unwrap(), "--verify"])
        .err()
        .expect("--verify must refuse a damaged bundle");
    assert!(e.contains(&small.digest) || e.contains(&big.digest), "{e}");

    let s = Served::start(&[bundle.to_str().unwrap()]);
    let base = format!("http://{}/v2/docker.io/library/dmg/blobs", s.addr);
    let r = curl(&[], &format!("{base}/{}", small.digest));
    assert_eq!(r.status, 500);
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains(&small.digest));
    // The big one: the transfer is cut before its end, then refused.
    let r = curl(&[], &format!("{base}/{}", big.digest));
    assert!(
        r.body.len() < big.bytes.len(),
        "a damaged blob was sent whole"
    );
    let r = curl(&[], &format!("{base}/{}", big.digest));
    assert_eq!(r.status, 500);
    let r = curl(
        &["-H", "Range: bytes=0-9"],
        &format!("{base}/{}", big.digest),
    );
    assert_eq!(r.status, 500);
    assert!(
        s.log().contains(&format!("blob {} in", big.digest)),
        "{}",
        s.log()
    );
    let dest = tempfile::tempdir().unwrap();
    let o = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/docker.io/library/dmg:1", s.addr))
        .arg(format!("dir:{}", dest.path().join("x").display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn fifty_concurrent_pulls() {
    let f = fixture();
    let s = Served::start(&[f.bundles.to_str().unwrap()]);
    let dest = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let src = format!("docker://{}/docker.io/library/busybox:1.36", s.addr);
            let d = dest.path().join(format!("p{i}"));
            std::thread::spawn(move || {
                let o = Command::new("skopeo")
                    .args(["copy", "--src-tls-verify=false", &src])
                    .arg(format!("dir:{}", d.display()))
                    .output()
                    .unwrap();
                assert!(o.status.success(), "pull {i}: {}", stderr(&o));
                std::fs::read(d.join("manifest.json")).unwrap()
            })
        })
        .collect();
    for h in handles {
        let m = h.join().unwrap();
        assert_eq!(sha256(&m), f.busybox.1.digest);
    }
    eprintln!(
        "50 concurrent pulls: {:.1}s, serve peak RSS {} KiB",
        started.elapsed().as_secs_f64(),
        s.peak_rss_kib()
    );
}

/// Bytes available to an unprivileged writer on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return u64::MAX;
    }
    st.f_bavail as u64 * st.f_frsize as u64
}

#[test]
fn a_2_gib_layer_is_served_with_bounded_memory() {
    if std::env::var_os("BUNDLER_TEST_SKIP_BIG").is_some() {
        eprintln!("skipped: BUNDLER_TEST_SKIP_BIG is set");
        return;
    }
    // The layer exists twice at once (the OCI layout, then the bundle).
    let free = free_bytes(Path::new(env!("CARGO_TARGET_TMPDIR")));
    if free < 6 << 30 {
        eprintln!(
            "skipped: {} MiB free under {}, the 2 GiB case needs 6 GiB",
            free >> 20,
            env!("CARGO_TARGET_TMPDIR")
        );
        return;
    }
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let w = work.path();
    let gen = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/gen_images.py");
    let o = Command::new("python3")
        .arg(gen)
        .arg(w.join("data"))
        .args([
            "--images",
            "1",
            "--shared-mib",
            "0",
            "--unique-mib",
            "2048",
            "--ref-prefix",
            "docker.io/big",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("data/images.json")).unwrap()).unwrap();
    let layer = info["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|b| b["size"].as_u64().unwrap())
        .unwrap();
    let (digest, size) = (
        layer["digest"].as_str().unwrap(),
        layer["size"].as_u64().unwrap(),
    );
    assert!(size >= 2 << 30);
    let out = w.join("out");
    pack_archives(w, &[w.join("data/img0")], &out);
    std::fs::remove_dir_all(w.join("data")).unwrap();
    let s = Served::start(&[out.to_str().unwrap()]);
    let repo = info["images"][0]["ref"]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    let started = std::time::Instant::now();
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "curl -sf http://{}/v2/{repo}/blobs/{digest} | sha256sum",
            s.addr
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        format!("sha256:{}", stdout(&o).split_whitespace().next().unwrap()),
        digest
    );
    let rss = s.peak_rss_kib();
    eprintln!(
        "2 GiB layer: {size} bytes in {secs:.1}s ({:.0} MiB/s, hashed while streaming), serve peak RSS {rss} KiB",
        size as f64 / secs / 1048576.0
    );
    assert!(
        rss < 64 * 1024,
        "serve peak RSS {rss} KiB for a 2 GiB layer"
    );
}

#[test]
fn podman_pulls_from_serve() {
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("skipped: podman is not installed");
        return;
    }
    let f = fixture();
    let s = Served::start(&[f.bundles.to_str().unwrap()]);
    let root = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| {
        Command::new("podman")
            .arg("--root")
            .arg(root.path().join("root"))
            .arg("--runroot")
            .arg(root.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .unwrap()
    };
    let image = format!("{}/docker.io/library/busybox:1.36", s.addr);
    let o = podman(&["pull", "--tls-verify=false", &image]);
    if !o.status.success() && stderr(&o).contains("cannot") && !stderr(&o).contains(&s.addr) {
        eprintln!("skipped: podman cannot run here: {}", stderr(&o));
        return;
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let o = podman(&["image", "inspect", "--format", "{{.Digest}}", &image]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), f.busybox.0.digest);
    let _ = podman(&["system", "reset", "--force"]);
}

#[test]
fn containerd_pulls_directly_and_through_a_hosts_toml_mirror() {
    let d = match support::runtimes::start_containerd() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: containerd cannot start here: {e}");
            return;
        }
    };
    let f = fixture();
    let s = Served::start(&[f.bundles.to_str().unwrap()]);
    let ctr = |args: &[&str]| {
        Command::new("ctr")
            .arg("--address")
            .arg(&d.socket)
            .args(["--namespace", "serve-test"])
            .args(args)
            .output()
            .unwrap()
    };
    let direct = format!("{}/docker.io/library/busybox:1.36", s.addr);
    let o = ctr(&["image", "pull", "--plain-http", &direct]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), d.log());
    let o = ctr(&["image", "ls"]);
    let ls = stdout(&o);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&direct) && l.contains(&f.busybox.0.digest)),
        "{ls}"
    );

    // The upstream name, through a hosts.toml that mirrors docker.io to serve.
    let hosts = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hosts.path().join("docker.io")).unwrap();
    std::fs::write(
        hosts.path().join("docker.io/hosts.toml"),
        format!("server = \"https://registry-1.docker.io\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", s.addr),
    )
    .unwrap();
    let o = ctr(&[
        "image",
        "pull",
        "--hosts-dir",
        hosts.path().to_str().unwrap(),
        "docker.io/library/alpine:3.20",
    ]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), s.log());
    let ls = stdout(&ctr(&["image", "ls"]));
    assert!(ls.lines().any(|l| l.starts_with("docker.io/library/alpine:3.20") && l.contains(&f.alpine.digest)), "{ls}");
    assert!(
        s.log()
            .contains("/v2/library/alpine/manifests/3.20?ns=docker.io"),
        "{}",
        s.log()
    );
    for img in [direct.as_str(), "docker.io/library/alpine:3.20"] {
        let _ = ctr(&["image", "rm", img]);
    }
}

#[test]
fn docker_pulls_from_serve() {
    let f = fixture();
    let s = Served::start(&[f.bundles.to_str().unwrap()]);
    let d = match support::runtimes::start_dockerd(&[&s.addr]) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: dockerd cannot start here: {e}");
            return;
        }
    };
    let docker = |args: &[&str]| {
        Command::new("docker")
            .arg("--host")
            .arg(format!("unix://{}", d.socket.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let image = format!("{}/docker.io/library/busybox:1.36", s.addr);
    let o = docker(&["pull", &image]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), d.log());
    let o = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoDigests}}",
        &image,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&f.busybox.0.digest), "{}", stdout(&o));
    let _ = docker(&["image", "rm", &image]);
}

#[test]
fn bad_input_is_a_clear_error_with_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let o = support::bundler(d, &[&["serve"], args].concat());
        (o.status.code(), stderr(&o))
    };
    let (code, err) = run(&["no-such-dir"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no-such-dir"), "{err}");
    let not_bundle = d.join("x.bundle.tar");
    std::fs::write(&not_bundle, b"not a tar").unwrap();
    let (code, err) = run(&[not_bundle.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("x.bundle.tar"), "{err}");
    let f = fixture();
    let ht = d.join("htpasswd");
    std::fs::write(&ht, "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
    let (code, err) = run(&[
        f.bundles.to_str().unwrap(),
        "--htpasswd",
        ht.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("line 1") && err.contains("bcrypt"), "{err}");
    let (code, err) = run(&[
        f.bundles.to_str().unwrap(),
        "--tls-cert",
        ht.to_str().unwrap(),
        "--tls-key",
        ht.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
    let (code, err) = run(&[f.bundles.to_str().unwrap(), "--listen", "nowhere"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--listen"), "{err}");
}
