//! Per-release values: `--set RELEASE:key=value` and `-f RELEASE:file`.
//!
//! One run upgrades several releases of a product (seed 002: skoala and
//! skoala-init, on two clusters); a plain `--set` would land in every one
//! of them (a value meant for skoala-init changes skoala too). So with
//! several releases each `--set`/`-f` must name its release; with one
//! release the plain form still means that release. The prefix is the
//! release name or the `NAME@CONTEXT` written on the command line.
use std::path::PathBuf;

use crate::error::input_error;

/// The `--set` and `-f` values of one release, in command-line order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseValues {
    pub set: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// Split the run's `--set`/`-f` by release. `releases` are the specs as
/// given (`skoala`, `skoala-init@worker`). Refuses a plain value when there
/// are several releases, a prefix naming no release of the run, and a
/// values file that does not exist.
pub fn split(
    set: &[String],
    files: &[PathBuf],
    releases: &[String],
) -> anyhow::Result<Vec<ReleaseValues>> {
    let mut out = vec![ReleaseValues::default(); releases.len()];
    let names: Vec<(&str, &str)> = releases
        .iter()
        .map(|r| (r.as_str(), r.split('@').next().unwrap_or(r)))
        .collect();
    // which releases a `PREFIX:rest` names (the spec itself, or its name)
    let owner = |prefix: &str| -> Vec<usize> {
        let by_spec: Vec<usize> = (0..names.len()).filter(|&i| names[i].0 == prefix).collect();
        if !by_spec.is_empty() {
            return by_spec;
        }
        (0..names.len()).filter(|&i| names[i].1 == prefix).collect()
    };
    let several = releases.len() > 1;
    for s in set {
        let key_part = s.split('=').next().unwrap_or(s);
        let scoped = key_part
            .split_once(':')
            .map(|(p, _)| (p, owner(p)))
            .filter(|(_, o)| !o.is_empty());
        match scoped {
            Some((prefix, owners)) => {
                let rest = &s[prefix.len() + 1..];
                for i in owners {
                    out[i].set.push(rest.to_string());
                }
            }
            None if several => {
                return Err(input_error(format!(
                    "--set {s}: several releases are upgraded ({}); say which one it is for: --set RELEASE:{s}",
                    releases.join(", ")
                )))
            }
            None => out[0].set.push(s.clone()),
        }
    }
    for f in files {
        let text = f.to_string_lossy();
        let scoped = text
            .split_once(':')
            .map(|(p, rest)| (owner(p), PathBuf::from(rest)))
            .filter(|(o, _)| !o.is_empty());
        let (owners, path) = match scoped {
            Some((o, p)) => (o, p),
            None if several => {
                return Err(input_error(format!(
                    "-f {text}: several releases are upgraded ({}); say which one it is for: -f RELEASE:{text}",
                    releases.join(", ")
                )))
            }
            None => (vec![0], f.clone()),
        };
        if !path.is_file() {
            return Err(input_error(format!(
                "{}: values file not found (-f)",
                path.display()
            )));
        }
        for i in owners {
            out[i].files.push(path.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_to_the_release_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("init.yaml");
        std::fs::write(&f, "a: 1\n").unwrap();
        let releases = vec![
            "skoala@global".to_string(),
            "skoala-init@worker".to_string(),
        ];
        let got = split(
            &[
                "skoala:ui.image.tag=v1".into(),
                "skoala-init@worker:replicas=2".into(),
            ],
            &[PathBuf::from(format!("skoala-init:{}", f.display()))],
            &releases,
        )
        .unwrap();
        assert_eq!(got[0].set, vec!["ui.image.tag=v1"]);
        assert!(got[0].files.is_empty());
        assert_eq!(got[1].set, vec!["replicas=2"]);
        assert_eq!(got[1].files, vec![f.clone()]);

        let e = split(&["replicas=2".into()], &[], &releases).unwrap_err();
        assert!(format!("{e}").contains("--set RELEASE:replicas=2"), "{e}");
        let e = split(&["nosuch:replicas=2".into()], &[], &releases).unwrap_err();
        assert!(format!("{e}").contains("say which one"), "{e}");
        let e = split(&[], std::slice::from_ref(&f), &releases).unwrap_err();
        assert!(format!("{e}").contains("-f RELEASE:"), "{e}");

        // one release: the plain form is that release's; a URL-ish value is not a prefix
        let one = split(
            &["image.registry=10.0.0.1:5000".into()],
            std::slice::from_ref(&f),
            &["skoala".to_string()],
        )
        .unwrap();
        assert_eq!(one[0].set, vec!["image.registry=10.0.0.1:5000"]);
        assert_eq!(one[0].files, vec![f]);
        let e = split(
            &[],
            &[PathBuf::from("skoala:/nonexistent.yaml")],
            &["skoala".into()],
        )
        .unwrap_err();
        assert!(
            format!("{e}").contains("/nonexistent.yaml: values file not found"),
            "{e}"
        );
    }
}
