//! Which cluster a helm call reaches, said in words for messages ("release
//! not found" must say where bundler looked: the context and kubeconfig).
use super::helm::Helm;

/// `kube context worker of kubeconfig /x/kc`, or the defaults it falls back to.
pub fn describe(helm: &Helm) -> String {
    let mut ctx = None;
    let mut kc = None;
    let mut it = helm.cluster.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--kube-context" => ctx = it.next().cloned(),
            "--kubeconfig" => kc = it.next().cloned(),
            _ => {}
        }
    }
    let kubeconfig = kc.unwrap_or_else(|| match std::env::var("KUBECONFIG") {
        Ok(v) if !v.is_empty() => format!("{v} ($KUBECONFIG)"),
        _ => "~/.kube/config (the default; $KUBECONFIG is not set)".to_string(),
    });
    match ctx {
        Some(c) => format!("kube context {c} of kubeconfig {kubeconfig}"),
        None => format!("the current context of kubeconfig {kubeconfig}"),
    }
}
