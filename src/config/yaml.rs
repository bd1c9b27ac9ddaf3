//! YAML input with error messages that name file, line, column and key.
//!
//! Parsing goes through `serde_path_to_error` (the key path) over
//! `serde_yaml_ng` (the location). Checks made after parsing (one-of pairs,
//! values that parse but make no sense) find the line of a key with
//! [`locate`], which walks the document again with a seed that fails on
//! purpose at the wanted node: `serde_yaml_ng` attaches the position of the
//! event where a visitor failed, which is exactly the node's position.
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess};

use crate::error::input_error;

const MARKER: &str = "\u{0}bundler-locate\u{0}";

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Parse `a.b[2].c` into segments.
pub fn path(p: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in p.split('.').filter(|s| !s.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key.to_string()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let end = stripped.find(']').unwrap_or(stripped.len());
            if let Ok(i) = stripped[..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = stripped.get(end + 1..).unwrap_or("");
        }
    }
    out
}

/// Line and column (1-based) of the node at `path`: the key itself when the
/// last segment is a key, the element when it is an index.
pub fn locate(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let loc = Locator { path };
    match loc.deserialize(de) {
        Ok(()) => None,
        Err(e) if e.to_string().contains(MARKER) => e.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

struct Locator<'a> {
    path: &'a [Seg],
}

impl<'de> DeserializeSeed<'de> for Locator<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! scalar_visits {
    ($($name:ident: $t:ty),*) => {
        $(fn $name<E: de::Error>(self, _v: $t) -> Result<(), E> { self.leaf() })*
    };
}

impl Locator<'_> {
    fn leaf<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(MARKER))
        } else {
            Ok(())
        }
    }
}

impl<'de> de::Visitor<'de> for Locator<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("anything")
    }
    scalar_visits!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            return Err(de::Error::custom(MARKER));
        }
        let want = match self.path[0] {
            Seg::Index(i) => Some(i),
            Seg::Key(_) => None,
        };
        let mut i = 0;
        loop {
            if Some(i) == want {
                return match seq.next_element_seed(Locator {
                    path: &self.path[1..],
                })? {
                    Some(()) => Ok(()),
                    None => Ok(()),
                };
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            return Err(de::Error::custom(MARKER));
        }
        let want = match &self.path[0] {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        };
        let last = self.path.len() == 1;
        while let Some(key) = map.next_key_seed(KeySeed {
            fail_on: if last { want } else { None },
        })? {
            if Some(key.as_str()) == want {
                return map.next_value_seed(Locator {
                    path: &self.path[1..],
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

struct KeySeed<'a> {
    fail_on: Option<&'a str>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for KeySeed<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if Some(v) == self.fail_on {
            return Err(E::custom(MARKER));
        }
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok("~".into())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(String::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(String::new())
    }
}

/// A YAML document being loaded: its file name and text, for messages.
pub struct Doc<'a> {
    pub file: &'a Path,
    pub text: String,
}

impl<'a> Doc<'a> {
    /// Read the file; a missing or unreadable file is an input error.
    pub fn read(file: &'a Path, what: &str) -> anyhow::Result<Self> {
        crate::file_kind::check_path(file, what, false)?;
        match std::fs::read(file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => Ok(Doc { file, text }),
                Err(e) => Err(input_error(format!(
                    "{}: not UTF-8 text (byte {}): {what} must be a YAML file",
                    file.display(),
                    e.utf8_error().valid_up_to()
                ))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(input_error(format!(
                "{}: no such file: give the path of the {what} (see --help)",
                file.display()
            ))),
            Err(e) => Err(input_error(format!(
                "{}: cannot read the {what}: {e}",
                file.display()
            ))),
        }
    }

    /// Deserialize, turning any error into an input error with location.
    pub fn parse<T: DeserializeOwned>(&self, hint: &str) -> anyhow::Result<T> {
        if self
            .text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
        {
            return Err(input_error(format!(
                "{}:1:1: the file is empty; {hint}",
                self.file.display()
            )));
        }
        if let Err(e) = crate::yaml_bounds::check(&self.text) {
            return Err(input_error(format!("{}: {e}", self.file.display())));
        }
        let de = serde_yaml_ng::Deserializer::from_str(&self.text);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => Ok(v),
            Err(e) => {
                let key = e.path().to_string();
                let inner = e.into_inner();
                let (line, col) = inner
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                let msg = clean_message(&inner.to_string(), &key);
                let msg = super::suggest::unknown_key(&msg).unwrap_or(msg);
                let key = if key == "." || key.is_empty() {
                    "(top level)".to_string()
                } else {
                    key
                };
                Err(input_error(format!(
                    "{}:{line}:{col}: {key}: {msg}; {hint}",
                    self.file.display()
                )))
            }
        }
    }

    /// An input error at the node `key` (a path like `target.repo.kind`);
    /// when the node is absent, at `fallback` (its parent), else line 1.
    pub fn error_at(&self, key: &str, fallback: &[&str], what: impl fmt::Display) -> anyhow::Error {
        let mut pos = locate(&self.text, &path(key));
        for f in fallback {
            if pos.is_some() {
                break;
            }
            pos = locate(&self.text, &path(f));
        }
        let (line, col) = pos.unwrap_or((1, 1));
        input_error(format!(
            "{}:{line}:{col}: {key}: {what}",
            self.file.display()
        ))
    }
}

/// serde_yaml_ng appends " at line L column C" to messages; we print the
/// location in front already.
fn clean_message(msg: &str, key: &str) -> String {
    let re = regex::Regex::new(r",? at line \d+ column \d+$").unwrap();
    let mut msg = re.replace(msg, "").into_owned();
    // serde_yaml_ng prefixes its own view of the path (`a.b: ...`); ours,
    // in front of the message, is more precise.
    if let Some(i) = msg.find(": ") {
        let p = &msg[..i];
        if !p.is_empty() && !p.contains(' ') && key.starts_with(p) {
            msg = msg[i + 2..].to_string();
        }
    }
    msg.trim().to_string()
}

/// Deserialize a string, accepting integers and booleans written without
/// quotes (`password: 123456`), as charts-syncer users do.
pub fn lenient_string<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "the number {v} is ambiguous here (YAML reads `1.10` as 1.1); write it in quotes"
            )))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_any(V)
}

/// A list of lenient strings (`versions: [1.2.1, "2"]`).
pub fn lenient_strings<'de, D: de::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct One(String);
    impl<'de> de::Deserialize<'de> for One {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            match lenient_string(d)? {
                Some(s) => Ok(One(s)),
                None => Err(de::Error::custom(
                    "an empty entry; remove it or give a value",
                )),
            }
        }
    }
    let v: Option<Vec<One>> = de::Deserialize::deserialize(d)?;
    Ok(v.unwrap_or_default().into_iter().map(|o| o.0).collect())
}
