//! Syncs that run at the same time into one registry (issue 22 item 2).
//!
//! Two syncs of overlapping products both upload or mount the same blobs
//! into the same repositories. distribution rewrites a blob's link file in
//! place on each of those, and a manifest PUT that reads the link mid-write
//! is refused with `DIGEST_INVALID; MANIFEST_BLOB_UNKNOWN` although the
//! blob is there. The registry client asks again a few times
//! ([`crate::oci::registry::RefsUnknown`]); when it still fails, the error
//! names the image and says that another sync may be the cause, instead of
//! a bare registry error code.
use crate::oci::registry::RefsUnknown;
use crate::oci::Reference;

/// The error of a failed manifest push of `image`: a [`RefsUnknown`]
/// refusal says what it most likely means and what to do.
pub fn explain_manifest_failure(err: anyhow::Error, image: &Reference) -> anyhow::Error {
    if !err.chain().any(|c| c.is::<RefsUnknown>()) {
        return err;
    }
    err.context(format!(
        "image {image}: the registry kept answering that a blob this manifest needs is \
         unknown, although this run pushed every blob first: another sync (or client) is \
         probably pushing the same blobs into {} right now; run sync again when it is done",
        image.repository
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_manifest_names_its_image_and_the_other_sync() {
        let image: Reference = "reg.example:5000/team/app:1.0".parse().unwrap();
        let raw = anyhow::Error::new(RefsUnknown(
            "400 Bad Request: DIGEST_INVALID; MANIFEST_BLOB_UNKNOWN".into(),
        ));
        let text = format!("{:#}", explain_manifest_failure(raw, &image));
        assert!(text.contains("reg.example:5000/team/app:1.0"), "{text}");
        assert!(text.contains("another sync"), "{text}");
        assert!(text.contains("MANIFEST_BLOB_UNKNOWN"), "{text}");
        // Other failures pass through untouched.
        let other = anyhow::anyhow!("connection refused");
        assert_eq!(
            format!("{:#}", explain_manifest_failure(other, &image)),
            "connection refused"
        );
    }
}
