//! How images are named on the server.
//!
//! By default an image keeps its origin in its path, as sync's
//! `containerPrefixRegistry` rule names it: `docker.io/library/busybox:1.36`
//! is served as `HOST:PORT/docker.io/library/busybox:1.36` (a registry port
//! becomes `_`). With `--config`, the load-image.yaml's rewrite rules name
//! it, so a chart relocated for that target pulls from `serve` unchanged.
use crate::oci::reference::RewriteRules;
use crate::oci::Reference;

pub enum Naming {
    Origin,
    Rules(RewriteRules),
}

impl Naming {
    /// (registry a mirror request names in `ns`, served repository name).
    pub fn served(&self, r: &Reference) -> anyhow::Result<(String, String)> {
        match self {
            Naming::Origin => Ok((
                r.registry.clone(),
                format!("{}/{}", r.registry_as_path(), r.repository),
            )),
            Naming::Rules(rules) => {
                let rw = rules.rewrite(r)?;
                Ok((rw.target.registry, rw.target.repository))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_names_keep_the_registry_with_its_port_as_underscore() {
        let n = Naming::Origin;
        let r = Reference::parse("busybox:1.36").unwrap();
        assert_eq!(
            n.served(&r).unwrap(),
            ("docker.io".into(), "docker.io/library/busybox".into())
        );
        let r = Reference::parse("reg.example:5000/team/app:1").unwrap();
        assert_eq!(
            n.served(&r).unwrap().1,
            "reg.example_5000/team/app".to_string()
        );
    }

    #[test]
    fn rules_name_as_sync_pushes() {
        let n = Naming::Rules(RewriteRules {
            registry: Some("10.0.0.5:5000".into()),
            repository: Some("mirror".into()),
            ..Default::default()
        });
        let r = Reference::parse("docker.io/bitnami/kafka:2.8.1").unwrap();
        assert_eq!(
            n.served(&r).unwrap(),
            ("10.0.0.5:5000".into(), "mirror/kafka".into())
        );
    }
}
