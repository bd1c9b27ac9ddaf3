//! Image references (`registry/repository[:tag][@digest]`) with Docker's
//! normalisation (`busybox` is `docker.io/library/busybox:latest`), and the
//! image rewrite rules of SPEC §4 that decide where an image goes in the
//! private registry.
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};

use super::Digest;

pub const DOCKER_HUB: &str = "docker.io";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host, with port if any (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parse with Docker's normalisation. A reference with neither tag nor
    /// digest gets no tag here; use [`Reference::tag_or_latest`] where a pull
    /// needs one.
    pub fn parse(input: &str) -> anyhow::Result<Self> {
        let s = input.trim();
        if s.is_empty() {
            bail!("empty image reference");
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("invalid image reference {input:?}: contains whitespace or control characters");
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(
                    d.parse::<Digest>()
                        .with_context(|| format!("in image reference {input:?}"))?,
                ),
            ),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if last_slash.is_none_or(|j| i > j) => {
                (&name_tag[..i], Some(name_tag[i + 1..].to_string()))
            }
            _ => (name_tag, None),
        };
        if let Some(t) = &tag {
            if t.is_empty()
                || t.len() > 128
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
                || t.starts_with(['.', '-'])
            {
                bail!("invalid tag {t:?} in image reference {input:?}");
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository)
            .with_context(|| format!("in image reference {input:?}"))?;
        if registry.is_empty() || registry.contains(['/', '@']) {
            bail!("invalid registry {registry:?} in image reference {input:?}");
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag, or `latest` when there is neither tag nor digest.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match &self.digest {
            Some(d) => d.to_string(),
            None => self.tag_or_latest().unwrap_or("latest").to_string(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The last path segment of the repository (`busybox`).
    pub fn last_segment(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }

    /// The registry host as it may appear inside a repository path: a port's
    /// `:` is not valid there, so it becomes `_` (`127.0.0.1:5000` →
    /// `127.0.0.1_5000`).
    pub fn registry_as_path(&self) -> String {
        self.registry.replace(':', "_")
    }

    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

fn validate_repository(repo: &str) -> anyhow::Result<()> {
    if repo.is_empty() {
        bail!("empty repository");
    }
    for part in repo.split('/') {
        let ok = !part.is_empty()
            && part.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
            && part
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && part
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok {
            bail!("invalid repository path component {part:?} in {repo:?} (lower-case letters, digits, '.', '_', '-' only)");
        }
    }
    Ok(())
}

impl FromStr for Reference {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The image rewrite settings of `load-image.yaml` (`target.*`), SPEC §4.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewriteRules {
    pub prefix_registry: Option<String>,
    pub prefix_repository: Option<String>,
    pub append_origin_registry: bool,
    pub registry: Option<String>,
    pub repository: Option<String>,
}

/// Where an image goes: the registry and repository parts as the chart
/// values will hold them (they are written back separately when a hint has
/// separate placeholders), and the parsed push target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// New registry value (may contain a path, e.g. `10.0.0.1/docker.io`).
    pub registry: String,
    /// New repository value.
    pub repository: String,
    /// The full reference to push to (tag and digest kept from the original).
    pub target: Reference,
}

impl RewriteRules {
    pub fn is_empty(&self) -> bool {
        self == &RewriteRules::default()
    }

    /// Apply the rule table of SPEC §4 to `original`.
    pub fn rewrite(&self, original: &Reference) -> anyhow::Result<Rewritten> {
        let o_r = original.registry_as_path();
        let o_p = original.repository.clone();
        let trim = |s: &str| s.trim_matches('/').to_string();
        let (registry, repository) =
            if self.prefix_registry.is_some() || self.prefix_repository.is_some() {
                let p = self.prefix_registry.as_deref().map(trim);
                let q = self.prefix_repository.as_deref().map(trim);
                match (p, q) {
                    (Some(p), None) if self.append_origin_registry => (format!("{p}/{o_r}"), o_p),
                    (Some(p), None) => (p, format!("{o_r}/{o_p}")),
                    (Some(p), Some(q)) if self.append_origin_registry => {
                        (format!("{p}/{o_r}"), format!("{q}/{o_p}"))
                    }
                    (Some(p), Some(q)) => (p, format!("{o_r}/{q}/{o_p}")),
                    (None, Some(q)) => (original.registry.clone(), format!("{q}/{o_p}")),
                    (None, None) => unreachable!(),
                }
            } else {
                let registry = self
                    .registry
                    .as_deref()
                    .map(trim)
                    .unwrap_or_else(|| original.registry.clone());
                let repository = match self.repository.as_deref().map(trim) {
                    Some(s) => format!("{s}/{}", original.last_segment()),
                    None => o_p,
                };
                (registry, repository)
            };
        let mut full = format!("{registry}/{repository}");
        if let Some(t) = &original.tag {
            full.push(':');
            full.push_str(t);
        }
        if let Some(d) = &original.digest {
            full.push('@');
            full.push_str(&d.to_string());
        }
        let mut target = Reference::parse(&full)
            .with_context(|| format!("rewriting {original} gives an invalid reference {full:?}"))?;
        // A bare host such as "10.16.10.111" followed by a one-segment path
        // must not be mistaken for a Docker Hub name: the rule's registry is
        // always a registry.
        if !full.split('/').next().unwrap_or("").contains(['.', ':'])
            && registry.split('/').next() != Some("localhost")
        {
            let (host, rest) = registry
                .split_once('/')
                .map(|(h, r)| (h.to_string(), format!("{r}/{repository}")))
                .unwrap_or((registry.clone(), repository.clone()));
            target.registry = host;
            target.repository = rest;
        }
        Ok(Rewritten {
            registry,
            repository,
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn docker_normalisation() {
        let a = r("busybox");
        assert_eq!(
            (a.registry.as_str(), a.repository.as_str(), a.tag.as_deref()),
            ("docker.io", "library/busybox", None)
        );
        assert_eq!(a.tag_or_latest(), Some("latest"));
        let b = r("bitnami/kafka:2.8.1");
        assert_eq!(b.to_string(), "docker.io/bitnami/kafka:2.8.1");
        let c = r("127.0.0.1:5000/a/b:v1");
        assert_eq!(
            (c.registry.as_str(), c.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        let d = r(
            "localhost/x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        );
        assert_eq!(d.tag, None);
        assert!(d.digest.is_some());
        assert_eq!(r("index.docker.io/library/redis:7").registry, "docker.io");
        assert!(Reference::parse("UPPER/case").is_err());
        assert!(Reference::parse("a b").is_err());
        assert!(Reference::parse("x:").is_err());
    }

    #[test]
    fn rewrite_table() {
        let img = r("docker.io/bitnami/kafka:2.8.1");
        let rules = |f: fn(&mut RewriteRules)| {
            let mut x = RewriteRules::default();
            f(&mut x);
            x.rewrite(&img).unwrap()
        };
        let a = rules(|x| x.prefix_registry = Some("10.16.10.111".into()));
        assert_eq!(
            (a.registry.as_str(), a.repository.as_str()),
            ("10.16.10.111", "docker.io/bitnami/kafka")
        );
        assert_eq!(
            a.target.to_string(),
            "10.16.10.111/docker.io/bitnami/kafka:2.8.1"
        );
        let b = rules(|x| {
            x.prefix_registry = Some("10.16.10.111".into());
            x.append_origin_registry = true;
        });
        assert_eq!(
            (b.registry.as_str(), b.repository.as_str()),
            ("10.16.10.111/docker.io", "bitnami/kafka")
        );
        assert_eq!(b.target.registry, "10.16.10.111");
        assert_eq!(b.target.repository, "docker.io/bitnami/kafka");
        let c = rules(|x| x.prefix_repository = Some("mirror".into()));
        assert_eq!(c.target.to_string(), "docker.io/mirror/bitnami/kafka:2.8.1");
        let d = rules(|x| {
            x.prefix_registry = Some("h:5000".into());
            x.prefix_repository = Some("q".into());
        });
        assert_eq!(
            d.target.to_string(),
            "h:5000/docker.io/q/bitnami/kafka:2.8.1"
        );
        let e = rules(|x| x.registry = Some("test.registry.io".into()));
        assert_eq!(e.target.to_string(), "test.registry.io/bitnami/kafka:2.8.1");
        let f = rules(|x| x.repository = Some("user/demo".into()));
        assert_eq!(f.target.to_string(), "docker.io/user/demo/kafka:2.8.1");
        let g = rules(|x| {
            x.registry = Some("10.16.23.145".into());
            x.repository = Some("release.daocloud.io/skoala".into());
        });
        assert_eq!(g.target.registry, "10.16.23.145");
        assert_eq!(g.target.repository, "release.daocloud.io/skoala/kafka");
    }

    #[test]
    fn port_in_origin_registry_becomes_underscore() {
        let img = r("127.0.0.1:5000/app/web:1");
        let rules = RewriteRules {
            prefix_registry: Some("reg.local:443".into()),
            ..Default::default()
        };
        assert_eq!(
            rules.rewrite(&img).unwrap().target.to_string(),
            "reg.local:443/127.0.0.1_5000/app/web:1"
        );
    }
}
