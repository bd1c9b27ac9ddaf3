//! Daily use, round 2 (issue 22): what a platform engineer reads when
//! something goes wrong. Every failure names its image, an unreachable
//! registry says what to check, a truncated copy says "copy it again" with
//! the size the complete file has, a missing chart path is bad input (exit
//! 2) named as it resolved, a mistyped config key gets the key it meant,
//! piped logs carry no colour codes, and `verify` names the image a
//! damaged blob belongs to. Real registries (`docker-registry`, one of them
//! read-only), the example product packed offline.
mod support;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use support::{bundler, stderr, stdout};

struct Packed {
    _work: tempfile::TempDir,
    dir: PathBuf,
    out: PathBuf,
}

fn pack_example() -> Packed {
    let work = tempfile::tempdir().unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-manifests/example.yaml");
    let out = work.path().join("out");
    let o = bundler(
        work.path(),
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "pack: {}", stderr(&o));
    Packed {
        dir: work.path().to_path_buf(),
        out,
        _work: work,
    }
}

/// A real docker-registry in read-only maintenance mode: reads answer,
/// every push is refused (405), as a registry under maintenance does.
struct ReadOnlyRegistry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ReadOnlyRegistry {
    fn start() -> ReadOnlyRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = support::registry::free_port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    readonly:\n      enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: s\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        ReadOnlyRegistry {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for ReadOnlyRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config syncing only the image-only bundle (one image) to `registry`.
fn one_image_config(p: &Packed, registry: &str) -> PathBuf {
    let src = p.dir.join("one-image");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        p.out.join("demo-images_1.0.0.bundle.tar"),
        src.join("demo-images_1.0.0.bundle.tar"),
    )
    .unwrap();
    let config = p
        .dir
        .join(format!("to-{}.yaml", registry.replace(':', "_")));
    std::fs::write(
        &config,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {registry}\n",
            src.display()
        ),
    )
    .unwrap();
    config
}

fn sync(p: &Packed, config: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(support::bundler_bin());
    cmd.current_dir(&p.dir)
        .args(["sync", "--config", config.to_str().unwrap()])
        .args(extra);
    for v in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(v);
    }
    cmd.env_remove("BUNDLER_LOG");
    cmd.output().unwrap()
}

#[test]
fn a_single_failed_image_is_named_and_a_down_registry_says_what_to_check() {
    let p = pack_example();
    let image = "demo-sidecar";

    // Nothing listens: the one image is named, and what to check is said.
    let closed = format!("127.0.0.1:{}", support::registry::free_port());
    let config = one_image_config(&p, &closed);
    let o = sync(&p, &config, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(!err.contains("<image>"), "{err}");
    assert!(
        err.contains(&format!("{closed}/docker.io/library/{image}:1.0")),
        "the image is named: {err}"
    );
    assert!(
        err.contains(&format!("check: that a registry listens at {closed}")),
        "{err}"
    );
    assert!(err.contains("plain HTTP needs `--insecure`"), "{err}");
    assert!(err.contains("no proxy variable"), "{err}");
    // With a proxy variable set, that it is set (never its value).
    let mut cmd = Command::new(support::bundler_bin());
    cmd.current_dir(&p.dir)
        .args(["sync", "--insecure", "--config", config.to_str().unwrap()])
        .env("HTTPS_PROXY", "http://user:proxy-secret@127.0.0.1:9")
        .env("NO_PROXY", "example.com");
    let o = cmd.output().unwrap();
    let err = stderr(&o);
    assert!(err.contains("HTTPS_PROXY is set"), "{err}");
    assert!(!err.contains("proxy-secret"), "{err}");

    // A registry that refuses pushes: the blob failure names the image.
    let ro = ReadOnlyRegistry::start();
    let host = format!("127.0.0.1:{}", ro.port);
    let config = one_image_config(&p, &host);
    let o = sync(&p, &config, &["--insecure", "-v"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("no manifest or tag was written"), "{err}");
    assert!(!err.contains("<image>"), "{err}");
    assert!(
        err.contains(&format!("to {host}/docker.io/library/{image}")),
        "{err}"
    );
    // Piped (not a terminal): the -v log lines are plain text.
    assert!(err.contains("WARN"), "a warning was logged: {err}");
    assert!(!err.contains('\u{1b}'), "no ANSI escape codes: {err:?}");
}

#[test]
fn incomplete_copies_missing_paths_typos_and_damaged_blobs_are_explained() {
    let p = pack_example();

    // A bundle cut short: "copy it again", with the complete size.
    let whole = p.out.join("demo_1.0.0.bundle.tar");
    let size = std::fs::metadata(&whole).unwrap().len();
    let cut = p.dir.join("cut.bundle.tar");
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 9000]).unwrap();
    for verb in ["verify", "inspect"] {
        let o = bundler(&p.dir, &[verb, cut.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{verb}");
        let err = stderr(&o);
        assert!(err.contains("the file is incomplete"), "{verb}: {err}");
        assert!(err.contains("copy it again"), "{verb}: {err}");
        assert!(
            err.contains(&format!("the complete file is at least {size} bytes")),
            "{verb}: {err}"
        );
        assert!(!err.contains("hostile"), "{verb}: {err}");
    }
    // The same inside the offline package.
    let pkg = p.out.join("demo_1.0.0_amd64.tar");
    let pkg_bytes = std::fs::read(&pkg).unwrap();
    let cut_pkg = p.dir.join("cut-package.tar");
    std::fs::write(&cut_pkg, &pkg_bytes[..pkg_bytes.len() - 20000]).unwrap();
    let o = bundler(&p.dir, &["verify", cut_pkg.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("copy it again"), "{}", stderr(&o));

    // A chart path that does not exist: bad input (exit 2), resolved path.
    let products = p.dir.join("products");
    std::fs::create_dir_all(&products).unwrap();
    let manifest = products.join("shop.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {name: shop, version: 1.0.0}\nspec:\n  charts:\n    - name: shop\n      version: 1.0.0\n      path: ../charts/./shop\n",
    )
    .unwrap();
    let o = bundler(&p.dir, &["pack", manifest.to_str().unwrap(), "-o", "o"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    let resolved = p.dir.join("charts/shop");
    assert!(
        err.contains(&format!("path {} does not exist", resolved.display())),
        "{err}"
    );

    // The same for an archive and a hints file.
    std::fs::write(
        &manifest,
        "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {name: shop, version: 1.0.0}\nspec:\n  images:\n    - archive: ../images/./gone.tar\n",
    )
    .unwrap();
    let o = bundler(&p.dir, &["pack", manifest.to_str().unwrap(), "-o", "o"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "image archive {} does not exist",
            p.dir.join("images/gone.tar").display()
        )),
        "{}",
        stderr(&o)
    );

    // A mistyped key: the key it meant, and no pointer into the test tree.
    let typo = p.dir.join("typo.yaml");
    std::fs::write(
        &typo,
        "source:\n  intermediateBundlesPath: out\ntarget:\n  containerPrefixRegistery: 10.0.0.5\n",
    )
    .unwrap();
    let o = bundler(&p.dir, &["sync", "--config", typo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("typo.yaml:4:3") && err.contains("did you mean `containerPrefixRegistry`?"),
        "{err}"
    );
    assert!(!err.contains("tests/fixtures"), "{err}");
    assert!(!err.contains("container_prefix_registry"), "{err}");

    // A damaged layer: verify names the image it belongs to.
    let reader = bundler::bundle::reader::BundleReader::open(&whole).unwrap();
    let web = reader
        .images
        .iter()
        .find(|i| i.reference.to_string().contains("demo/web"))
        .expect("the web image");
    let layer = web
        .blobs
        .iter()
        .find(|b| b.media_type.contains("layer"))
        .unwrap()
        .digest
        .clone();
    let ext = reader.blob(&layer).unwrap();
    let web_ref = web.reference.to_string();
    drop(reader);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&whole)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, ext.offset).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], ext.offset).unwrap();
    let o = bundler(&p.dir, &["verify", whole.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("blob {layer} is corrupted"))
            && err.contains(&format!("layer of {web_ref}")),
        "{err}"
    );
}

/// skopeo inspect of `reference` in `reg` with its test credentials: is it there?
fn present(reg: &support::registry::Registry, reference: &str) -> bool {
    Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(
            reg.skopeo_flags(false)
                .iter()
                .map(|f| f.replace("--src-", "--")),
        )
        .arg(format!("docker://{}/{reference}", reg.host()))
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn chart_and_image_credentials_each_serve_their_own_purpose() {
    use support::registry::{Mode, Registry, PASSWORD, USER};
    let p = pack_example();
    let reg = Registry::start(Mode::BasicAuth);
    let host = reg.host();
    let config_with = |repo_password: &str, name: &str| {
        let config = p.dir.join(name);
        std::fs::write(
            &config,
            format!(
                "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {host}\n  repo:\n    kind: OCI\n    url: oci://{host}/charts\n    auth:\n      username: \"{USER}\"\n      password: \"{repo_password}\"\n  containers:\n    auth:\n      username: \"{USER}\"\n      password: \"{PASSWORD}\"\n",
                p.out.display()
            ),
        )
        .unwrap();
        config
    };

    // A wrong chart-repo password on the image registry's own host: the
    // images go up with theirs, the chart push fails and says which key.
    let wrong = config_with("not-the-password", "wrong-repo.yaml");
    let o = sync(&p, &wrong, &["--insecure"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("target.repo.auth"), "{err}");
    assert!(err.contains(&format!("user \"{USER}\"")), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(present(&reg, "docker.io/library/demo-sidecar:1.0"));
    assert!(
        !present(&reg, "charts/demo:1.0.0"),
        "no chart was published with the image credentials"
    );

    // The right one: published.
    let right = config_with(PASSWORD, "right-repo.yaml");
    let o = sync(&p, &right, &["--insecure"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(present(&reg, "charts/demo:1.0.0"));
}

/// The example product copied into `dir` (chart, archives, manifest,
/// hints), so a test can change any of it.
fn copy_example(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.join("bundle-manifests")).unwrap();
    for sub in ["examples", "bundle-manifests/hints"] {
        let o = Command::new("cp")
            .args(["-r", root.join(sub).to_str().unwrap()])
            .arg(dir.join(sub).parent().unwrap())
            .output()
            .unwrap();
        assert!(o.status.success());
    }
    std::fs::create_dir_all(dir.join("bundle-manifests")).unwrap();
    let manifest = dir.join("bundle-manifests/example.yaml");
    std::fs::copy(root.join("bundle-manifests/example.yaml"), &manifest).unwrap();
    manifest
}

/// An OCI layout dir at `dir` holding one small image named `ref_name`.
fn layout_named(dir: &Path, ref_name: &str, content: &[u8]) {
    use support::images::{image, layer, write_layout, AMD64, OCI_MANIFEST};
    let (m, blobs) = image(&AMD64, &[layer("f", content)]);
    write_layout(
        dir,
        &[(ref_name, &m, OCI_MANIFEST)],
        &blobs.iter().collect::<Vec<_>>(),
    );
}

fn add_to_manifest(manifest: &Path, after: &str, line: &str) {
    let text = std::fs::read_to_string(manifest).unwrap();
    assert!(text.contains(after));
    std::fs::write(
        manifest,
        text.replacen(after, &format!("{after}\n{line}"), 1),
    )
    .unwrap();
}

#[test]
fn archive_images_are_matched_by_bare_tag_warned_when_unused_and_serve_pinned_names() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let manifest = copy_example(dir);
    let pack = |out: &str| bundler(dir, &["pack", manifest.to_str().unwrap(), "-o", out]);
    let archives = "        - archive: ../examples/images/demo-sidecar.docker.tar";

    // A bare tag that two chart images carry (web and worker are 1.0.0):
    // refused, saying how the archive is named; nothing fetched, nothing written.
    layout_named(&dir.join("bare-ambiguous"), "1.0.0", b"which one?");
    add_to_manifest(&manifest, archives, "        - archive: ../bare-ambiguous");
    let o = pack("out-a");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("is named only `1.0.0`"), "{err}");
    assert!(
        err.contains("more than one image of chart demo has the tag `1.0.0`"),
        "{err}"
    );
    assert!(err.contains("registry.example.com/demo/web:1.0.0"), "{err}");
    assert!(
        !err.contains("dns error") && !err.contains("library/1.0.0"),
        "{err}"
    );
    assert!(!dir.join("out-a/demo_1.0.0.bundle.tar").exists());
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("        - archive: ../bare-ambiguous\n", ""),
    )
    .unwrap();

    // A bare tag that one chart image has (an `images:` entry): that is its
    // name; packed from the archive (the registry does not resolve here).
    layout_named(&dir.join("bare-extra"), "2.0", b"the extra image");
    add_to_manifest(
        &manifest,
        archives,
        "        - registry.example.com/demo/extra:2.0\n        - archive: ../bare-extra",
    );
    // An old version left in an archive: packed, warned, listed apart.
    layout_named(
        &dir.join("old-web"),
        "registry.example.com/demo/web:0.9.0",
        b"old",
    );
    add_to_manifest(&manifest, archives, "        - archive: ../old-web");
    // A pinned chart image the archive holds under its tag.
    let values = dir.join("examples/charts/demo/values.yaml");
    let v = std::fs::read_to_string(&values).unwrap();
    let pinned = "1.0.0@sha256:df0d6996f2985391146f2b84ce60d3db57b80687c0e62f46ee0aa8fb1b8f1140";
    std::fs::write(
        &values,
        v.replacen("tag: \"1.0.0\"", &format!("tag: \"{pinned}\""), 1),
    )
    .unwrap();

    let o = pack("out");
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("registry.example.com/demo/web:0.9.0 from archive")
            && err.contains("is named by no hint"),
        "{err}"
    );
    assert!(!err.contains("demo/extra:2.0 from archive"), "{err}");
    let bundle = dir.join("out/demo_1.0.0.bundle.tar");
    let o = bundler(dir, &["inspect", "--json", bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let images: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert!(
        images.contains(&"registry.example.com/demo/extra:2.0"),
        "{images:?}"
    );
    assert!(
        images.contains(&"registry.example.com/demo/web:1.0.0"),
        "{images:?}"
    );
    let apart: Vec<&str> = v["notNamedByHints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        apart.contains(&"registry.example.com/demo/web:0.9.0"),
        "{apart:?}"
    );
    assert!(
        !apart.contains(&"registry.example.com/demo/web:1.0.0"),
        "{apart:?}"
    );
    let o = bundler(dir, &["inspect", bundle.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("not named by any hint"),
        "{}",
        stdout(&o)
    );
}

/// podman, as the README's runtime table says: `podman load` keeps every
/// name but rebuilds the manifests (new digests); `podman pull
/// oci-archive:images.tar:REF` keeps the digest of an OCI-typed image, and
/// fails on a docker-typed one (containers/image skips docker-typed
/// `index.json` entries).
#[test]
fn podman_load_keeps_names_and_podman_pull_oci_archive_keeps_digests() {
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("podman is not installed: skipped");
        return;
    }
    let p = pack_example();
    let bundle = p.out.join("demo_1.0.0.bundle.tar");
    let reader = bundler::bundle::reader::BundleReader::open(&bundle).unwrap();
    let ext = reader.entries[bundler::bundle::format::IMAGES_TAR];
    let images_tar = p.dir.join("images.tar");
    let f = std::fs::File::open(&bundle).unwrap();
    let mut buf = vec![0u8; ext.size as usize];
    f.read_exact_at(&mut buf, ext.offset).unwrap();
    std::fs::write(&images_tar, &buf).unwrap();
    let recorded: Vec<(String, String)> = reader
        .images
        .iter()
        .map(|i| (i.reference.to_string(), i.root.digest.to_string()))
        .collect();
    let podman = |store: &str| {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(p.dir.join(store).join("root"))
            .arg("--runroot")
            .arg(p.dir.join(store).join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    };
    let listed = |store: &str| -> Vec<(String, String)> {
        let o = podman(store)
            .args([
                "images",
                "--digests",
                "--format",
                "{{.Repository}}:{{.Tag}} {{.Digest}}",
            ])
            .output()
            .unwrap();
        stdout(&o)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(r, d)| (r.to_string(), d.to_string()))
            .collect()
    };

    let o = podman("load")
        .args(["load", "-i"])
        .arg(&images_tar)
        .output()
        .unwrap();
    if !o.status.success() && stderr(&o).contains("permission") {
        eprintln!("podman cannot run here: skipped ({})", stderr(&o));
        return;
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let loaded = listed("load");
    for (name, digest) in &recorded {
        let got = loaded.iter().find(|(r, _)| r == name);
        let got = got.unwrap_or_else(|| panic!("podman load lost {name}: {loaded:?}"));
        assert_ne!(&got.1, digest, "podman load rebuilds {name}'s manifest");
    }

    let worker = "registry.example.com/demo/worker:1.0.0";
    let o = podman("pull")
        .arg("pull")
        .arg(format!("oci-archive:{}:{worker}", images_tar.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let pulled = listed("pull");
    let want = &recorded.iter().find(|(r, _)| r == worker).unwrap().1;
    assert!(
        pulled.iter().any(|(r, d)| r == worker && d == want),
        "podman pull oci-archive: keeps {worker} at {want}: {pulled:?}"
    );
    // The docker-typed image (from a `docker save` archive) is not found.
    let sidecar = "docker.io/library/demo-sidecar:1.0";
    let o = podman("pull")
        .arg("pull")
        .arg(format!("oci-archive:{}:{sidecar}", images_tar.display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no descriptor found"), "{}", stderr(&o));
}

/// `diff OLD NEW` reports chart changes next to image changes: a new chart
/// version, a chart added, hint templates that came and went.
#[test]
fn diff_reports_chart_versions_added_charts_and_hint_changes() {
    let old = pack_example();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let manifest = copy_example(dir);
    // demo 1.1.0, one hint fewer (the sidecar's) and one rewritten.
    let chart_yaml = dir.join("examples/charts/demo/Chart.yaml");
    let c = std::fs::read_to_string(&chart_yaml).unwrap();
    std::fs::write(&chart_yaml, c.replace("version: 1.0.0", "version: 1.1.0")).unwrap();
    let m = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        m.replacen("      version: 1.0.0", "      version: 1.1.0", 1),
    )
    .unwrap();
    let hints = dir.join("bundle-manifests/hints/demo.yaml");
    std::fs::write(
        &hints,
        "- \"{{ .web.image.registry }}/{{ .web.image.repository }}:{{ .web.image.tag }}\"\n- \"{{ .worker.image.registry }}/{{ .worker.image.repository }}:{{ .worker.image.tag }}\"\n- \"{{ .sidecar.image }}\"\n- \"{{ .worker.image.registry }}/{{ .worker.image.repository }}:{{ .web.image.tag }}\"\n",
    )
    .unwrap();
    // A second chart, `extra`, only in the new product.
    let o = Command::new("cp")
        .args(["-r"])
        .arg(dir.join("examples/charts/demo"))
        .arg(dir.join("examples/charts/extra"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let extra_yaml = dir.join("examples/charts/extra/Chart.yaml");
    let c = std::fs::read_to_string(&extra_yaml).unwrap();
    std::fs::write(
        &extra_yaml,
        c.replace("name: demo", "name: extra")
            .replace("version: 1.1.0", "version: 0.1.0"),
    )
    .unwrap();
    let m = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        m.replacen(
            "  images:\n    # Image-only",
            "    - name: extra\n      version: 0.1.0\n      path: ../examples/charts/extra\n      hints: hints/demo.yaml\n      images:\n        - archive: ../examples/images/demo-web.oci.tar\n        - archive: ../examples/images/demo-worker.oci\n        - archive: ../examples/images/demo-sidecar.docker.tar\n  images:\n    # Image-only",
            1,
        ),
    )
    .unwrap();
    let o = bundler(dir, &["pack", manifest.to_str().unwrap(), "-o", "out"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let old_pkg = old.out.join("demo_1.0.0_amd64.tar");
    let new_pkg = dir.join("out/demo_1.0.0_amd64.tar");
    let o = bundler(
        dir,
        &["diff", old_pkg.to_str().unwrap(), new_pkg.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("chart ~ demo 1.0.0 -> 1.1.0"), "{text}");
    assert!(text.contains("chart + extra 0.1.0"), "{text}");
    assert!(
        text.contains("    hint + {{ .worker.image.registry }}/{{ .worker.image.repository }}:{{ .web.image.tag }}"),
        "{text}"
    );
    assert!(
        text.contains("charts: 1 added, 0 removed, 1 changed, 0 unchanged"),
        "{text}"
    );
    // And the other way round, as JSON: the chart was removed.
    let o = bundler(
        dir,
        &[
            "diff",
            "--json",
            new_pkg.to_str().unwrap(),
            old_pkg.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["charts"]["removed"][0]["name"], "extra", "{v}");
    assert_eq!(v["charts"]["changed"][0]["oldVersion"], "1.1.0", "{v}");
    assert_eq!(v["charts"]["changed"][0]["newVersion"], "1.0.0", "{v}");
}

/// `serve` without `--config` says that its charts are the original ones.
#[test]
fn serve_start_line_says_which_charts_it_serves() {
    use std::io::BufRead;
    let p = pack_example();
    let start_line = |extra: &[&str]| -> (String, String) {
        let mut child = Command::new(support::bundler_bin())
            .current_dir(&p.dir)
            .args(["serve", p.out.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let mut json = String::new();
        let mut child = Command::new(support::bundler_bin())
            .current_dir(&p.dir)
            .args([
                "serve",
                p.out.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--json",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut json)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        (line, json)
    };
    let (line, json) = start_line(&[]);
    assert!(
        line.contains("the original charts, not relocated"),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["chartsAre"], "original", "{json}");
    let config = p.dir.join("load-image.yaml");
    std::fs::write(
        &config,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: 127.0.0.1:5000\n  repo:\n    kind: LOCAL\n    path: ./repo\n",
            p.out.display()
        ),
    )
    .unwrap();
    let (line, json) = start_line(&["--config", config.to_str().unwrap()]);
    assert!(line.contains("relocated for"), "{line}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["chartsAre"], "relocated", "{json}");
}

/// A config outside the working directory: sync says where each relative
/// path resolved (the working directory, as charts-syncer reads them) and
/// that its records go next to the config; a missing path is named as it
/// resolved. End state: the LOCAL repo is where the note said.
#[test]
fn relative_config_paths_are_reported_where_they_resolved() {
    let p = pack_example();
    let site = p.dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let config = site.join("load-image.yaml");
    let reg = support::registry::Registry::start(support::registry::Mode::Plain);
    std::fs::write(
        &config,
        format!(
            "source:\n  intermediateBundlesPath: out\ntarget:\n  containerPrefixRegistry: {}\n  repo:\n    kind: LOCAL\n    path: ./local-repo\n",
            reg.host()
        ),
    )
    .unwrap();
    let o = sync(&p, Path::new("site/load-image.yaml"), &["--insecure"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let cwd = p.dir.canonicalize().unwrap();
    assert!(
        err.contains(&format!(
            "source.intermediateBundlesPath: out resolves to {}",
            p.dir.join("out").display()
        )) || err.contains(&format!("resolves to {}", cwd.join("out").display())),
        "{err}"
    );
    assert!(
        err.contains("target.repo.path: ./local-repo resolves to"),
        "{err}"
    );
    assert!(err.contains("next to the config"), "{err}");
    assert!(
        p.dir.join("local-repo/index.yaml").exists(),
        "the LOCAL repo is in the working directory"
    );
    assert!(
        site.join(".bundler/synced.json").exists(),
        "the records are next to the config"
    );

    // From another directory: the path is named as it resolved there.
    let elsewhere = p.dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let o = bundler(
        &elsewhere,
        &["sync", "--insecure", "--config", "../site/load-image.yaml"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("resolves to {}", elsewhere.join("out").display())),
        "{err}"
    );
}

/// `upgrade` against a TLS registry whose CA is not trusted, without
/// `--insecure`: the TLS problem is said once, with the flags that fix it,
/// not once per image and check, and not "sync the images first".
#[test]
fn upgrade_says_a_tls_problem_once_with_the_flag_that_fixes_it() {
    use support::kube_api::{real_helm, KubeApi};
    let reg = support::registry::Registry::start(support::registry::Mode::Tls);
    let api = KubeApi::start();
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/charts/demo");
    // Every image of the release in the TLS registry (the sidecar's too).
    let sidecar = format!("sidecar.image={}/demo/sidecar:1.0", reg.host());
    api.helm(
        3,
        &[
            "install",
            "demo",
            chart.to_str().unwrap(),
            "-n",
            "shop",
            "--create-namespace",
            "--set",
            &sidecar,
        ],
    );
    let work = tempfile::tempdir().unwrap();
    // ROUND2_BIN runs another build (an older one) for a before/after.
    let bin = std::env::var_os("ROUND2_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(support::bundler_bin);
    let mut cmd = Command::new(bin);
    cmd.current_dir(work.path()).args([
        "upgrade",
        "demo",
        "-n",
        "shop",
        "--chart",
        chart.to_str().unwrap(),
        "--registry",
        &reg.host(),
    ]);
    for (k, v) in api.env() {
        cmd.env(k, v);
    }
    cmd.env("BUNDLER_HELM", real_helm(3))
        .env_remove("BUNDLER_LOG");
    let o = cmd.output().unwrap();
    let all = format!("{}{}", stdout(&o), stderr(&o));
    eprintln!("{all}");
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert_eq!(
        all.matches("TLS certificate").count(),
        1,
        "the TLS problem is said once: {all}"
    );
    assert!(
        all.contains("--insecure") && all.contains("--ca-file"),
        "{all}"
    );
    assert!(!all.contains("sync the images first"), "{all}");
    assert!(all.contains("nothing was changed"), "{all}");
    assert_eq!(api.revision("demo", "shop"), Some(1));
}
