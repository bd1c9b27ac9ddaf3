//! What to check when a registry cannot be reached at all (issue 22): a
//! refused connection, an unknown host or a timeout on connect is almost
//! always the address or port in the config, plain HTTP without
//! `--insecure`, or a proxy variable routing the request elsewhere. The
//! advice names the proxy variables that are set (names only: their values
//! may carry credentials).

/// Environment variables reqwest (and curl, docker, skopeo) read for proxies.
const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Whether `text` (an error chain) says the connection was never made.
pub(super) fn is_unreachable(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "connection refused",
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "no route to host",
        "network is unreachable",
        "tcp connect error",
    ]
    .iter()
    .any(|w| t.contains(w))
}

/// `; check: ...` for a registry `host` that could not be reached;
/// `insecure_tried` when both https and http were tried.
pub(super) fn unreachable(host: &str, insecure_tried: bool) -> String {
    let mut checks = vec![format!(
        "that a registry listens at {host} (the address and port the config or reference names)"
    )];
    if !insecure_tried {
        checks.push("a registry serving plain HTTP needs `--insecure`".to_string());
    }
    let set: Vec<&str> = PROXY_VARS
        .iter()
        .copied()
        .filter(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
        .collect();
    if set.is_empty() {
        checks.push("no proxy variable (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY) is set".to_string());
    } else {
        let no_proxy = std::env::var("NO_PROXY")
            .or_else(|_| std::env::var("no_proxy"))
            .unwrap_or_default();
        checks.push(format!(
            "{} {} set: the request goes through that proxy unless NO_PROXY lists {} (NO_PROXY={:?})",
            set.join(", "),
            if set.len() == 1 { "is" } else { "are" },
            host.split(':').next().unwrap_or(host),
            no_proxy
        ));
    }
    format!("\n    check: {}", checks.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_and_unknown_hosts_get_advice_others_do_not() {
        assert!(is_unreachable(
            "error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"
        ));
        assert!(is_unreachable(
            "dns error: failed to lookup address information"
        ));
        assert!(!is_unreachable("403 Forbidden"));
        let a = unreachable("10.0.0.5:5000", false);
        assert!(
            a.contains("10.0.0.5:5000") && a.contains("--insecure"),
            "{a}"
        );
        assert!(!unreachable("h:1", true).contains("--insecure"));
    }
}
