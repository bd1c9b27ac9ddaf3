//! Reliability (issue 6), bad input through the `bundler` binary: damaged
//! and hostile bundles are refused by `verify` and by `sync` (naming the
//! bundle and what is wrong, exit non-zero, nothing pushed to the real
//! target registry, nothing written anywhere), and bad configs and bundle
//! manifests exit 2 naming file:line:column and key, with nothing pushed
//! or written.
mod reliability_support;
mod support;

use std::path::{Path, PathBuf};

use reliability_support::*;
use support::registry::{Mode, Registry};
use support::{stderr, stdout};

/// A target registry, a good bundle that sorts first, and a chart bundle
/// to damage.
struct Site {
    work: tempfile::TempDir,
    reg: Registry,
    http: Http,
    /// `aaa-good-images_1.0.0.bundle.tar`: synced alongside every damaged
    /// bundle, and must not be pushed either.
    good: PathBuf,
    /// `shop_1.0.0.bundle.tar` (a chart with 2 images).
    base: PathBuf,
    product: Product,
}

fn site() -> Site {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let good_p = make_product(d, "aaa-good", 1, 1, 32 << 10, 1);
    let out = pack_ok(d, &good_p.manifest, &d.join("good-out"));
    let good = out.join(&good_p.bundle_name);
    let product = make_chart_product(d, "shop", 2, 2, 64 << 10, 2);
    let out = pack_ok(d, &product.manifest, &d.join("base-out"));
    let base = out.join(&product.bundle_name);
    let reg = Registry::start(Mode::Plain);
    let http = Http::new(&reg);
    Site {
        work,
        reg,
        http,
        good,
        base,
        product,
    }
}

impl Site {
    fn d(&self) -> &Path {
        self.work.path()
    }

    /// `verify` and `sync` both refuse `bundle`: non-zero exit, the bundle's
    /// file name and every `expect` in the message, nothing pushed (the
    /// good bundle next to it neither), nothing written in the site dir.
    fn refused(&self, label: &str, bundle: &Path, expect: &[&str]) {
        let name = bundle.file_name().unwrap().to_str().unwrap();
        let v = run(self.d(), &["verify", bundle.to_str().unwrap()], &[]);
        let err = stderr(&v);
        assert!(!v.status.success(), "{label}: verify accepted it");
        assert!(
            err.contains(name),
            "{label}: verify must name {name}: {err}"
        );
        for e in expect {
            assert!(err.contains(e), "{label}: verify: expected {e:?} in {err}");
        }

        let case = self.d().join(format!("case-{label}"));
        let bundles = case.join("bundles");
        std::fs::create_dir_all(&bundles).unwrap();
        std::fs::copy(&self.good, bundles.join(self.good.file_name().unwrap())).unwrap();
        std::fs::copy(bundle, bundles.join(name)).unwrap();
        let site = case.join("site");
        std::fs::create_dir_all(&site).unwrap();
        // A registry of its own: blobs an earlier case left (invisible,
        // without manifests) must not count against this one.
        let reg = Registry::start(Mode::Plain);
        let http = Http::new(&reg);
        let cfg = sync_config(&site, &bundles, &reg.host(), None);
        let before = tree(&case);
        let o = run(
            &site,
            &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
            &[],
        );
        let err = stderr(&o);
        eprintln!("{label}: {}", err.trim());
        assert!(
            !o.status.success(),
            "{label}: sync accepted it: {}",
            stdout(&o)
        );
        assert_eq!(o.status.code(), Some(1), "{label}: {err}");
        assert!(err.contains(name), "{label}: sync must name {name}: {err}");
        for e in expect {
            assert!(err.contains(e), "{label}: sync: expected {e:?} in {err}");
        }
        // Damage found before the first request: nothing at all went up.
        // Damage inside a blob is found while it streams (one read per
        // byte): blobs of the run may be in, but no manifest or tag is.
        if err.contains("no image was pushed") {
            assert_nothing_visible(&http, label);
        } else {
            assert!(
                err.contains("nothing was pushed"),
                "{label}: the error must say nothing was pushed: {err}"
            );
            assert_registry_empty(&http, label);
        }
        assert_eq!(tree(&case), before, "{label}: sync wrote files");
    }

    /// A copy of the base bundle under `label`.bundle.tar, edited by `f`.
    fn damaged(
        &self,
        label: &str,
        fix_checksums: bool,
        f: impl FnOnce(&mut Vec<(String, Vec<u8>)>, &mut Vec<(String, Vec<u8>)>),
    ) -> PathBuf {
        let p = self.d().join(format!("{label}.bundle.tar"));
        rewrite_bundle(&self.base, &p, fix_checksums, f);
        p
    }
}

fn replace_entry(entries: &mut [(String, Vec<u8>)], name: &str, data: Vec<u8>) {
    let e = entries
        .iter_mut()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not found"));
    e.1 = data;
}

fn entry<'a>(entries: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &entries.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn damaged_bundles_are_refused_by_verify_and_sync_and_nothing_is_pushed() {
    let s = site();
    let d = s.d().to_path_buf();
    // The base bundle itself is fine (and the rewrite helper keeps it so).
    let same = s.damaged("untouched", false, |_, _| {});
    let v = run(&d, &["verify", same.to_str().unwrap()], &[]);
    assert!(v.status.success(), "{}", stderr(&v));

    // 1. A flipped byte in the middle of a layer.
    let layer = largest_layer(&s.product);
    let flipped = d.join("flipped.bundle.tar");
    std::fs::copy(&s.base, &flipped).unwrap();
    let (off, len) = inner_extent(&flipped, &format!("blobs/sha256/{}", &layer[7..]));
    let mut bytes = std::fs::read(&flipped).unwrap();
    bytes[(off + len / 2) as usize] ^= 0x40;
    std::fs::write(&flipped, bytes).unwrap();
    s.refused("flipped", &flipped, &[&layer, "corrupted"]);

    // 2. Truncated: the file cut in the middle of the blobs.
    let truncated = d.join("truncated.bundle.tar");
    let bytes = std::fs::read(&s.base).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() * 3 / 5]).unwrap();
    s.refused("truncated", &truncated, &["truncated"]);
    // ... and cut right after a header block.
    let cut = d.join("cut-header.bundle.tar");
    std::fs::write(&cut, &bytes[..512 + 100]).unwrap();
    s.refused("cut-header", &cut, &[]);

    // 3. A missing blob (a layer entry dropped from images.tar).
    let missing = s.damaged("missing-blob", false, |_, inner| {
        inner.retain(|(n, _)| !n.ends_with(&layer[7..]));
    });
    s.refused("missing-blob", &missing, &[&layer]);

    // 4. index.json pointing at a manifest that is not there (checksums
    // fixed, so the reader meets the dangling digest itself).
    let nowhere = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let dangling_index = s.damaged("dangling-index", true, |_, inner| {
        let idx = String::from_utf8(entry(inner, "index.json").to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&idx).unwrap();
        let first = v["manifests"][0]["digest"].as_str().unwrap().to_string();
        replace_entry(
            inner,
            "index.json",
            idx.replace(&first, nowhere).into_bytes(),
        );
    });
    s.refused("dangling-index", &dangling_index, &[nowhere]);

    // 5. manifest.json (docker archive view) pointing at a missing config.
    let nothing = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    let dangling_docker = s.damaged("dangling-docker", true, |_, inner| {
        let m = String::from_utf8(entry(inner, "manifest.json").to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        let cfg = v[0]["Config"].as_str().unwrap().to_string();
        let hex = cfg.rsplit('/').next().unwrap().to_string();
        replace_entry(
            inner,
            "manifest.json",
            m.replace(&hex, &nothing[7..]).into_bytes(),
        );
    });
    s.refused("dangling-docker", &dangling_docker, &["2222222222"]);

    // 6. Malformed bundle.json.
    let badjson = s.damaged("bad-bundle-json", false, |outer, _| {
        replace_entry(
            outer,
            "bundle.json",
            b"{\"formatVersion\": \"1.0\",".to_vec(),
        );
    });
    s.refused("bad-bundle-json", &badjson, &["bundle.json", "malformed"]);
    // bundle.json valid JSON but with a wrong field.
    let wrongfield = s.damaged("bundle-json-field", false, |outer, _| {
        let mut v: serde_json::Value = serde_json::from_slice(entry(outer, "bundle.json")).unwrap();
        v["images"] = serde_json::json!("not a list");
        replace_entry(outer, "bundle.json", serde_json::to_vec(&v).unwrap());
    });
    s.refused("bundle-json-field", &wrongfield, &["bundle.json"]);

    // 7. A file changed after packing (values.yaml edited, checksum stale).
    let edited = s.damaged("edited-values", false, |outer, _| {
        replace_entry(
            outer,
            "original-chart/values.yaml",
            b"image:\n  registry: evil.example.com\n  repository: x\n  tag: \"1\"\n".to_vec(),
        );
    });
    s.refused("edited-values", &edited, &["original-chart/values.yaml"]);

    // 8. A manifest blob whose bytes no longer match its digest (index.json
    // checksum fixed, blob edited in place).
    let m_digest = {
        let outer = read_tar(&std::fs::read(&s.base).unwrap());
        let inner = read_tar(entry(&outer, "images.tar"));
        let v: serde_json::Value = serde_json::from_slice(entry(&inner, "index.json")).unwrap();
        v["manifests"][0]["digest"].as_str().unwrap().to_string()
    };
    let bad_manifest = s.damaged("bad-manifest-blob", false, |_, inner| {
        let name = format!("blobs/sha256/{}", &m_digest[7..]);
        let mut m = entry(inner, &name).to_vec();
        m.push(b'\n');
        replace_entry(inner, &name, m);
    });
    s.refused("bad-manifest-blob", &bad_manifest, &[&m_digest]);
}

#[test]
fn a_damaged_bundle_inside_the_offline_package_is_refused() {
    let s = site();
    // The offline package as shipped, with one byte of a layer flipped.
    let pkg_src = s.base.parent().unwrap().join("shop_1.0.0_amd64.tar");
    let pkg = s.d().join("pkg").join("shop_1.0.0_amd64.tar");
    std::fs::create_dir_all(pkg.parent().unwrap()).unwrap();
    std::fs::copy(&pkg_src, &pkg).unwrap();
    let layer = largest_layer(&s.product);
    let bytes = std::fs::read(&pkg).unwrap();
    let layer_bytes =
        std::fs::read(s.product.layout.join("blobs/sha256").join(&layer[7..])).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &layer_bytes[1000..1064])
        .unwrap();
    let mut bytes = bytes;
    bytes[at + 10] ^= 1;
    std::fs::write(&pkg, bytes).unwrap();
    let site = s.d().join("pkg-site");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = sync_config(&site, &pkg, &s.reg.host(), None);
    let o = run(
        &site,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
        &[],
    );
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("shop_1.0.0.bundle.tar") && err.contains("shop_1.0.0_amd64.tar"),
        "{err}"
    );
    assert!(err.contains(&layer), "{err}");
    assert!(err.contains("no image was pushed"), "{err}");
    assert_nothing_visible(&s.http, "damaged package");
    assert!(!site.join("local-repo").exists());
}

// ---- hostile tars, built byte by byte ----

/// (name, data, type flag, link target)
type RawEntry = (Vec<u8>, Vec<u8>, u8, Vec<u8>);

fn raw_header(name: &[u8], size: u64, kind: u8, link: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.as_old_mut().linkflag = [kind];
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, kind, link) in entries {
        out.extend(raw_header(name, data.len() as u64, *kind, link));
        out.extend(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend([0u8; 1024]);
    out
}

fn raw_file(name: &str, data: &[u8]) -> RawEntry {
    (name.as_bytes().to_vec(), data.to_vec(), b'0', vec![])
}

/// The base bundle's entries as raw entries, with `extra` inserted before
/// images.tar (outer) — a real bundle carrying one hostile entry.
fn base_with(base: &Path, extra: Vec<RawEntry>) -> Vec<u8> {
    let mut out: Vec<RawEntry> = Vec::new();
    let mut extra = Some(extra);
    for (n, data) in read_tar(&std::fs::read(base).unwrap()) {
        if n == "images.tar" {
            out.extend(extra.take().unwrap());
        }
        if n.ends_with('/') {
            out.push((n.into_bytes(), vec![], b'5', vec![]));
        } else {
            out.push((n.into_bytes(), data, b'0', vec![]));
        }
    }
    raw_tar(&out)
}

/// Same, with `extra` appended to the nested images.tar.
fn base_with_inner(base: &Path, extra: Vec<RawEntry>) -> Vec<u8> {
    let mut out: Vec<RawEntry> = Vec::new();
    for (n, data) in read_tar(&std::fs::read(base).unwrap()) {
        let data = if n == "images.tar" {
            let mut inner: Vec<RawEntry> = read_tar(&data)
                .into_iter()
                .map(|(n, d)| {
                    if n.ends_with('/') {
                        (n.into_bytes(), vec![], b'5', vec![])
                    } else {
                        (n.into_bytes(), d, b'0', vec![])
                    }
                })
                .collect();
            inner.extend(extra.clone());
            raw_tar(&inner)
        } else {
            data
        };
        if n.ends_with('/') {
            out.push((n.into_bytes(), vec![], b'5', vec![]));
        } else {
            out.push((n.into_bytes(), data, b'0', vec![]));
        }
    }
    raw_tar(&out)
}

#[test]
fn hostile_bundles_are_refused_by_verify_and_sync_and_nothing_escapes() {
    let s = site();
    let d = s.d().to_path_buf();
    let write = |label: &str, bytes: Vec<u8>| {
        let p = d.join(format!("{label}.bundle.tar"));
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // Paths a naive extractor would write to: none may exist afterwards.
    let outside = tempfile::tempdir().unwrap();
    let abs_target = outside.path().join("pwned");
    let abs_name = abs_target.to_str().unwrap().to_string();

    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "dotdot",
            base_with(
                &s.base,
                vec![raw_file("original-chart/../../../evil", b"x")],
            ),
            vec!["original-chart/../../../evil", ".."],
        ),
        (
            "absolute",
            base_with(&s.base, vec![raw_file(&abs_name, b"x")]),
            vec![abs_name.as_str(), "absolute"],
        ),
        (
            "symlink",
            base_with(
                &s.base,
                vec![(
                    b"original-chart/templates/link.yaml".to_vec(),
                    vec![],
                    b'2',
                    b"/etc/passwd".to_vec(),
                )],
            ),
            vec!["original-chart/templates/link.yaml", "symbolic link"],
        ),
        (
            "hardlink",
            base_with(
                &s.base,
                vec![(
                    b"original-chart/hard".to_vec(),
                    vec![],
                    b'1',
                    b"hints.yaml".to_vec(),
                )],
            ),
            vec!["original-chart/hard", "hard link"],
        ),
        (
            "chardev",
            base_with(
                &s.base,
                vec![(b"original-chart/null".to_vec(), vec![], b'3', vec![])],
            ),
            vec!["original-chart/null", "character device"],
        ),
        (
            "blockdev",
            base_with(
                &s.base,
                vec![(b"original-chart/sda".to_vec(), vec![], b'4', vec![])],
            ),
            vec!["original-chart/sda", "block device"],
        ),
        (
            "fifo",
            base_with(
                &s.base,
                vec![(b"original-chart/pipe".to_vec(), vec![], b'6', vec![])],
            ),
            vec!["original-chart/pipe", "fifo"],
        ),
        (
            "duplicate",
            base_with(
                &s.base,
                vec![raw_file("hints.yaml", b"- \"evil/{{ .x }}\"\n")],
            ),
            vec!["hints.yaml", "duplicate"],
        ),
        (
            "nested-dotdot",
            base_with_inner(&s.base, vec![raw_file("../../outside", b"x")]),
            vec!["images.tar", "../../outside"],
        ),
        (
            "nested-symlink",
            base_with_inner(
                &s.base,
                vec![(
                    b"blobs/sha256/ln".to_vec(),
                    vec![],
                    b'2',
                    b"../../../etc/shadow".to_vec(),
                )],
            ),
            vec!["images.tar", "blobs/sha256/ln", "symbolic link"],
        ),
        (
            "nested-duplicate",
            {
                let idx = {
                    let outer = read_tar(&std::fs::read(&s.base).unwrap());
                    entry(&read_tar(entry(&outer, "images.tar")), "index.json").to_vec()
                };
                base_with_inner(&s.base, vec![raw_file("index.json", &idx)])
            },
            vec!["images.tar", "index.json", "duplicate"],
        ),
    ];
    for (label, bytes, expect) in cases {
        let p = write(label, bytes);
        s.refused(label, &p, &expect);
    }

    // Absurd size: the header of images.tar claims 8 GiB in a small file.
    let mut absurd = Vec::new();
    for (n, data) in read_tar(&std::fs::read(&s.base).unwrap()) {
        if n == "images.tar" {
            absurd.extend(raw_header(b"images.tar", 8 << 30, b'0', b""));
            absurd.extend(&data[..4096]);
            break;
        }
        absurd.extend(raw_header(n.as_bytes(), data.len() as u64, b'0', b""));
        absurd.extend(&data);
        absurd.resize(absurd.len().div_ceil(512) * 512, 0);
    }
    let p = write("absurd-size", absurd);
    s.refused("absurd-size", &p, &["images.tar", "8589934592"]);
    // An absurd size inside images.tar: past the end of its entry.
    let p = write(
        "nested-absurd",
        base_with_inner(&s.base, vec![])
            .into_iter()
            .collect::<Vec<u8>>(),
    );
    let _ = p;
    let inner_absurd = {
        let mut outer: Vec<RawEntry> = Vec::new();
        for (n, data) in read_tar(&std::fs::read(&s.base).unwrap()) {
            let data = if n == "images.tar" {
                let mut t = raw_header(b"blobs/sha256/huge", 1 << 40, b'0', b"");
                t.extend([0u8; 2048]);
                t
            } else {
                data
            };
            if n.ends_with('/') {
                outer.push((n.into_bytes(), vec![], b'5', vec![]));
            } else {
                outer.push((n.into_bytes(), data, b'0', vec![]));
            }
        }
        raw_tar(&outer)
    };
    let p = write("nested-absurd", inner_absurd);
    s.refused("nested-absurd", &p, &["images.tar", "blobs/sha256/huge"]);

    // Nothing anywhere a naive extraction would have put it.
    assert!(!abs_target.exists());
    for base in [
        d.clone(),
        d.join("case-dotdot/site"),
        d.join("case-dotdot/bundles"),
    ] {
        for rel in [
            "evil",
            "../evil",
            "../../evil",
            "../../../evil",
            "outside",
            "../../outside",
        ] {
            assert!(
                !base.join(rel).exists(),
                "{} exists",
                base.join(rel).display()
            );
        }
    }
}

#[test]
fn a_tar_bomb_is_refused_by_verify_and_sync() {
    // The reader's limit is 1,000,000 entries; reaching it takes a 512 MB
    // tar of bare headers, so the same check runs here under a lower limit
    // (BUNDLER_MAX_TAR_ENTRIES can only lower it).
    let s = site();
    let d = s.d();
    let limit = "2000";
    let env = [("BUNDLER_MAX_TAR_ENTRIES", limit)];
    // The base bundle is well under the limit...
    let v = run(d, &["verify", s.base.to_str().unwrap()], &env);
    assert!(v.status.success(), "{}", stderr(&v));
    // ... a bundle with 2,001 empty chart files is not, nor an images.tar
    // with 2,001 entries.
    let many: Vec<RawEntry> = (0..2001)
        .map(|i| raw_file(&format!("original-chart/bomb/f{i}"), b""))
        .collect();
    let outer_bomb = d.join("bomb.bundle.tar");
    std::fs::write(&outer_bomb, base_with(&s.base, many)).unwrap();
    let inner_many: Vec<RawEntry> = (0..2001)
        .map(|i| raw_file(&format!("junk/f{i}"), b""))
        .collect();
    let inner_bomb = d.join("inner-bomb.bundle.tar");
    std::fs::write(&inner_bomb, base_with_inner(&s.base, inner_many)).unwrap();
    for (label, p, expect) in [
        ("bomb", &outer_bomb, "more than 2000 tar entries"),
        ("inner-bomb", &inner_bomb, "more than 2000 tar entries"),
    ] {
        let v = run(d, &["verify", p.to_str().unwrap()], &env);
        let err = stderr(&v);
        assert!(!v.status.success(), "{label}");
        assert!(
            err.contains(expect) && err.contains(label),
            "{label}: {err}"
        );
        let site = d.join(format!("site-{label}"));
        std::fs::create_dir_all(&site).unwrap();
        let cfg = sync_config(&site, p, &s.reg.host(), None);
        let o = run(
            &site,
            &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
            &env,
        );
        let err = stderr(&o);
        assert!(!o.status.success(), "{label}");
        assert!(
            err.contains(expect) && err.contains(label),
            "{label}: {err}"
        );
        assert_registry_empty(&s.http, label);
    }
}

#[test]
fn a_bundle_whose_chart_is_hostile_is_refused_before_anything_is_pushed() {
    let s = site();
    // A chart name that would put the LOCAL repo's archive outside it.
    let evil_name = s.damaged("evil-chart-name", true, |outer, _| {
        replace_entry(
            outer,
            "original-chart/Chart.yaml",
            b"apiVersion: v2\nname: ../../evil\nversion: 1.0.0\n".to_vec(),
        );
    });
    s.refused("evil-chart-name", &evil_name, &["invalid chart name"]);
    // hints.yaml that does not parse.
    let bad_hints = s.damaged("bad-hints", true, |outer, _| {
        replace_entry(
            outer,
            "hints.yaml",
            b"- \"{{ .image.registry \n- [unclosed\n".to_vec(),
        );
    });
    s.refused("bad-hints", &bad_hints, &["hints.yaml"]);
}

// ---- bad configs and bundle manifests through the binary ----

/// `bundler ARGS` must exit 2 with every `expect` in its message.
fn exits_2(dir: &Path, args: &[&str], expect: &[String]) {
    let o = run(dir, args, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    for e in expect {
        assert!(
            err.contains(e.as_str()),
            "{args:?}: expected {e:?} in {err}"
        );
    }
}

#[test]
fn bad_sync_configs_exit_2_naming_file_line_column_and_key_and_push_nothing() {
    let s = site();
    let d = s.d().join("cfg");
    std::fs::create_dir_all(&d).unwrap();
    let bundles = s.base.parent().unwrap().display().to_string();
    let host = s.reg.host();
    // Lines: 1 source, 2 intermediateBundlesPath, 3 target,
    // 4 containerPrefixRegistry, 5 repo, 6 kind, 7 path.
    let good = format!(
        "source:\n  intermediateBundlesPath: {bundles}\ntarget:\n  containerPrefixRegistry: {host}\n  repo:\n    kind: LOCAL\n    path: ./local-repo\n"
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown-key",
            format!("{good}  bogus: 1\n"),
            "8:3: target.bogus: unknown field `bogus`",
        ),
        (
            "unknown-nested-key",
            good.replace(
                "    path: ./local-repo\n",
                "    path: ./local-repo\n    auht: {username: a}\n",
            ),
            "8:5: target.repo.auht: unknown field `auht`",
        ),
        (
            "wrong-type",
            format!("{good}  appendOriginRegistry: maybe\n"),
            "8:25: target.appendOriginRegistry: ",
        ),
        (
            "wrong-type-list",
            good.replace("    path: ./local-repo\n", "    path: [a, b]\n"),
            "7:11: target.repo.path: ",
        ),
        (
            "both-sources",
            good.replace(
                "target:\n",
                "  repo:\n    kind: HELM\n    url: http://h\ntarget:\n",
            ),
            "3:3: source.repo: ",
        ),
        (
            "charts-and-skipcharts",
            format!("{good}charts: [shop]\nskipCharts: [other]\n"),
            "9:1: skipCharts: ",
        ),
        (
            "prefix-and-replace",
            format!("{good}  containerRegistry: r.local\n"),
            "8:3: target.containerRegistry: ",
        ),
        (
            "yaml-syntax",
            good.replace("  repo:\n", "  repo: {kind: LOCAL\n"),
            "load-image.yaml:",
        ),
        (
            "tab",
            good.replace("  intermediateBundlesPath", "\tintermediateBundlesPath"),
            "load-image.yaml:2:",
        ),
    ];
    for (label, text, expect) in cases {
        let case = d.join(label);
        std::fs::create_dir_all(&case).unwrap();
        let cfg = case.join("load-image.yaml");
        std::fs::write(&cfg, text).unwrap();
        let expect = if expect.starts_with("load-image.yaml") {
            format!("{}{}", case.display(), &format!("/{expect}"))
        } else {
            format!("{}:{expect}", cfg.display())
        };
        exits_2(
            &case,
            &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
            &[expect],
        );
        assert_registry_empty(&s.http, label);
        assert_eq!(tree(&case), vec!["load-image.yaml".to_string()], "{label}");
    }
    // A missing config file.
    exits_2(
        &d,
        &["sync", "--config", "nope.yaml", "--insecure"],
        &["nope.yaml".into()],
    );
    // The default config name, absent.
    exits_2(&d, &["sync"], &["load-image.yaml".into()]);
    assert_registry_empty(&s.http, "missing config");
}

#[test]
fn bad_bundle_manifests_exit_2_naming_file_line_column_and_key_and_write_nothing() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let p = make_product(d, "m", 1, 1, 1024, 3);
    // Lines: 1 apiVersion, 2 kind, 3 metadata, 4 spec, 5 images, 6 - archive.
    let good = std::fs::read_to_string(&p.manifest).unwrap();
    let out = d.join("out");
    pack_ok(d, &p.manifest, &out);
    std::fs::remove_dir_all(&out).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown-key",
            format!("{good}  imagez: []\n"),
            "7:3: spec.imagez: unknown field `imagez`",
        ),
        (
            "wrong-type",
            format!("{good}  platforms: {{os: linux}}\n"),
            "7:14: spec.platforms: ",
        ),
        (
            "one-of",
            format!("{good}  charts:\n    - name: c\n      version: 1.0.0\n      path: ./c\n      repo: https://x/y\n"),
            "10:7: spec.charts[0].path: repo and path are both set",
        ),
        (
            "neither",
            format!("{good}  charts:\n    - name: c\n      version: 1.0.0\n"),
            "8:7: spec.charts[0].name: ",
        ),
        (
            "bad-reference",
            format!("{good}    - \"Not A Reference\"\n"),
            "7:7: spec.images[1]: ",
        ),
        (
            "yaml-syntax",
            good.replace("metadata: {", "metadata: {{"),
            ":3:",
        ),
        (
            "tab",
            good.replace("  images", "\timages"),
            ":5:",
        ),
    ];
    for (label, text, expect) in cases {
        let m = d.join(format!("{label}.yaml"));
        std::fs::write(&m, text).unwrap();
        let expect = if expect.starts_with(':') {
            format!("{}{expect}", m.display())
        } else {
            format!("{}:{expect}", m.display())
        };
        exits_2(
            d,
            &[
                "pack",
                m.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
            &[expect],
        );
        assert!(!out.exists(), "{label}: pack wrote {:?}", tree(&out));
    }
    exits_2(
        d,
        &["pack", "missing.yaml", "--output", out.to_str().unwrap()],
        &["missing.yaml".into()],
    );
    assert!(!out.exists());
}
