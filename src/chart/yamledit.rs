//! A small comment-preserving YAML editor: it parses the text with
//! `saphyr-parser` to find the byte span of every node, then edits the text
//! itself (replace one scalar's bytes, insert new keys with the indentation
//! of their siblings). Comments, key order, anchors and quoting style of
//! everything else stay as they were: this is not a serde round trip.
use anyhow::{bail, Context};
use saphyr_parser::{Event, Parser, ScalarStyle};

/// One step of a path into a YAML document.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl std::fmt::Display for Seg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seg::Key(k) => write!(f, "{k}"),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// `a.b[0].c`
pub fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for (i, seg) in path.iter().enumerate() {
        match seg {
            Seg::Key(k) => {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(n) => s.push_str(&format!("[{n}]")),
        }
    }
    s
}

#[derive(Debug)]
enum Kind {
    Map {
        flow: bool,
        entries: Vec<(Node, Node)>,
    },
    #[allow(dead_code)]
    Seq {
        flow: bool,
        items: Vec<Node>,
    },
    Scalar {
        value: String,
        style: ScalarStyle,
    },
    Alias,
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    /// Byte offsets.
    start: usize,
    end: usize,
    col: usize,
}

impl Node {
    fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, style: ScalarStyle::Plain }
            if value.is_empty() || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }
    fn key_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }
}

struct Doc<'a> {
    text: &'a str,
    /// char index -> byte offset
    offsets: Vec<usize>,
}

impl<'a> Doc<'a> {
    fn new(text: &'a str) -> Self {
        let mut offsets: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        offsets.push(text.len());
        Doc { text, offsets }
    }
    fn byte(&self, char_idx: usize) -> usize {
        self.offsets
            .get(char_idx)
            .copied()
            .unwrap_or(self.text.len())
    }

    /// Parse the first document's root node (None for an empty document).
    fn root(&self) -> anyhow::Result<Option<Node>> {
        let mut parser = Parser::new_from_str(self.text);
        let mut events = Vec::new();
        while let Some(ev) = parser.next_event() {
            let (ev, span) = ev.map_err(|e| anyhow::anyhow!("YAML syntax error: {e}"))?;
            let done = matches!(ev, Event::DocumentEnd | Event::StreamEnd);
            events.push((
                ev,
                self.byte(span.start.index()),
                self.byte(span.end.index()),
                span.start.col(),
            ));
            if done {
                break;
            }
        }
        let mut i = 0;
        while i < events.len() {
            match events[i].0 {
                Event::StreamStart | Event::DocumentStart(_) => i += 1,
                Event::DocumentEnd | Event::StreamEnd => return Ok(None),
                _ => break,
            }
        }
        if i >= events.len() {
            return Ok(None);
        }
        let node = build(&events, &mut i)?;
        Ok(Some(node))
    }
}

type Ev<'e> = (Event<'e>, usize, usize, usize);

fn build(events: &[Ev<'_>], i: &mut usize) -> anyhow::Result<Node> {
    let (ev, start, end, col) = events.get(*i).context("unexpected end of YAML events")?;
    *i += 1;
    match ev {
        Event::Scalar(v, style, _, _) => Ok(Node {
            kind: Kind::Scalar {
                value: v.to_string(),
                style: *style,
            },
            start: *start,
            end: *end,
            col: *col,
        }),
        Event::Alias(_) => Ok(Node {
            kind: Kind::Alias,
            start: *start,
            end: *end,
            col: *col,
        }),
        Event::MappingStart(..) => {
            let flow = end > start;
            let mut entries = Vec::new();
            let mut last_end = *end;
            loop {
                match &events.get(*i).context("unterminated mapping")?.0 {
                    Event::MappingEnd => {
                        let (_, _, e, _) = events[*i];
                        if flow {
                            last_end = e;
                        }
                        *i += 1;
                        break;
                    }
                    _ => {
                        let k = build(events, i)?;
                        let v = build(events, i)?;
                        if !flow {
                            last_end = last_end.max(v.end).max(k.end);
                        }
                        entries.push((k, v));
                    }
                }
            }
            let first = entries
                .first()
                .map(|(k, _)| k.start.min(*start))
                .unwrap_or(*start);
            Ok(Node {
                kind: Kind::Map { flow, entries },
                start: if flow { *start } else { first },
                end: last_end,
                col: *col,
            })
        }
        Event::SequenceStart(..) => {
            let flow = end > start;
            let mut items = Vec::new();
            let mut last_end = *end;
            loop {
                match &events.get(*i).context("unterminated sequence")?.0 {
                    Event::SequenceEnd => {
                        let (_, _, e, _) = events[*i];
                        if flow {
                            last_end = e;
                        }
                        *i += 1;
                        break;
                    }
                    _ => {
                        let v = build(events, i)?;
                        if !flow {
                            last_end = last_end.max(v.end);
                        }
                        items.push(v);
                    }
                }
            }
            Ok(Node {
                kind: Kind::Seq { flow, items },
                start: *start,
                end: last_end,
                col: *col,
            })
        }
        other => bail!("unexpected YAML event {other:?}"),
    }
}

/// Whether `s` can be written as a plain scalar and read back as the same
/// string (not a number, bool or null, no indicators).
pub fn plain_safe(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return false;
    }
    let first = s.chars().next().unwrap();
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.contains('\n') {
        return false;
    }
    if s.chars().any(|c| c.is_control()) {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    ) {
        return false;
    }
    // Anything YAML would read as a number.
    let num = regex::Regex::new(
        r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$|^0x[0-9a-fA-F_]+$|^0o[0-7_]+$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$",
    )
    .unwrap();
    !num.is_match(s)
}

pub fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn format_scalar(s: &str, style: ScalarStyle) -> String {
    match style {
        ScalarStyle::SingleQuoted if !s.contains('\n') => format!("'{}'", s.replace('\'', "''")),
        ScalarStyle::DoubleQuoted => double_quoted(s),
        _ if plain_safe(s) => s.to_string(),
        _ => double_quoted(s),
    }
}

fn format_new(s: &str) -> String {
    format_scalar(s, ScalarStyle::Plain)
}

/// The string value at `path`, if it is a scalar (aliases are not followed).
pub fn get(text: &str, path: &[Seg]) -> anyhow::Result<Option<String>> {
    let doc = Doc::new(text);
    let Some(root) = doc.root()? else {
        return Ok(None);
    };
    let mut node = &root;
    for seg in path {
        node = match (&node.kind, seg) {
            (Kind::Map { entries, .. }, Seg::Key(k)) => {
                match entries.iter().find(|(kn, _)| kn.key_str() == Some(k)) {
                    Some((_, v)) => v,
                    None => return Ok(None),
                }
            }
            (Kind::Seq { items, .. }, Seg::Index(n)) => match items.get(*n) {
                Some(v) => v,
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
    }
    Ok(match &node.kind {
        Kind::Scalar { value, .. } => Some(value.clone()),
        _ => None,
    })
}

/// Rewrite the source text of the scalar at `path` (its bytes as written:
/// quotes or block-scalar body included) with `edit`, leaving every other
/// byte alone; `None` when `path` does not lead to a scalar. For callers
/// that swap one token for another inside a value (an image reference in a
/// script), which keeps the quoting and block style.
pub fn edit_scalar_source(
    text: &str,
    path: &[Seg],
    edit: impl FnOnce(&str) -> String,
) -> anyhow::Result<Option<String>> {
    let doc = Doc::new(text);
    let Some(root) = doc.root()? else {
        return Ok(None);
    };
    let mut node = &root;
    for seg in path {
        node = match (&node.kind, seg) {
            (Kind::Map { entries, .. }, Seg::Key(k)) => {
                match entries.iter().find(|(kn, _)| kn.key_str() == Some(k)) {
                    Some((_, v)) => v,
                    None => return Ok(None),
                }
            }
            (Kind::Seq { items, .. }, Seg::Index(n)) => match items.get(*n) {
                Some(v) => v,
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
    }
    if !matches!(node.kind, Kind::Scalar { .. }) {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len() + 64);
    out.push_str(&text[..node.start]);
    out.push_str(&edit(&text[node.start..node.end]));
    out.push_str(&text[node.end..]);
    Ok(Some(out))
}

/// Set the scalar at `path` to the string `value`, creating missing keys.
/// Returns the new text.
pub fn set(text: &str, path: &[Seg], value: &str) -> anyhow::Result<String> {
    if path.is_empty() {
        bail!("cannot replace the whole document");
    }
    let doc = Doc::new(text);
    let root = doc.root()?;
    let Some(root) = root.filter(|r| !r.is_null()) else {
        // Empty document: append the keys at column 0.
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&block_lines(path, value, 0)?);
        return Ok(out);
    };
    let mut node = &root;
    // Column of the key whose value `node` is (None at the root).
    let mut key_col: Option<usize> = None;
    for (i, seg) in path.iter().enumerate() {
        match (&node.kind, seg) {
            (Kind::Map { flow, entries }, Seg::Key(k)) => {
                if let Some((kn, v)) = entries.iter().find(|(kn, _)| kn.key_str() == Some(k)) {
                    key_col = Some(kn.col);
                    node = v;
                    continue;
                }
                return insert_into_map(text, node, *flow, entries, &path[i..], value, key_col);
            }
            (Kind::Seq { items, .. }, Seg::Index(n)) => match items.get(*n) {
                Some(v) => {
                    key_col = Some(v.col);
                    node = v;
                    continue;
                }
                None => bail!(
                    "{}: index {n} is past the end of the list",
                    path_string(&path[..i])
                ),
            },
            (Kind::Scalar { .. }, Seg::Key(_)) if node.is_null() => {
                // `key:` or `key: ~` with nothing: give it a block mapping.
                let indent = key_col.map(|c| c + 2).unwrap_or(0);
                let (start, end) = if node.start == node.end {
                    // Empty scalar: its span sits at the ':'.
                    let colon = text[node.start..]
                        .find(':')
                        .map(|p| node.start + p + 1)
                        .unwrap_or(node.start);
                    (colon, colon)
                } else {
                    (node.start, node.end)
                };
                // Drop spaces before the value so the line does not keep a
                // trailing blank.
                let mut s = start;
                while s > 0 && text.as_bytes()[s - 1] == b' ' {
                    s -= 1;
                }
                let block = block_lines(&path[i..], value, indent)?;
                let mut out = String::with_capacity(text.len() + block.len());
                out.push_str(&text[..s]);
                out.push('\n');
                out.push_str(block.trim_end_matches('\n'));
                out.push_str(&text[end..]);
                return Ok(out);
            }
            _ => bail!(
                "cannot set {}: {} is not a mapping",
                path_string(path),
                if i == 0 {
                    "the document".to_string()
                } else {
                    path_string(&path[..i])
                }
            ),
        }
    }
    replace_scalar(text, node, value, path)
}

fn replace_scalar(text: &str, node: &Node, value: &str, path: &[Seg]) -> anyhow::Result<String> {
    let (start, end, style) = match &node.kind {
        Kind::Scalar { style, .. } => {
            let mut start = node.start;
            // Skip an anchor (`&a`) and/or tag (`!!str`) before the value.
            loop {
                let rest = &text[start..node.end];
                if rest.starts_with('&') || rest.starts_with('!') {
                    let skip = rest
                        .find([' ', '\t', '\n'])
                        .context("anchor without value")?;
                    start += skip;
                    while start < node.end && matches!(text.as_bytes()[start], b' ' | b'\t') {
                        start += 1;
                    }
                } else {
                    break;
                }
            }
            if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                bail!(
                    "cannot edit {}: it is a block scalar (| or >)",
                    path_string(path)
                );
            }
            if start == node.end {
                // Empty value (`key:`): insert after the colon.
                let colon = text[node.start..]
                    .find(':')
                    .map(|p| node.start + p + 1)
                    .context("cannot find the ':' of an empty value")?;
                let mut out = String::new();
                out.push_str(&text[..colon]);
                out.push(' ');
                out.push_str(&format_new(value));
                out.push_str(&text[colon..]);
                return Ok(out);
            }
            (start, node.end, *style)
        }
        Kind::Alias => (node.start, node.end, ScalarStyle::Plain),
        _ => bail!(
            "cannot set {}: it is a mapping or list, not a single value",
            path_string(path)
        ),
    };
    let mut out = String::with_capacity(text.len() + value.len());
    out.push_str(&text[..start]);
    out.push_str(&format_scalar(value, style));
    out.push_str(&text[end..]);
    Ok(out)
}

fn key_text(seg: &Seg) -> anyhow::Result<String> {
    match seg {
        Seg::Key(k) => Ok(format_new(k)),
        Seg::Index(_) => bail!("cannot create list items"),
    }
}

/// `k1:\n  k2: value\n` at `indent`.
fn block_lines(path: &[Seg], value: &str, indent: usize) -> anyhow::Result<String> {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        let pad = " ".repeat(indent + 2 * i);
        if i + 1 == path.len() {
            out.push_str(&format!("{pad}{}: {}\n", key_text(seg)?, format_new(value)));
        } else {
            out.push_str(&format!("{pad}{}:\n", key_text(seg)?));
        }
    }
    Ok(out)
}

/// `k1: {k2: value}`
fn flow_entry(path: &[Seg], value: &str) -> anyhow::Result<String> {
    let mut s = format_new(value);
    for seg in path[1..].iter().rev() {
        s = format!("{{{}: {s}}}", key_text(seg)?);
    }
    Ok(format!("{}: {s}", key_text(&path[0])?))
}

fn insert_into_map(
    text: &str,
    map: &Node,
    flow: bool,
    entries: &[(Node, Node)],
    rest: &[Seg],
    value: &str,
    key_col: Option<usize>,
) -> anyhow::Result<String> {
    if flow {
        let close = map.end.saturating_sub(1);
        if text.as_bytes().get(close) != Some(&b'}') {
            bail!("cannot find the end of a flow mapping");
        }
        let entry = flow_entry(rest, value)?;
        let mut out = String::new();
        if entries.is_empty() {
            // `{}`: in block context, turn it into a block mapping.
            if let Some(kc) = key_col {
                let mut s = map.start;
                while s > 0 && text.as_bytes()[s - 1] == b' ' {
                    s -= 1;
                }
                out.push_str(&text[..s]);
                out.push('\n');
                out.push_str(block_lines(rest, value, kc + 2)?.trim_end_matches('\n'));
                out.push_str(&text[map.end..]);
            } else {
                out.push_str(&text[..close]);
                out.push_str(&entry);
                out.push_str(&text[close..]);
            }
        } else {
            let mut c = close;
            while c > 0 && matches!(text.as_bytes()[c - 1], b' ' | b'\n' | b'\t' | b'\r') {
                c -= 1;
            }
            out.push_str(&text[..c]);
            out.push_str(", ");
            out.push_str(&entry);
            out.push_str(&text[c..]);
        }
        return Ok(out);
    }
    let indent = entries.first().map(|(k, _)| k.col).unwrap_or(0);
    // After the line holding the last byte of the mapping.
    let last = map.end.max(1) - 1;
    let mut out = String::new();
    let block = block_lines(rest, value, indent)?;
    match text[last..].find('\n') {
        Some(p) => {
            let at = last + p + 1;
            out.push_str(&text[..at]);
            out.push_str(&block);
            out.push_str(&text[at..]);
        }
        None => {
            out.push_str(text);
            out.push('\n');
            out.push_str(&block);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<Seg> {
        s.split('.').map(|k| Seg::Key(k.to_string())).collect()
    }

    const DOC: &str = "# top comment\nimage:\n  registry: docker.io # the registry\n  repository: \"bitnami/kafka\"\n  tag: '2.8.1'\n  # trailing comment\nother: &a x\nref: *a\nempty: {}\nnothing:\nflow: {a: 1}\nlast: 1\n";

    #[test]
    fn replaces_scalars_keeping_style_and_comments() {
        let t = set(DOC, &p("image.registry"), "10.0.0.1/docker.io").unwrap();
        assert!(t.contains("  registry: 10.0.0.1/docker.io # the registry\n"));
        let t = set(&t, &p("image.repository"), "x/y").unwrap();
        assert!(t.contains("  repository: \"x/y\"\n"));
        let t = set(&t, &p("image.tag"), "it's").unwrap();
        assert!(t.contains("  tag: 'it''s'\n"));
        let t = set(&t, &p("other"), "yy").unwrap();
        assert!(t.contains("other: &a yy\n"), "{t}");
        let t = set(&t, &p("ref"), "z").unwrap();
        assert!(t.contains("ref: z\n"));
        assert!(t.starts_with("# top comment\n"));
        assert!(t.contains("  # trailing comment\n"));
        assert_eq!(get(&t, &p("image.tag")).unwrap().as_deref(), Some("it's"));
    }

    #[test]
    fn inserts_keys() {
        let t = set(DOC, &p("image.digest"), "sha256:abc").unwrap();
        assert!(t.contains("  tag: '2.8.1'\n  digest: sha256:abc\n"), "{t}");
        let t = set(DOC, &p("sub.image.registry"), "r").unwrap();
        assert!(
            t.ends_with("last: 1\nsub:\n  image:\n    registry: r\n"),
            "{t}"
        );
        let t = set(DOC, &p("empty.a.b"), "v").unwrap();
        assert!(t.contains("empty:\n  a:\n    b: v\nnothing:"), "{t}");
        let t = set(DOC, &p("nothing.a"), "v").unwrap();
        assert!(t.contains("nothing:\n  a: v\nflow:"), "{t}");
        let t = set(DOC, &p("flow.b.c"), "true").unwrap();
        assert!(t.contains("flow: {a: 1, b: {c: \"true\"}}"), "{t}");
        for path in [
            "image.digest",
            "sub.image.registry",
            "empty.a.b",
            "nothing.a",
            "flow.b.c",
        ] {
            let t = set(DOC, &p(path), "v").unwrap();
            assert_eq!(get(&t, &p(path)).unwrap().as_deref(), Some("v"), "{t}");
            let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&t).unwrap();
            assert!(v.get("image").is_some());
        }
        let t = set("", &p("a.b"), "v").unwrap();
        assert_eq!(t, "a:\n  b: v\n");
        let t = set("# only a comment", &p("a"), "v").unwrap();
        assert_eq!(t, "# only a comment\na: v\n");
    }

    #[test]
    fn nested_last_entry_and_unicode() {
        let doc = "a:\n  b:\n    c: 1 # é\n  d:\n    e: 2\nz: 3\n";
        let t = set(doc, &p("a.f"), "v").unwrap();
        assert_eq!(t, "a:\n  b:\n    c: 1 # é\n  d:\n    e: 2\n  f: v\nz: 3\n");
        let t = set(doc, &p("a.d.e"), "ü").unwrap();
        assert!(t.contains("    e: ü\n"));
    }

    #[test]
    fn plain_safety() {
        assert!(plain_safe("docker.io/bitnami/kafka"));
        assert!(plain_safe("10.16.10.111"));
        assert!(!plain_safe("1.5"));
        assert!(!plain_safe("true"));
        assert!(!plain_safe(""));
        assert!(!plain_safe("a: b"));
    }
}
