//! Charts against the real helm client: hints resolution, relocation with
//! minimal values diffs (checked by `helm template` of the relocated
//! package), deterministic packaging, and publishing to LOCAL, ChartMuseum
//! and Harbor stand-ins, read back with `helm pull` (helm v4 and v3).
mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use bundler::chart::discover::{discover, images_in_manifests};
use bundler::chart::hints::Hints;
use bundler::chart::package::package_tgz;
use bundler::chart::relocate::relocate;
use bundler::chart::repo::{publish, PublishOptions, PublishOutcome};
use bundler::chart::Chart;
use bundler::config::load_image::{RepoKind, RepoSpec};
use bundler::oci::auth::{CredentialStore, Credentials};
use bundler::oci::reference::RewriteRules;
use bundler::oci::registry::{ClientOptions, RegistryClient};
use bundler::oci::Reference;
use support::chart_server::{ChartServer, Config};

fn helm3() -> PathBuf {
    std::env::var_os("BUNDLER_TEST_HELM3")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("helm3"))
}

fn load(rel: &str) -> Chart {
    let p = support::fixture(rel);
    if p.is_dir() {
        Chart::from_dir(&p).unwrap()
    } else {
        Chart::from_tgz(&std::fs::read(&p).unwrap()).unwrap()
    }
}

fn refs(v: &[&str]) -> Vec<Reference> {
    v.iter().map(|s| Reference::parse(s).unwrap()).collect()
}

/// Hints for the 3-levels chart, which ships none (tags are empty there).
const THREE_LEVELS_HINTS: &str = "- \"{{ .image.repository }}:{{ .image.tag }}\"\n- \"{{ .subchart-1.image.repository }}:{{ .subchart-1.image.tag }}\"\n- \"{{ .subchart-1.subchart-3.image.repository }}:{{ .subchart-1.subchart-3.image.tag }}\"\n- \"{{ .subchart-2.image.repository }}:{{ .subchart-2.image.tag }}\"\n";

/// The hints a fixture chart is relocated with.
fn hints_for(chart: &Chart) -> Hints {
    if let Some(h) = chart.file(".relok8s-images.yaml") {
        return Hints::parse(std::str::from_utf8(h).unwrap()).unwrap();
    }
    if chart.name == "3-levels-chart" {
        return Hints::parse(THREE_LEVELS_HINTS).unwrap();
    }
    discover(chart, Some(&support::helm())).unwrap().hints
}

#[test]
fn relok8s_hints_resolve_to_the_expected_images() {
    let c = load("relok8s/complex-chart");
    let h = hints_for(&c);
    let got: Vec<Reference> = h
        .resolve(&c)
        .unwrap()
        .into_iter()
        .map(|r| r.reference)
        .collect();
    assert_eq!(
        got,
        refs(&["harbor-repo.vmware.com/tanzu_isv_engineering/tiny:tiniest"; 10])
    );

    let c = load("relok8s/self-relok8ing-chart");
    let got: Vec<Reference> = hints_for(&c)
        .resolve(&c)
        .unwrap()
        .into_iter()
        .map(|r| r.reference)
        .collect();
    assert_eq!(
        got,
        refs(&[
            "harbor-repo.vmware.com/tanzu_isv_engineering/tiny:tiniest",
            "harbor-repo.vmware.com/tanzu_isv_engineering/tiny:tiniest",
            "harbor-repo.vmware.com/dockerhub-proxy-cache/library/busybox:1.33.1",
        ])
    );

    let c = load("relok8s/3-levels-chart");
    let resolved = hints_for(&c).resolve(&c).unwrap();
    assert_eq!(resolved.len(), 4);
    for r in &resolved {
        assert_eq!(r.reference.to_string(), "docker.io/library/nginx");
    }
    // The placeholders name the value paths, subcharts included.
    assert_eq!(
        resolved[2].parts[0].path,
        vec!["subchart-1", "subchart-3", "image", "repository"]
    );
}

#[test]
fn discovery_finds_bitnami_images_and_rendered_extras() {
    let c = load("charts/wordpress-11.0.4.tgz");
    let d = discover(&c, Some(&support::helm())).unwrap();
    let imgs: BTreeSet<String> = d
        .hints
        .resolve(&c)
        .unwrap()
        .into_iter()
        .map(|r| r.reference.to_string())
        .collect();
    assert!(
        imgs.iter()
            .any(|i| i.starts_with("docker.io/bitnami/wordpress:")),
        "{imgs:?}"
    );
    assert!(
        imgs.iter()
            .any(|i| i.starts_with("docker.io/bitnami/mariadb:")),
        "{imgs:?}"
    );
    assert!(
        imgs.iter()
            .any(|i| i.starts_with("docker.io/bitnami/memcached:")),
        "{imgs:?}"
    );
    assert!(d
        .hints
        .templates
        .contains(&"{{ .image.registry }}/{{ .image.repository }}:{{ .image.tag }}".to_string()));
    // Everything helm renders by default is explained by values.
    assert!(d.extra_images.is_empty(), "{:?}", d.extra_images);

    // The self-relok8ing chart's test hook uses a literal `busybox`.
    let c = Chart::from_dir(&support::fixture("relok8s/self-relok8ing-chart")).unwrap();
    let d = discover(&c, Some(&support::helm())).unwrap();
    assert_eq!(d.extra_images, refs(&["busybox"]));
    assert_eq!(d.hints.templates.len(), 3, "{:?}", d.hints.templates);
}

fn rule_sets() -> Vec<(&'static str, RewriteRules)> {
    vec![
        (
            "prefix registry",
            RewriteRules {
                prefix_registry: Some("10.16.10.111".into()),
                ..Default::default()
            },
        ),
        (
            "prefix registry + append origin",
            RewriteRules {
                prefix_registry: Some("reg.local:5000".into()),
                append_origin_registry: true,
                ..Default::default()
            },
        ),
        (
            "registry + repository",
            RewriteRules {
                registry: Some("test.registry.io".into()),
                repository: Some("mirror/apps".into()),
                ..Default::default()
            },
        ),
        (
            "prefix registry + prefix repository",
            RewriteRules {
                prefix_registry: Some("10.6.0.1".into()),
                prefix_repository: Some("proj".into()),
                ..Default::default()
            },
        ),
    ]
}

/// Lines removed and added between two texts (LCS line diff).
fn line_diff(a: &str, b: &str) -> (Vec<String>, Vec<String>) {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut dp = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            dp[i][j] = if a[i] == b[j] {
                dp[i + 1][j + 1] + 1
            } else {
                dp[i + 1][j].max(dp[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < m && (i == n || dp[i][j + 1] >= dp[i + 1][j]) {
            added.push(b[j].to_string());
            j += 1;
        } else {
            removed.push(a[i].to_string());
            i += 1;
        }
    }
    (removed, added)
}

fn image_key_line(l: &str) -> bool {
    let t = l.trim_start();
    let key = t.split(':').next().unwrap_or("");
    [
        "registry",
        "repository",
        "imageRegistry",
        "imageName",
        "image",
        "tag",
        "digest",
    ]
    .contains(&key)
}

fn helm_template(helm: &Path, tgz: &[u8], name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(format!("{name}.tgz"));
    std::fs::write(&p, tgz).unwrap();
    let out = Command::new(helm)
        .args(["template", "rel"])
        .arg(&p)
        .arg("--skip-tests")
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn relocation_edits_only_image_values_and_helm_renders_the_new_images() {
    let fixtures = [
        "relok8s/3-levels-chart",
        "relok8s/complex-chart",
        "relok8s/self-relok8ing-chart",
        "charts/wordpress-11.0.4.tgz",
        "charts/kafka-14.7.0.tgz",
        "charts/etcd-4.8.0.tgz",
    ];
    for fx in fixtures {
        let original = load(fx);
        let hints = hints_for(&original);
        assert!(!hints.templates.is_empty(), "{fx}: no hints");
        let before_render = helm_template(
            &support::helm(),
            &package_tgz(&original).unwrap(),
            &original.name,
        );
        for (label, rules) in rule_sets() {
            let mut chart = original.clone();
            let r = relocate(&mut chart, &hints, &rules, &HashMap::new(), None)
                .unwrap_or_else(|e| panic!("{fx} / {label}: {e:#}"));
            let ctx = format!("{fx} / {label}");
            // Every hinted image has a new home.
            for (from, to) in &r.images {
                assert_eq!(to, &rules.rewrite(from).unwrap().target, "{ctx}");
            }
            // The hints now render the new references.
            let targets: BTreeSet<Reference> = r.images.iter().map(|(_, t)| t.clone()).collect();
            let after = hints.resolve(&chart).unwrap();
            assert_eq!(after.len(), r.images.len(), "{ctx}");
            for (h, (_, to)) in after.iter().zip(&r.images) {
                assert_eq!(&h.reference, to, "{ctx}: hint {}", h.template);
            }
            // Only values.yaml changed; subcharts byte-identical.
            for (p, data) in &original.files {
                if p != "values.yaml" {
                    assert_eq!(chart.file(p), Some(data.as_slice()), "{ctx}: {p} changed");
                }
            }
            assert_eq!(chart.files.len(), original.files.len(), "{ctx}");
            let old = std::str::from_utf8(original.file("values.yaml").unwrap()).unwrap();
            let new = std::str::from_utf8(chart.file("values.yaml").unwrap()).unwrap();
            let (removed, added) = line_diff(old, new);
            assert!(!added.is_empty(), "{ctx}: nothing changed");
            for l in &removed {
                assert!(image_key_line(l), "{ctx}: removed a non-image line {l:?}");
            }
            for l in &added {
                let header = l.trim_end().ends_with(':') && !l.trim_start().starts_with('#');
                assert!(
                    image_key_line(l) || header,
                    "{ctx}: added a non-image line {l:?}"
                );
            }
            for l in old.lines().filter(|l| l.trim_start().starts_with('#')) {
                assert!(new.contains(l), "{ctx}: comment {l:?} lost");
            }
            assert!(r.diff.contains(" -> "), "{ctx}: {}", r.diff);
            // helm renders only relocated images.
            let tgz = package_tgz(&chart).unwrap();
            let rendered = helm_template(&support::helm(), &tgz, &chart.name);
            let imgs = images_in_manifests(&rendered);
            if fx.starts_with("charts/") || fx.contains("self-relok8ing") {
                assert!(!imgs.is_empty(), "{ctx}: helm renders no image");
            }
            if std::env::var_os("SHOW_DIFF").is_some() {
                eprintln!("== {ctx}\n{}rendered: {imgs:?}", r.diff);
            }
            for img in &imgs {
                assert!(
                    targets.contains(img),
                    "{ctx}: helm renders {img}, not a relocated image ({targets:?})"
                );
            }
            assert_eq!(
                imgs.len(),
                images_in_manifests(&before_render).len(),
                "{ctx}: number of rendered images changed"
            );
        }
    }
}

#[test]
fn dependencies_pointing_at_the_source_repo_are_repointed_with_helm_lock_digest() {
    let mut c = load("charts/wordpress-11.0.4.tgz");
    let r = relocate(
        &mut c,
        &Hints::default(),
        &RewriteRules::default(),
        &HashMap::new(),
        Some((
            "https://charts.bitnami.com/bitnami",
            "http://10.0.0.1/chartrepo/lib",
        )),
    )
    .unwrap();
    let cy = std::str::from_utf8(c.file("Chart.yaml").unwrap()).unwrap();
    assert_eq!(
        cy.matches("repository: http://10.0.0.1/chartrepo/lib")
            .count(),
        3
    );
    assert!(!cy.contains("charts.bitnami.com"));
    let cl = std::str::from_utf8(c.file("Chart.lock").unwrap()).unwrap();
    assert!(!cl.contains("charts.bitnami.com"));
    assert!(r.diff.contains("Chart.lock digest"));
    // helm reads the edited Chart.yaml.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("wordpress");
    for (p, d) in &c.files {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, d).unwrap();
    }
    let out = Command::new(support::helm())
        .args(["dependency", "list"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("http://10.0.0.1/chartrepo/lib"), "{text}");
    // And the original lock digest is what our hash gives for the original.
    let orig = load("charts/wordpress-11.0.4.tgz");
    let cy: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(orig.file("Chart.yaml").unwrap()).unwrap();
    let cl: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(orig.file("Chart.lock").unwrap()).unwrap();
    assert_eq!(
        bundler::chart::relocate::helm_lock_digest(cy.get("dependencies"), cl.get("dependencies"))
            .unwrap(),
        cl["digest"].as_str().unwrap()
    );
}

#[test]
fn packaging_is_deterministic_and_helm_reads_it() {
    for fx in ["relok8s/3-levels-chart", "relok8s/self-relok8ing-chart"] {
        let c = load(fx);
        let a = package_tgz(&c).unwrap();
        let b = package_tgz(&Chart::from_dir(&support::fixture(fx)).unwrap()).unwrap();
        assert_eq!(a, b, "{fx}");
        assert_eq!(Chart::from_tgz(&a).unwrap(), c);
        for helm in [support::helm(), helm3()] {
            helm_template(&helm, &a, &c.name);
        }
    }
    // A packaged fixture reloads to the same files.
    let raw = std::fs::read(support::fixture("charts/kafka-14.7.0.tgz")).unwrap();
    let c = Chart::from_tgz(&raw).unwrap();
    assert_eq!(Chart::from_tgz(&package_tgz(&c).unwrap()).unwrap(), c);
}

#[test]
fn archives_with_bad_entries_are_refused() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"x/../../evil");
    h.set_cksum();
    b.append(&h, &b"a"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let err = Chart::from_tgz(&gz.finish().unwrap()).unwrap_err();
    assert!(format!("{err:#}").contains(".."), "{err:#}");
}

/// Serve a directory over HTTP (GET only) for helm to read.
fn serve_dir(dir: PathBuf) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(200) {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let file = dir.join(path.trim_start_matches('/'));
            let (status, body) = match std::fs::read(&file) {
                Ok(b) if !path.contains("..") => ("200 OK", b),
                _ => ("404 Not Found", Vec::new()),
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    port
}

fn helm_pull(helm: &Path, repo_url: &str, name: &str, version: &str, extra: &[&str]) -> Vec<u8> {
    let dest = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(helm)
        .args(["pull", "--repo", repo_url, name, "--version", version, "-d"])
        .arg(dest.path())
        .args(extra)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} pull --repo {repo_url} {name}: {}",
        helm.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dest.path().join(format!("{name}-{version}.tgz"))).unwrap()
}

fn client() -> RegistryClient {
    RegistryClient::new(ClientOptions::default(), CredentialStore::default()).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A relocated chart and a variant with different content, same version.
fn charts_to_publish() -> (Chart, Vec<u8>, Chart, Vec<u8>) {
    let mut c = load("relok8s/self-relok8ing-chart");
    let h = hints_for(&c);
    let rules = RewriteRules {
        prefix_registry: Some("10.16.10.111".into()),
        ..Default::default()
    };
    relocate(&mut c, &h, &rules, &HashMap::new(), None).unwrap();
    let tgz = package_tgz(&c).unwrap();
    let mut c2 = c.clone();
    let mut v = c2.file("values.yaml").unwrap().to_vec();
    v.extend_from_slice(b"# changed\n");
    c2.set_file("values.yaml", v);
    let tgz2 = package_tgz(&c2).unwrap();
    (c, tgz, c2, tgz2)
}

#[test]
fn local_target_is_a_helm_repo_and_publishing_is_idempotent() {
    let (c, tgz, c2, tgz2) = charts_to_publish();
    let dir = tempfile::tempdir().unwrap();
    let target = RepoSpec {
        kind: RepoKind::Local,
        url: String::new(),
        path: Some(dir.path().join("repo")),
        auth: None,
    };
    let rt = rt();
    let opts = PublishOptions::default();
    let cl = client();
    assert_eq!(
        rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap(),
        PublishOutcome::Published
    );
    // Another chart in the same repo.
    let three = load("relok8s/3-levels-chart");
    let three_tgz = package_tgz(&three).unwrap();
    rt.block_on(publish(&target, &three, &three_tgz, &cl, &opts))
        .unwrap();
    assert_eq!(
        rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap(),
        PublishOutcome::AlreadyPresent
    );
    let err = rt
        .block_on(publish(&target, &c2, &tgz2, &cl, &opts))
        .unwrap_err();
    assert!(format!("{err:#}").contains("different content"), "{err:#}");
    let forced = PublishOptions {
        force: true,
        ..Default::default()
    };
    assert_eq!(
        rt.block_on(publish(&target, &c2, &tgz2, &cl, &forced))
            .unwrap(),
        PublishOutcome::Published
    );
    let port = serve_dir(dir.path().join("repo"));
    let url = format!("http://127.0.0.1:{port}");
    for helm in [support::helm(), helm3()] {
        assert_eq!(helm_pull(&helm, &url, &c.name, &c.version, &[]), tgz2);
        assert_eq!(
            helm_pull(&helm, &url, "3-levels-chart", "0.1.0", &[]),
            three_tgz
        );
    }
}

#[test]
fn chartmuseum_target_with_auth_read_by_helm() {
    let (user, pass) = ("cm-user", "cm-Secret-42");
    let server = ChartServer::start(Config {
        auth: Some((user.into(), pass.into())),
        ..Default::default()
    });
    let (c, tgz, c2, tgz2) = charts_to_publish();
    let mut target = RepoSpec {
        kind: RepoKind::Chartmuseum,
        url: server.url(),
        path: None,
        auth: Some(Credentials {
            username: user.into(),
            password: "wrong-password-xyz".into(),
        }),
    };
    let rt = rt();
    let cl = client();
    let opts = PublishOptions::default();
    let err = rt
        .block_on(publish(&target, &c, &tgz, &cl, &opts))
        .unwrap_err();
    let msg = format!("{err:#} {err:?}");
    assert!(msg.contains("credentials"), "{msg}");
    assert!(!msg.contains("wrong-password-xyz"), "{msg}");
    target.auth = Some(Credentials {
        username: user.into(),
        password: pass.into(),
    });
    assert_eq!(
        rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap(),
        PublishOutcome::Published
    );
    assert!(server.log().contains(&"POST /api/charts".to_string()));
    assert_eq!(
        rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap(),
        PublishOutcome::AlreadyPresent
    );
    let err = rt
        .block_on(publish(&target, &c2, &tgz2, &cl, &opts))
        .unwrap_err();
    assert!(format!("{err:#}").contains("different content"), "{err:#}");
    let forced = PublishOptions {
        force: true,
        ..Default::default()
    };
    assert_eq!(
        rt.block_on(publish(&target, &c2, &tgz2, &cl, &forced))
            .unwrap(),
        PublishOutcome::Published
    );
    for helm in [support::helm(), helm3()] {
        let got = helm_pull(
            &helm,
            &server.url(),
            &c.name,
            &c.version,
            &["--username", user, "--password", pass],
        );
        assert_eq!(got, tgz2);
    }
}

#[test]
fn harbor_before_2_8_uses_the_chartrepo_api_and_creates_projects() {
    let server = ChartServer::start(Config {
        harbor_version: "v2.7.1-6015b3ef".into(),
        ..Default::default()
    });
    let (c, tgz, c2, tgz2) = charts_to_publish();
    let target = RepoSpec {
        kind: RepoKind::Harbor,
        url: format!("{}/chartrepo/skoala", server.url()),
        path: None,
        auth: None,
    };
    let rt = rt();
    let cl = client();
    // Without auto-create the project is missing.
    let err = rt
        .block_on(publish(&target, &c, &tgz, &cl, &PublishOptions::default()))
        .unwrap_err();
    assert!(format!("{err:#}").contains("404"), "{err:#}");
    let opts = PublishOptions {
        auto_create_repository: true,
        ..Default::default()
    };
    assert_eq!(
        rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap(),
        PublishOutcome::Published
    );
    assert_eq!(server.projects(), vec!["skoala".to_string()]);
    assert!(server
        .log()
        .contains(&"POST /api/chartrepo/skoala/charts".to_string()));
    // Second run: the project exists (409) and the chart is there.
    assert_eq!(
        rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap(),
        PublishOutcome::AlreadyPresent
    );
    assert!(rt
        .block_on(publish(&target, &c2, &tgz2, &cl, &opts))
        .is_err());
    let forced = PublishOptions {
        force: true,
        ..opts.clone()
    };
    assert_eq!(
        rt.block_on(publish(&target, &c2, &tgz2, &cl, &forced))
            .unwrap(),
        PublishOutcome::Published
    );
    assert_eq!(
        server.chart("skoala", "testchart-0.1.0.tgz"),
        Some(tgz2.clone())
    );
    for helm in [support::helm(), helm3()] {
        assert_eq!(
            helm_pull(&helm, &target.url, &c.name, &c.version, &[]),
            tgz2
        );
    }
}

fn insecure_client() -> RegistryClient {
    RegistryClient::new(
        ClientOptions {
            insecure: true,
            ..Default::default()
        },
        CredentialStore::default(),
    )
    .unwrap()
}

fn helm_pull_oci(helm: &Path, reference: &str, version: &str) -> Vec<u8> {
    let dest = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(helm)
        .args([
            "pull",
            reference,
            "--version",
            version,
            "--plain-http",
            "-d",
        ])
        .arg(dest.path())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} pull {reference}: {}",
        helm.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let name = reference.rsplit('/').next().unwrap();
    std::fs::read(dest.path().join(format!("{name}-{version}.tgz"))).unwrap()
}

#[test]
fn oci_target_is_pulled_by_helm_and_fetched_back() {
    use support::registry::{Mode, Registry};
    let reg = Registry::start(Mode::Plain);
    let (c, tgz, c2, tgz2) = charts_to_publish();
    let target = RepoSpec {
        kind: RepoKind::Oci,
        url: format!("oci://{}/charts/relocated", reg.host()),
        path: None,
        auth: None,
    };
    let rt = rt();
    let cl = insecure_client();
    let opts = PublishOptions {
        insecure: true,
        ..Default::default()
    };
    assert_eq!(
        rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap(),
        PublishOutcome::Published
    );
    assert_eq!(
        rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap(),
        PublishOutcome::AlreadyPresent
    );
    let reference = format!("oci://{}/charts/relocated/{}", reg.host(), c.name);
    for helm in [support::helm(), helm3()] {
        assert_eq!(helm_pull_oci(&helm, &reference, &c.version), tgz);
    }
    let err = rt
        .block_on(publish(&target, &c2, &tgz2, &cl, &opts))
        .unwrap_err();
    assert!(format!("{err:#}").contains("different content"), "{err:#}");
    let forced = PublishOptions {
        force: true,
        ..opts.clone()
    };
    assert_eq!(
        rt.block_on(publish(&target, &c2, &tgz2, &cl, &forced))
            .unwrap(),
        PublishOutcome::Published
    );
    assert_eq!(
        helm_pull_oci(&support::helm(), &reference, &c.version),
        tgz2
    );

    // The same chart fetched back as a bundle manifest entry would name it,
    // with and without a version.
    for version in [Some(c.version.clone()), None] {
        let entry = bundler::config::manifest::ChartEntry {
            name: c.name.clone(),
            version,
            source: bundler::config::manifest::ChartSource::Oci(format!(
                "oci://{}/charts/relocated",
                reg.host()
            )),
            hints: None,
            images: vec![],
            image_archives: vec![],
            release: None,
        };
        let (got, bytes) = rt
            .block_on(bundler::chart::repo::fetch(
                &entry,
                Path::new("."),
                &cl,
                &opts,
            ))
            .unwrap();
        assert_eq!(bytes, tgz2);
        assert_eq!(got, c2);
    }
}

#[test]
fn harbor_2_8_and_later_gets_charts_as_oci_artifacts() {
    use support::registry::{Mode, Registry};
    let reg = Registry::start(Mode::Plain);
    let server = ChartServer::start(Config {
        harbor_version: "v2.10.2-1a741cb7".into(),
        registry: Some(reg.host()),
        ..Default::default()
    });
    let (c, tgz, _, _) = charts_to_publish();
    let target = RepoSpec {
        kind: RepoKind::Harbor,
        url: format!("{}/chartrepo/skoala", server.url()),
        path: None,
        auth: None,
    };
    let rt = rt();
    let cl = insecure_client();
    let opts = PublishOptions {
        insecure: true,
        auto_create_repository: true,
        ..Default::default()
    };
    assert_eq!(
        rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap(),
        PublishOutcome::Published
    );
    assert_eq!(server.projects(), vec!["skoala".to_string()]);
    assert!(!server
        .log()
        .iter()
        .any(|l| l.starts_with("POST /api/chartrepo")));
    assert_eq!(
        rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap(),
        PublishOutcome::AlreadyPresent
    );
    let reference = format!("oci://{}/skoala/{}", server.host(), c.name);
    for helm in [support::helm(), helm3()] {
        assert_eq!(helm_pull_oci(&helm, &reference, &c.version), tgz);
    }
}

#[test]
fn fetch_from_http_repo_and_paths() {
    let server = ChartServer::start(Config::default());
    let (c, tgz, _, _) = charts_to_publish();
    let target = RepoSpec {
        kind: RepoKind::Chartmuseum,
        url: server.url(),
        path: None,
        auth: None,
    };
    let rt = rt();
    let cl = client();
    let opts = PublishOptions::default();
    rt.block_on(publish(&target, &c, &tgz, &cl, &opts)).unwrap();
    let entry = |source, version: Option<&str>, name: &str| bundler::config::manifest::ChartEntry {
        name: name.to_string(),
        version: version.map(str::to_string),
        source,
        hints: None,
        images: vec![],
        image_archives: vec![],
        release: None,
    };
    use bundler::config::manifest::ChartSource;
    let (got, bytes) = rt
        .block_on(bundler::chart::repo::fetch(
            &entry(ChartSource::Repo(server.url()), None, &c.name),
            Path::new("."),
            &cl,
            &opts,
        ))
        .unwrap();
    assert_eq!((got, bytes), (c.clone(), tgz.clone()));
    let err = rt
        .block_on(bundler::chart::repo::fetch(
            &entry(ChartSource::Repo(server.url()), Some("9.9.9"), &c.name),
            Path::new("."),
            &cl,
            &opts,
        ))
        .unwrap_err();
    assert!(format!("{err:#}").contains("9.9.9"), "{err:#}");
    // A packaged archive is returned as it is; a directory is packaged.
    let fx = support::fixture("charts");
    let (k, bytes) = rt
        .block_on(bundler::chart::repo::fetch(
            &entry(
                ChartSource::Path("kafka-14.7.0.tgz".into()),
                Some("14.7.0"),
                "kafka",
            ),
            &fx,
            &cl,
            &opts,
        ))
        .unwrap();
    assert_eq!(k.name, "kafka");
    assert_eq!(bytes, std::fs::read(fx.join("kafka-14.7.0.tgz")).unwrap());
    let (d, bytes) = rt
        .block_on(bundler::chart::repo::fetch(
            &entry(
                ChartSource::Path(support::fixture("relok8s/complex-chart")),
                None,
                "complex-chart",
            ),
            Path::new("."),
            &cl,
            &opts,
        ))
        .unwrap();
    assert_eq!(bytes, package_tgz(&d).unwrap());
}
