//! Hardening, round 3 (issue 20), through the `bundler` binary: bombs
//! inside chart archives and subcharts, deep YAML nesting and quadratic tar
//! indexing are refused in small memory; upgrade, serve, credential and
//! consistency faults.
mod reliability_support;
mod support;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reliability_support::*;
use support::bundler_bin;

// ---- measured runs ----

struct Measured {
    code: Option<i32>,
    stderr: String,
    max_rss_kib: i64,
    seconds: f64,
}

/// Address-space cap of measured runs: an unbounded expansion aborts
/// instead of swapping the shared box.
const AS_LIMIT: u64 = 2 << 30;
/// Peak RSS allowed for a refused bomb (issue 20: under 64 MiB).
const MAX_RSS_KIB: i64 = 64 << 10;

/// Run bundler under RLIMIT_AS, killed after `deadline`. Peak RSS comes
/// from `/usr/bin/time` (the child's own `ru_maxrss` would include this
/// test process's memory at the fork: Linux carries it across exec).
fn run_measured(dir: &Path, args: &[&str], deadline: Duration) -> Measured {
    let tag = format!("{}-{:?}", std::process::id(), std::thread::current().id());
    let err_path = dir.join(format!(".measured-err-{tag}"));
    let rss_path = dir.join(format!(".measured-rss-{tag}"));
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("%M").arg("-o").arg(&rss_path);
    c.arg(bundler_bin()).current_dir(dir).args(args);
    c.env("BUNDLER_STATE_DIR", dir.join(".upload-state"));
    c.env_remove("BUNDLER_LOG");
    c.stdout(std::process::Stdio::null());
    c.stderr(std::fs::File::create(&err_path).unwrap());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: AS_LIMIT,
                rlim_max: AS_LIMIT,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = c.spawn().expect("spawn /usr/bin/time bundler");
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > deadline {
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("bundler {args:?} still running after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rss = std::fs::read_to_string(&rss_path).unwrap_or_default();
    let m = Measured {
        code: status.code(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        // The last line is the figure (a killed child adds a line before).
        max_rss_kib: rss
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(i64::MAX),
        seconds: started.elapsed().as_secs_f64(),
    };
    let _ = std::fs::remove_file(err_path);
    let _ = std::fs::remove_file(rss_path);
    m
}

/// A refusal: non-zero exit, the expected words, a short error (no
/// quoted megabytes), small memory.
fn assert_refused(label: &str, m: &Measured, expect: &[&str]) {
    eprintln!(
        "{label}: exit {:?}, {:.2} s, max RSS {} KiB: {}",
        m.code,
        m.seconds,
        m.max_rss_kib,
        m.stderr.chars().take(600).collect::<String>()
    );
    assert!(
        m.code.is_some_and(|c| c != 0),
        "{label}: exit {:?}: {}",
        m.code,
        m.stderr.chars().take(2000).collect::<String>()
    );
    for e in expect {
        assert!(
            m.stderr.contains(e),
            "{label}: expected {e:?} in {}",
            m.stderr.chars().take(2000).collect::<String>()
        );
    }
    assert!(
        m.stderr.len() < 4096,
        "{label}: {} bytes of error output",
        m.stderr.len()
    );
    assert!(
        m.max_rss_kib < MAX_RSS_KIB,
        "{label}: peak RSS {} KiB",
        m.max_rss_kib
    );
}

// ---- chart archive bombs, generated on the fly ----

/// A raw tar header block.
fn header(name: &[u8], typeflag: u8, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h.as_mut_bytes()[156] = typeflag;
    h.set_cksum();
    *h.as_bytes()
}

/// Write `n` bytes of `byte` and the tar padding after them.
fn fill(w: &mut impl Write, byte: u8, n: u64) {
    let chunk = vec![byte; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..k]).unwrap();
        left -= k as u64;
    }
    let pad = (512 - n % 512) % 512;
    w.write_all(&vec![0u8; pad as usize]).unwrap();
}

/// A subchart archive `bomb/...` whose second entry's GNU long name is
/// `name_len` bytes (streamed into gzip: a few hundred KB).
fn long_name_bomb(name_len: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let chart = b"apiVersion: v2\nname: bomb\nversion: 1.0.0\n";
    gz.write_all(&header(b"bomb/Chart.yaml", b'0', chart.len() as u64))
        .unwrap();
    gz.write_all(chart).unwrap();
    gz.write_all(&[0u8; 512 - 41]).unwrap();
    gz.write_all(&header(b"././@LongLink", b'L', name_len))
        .unwrap();
    gz.write_all(b"bomb/").unwrap();
    fill(&mut gz, b'a', name_len - 5);
    gz.write_all(&header(b"bomb/x", b'0', 1)).unwrap();
    gz.write_all(b"x").unwrap();
    gz.write_all(&[0u8; 511 + 1024]).unwrap();
    gz.finish().unwrap()
}

/// A subchart archive `big/...` with `files` files of `size` zero bytes.
fn zeros_subchart(files: usize, size: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let chart = b"apiVersion: v2\nname: big\nversion: 1.0.0\n";
    gz.write_all(&header(b"big/Chart.yaml", b'0', chart.len() as u64))
        .unwrap();
    gz.write_all(chart).unwrap();
    gz.write_all(&[0u8; 512 - 40]).unwrap();
    for i in 0..files {
        gz.write_all(&header(format!("big/zeros{i}").as_bytes(), b'0', size))
            .unwrap();
        fill(&mut gz, 0, size);
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap()
}

/// A copy of the real argo-cd chart (with its vendored redis-ha archive)
/// plus `extra` files, and a bundle manifest packing it without images.
fn real_chart_with(d: &Path, extra: &[(&str, &[u8])]) -> PathBuf {
    let src = support::fixture("real-charts/argo-cd");
    let dst = d.join("argo-cd");
    let st = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    for (rel, data) in extra {
        let p = dst.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let m = d.join("argo-manifest.yaml");
    std::fs::write(
        &m,
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: argo, version: 1.0.0}}\nspec:\n  charts:\n    - name: argo-cd\n      path: {}\n",
            dst.display()
        ),
    )
    .unwrap();
    m
}

/// A copy of `src` with `entries` added to (or replacing) the outer tar,
/// each listed in bundle.json with its checksum (an intact-looking bundle).
fn bundle_with(src: &Path, dst: &Path, entries: &[(&str, Vec<u8>)]) {
    let mut outer = read_tar(&std::fs::read(src).unwrap());
    for (name, data) in entries {
        outer.retain(|(n, _)| n != name);
        outer.push((name.to_string(), data.clone()));
    }
    let bj = outer.iter().position(|(n, _)| n == "bundle.json").unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&outer[bj].1).unwrap();
    for (name, data) in entries {
        v["files"][*name] = serde_json::Value::String(digest_of(data));
    }
    outer[bj].1 = serde_json::to_vec_pretty(&v).unwrap();
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::write(dst, write_tar(&outer)).unwrap();
}

/// A packed bundle of a small chart product, in `d/base-out`.
fn base_bundle(d: &Path) -> (Product, PathBuf) {
    let product = make_chart_product(d, "shop", 1, 1, 4 << 10, 20);
    let out = pack_ok(d, &product.manifest, &d.join("base-out"));
    let b = out.join(&product.bundle_name);
    (product, b)
}

/// verify and sync --dry-run of a bundle directory holding `bundle`.
fn verify_and_dry_run(d: &Path, label: &str, bundles: &Path, expect: &[&str]) {
    let bundle = std::fs::read_dir(bundles)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let m = run_measured(
        d,
        &["verify", bundle.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_refused(&format!("verify {label}"), &m, expect);
    let site = d.join(format!("site-{label}"));
    std::fs::create_dir_all(&site).unwrap();
    let cfg = sync_config(&site, bundles, "127.0.0.1:1", None);
    let m = run_measured(
        &site,
        &["sync", "--config", cfg.to_str().unwrap(), "--dry-run"],
        Duration::from_secs(60),
    );
    assert_refused(&format!("sync --dry-run {label}"), &m, expect);
}

/// Item 1: a 128 MiB GNU long name inside a subchart archive (130 KB of
/// gzip) is refused by its declared size - by pack (next to a real chart),
/// by verify and by sync --dry-run - with a short error naming the
/// subchart and the offset, in small memory.
#[test]
fn long_name_bombs_in_subcharts_are_refused_short_and_small() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let bomb = long_name_bomb(128 << 20);
    let expect = [
        "charts/bomb-1.0.0.tgz",
        "GNU long name of 134217728 bytes at offset 1024",
    ];

    let manifest = real_chart_with(d, &[("charts/bomb-1.0.0.tgz", &bomb)]);
    let m = run_measured(
        d,
        &["pack", manifest.to_str().unwrap(), "-o", "out"],
        Duration::from_secs(60),
    );
    assert_refused("pack", &m, &expect);

    let (product, base) = base_bundle(d);
    let bundles = d.join("bundles-long-name");
    bundle_with(
        &base,
        &bundles.join(&product.bundle_name),
        &[("original-chart/charts/bomb-1.0.0.tgz", bomb)],
    );
    verify_and_dry_run(d, "long-name", &bundles, &expect);
}

/// Item 1: three subcharts of 240 MiB each (4 files of 60 MiB zeros, each
/// under the per-file and per-archive limits) add up past the 512 MiB
/// budget of one chart with its subcharts; one alone passes.
#[test]
fn subcharts_add_up_against_one_expanded_size_budget() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let sub = zeros_subchart(4, 60 << 20);
    let (product, base) = base_bundle(d);

    let one = d.join("bundles-one");
    bundle_with(
        &base,
        &one.join(&product.bundle_name),
        &[("original-chart/charts/big-1.0.0.tgz", sub.clone())],
    );
    let m = run_measured(
        d,
        &["verify", one.join(&product.bundle_name).to_str().unwrap()],
        Duration::from_secs(60),
    );
    eprintln!(
        "verify one 240 MiB subchart: exit {:?}, {:.2} s, {} KiB",
        m.code, m.seconds, m.max_rss_kib
    );
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert!(m.max_rss_kib < MAX_RSS_KIB, "{} KiB", m.max_rss_kib);

    let three = d.join("bundles-three");
    let entries: Vec<(&str, Vec<u8>)> = [
        "original-chart/charts/big-1.0.0.tgz",
        "original-chart/charts/big2-1.0.0.tgz",
        "original-chart/charts/big3-1.0.0.tgz",
    ]
    .into_iter()
    .map(|n| (n, sub.clone()))
    .collect();
    bundle_with(&base, &three.join(&product.bundle_name), &entries);
    let expect = ["expands to more than 512 MiB", "charts/big3-1.0.0.tgz"];
    verify_and_dry_run(d, "three-subcharts", &three, &expect);

    let manifest = real_chart_with(
        d,
        &[
            ("charts/big-1.0.0.tgz", &sub),
            ("charts/big2-1.0.0.tgz", &sub),
            ("charts/big3-1.0.0.tgz", &sub),
        ],
    );
    let m = run_measured(
        d,
        &["pack", manifest.to_str().unwrap(), "-o", "out"],
        Duration::from_secs(60),
    );
    assert_refused("pack three subcharts", &m, &expect);
}

/// Item 2: flow sequences nested 150,000 deep (300 KB) in values.yaml and
/// Chart.yaml are refused at once, naming the file, by pack, verify and
/// sync --dry-run (the deserializer alone took minutes).
#[test]
fn deep_yaml_nesting_is_refused_at_once() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let deep = |head: &str| {
        format!(
            "{head}deep: {}1{}\n",
            "[".repeat(150_000),
            "]".repeat(150_000)
        )
        .into_bytes()
    };
    let values = deep("image:\n  registry: example.com\n  repository: shop/app0\n  tag: \"1.0\"\n");
    let chart_yaml = deep("apiVersion: v2\nname: shop\nversion: 1.0.0\n");
    let (product, base) = base_bundle(d);
    for (label, entry, text) in [
        ("values", "original-chart/values.yaml", &values),
        ("chart-yaml", "original-chart/Chart.yaml", &chart_yaml),
    ] {
        let bundles = d.join(format!("bundles-{label}"));
        bundle_with(
            &base,
            &bundles.join(&product.bundle_name),
            &[(entry, text.clone())],
        );
        let file = entry.trim_start_matches("original-chart/");
        verify_and_dry_run(d, label, &bundles, &["nested more than 128", file]);
    }
    let manifest = real_chart_with(d, &[("values.yaml", &values)]);
    let m = run_measured(
        d,
        &["pack", manifest.to_str().unwrap(), "-o", "out"],
        Duration::from_secs(60),
    );
    assert_refused("pack deep values", &m, &["nested more than 128"]);
    assert!(m.seconds < 20.0);
}

/// Item 3: a directory entry repeated after many files is told from a
/// duplicate file in one lookup. 40k files, then 40k repeats of a
/// directory whose name has the files' length and a long common prefix
/// (so each comparison of the old scan is a real one): the scan took ~45 s
/// here (debug build), the lookup takes the time of reading the headers.
#[test]
fn repeated_directory_entries_index_in_linear_time() {
    let work = tempfile::tempdir().unwrap();
    let p = work.path().join("dirs.tar");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    const N: usize = 20_000;
    let prefix = "p".repeat(90);
    let dir = format!("{prefix}_zzzzzzz/");
    for i in 0..N {
        w.write_all(&header(format!("{prefix}_{i:07}/").as_bytes(), b'5', 0))
            .unwrap();
    }
    for _ in 0..N {
        w.write_all(&header(dir.as_bytes(), b'5', 0)).unwrap();
    }
    w.write_all(&[0u8; 1024]).unwrap();
    drop(w);
    let f = std::fs::File::open(&p).unwrap();
    let len = f.metadata().unwrap().len();
    let t = Instant::now();
    let entries = bundler::bundle::reader::index_tar(&f, 0, len, "dirs.tar").unwrap();
    let took = t.elapsed();
    eprintln!("indexed {} entries in {took:?}", 2 * N);
    assert_eq!(entries.len(), N + 1);
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A repeated file is still a duplicate.
    let dup = work.path().join("dup.tar");
    let mut t = Vec::new();
    t.extend_from_slice(&header(b"d/a", b'0', 0));
    t.extend_from_slice(&header(b"d/a", b'5', 0));
    t.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&dup, t).unwrap();
    let f = std::fs::File::open(&dup).unwrap();
    let e = bundler::bundle::reader::index_tar(&f, 0, 2048, "dup.tar").unwrap_err();
    assert!(e.to_string().contains("duplicate entry"), "{e}");
}

// ---- upgrade: backups, secrets, pending releases, another chart ----

mod upgrade_site {
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::{Command, Output};

    use bundler::bundle::format::ReleaseInfo;
    use bundler::state::{SyncState, SyncedChart};

    use crate::support;
    use support::kube_api::{real_helm, KubeApi};
    use support::registry::{Mode, Registry};

    /// A chart `name` at `version` (a Deployment `<release>-web` whose
    /// image is under `global.imageRegistry`), packaged by the real helm.
    pub fn write_chart(dir: &Path, name: &str, version: &str) {
        let chart = dir.join(format!("src/{name}-{version}"));
        std::fs::create_dir_all(chart.join("templates")).unwrap();
        std::fs::write(
            chart.join("Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
        )
        .unwrap();
        std::fs::write(
            chart.join("values.yaml"),
            "global:\n  imageRegistry: docker.io\n",
        )
        .unwrap();
        std::fs::write(
            chart.join("templates/web.yaml"),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-web\nspec:\n  selector: {matchLabels: {app: {{ .Release.Name }}}}\n  template:\n    metadata: {labels: {app: {{ .Release.Name }}}}\n    spec:\n      containers:\n        - name: web\n          image: \"{{ .Values.global.imageRegistry }}/demo/web:1.0\"\n",
        )
        .unwrap();
        let out = Command::new(real_helm(4))
            .arg("package")
            .arg(&chart)
            .arg("-d")
            .arg(dir.join("charts"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", support::stderr(&out));
    }

    pub struct Site {
        pub _reg: Registry,
        pub api: KubeApi,
        pub work: tempfile::TempDir,
    }

    impl Site {
        /// demo 0.1.0 and 0.2.0 synced (LOCAL) for release `web`, its
        /// image in the registry; `web` installed from `chart` 0.1.0 in
        /// `ns` with `values`, standing at revision 2.
        pub fn new(chart: &str, ns: &str, values: &str) -> Site {
            let reg = Registry::start(Mode::Plain);
            let api = KubeApi::start();
            let work = tempfile::tempdir().unwrap();
            let w = work.path();
            for v in ["0.1.0", "0.2.0"] {
                write_chart(w, "demo", v);
            }
            if chart != "demo" {
                write_chart(w, chart, "0.1.0");
            }
            support::images::push_simple(&reg, w, "demo/web:1.0", &[b"layer of web"]);
            let config = w.join("load-image.yaml");
            std::fs::write(
                &config,
                format!(
                    "source:\n  intermediateBundlesPath: bundles\ntarget:\n  containerRegistry: {}\n  repo:\n    kind: LOCAL\n    path: ./local-repo\n",
                    reg.host()
                ),
            )
            .unwrap();
            let synced = |version: &str| SyncedChart {
                name: "demo".into(),
                version: version.into(),
                kind: "LOCAL".into(),
                chart_ref: w
                    .join(format!("charts/demo-{version}.tgz"))
                    .display()
                    .to_string(),
                repo_url: None,
                registry: reg.host(),
                release: Some(ReleaseInfo {
                    name: "web".into(),
                    namespace: None,
                }),
                synced_at: "2024-01-02T00:00:00Z".into(),
            };
            SyncState::record(&config, vec![synced("0.1.0"), synced("0.2.0")]).unwrap();
            let site = Site {
                _reg: reg,
                api,
                work,
            };
            let tgz = site.tgz(chart, "0.1.0");
            let vf = site.dir().join("current-values.yaml");
            std::fs::write(&vf, values).unwrap();
            for verb in ["install", "upgrade"] {
                site.api.helm(
                    4,
                    &[
                        verb,
                        "web",
                        &tgz,
                        "-n",
                        ns,
                        "--create-namespace",
                        "-f",
                        vf.to_str().unwrap(),
                        "--wait=watcher",
                        "--timeout",
                        "60s",
                    ],
                );
            }
            std::fs::remove_file(&vf).unwrap();
            site
        }

        pub fn dir(&self) -> &Path {
            self.work.path()
        }

        pub fn tgz(&self, name: &str, version: &str) -> String {
            self.dir()
                .join(format!("charts/{name}-{version}.tgz"))
                .display()
                .to_string()
        }

        pub fn command(&self, args: &[&str]) -> Command {
            let mut cmd = Command::new(support::bundler_bin());
            cmd.current_dir(self.dir()).args(args).arg("--insecure");
            for (k, v) in self.api.env() {
                cmd.env(k, v);
            }
            cmd.env("BUNDLER_HELM", real_helm(4));
            cmd.env_remove("BUNDLER_LOG");
            // SAFETY: umask only, between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::umask(0o022);
                    Ok(())
                });
            }
            cmd
        }

        pub fn bundler(&self, args: &[&str]) -> Output {
            self.command(args).output().expect("run bundler")
        }

        /// Files in backups/web (names), sorted.
        pub fn backups(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(self.dir().join("backups/web"))
                .map(|d| {
                    d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        }
    }

    pub fn text(o: &Output) -> String {
        format!(
            "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
            o.status.code(),
            support::stdout(o),
            support::stderr(o)
        )
    }
}

const SECRET_VALUES: &str = "auth:\n  user: app\n  pass: Old-PlainPass-77\ndb:\n  url: postgres://app:Old-DbPass-55@db:5432/shop\nenv:\n  - name: DB_PASSWORD\n    value: Old-EnvPass-33\n  - name: MODE\n    value: fast\nreplicas: 2\n";
const NEW_SECRET_VALUES: &str = "auth:\n  pass: New-PlainPass-88\ndb:\n  url: postgres://app:New-DbPass-66@db:5432/shop\nenv:\n  - name: DB_PASSWORD\n    value: New-EnvPass-44\n  - name: MODE\n    value: slow\n";

/// Items 4 and 5: under umask 022 the values backup is 0600 in a 0700
/// directory, and neither the terminal nor `--json` shows a secret (old or
/// new) while the diff still says which secrets changed.
#[test]
fn upgrade_backups_are_private_and_the_diff_masks_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let site = upgrade_site::Site::new("demo", "shop", SECRET_VALUES);
    std::fs::write(site.dir().join("new.yaml"), NEW_SECRET_VALUES).unwrap();
    let out = site.bundler(&["upgrade", "web", "-f", "new.yaml", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", upgrade_site::text(&out));
    let all = upgrade_site::text(&out);
    for secret in [
        "Old-PlainPass-77",
        "New-PlainPass-88",
        "Old-DbPass-55",
        "New-DbPass-66",
        "Old-EnvPass-33",
        "New-EnvPass-44",
    ] {
        assert!(!all.contains(secret), "{secret} shown:\n{all}");
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let diff: Vec<&str> = json["releases"][0]["valuesDiff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        diff.iter().any(|l| l.starts_with("~ auth.pass: ")),
        "{diff:?}"
    );
    assert!(
        diff.iter().any(|l| l.starts_with("~ db.url: ")
            && l.contains("postgres://app:[masked")
            && l.contains("@db:5432/shop")),
        "{diff:?}"
    );
    assert!(
        diff.iter()
            .any(|l| l.starts_with("~ env: ") && l.contains("slow")),
        "{diff:?}"
    );
    // The backup: helm's values of revision 2, private whatever the umask.
    let dir = site.dir().join("backups/web");
    let names = site.backups();
    assert_eq!(names.len(), 1, "{names:?}");
    let file = dir.join(&names[0]);
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("Old-PlainPass-77"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600, "backup file");
    assert_eq!(mode(&dir), 0o700, "backup directory");
    assert_eq!(site.api.revision("web", "shop"), Some(3));
}

/// Item 8: a backup that cannot be written whole (the file size limit
/// stands in for a full disk) leaves no backup file at all, and nothing
/// is changed.
#[test]
fn a_backup_that_does_not_fit_leaves_nothing_and_changes_nothing() {
    let site = upgrade_site::Site::new("demo", "shop", SECRET_VALUES);
    let mut cmd = site.command(&["upgrade", "web"]);
    // SAFETY: setrlimit and signal disposition only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", upgrade_site::text(&out));
    let err = support::stderr(&out);
    assert!(err.contains("values backup"), "{err}");
    let names = site.backups();
    assert!(names.is_empty(), "left behind: {names:?}");
    assert_eq!(site.api.revision("web", "shop"), Some(2));
}

/// Item 6: helm killed mid-upgrade leaves `web` pending-upgrade at
/// revision 3. The next upgrade stops before anything else (no backup, no
/// helm call that changes) and names the exact rollback; `--recover` backs
/// up revision 2's values, rolls back to it and upgrades.
#[test]
fn a_pending_release_is_detected_first_and_recovered_on_request() {
    let site = upgrade_site::Site::new("demo", "shop", "replicas: 2\n");
    site.api.never_ready("app=web");
    let mut helm = Command::new(support::kube_api::real_helm(4));
    helm.args([
        "upgrade",
        "web",
        &site.tgz("demo", "0.2.0"),
        "-n",
        "shop",
        "--wait=watcher",
        "--timeout",
        "120s",
    ]);
    for (k, v) in site.api.env() {
        helm.env(k, v);
    }
    let mut child = helm
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let h = site.api.history("web", "shop");
        if h.last().is_some_and(|l| l.1 == "pending-upgrade") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{h:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    site.api.never_ready("");
    let before = site.api.history("web", "shop");
    assert_eq!(before.last().unwrap().0, 3);

    let out = site.bundler(&["upgrade", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", upgrade_site::text(&out));
    let err = support::stderr(&out);
    assert!(err.contains("is pending-upgrade at revision 3"), "{err}");
    assert!(err.contains("rollback web 2 -n shop"), "{err}");
    assert!(err.contains("--recover"), "{err}");
    assert!(site.backups().is_empty(), "{:?}", site.backups());
    assert_eq!(site.api.history("web", "shop"), before);

    let out = site.bundler(&["upgrade", "web", "--recover", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}", upgrade_site::text(&out));
    let names = site.backups();
    assert!(
        names.len() == 2 && names.iter().all(|n| n.contains("-rev")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with("-rev2.yaml")), "{names:?}");
    let h = site.api.history("web", "shop");
    assert_eq!(h.len(), 5, "{h:?}");
    assert_eq!(
        h[3].2, "demo-0.1.0",
        "rolled back to revision 2's chart: {h:?}"
    );
    assert_eq!(h[4], (5, "deployed".into(), "demo-0.2.0".into()));
}

/// Item 7: a release `web` that runs another chart (critical-dns, in
/// another namespace) is not replaced by the product's chart unless
/// `--force`.
#[test]
fn a_release_running_another_chart_is_not_replaced_without_force() {
    let site = upgrade_site::Site::new("critical-dns", "dns", "replicas: 2\n");
    let out = site.bundler(&["upgrade", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", upgrade_site::text(&out));
    let err = support::stderr(&out);
    assert!(
        err.contains("runs chart critical-dns (critical-dns-0.1.0), not demo"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(site.backups().is_empty());
    let h = site.api.history("web", "dns");
    assert_eq!(
        h.last().unwrap(),
        &(2, "deployed".into(), "critical-dns-0.1.0".into())
    );

    let out = site.bundler(&["upgrade", "web", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", upgrade_site::text(&out));
    let h = site.api.history("web", "dns");
    assert_eq!(
        h.last().unwrap(),
        &(3, "deployed".into(), "demo-0.2.0".into())
    );
}

// ---- serve, reachable by anyone on the network ----

use support::serve::{curl, fixture, Served};

/// Item 9: a connection that sends nothing is closed within seconds of
/// being accepted; one address holding 200 connections gets 128, the rest
/// are closed at once, the log says so once, and a client at another
/// address is served meanwhile.
#[test]
fn serve_closes_silent_connections_and_caps_each_peer() {
    use std::io::Read;
    let f = fixture();
    let s = Served::start(&[f.bundles.to_str().unwrap()]);
    let addr: std::net::SocketAddr = s.addr.parse().unwrap();

    let started = Instant::now();
    let mut idle = std::net::TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(usize::MAX);
    let took = started.elapsed();
    eprintln!("silent connection: read {n} after {took:?}");
    assert_eq!(n, 0, "the silent connection was not closed");
    assert!(took < Duration::from_secs(20), "{took:?}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let flood: Vec<tokio::net::TcpStream> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..200 {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            v.push(sock.connect(addr).await.unwrap());
        }
        v
    });
    // Those past the cap are closed at once: EOF well before the idle bound.
    std::thread::sleep(Duration::from_millis(1500));
    let flood: Vec<std::net::TcpStream> = {
        let _g = rt.enter();
        flood.into_iter().map(|t| t.into_std().unwrap()).collect()
    };
    let closed = flood
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            matches!((&**s).read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    eprintln!("of 200 connections from 127.0.0.2, {closed} were closed at once");
    assert_eq!(closed, 72, "200 - 128");
    let r = curl(&[], &format!("http://{}/v2/", s.addr));
    assert_eq!(r.status, 200);
    drop(flood);
    let log = s.log();
    assert_eq!(
        log.matches("holds 128 connections").count(),
        1,
        "said once: {log}"
    );
}

/// Item 10: a bundle whose chart file does not match bundle.json is not
/// served (sync and verify refuse it); bytes of a checked blob changed in
/// place (the bundle rewritten over the same inode) are not served under
/// the old digest.
#[test]
fn serve_checks_chart_files_and_rechecks_blobs_changed_in_place() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let (product, base) = base_bundle(d);
    let bad = d.join("bad").join(&product.bundle_name);
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    rewrite_bundle(&base, &bad, false, |outer, _| {
        let v = outer
            .iter_mut()
            .find(|(n, _)| n == "original-chart/values.yaml")
            .unwrap();
        v.1.extend_from_slice(b"injected: true\n");
    });
    let e = Served::try_start(&[bad.to_str().unwrap()])
        .err()
        .expect("a chart file that fails bundle.json must not be served");
    assert!(e.contains("original-chart/values.yaml is corrupted"), "{e}");

    let f = fixture();
    let s = Served::start(&[f.bundles.to_str().unwrap()]);
    let url = format!(
        "http://{}/v2/docker.io/library/busybox/blobs/{}",
        s.addr, f.amd_layer.digest
    );
    let r = curl(&[], &url);
    assert_eq!((r.status, r.body.len()), (200, f.amd_layer.bytes.len()));
    // `cp` over the bundle (and the offline package holding it): same
    // inode, one byte of the blob changed.
    std::thread::sleep(Duration::from_millis(20));
    let probe = &f.amd_layer.bytes[1000..1064];
    let mut changed = 0;
    for p in std::fs::read_dir(&f.bundles).unwrap() {
        let p = p.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        if let Some(at) = bytes.windows(64).position(|w| w == probe) {
            bytes[at] ^= 0xff;
            std::fs::write(&p, &bytes).unwrap();
            changed += 1;
        }
    }
    assert!(changed > 0);
    let r = curl(&[], &url);
    eprintln!(
        "after the change: {} {} bytes, original bytes: {}",
        r.status,
        r.body.len(),
        r.body == f.amd_layer.bytes
    );
    assert_eq!(r.status, 500, "changed bytes served under the old digest");
    assert!(String::from_utf8_lossy(&r.body).contains(&f.amd_layer.digest));
}

fn htpasswd_entry(user: &str, password: &str) -> String {
    let o = Command::new("htpasswd")
        .args(["-B", "-C", "10", "-b", "-n", user, password])
        .output()
        .unwrap();
    assert!(o.status.success());
    String::from_utf8(o.stdout).unwrap().trim().to_string() + "\n"
}

/// Item 11: a wrong password takes as long for an unknown user as for a
/// known one (user names cannot be listed by timing), and an authenticated
/// client keeps getting blobs fast while 100 clients send wrong passwords.
#[test]
fn serve_auth_does_not_tell_users_apart_and_bcrypt_load_does_not_starve_pulls() {
    let f = fixture();
    let ht = f.work.path().join("htpasswd");
    std::fs::write(&ht, htpasswd_entry("ann", "right-pass")).unwrap();
    let s = Served::start(&[
        f.bundles.to_str().unwrap(),
        "--htpasswd",
        ht.to_str().unwrap(),
    ]);
    // Raw requests (no curl start-up in the figure), known and unknown
    // user alternating, so that a load change hits both alike.
    let timed = |user: &str| {
        use base64::Engine;
        use std::io::{Read, Write};
        let cred = base64::engine::general_purpose::STANDARD.encode(format!("{user}:wrong-pass"));
        let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
        let started = Instant::now();
        write!(
            c,
            "GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cred}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
        started.elapsed()
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        known.push(timed("ann"));
        unknown.push(timed("nobody"));
    }
    known.sort();
    unknown.sort();
    let (known, unknown) = (known[3], unknown[3]);
    eprintln!("wrong password (median of 7): known user {known:?}, unknown user {unknown:?}");
    assert!(
        unknown * 3 > known,
        "unknown {unknown:?} vs known {known:?}: user names can be told apart"
    );

    // 100 clients sending wrong passwords, one authenticated puller (that
    // logged in before they came).
    let blob = format!(
        "http://{}/v2/docker.io/library/busybox/blobs/{}",
        s.addr, f.amd_layer.digest
    );
    assert_eq!(curl(&["-u", "ann:right-pass"], &blob).status, 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = s.addr.clone();
    let attackers: Vec<_> = (0..100)
        .map(|i| {
            let (stop, addr) = (stop.clone(), addr.clone());
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                use base64::Engine;
                let cred = base64::engine::general_purpose::STANDARD.encode(format!("ann:bad{i}"));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(mut c) = std::net::TcpStream::connect(&addr) {
                        let _ = write!(c, "GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cred}\r\nConnection: close\r\n\r\n");
                        let _ = c.read_to_end(&mut Vec::new());
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let r = curl(&["-u", "ann:right-pass"], &blob);
        slowest = slowest.max(started.elapsed());
        assert_eq!(r.status, 200, "authenticated pull under load");
        assert_eq!(r.body, f.amd_layer.bytes);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    eprintln!("authenticated blob GET under load: slowest {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
}

// ---- credentials and transport ----

/// Item 12: a credential helper that answers and exits but leaves a child
/// holding its stdout does not hang pack: its answer is used at its exit
/// plus a short grace, and pack goes on with the credentials.
#[test]
fn a_credential_helper_leaving_a_child_on_its_stdout_does_not_hang_pack() {
    use std::os::unix::fs::PermissionsExt;
    use support::registry::{Mode, Registry, PASSWORD, USER};
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let reg = Registry::start(Mode::BasicAuth);
    support::images::push_simple(&reg, d, "team/app:1", &[b"helper layer"]);
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-w20");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread host\necho '{{\"ServerURL\":\"'$host'\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'\nsleep 120 &\nexit 0\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = d.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!("{{\"credHelpers\": {{\"{}\": \"w20\"}}}}", reg.host()),
    )
    .unwrap();
    let manifest = registry_manifest(d, "helper", &[format!("{}/team/app:1", reg.host())]);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut c = Command::new(bundler_bin());
    c.current_dir(d)
        .args([
            "pack",
            manifest.to_str().unwrap(),
            "-o",
            "out",
            "--insecure",
        ])
        .env("DOCKER_CONFIG", &docker)
        .env("PATH", path)
        .env_remove("BUNDLER_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let mut child = c.spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("pack hangs on the credential helper's child");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    eprintln!(
        "pack with the helper: {:?} in {:?}",
        status,
        started.elapsed()
    );
    assert!(status.success(), "{err}");
    assert!(std::fs::read_dir(d.join("out")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".bundle.tar")));
}

/// Item 13: an HTTPS registry (verified with --ca-file) whose token realm
/// is plain `http://` on another port: bundler refuses and the realm never
/// sees a request (the password would cross in clear text).
#[test]
fn a_plain_http_token_realm_of_an_https_registry_gets_no_password() {
    use std::io::{Read, Write as _};
    use support::registry::{free_port, make_certs, PASSWORD, USER};
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let (ca, cert, key) = make_certs(d);
    // The realm: records whatever reaches it.
    let realm = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let realm_port = realm.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for c in realm.incoming() {
            let Ok(mut c) = c else { return };
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            seen2
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = c.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let port = free_port();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::write(
        d.join("config.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: s\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  token:\n    realm: http://127.0.0.1:{realm_port}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
            d.join("data").display(),
            cert.display(),
            key.display(),
            cert.display()
        ),
    )
    .unwrap();
    let mut registry = Command::new("docker-registry")
        .arg("serve")
        .arg(d.join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let docker = d.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker.join("config.json"),
        format!("{{\"auths\": {{\"127.0.0.1:{port}\": {{\"auth\": \"{auth}\"}}}}}}"),
    )
    .unwrap();
    let manifest = registry_manifest(d, "realm", &[format!("127.0.0.1:{port}/team/app:1")]);
    let o = Command::new(bundler_bin())
        .current_dir(d)
        .args(["pack", manifest.to_str().unwrap(), "-o", "out", "--ca-file"])
        .arg(&ca)
        .env("DOCKER_CONFIG", &docker)
        .env_remove("BUNDLER_LOG")
        .output()
        .unwrap();
    let _ = registry.kill();
    let _ = registry.wait();
    let err = support::stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("plain HTTP") && err.contains("--insecure"),
        "{err}"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(seen.is_empty(), "the plain-HTTP realm got: {seen}");
    assert!(!err.contains(PASSWORD));
}

// ---- consistency ----

/// Item 16: `sync --dry-run` of a delta whose external blobs the target
/// lacks fails like the real run would (naming what is missing), and
/// leaves the target untouched.
#[test]
fn a_dry_run_of_a_delta_checks_its_external_blobs() {
    use support::registry::{Mode, Registry};
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let src = Registry::start(Mode::Plain);
    let base = support::images::pseudo_random(16, 300_000);
    support::images::push_simple(&src, d, "prod/a:1", &[&base, b"a only"]);
    support::images::push_simple(&src, d, "prod/b:1", &[&base, b"b only"]);
    let pack = |name: &str, refs: &[&str], against: Option<&Path>| {
        let refs: Vec<String> = refs.iter().map(|r| format!("{}/{r}", src.host())).collect();
        let m = registry_manifest(d, name, &refs);
        let out = d.join(format!("out-{name}"));
        let mut args = vec![
            "pack".to_string(),
            m.display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "--insecure".into(),
        ];
        if let Some(a) = against {
            args.extend(["--against".into(), a.display().to_string()]);
        }
        let o = run(d, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert!(o.status.success(), "{}", support::stderr(&o));
        out
    };
    let v1 = pack("v1", &["prod/a:1"], None);
    let v1_pkg = std::fs::read_dir(&v1)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.to_string_lossy().ends_with(".bundle.tar"))
        .unwrap();
    let v2 = pack("v2", &["prod/a:1", "prod/b:1"], Some(&v1_pkg));
    let target = Registry::start(Mode::Plain);
    let site = d.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = sync_config(&site, &v2, &target.host(), None);
    let o = run(
        &site,
        &[
            "sync",
            "--config",
            cfg.to_str().unwrap(),
            "--dry-run",
            "--insecure",
        ],
        &[],
    );
    let err = support::stderr(&o);
    assert_ne!(o.status.code(), Some(0), "dry run of a delta: {err}");
    let base_digest = support::images::layer("file0", &base).0.digest;
    assert!(err.contains(&base_digest), "{err}");
    let http = Http::new(&target);
    assert!(http.catalog().is_empty(), "the dry run changed the target");
}

/// Item 17: temp files of killed runs (`.NAME.partial-PID-N`, PID no
/// longer running) in the LOCAL chart repository and in `.bundler/` are
/// removed by the next sync; a live process's stay.
#[test]
fn sync_removes_stale_partial_files_of_dead_processes() {
    use support::registry::{Mode, Registry};
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let (product, base) = base_bundle(d);
    let bundles = base.parent().unwrap().to_path_buf();
    let target = Registry::start(Mode::Plain);
    let site = d.join("site");
    let repo = site.join("local-repo");
    let state = site.join(".bundler");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = [
        repo.join(format!(".index.yaml.partial-{dead}-0")),
        repo.join(format!(".shop-1.0.0.tgz.partial-{dead}-3")),
        state.join(format!(".synced.json.partial-{dead}-1")),
    ];
    let live = repo.join(format!(".index.yaml.partial-{}-0", std::process::id()));
    for p in stale.iter().chain([&live]) {
        std::fs::write(p, b"half").unwrap();
    }
    let cfg = sync_config(&site, &bundles, &target.host(), None);
    let o = run(
        &site,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
        &[],
    );
    assert!(o.status.success(), "{}", support::stderr(&o));
    assert!(repo.join("shop-1.0.0.tgz").exists(), "{:?}", tree(&site));
    for p in &stale {
        assert!(!p.exists(), "{} stayed: {:?}", p.display(), tree(&site));
    }
    assert!(live.exists(), "a live process's temp file was removed");
    let _ = product;
}
