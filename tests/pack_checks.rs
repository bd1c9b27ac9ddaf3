//! `pack` refusing inputs that would put the wrong thing in a bundle:
//! chart symlinks leaving the chart directory, digest pins an archive does
//! not satisfy, and single-platform images under another platform.
mod support;

use std::path::{Path, PathBuf};

use support::registry::{Mode, Registry};
use support::standins::write_standin_layout;
use support::{bundler, images, stderr};

fn small_chart(dir: &Path, values: &str) -> PathBuf {
    let c = dir.join("app");
    std::fs::create_dir_all(c.join("templates")).unwrap();
    std::fs::write(
        c.join("Chart.yaml"),
        "apiVersion: v2\nname: app\nversion: 1.0.0\n",
    )
    .unwrap();
    std::fs::write(c.join("values.yaml"), values).unwrap();
    std::fs::write(
        c.join("templates/deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {{ .Values.image }}\n",
    )
    .unwrap();
    c
}

fn manifest(dir: &Path, chart: Option<&Path>, chart_images: &str, spec_images: &str) -> PathBuf {
    let charts = match chart {
        Some(c) => format!(
            "  charts:\n    - name: app\n      path: {}\n{chart_images}",
            c.display()
        ),
        None => "  charts: []\n".into(),
    };
    let p = dir.join("m.yaml");
    std::fs::write(
        &p,
        format!("apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: app, version: 1.0.0}}\nspec:\n{charts}{spec_images}"),
    )
    .unwrap();
    p
}

fn no_bundles(out: &Path) -> bool {
    !out.exists()
        || std::fs::read_dir(out).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".bundle.tar")
        })
}

/// Issue 11 item 10: a link to a host file is refused, never followed.
#[test]
fn chart_symlinks_leaving_the_chart_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let chart = small_chart(work.path(), "image: docker.io/acme/app:1.0\n");
    std::os::unix::fs::symlink("/etc/passwd", chart.join("templates/leak.yaml")).unwrap();
    let layout = work.path().join("img");
    write_standin_layout(&layout, &["docker.io/acme/app:1.0".to_string()]);
    let m = manifest(
        work.path(),
        Some(&chart),
        &format!("      images:\n        - archive: {}\n", layout.display()),
        "",
    );
    let out = work.path().join("out");
    let o = bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("templates/leak.yaml") && err.contains("outside the chart directory"),
        "{err}"
    );
    assert!(
        !err.contains("root:x:0:0"),
        "host file content shown: {err}"
    );
    assert!(no_bundles(&out));

    // A directory link out of the chart too.
    std::fs::remove_file(chart.join("templates/leak.yaml")).unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("x.yaml"), "kind: ConfigMap\n").unwrap();
    std::os::unix::fs::symlink(&outside, chart.join("templates/ext")).unwrap();
    let o = bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("templates/ext"), "{}", stderr(&o));

    // A link that stays inside the chart is followed, as helm does.
    std::fs::remove_file(chart.join("templates/ext")).unwrap();
    std::fs::create_dir_all(chart.join("files")).unwrap();
    std::fs::write(
        chart.join("files/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: linked\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("../files/cm.yaml", chart.join("templates/cm.yaml")).unwrap();
    let o = bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let tgz = std::fs::read(out.join("app-1.0.0.tgz")).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&tgz[..]));
    let mut found = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == "app/templates/cm.yaml" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            found = s.contains("name: linked");
        }
    }
    assert!(
        found,
        "the in-chart link was not packaged with its target's content"
    );
}

/// Defect 5: a pinned reference served by an archive holding another
/// digest is refused, naming both (the chart's pin, and an archive whose
/// own annotation pins what it does not hold).
#[test]
fn digest_pins_an_archive_does_not_hold_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("img");
    let held = write_standin_layout(&layout, &["docker.io/acme/app:1.0".to_string()]).remove(0);
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let chart = small_chart(
        work.path(),
        &format!("image: docker.io/acme/app:1.0@{wrong}\n"),
    );
    let m = manifest(
        work.path(),
        Some(&chart),
        &format!("      images:\n        - archive: {}\n", layout.display()),
        "",
    );
    let out = work.path().join("out");
    let o = bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&wrong) && err.contains(&held), "{err}");
    assert!(no_bundles(&out));

    // The archive's own name pins a digest its content does not have.
    let layout2 = work.path().join("img2");
    write_standin_layout(&layout2, &[format!("docker.io/acme/other:2.0@{wrong}")]);
    let m = manifest(
        work.path(),
        None,
        "",
        &format!("  images:\n    - archive: {}\n", layout2.display()),
    );
    let o = bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "-o", out.to_str().unwrap()],
    );
    assert!(
        !o.status.success(),
        "accepted an archive whose pin it does not hold"
    );
    let err = stderr(&o);
    assert!(
        err.contains(&wrong) && err.contains("docker.io/acme/other"),
        "{err}"
    );
    assert!(no_bundles(&out));
}

/// Defect 6: `--platform linux/arm64` with a single-platform amd64 image
/// was packed and labelled arm64. The config decides: refuse, naming the
/// image and the platform it has. From a registry and from an archive.
#[test]
fn single_platform_images_of_another_platform_are_refused() {
    let src = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    images::push_simple(&src, work.path(), "acme/tool:3", &[b"amd64 only"]);
    let reference = format!("{}/acme/tool:3", src.host());
    let m = manifest(
        work.path(),
        None,
        "",
        &format!("  images:\n    - {reference}\n"),
    );
    let out = work.path().join("out");
    let o = bundler(
        work.path(),
        &[
            "pack",
            m.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--insecure",
            "--platform",
            "linux/arm64",
        ],
    );
    assert!(!o.status.success(), "packed an amd64 image as arm64");
    let err = stderr(&o);
    assert!(
        err.contains(&reference) && err.contains("linux/amd64"),
        "{err}"
    );
    assert!(no_bundles(&out));
    // The platform it has is fine, and is what bundle.json records.
    let o = bundler(
        work.path(),
        &[
            "pack",
            m.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--insecure",
            "--platform",
            "linux/amd64",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let layout = work.path().join("img");
    write_standin_layout(&layout, &["docker.io/acme/tool:4".to_string()]);
    let m = manifest(
        work.path(),
        None,
        "",
        &format!("  images:\n    - archive: {}\n", layout.display()),
    );
    let out2 = work.path().join("out2");
    let o = bundler(
        work.path(),
        &[
            "pack",
            m.to_str().unwrap(),
            "-o",
            out2.to_str().unwrap(),
            "--platform",
            "linux/arm64",
        ],
    );
    assert!(
        !o.status.success(),
        "packed an amd64 archive image as arm64"
    );
    let err = stderr(&o);
    assert!(
        err.contains("docker.io/acme/tool:4") && err.contains("linux/amd64"),
        "{err}"
    );
    assert!(no_bundles(&out2));
}
