//! Daily use from the README, through the binary: `inspect` and `verify`
//! take what a site is handed (bundles, the offline package, a directory),
//! say in words what a file that is not a bundle is, and a bare
//! `--insecure` never swallows the manifest.
mod support;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use support::{bundler, stderr, stdout};

/// The example product packed (offline: local chart and image archives).
struct Packed {
    _work: tempfile::TempDir,
    dir: PathBuf,
    out: PathBuf,
}

impl Packed {
    fn package(&self) -> PathBuf {
        self.out.join("demo_1.0.0_amd64.tar")
    }
}

fn pack_example(extra: &[&str]) -> Packed {
    let work = tempfile::tempdir().unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-manifests/example.yaml");
    let out = work.path().join("out");
    let mut args = vec!["pack"];
    args.extend_from_slice(extra);
    args.extend([
        manifest.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let o = bundler(work.path(), &args);
    assert!(o.status.success(), "pack {args:?}: {}", stderr(&o));
    Packed {
        dir: work.path().to_path_buf(),
        out,
        _work: work,
    }
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

#[test]
fn inspect_and_verify_read_the_offline_package_and_directories() {
    let p = pack_example(&[]);
    let pkg = p.package();

    // inspect PACKAGE: both bundles, each named with its package.
    let o = bundler(&p.dir, &["inspect", "--json", pkg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let reports = v.as_array().expect("a package gives an array");
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["bundle"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["demo-images_1.0.0.bundle.tar", "demo_1.0.0.bundle.tar"]
    );
    for r in reports {
        assert_eq!(r["package"].as_str(), pkg.to_str());
    }
    // The chart bundle: its chart and three images; sizes are the bundle's
    // own (not the package's).
    let chart_bundle = &reports[1];
    assert_eq!(chart_bundle["chart"]["name"], "demo");
    assert_eq!(chart_bundle["images"].as_array().unwrap().len(), 3);
    let own = std::fs::metadata(p.out.join("demo_1.0.0.bundle.tar"))
        .unwrap()
        .len();
    assert_eq!(chart_bundle["totalBytes"].as_u64(), Some(own));
    // One bundle named directly stays one object.
    let o = bundler(
        &p.dir,
        &[
            "inspect",
            "--json",
            p.out.join("demo_1.0.0.bundle.tar").to_str().unwrap(),
        ],
    );
    assert!(json(&o).is_object(), "{}", stdout(&o));

    // verify PACKAGE DIR: every bundle of both, named.
    let o = bundler(
        &p.dir,
        &["verify", pkg.to_str().unwrap(), p.out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.matches("OK ").count(), 4, "{text}");
    assert!(
        text.contains(&format!("OK demo_1.0.0.bundle.tar in {}", pkg.display())),
        "{text}"
    );

    // A directory holding only the offline package (what a site receives).
    let site = p.dir.join("site");
    std::fs::create_dir(&site).unwrap();
    std::fs::copy(&pkg, site.join("demo_1.0.0_amd64.tar")).unwrap();
    let o = bundler(&p.dir, &["verify", "--json", site.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert!(v.as_array().unwrap().iter().all(|r| r["ok"] == true), "{v}");

    // A blob damaged inside the package is found and named.
    let damaged = site.join("demo_1.0.0_amd64.tar");
    let loc = bundler::bundle::location::list_bundles(&damaged)
        .unwrap()
        .remove(1);
    let reader = loc.open().unwrap();
    let (digest, ext) = reader
        .blob_index
        .iter()
        .max_by_key(|(_, e)| e.size)
        .map(|(d, e)| (d.clone(), *e))
        .unwrap();
    drop(reader);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap();
    let mut b = [0u8; 1];
    std::fs::File::open(&damaged)
        .unwrap()
        .read_exact_at(&mut b, ext.offset)
        .unwrap();
    f.write_all_at(&[b[0] ^ 0xff], ext.offset).unwrap();
    let o = bundler(&p.dir, &["verify", site.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("blob {digest} is corrupted")),
        "{err}"
    );
    assert!(err.contains("FAILED demo_1.0.0.bundle.tar in"), "{err}");
    assert!(
        stdout(&o).contains("OK demo-images_1.0.0.bundle.tar in"),
        "{}",
        stdout(&o)
    );

    // An empty directory names itself.
    let empty = p.dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = bundler(&p.dir, &["verify", empty.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no *.bundle.tar and no offline package"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_file_that_is_not_a_tar_is_described_in_words() {
    let p = pack_example(&[]);
    let text = p.dir.join("notes.txt");
    std::fs::write(
        &text,
        "these are not the bundles you are looking for\n".repeat(40),
    )
    .unwrap();
    let tiny = p.dir.join("tiny.txt");
    std::fs::write(&tiny, "hi\n").unwrap();
    let cases: [(PathBuf, &str); 3] = [
        (p.out.join("demo-1.0.0.tgz"), "gzip-compressed"),
        (text, "it is a text file"),
        (tiny, "less than one tar header"),
    ];
    for (path, words) in cases {
        for verb in ["inspect", "verify"] {
            let o = bundler(&p.dir, &[verb, path.to_str().unwrap()]);
            assert!(!o.status.success(), "{verb} {}", path.display());
            let err = stderr(&o);
            assert!(err.contains("not a tar archive"), "{verb}: {err}");
            assert!(err.contains(words), "{verb}: {err}");
            // No raw header bytes (the old message quoted the first 100).
            assert!(!err.contains("these are not the bundles"), "{verb}: {err}");
            assert!(!err.contains("\\u{"), "{verb}: {err}");
        }
    }
    // A tar that is neither a bundle nor a package says both.
    let other = p.dir.join("other.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&other).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_cksum();
    b.append_data(&mut h, "readme", &b"hi"[..]).unwrap();
    b.finish().unwrap();
    let o = bundler(&p.dir, &["inspect", other.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("neither a bundle") && err.contains("nor an offline package"),
        "{err}"
    );
}

#[test]
fn a_bare_insecure_does_not_swallow_the_manifest() {
    // Flag before the manifest, in all three accepted spellings.
    for flags in [
        &["--insecure"][..],
        &["--insecure", "true"],
        &["--insecure=false"],
    ] {
        let p = pack_example(flags);
        assert!(p.package().is_file(), "{flags:?}");
    }
    // A value that is not a boolean is refused by clap (exit 2), naming it.
    let work = tempfile::tempdir().unwrap();
    let o = bundler(work.path(), &["pack", "--insecure=yes", "m.yaml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--insecure"), "{}", stderr(&o));
    // And --concurrency 0 is refused before anything runs.
    let o = bundler(work.path(), &["sync", "--concurrency", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("1..=1024"), "{}", stderr(&o));
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex_lower(&sha2::Sha256::digest(b))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn image_only_products_need_no_target_repo_and_charts_are_named_when_it_is_missing() {
    use support::registry::{Mode, Registry};
    let p = pack_example(&[]);
    let reg = Registry::start(Mode::Plain);
    let config = |bundles: &Path, name: &str| {
        let c = p.dir.join(name);
        std::fs::write(
            &c,
            format!(
                "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {}\n",
                bundles.display(),
                reg.host()
            ),
        )
        .unwrap();
        c
    };

    // The image-only bundle: pushed, no chart repository needed.
    let cfg = config(
        &p.out.join("demo-images_1.0.0.bundle.tar"),
        "images-only.yaml",
    );
    let o = bundler(
        &p.dir,
        &["sync", "-c", cfg.to_str().unwrap(), "--insecure", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{v}");
    assert!(v["charts"].as_array().unwrap().is_empty(), "{v}");
    let to = images[0]["to"].as_str().unwrap();
    let repo_tag = to
        .strip_prefix(&format!("{}/", reg.host()))
        .expect("pushed to the registry");
    let raw = reg.raw_manifest(repo_tag).expect("image in the registry");
    assert_eq!(
        format!("sha256:{}", sha256_hex(&raw)),
        images[0]["digest"].as_str().unwrap()
    );

    // The whole package carries the demo chart: refused before any push,
    // naming the chart, exit 2.
    let reg2 = Registry::start(Mode::Plain);
    let cfg = p.dir.join("with-chart.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {}\n",
            p.package().display(),
            reg2.host()
        ),
    )
    .unwrap();
    let o = bundler(&p.dir, &["sync", "-c", cfg.to_str().unwrap(), "--insecure"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("target.repo is not set"), "{err}");
    assert!(
        err.contains("1 chart cannot be published: demo 1.0.0"),
        "{err}"
    );
    assert!(err.contains("nothing was pushed"), "{err}");
    assert!(
        reg2.raw_manifest(repo_tag).is_none(),
        "an image was pushed anyway"
    );
}

#[test]
fn readme_hints_example_is_the_example_products_hints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let after = readme
        .split("the hints file (`bundle-manifests/hints/demo.yaml`) is")
        .nth(1)
        .expect("the README's hints example");
    let block = after
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let file = std::fs::read_to_string(root.join("bundle-manifests/hints/demo.yaml")).unwrap();
    let templates: Vec<&str> = file.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(block.lines().collect::<Vec<_>>(), templates);
}

#[test]
fn seed_manifests_run_here_or_say_they_are_templates() {
    use bundler::config::manifest::{BundleManifest, ChartSource, ImageSource};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-manifests");
    let mut runnable = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let m = BundleManifest::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
        if text.starts_with("# TEMPLATE") {
            continue;
        }
        // Not a template: everything it names is here, and nothing comes
        // from a registry.
        let base = p.parent().unwrap();
        for c in &m.charts {
            match &c.source {
                ChartSource::Path(path) => assert!(
                    base.join(path).exists(),
                    "{}: {}",
                    p.display(),
                    path.display()
                ),
                other => panic!(
                    "{}: chart {} from {other:?} needs the network: mark it # TEMPLATE",
                    p.display(),
                    c.name
                ),
            }
            assert!(c.images.is_empty(), "{}: registry images", p.display());
            for a in c.image_archives.iter().chain(c.hints.iter()) {
                assert!(
                    base.join(a).exists(),
                    "{}: {} is missing",
                    p.display(),
                    a.display()
                );
            }
        }
        for i in &m.images {
            match i {
                ImageSource::Archive(a) => {
                    assert!(base.join(a).exists(), "{}: {}", p.display(), a.display())
                }
                ImageSource::Reference(r) => {
                    panic!("{}: {r} needs a registry: mark it # TEMPLATE", p.display())
                }
            }
        }
        runnable += 1;
    }
    assert!(runnable >= 1, "example.yaml runs here");
}

#[test]
fn no_user_facing_message_cites_the_spec() {
    // The SPEC is not in the repository: messages and help must stand alone.
    let mut offenders = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                for (i, line) in std::fs::read_to_string(&p).unwrap().lines().enumerate() {
                    let code = line.trim_start();
                    if !code.starts_with("//") && line.contains("SPEC §") {
                        offenders.push(format!("{}:{}: {line}", p.display(), i + 1));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

#[test]
fn version_prints_the_bundle_format_and_the_commit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = bundler(root, &["--version"]);
    assert!(o.status.success());
    let v = stdout(&o);
    assert!(
        v.contains(&format!(
            "bundle format {}",
            bundler::bundle::format::FORMAT_VERSION
        )),
        "{v}"
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(h) => assert!(v.contains(&format!("commit {h}")), "{v} (HEAD is {h})"),
        None => assert!(v.contains("commit "), "{v}"),
    }
}
