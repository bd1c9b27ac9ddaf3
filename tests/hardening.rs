//! Hardening (issue 11), through the `bundler` binary: YAML alias bombs
//! are refused with bounded memory, URL credentials are never printed or
//! stored and `pack` authenticates to classic chart repos, concurrent syncs
//! into one LOCAL repo keep every entry, SIGINT/SIGTERM clean up, LOCAL
//! repo files follow the umask, and FIFOs are refused instead of hanging.
mod reliability_support;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reliability_support::*;
use support::chart_server::{ChartServer, Config as ServerConfig};
use support::registry::{Mode, Registry};
use support::{bundler_bin, stderr, stdout};

/// What a child run produced, with its peak resident memory.
struct Measured {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    max_rss_kib: i64,
}

/// Address-space cap of measured runs: far above what bundler needs, low
/// enough that an unbounded expansion aborts instead of swapping the box.
const AS_LIMIT: u64 = 2 << 30;

fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bundler_bin());
    c.current_dir(dir).args(args);
    c.env("BUNDLER_STATE_DIR", dir.join(".upload-state"));
    c.env_remove("BUNDLER_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Run bundler under RLIMIT_AS = [`AS_LIMIT`] and umask 022; peak RSS from
/// `wait4`'s rusage of exactly this child.
fn run_measured(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Measured {
    let out_path = dir.join(format!(".measured-out-{}", std::process::id()));
    let err_path = dir.join(format!(".measured-err-{}", std::process::id()));
    let mut c = command(dir, args, env);
    c.stdout(std::fs::File::create(&out_path).unwrap());
    c.stderr(std::fs::File::create(&err_path).unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: AS_LIMIT,
                rlim_max: AS_LIMIT,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            libc::umask(0o022);
            Ok(())
        });
    }
    let child = c.spawn().expect("spawn bundler");
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; rusage is written by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(rc, pid, "wait4");
    std::mem::forget(child);
    let m = Measured {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        max_rss_kib: ru.ru_maxrss,
    };
    let _ = std::fs::remove_file(out_path);
    let _ = std::fs::remove_file(err_path);
    m
}

/// An anchor holding `k` scalars, then `m` aliases of it, each alias as
/// the value at `alias_line(i)`: K+M lines that expand to K×M nodes.
fn bomb(
    head: &str,
    anchor_line: &str,
    item: impl Fn(usize) -> String,
    alias_line: impl Fn(usize) -> String,
    k: usize,
    m: usize,
) -> String {
    let mut s = String::from(head);
    s.push_str(anchor_line);
    for i in 0..k {
        s.push_str(&item(i));
    }
    for i in 0..m {
        s.push_str(&alias_line(i));
    }
    s
}

const K: usize = 6000;
const M: usize = 6000;
/// Peak RSS allowed for a refused bomb (a normal small run is ~20 MiB).
const MAX_RSS_KIB: i64 = 200 << 10;

fn assert_bounded_refusal(label: &str, m: &Measured, code: i32, expect: &[&str]) {
    eprintln!(
        "{label}: exit {:?} signal {:?}, max RSS {} KiB: {}",
        m.code,
        m.signal,
        m.max_rss_kib,
        m.stderr.trim()
    );
    assert_eq!(m.code, Some(code), "{label}: {}", m.stderr);
    for e in expect {
        assert!(
            m.stderr.contains(e),
            "{label}: expected {e:?} in {}",
            m.stderr
        );
    }
    assert!(
        m.stderr.contains("alias"),
        "{label}: the error must say aliases expand too much: {}",
        m.stderr
    );
    assert!(
        m.max_rss_kib < MAX_RSS_KIB,
        "{label}: peak RSS {} KiB",
        m.max_rss_kib
    );
}

#[test]
fn yaml_alias_bombs_are_refused_naming_the_file_with_small_memory() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();

    // load-image.yaml: one chart filter's versions aliased M times.
    let cfg = d.join("load-image.yaml");
    std::fs::write(
        &cfg,
        bomb(
            "source:\n  intermediateBundlesPath: ./b\ntarget:\n  containerPrefixRegistry: 127.0.0.1:5000\n  repo:\n    kind: LOCAL\n    path: ./r\ncharts:\n",
            "  - name: c\n    versions: &v\n",
            |i| format!("      - \"1.{i}\"\n"),
            |_| "  - {name: c, versions: *v}\n".into(),
            K,
            M,
        ),
    )
    .unwrap();
    let m = run_measured(
        d,
        &["sync", "--config", "load-image.yaml", "--dry-run"],
        &[],
    );
    assert_bounded_refusal("load-image.yaml", &m, 2, &["load-image.yaml"]);

    // Bundle manifest: a chart's image list aliased by M more charts.
    let man = d.join("bomb-manifest.yaml");
    std::fs::write(
        &man,
        bomb(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {name: p, version: 1.0.0}\nspec:\n  charts:\n",
            "    - name: c\n      path: ./chart\n      images: &i\n",
            |i| format!("        - example.com/a/b{i}:1\n"),
            |n| format!("    - {{name: c{n}, path: ./chart, images: *i}}\n"),
            K,
            M,
        ),
    )
    .unwrap();
    let m = run_measured(d, &["pack", "bomb-manifest.yaml", "-o", "out"], &[]);
    assert_bounded_refusal("bundle manifest", &m, 2, &["bomb-manifest.yaml"]);
    assert!(!d.join("out").exists() || tree(&d.join("out")).is_empty());

    // A classic chart repo whose index.yaml is a bomb.
    let index = bomb(
        "apiVersion: v1\nentries:\n",
        "  a: &e\n",
        |i| format!("    - {{name: a, version: \"0.{i}.0\", urls: [a.tgz]}}\n"),
        |n| format!("  c{n}: *e\n"),
        K / 2,
        M,
    );
    let server = ChartServer::start(ServerConfig {
        index_yaml: Some(index),
        ..Default::default()
    });
    std::fs::write(
        d.join("repo-manifest.yaml"),
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: p, version: 1.0.0}}\nspec:\n  charts:\n    - name: a\n      version: 0.1.0\n      repo: {}\n",
            server.url()
        ),
    )
    .unwrap();
    let m = run_measured(d, &["pack", "repo-manifest.yaml", "-o", "out2"], &[]);
    assert_bounded_refusal("repo index.yaml", &m, 1, &["index.yaml"]);

    // values.yaml and hints.yaml inside a bundle that is otherwise intact
    // (checksums fixed): inspect and sync --dry-run refuse it.
    let product = make_chart_product(d, "shop", 1, 1, 4 << 10, 7);
    let out = pack_ok(d, &product.manifest, &d.join("base-out"));
    let base = out.join(&product.bundle_name);
    let values_bomb = bomb(
        "image:\n  registry: example.com\n  repository: shop/app0\n  tag: \"1.0\"\n",
        "list: &l\n",
        |i| format!("  - v{i}\n"),
        |n| format!("k{n}: *l\n"),
        K,
        M,
    );
    let hints_bomb = bomb(
        "",
        "- &h \"{{ .image.registry }}/{{ .image.repository }}:{{ .image.tag }}\"\n- &l\n",
        |i| format!("  - h{i}\n"),
        |_| "- *l\n".into(),
        K,
        M,
    );
    for (label, entry, text) in [
        ("values", "original-chart/values.yaml", values_bomb),
        ("hints", "hints.yaml", hints_bomb),
    ] {
        let bundles = d.join(format!("bundles-{label}"));
        std::fs::create_dir_all(&bundles).unwrap();
        let bad = bundles.join(&product.bundle_name);
        rewrite_bundle(&base, &bad, true, |outer, _| {
            let e = outer
                .iter_mut()
                .find(|(n, _)| n == entry)
                .unwrap_or_else(|| panic!("{entry} not in the bundle"));
            e.1 = text.into_bytes();
        });
        // inspect only counts hints (by lines when they do not parse): it
        // must finish with small memory.
        let m = run_measured(d, &["inspect", bad.to_str().unwrap()], &[]);
        eprintln!(
            "inspect {label}: exit {:?}, max RSS {} KiB",
            m.code, m.max_rss_kib
        );
        assert!(
            m.code.is_some(),
            "inspect {label}: killed by {:?}",
            m.signal
        );
        assert!(
            m.max_rss_kib < MAX_RSS_KIB,
            "inspect {label}: {} KiB",
            m.max_rss_kib
        );
        let site = d.join(format!("site-{label}"));
        std::fs::create_dir_all(&site).unwrap();
        let cfg = sync_config(&site, &bundles, "127.0.0.1:1", None);
        let m = run_measured(
            &site,
            &["sync", "--config", cfg.to_str().unwrap(), "--dry-run"],
            &[],
        );
        let file = if label == "values" {
            "values.yaml"
        } else {
            "hints"
        };
        assert_bounded_refusal(&format!("sync --dry-run {label}"), &m, 1, &[file]);
    }
}

// ---- secrets in URLs; pack authenticates to classic chart repos ----

/// A chart `name` 1.0.0 packaged as .tgz (by bundler's own packager, as
/// `helm package` lays it out), whose one image is in `product`'s layout.
fn chart_tgz(product: &Product, name: &str) -> Vec<u8> {
    let dir = product.dir.join(format!("{name}-chart"));
    let chart = bundler::chart::Chart::from_dir(&dir).unwrap();
    bundler::chart::package::package_tgz(&chart).unwrap()
}

fn repo_manifest(d: &Path, file: &str, product: &Product, repo: &str, auth: &str) -> PathBuf {
    let p = d.join(file);
    let hints = d.join("shop-hints.yaml");
    std::fs::write(
        &p,
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: shop, version: 1.0.0}}\nspec:\n  charts:\n    - name: shop\n      version: 1.0.0\n      repo: {repo}\n      hints: {}\n      images:\n        - archive: {}\n{auth}",
            hints.display(),
            product.layout.display()
        ),
    )
    .unwrap();
    p
}

fn bundle_json(bundle: &Path) -> String {
    let outer = read_tar(&std::fs::read(bundle).unwrap());
    String::from_utf8(
        outer
            .iter()
            .find(|(n, _)| n == "bundle.json")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap()
}

#[test]
fn pack_authenticates_to_classic_chart_repos_and_stores_no_credentials() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let (user, pass) = ("charts-user", "Pw-9f3kQz");
    let product = make_chart_product(d, "shop", 1, 1, 4 << 10, 3);
    let tgz = chart_tgz(&product, "shop");
    let repo = ChartServer::start(ServerConfig {
        auth: Some((user.into(), pass.into())),
        ..Default::default()
    });
    repo.put_chart("", "shop-1.0.0.tgz", tgz.clone());

    // No credentials: refused by the repo, and the message says so.
    let m = repo_manifest(d, "noauth.yaml", &product, &repo.url(), "");
    let o = run(d, &["pack", m.to_str().unwrap(), "-o", "out0"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));

    // auth with the password from the environment.
    let auth =
        format!("      auth:\n        username: {user}\n        passwordEnv: HARDEN_CHARTS_PW\n");
    let m = repo_manifest(d, "env.yaml", &product, &repo.url(), &auth);
    let o = run(
        d,
        &["pack", m.to_str().unwrap(), "-o", "out1"],
        &[("HARDEN_CHARTS_PW", pass)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let bj = bundle_json(&d.join("out1/shop_1.0.0.bundle.tar"));
    assert!(!bj.contains(pass), "{bj}");

    // From a file, relative to the manifest.
    std::fs::write(d.join("charts.pw"), format!("{pass}\n")).unwrap();
    let auth =
        "      auth:\n        usernameEnv: HARDEN_CHARTS_USER\n        passwordFile: charts.pw\n"
            .to_string();
    let m = repo_manifest(d, "file.yaml", &product, &repo.url(), &auth);
    let o = run(
        d,
        &["pack", m.to_str().unwrap(), "-o", "out2"],
        &[("HARDEN_CHARTS_USER", user)],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // An inline password is refused, naming the key; a missing variable too.
    let auth = format!("      auth:\n        username: {user}\n        password: {pass}\n");
    let m = repo_manifest(d, "inline.yaml", &product, &repo.url(), &auth);
    let o = run(d, &["pack", m.to_str().unwrap(), "-o", "out3"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("auth.password"), "{}", stderr(&o));
    assert!(!stderr(&o).contains(pass), "{}", stderr(&o));
    let m = repo_manifest(
        d,
        "unset.yaml",
        &product,
        &repo.url(),
        "      auth: {username: u, passwordEnv: HARDEN_UNSET_VAR}\n",
    );
    let o = run(d, &["pack", m.to_str().unwrap(), "-o", "out4"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("HARDEN_UNSET_VAR"), "{}", stderr(&o));

    // user:pw@ in the repo URL works, and bundle.json keeps no userinfo.
    let with_creds = repo
        .url()
        .replace("http://", &format!("http://{user}:{pass}@"));
    let m = repo_manifest(d, "url.yaml", &product, &with_creds, "");
    let o = run(d, &["pack", m.to_str().unwrap(), "-o", "out5"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bj = bundle_json(&d.join("out5/shop_1.0.0.bundle.tar"));
    assert!(!bj.contains(pass) && !bj.contains(user), "{bj}");
    assert!(
        bj.contains(&repo.url()),
        "the source is still recorded: {bj}"
    );
    assert!(!stdout(&o).contains(pass) && !stderr(&o).contains(pass));

    // The index lists the archive on another host: the repo's credentials
    // do not go there unless passCredentials says so (helm's rule).
    let cdn = ChartServer::start(ServerConfig {
        auth: Some((user.into(), pass.into())),
        ..Default::default()
    });
    cdn.put_chart("", "shop-1.0.0.tgz", tgz.clone());
    let digest = sha256_hex(&tgz);
    let index = format!(
        "apiVersion: v1\nentries:\n  shop:\n    - name: shop\n      version: 1.0.0\n      apiVersion: v2\n      digest: {digest}\n      urls: [\"http://localhost:{}/charts/shop-1.0.0.tgz\"]\n",
        cdn.port
    );
    let front = ChartServer::start(ServerConfig {
        auth: Some((user.into(), pass.into())),
        index_yaml: Some(index),
        ..Default::default()
    });
    let auth =
        format!("      auth:\n        username: {user}\n        passwordEnv: HARDEN_CHARTS_PW\n");
    let m = repo_manifest(d, "cdn.yaml", &product, &front.url(), &auth);
    let o = run(
        d,
        &["pack", m.to_str().unwrap(), "-o", "out6"],
        &[("HARDEN_CHARTS_PW", pass)],
    );
    assert!(!o.status.success(), "credentials went to another host");
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    assert!(
        cdn.auth_log().iter().all(|a| a.is_empty()),
        "the other host got credentials: {:?}",
        cdn.auth_log()
    );
    let auth = format!("{auth}        passCredentials: true\n");
    let m = repo_manifest(d, "cdn-pass.yaml", &product, &front.url(), &auth);
    let o = run(
        d,
        &["pack", m.to_str().unwrap(), "-o", "out7"],
        &[("HARDEN_CHARTS_PW", pass)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(cdn.auth_log().iter().any(|a| a.starts_with("Basic ")));
}

#[test]
fn sync_never_prints_or_stores_url_credentials() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let (user, pass) = ("cm-user", "Cm-Secret-7788");
    let product = make_chart_product(d, "shop", 1, 1, 4 << 10, 5);
    let out = pack_ok(d, &product.manifest, &d.join("out"));
    let reg = Registry::start(Mode::Plain);
    let cm = ChartServer::start(ServerConfig {
        auth: Some((user.into(), pass.into())),
        ..Default::default()
    });
    let url = cm
        .url()
        .replace("http://", &format!("http://{user}:{pass}@"));
    let cfg = d.join("load-image.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {}\n  repo:\n    kind: CHARTMUSEUM\n    url: {url}\n",
            out.display(),
            reg.host()
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    for args in [
        vec!["sync", "--config", cfg_s, "--insecure", "--dry-run"],
        vec![
            "sync",
            "--config",
            cfg_s,
            "--insecure",
            "--dry-run",
            "--json",
        ],
        vec!["sync", "--config", cfg_s, "--insecure"],
        vec!["sync", "--config", cfg_s, "--insecure", "--json"],
    ] {
        let o = run(d, &args, &[]);
        let (so, se) = (stdout(&o), stderr(&o));
        assert!(o.status.success(), "{args:?}: {se}");
        assert!(
            !so.contains(pass) && !se.contains(pass),
            "{args:?} printed the password:\n{so}\n{se}"
        );
        assert!(
            so.contains(&cm.host()) || se.contains(&cm.host()),
            "{args:?}: {so}{se}"
        );
    }
    // The chart went up with the URL's credentials...
    assert!(cm.chart("", "shop-1.0.0.tgz").is_some(), "{:?}", cm.log());
    // ...and the state file records the URL without them.
    let state = std::fs::read_to_string(d.join(".bundler/synced.json")).unwrap();
    assert!(!state.contains(pass) && !state.contains(user), "{state}");
    assert!(state.contains(&cm.url()), "{state}");
}

// ---- concurrent runs, file modes ----

/// A manifest packing `n` charts `<prefix>0..` that share one image.
fn many_charts(d: &Path, prefix: &str, n: usize, seed: u64) -> PathBuf {
    let p = make_chart_product(d, prefix, 1, 1, 4 << 10, seed);
    let chart_src = d.join(format!("{prefix}-chart"));
    let hints = d.join(format!("{prefix}-hints.yaml"));
    let mut m = format!(
        "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: {prefix}, version: 1.0.0}}\nspec:\n  charts:\n"
    );
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let c = d.join(format!("{name}-chart"));
        std::fs::create_dir_all(c.join("templates")).unwrap();
        std::fs::write(
            c.join("Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\n"),
        )
        .unwrap();
        for f in ["values.yaml", "templates/deploy.yaml"] {
            std::fs::copy(chart_src.join(f), c.join(f)).unwrap();
        }
        m.push_str(&format!(
            "    - name: {name}\n      path: {}\n      hints: {}\n      images:\n        - archive: {}\n",
            c.display(),
            hints.display(),
            p.layout.display()
        ));
    }
    let path = d.join(format!("{prefix}-many.yaml"));
    std::fs::write(&path, m).unwrap();
    path
}

fn local_sync_config(d: &Path, name: &str, bundles: &Path, registry: &str, repo: &Path) -> PathBuf {
    let cfg = d.join(name);
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {registry}\n  repo:\n    kind: LOCAL\n    path: {}\n",
            bundles.display(),
            repo.display()
        ),
    )
    .unwrap();
    cfg
}

fn index_entries(repo: &Path) -> Vec<String> {
    let v: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo.join("index.yaml")).unwrap())
            .unwrap();
    let mut names: Vec<String> = v["entries"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn two_syncs_into_one_local_repo_at_once_keep_every_entry() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    const N: usize = 8;
    let a = many_charts(d, "alpha", N, 11);
    let b = many_charts(d, "beta", N, 12);
    let out_a = pack_ok(d, &a, &d.join("bundles-a"));
    let out_b = pack_ok(d, &b, &d.join("bundles-b"));
    let reg = Registry::start(Mode::Plain);
    for round in 0..3 {
        let site = d.join(format!("site{round}"));
        std::fs::create_dir_all(&site).unwrap();
        let repo = site.join("local-repo");
        let ca = local_sync_config(&site, "load-a.yaml", &out_a, &reg.host(), &repo);
        let cb = local_sync_config(&site, "load-b.yaml", &out_b, &reg.host(), &repo);
        let spawn = |cfg: &Path| {
            command(
                &site,
                &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
                &[],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        };
        let (pa, pb) = (spawn(&ca), spawn(&cb));
        let (oa, ob) = (
            pa.wait_with_output().unwrap(),
            pb.wait_with_output().unwrap(),
        );
        assert!(oa.status.success(), "round {round} a: {}", stderr(&oa));
        assert!(ob.status.success(), "round {round} b: {}", stderr(&ob));
        let mut want: Vec<String> = (0..N)
            .flat_map(|i| [format!("alpha{i}"), format!("beta{i}")])
            .collect();
        want.sort();
        assert_eq!(
            index_entries(&repo),
            want,
            "round {round}: index.yaml lost entries"
        );
        let state = std::fs::read_to_string(site.join(".bundler/synced.json")).unwrap();
        for w in &want {
            assert!(
                state.contains(&format!("\"{w}\"")),
                "round {round}: synced.json lost {w}"
            );
        }
        // No temp file of either run is left.
        let left: Vec<String> = tree(&site)
            .into_iter()
            .filter(|p| p.contains("partial") || p.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "round {round}: {left:?}");
    }
}

#[test]
fn local_repo_files_follow_the_umask() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let product = make_chart_product(d, "shop", 1, 1, 4 << 10, 9);
    let out = pack_ok(d, &product.manifest, &d.join("out"));
    let reg = Registry::start(Mode::Plain);
    for (umask, want) in [(0o022, 0o644), (0o027, 0o640)] {
        let site = d.join(format!("site-{umask:o}"));
        std::fs::create_dir_all(&site).unwrap();
        let repo = site.join("repo");
        let cfg = local_sync_config(&site, "load-image.yaml", &out, &reg.host(), &repo);
        let mut c = command(
            &site,
            &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
            &[],
        );
        // SAFETY: umask is async-signal-safe.
        unsafe {
            c.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        for f in ["index.yaml", "shop-1.0.0.tgz"] {
            let mode = std::fs::metadata(repo.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, want, "{f} under umask {umask:o}: {mode:o}");
        }
    }
}

// ---- signals ----

/// Wait until a file whose name contains `part` appears in `dir`.
fn wait_for_file(dir: &Path, part: &str, timeout: Duration) -> Option<PathBuf> {
    wait_for(dir, |n| n.contains(part), timeout)
}

fn wait_for(dir: &Path, want: impl Fn(&str) -> bool, timeout: Duration) -> Option<PathBuf> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if want(&e.file_name().to_string_lossy()) {
                    return Some(e.path());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Pack pulling from a registry behind a slow proxy: each request takes
/// `latency`, so the run is mid-bundle for seconds.
struct SlowSource {
    _reg: Registry,
    proxy: support::faulty_proxy::FaultyProxy,
    manifest: PathBuf,
}

fn slow_source(d: &Path, latency: Duration) -> SlowSource {
    let reg = Registry::start(Mode::Plain);
    let layers: Vec<Vec<u8>> = (0..6)
        .map(|i| support::images::pseudo_random(100 + i, 256 << 10))
        .collect();
    let refs: Vec<&[u8]> = layers.iter().map(|l| l.as_slice()).collect();
    support::images::push_simple(&reg, d, "slow/app:1", &refs);
    let proxy = support::faulty_proxy::FaultyProxy::start(
        reg.host().rsplit(':').next().unwrap().parse().unwrap(),
        support::faulty_proxy::Faults {
            latency,
            ..support::faulty_proxy::Faults::none()
        },
    );
    // A chart bundle from disk (finished first), then the slow images.
    let fast = make_chart_product(d, "fast", 1, 1, 4 << 10, 41);
    let mut text = std::fs::read_to_string(&fast.manifest)
        .unwrap()
        .replace("name: fast, version", "name: slow, version");
    text.push_str(&format!("  images:\n    - {}/slow/app:1\n", proxy.host()));
    let manifest = d.join("slow.yaml");
    std::fs::write(&manifest, text).unwrap();
    SlowSource {
        _reg: reg,
        proxy,
        manifest,
    }
}

#[test]
fn sigint_and_sigterm_during_pack_remove_partial_files_and_exit_130_143() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let src = slow_source(d, Duration::from_millis(700));
    for (sig, code, name) in [
        (libc::SIGINT, 130, "SIGINT"),
        (libc::SIGTERM, 143, "SIGTERM"),
    ] {
        let out = d.join(format!("out-{name}"));
        let child = command(
            d,
            &[
                "pack",
                src.manifest.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--insecure",
                "--concurrency",
                "1",
            ],
            &[],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let partial = wait_for_file(
            &out,
            "slow-images_1.0.0.bundle.tar.partial-",
            Duration::from_secs(60),
        )
        .unwrap_or_else(|| panic!("{name}: no partial bundle appeared"));
        // The chart bundle of this run is finished by now, under its temp
        // name: a run's outputs are renamed together at its end (issue 20.14).
        assert!(
            !out.join("fast_1.0.0.bundle.tar").exists()
                && tree(&out)
                    .iter()
                    .any(|n| n.starts_with(".fast_1.0.0.bundle.tar.partial-")),
            "{:?}",
            tree(&out)
        );
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        eprintln!("{name}: {}", err.trim());
        assert_eq!(o.status.code(), Some(code), "{name}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("interrupted")).collect();
        assert_eq!(
            lines.len(),
            1,
            "{name}: one line saying what was interrupted: {err}"
        );
        assert!(
            lines[0].contains(name) && lines[0].contains("slow-images_1.0.0.bundle.tar"),
            "{}",
            lines[0]
        );
        assert!(
            !partial.exists(),
            "{name}: {} left behind",
            partial.display()
        );
        assert!(tree(&out).is_empty(), "{name}: {:?}", tree(&out));
    }
    assert!(src.proxy.stats().dropped() == 0);
}

#[test]
fn a_later_pack_removes_stale_partial_files_of_dead_processes_only() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let product = make_product(d, "small", 1, 1, 4 << 10, 21);
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = out.join(format!(".small-images_1.0.0.bundle.tar.partial-{dead}"));
    let stale2 = out.join(format!(".small_1.0.0_amd64.tar.partial-{dead}-3"));
    let live = out.join(format!(".other.bundle.tar.partial-{}", std::process::id()));
    for p in [&stale, &stale2, &live] {
        std::fs::write(p, vec![0u8; 1 << 20]).unwrap();
    }
    pack_ok(d, &product.manifest, &out);
    assert!(!stale.exists() && !stale2.exists(), "{:?}", tree(&out));
    assert!(live.exists(), "a live process's partial file was removed");
}

#[test]
fn sigterm_during_sync_says_what_was_interrupted_keeps_chunked_state_and_the_rerun_resumes() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let product = make_product(d, "big", 1, 1, 2 << 20, 31);
    let out = pack_ok(d, &product.manifest, &d.join("out"));
    let reg = Registry::start(Mode::Plain);
    let proxy = support::faulty_proxy::FaultyProxy::start(
        reg.host().rsplit(':').next().unwrap().parse().unwrap(),
        support::faulty_proxy::Faults {
            latency: Duration::from_millis(1000),
            ..support::faulty_proxy::Faults::none()
        },
    );
    let site = d.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = sync_config(&site, &out, &proxy.host(), None);
    // The 2 MiB layer goes up in 128 KiB PATCHes, one per second.
    let chunked = [
        ("BUNDLER_CHUNK_THRESHOLD", "1048576"),
        ("BUNDLER_CHUNK_SIZE", "131072"),
    ];
    let child = command(
        &site,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
        &chunked,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let state_dir = site.join(".upload-state");
    let state = wait_for(
        &state_dir,
        |n| n.ends_with(".json"),
        Duration::from_secs(60),
    )
    .expect("no chunked-upload state was written");
    // The next PATCH is now waiting in the proxy's latency: taking the
    // registry away before it is forwarded leaves the registry holding
    // exactly what the state file says (docker-registry cancels a session
    // whose offset moved behind the client's back, so a kill while a chunk
    // is being written could not resume against it anyway).
    proxy.set_down(true);
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    eprintln!("sync: {}", err.trim());
    assert_eq!(o.status.code(), Some(143), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("interrupted")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("SIGTERM") && lines[0].contains("sync"),
        "{}",
        lines[0]
    );
    assert!(state.exists(), "the chunked-upload state was removed");
    let left: Vec<String> = tree(&site)
        .into_iter()
        .filter(|p| p.contains(".partial-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    proxy.set_faults(support::faulty_proxy::Faults::none());
    proxy.set_down(false);
    let mut env = chunked.to_vec();
    env.push(("BUNDLER_LOG", "bundler=info"));
    let o = run(
        &site,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming upload"), "{}", stderr(&o));
    assert_synced(&Http::new(&reg), &product.images);
}

// ---- non-regular files ----

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Run with a deadline: a hang is a failure, not a stuck test.
fn run_deadline(dir: &Path, args: &[&str], deadline: Duration) -> std::process::Output {
    let mut child = command(dir, args, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still running after {deadline:?} (hangs on a FIFO)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fifos_as_archive_or_bundles_path_are_refused_not_hung_on() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let fifo = d.join("images.tar");
    mkfifo(&fifo);
    std::fs::write(
        d.join("m.yaml"),
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: p, version: 1.0.0}}\nspec:\n  images:\n    - archive: {}\n",
            fifo.display()
        ),
    )
    .unwrap();
    let o = run_deadline(d, &["pack", "m.yaml", "-o", "out"], Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("FIFO") && stderr(&o).contains("images.tar"),
        "{}",
        stderr(&o)
    );
    assert!(tree(&d.join("out")).is_empty());

    let bundles = d.join("pkg_1.0.0_amd64.tar");
    mkfifo(&bundles);
    let cfg = sync_config(d, &bundles, "127.0.0.1:1", None);
    let o = run_deadline(
        d,
        &["sync", "--config", cfg.to_str().unwrap(), "--dry-run"],
        Duration::from_secs(20),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("FIFO") && stderr(&o).contains("intermediateBundlesPath"),
        "{}",
        stderr(&o)
    );

    // A chart path and a hints file that are FIFOs.
    let chart = d.join("chart.tgz");
    mkfifo(&chart);
    let hints = d.join("hints.yaml");
    mkfifo(&hints);
    let product = make_chart_product(d, "shop", 1, 1, 4 << 10, 51);
    std::fs::write(
        d.join("c.yaml"),
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: p, version: 1.0.0}}\nspec:\n  charts:\n    - name: shop\n      path: {}\n",
            chart.display()
        ),
    )
    .unwrap();
    let o = run_deadline(d, &["pack", "c.yaml", "-o", "out"], Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("FIFO") && stderr(&o).contains("chart.tgz"),
        "{}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&product.manifest).unwrap();
    let hints_line = text
        .lines()
        .find(|l| l.contains("hints:"))
        .unwrap()
        .to_string();
    std::fs::write(
        d.join("h.yaml"),
        text.replace(&hints_line, &format!("      hints: {}", hints.display())),
    )
    .unwrap();
    let o = run_deadline(d, &["pack", "h.yaml", "-o", "out"], Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("FIFO") && stderr(&o).contains("hints.yaml"),
        "{}",
        stderr(&o)
    );

    // A FIFO named like a bundle: verify refuses it too.
    let b = d.join("x.bundle.tar");
    mkfifo(&b);
    let o = run_deadline(d, &["verify", b.to_str().unwrap()], Duration::from_secs(20));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("FIFO"), "{}", stderr(&o));
}
