//! LiveKit's `livekit.yaml`, flattened to dotted keys with their lines: `rtc.udp_port`,
//! `turn.tls_port`, `keys.<api key>`. Scalars keep their text; a list of scalars becomes one
//! comma-separated entry (`rtc.stun_servers`); a list of mappings (`rtc.turn_servers`) one entry
//! without a value, enough to say it is not carried over. What each key means is `plan`'s job.
//!
//! The YAML parser is serde-saphyr (docs/ARCHITECTURE.md says why); its errors are shown without
//! the source snippet it can attach, because the snippet could quote a secret.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::{Entry, ImportError, Parsed};

/// The entries of a YAML document whose top level is a mapping (an empty document has none).
pub fn parse(file: &str, text: &str) -> Result<Parsed, ImportError> {
    let unreadable = |message: String| ImportError::Unreadable {
        file: file.to_owned(),
        message,
    };
    let options = serde_saphyr::options! {
        // `.inf` and `1e999` stay text instead of failing the whole file.
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
        // `0123` is text as written, not the number 123.
        leading_zero_numbers_as_strings: true,
    };
    let root: Option<Spanned<Node>> = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| unreadable(format!("not valid YAML: {}", e.without_snippet())))?;
    let mut parsed = Parsed::new(file);
    match root.map(|root| root.value) {
        None | Some(Node::Null) => {}
        Some(Node::Map(map)) => flatten("", map, &mut parsed),
        Some(_) => {
            return Err(unreadable(
                "the top level is not a mapping of settings (is this a livekit.yaml?)".into(),
            ));
        }
    }
    Ok(parsed)
}

fn flatten(prefix: &str, map: Vec<(Spanned<Scalar>, Spanned<Node>)>, parsed: &mut Parsed) {
    for (key, value) in map {
        let path = format!("{prefix}{}", key.value.text);
        let line = key.referenced.line();
        let out = &mut parsed.entries;
        match value.value {
            Node::Map(inner) if !inner.is_empty() => {
                parsed.sections.push((path.clone(), line));
                flatten(&format!("{path}."), inner, parsed)
            }
            Node::Map(_) | Node::Null => out.push(Entry::text(&path, "", line)),
            Node::Scalar(scalar) => out.push(Entry {
                key: path,
                value: scalar.text,
                line,
                is_text: scalar.is_text,
            }),
            Node::List(items) => {
                let texts: Option<Vec<String>> = items
                    .into_iter()
                    .map(|item| match item.value {
                        Node::Scalar(scalar) => Some(scalar.text),
                        _ => None,
                    })
                    .collect();
                let value = texts.map(|t| t.join(",")).unwrap_or_default();
                out.push(Entry::text(&path, &value, line));
            }
        }
    }
}

/// Just enough YAML structure to flatten: every node with its location (through `Spanned`).
enum Node {
    Map(Vec<(Spanned<Scalar>, Spanned<Node>)>),
    List(Vec<Spanned<Node>>),
    Scalar(Scalar),
    Null,
}

/// A scalar's text, and whether YAML read it as a string (not a number or boolean).
struct Scalar {
    text: String,
    is_text: bool,
}

impl Scalar {
    fn other(text: String) -> Node {
        Node::Scalar(Scalar {
            text,
            is_text: false,
        })
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Node::deserialize(deserializer)? {
            Node::Scalar(scalar) => Ok(scalar),
            _ => Err(de::Error::custom(
                "a key must be a plain name, not a list or mapping",
            )),
        }
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Scalar::other(v.to_string()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Scalar::other(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Scalar::other(v.to_string()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Scalar::other(v.to_string()))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
        Ok(Scalar::other(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Scalar::other(v.to_string()))
    }

    fn visit_char<E>(self, v: char) -> Result<Node, E> {
        Ok(Scalar::other(v.to_string()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Scalar {
            text: v.to_owned(),
            is_text: true,
        }))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        match std::str::from_utf8(v) {
            Ok(text) => self.visit_str(text),
            Err(_) => Err(E::custom("binary values are not supported")),
        }
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Map(entries))
    }
}
