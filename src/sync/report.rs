//! What a sync says: the summary (text or `--json`), and failures grouped
//! by cause. A registry that is down fails every image the same way; that
//! is one line naming the images it hit, not one line per image. Printed
//! URLs and messages go through [`crate::error::redact`] here, the one
//! place where sync output is formatted.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::progress::human_bytes;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncSummary {
    pub dry_run: bool,
    pub bundles: Vec<String>,
    /// Distinct images (an image carried by two bundles is listed once).
    pub images: Vec<ImageLine>,
    pub images_pushed: usize,
    pub images_unchanged: usize,
    pub images_failed: usize,
    pub blobs_uploaded: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    pub bytes_uploaded: u64,
    /// Bytes this run read with read(2)/pread(2), files and sockets alike
    /// (`rchar` of /proc/self/io; Linux): one read per byte that moves
    /// means this stays close to `bytesUploaded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    pub retries: u64,
    pub charts: Vec<ChartLine>,
    /// Per target registry, with `target.mirrors` (see `sync::fanout`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<super::fanout::TargetLine>,
    /// Where the time went, phase by phase (see `sync::timeline`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<super::timeline::Phase>,
    /// Rendered images not in the target (accepted with --allow-unrelocated).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unrelocated: Vec<crate::chart::render_check::Miss>,
    /// Signatures, attestations, SBOMs pushed after their images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrers: Option<crate::referrers::push::PushReport>,
    /// Manifests trees relocated and published (crate::manifests).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<crate::manifests::publish::ManifestsLine>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageLine {
    pub from: String,
    pub to: String,
    pub digest: String,
}

impl ImageLine {
    pub fn of(job: &crate::transfer::ImageJob) -> Self {
        ImageLine {
            from: job.image.reference.to_string(),
            to: job.target.to_string(),
            digest: job.image.root.digest.to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartLine {
    pub name: String,
    pub version: String,
    pub target: String,
    pub outcome: String,
}

/// `rchar` of /proc/self/io, where there is one.
pub fn bytes_read() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `n thing` / `n things`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl SyncSummary {
    /// The one line a successful sync ends with.
    pub fn text(&self) -> String {
        format!(
            "synced {} ({} pushed, {} unchanged; blobs: {} uploaded, {} mounted, {} already there; {} moved) and {} in {:.1}s",
            count(self.images.len(), "image", "images"),
            self.images_pushed,
            self.images_unchanged,
            self.blobs_uploaded,
            self.blobs_mounted,
            self.blobs_skipped,
            human_bytes(self.bytes_uploaded),
            count(self.charts.len(), "chart", "charts"),
            self.seconds
        )
    }
}

/// Where in the run a failure happened (decides what was left behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// HEAD requests only: nothing was pushed.
    Plan,
    /// Blob uploads: no manifest or tag was written.
    Blobs,
    /// Manifests and tags: some images may be complete.
    Manifests,
}

/// Per-image failures of one stage, grouped by cause when reported.
#[derive(Debug)]
pub struct Failures {
    pub stage: Stage,
    /// (image, message, kind) in the order they happened.
    entries: Vec<(String, String, &'static str)>,
    /// Images completed in this stage before or beside the failures.
    pub pushed: usize,
    /// Blobs committed before the failure (invisible without a manifest).
    pub blobs_in: usize,
}

impl Failures {
    pub fn new(stage: Stage) -> Self {
        Failures {
            stage,
            entries: Vec::new(),
            pushed: 0,
            blobs_in: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Distinct images that failed.
    pub fn images(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        self.entries.iter().filter(|e| seen.insert(&e.0)).count()
    }

    /// Record that `image` failed with `err` (an image hit twice by the
    /// same cause is listed once).
    pub fn add(&mut self, image: String, err: &anyhow::Error) {
        let msg = crate::error::redact(&format!("{err:#}"));
        let kind = crate::outcome::kind(err);
        if !self
            .entries
            .iter()
            .any(|(i, m, _)| *i == image && *m == msg)
        {
            self.entries.push((image, msg, kind));
        }
    }

    /// The error to return: a headline saying what was left behind, then
    /// one line per distinct cause with the images it hit.
    pub fn into_error(self) -> anyhow::Error {
        let n = self.images();
        let headline = match self.stage {
            Stage::Plan => format!(
                "{} could not be checked in the target; nothing was pushed",
                count(n, "image", "images")
            ),
            Stage::Blobs => {
                let kept = if self.blobs_in == 0 {
                    String::new()
                } else {
                    format!(
                        " ({} already uploaded stay invisible without a manifest; a re-run skips them, garbage collection removes them)",
                        count(self.blobs_in, "blob", "blobs")
                    )
                };
                format!(
                    "{} failed; no image was pushed: no manifest or tag was written{kept}",
                    count(n, "image", "images")
                )
            }
            Stage::Manifests if self.pushed > 0 => format!(
                "{} failed (the other {} pushed; run sync again after fixing the cause)",
                count(n, "image", "images"),
                count(self.pushed, "image was", "images were")
            ),
            Stage::Manifests => format!(
                "{} failed; none was tagged (run sync again after fixing the cause)",
                count(n, "image", "images")
            ),
        };
        let kind = self.entries.first().map(|e| e.2).unwrap_or("failure");
        let mut message = headline;
        for (cause, images) in self.grouped() {
            message.push_str(&format!("\n  - {cause}"));
            if images.len() > 1 {
                // The cause is shown once with `<image>` standing for each.
                message.push_str(&format!(
                    "\n    ({}: {}{})",
                    count(images.len(), "image", "images"),
                    list(&images),
                    if cause.contains("<image>") {
                        "; `<image>` above stands for each"
                    } else {
                        ""
                    }
                ));
            }
        }
        anyhow::Error::new(Failed { message, kind })
    }

    /// Causes in first-seen order, with the images each hit. Messages are
    /// compared with what names one image or request taken out (its
    /// reference, request paths, digests); a cause is shown with digests
    /// kept when they are the same for every image it hit (a damaged blob
    /// is named).
    fn grouped(&self) -> Vec<(String, Vec<String>)> {
        struct Group {
            shown: Vec<String>,
            images: Vec<String>,
            /// The first message as it was (naming its image).
            original: String,
        }
        let mut order: Vec<String> = Vec::new();
        let mut by: BTreeMap<String, Group> = BTreeMap::new();
        for (image, msg, _) in &self.entries {
            let shown = without_image(image, msg);
            let key = without_digests(&shown);
            let g = by.entry(key.clone()).or_insert_with(|| {
                order.push(key.clone());
                Group {
                    shown: Vec::new(),
                    images: Vec::new(),
                    original: msg.clone(),
                }
            });
            if !g.shown.contains(&shown) {
                g.shown.push(shown);
            }
            if !g.images.contains(image) {
                g.images.push(image.clone());
            }
        }
        order
            .into_iter()
            .map(|k| {
                let mut g = by.remove(&k).unwrap();
                g.images.sort();
                let text = if g.images.len() == 1 {
                    // One image: its own message, naming it (no `<image>`).
                    g.original.clone()
                } else if g.shown.len() == 1 {
                    g.shown.into_iter().next().unwrap()
                } else {
                    k
                };
                let text = if text.contains(g.images[0].as_str()) || g.images.len() > 1 {
                    text
                } else {
                    format!("{}: {text}", g.images[0])
                };
                (text, g.images)
            })
            .collect()
    }
}

fn list(images: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = images
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if images.len() > SHOWN {
        s.push_str(&format!(", and {} more", images.len() - SHOWN));
    }
    s
}

/// A message with what names one image taken out: the image reference
/// and request paths (`/v2/<repo>/...`).
fn without_image(image: &str, msg: &str) -> String {
    use std::sync::OnceLock;
    static PATHS: OnceLock<regex::Regex> = OnceLock::new();
    let paths = PATHS.get_or_init(|| regex::Regex::new(r"/v2/[^\s:)]*").unwrap());
    let mut s = msg.to_string();
    if let Some(repo) = image.split('@').next() {
        s = s.replace(repo, "<image>");
        if let Some((no_tag, _)) = repo.rsplit_once(':').filter(|(a, _)| a.contains('/')) {
            s = s.replace(no_tag, "<image>");
        }
    }
    paths.replace_all(&s, "/v2/…").into_owned()
}

fn without_digests(msg: &str) -> String {
    use std::sync::OnceLock;
    static DIGESTS: OnceLock<regex::Regex> = OnceLock::new();
    let digests = DIGESTS.get_or_init(|| regex::Regex::new(r"sha256:[0-9a-f]{64}").unwrap());
    digests.replace_all(msg, "sha256:…").into_owned()
}

/// A sync that failed for one or more images; `kind` is the kind of the
/// first cause (for `--json`).
#[derive(Debug)]
pub struct Failed {
    pub message: String,
    pub kind: &'static str,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Failed {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cause_is_one_line_naming_every_image_it_hit() {
        let mut f = Failures::new(Stage::Plan);
        for img in ["r:5000/a/x:1", "r:5000/b/y:2", "r:5000/c/z:3"] {
            let repo = img.rsplit_once(':').unwrap().0;
            let e = anyhow::anyhow!(
                "HEAD http://r:5000/v2/{}/manifests/1 failed after 5 attempts: Connection refused",
                repo.trim_start_matches("r:5000/")
            )
            .context(format!("checking manifest {img}"));
            f.add(img.to_string(), &e);
        }
        let msg = format!("{:#}", f.into_error());
        assert_eq!(msg.matches("Connection refused").count(), 1, "{msg}");
        assert!(
            msg.contains("3 images: r:5000/a/x:1, r:5000/b/y:2, r:5000/c/z:3"),
            "{msg}"
        );
        assert!(
            msg.contains("nothing was pushed") && !msg.contains("the others"),
            "{msg}"
        );
    }

    #[test]
    fn distinct_causes_are_distinct_lines_and_others_pushed_only_when_true() {
        let mut f = Failures::new(Stage::Manifests);
        f.add("r/a:1".into(), &anyhow::anyhow!("disk full"));
        f.add("r/b:1".into(), &anyhow::anyhow!("denied"));
        f.pushed = 1;
        let msg = format!("{:#}", f.into_error());
        assert!(
            msg.contains("- r/a:1: disk full") && msg.contains("- r/b:1: denied"),
            "{msg}"
        );
        assert!(
            msg.contains("2 images failed (the other 1 image was pushed"),
            "{msg}"
        );
        let mut g = Failures::new(Stage::Manifests);
        g.add("r/a:1".into(), &anyhow::anyhow!("denied"));
        let msg = format!("{:#}", g.into_error());
        assert!(msg.starts_with("1 image failed; none was tagged"), "{msg}");
    }

    #[test]
    fn a_damaged_blob_is_named_by_digest() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let mut f = Failures::new(Stage::Blobs);
        f.add(
            "r/a:1".into(),
            &anyhow::anyhow!("bundle x.bundle.tar: blob {d} is corrupted"),
        );
        f.blobs_in = 2;
        let msg = format!("{:#}", f.into_error());
        assert!(msg.contains(&d) && msg.contains("x.bundle.tar"), "{msg}");
        assert!(msg.contains("no manifest or tag was written"), "{msg}");
        assert!(msg.contains("2 blobs already uploaded"), "{msg}");
    }

    #[test]
    fn a_single_failed_image_is_named_never_a_placeholder() {
        // Blob stage, one image (the old code printed `to <image>`).
        let img = "127.0.0.1:5000/docker.io/library/demo-sidecar:1.0";
        let mut f = Failures::new(Stage::Blobs);
        f.add(
            img.into(),
            &anyhow::anyhow!("starting a blob upload: http://127.0.0.1:5000/v2/docker.io/library/demo-sidecar/blobs/uploads/ answered 405")
                .context(format!("pushing blob sha256:{} to {img}", "89".repeat(32))),
        );
        let msg = format!("{:#}", f.into_error());
        assert!(!msg.contains("<image>"), "{msg}");
        assert!(msg.contains(&format!("to {img}")), "{msg}");
        // Plan stage, one image whose message does not name it.
        let mut f = Failures::new(Stage::Plan);
        f.add(
            img.into(),
            &anyhow::anyhow!("cannot reach registry 127.0.0.1:1"),
        );
        let msg = format!("{:#}", f.into_error());
        assert!(msg.contains(img) && !msg.contains("<image>"), "{msg}");
        // Two images, two causes: each cause names its own image.
        let mut f = Failures::new(Stage::Manifests);
        f.add(
            "r/a:1".into(),
            &anyhow::anyhow!("pushing manifest r/a:1: denied"),
        );
        f.add(
            "r/b:1".into(),
            &anyhow::anyhow!("pushing manifest r/b:1: disk full"),
        );
        let msg = format!("{:#}", f.into_error());
        assert!(!msg.contains("<image>"), "{msg}");
        assert!(
            msg.contains("manifest r/a:1: denied") && msg.contains("manifest r/b:1: disk full"),
            "{msg}"
        );
        // Two images, one cause: the placeholder is explained by the list.
        let mut f = Failures::new(Stage::Manifests);
        f.add(
            "r/a:1".into(),
            &anyhow::anyhow!("pushing manifest r/a:1: denied"),
        );
        f.add(
            "r/b:1".into(),
            &anyhow::anyhow!("pushing manifest r/b:1: denied"),
        );
        let msg = format!("{:#}", f.into_error());
        assert!(
            msg.contains("(2 images: r/a:1, r/b:1; `<image>` above stands for each)"),
            "{msg}"
        );
    }

    #[test]
    fn plurals() {
        assert_eq!(count(1, "chart", "charts"), "1 chart");
        assert_eq!(count(0, "chart", "charts"), "0 charts");
    }
}
