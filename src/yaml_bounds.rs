//! Bounded YAML: every YAML document bundler reads goes through here.
//!
//! YAML aliases let a small text expand into a huge tree: one anchor
//! holding K scalars aliased M times is K×M nodes from K+M lines of text.
//! `serde_yaml_ng` limits alias *jumps* (relative to the event count), so
//! this quadratic shape passes its check and materializes gigabytes.
//! Before deserializing, [`check`] walks the event stream once with
//! `saphyr-parser` (streaming, memory linear in nesting depth plus one
//! count per anchor) and computes how many nodes and scalar bytes the
//! document has once every alias is expanded. Anything that expands far
//! beyond what real charts do is refused with a message saying where the
//! expansion crosses the limit.
//!
//! The limits are on what aliases *add*: text without aliases is bounded by
//! its own size (which callers bound where they read it). Real charts use a
//! handful of aliases (`<<: *defaults` in values.yaml); the largest public
//! chart index uses none.
//!
//! The same pass refuses nesting deeper than [`MAX_DEPTH`]: `[[[[...` 150,000
//! levels deep is 300 KB of text, and the deserializer's time grows with the
//! square of the depth (a minute at 200k) before its own recursion limit
//! stops it. The pass stops at the first level past the limit, so its own
//! cost stays linear. Text whose nesting cannot reach the limit (bounded by
//! one cheap scan of its bytes, [`depth_bound`]) and that has no alias
//! skips the pass.
use anyhow::Context;
use saphyr_parser::{Event, Parser};
use serde::de::DeserializeOwned;

/// Nodes that alias expansion may add on top of those written out.
pub const MAX_ALIAS_NODES: u64 = 1_000_000;
/// Scalar bytes that alias expansion may add on top of those written out.
pub const MAX_ALIAS_BYTES: u64 = 64 << 20;
/// Deepest nesting of collections accepted. Real charts, values and
/// indexes stay below 20; `serde_yaml_ng` gives up at 128 anyway, after
/// having parsed the whole document.
pub const MAX_DEPTH: usize = 128;

/// Expanded size of a node: its node count and scalar bytes.
#[derive(Clone, Copy, Default)]
struct Cost {
    nodes: u64,
    bytes: u64,
}

impl Cost {
    fn add(&mut self, o: Cost) {
        self.nodes = self.nodes.saturating_add(o.nodes);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

/// Refuse `text` when its aliases expand beyond the limits. A document the
/// streaming parser cannot read is left for the deserializer to report (it
/// names the line); only the part read so far was checked then.
pub fn check(text: &str) -> anyhow::Result<()> {
    check_with(text, MAX_ALIAS_NODES, MAX_ALIAS_BYTES)
}

/// An upper bound of the nesting depth of `text`, from one scan of its
/// bytes. A block collection nested in another starts on a new line
/// indented further (a sequence under a mapping key may keep the key's
/// indentation: two levels per column), or on the same line after a `-`,
/// `?` or `:`; a flow collection opens with `[` or `{` (and `[a: b]` adds an
/// implicit mapping: two levels per bracket).
fn depth_bound(text: &str) -> usize {
    let mut brackets = 0usize;
    let mut deepest_line = 0usize;
    for line in text.split('\n') {
        let indent = line.bytes().take_while(|&b| b == b' ').count();
        let mut openers = 0usize;
        for b in line.bytes() {
            match b {
                b'[' | b'{' => brackets += 1,
                b'-' | b'?' | b':' => openers += 1,
                _ => {}
            }
        }
        deepest_line = deepest_line.max(2 * (indent + 1) + openers);
    }
    deepest_line
        .saturating_add(brackets.saturating_mul(2))
        .saturating_add(2)
}

fn check_with(text: &str, max_nodes: u64, max_bytes: u64) -> anyhow::Result<()> {
    // Cheap exit: without `*` there is no alias, and shallow text needs no
    // depth check.
    if !text.contains('*') && depth_bound(text) <= MAX_DEPTH {
        return Ok(());
    }
    let mut anchors: std::collections::HashMap<usize, Cost> = Default::default();
    // Open collections: (anchor id, cost so far).
    let mut stack: Vec<(usize, Cost)> = Vec::new();
    let mut added = Cost::default();
    for ev in Parser::new_from_str(text) {
        let (ev, span) = match ev {
            Ok(x) => x,
            Err(e) => return unreadable(text, &e),
        };
        let done = match ev {
            Event::Scalar(v, _, anchor, _) => Some((
                anchor,
                Cost {
                    nodes: 1,
                    bytes: v.len() as u64,
                },
            )),
            Event::Alias(id) => {
                let c = anchors
                    .get(&id)
                    .copied()
                    .unwrap_or(Cost { nodes: 1, bytes: 0 });
                added.add(c);
                if added.nodes > max_nodes || added.bytes > max_bytes {
                    anyhow::bail!(
                        "line {}: YAML aliases expand the document beyond {} nodes or {} MiB \
                         (an alias bomb?); write the repeated part out or use fewer aliases",
                        span.start.line(),
                        max_nodes,
                        max_bytes >> 20
                    );
                }
                Some((0, c))
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    anyhow::bail!(
                        "line {}: YAML nested more than {MAX_DEPTH} levels deep: refused \
                         (real charts stay below 20; a nesting bomb?); flatten the structure",
                        span.start.line()
                    );
                }
                stack.push((anchor, Cost { nodes: 1, bytes: 0 }));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => stack.pop(),
            Event::DocumentEnd => {
                anchors.clear();
                None
            }
            _ => None,
        };
        if let Some((anchor, cost)) = done {
            if anchor != 0 {
                anchors.insert(anchor, cost);
            }
            if let Some(parent) = stack.last_mut() {
                parent.1.add(cost);
            }
        }
    }
    Ok(())
}

/// The streaming parser stopped at `e`. Most such documents are invalid
/// for `serde_yaml_ng` too, which then reports the error with its line;
/// but where the two parsers disagree, a document with aliases cannot be
/// let through unchecked, so it is refused with the parser's position.
fn unreadable(text: &str, e: &saphyr_parser::ScanError) -> anyhow::Result<()> {
    use std::sync::OnceLock;
    // The scanner reads a flow collection's tokens ahead of its events and
    // gives up at 255 open brackets: deep nesting shows up here. (Other
    // syntax errors stop `serde_yaml_ng` at the same place, in time linear
    // in the text read so far.)
    if e.info().contains("recursion limit") {
        anyhow::bail!(
            "line {}: YAML nested more than {MAX_DEPTH} levels deep: refused (real charts \
             stay below 20; a nesting bomb?); flatten the structure",
            e.marker().line(),
        );
    }
    static ALIAS: OnceLock<regex::Regex> = OnceLock::new();
    let alias =
        ALIAS.get_or_init(|| regex::Regex::new(r"(?m)(^|[\s\[{,:-])\*[^\s,\[\]{}]").unwrap());
    if !alias.is_match(text) {
        return Ok(());
    }
    anyhow::bail!(
        "line {}: YAML with aliases that bundler cannot check for expansion ({}); \
         fix the syntax there or write the aliased part out",
        e.marker().line(),
        e.info()
    )
}

/// [`check`], then deserialize with `serde_yaml_ng`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    check(text)?;
    Ok(serde_yaml_ng::from_str(text)?)
}

/// [`from_str`] on bytes (not UTF-8 is an error, as for `serde_yaml_ng`).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    let text = std::str::from_utf8(bytes).context("not UTF-8 text")?;
    from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One anchor holding `k` scalars, aliased `m` times.
    pub fn bomb(k: usize, m: usize) -> String {
        let mut s = String::from("a: &a\n");
        for i in 0..k {
            s.push_str(&format!("  - x{i}\n"));
        }
        s.push_str("b:\n");
        for _ in 0..m {
            s.push_str("  - *a\n");
        }
        s
    }

    #[test]
    fn a_quadratic_bomb_is_refused_with_its_line() {
        let e = check(&bomb(2000, 2000)).unwrap_err().to_string();
        assert!(e.contains("alias"), "{e}");
        assert!(e.starts_with("line 2"), "{e}");
    }

    #[test]
    fn nested_bombs_count_expanded_size() {
        // Billion laughs: each level aliases the previous one 10 times.
        let mut s = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = format!("*l{}", i - 1);
            s.push_str(&format!("l{i}: &l{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        assert!(check(&s).is_err());
    }

    #[test]
    fn deep_flow_nesting_is_refused_at_once() {
        let deep = format!("a: {}1{}\n", "[".repeat(150_000), "]".repeat(150_000));
        let t = std::time::Instant::now();
        let e = check(&deep).unwrap_err().to_string();
        assert!(e.contains("nested"), "{e}");
        assert!(e.starts_with("line 1"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        // Block nesting on one line (`- - - x`) and by indentation too.
        let dashes = format!("{}x\n", "- ".repeat(5000));
        assert!(check(&dashes).unwrap_err().to_string().contains("nested"));
        let mut indented = String::new();
        for i in 0..200 {
            indented.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        indented.push_str(&format!("{}v: 1\n", " ".repeat(200)));
        assert!(check(&indented).unwrap_err().to_string().contains("nested"));
        // 100 levels are fine.
        let ok = format!("a: {}1{}\n", "[".repeat(100), "]".repeat(100));
        check(&ok).unwrap();
    }

    /// The cheap bound never says less than the real depth (else a deep
    /// document would skip the check).
    #[test]
    fn depth_bound_is_an_upper_bound() {
        fn depth(t: &str) -> usize {
            let (mut d, mut max) = (0usize, 0usize);
            for ev in Parser::new_from_str(t) {
                match ev.unwrap().0 {
                    Event::SequenceStart(..) | Event::MappingStart(..) => {
                        d += 1;
                        max = max.max(d);
                    }
                    Event::SequenceEnd | Event::MappingEnd => d -= 1,
                    _ => {}
                }
            }
            max
        }
        for t in [
            "a:\n- b:\n  - c:\n    - d: [x, {y: [z]}]\n",
            "- - - - - x\n",
            "? - - a\n: - b\n",
            "a: {b: {c: {d: 1}}}\nl: [a: [b: [c: 1]]]\n",
            "k:\n  k:\n    k:\n      - - k: v\n",
        ] {
            assert!(
                depth_bound(t) >= depth(t),
                "{t}: {} < {}",
                depth_bound(t),
                depth(t)
            );
        }
    }

    #[test]
    fn ordinary_aliases_pass() {
        let s =
            "defaults: &d {cpu: 1, mem: 2}\na:\n  <<: *d\nb:\n  <<: *d\nc: \"not * an alias\"\n";
        check(s).unwrap();
        check(&bomb(100, 100)).unwrap();
        let v: serde_yaml_ng::Value = from_str(s).unwrap();
        assert_eq!(v["defaults"]["cpu"].as_i64(), Some(1));
    }

    #[test]
    fn unparsable_text_is_left_to_serde_unless_it_has_aliases() {
        // Invalid YAML without aliases: serde_yaml_ng reports it.
        check("a: [unclosed\nb: \"x * y\"\n").unwrap();
        let e = check("a: &x [1]\nb: *x\nc: [unclosed\n").unwrap_err();
        assert!(e.to_string().contains("cannot check"), "{e}");
    }

    #[test]
    fn the_limit_is_on_expansion_not_on_plain_size() {
        assert!(check_with(&bomb(10, 9), 100, 1 << 20).is_ok());
        assert!(check_with(&bomb(10, 10), 100, 1 << 20).is_err());
    }

    /// Every YAML file of the real fixtures (charts, values, indexes) passes.
    #[test]
    fn real_yaml_passes() {
        fn walk(d: &std::path::Path, n: &mut usize) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    // Go templates are not YAML until rendered.
                    if p.file_name().is_some_and(|f| f != "templates") {
                        walk(&p, n);
                    }
                } else if ft.is_file()
                    && matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
                {
                    if let Ok(t) = std::fs::read_to_string(&p) {
                        check(&t).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                        *n += 1;
                    }
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
        let mut n = 0;
        walk(&root, &mut n);
        if root.exists() {
            assert!(n > 10, "only {n} YAML files under {}", root.display());
        }
    }
}
