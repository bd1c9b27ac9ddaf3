//! Reliability (issue 6), credentials, TLS and the output disk, through
//! the `bundler` binary against real registries: wrong, missing and
//! expired credentials are credential errors and no password, token or
//! Authorization header ever appears in any output (also at `-vv`,
//! `BUNDLER_LOG=trace` and in `--json`); an untrusted TLS registry fails
//! saying how to fix it; a full disk, a file-size limit, a read-only or
//! non-directory output fail pack clearly with no partial bundle left.
mod reliability_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use base64::Engine as _;
use reliability_support::*;
use support::registry::{Mode, Registry, PASSWORD, USER};
use support::{bundler_bin, stderr, stdout};

const WRONG: &str = "Wr0ng-Secret-Passw0rd-42";

/// Every form a secret could leak in.
fn secrets(password: &str, extra: &[String]) -> Vec<String> {
    let mut v = vec![
        password.to_string(),
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}")),
    ];
    v.extend(extra.iter().cloned());
    v
}

/// No secret and no Authorization header value in stdout or stderr.
fn assert_no_leak(what: &str, o: &Output, secrets: &[String]) {
    let header =
        regex::Regex::new(r#"(?i)authorization["']?\s*[:=]\s*["']?(basic|bearer)\s"#).unwrap();
    for (stream, text) in [("stdout", stdout(o)), ("stderr", stderr(o))] {
        for s in secrets {
            assert!(
                !text.contains(s.as_str()),
                "{what}: a secret leaked in {stream}: {s:?} in\n{text}"
            );
        }
        if let Some(m) = header.find(&text) {
            panic!(
                "{what}: an Authorization header in {stream}: {:?}",
                m.as_str()
            );
        }
    }
}

/// Run `args` in the three most verbose ways: -vv, BUNDLER_LOG=trace, and
/// --json (with trace logging too). Returns the outputs.
fn verbose_runs(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<(String, Output)> {
    let mut out = Vec::new();
    let mut a = args.to_vec();
    a.push("-vv");
    out.push(("-vv".to_string(), run(dir, &a, env)));
    let mut e = env.to_vec();
    e.push(("BUNDLER_LOG", "trace"));
    out.push(("BUNDLER_LOG=trace".to_string(), run(dir, args, &e)));
    let mut a = args.to_vec();
    a.push("--json");
    a.push("-vv");
    out.push(("--json -vv BUNDLER_LOG=trace".to_string(), run(dir, &a, &e)));
    out
}

fn assert_credential_error(what: &str, o: &Output) {
    let err = stderr(o);
    assert!(!o.status.success(), "{what}: succeeded");
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    assert!(
        err.to_lowercase().contains("credential"),
        "{what}: not a credential error: {err}"
    );
}

#[test]
fn sync_with_wrong_or_missing_credentials_fails_about_credentials_and_leaks_nothing() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let p = make_product(d, "cred", 2, 1, 64 << 10, 4);
    let out = pack_ok(d, &p.manifest, &d.join("out"));
    let reg = Registry::start(Mode::BasicAuth);
    let http = Http::new(&reg);
    for (label, auth) in [
        ("wrong password", Some((USER, WRONG))),
        ("wrong user", Some(("nobody", WRONG))),
        ("missing credentials", None),
    ] {
        let site = d.join(label.replace(' ', "-"));
        std::fs::create_dir_all(&site).unwrap();
        let cfg = sync_config(&site, &out, &reg.host(), auth);
        for (how, o) in verbose_runs(
            &site,
            &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
            &[],
        ) {
            let what = format!("sync, {label}, {how}");
            assert_credential_error(&what, &o);
            assert_no_leak(&what, &o, &secrets(WRONG, &[PASSWORD.to_string()]));
            if label == "missing credentials" {
                assert!(stderr(&o).contains("missing"), "{what}: {}", stderr(&o));
            }
        }
        assert_registry_empty(&http, label);
    }
    // The environment overrides are secrets too.
    let site = d.join("env");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = sync_config(&site, &out, &reg.host(), None);
    let o = run(
        &site,
        &[
            "sync",
            "--config",
            cfg.to_str().unwrap(),
            "--insecure",
            "-vv",
        ],
        &[
            ("TARGET_CONTAINERS_AUTH_USERNAME", USER),
            ("TARGET_CONTAINERS_AUTH_PASSWORD", WRONG),
            ("BUNDLER_LOG", "trace"),
        ],
    );
    assert_credential_error("sync, wrong password from the environment", &o);
    assert_no_leak("sync, env", &o, &secrets(WRONG, &[]));

    // The right credentials at the most verbose level: it works, and still
    // nothing leaks.
    let site = d.join("right");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = sync_config(&site, &out, &reg.host(), Some((USER, PASSWORD)));
    for (how, o) in verbose_runs(
        &site,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
        &[],
    ) {
        assert!(o.status.success(), "{how}: {}", stderr(&o));
        assert_no_leak(
            &format!("sync, right password, {how}"),
            &o,
            &secrets(PASSWORD, &[]),
        );
    }
    assert_synced(&http, &p.images);
}

fn docker_config(dir: &Path, host: &str, password: &str) -> PathBuf {
    let d = dir.join(format!("docker-{}", password.len()));
    std::fs::create_dir_all(&d).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    std::fs::write(
        d.join("config.json"),
        format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}"),
    )
    .unwrap();
    d
}

#[test]
fn pack_with_wrong_or_missing_credentials_fails_about_credentials_and_leaks_nothing() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let src = Registry::start(Mode::BasicAuth);
    let p = make_product(d, "pk", 1, 1, 64 << 10, 6);
    src.skopeo_copy_in(
        &format!("oci:{}:{}", p.layout.display(), p.images[0].reference),
        "rel/app0:1.0",
    );
    let manifest = registry_manifest(d, "pk", &[format!("{}/rel/app0:1.0", src.host())]);
    let out = d.join("out");
    let empty_home = d.join("home");
    std::fs::create_dir_all(&empty_home).unwrap();
    let wrong = docker_config(d, &src.host(), WRONG);
    let right = docker_config(d, &src.host(), PASSWORD);
    let args = [
        "pack",
        manifest.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--insecure",
    ];
    for (label, cfg) in [
        ("wrong password", &wrong),
        ("missing credentials", &empty_home),
    ] {
        let env = [
            ("DOCKER_CONFIG", cfg.to_str().unwrap()),
            ("HOME", empty_home.to_str().unwrap()),
        ];
        for (how, o) in verbose_runs(d, &args, &env) {
            let what = format!("pack, {label}, {how}");
            assert_credential_error(&what, &o);
            assert_no_leak(&what, &o, &secrets(WRONG, &[PASSWORD.to_string()]));
        }
        assert!(
            !out.join("pk-images_1.0.0.bundle.tar").exists(),
            "{label}: a bundle was written"
        );
    }
    let env = [
        ("DOCKER_CONFIG", right.to_str().unwrap()),
        ("HOME", empty_home.to_str().unwrap()),
    ];
    for (how, o) in verbose_runs(d, &args, &env) {
        assert!(o.status.success(), "{how}: {}", stderr(&o));
        assert_no_leak(
            &format!("pack, right password, {how}"),
            &o,
            &secrets(PASSWORD, &[]),
        );
    }
}

use support::token_registry::TokenRegistry;

#[test]
fn bearer_tokens_expired_or_refused_are_credential_errors_and_never_shown() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let p = make_product(d, "tok", 2, 1, 64 << 10, 8);
    let out = pack_ok(d, &p.manifest, &d.join("out"));
    let reg = TokenRegistry::start();
    let args_for = |cfg: &Path| {
        vec![
            "sync".to_string(),
            "--config".into(),
            cfg.to_str().unwrap().into(),
            "--insecure".into(),
            "--json".into(),
            "-vv".into(),
        ]
    };
    let trace = [("BUNDLER_LOG", "trace")];

    // The first token handed out has already expired: the registry answers
    // 401, bundler fetches a new one and goes on.
    let site = d.join("once");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = sync_config(&site, &out, &reg.host(), Some((USER, PASSWORD)));
    reg.expire_next.store(1, Ordering::SeqCst);
    let a = args_for(&cfg);
    let o = run(
        &site,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &trace,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let tokens = reg.issued.lock().unwrap().clone();
    assert!(tokens.len() >= 2, "{tokens:?}");
    assert_no_leak("token sync", &o, &secrets(PASSWORD, &tokens));

    // Every token expired: a credential error after re-authenticating.
    let site = d.join("always");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = sync_config(&site, &out, &reg.host(), Some((USER, PASSWORD)));
    // Images are there already; a different prefix makes new repositories.
    let cfg_text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("containerPrefixRegistry: {}", reg.host()),
        &format!("containerPrefixRegistry: {}/again", reg.host()),
    );
    std::fs::write(&cfg, cfg_text).unwrap();
    reg.expire_next.store(1_000, Ordering::SeqCst);
    let a = args_for(&cfg);
    let o = run(
        &site,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &trace,
    );
    reg.expire_next.store(0, Ordering::SeqCst);
    assert_credential_error("expired tokens", &o);
    let tokens = reg.issued.lock().unwrap().clone();
    assert_no_leak("expired tokens", &o, &secrets(PASSWORD, &tokens));

    // A wrong password: the token service refuses.
    let site = d.join("wrong");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = sync_config(&site, &out, &reg.host(), Some((USER, WRONG)));
    let a = args_for(&cfg);
    let o = run(
        &site,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &trace,
    );
    assert_credential_error("token, wrong password", &o);
    let tokens = reg.issued.lock().unwrap().clone();
    assert_no_leak("token, wrong password", &o, &secrets(WRONG, &tokens));
}

// ---- TLS ----

fn assert_tls_hint(what: &str, o: &Output) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "{what}: succeeded without trusting the CA"
    );
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    assert!(
        err.contains("--ca-file") && err.contains("--insecure"),
        "{what}: the error must say how to fix it: {err}"
    );
    assert!(err.to_lowercase().contains("certificate"), "{what}: {err}");
}

#[test]
fn an_untrusted_tls_registry_fails_sync_and_pack_saying_how_to_fix_it() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let p = make_product(d, "tls", 1, 1, 64 << 10, 12);
    let out = pack_ok(d, &p.manifest, &d.join("out"));

    // sync into a TLS registry signed by a CA nobody trusts.
    let target = Registry::start(Mode::TlsBasicAuth);
    let http = Http::new(&target);
    let cfg = sync_config(d, &out, &target.host(), Some((USER, PASSWORD)));
    let o = run(d, &["sync", "--config", cfg.to_str().unwrap()], &[]);
    assert_tls_hint("sync", &o);
    assert_registry_empty(&http, "sync without trust");
    let ca = target.ca_file.clone().unwrap();
    let o = run(
        d,
        &[
            "sync",
            "--config",
            cfg.to_str().unwrap(),
            "--ca-file",
            ca.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "sync --ca-file: {}", stderr(&o));
    assert_synced(&http, &p.images);

    // pack from it.
    let manifest = registry_manifest(
        d,
        "fromtls",
        &[format!(
            "{}/{}:{}",
            target.host(),
            target_repo(&p.images[0]),
            p.images[0].tag
        )],
    );
    let docker = d.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}",
            target.host(),
            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
        ),
    )
    .unwrap();
    let env = [("DOCKER_CONFIG", docker.to_str().unwrap())];
    let pout = d.join("pack-out");
    let o = run(
        d,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            pout.to_str().unwrap(),
        ],
        &env,
    );
    assert_tls_hint("pack", &o);
    assert!(!pout.join("fromtls-images_1.0.0.bundle.tar").exists());
    let o = run(
        d,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            pout.to_str().unwrap(),
            "--ca-file",
            ca.to_str().unwrap(),
        ],
        &env,
    );
    assert!(o.status.success(), "pack --ca-file: {}", stderr(&o));
    assert!(pout.join("fromtls-images_1.0.0.bundle.tar").is_file());
}

// ---- the output disk ----

/// `*.bundle.tar`, package tars and temp names under `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.contains(".bundle.tar") || n.ends_with(".tar") || n.contains("partial")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A mounted tmpfs, unmounted on drop; None where mounting is not allowed.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, opts: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if o.status.success() {
            Some(Tmpfs(dir.to_path_buf()))
        } else {
            eprintln!(
                "cannot mount a tmpfs here ({}); that case is skipped",
                stderr(&o).trim()
            );
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn pack_into(d: &Path, manifest: &Path, out: &Path) -> Output {
    run(
        d,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
    )
}

#[test]
fn a_full_or_unwritable_output_fails_pack_clearly_and_leaves_no_partial_bundle() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    // ~1 MiB of layers: far more than the 256 KiB disk.
    let p = make_chart_product(d, "disk", 2, 2, 256 << 10, 13);

    // 1. A file-size limit (ulimit -f 256 = 256 KiB): bundler ignores
    // SIGXFSZ, so the write fails with EFBIG and pack reports it.
    let out = d.join("out-fsize");
    let o = Command::new("bash")
        .arg("-c")
        .arg("ulimit -f 256 && exec \"$0\" \"$@\"")
        .arg(bundler_bin())
        .args([
            "pack",
            p.manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .current_dir(d)
        .output()
        .unwrap();
    let err = stderr(&o);
    eprintln!("ulimit -f: {err}");
    assert_eq!(
        o.status.code(),
        Some(1),
        "killed or succeeded: {o:?}\n{err}"
    );
    assert!(err.contains("File too large"), "{err}");
    assert!(
        err.contains("disk_1.0.0.bundle.tar"),
        "the error must name the bundle: {err}"
    );
    assert_eq!(leftovers(&out), Vec::<String>::new());

    // 2. The output path is a regular file.
    let file = d.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let o = pack_into(d, &p.manifest, &file);
    let err = stderr(&o);
    eprintln!("output is a file: {err}");
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not-a-dir") && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    // ... or a file in the way of the output's parent.
    let o = pack_into(d, &p.manifest, &file.join("sub"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not-a-dir"), "{}", stderr(&o));

    // 3. A full disk: a 256 KiB tmpfs. Refused up front with both figures
    // (issue 21); the disk filling mid-write is case 1's EFBIG path.
    if let Some(fs) = Tmpfs::mount(&d.join("small"), "size=256k") {
        let o = pack_into(d, &p.manifest, &fs.0);
        let err = stderr(&o);
        eprintln!("disk full: {err}");
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("needs") && err.contains("262144 bytes) are free"),
            "{err}"
        );
        assert_eq!(leftovers(&fs.0), Vec::<String>::new());
        // Big enough for the bundle, too small for the offline package
        // that copies it: refused up front too, nothing written.
        drop(fs);
    }
    if let Some(fs) = Tmpfs::mount(&d.join("medium"), "size=1600k") {
        let o = pack_into(d, &p.manifest, &fs.0);
        let err = stderr(&o);
        eprintln!("disk full at the package: {err}");
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("are free there: nothing was written"), "{err}");
        let left = leftovers(&fs.0);
        assert!(
            !left
                .iter()
                .any(|n| n.ends_with("_amd64.tar") || n.contains("partial")),
            "{left:?}"
        );
        for n in left.iter().filter(|n| n.ends_with(".bundle.tar")) {
            let v = run(d, &["verify", fs.0.join(n).to_str().unwrap()], &[]);
            assert!(v.status.success(), "{n} under its final name is incomplete");
        }
        drop(fs);
    }
    // 4. A read-only output (as root, permission bits do not stop writes;
    // a read-only mount does).
    if let Some(fs) = Tmpfs::mount(&d.join("ro"), "size=4m,ro") {
        let o = pack_into(d, &p.manifest, &fs.0);
        let err = stderr(&o);
        eprintln!("read-only: {err}");
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("Read-only file system"), "{err}");
        assert_eq!(leftovers(&fs.0), Vec::<String>::new());
        drop(fs);
    }
}
