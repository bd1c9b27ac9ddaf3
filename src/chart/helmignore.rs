//! `.helmignore`: which files of a chart directory `helm package` leaves out.
//!
//! bundler packages chart directories itself, so it must drop exactly the
//! files helm drops; otherwise a `templates/BUILD.bazel` or a `ci/` values
//! file ends up in the relocated archive and can break `helm template`.
//! The semantics follow helm's `pkg/ignore` rules:
//! - one pattern per line, blank lines and `#` comments skipped, `**` refused;
//! - `!pattern` negates (a path that does NOT match a negated rule is ignored);
//! - a trailing `/` matches directories only;
//! - a leading `/` anchors the pattern to the chart root;
//! - a pattern with a `/` matches the whole relative path, one without
//!   matches the file's base name;
//! - matching is Go's `filepath.Match` (`*`, `?`, `[...]`, `\` escapes; `*`
//!   never crosses `/`);
//! - `templates/.?*` (dot files in templates/) is always ignored.
use anyhow::bail;

#[derive(Clone, Debug)]
struct Pattern {
    glob: String,
    negate: bool,
    must_dir: bool,
    /// Match the base name only (no `/` in the pattern).
    base_only: bool,
}

/// Parsed ignore rules.
#[derive(Clone, Debug, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

impl IgnoreRules {
    /// Rules from a `.helmignore` text, plus helm's default rule. `file`
    /// names the file in errors.
    pub fn parse(text: &str, file: &str) -> anyhow::Result<Self> {
        let mut rules = Self::defaults();
        for (i, line) in text.lines().enumerate() {
            rules.add(line).map_err(|e| {
                anyhow::anyhow!("{file} line {}: {e}; fix or remove the pattern", i + 1)
            })?;
        }
        Ok(rules)
    }

    /// Helm's default rules (used when the chart has no `.helmignore`).
    pub fn defaults() -> Self {
        let mut r = IgnoreRules::default();
        r.add("templates/.?*").expect("valid default rule");
        r
    }

    fn add(&mut self, line: &str) -> anyhow::Result<()> {
        let rule = line.trim();
        if rule.is_empty() || rule.starts_with('#') {
            return Ok(());
        }
        if rule.contains("**") {
            bail!("double-star (**) syntax is not supported by helm: {rule:?}");
        }
        // helm checks that the pattern compiles before stripping `!`.
        glob_match(rule, "abc").map_err(|e| anyhow::anyhow!("pattern {rule:?}: {e}"))?;
        let mut r = rule;
        let negate = r.starts_with('!');
        if negate {
            r = &r[1..];
        }
        let must_dir = r.ends_with('/');
        if must_dir {
            r = r.trim_end_matches('/');
        }
        let (glob, base_only) = if let Some(anchored) = r.strip_prefix('/') {
            (anchored.to_string(), false)
        } else {
            (r.to_string(), !r.contains('/'))
        };
        self.patterns.push(Pattern {
            glob,
            negate,
            must_dir,
            base_only,
        });
        Ok(())
    }

    /// Whether `path` (relative to the chart root, `/`-separated) is left
    /// out. `is_dir`: the path is a directory (then nothing under it is
    /// looked at).
    pub fn ignored(&self, path: &str, is_dir: bool) -> bool {
        if path.is_empty() || path == "." || path == "./" {
            return false;
        }
        for p in &self.patterns {
            let subject = if p.base_only {
                path.rsplit('/').next().unwrap_or(path)
            } else {
                path
            };
            let matched = glob_match(&p.glob, subject).unwrap_or(false);
            if p.negate {
                if p.must_dir && !is_dir {
                    return true;
                }
                if !matched {
                    return true;
                }
                continue;
            }
            if p.must_dir && !is_dir {
                continue;
            }
            if matched {
                return true;
            }
        }
        false
    }
}

/// Go's `path/filepath.Match` on `/`-separated names.
pub fn glob_match(pattern: &str, name: &str) -> anyhow::Result<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Validate the whole pattern first, as Go reports bad patterns even
    // when an early mismatch would stop matching.
    validate(&p)?;
    Ok(match_from(&p, &n))
}

fn validate(p: &[char]) -> anyhow::Result<()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    bail!("syntax error in pattern (trailing backslash)");
                }
                i += 2;
            }
            '[' => {
                let (_, next) = parse_class(p, i, '\0')?;
                i = next;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Parse a `[...]` class at `p[start]`; returns (whether `c` matches, index after `]`).
fn parse_class(p: &[char], start: usize, c: char) -> anyhow::Result<(bool, usize)> {
    let mut i = start + 1;
    let negated = i < p.len() && p[i] == '^';
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        if i >= p.len() {
            bail!("syntax error in pattern (unclosed [)");
        }
        if p[i] == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = class_char(p, &mut i)?;
        let mut hi = lo;
        if i + 1 < p.len() && p[i] == '-' && p[i + 1] != ']' {
            i += 1;
            hi = class_char(p, &mut i)?;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Ok((matched != negated, i))
}

fn class_char(p: &[char], i: &mut usize) -> anyhow::Result<char> {
    match p.get(*i) {
        None => bail!("syntax error in pattern"),
        Some('\\') => {
            let c = *p
                .get(*i + 1)
                .ok_or_else(|| anyhow::anyhow!("syntax error in pattern"))?;
            *i += 2;
            Ok(c)
        }
        Some(&c) => {
            *i += 1;
            Ok(c)
        }
    }
}

fn match_from(p: &[char], n: &[char]) -> bool {
    if p.is_empty() {
        return n.is_empty();
    }
    match p[0] {
        '*' => {
            // `*` matches any run of non-separator characters.
            let rest = &p[1..];
            let mut k = 0;
            loop {
                if match_from(rest, &n[k..]) {
                    return true;
                }
                if k >= n.len() || n[k] == '/' {
                    return false;
                }
                k += 1;
            }
        }
        '?' => !n.is_empty() && n[0] != '/' && match_from(&p[1..], &n[1..]),
        '[' => {
            if n.is_empty() || n[0] == '/' {
                return false;
            }
            match parse_class(p, 0, n[0]) {
                Ok((true, next)) => match_from(&p[next..], &n[1..]),
                _ => false,
            }
        }
        '\\' => p.len() > 1 && !n.is_empty() && n[0] == p[1] && match_from(&p[2..], &n[1..]),
        c => !n.is_empty() && n[0] == c && match_from(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_filepath_match() {
        assert!(glob_match("*.swp", "a.swp").unwrap());
        assert!(!glob_match("*", "a/b").unwrap());
        assert!(glob_match("a/*/c", "a/b/c").unwrap());
        assert!(glob_match("[a-c]x", "bx").unwrap());
        assert!(!glob_match("[^a-c]x", "bx").unwrap());
        assert!(glob_match("\\*", "*").unwrap());
        assert!(glob_match("*~", "values.yaml~").unwrap());
        assert!(glob_match("[", "x").is_err());
    }

    #[test]
    fn helm_rules() {
        let r = IgnoreRules::parse(
            "# c\n.git/\nBUILD.bazel\n/ci\nsub/*.txt\n*.tmp\n",
            ".helmignore",
        )
        .unwrap();
        assert!(r.ignored(".git", true));
        assert!(!r.ignored(".git", false), "trailing / is for directories");
        assert!(r.ignored("BUILD.bazel", false));
        assert!(r.ignored("templates/BUILD.bazel", false));
        assert!(r.ignored("ci", true));
        assert!(!r.ignored("templates/ci", true), "leading / anchors");
        assert!(r.ignored("sub/a.txt", false));
        assert!(!r.ignored("other/sub/a.txt", false));
        assert!(r.ignored("templates/.hidden.yaml", false), "default rule");
        assert!(!r.ignored("values.yaml", false));
        assert!(IgnoreRules::parse("a/**/b\n", "x").is_err());
        let n = IgnoreRules::parse("!keep.txt\n", "x").unwrap();
        assert!(n.ignored("other.txt", false));
        assert!(!n.ignored("keep.txt", false));
    }
}
