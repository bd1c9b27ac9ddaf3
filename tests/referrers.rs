//! Signatures, attestations and SBOMs travel with the images (issue 23).
//!
//! Real cosign-format artifacts (made by `support/cosign_artifacts.py` with
//! Python `cryptography`: a `.sig` tag over the simple-signing payload, an
//! SPDX in-toto attestation `.att`, and a Sigstore-bundle-style OCI 1.1
//! referrer with `subject` and `artifactType`) are pushed beside their
//! images into a real `docker-registry` (CNCF distribution 2.8: no
//! referrers API, so the referrer is listed by the `sha256-<hex>` fallback
//! tag). They go pack -> sync into another real `docker-registry` (fallback
//! tag) and into the Harbor stand-in answering the referrers API, and each
//! arrives with its digest; the signature is checked at the target by the
//! script's own ECDSA verification, not by bundler.
mod support;

use std::path::{Path, PathBuf};

use support::chart_server::{ChartServer, Config};
use support::registry::{Mode, Registry};
use support::serve::{curl, Served};
use support::{bundler, cosign, images, stderr, stdout};

const SIG_REPO: &str = "signed/app";

/// The source registry with a signed two-platform image (`.sig`, `.att`
/// and a Sigstore-bundle referrer on its index), an unsigned image, an
/// image signed by another key, and one signed by a Sigstore bundle only.
struct Source {
    work: tempfile::TempDir,
    src: Registry,
    key: PathBuf,
    other_key: PathBuf,
    /// index digest, amd64 manifest digest
    index: String,
    amd64: String,
    sig: String,
    att: String,
    bundle_ref: String,
    /// the image signed by the other key
    foreign: String,
}

fn source() -> Source {
    let work = tempfile::tempdir().unwrap();
    let src = Registry::start(Mode::Plain);
    let key = cosign::keygen(work.path(), "cosign");
    let other_key = cosign::keygen(work.path(), "other");
    let (index, amd64, _arm64) = images::push_multiarch(
        &src,
        work.path(),
        &format!("{SIG_REPO}:1.0"),
        b"signed base layer",
    );
    let host = src.host();
    let sig = cosign::sign(&host, SIG_REPO, &index, &key);
    let att = cosign::attest(&host, SIG_REPO, &index, &key);
    let index_size = src.raw_manifest(&format!("{SIG_REPO}:1.0")).unwrap().len();
    let bundle_ref =
        cosign::bundle_referrer(&host, SIG_REPO, &index, images::OCI_INDEX, index_size, &key);
    images::push_simple(&src, work.path(), "plain/app:1.0", &[b"nobody signed me"]);
    let foreign = images::push_simple(&src, work.path(), "foreign/app:1.0", &[b"signed elsewhere"]);
    cosign::sign(&host, "foreign/app", &foreign, &other_key);
    // cosign v3's default: a Sigstore bundle referrer, no `.sig` tag.
    let bundled = images::push_simple(&src, work.path(), "bundled/app:1.0", &[b"v3 signed"]);
    let size = src.raw_manifest("bundled/app:1.0").unwrap().len();
    cosign::bundle_referrer(
        &host,
        "bundled/app",
        &bundled,
        images::OCI_MANIFEST,
        size,
        &key,
    );
    Source {
        work,
        src,
        key,
        other_key,
        index,
        amd64,
        sig,
        att,
        bundle_ref,
        foreign,
    }
}

impl Source {
    /// Pack `repos` (each `:1.0`) into `out/<name>`; the output.
    fn pack(&self, name: &str, repos: &[&str], extra: &[&str]) -> (PathBuf, std::process::Output) {
        let manifest = self.work.path().join(format!("{name}.yaml"));
        let list: Vec<String> = repos
            .iter()
            .map(|r| format!("    - {}/{r}:1.0\n", self.src.host()))
            .collect();
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: {name}, version: 1.0.0}}\nspec:\n  platforms: all\n  images:\n{}",
                list.concat()
            ),
        )
        .unwrap();
        let out = self.work.path().join("out").join(name);
        let mut args = vec![
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--insecure",
        ];
        args.extend_from_slice(extra);
        let o = bundler(self.work.path(), &args);
        (out, o)
    }

    fn pack_ok(&self, name: &str, repos: &[&str], extra: &[&str]) -> PathBuf {
        let (out, o) = self.pack(name, repos, extra);
        assert!(o.status.success(), "pack: {}\n{}", stderr(&o), stdout(&o));
        out.join(format!("{name}-images_1.0.0.bundle.tar"))
    }

    /// The relocated repository of `repo` under `containerPrefixRegistry`.
    fn relocated(&self, repo: &str) -> String {
        format!("{}/{repo}", self.src.host().replace(':', "_"))
    }
}

fn sync_config(dir: &Path, bundles: &Path, target_host: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("load-image.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {target_host}\n{extra}",
            bundles.display()
        ),
    )
    .unwrap();
    cfg
}

fn sync(dir: &Path, cfg: &Path, extra: &[&str]) -> (serde_json::Value, std::process::Output) {
    let mut args = vec![
        "sync",
        "--config",
        cfg.to_str().unwrap(),
        "--json",
        "--insecure",
    ];
    args.extend_from_slice(extra);
    let o = bundler(dir, &args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (v, o)
}

fn digest_of(raw: Option<Vec<u8>>, what: &str) -> String {
    images::blob(raw.unwrap_or_else(|| panic!("{what} is not in the registry"))).digest
}

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

/// sha256 of the DER inside a PEM public key: the fingerprint inspect shows.
fn fingerprint(public: &Path) -> String {
    use base64::Engine;
    use sha2::Digest as _;
    let pem = std::fs::read_to_string(public).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    format!("sha256:{:x}", sha2::Sha256::digest(der))
}

#[test]
fn a_signed_image_goes_pack_sync_into_distribution_and_verifies_at_the_site() {
    let s = source();
    let bundle = s.pack_ok("app", &[SIG_REPO], &[]);

    // inspect: signed by the key, its attestation and SBOM named.
    let o = bundler(
        s.work.path(),
        &[
            "inspect",
            bundle.to_str().unwrap(),
            "--json",
            "--key",
            s.key.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let refs = &v["images"][0]["referrers"];
    assert_eq!(refs["signatures"], 2, "{refs}");
    assert_eq!(refs["signedByKey"], true, "{refs}");
    assert_eq!(refs["keyFingerprint"], fingerprint(&s.key), "{refs}");
    assert_eq!(
        refs["attestations"],
        serde_json::json!(["https://spdx.dev/Document"]),
        "{refs}"
    );
    assert_eq!(refs["sboms"], serde_json::json!(["spdx"]), "{refs}");

    // The target already lists a referrer of the image under the fallback
    // tag (signed there by someone else): it must survive the sync.
    let target = Registry::start(Mode::Plain);
    let repo = s.relocated(SIG_REPO);
    let theirs = cosign::bundle_referrer(
        &target.host(),
        &repo,
        &s.index,
        images::OCI_INDEX,
        1,
        &s.other_key,
    );
    let site = tempfile::tempdir().unwrap();
    let cfg = sync_config(site.path(), &bundle, &target.host(), "");
    let (v, o) = sync(
        site.path(),
        &cfg,
        &["--require-signature", "--key", s.key.to_str().unwrap()],
    );
    assert!(o.status.success(), "sync: {}\n{}", stderr(&o), stdout(&o));
    assert_eq!(v["referrers"]["pushed"], 3, "{v}");
    assert_eq!(v["referrers"]["cosignTags"], 2, "{v}");
    assert_eq!(v["referrers"]["viaFallbackTag"], 1, "{v}");

    // Every referrer arrived with its digest, beside the image.
    assert_eq!(
        digest_of(target.raw_manifest(&format!("{repo}:1.0")), "image"),
        s.index
    );
    let tag = |suffix: &str| format!("{repo}:sha256-{}{suffix}", hex(&s.index));
    assert_eq!(digest_of(target.raw_manifest(&tag(".sig")), ".sig"), s.sig);
    assert_eq!(digest_of(target.raw_manifest(&tag(".att")), ".att"), s.att);
    assert_eq!(
        digest_of(
            target.raw_manifest(&format!("{repo}@{}", s.bundle_ref)),
            "referrer"
        ),
        s.bundle_ref
    );
    let fallback: serde_json::Value =
        serde_json::from_slice(&target.raw_manifest(&tag("")).expect("fallback tag")).unwrap();
    let listed: Vec<&str> = fallback["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [theirs.as_str(), s.bundle_ref.as_str()],
        "{fallback}"
    );

    // The independent verifier, reading from the TARGET: the same public key
    // verifies the signature over the payload; another key does not.
    let ok = cosign::verify(&target.host(), &repo, &s.index, &s.key);
    assert!(ok.is_ok(), "{ok:?}");
    assert!(cosign::verify(&target.host(), &repo, &s.index, &s.other_key).is_err());

    // serve answers the referrers API and the tags from the bundle.
    let served = Served::start(&[bundle.to_str().unwrap()]);
    let name = served.start["images"][0]["name"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();
    let base = format!("http://{}/v2/{name}", served.addr);
    let r = curl(&[], &format!("{base}/referrers/{}", s.index));
    assert_eq!(r.status, 200, "{}", served.log());
    assert_eq!(r.header("content-type"), Some(images::OCI_INDEX));
    let listed = r.json();
    assert_eq!(
        listed["manifests"][0]["digest"],
        s.bundle_ref.as_str(),
        "{listed}"
    );
    assert_eq!(
        listed["manifests"][0]["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    let filtered = curl(
        &[],
        &format!(
            "{base}/referrers/{}?artifactType=application/spdx%2Bjson",
            s.index
        ),
    );
    assert_eq!(filtered.json()["manifests"], serde_json::json!([]));
    let sig = curl(
        &["-H", &format!("Accept: {}", images::OCI_MANIFEST)],
        &format!("{base}/manifests/sha256-{}.sig", hex(&s.index)),
    );
    assert_eq!(sig.status, 200);
    assert_eq!(images::blob(sig.body).digest, s.sig);
    let blob = curl(&[], &format!("{base}/manifests/{}", s.bundle_ref));
    assert_eq!(images::blob(blob.body).digest, s.bundle_ref);
    let fallback = curl(
        &["-H", &format!("Accept: {}", images::OCI_INDEX)],
        &format!("{base}/manifests/sha256-{}", hex(&s.index)),
    );
    assert_eq!(
        fallback.json()["manifests"][0]["digest"],
        s.bundle_ref.as_str()
    );
}

#[test]
fn harbor_takes_the_referrer_through_its_api_after_the_subject() {
    let s = source();
    let bundle = s.pack_ok("app", &[SIG_REPO], &[]);
    let backing = Registry::start(Mode::Plain);
    let harbor = ChartServer::start(Config {
        harbor_version: "v2.12.0-abcdef".into(),
        registry: Some(backing.host()),
        referrers_api: true,
        ..Config::default()
    });
    // The stand-in is as strict as Harbor: a referrer of a manifest the
    // repository does not have is refused.
    let missing = format!("sha256:{}", "0".repeat(64));
    let refused = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/cosign_artifacts.py"))
        .args([
            "bundle-referrer",
            &harbor.host(),
            "some/repo",
            &missing,
            images::OCI_MANIFEST,
            "1",
            s.key.with_extension("key").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("404"), "{}", stderr(&refused));

    let site = tempfile::tempdir().unwrap();
    let cfg = sync_config(site.path(), &bundle, &harbor.host(), "");
    let (v, o) = sync(site.path(), &cfg, &[]);
    assert!(o.status.success(), "sync: {}\n{}", stderr(&o), stdout(&o));
    assert_eq!(v["referrers"]["viaReferrersApi"], 1, "{v}");
    assert_eq!(v["referrers"]["viaFallbackTag"], 0, "{v}");
    let repo = s.relocated(SIG_REPO);
    let r = curl(
        &[],
        &format!("{}/v2/{repo}/referrers/{}", harbor.url(), s.index),
    );
    let listed = r.json();
    assert_eq!(
        listed["manifests"][0]["digest"],
        s.bundle_ref.as_str(),
        "{listed}"
    );
    // Through the API: no fallback tag was written; the cosign tags were.
    let tag = |suffix: &str| format!("{repo}:sha256-{}{suffix}", hex(&s.index));
    assert!(backing.raw_manifest(&tag("")).is_none());
    assert_eq!(digest_of(backing.raw_manifest(&tag(".sig")), ".sig"), s.sig);
    assert_eq!(
        digest_of(
            backing.raw_manifest(&format!("{repo}@{}", s.bundle_ref)),
            "referrer"
        ),
        s.bundle_ref
    );
    assert!(cosign::verify(&backing.host(), &repo, &s.index, &s.key).is_ok());
}

#[test]
fn require_signature_refuses_unsigned_and_other_key_images_before_any_push() {
    let s = source();
    let bundle = s.pack_ok(
        "mixed",
        &[SIG_REPO, "plain/app", "foreign/app", "bundled/app"],
        &[],
    );
    let target = Registry::start(Mode::Plain);
    let site = tempfile::tempdir().unwrap();
    let catalog = || {
        curl(&[], &format!("{}/v2/_catalog", target.url())).json()["repositories"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    for (cfg_extra, flags) in [
        (
            "",
            vec!["--require-signature", "--key", s.key.to_str().unwrap()],
        ),
        (
            &*format!("requireSignature:\n  key: {}\n", s.key.display()),
            vec![],
        ),
    ] {
        let cfg = sync_config(site.path(), &bundle, &target.host(), cfg_extra);
        let (_, o) = sync(site.path(), &cfg, &flags);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains("2 images without a valid cosign signature"),
            "{err}"
        );
        assert!(err.contains("nothing was pushed"), "{err}");
        assert!(
            err.contains("/plain/app:1.0") && err.contains("no cosign signature"),
            "{err}"
        );
        assert!(
            err.contains("/foreign/app:1.0") && err.contains("none valid for this key"),
            "{err}"
        );
        assert!(!err.contains(&format!("/{SIG_REPO}:1.0 (")), "{err}");
        assert!(!err.contains("/bundled/app:1.0 ("), "{err}");
        assert_eq!(catalog(), Vec::<serde_json::Value>::new());
    }
    // Without the gate everything goes, signatures included. The site had
    // signed foreign/app itself meanwhile: its signature stays, beside the
    // carried one (cosign's merge of the `.sig` manifest).
    let foreign_repo = s.relocated("foreign/app");
    cosign::sign(&target.host(), &foreign_repo, &s.foreign, &s.key);
    let cfg = sync_config(site.path(), &bundle, &target.host(), "");
    let (v, o) = sync(site.path(), &cfg, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(v["referrers"]["cosignTags"], 3, "{v}");
    assert_eq!(v["referrers"]["cosignTagsMerged"], 1, "{v}");
    for key in [&s.key, &s.other_key] {
        let r = cosign::verify(&target.host(), &foreign_repo, &s.foreign, key);
        assert!(r.is_ok(), "{r:?}");
    }
}

#[test]
fn a_referrer_whose_subject_is_not_carried_is_refused_at_pack_and_modes_filter() {
    let s = source();
    // One platform of the signed index: the signatures would sign nothing
    // the bundle holds.
    let (out, o) = s.pack("one", &[SIG_REPO], &["--platform", "linux/amd64"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("refers to index {}", s.index)),
        "{err}"
    );
    assert!(err.contains("--referrers none"), "{err}");
    assert!(!out.join("one-images_1.0.0.bundle.tar").exists());
    let plain = s.pack_ok(
        "none",
        &[SIG_REPO],
        &["--platform", "linux/amd64", "--referrers", "none"],
    );
    let o = bundler(
        s.work.path(),
        &["inspect", plain.to_str().unwrap(), "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["images"][0]["digest"], s.amd64.as_str());
    assert!(v["images"][0].get("referrers").is_none(), "{v}");

    // --print-images lists them under their subject, downloading no blob.
    let manifest = s.work.path().join("app.yaml");
    let _ = s.pack_ok("app", &[SIG_REPO], &[]);
    let o = bundler(
        s.work.path(),
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--print-images",
            "--insecure",
        ],
    );
    let text = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(text.contains(&format!("signature {}", s.sig)), "{text}");
    assert!(text.contains(&format!("attestation {}", s.att)), "{text}");

    // --referrers signatures leaves the attestation behind; diff says so.
    let sigs = s.pack_ok("sigs", &[SIG_REPO], &["--referrers", "signatures"]);
    let all = s.work.path().join("out/app/app-images_1.0.0.bundle.tar");
    let o = bundler(
        s.work.path(),
        &[
            "diff",
            sigs.to_str().unwrap(),
            all.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let added: Vec<&str> = v["referrersAdded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    assert_eq!(added, [s.att.as_str()], "{v}");
    assert_eq!(v["referrersRemoved"], serde_json::json!([]));
}
