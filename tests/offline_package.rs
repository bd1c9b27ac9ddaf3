//! The offline package (issue 21, and 20.14/20.15), through the `bundler`
//! binary against the real docker-registry and openssl: `package.json`
//! catches every cut, swap and edit before anything is pushed; signatures
//! made with openssl P-256 and Ed25519 keys and a cosign key pair verify
//! with bundler and with `openssl pkeyutl -verify`; a package split into
//! 5 volumes + 2 parity survives any two lost volumes and `repair` writes
//! them back byte for byte; pack refuses a too-small output directory up
//! front and never leaves a new bundle beside an old package; one chart
//! version twice in a package is refused at pack and at read.
//!
//! The products are synthetic (two charts sharing an OCI layout of random
//! layers, packed offline): the package format is what is under test, and
//! small products keep the many runs fast.
mod reliability_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reliability_support::*;
use support::registry::{Mode, Registry};
use support::{stderr, stdout};

/// Two charts (`NAME`, `NAME-init`) sharing one image archive of `layers`
/// random layers of `layer_size` bytes.
fn product(d: &Path, name: &str, seed: u64, layers: usize, layer_size: usize) -> PathBuf {
    let p = make_chart_product(d, name, 1, layers, layer_size, seed);
    let chart = d.join(format!("{name}-chart"));
    let init = d.join(format!("{name}-init-chart"));
    std::fs::create_dir_all(init.join("templates")).unwrap();
    std::fs::write(
        init.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}-init\nversion: 1.0.0\n"),
    )
    .unwrap();
    for f in ["values.yaml", "templates/deploy.yaml"] {
        std::fs::copy(chart.join(f), init.join(f)).unwrap();
    }
    let hints = d.join(format!("{name}-hints.yaml"));
    let mut m = format!(
        "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: {name}, version: 1.0.0}}\nspec:\n  charts:\n"
    );
    for (n, c) in [(name.to_string(), &chart), (format!("{name}-init"), &init)] {
        m.push_str(&format!(
            "    - name: {n}\n      path: {}\n      hints: {}\n      images:\n        - archive: {}\n",
            c.display(),
            hints.display(),
            p.layout.display()
        ));
    }
    std::fs::write(&p.manifest, m).unwrap();
    p.manifest
}

fn pack(d: &Path, manifest: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "pack",
        manifest.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(d, &args, env)
}

fn pack_ok(d: &Path, manifest: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) {
    let o = pack(d, manifest, out, extra, env);
    assert!(
        o.status.success(),
        "pack {extra:?}: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
}

/// The package `NAME_1.0.0_amd64.tar` in `out`.
fn package_in(out: &Path, name: &str) -> PathBuf {
    out.join(format!("{name}_1.0.0_amd64.tar"))
}

/// (name, header offset, data offset, size) of every top-level entry.
fn entries(package: &[u8]) -> Vec<(String, u64, u64, u64)> {
    let mut out = Vec::new();
    let mut a = tar::Archive::new(package);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        out.push((
            e.path().unwrap().to_string_lossy().into_owned(),
            e.raw_header_position(),
            e.raw_file_position(),
            e.size(),
        ));
    }
    out
}

fn verify(d: &Path, args: &[&str]) -> Output {
    let mut a = vec!["verify"];
    a.extend_from_slice(args);
    run(d, &a, &[])
}

/// A LOCAL sync of `source` into `reg`; returns the output.
fn sync(d: &Path, source: &Path, reg: &Registry, extra_source: &str) -> Output {
    let cfg = d.join("load-image.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\n{extra_source}target:\n  containerPrefixRegistry: {}/site\n  repo:\n    kind: LOCAL\n    path: ./local-repo\n",
            source.display(),
            reg.host()
        ),
    )
    .unwrap();
    run(d, &["sync", "-c", cfg.to_str().unwrap(), "--insecure"], &[])
}

fn sha(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap())
}

#[test]
fn a_package_cut_at_any_entry_boundary_or_mid_entry_is_refused_with_nothing_pushed() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let m = product(d, "cut", 1, 2, 8 << 10);
    let out = d.join("out");
    pack_ok(d, &m, &out, &[], &[]);
    let bytes = std::fs::read(package_in(&out, "cut")).unwrap();
    let es = entries(&bytes);
    assert_eq!(es[0].0, "package.json", "{es:?}");
    assert!(es.len() >= 5, "{es:?}");
    let mut cuts: Vec<(String, u64)> = Vec::new();
    for (i, (name, header, data, size)) in es.iter().enumerate() {
        if i > 0 {
            cuts.push((format!("before {name}"), *header));
        }
        cuts.push((format!("inside the header of {name}"), header + 256));
        if *size > 1 {
            cuts.push((format!("in the middle of {name}"), data + size / 2));
        }
    }
    let reg = Registry::start(Mode::Plain);
    let http = Http::new(&reg);
    let cut_path = d.join("cut_1.0.0_amd64.tar");
    for (what, at) in &cuts {
        std::fs::write(&cut_path, &bytes[..*at as usize]).unwrap();
        let v = verify(d, &[cut_path.to_str().unwrap()]);
        assert!(!v.status.success(), "verify accepted a package cut {what}");
        let s = sync(d, &cut_path, &reg, "");
        assert!(!s.status.success(), "sync accepted a package cut {what}");
        if *at > es[1].1 {
            // Past package.json: the refusal names what is wrong.
            let e = stderr(&s);
            assert!(
                e.contains("missing")
                    || e.contains("truncated")
                    || e.contains("incomplete")
                    || e.contains("ends at"),
                "cut {what}: {e}"
            );
        }
    }
    assert_registry_empty(&http, "cut packages");
    assert!(!d.join("local-repo/index.yaml").exists());
    // Only the end-of-archive blocks gone: every member is whole, accepted.
    let (_, _, data, size) = es.last().unwrap();
    std::fs::write(&cut_path, &bytes[..(data + size) as usize]).unwrap();
    let v = verify(d, &[cut_path.to_str().unwrap()]);
    assert!(v.status.success(), "{}", stderr(&v));
}

#[test]
fn swapped_edited_added_and_duplicate_members_are_refused_before_anything_is_pushed() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let (a, b) = (d.join("a"), d.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    // Same layout sizes, other bytes: bundles of the same size.
    let ma = product(&a, "swap", 1, 2, 8 << 10);
    let mb = product(&b, "swap", 2, 2, 8 << 10);
    pack_ok(d, &ma, &d.join("out-a"), &[], &[]);
    pack_ok(d, &mb, &d.join("out-b"), &[], &[]);
    let pa = std::fs::read(package_in(&d.join("out-a"), "swap")).unwrap();
    let pb = std::fs::read(package_in(&d.join("out-b"), "swap")).unwrap();
    let (ea, eb) = (entries(&pa), entries(&pb));
    let bundle = "swap_1.0.0.bundle.tar";
    let find = |es: &[(String, u64, u64, u64)]| es.iter().find(|e| e.0 == bundle).cloned().unwrap();
    let (fa, fb) = (find(&ea), find(&eb));
    assert_eq!(
        (fa.2, fa.3),
        (fb.2, fb.3),
        "the two bundles must lie at the same place"
    );
    let reg = Registry::start(Mode::Plain);
    let http = Http::new(&reg);
    let target = d.join("edited_1.0.0_amd64.tar");
    let refused = |bytes: &[u8], expect: &str, what: &str| {
        std::fs::write(&target, bytes).unwrap();
        let v = verify(d, &[target.to_str().unwrap()]);
        assert!(!v.status.success(), "verify accepted {what}");
        assert!(stderr(&v).contains(expect), "{what}: {}", stderr(&v));
        let s = sync(d, &target, &reg, "");
        assert!(!s.status.success(), "sync accepted {what}");
        assert!(stderr(&s).contains(expect), "{what}: {}", stderr(&s));
        assert_registry_empty(&http, what);
    };
    // Another valid bundle of the same size in place of the packed one.
    let mut swapped = pa.clone();
    let r = fa.2 as usize..(fa.2 + fa.3) as usize;
    swapped[r.clone()].copy_from_slice(&pb[r]);
    refused(&swapped, "a member was swapped", "a swapped bundle");
    // One byte of a layer flipped: only the member's sha256 tells.
    let mut edited = pa.clone();
    let at = (fa.2 + fa.3 - 4096) as usize;
    edited[at] ^= 0x20;
    refused(&edited, "was changed after packing", "an edited bundle");
    // A member added after packing (before the end-of-archive blocks).
    let (_, _, data, size) = ea.last().unwrap().clone();
    let end = (data + size).div_ceil(512) * 512;
    let mut added = pa[..end as usize].to_vec();
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    let mut tb = tar::Builder::new(Vec::new());
    tb.append_data(&mut h, "zz-extra.bundle.tar", &b"abc"[..])
        .unwrap();
    added.extend(tb.into_inner().unwrap());
    refused(&added, "not in package.json", "an added member");
    // 20.15: one chart version in two bundles of different content, in a
    // package without a table of contents (an older bundler's layout).
    let mut legacy = tar::Builder::new(Vec::new());
    for (name, bytes) in [("swap_1.0.0.bundle.tar", &pa), ("copy.bundle.tar", &pb)] {
        let e = if name == bundle { &fa } else { &fb };
        let mut h = tar::Header::new_gnu();
        h.set_size(e.3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        legacy
            .append_data(&mut h, name, &bytes[e.2 as usize..(e.2 + e.3) as usize])
            .unwrap();
    }
    refused(
        &legacy.into_inner().unwrap(),
        "chart swap-1.0.0 is carried twice with different content",
        "one chart version twice",
    );
    // A package without package.json is read, with a warning.
    let legacy = pa[ea[1].1 as usize..].to_vec();
    std::fs::write(&target, &legacy).unwrap();
    let v = verify(d, &[target.to_str().unwrap()]);
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(
        stderr(&v).contains("completeness cannot be checked")
            || stderr(&v).contains("cannot be checked"),
        "{}",
        stderr(&v)
    );
}

#[test]
fn pack_refuses_one_chart_version_twice() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let m = product(d, "twice", 1, 1, 4 << 10);
    // The same chart name and version from a second, different directory.
    let other = d.join("twice-other-chart");
    std::fs::create_dir_all(other.join("templates")).unwrap();
    std::fs::write(
        other.join("Chart.yaml"),
        "apiVersion: v2\nname: twice\nversion: 1.0.0\ndescription: other\n",
    )
    .unwrap();
    for f in ["values.yaml", "templates/deploy.yaml"] {
        std::fs::copy(d.join("twice-chart").join(f), other.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(&m).unwrap();
    let dup = text
        .replace(
            &format!("path: {}\n", d.join("twice-init-chart").display()),
            &format!("path: {}\n", other.display()),
        )
        .replace("- name: twice-init\n", "- name: twice\n");
    assert_ne!(dup, text);
    std::fs::write(&m, dup).unwrap();
    let out = d.join("out");
    let o = pack(d, &m, &out, &[], &[]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains("twice"), "{e}");
    assert!(!package_in(&out, "twice").exists());
}

fn openssl(args: &[&str]) -> Output {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `openssl pkeyutl -verify` of `package.json` with the package's signature.
fn openssl_verifies(d: &Path, package: &Path, public: &Path, ed25519: bool) -> bool {
    let bytes = std::fs::read(package).unwrap();
    let es = entries(&bytes);
    let get = |n: &str| {
        let e = es
            .iter()
            .find(|e| e.0 == n)
            .unwrap_or_else(|| panic!("no {n}"));
        bytes[e.2 as usize..(e.2 + e.3) as usize].to_vec()
    };
    let (json, sig) = (d.join("package.json"), d.join("package.json.sig"));
    std::fs::write(&json, get("package.json")).unwrap();
    std::fs::write(&sig, get("package.json.sig")).unwrap();
    let mut args = vec![
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        public.to_str().unwrap(),
        "-rawin",
    ];
    if !ed25519 {
        args.extend(["-digest", "sha256"]);
    }
    args.extend([
        "-in",
        json.to_str().unwrap(),
        "-sigfile",
        sig.to_str().unwrap(),
    ]);
    Command::new("openssl")
        .args(&args)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn packages_signed_with_openssl_and_cosign_keys_verify_with_bundler_and_openssl() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let m = product(d, "signed", 3, 1, 4 << 10);
    let keys = d.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let k = |n: &str| keys.join(n).to_str().unwrap().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &k("p256.pem"),
    ]);
    openssl(&[
        "pkey",
        "-in",
        &k("p256.pem"),
        "-pubout",
        "-out",
        &k("p256.pub"),
    ]);
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &k("sec1.pem"),
    ]);
    openssl(&[
        "ec",
        "-in",
        &k("sec1.pem"),
        "-pubout",
        "-out",
        &k("sec1.pub"),
    ]);
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &k("ed.pem")]);
    openssl(&["pkey", "-in", &k("ed.pem"), "-pubout", "-out", &k("ed.pub")]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    let cosign_key = fixtures
        .join("cosign-test.key")
        .to_str()
        .unwrap()
        .to_string();
    let cosign_pub = fixtures
        .join("cosign-test.pub")
        .to_str()
        .unwrap()
        .to_string();
    let password = "123";
    let cases: Vec<(&str, String, String, bool)> = vec![
        ("p256", k("p256.pem"), k("p256.pub"), false),
        ("sec1", k("sec1.pem"), k("sec1.pub"), false),
        ("ed25519", k("ed.pem"), k("ed.pub"), true),
        ("cosign", cosign_key.clone(), cosign_pub.clone(), false),
    ];
    let mut packages = Vec::new();
    for (label, private, public, ed) in &cases {
        let out = d.join(format!("out-{label}"));
        let o = pack(
            d,
            &m,
            &out,
            &["--sign-key", private],
            &[("COSIGN_PASSWORD", password)],
        );
        assert!(o.status.success(), "{label}: {}", stderr(&o));
        let package = package_in(&out, "signed");
        let v = verify(d, &["--key", public, package.to_str().unwrap()]);
        assert!(v.status.success(), "{label}: {}", stderr(&v));
        assert!(
            stdout(&v).contains("OK signature of"),
            "{label}: {}",
            stdout(&v)
        );
        assert!(
            openssl_verifies(d, &package, Path::new(public), *ed),
            "{label}: openssl pkeyutl -verify refused the signature"
        );
        packages.push((label.to_string(), package, public.clone()));
    }
    // The cosign key without its password, or with a wrong one: refused, and
    // the password is never echoed.
    let o = pack(
        d,
        &m,
        &d.join("out-nopass"),
        &["--sign-key", &cosign_key],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("COSIGN_PASSWORD"), "{}", stderr(&o));
    let wrong = "Wr0ng-Secret-Pass";
    let o = pack(
        d,
        &m,
        &d.join("out-wrong"),
        &["--sign-key", &cosign_key],
        &[("COSIGN_PASSWORD", wrong)],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("wrong password"), "{}", stderr(&o));
    assert!(!stderr(&o).contains(wrong) && !stdout(&o).contains(wrong));
    // Another key: refused.
    let (_, p256_pkg, _) = &packages[0];
    let v = verify(d, &["--key", &k("ed.pub"), p256_pkg.to_str().unwrap()]);
    assert!(!v.status.success());
    assert!(
        stderr(&v).contains("signed by another key"),
        "{}",
        stderr(&v)
    );
    // One byte of package.json changed (a digit of a member's sha256).
    let mut bytes = std::fs::read(p256_pkg).unwrap();
    let es = entries(&bytes);
    let json = &bytes[es[0].2 as usize..(es[0].2 + es[0].3) as usize];
    let key = b"\"sha256\": \"sha256:";
    let at =
        es[0].2 as usize + json.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 5;
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    let flipped = d.join("flipped_1.0.0_amd64.tar");
    std::fs::write(&flipped, &bytes).unwrap();
    let v = verify(d, &["--key", &k("p256.pub"), flipped.to_str().unwrap()]);
    assert!(!v.status.success());
    assert!(stderr(&v).contains("was edited"), "{}", stderr(&v));
    assert!(!openssl_verifies(
        d,
        &flipped,
        &keys.join("p256.pub"),
        false
    ));
    // An unsigned package where the site requires a signature.
    let unsigned = d.join("out-unsigned");
    pack_ok(d, &m, &unsigned, &[], &[]);
    let reg = Registry::start(Mode::Plain);
    let http = Http::new(&reg);
    let require = format!(
        "  requireSignature: true\n  signatureKey: {}\n",
        k("p256.pub")
    );
    let s = sync(d, &package_in(&unsigned, "signed"), &reg, &require);
    assert!(!s.status.success());
    assert!(stderr(&s).contains("not signed"), "{}", stderr(&s));
    let s = sync(d, &packages[3].1, &reg, &require);
    assert!(
        !s.status.success(),
        "a cosign-signed package passed for the P-256 key"
    );
    assert_registry_empty(&http, "unsigned or foreign packages");
    // The right key: synced.
    let s = sync(d, p256_pkg, &reg, &require);
    assert!(s.status.success(), "{}", stderr(&s));
    assert!(!http.catalog().is_empty());
    // A signed split package: the signature is checked across volumes.
    let split = d.join("out-split");
    pack_ok(
        d,
        &m,
        &split,
        &["--sign-key", &k("ed.pem"), "--split", "64K"],
        &[],
    );
    let first = split.join("signed_1.0.0_amd64.tar.001");
    let v = verify(d, &["--key", &k("ed.pub"), first.to_str().unwrap()]);
    assert!(v.status.success(), "{}", stderr(&v));
    let i = run(d, &["inspect", first.to_str().unwrap()], &[]);
    assert!(i.status.success(), "{}", stderr(&i));
    let text = stdout(&i);
    assert!(
        text.contains("signed 1.0.0 amd64") && text.contains(", signed, split into 1 volumes"),
        "{text}"
    );
    let v = verify(
        d,
        &[
            "--key",
            &k("p256.pub"),
            split
                .join("signed_1.0.0_amd64.tar.volumes.json")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(!v.status.success());
    assert!(
        stderr(&v).contains("signed by another key"),
        "{}",
        stderr(&v)
    );
}

/// Files of a split package in `dir`: data volumes then parity volumes.
fn volumes(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut data: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with(&format!("{name}.")) && (n.ends_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    data.sort_by_key(|p| {
        let n = p.file_name().unwrap().to_str().unwrap().to_string();
        (n.contains(".par"), n)
    });
    data
}

#[test]
fn a_split_package_with_two_parity_volumes_survives_any_two_losses_and_repair_restores_them() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let m = product(d, "media", 4, 4, 96 << 10);
    let whole = d.join("whole");
    pack_ok(d, &m, &whole, &[], &[]);
    let size = std::fs::metadata(package_in(&whole, "media"))
        .unwrap()
        .len();
    let volume = (size / 5 + 2048).to_string();
    let media = d.join("media");
    std::fs::create_dir_all(&media).unwrap();
    let out = d.join("out");
    pack_ok(d, &m, &out, &["--split", &volume, "--parity", "2"], &[]);
    assert!(
        !package_in(&out, "media").exists(),
        "a split pack wrote the single file too"
    );
    // Only the volumes and their table go on the medium.
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_str().unwrap().to_string();
        if n.starts_with("media_1.0.0_amd64.tar.") {
            std::fs::copy(&p, media.join(&n)).unwrap();
        }
    }
    let vols = volumes(&media, "media_1.0.0_amd64.tar");
    let names: Vec<String> = vols
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(
        names[0].ends_with(".001") && names[4].ends_with(".005") && names[6].ends_with(".par2"),
        "{names:?}"
    );
    let originals: Vec<String> = vols.iter().map(|p| sha(p)).collect();
    // The data volumes are plain slices: joined, they are the package.
    let mut joined = Vec::new();
    for p in &vols[..5] {
        joined.extend(std::fs::read(p).unwrap());
    }
    let joined_path = d.join("joined_1.0.0_amd64.tar");
    std::fs::write(&joined_path, &joined).unwrap();
    assert!(verify(d, &[joined_path.to_str().unwrap()]).status.success());
    let ok = verify(d, &[vols[0].to_str().unwrap()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let aside = d.join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    // Every pair of the seven volumes lost: named, content intact.
    for i in 0..7 {
        for j in i + 1..7 {
            for k in [i, j] {
                std::fs::rename(&vols[k], aside.join(&names[k])).unwrap();
            }
            let v = verify(d, &[media.to_str().unwrap()]);
            let e = stderr(&v);
            assert!(
                !v.status.success(),
                "{i},{j}: verify passed with two volumes missing"
            );
            assert!(
                e.contains(&format!("volume {} is missing", names[i]))
                    && e.contains(&format!("volume {} is missing", names[j])),
                "{i},{j}: {e}"
            );
            assert!(
                e.contains("intact through parity") && !e.contains("FAILED"),
                "{i},{j}: {e}"
            );
            for k in [i, j] {
                std::fs::rename(aside.join(&names[k]), &vols[k]).unwrap();
            }
        }
    }
    // Three bad volumes: more than parity rebuilds; named, nothing pushed.
    let reg = Registry::start(Mode::Plain);
    let http = Http::new(&reg);
    let damage = |p: &Path| {
        let mut b = std::fs::read(p).unwrap();
        let at = b.len() / 2;
        for x in &mut b[at..at + 64] {
            *x ^= 0xff;
        }
        std::fs::write(p, b).unwrap();
    };
    std::fs::rename(&vols[0], aside.join(&names[0])).unwrap();
    std::fs::rename(&vols[5], aside.join(&names[5])).unwrap();
    damage(&vols[2]);
    let s = sync(d, &media, &reg, "");
    assert!(!s.status.success());
    let e = stderr(&s);
    for n in [&names[0], &names[2], &names[5]] {
        assert!(e.contains(n.as_str()), "{n}: {e}");
    }
    assert_registry_empty(&http, "three bad volumes");
    // Back to two: one missing data volume and one damaged one.
    std::fs::rename(aside.join(&names[5]), &vols[5]).unwrap();
    let v = verify(d, &[media.to_str().unwrap()]);
    assert!(!v.status.success());
    assert!(
        stderr(&v).contains(&format!("volume {} is damaged", names[2])),
        "{}",
        stderr(&v)
    );
    let s = sync(d, &media, &reg, "");
    assert!(s.status.success(), "sync through parity: {}", stderr(&s));
    let tags = http.audit();
    assert!(!tags.is_empty());
    assert!(d.join("local-repo/index.yaml").exists());
    // repair writes both back, byte for byte.
    let r = run(d, &["repair", media.to_str().unwrap()], &[]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(
        stdout(&r).contains(&names[0]) && stdout(&r).contains(&names[2]),
        "{}",
        stdout(&r)
    );
    for (p, want) in vols.iter().zip(&originals) {
        assert_eq!(&sha(p), want, "{} differs after repair", p.display());
    }
    // A lost parity volume is rebuilt too.
    std::fs::remove_file(&vols[6]).unwrap();
    let r = run(d, &["repair", vols[1].to_str().unwrap()], &[]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(sha(&vols[6]), originals[6]);
    let v = verify(d, &[vols[0].to_str().unwrap()]);
    assert!(v.status.success(), "{}", stderr(&v));
}

#[test]
fn pack_refuses_a_three_mib_output_directory_up_front_and_a_failed_run_keeps_the_old_outputs() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let m = product(d, "big", 5, 2, 1 << 20);
    let small = d.join("tmpfs");
    std::fs::create_dir_all(&small).unwrap();
    let mount = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=3m",
            "tmpfs",
            small.to_str().unwrap(),
        ])
        .output()
        .expect("mount");
    assert!(
        mount.status.success(),
        "mount a 3 MiB tmpfs (the test runs as root): {}",
        String::from_utf8_lossy(&mount.stderr)
    );
    let o = pack(d, &m, &small, &[], &[]);
    let listing: Vec<String> = std::fs::read_dir(&small)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let _ = Command::new("umount").arg(&small).status();
    assert!(!o.status.success(), "pack into 3 MiB: {}", stdout(&o));
    let e = stderr(&o);
    assert!(
        e.contains("needs") && e.contains("are free") && e.contains("bytes"),
        "{e}"
    );
    assert!(
        listing.is_empty(),
        "pack wrote into the small directory: {listing:?}"
    );

    // 20.14: a run that fails at the end leaves the previous run's files.
    let out = d.join("out");
    let m1 = product(&d.join("v1").tap_mkdir(), "keep", 6, 1, 4 << 10);
    pack_ok(d, &m1, &out, &[], &[]);

    // A LOCAL chart repository on a file system too small for the charts:
    // sync refuses before pushing anything.
    let repo = d.join("tiny-repo");
    std::fs::create_dir_all(&repo).unwrap();
    let mount = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=16k",
            "tmpfs",
            repo.to_str().unwrap(),
        ])
        .output()
        .expect("mount");
    assert!(
        mount.status.success(),
        "{}",
        String::from_utf8_lossy(&mount.stderr)
    );
    let reg = Registry::start(Mode::Plain);
    let http = Http::new(&reg);
    let cfg = d.join("tiny.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {}/site\n  repo:\n    kind: LOCAL\n    path: {}\n",
            package_in(&out, "keep").display(),
            reg.host(),
            repo.display()
        ),
    )
    .unwrap();
    let s = run(d, &["sync", "-c", cfg.to_str().unwrap(), "--insecure"], &[]);
    let left = std::fs::read_dir(&repo).unwrap().count();
    let _ = Command::new("umount").arg(&repo).status();
    assert!(
        !s.status.success(),
        "sync into a 16 KiB LOCAL repo: {}",
        stdout(&s)
    );
    assert!(
        stderr(&s).contains("needs") && stderr(&s).contains("are free"),
        "{}",
        stderr(&s)
    );
    assert_eq!(left, 0);
    assert_registry_empty(&http, "a LOCAL repo without room");
    let bundle = out.join("keep_1.0.0.bundle.tar");
    let before = sha(&bundle);
    // The package's name taken by a directory: its rename fails last.
    let package = package_in(&out, "keep");
    std::fs::remove_file(&package).unwrap();
    std::fs::create_dir_all(package.join("x")).unwrap();
    let m2 = product(&d.join("v2").tap_mkdir(), "keep", 7, 1, 4 << 10);
    let o = pack(d, &m2, &out, &[], &[]);
    assert!(!o.status.success());
    assert_eq!(sha(&bundle), before, "a failed pack replaced a bundle");
    let partial: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
