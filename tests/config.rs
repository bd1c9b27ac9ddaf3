//! Config and manifest loading: every real example loads unchanged; every
//! kind of mistake is an input error (exit 2) naming file:line:column and key.
mod support;

use std::path::{Path, PathBuf};

use bundler::config::load_image::{RepoKind, Source};
use bundler::config::manifest::{ChartSource, ImageSource};
use bundler::config::{BundleManifest, SyncConfig};
use bundler::error::{exit_code, EXIT_USAGE};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configs")
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Load a config that must fail; returns the message after checking exit 2.
fn config_err(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "load-image.yaml", text);
    let err = SyncConfig::load_with_env(&p, &no_env).expect_err("must fail");
    assert_eq!(exit_code(&err), EXIT_USAGE, "{err:#}");
    let msg = format!("{err:#}");
    let prefix = format!("{}:", p.display());
    assert!(
        msg.starts_with(&prefix),
        "message must start with the file: {msg}"
    );
    msg[prefix.len()..].to_string()
}

fn manifest_err(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.yaml", text);
    let err = BundleManifest::load(&p).expect_err("must fail");
    assert_eq!(exit_code(&err), EXIT_USAGE, "{err:#}");
    let msg = format!("{err:#}");
    let prefix = format!("{}:", p.display());
    assert!(msg.starts_with(&prefix), "{msg}");
    msg[prefix.len()..].to_string()
}

#[test]
fn every_example_config_loads_unchanged() {
    let mut n = 0;
    for e in std::fs::read_dir(configs_dir()).unwrap() {
        let p = e.unwrap().path();
        SyncConfig::load_with_env(&p, &no_env).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
        n += 1;
    }
    assert!(n >= 6);
    // and the shared originals are byte-identical to our copies
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/charts-syncer");
    if shared.exists() {
        for e in std::fs::read_dir(shared).unwrap() {
            let p = e.unwrap().path();
            let ours = configs_dir().join(p.file_name().unwrap());
            assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(ours).unwrap());
        }
    }
}

#[test]
fn seed_002_harbor_config() {
    let c = SyncConfig::load_with_env(&configs_dir().join("seed002-harbor.yaml"), &no_env).unwrap();
    assert_eq!(c.source, Source::Bundles(PathBuf::from("skoala-offline")));
    assert_eq!(c.rewrite.prefix_registry.as_deref(), Some("10.16.10.111"));
    assert_eq!(c.target_repo.as_ref().unwrap().kind, RepoKind::Harbor);
    assert_eq!(
        c.target_repo.as_ref().unwrap().url,
        "http://10.16.10.111/chartrepo/release.daocloud.io"
    );
    let a = c.target_repo.as_ref().unwrap().auth.as_ref().unwrap();
    assert_eq!(
        (a.username.as_str(), a.password.as_str()),
        ("admin", "Harbor12345")
    );
    assert_eq!(c.containers_auth.as_ref().unwrap().username, "admin");
    assert_eq!(c.image_registry().as_deref(), Some("10.16.10.111"));
    let store = c.credential_store();
    assert_eq!(
        store.lookup("10.16.10.111").unwrap().password,
        "Harbor12345"
    );
    assert!(store.use_docker_config);
    assert!(c.wants_chart("skoala", "0.28.1"));
}

#[test]
fn seed_002_chartmuseum_and_local_configs() {
    let c = SyncConfig::load_with_env(&configs_dir().join("seed002-chartmuseum.yaml"), &no_env)
        .unwrap();
    assert_eq!(c.target_repo.as_ref().unwrap().kind, RepoKind::Chartmuseum);
    assert_eq!(c.target_repo.as_ref().unwrap().url, "http://10.16.10.111");
    assert_eq!(c.containers_auth.as_ref().unwrap().username, "rootuser");

    let c = SyncConfig::load_with_env(&configs_dir().join("seed002-local.yaml"), &no_env).unwrap();
    assert_eq!(c.target_repo.as_ref().unwrap().kind, RepoKind::Local);
    assert_eq!(
        c.target_repo.as_ref().unwrap().path.as_deref(),
        Some(Path::new("./local-repo"))
    );
    assert_eq!(c.rewrite.registry.as_deref(), Some("10.16.23.145"));
    assert_eq!(
        c.rewrite.repository.as_deref(),
        Some("release.daocloud.io/skoala")
    );
    assert_eq!(c.image_registry().as_deref(), Some("10.16.23.145"));
}

#[test]
fn charts_syncer_fixtures_with_repo_source() {
    let c = SyncConfig::load_with_env(&configs_dir().join("example-config.yaml"), &no_env).unwrap();
    match &c.source {
        Source::Repo {
            repo,
            containers_auth,
        } => {
            assert_eq!(repo.kind, RepoKind::Helm);
            assert_eq!(repo.url, "http://localhost:8080");
            assert_eq!(repo.auth.as_ref().unwrap().password, "password123");
            assert_eq!(containers_auth.as_ref().unwrap().username, "user123");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.source_containers_registry.as_deref(), Some("sRegistry"));
    assert_eq!(
        c.source_credential_store()
            .lookup("sRegistry")
            .unwrap()
            .password,
        "password123"
    );
    // username only (the password comes from the environment)
    let c = SyncConfig::load_with_env(
        &configs_dir().join("example-config-user-file.yaml"),
        &no_env,
    )
    .unwrap();
    assert_eq!(
        c.target_repo
            .as_ref()
            .unwrap()
            .auth
            .as_ref()
            .unwrap()
            .username,
        "targetUserFile"
    );
    assert_eq!(
        c.target_repo
            .as_ref()
            .unwrap()
            .auth
            .as_ref()
            .unwrap()
            .password,
        ""
    );
}

#[test]
fn environment_overrides() {
    let env = |k: &str| -> Option<String> {
        match k {
            "TARGET_REPO_AUTH_USERNAME" => Some("envRepoUser".into()),
            "TARGET_REPO_AUTH_PASSWORD" => Some("envRepoPass".into()),
            "TARGET_CONTAINERS_AUTH_USERNAME" => Some("envRegUser".into()),
            "TARGET_CONTAINERS_AUTH_PASSWORD" => Some("envRegPass".into()),
            "SOURCE_REPO_AUTH_USERNAME" => Some("envSrcUser".into()),
            "SOURCE_REPO_AUTH_PASSWORD" => Some("envSrcPass".into()),
            "SOURCE_CONTAINERS_AUTH_USERNAME" => Some("envSrcRegUser".into()),
            "SOURCE_CONTAINERS_AUTH_PASSWORD" => Some("envSrcRegPass".into()),
            _ => None,
        }
    };
    let c = SyncConfig::load_with_env(&configs_dir().join("example-config-user-file.yaml"), &env)
        .unwrap();
    let a = c.target_repo.as_ref().unwrap().auth.clone().unwrap();
    assert_eq!(
        (a.username.as_str(), a.password.as_str()),
        ("envRepoUser", "envRepoPass")
    );
    let a = c.containers_auth.clone().unwrap();
    assert_eq!(
        (a.username.as_str(), a.password.as_str()),
        ("envRegUser", "envRegPass")
    );
    match &c.source {
        Source::Repo {
            repo,
            containers_auth,
        } => {
            let a = repo.auth.clone().unwrap();
            assert_eq!(
                (a.username.as_str(), a.password.as_str()),
                ("envSrcUser", "envSrcPass")
            );
            let a = containers_auth.clone().unwrap();
            assert_eq!(
                (a.username.as_str(), a.password.as_str()),
                ("envSrcRegUser", "envSrcRegPass")
            );
        }
        other => panic!("{other:?}"),
    }
    // only the password from the environment; the file's username stays
    let env = |k: &str| (k == "TARGET_CONTAINERS_AUTH_PASSWORD").then(|| "fromEnv".to_string());
    let c = SyncConfig::load_with_env(&configs_dir().join("seed002-harbor.yaml"), &env).unwrap();
    let a = c.containers_auth.unwrap();
    assert_eq!(
        (a.username.as_str(), a.password.as_str()),
        ("admin", "fromEnv")
    );
    // an empty variable counts as unset
    let env = |k: &str| (k == "TARGET_REPO_AUTH_PASSWORD").then(String::new);
    let c = SyncConfig::load_with_env(&configs_dir().join("seed002-harbor.yaml"), &env).unwrap();
    assert_eq!(
        c.target_repo
            .as_ref()
            .unwrap()
            .auth
            .clone()
            .unwrap()
            .password,
        "Harbor12345"
    );
}

#[test]
fn passwords_never_in_debug_output() {
    let c = SyncConfig::load_with_env(&configs_dir().join("seed002-harbor.yaml"), &no_env).unwrap();
    assert!(!format!("{c:?}").contains("Harbor12345"));
}

#[test]
fn every_charts_syncer_key_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "full.yaml",
        "source:\n  repo:\n    kind: OCI\n    url: oci://127.0.0.1:5000/charts\n    auth: {username: u, password: 1234}\n    chartsIndex: 127.0.0.1:5000/charts/charts-index:latest\n    useChartsIndex: false\n    disableChartsIndex: true\n    path: ''\n  containers:\n    kind: HARBOR\n    auth: {registry: 127.0.0.1:5000, username: u, password: p}\ntarget:\n  containerPrefixRegistry: 10.0.0.1:5000\n  containerPrefixRepository: mirror\n  appendOriginRegistry: true\n  repoName: myrepo\n  repo:\n    kind: oci\n    url: http://10.0.0.1:5000/charts\n  containers:\n    kind: HARBOR\n    auth: {username: u, password: p, registry: 10.0.0.1:5000}\ncharts:\n  - skoala\n  - name: skoala-init\n    versions: [0.28.1, \"0.28.0\"]\n    skipImages: true\nrelocateContainerImages: true\n",
    );
    let c = SyncConfig::load_with_env(&p, &no_env).unwrap();
    assert_eq!(c.target_repo.as_ref().unwrap().kind, RepoKind::Oci);
    let loc = c.target_repo.as_ref().unwrap().oci_location().unwrap();
    assert_eq!(
        (loc.registry.as_str(), loc.path.as_str(), loc.plain_http),
        ("10.0.0.1:5000", "charts", true)
    );
    assert!(c.rewrite.append_origin_registry);
    assert_eq!(c.rewrite.prefix_repository.as_deref(), Some("mirror"));
    assert_eq!(c.charts.len(), 2);
    assert_eq!(c.charts[1].versions, vec!["0.28.1", "0.28.0"]);
    assert_eq!(c.skip_images_for, vec!["skoala-init"]);
    assert_eq!(c.repo_name.as_deref(), Some("myrepo"));
    assert!(c.wants_chart("skoala-init", "0.28.0"));
    assert!(!c.wants_chart("skoala-init", "0.27.0"));
    assert!(!c.wants_chart("other", "1.0.0"));
    match &c.source {
        Source::Repo { repo, .. } => assert_eq!(repo.auth.as_ref().unwrap().password, "1234"),
        o => panic!("{o:?}"),
    }
    // proto (snake_case) spellings, as charts-syncer's protobuf JSON decoder accepts
    let p = write(
        dir.path(),
        "snake.yaml",
        "source:\n  intermediate_bundles_path: bundles\ntarget:\n  container_registry: r.local:5000\n  container_repository: team\n  repo:\n    kind: LOCAL\n    path: out\nskip_charts: [foo]\n",
    );
    let c = SyncConfig::load_with_env(&p, &no_env).unwrap();
    assert_eq!(c.rewrite.registry.as_deref(), Some("r.local:5000"));
    assert_eq!(c.skip_charts[0].name, "foo");
    assert!(!c.wants_chart("foo", "1"));
    assert!(c.wants_chart("bar", "1"));
    // oci:// target URL
    let p = write(
        dir.path(),
        "oci.yaml",
        "source: {intermediateBundlesPath: b}\ntarget:\n  containerRegistry: h:5000\n  repo: {kind: OCI, url: \"oci://h:5000/a/b\"}\n",
    );
    let c = SyncConfig::load_with_env(&p, &no_env).unwrap();
    let loc = c.target_repo.as_ref().unwrap().oci_location().unwrap();
    assert_eq!(
        (loc.registry.as_str(), loc.path.as_str(), loc.plain_http),
        ("h:5000", "a/b", false)
    );
}

const GOOD_HEAD: &str = "source:\n  intermediateBundlesPath: skoala-offline\n";

#[test]
fn unknown_key_names_line_column_and_key() {
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  containerPrefixRegistry: 10.16.10.111\n  repo:\n    kind: HARBOR\n    url: http://h/chartrepo/p\n    auht:\n      username: admin\n"
    ));
    assert!(
        m.starts_with("8:5: target.repo.auht: unknown field `auht`"),
        "{m}"
    );
    assert!(m.contains("unknown field `auht`"), "{m}");
    assert!(m.contains("expected one of"), "{m}");
    // at the top level
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  repo: {{kind: LOCAL, path: x}}\nchart:\n  - a\n"
    ));
    assert!(m.starts_with("5:1: chart: unknown field `chart`"), "{m}");
    assert!(m.contains("unknown field `chart`"), "{m}");
}

#[test]
fn wrong_type_names_line_column_and_key() {
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  containerRegistry: r.local\n  appendOriginRegistry: maybe\n  repo: {{kind: LOCAL, path: x}}\n"
    ));
    assert!(m.starts_with("5:25: target.appendOriginRegistry: "), "{m}");
    assert!(m.contains("invalid type"), "{m}");
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  repo:\n    kind: LOCAL\n    path: [a, b]\n"
    ));
    assert!(m.starts_with("6:11: target.repo.path: "), "{m}");
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  repo:\n    kind: GITHUB\n    path: x\n"
    ));
    assert!(m.starts_with("5:11: target.repo.kind: "), "{m}");
    assert!(m.contains("HARBOR"), "{m}");
    let m = config_err(&format!("{GOOD_HEAD}target:\n  repo: {{kind: LOCAL, path: x}}\ncharts:\n  - name: a\n    versions: [1.10]\n"));
    assert!(m.starts_with("7:16: charts[0].versions[0]: "), "{m}");
    assert!(m.contains("quotes"), "{m}");
}

#[test]
fn yaml_syntax_error_names_line_and_column() {
    let m = config_err("source:\n  intermediateBundlesPath: x\ntarget:\n  repo: {kind: LOCAL, path: x\n  containers: 1\n");
    assert!(m.starts_with("5:"), "{m}");
    let m = config_err("source:\n\tintermediateBundlesPath: x\n");
    assert!(m.starts_with("2:1: "), "{m}");
}

#[test]
fn one_of_violations_name_the_key_line() {
    // both sources
    let m = config_err(
        "source:\n  intermediateBundlesPath: skoala-offline\n  repo:\n    kind: HELM\n    url: http://h\ntarget:\n  repo: {kind: LOCAL, path: x}\n",
    );
    assert!(m.starts_with("3:3: source.repo: "), "{m}");
    assert!(m.contains("both"), "{m}");
    // neither source
    let m = config_err("# comment\nsource:\n  containers: {auth: {username: a}}\ntarget:\n  repo: {kind: LOCAL, path: x}\n");
    assert!(m.starts_with("2:1: source: "), "{m}");
    assert!(m.contains("neither"), "{m}");
    // charts and skipCharts
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  repo: {{kind: LOCAL, path: x}}\ncharts: [a]\nskipCharts: [b]\n"
    ));
    assert!(m.starts_with("6:1: skipCharts: "), "{m}");
    // prefix rules mixed with replace rules: the later key is named
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  containerRegistry: r.local\n  repo: {{kind: LOCAL, path: x}}\n  containerPrefixRegistry: p.local\n"
    ));
    assert!(
        m.starts_with("6:3: target.containerPrefixRegistry: "),
        "{m}"
    );
    assert!(m.contains("target.containerRegistry"), "{m}");
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  containerPrefixRepository: mirror\n  containerRepository: team\n  repo: {{kind: LOCAL, path: x}}\n"
    ));
    assert!(m.starts_with("5:3: target.containerRepository: "), "{m}");
    // appendOriginRegistry alone
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  appendOriginRegistry: true\n  repo: {{kind: LOCAL, path: x}}\n"
    ));
    assert!(m.starts_with("4:3: target.appendOriginRegistry: "), "{m}");
}

#[test]
fn semantic_errors_name_the_key() {
    // missing target
    let m = config_err(GOOD_HEAD);
    assert!(m.starts_with("1:1: target: "), "{m}");
    // LOCAL without path: at the kind
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  containerRegistry: r\n  repo:\n    kind: LOCAL\n"
    ));
    assert!(m.starts_with("6:5: target.repo.path: "), "{m}");
    // bad OCI URL
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  repo:\n    kind: OCI\n    url: ftp://x/y\n"
    ));
    assert!(m.starts_with("6:5: target.repo.url: "), "{m}");
    // scheme in a registry host
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  containerPrefixRegistry: http://10.16.10.111\n  repo: {{kind: LOCAL, path: x}}\n"
    ));
    assert!(
        m.starts_with("4:3: target.containerPrefixRegistry: "),
        "{m}"
    );
    assert!(m.contains("without a scheme"), "{m}");
    // HELM is not a target
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  repo:\n    kind: HELM\n    url: http://x\n"
    ));
    assert!(m.starts_with("5:5: target.repo.kind: "), "{m}");
    // charts-syncer save mode
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  intermediateBundlesPath: out\n"
    ));
    assert!(
        m.starts_with("4:3: target.intermediateBundlesPath: "),
        "{m}"
    );
    assert!(m.contains("bundler pack"), "{m}");
    // chart entry without a name
    let m = config_err(&format!(
        "{GOOD_HEAD}target:\n  repo: {{kind: LOCAL, path: x}}\ncharts:\n  - versions: [\"1\"]\n"
    ));
    assert!(m.starts_with("6:5: charts[0]: "), "{m}");
    assert!(m.contains("name"), "{m}");
}

#[test]
fn missing_and_empty_files_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = SyncConfig::load_with_env(&dir.path().join("nope.yaml"), &no_env).unwrap_err();
    assert_eq!(exit_code(&err), EXIT_USAGE);
    assert!(
        format!("{err}").contains("nope.yaml: no such file"),
        "{err}"
    );
    let p = write(dir.path(), "empty.yaml", "# nothing\n");
    let err = SyncConfig::load_with_env(&p, &no_env).unwrap_err();
    assert_eq!(exit_code(&err), EXIT_USAGE);
    assert!(
        format!("{err}").contains("empty.yaml:1:1: the file is empty"),
        "{err}"
    );
    let err = BundleManifest::load(&dir.path().join("nope.yaml")).unwrap_err();
    assert_eq!(exit_code(&err), EXIT_USAGE);
}

#[test]
fn error_messages_never_show_passwords() {
    let m = config_err(
        "source:\n  intermediateBundlesPath: x\ntarget:\n  containerRegistry: r\n  repo: {kind: LOCAL, path: x}\n  containers:\n    auth: {username: admin, password: TopSecret99, extra: 1}\n",
    );
    assert!(
        m.starts_with("7:52: target.containers.auth.extra: unknown field"),
        "{m}"
    );
    assert!(!m.contains("TopSecret99"), "{m}");
}

// ---- bundle manifest ---------------------------------------------------------

const MANIFEST: &str = "apiVersion: bundler/v1
kind: BundleManifest
metadata: {name: skoala, version: 0.28.1}
spec:
  platforms: [linux/amd64, linux/arm64/v8]
  charts:
    - name: skoala
      version: 0.28.1
      repo: https://release.example.com/chartrepo/skoala
      hints: hints/skoala.yaml
      images: [docker.io/library/busybox:1.36]
      release: {name: skoala, namespace: skoala-system}
    - name: skoala-init
      version: 0.28.1
      repo: oci://registry.example.com/charts
      release: {namespace: skoala-system}
    - name: local
      path: ./charts/local
  images:
    - docker.io/library/mysql:5.7.34
    - archive: ./images/mlab-gateway.tar
";

#[test]
fn manifest_loads_with_paths_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let p = write(&dir.path().join("sub"), "skoala.yaml", MANIFEST);
    let m = BundleManifest::load(&p).unwrap();
    let base = dir.path().join("sub");
    assert_eq!(m.base_dir(), base);
    assert_eq!((m.name.as_str(), m.version.as_str()), ("skoala", "0.28.1"));
    let plats = m.platforms.as_ref().unwrap();
    assert_eq!(plats.len(), 2);
    assert_eq!(plats[1].variant.as_deref(), Some("v8"));
    assert_eq!(m.charts.len(), 3);
    assert_eq!(
        m.charts[0].source,
        ChartSource::Repo("https://release.example.com/chartrepo/skoala".into())
    );
    assert_eq!(
        m.charts[0].hints.as_deref(),
        Some(base.join("hints/skoala.yaml").as_path())
    );
    assert_eq!(m.charts[0].images, vec!["docker.io/library/busybox:1.36"]);
    assert_eq!(
        m.charts[0].release.as_ref().unwrap().namespace.as_deref(),
        Some("skoala-system")
    );
    assert_eq!(
        m.charts[1].source,
        ChartSource::Oci("oci://registry.example.com/charts".into())
    );
    assert_eq!(m.charts[1].release.as_ref().unwrap().name, "skoala-init");
    assert_eq!(
        m.charts[2].source,
        ChartSource::Path(base.join("./charts/local"))
    );
    assert_eq!(m.charts[2].version, None);
    assert_eq!(
        m.images[0],
        ImageSource::Reference("docker.io/library/mysql:5.7.34".into())
    );
    assert_eq!(
        m.images[1],
        ImageSource::Archive(base.join("./images/mlab-gateway.tar"))
    );
}

#[test]
fn manifest_platform_defaults_and_all() {
    let m = MANIFEST.replace("  platforms: [linux/amd64, linux/arm64/v8]\n", "");
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.yaml", &m);
    let plats = BundleManifest::load(&p).unwrap().platforms.unwrap();
    assert_eq!(plats.len(), 1);
    assert_eq!(plats[0].to_string(), "linux/amd64");
    let m = MANIFEST.replace("[linux/amd64, linux/arm64/v8]", "all");
    let p = write(dir.path(), "m.yaml", &m);
    assert_eq!(BundleManifest::load(&p).unwrap().platforms, None);
}

#[test]
fn manifest_errors_name_line_and_key() {
    // unknown key
    let m = manifest_err(&MANIFEST.replace(
        "      hints: hints/skoala.yaml\n",
        "      hint: hints/skoala.yaml\n",
    ));
    assert!(
        m.starts_with("10:7: spec.charts[0].hint: unknown field"),
        "{m}"
    );
    assert!(m.contains("unknown field `hint`"), "{m}");
    // both repo and path
    let m = manifest_err(&MANIFEST.replace(
        "      path: ./charts/local\n",
        "      path: ./charts/local\n      repo: https://x/y\n",
    ));
    assert!(m.starts_with("18:7: spec.charts[2].path: "), "{m}");
    // neither
    let m = manifest_err(&MANIFEST.replace("      path: ./charts/local\n", ""));
    assert!(m.starts_with("17:7: spec.charts[2].name: "), "{m}");
    assert!(m.contains("neither repo nor path"), "{m}");
    // bad image reference in a chart and in spec.images
    let m = manifest_err(&MANIFEST.replace(
        "[docker.io/library/busybox:1.36]",
        "[docker.io/library/busybox:1.36, \"Bad Image\"]",
    ));
    assert!(
        m.starts_with("11:48: spec.charts[0].images[1]: invalid image reference"),
        "{m}"
    );
    let m = manifest_err(&MANIFEST.replace(
        "    - docker.io/library/mysql:5.7.34\n",
        "    - docker.io/library/mysql:5.7.34\n    - UPPER/case:1\n",
    ));
    assert!(m.starts_with("21:7: spec.images[1]: "), "{m}");
    // wrong type
    let m = manifest_err(&MANIFEST.replace(
        "release: {name: skoala, namespace: skoala-system}",
        "release: skoala",
    ));
    assert!(m.starts_with("12:16: spec.charts[0].release: "), "{m}");
    // bad platform
    let m = manifest_err(&MANIFEST.replace("linux/arm64/v8]", "arm64]"));
    assert!(
        m.starts_with("5:28: spec.platforms[1]: invalid platform"),
        "{m}"
    );
    // kind / apiVersion
    let m = manifest_err(&MANIFEST.replace("kind: BundleManifest", "kind: Bundle"));
    assert!(m.starts_with("2:1: kind: "), "{m}");
    let m = manifest_err(&MANIFEST.replace("bundler/v1", "bundler/v2"));
    assert!(m.starts_with("1:1: apiVersion: "), "{m}");
    // a repo chart without version
    let m = manifest_err(
        &MANIFEST.replace("      version: 0.28.1\n      repo: oci", "      repo: oci"),
    );
    assert!(m.starts_with("13:7: spec.charts[1].version: "), "{m}");
    // an archive entry with another key
    let m = manifest_err(&MANIFEST.replace(
        "archive: ./images/mlab-gateway.tar",
        "{archive: a.tar, ref: x}",
    ));
    assert!(m.starts_with("21:"), "{m}");
}

#[test]
fn binary_reports_bad_manifest_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.yaml",
        &MANIFEST.replace("      hints: hints/skoala.yaml\n", "      hint: x\n"),
    );
    let out = support::bundler(dir.path(), &["pack", "m.yaml", "--output", "out"]);
    let err = support::stderr(&out);
    // pack may not load manifests yet on this branch; once it does, this holds:
    if err.contains("not implemented") {
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("m.yaml:10:7: spec.charts[0].hint: unknown field"),
        "{err}"
    );
}

#[test]
fn binary_reports_bad_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "load-image.yaml", "source:\n  intermediateBundlesPath: x\ntarget:\n  repo: {kind: LOCAL, path: x}\n  bogus: 1\n");
    let out = support::bundler(dir.path(), &["sync", "--config", "load-image.yaml"]);
    let err = support::stderr(&out);
    if err.contains("not implemented") {
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("load-image.yaml:5:3: target.bogus: unknown field `bogus`"),
        "{err}"
    );
}
