//! "did you mean `containerPrefixRegistry`?" for an unknown key (issue 22).
//!
//! serde reports an unknown key as ``unknown field `x`, expected one of
//! `a`, `b`, ...``, listing every spelling it accepts (camelCase and the
//! snake_case aliases). That list is long and hides the one name the user
//! almost typed; this rewrites it to the closest accepted key (by edit
//! distance, ignoring case and `_`/`-`) and a short list of the keys that
//! belong there.

/// The rewritten message, or `None` when `msg` is not an unknown-key error.
pub fn unknown_key(msg: &str) -> Option<String> {
    let re = regex::Regex::new(r"^unknown field `([^`]*)`, expected (?:one of )?(.*)$").ok()?;
    let caps = re.captures(msg.trim())?;
    let typed = caps.get(1)?.as_str();
    let accepted: Vec<&str> = caps
        .get(2)?
        .as_str()
        .split(", ")
        .map(|s| s.trim().trim_matches('`'))
        .filter(|s| !s.is_empty())
        .collect();
    // Show the camelCase names (the aliases are the same keys).
    let shown: Vec<&str> = {
        let camel: Vec<&str> = accepted
            .iter()
            .copied()
            .filter(|s| !s.contains('_'))
            .collect();
        if camel.is_empty() {
            accepted.clone()
        } else {
            camel
        }
    };
    let best = shown
        .iter()
        .map(|k| (distance(&fold(typed), &fold(k)), *k))
        .min_by_key(|(d, _)| *d);
    let keys = shown
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(match best {
        // Close enough to be a typo: a third of the name at most.
        Some((d, k)) if d <= (typed.len().max(3) / 3).max(2) => {
            format!("unknown field `{typed}`: did you mean `{k}`? (expected one of {keys})")
        }
        _ => format!("unknown field `{typed}`, expected one of {keys}"),
    })
}

fn fold(s: &str) -> Vec<char> {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Levenshtein distance.
fn distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_key_it_meant() {
        let m = unknown_key("unknown field `containerPrefixRegistery`, expected one of `repo`, `containerRegistry`, `container_registry`, `containerPrefixRegistry`, `container_prefix_registry`").unwrap();
        assert!(m.contains("did you mean `containerPrefixRegistry`?"), "{m}");
        assert!(!m.contains("container_registry"), "{m}");
        let m = unknown_key("unknown field `flavour`, expected `repo` or `kind`");
        assert!(m.is_some_and(|m| !m.contains("did you mean")));
        assert!(unknown_key("invalid type: string").is_none());
    }
}
