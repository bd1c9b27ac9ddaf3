//! Content negotiation for manifests, as the CNCF distribution registry
//! does it: an index (OCI index or Docker manifest list) is served by tag
//! only to a client whose `Accept` names that media type; any other client
//! gets the manifest of the default platform (`--platform`, linux/amd64
//! unless told), with that manifest's own digest. By digest, a client gets
//! exactly the document it named.
use hyper::header::{HeaderMap, ACCEPT};

use super::index::{Catalog, Repo};
use crate::bundle::reader::ManifestDoc;
use crate::oci::media::{self, Parsed, Platform};

/// Media types listed in every `Accept` header (parameters such as `q`
/// dropped, lower case).
pub fn accepted(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// The document to answer with for `doc` fetched by tag (`by_tag`), or a
/// message saying why there is none.
pub fn choose<'a>(
    catalog: &'a Catalog,
    repo: &Repo,
    doc: &'a ManifestDoc,
    by_tag: bool,
    accept: &[String],
    platform: &Platform,
) -> Result<&'a ManifestDoc, String> {
    if !by_tag || !media::is_index(&doc.media_type) || accept.iter().any(|a| a == &doc.media_type) {
        return Ok(doc);
    }
    let manifests = match doc.parse() {
        Ok(Parsed::Index { manifests, .. }) => manifests,
        Ok(_) => return Ok(doc),
        Err(e) => return Err(format!("{e:#}")),
    };
    let desc = media::find_platform(&manifests, platform, &doc.digest.to_string())
        .map_err(|e| format!("the client does not accept an index and {e:#}"))?;
    match catalog.manifests.get(&desc.digest) {
        Some(child) if repo.manifests.contains(&desc.digest) => Ok(child),
        _ => Err(format!(
            "the client does not accept an index, and the {platform} manifest {} is not in the bundles",
            desc.digest
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_lists_every_type_of_every_header_without_parameters() {
        let mut h = HeaderMap::new();
        h.append(
            ACCEPT,
            "application/vnd.oci.image.manifest.v1+json; q=0.5, Application/JSON"
                .parse()
                .unwrap(),
        );
        h.append(ACCEPT, media::OCI_INDEX.parse().unwrap());
        assert_eq!(
            accepted(&h),
            [media::OCI_MANIFEST, "application/json", media::OCI_INDEX]
        );
    }
}
