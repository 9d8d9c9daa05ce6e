//! YAML text to an untyped tree: every document of a stream becomes a `Node` tree, with the
//! line the document starts on, built from saphyr-parser's events without recursion and
//! within fixed limits, so no input can exhaust the stack or the memory. A JSON object's
//! entries already in memory become the same tree the object's JSON text would, without
//! writing and re-reading it.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Collections nested deeper than this are refused: no manifest needs it, and dropping a
/// deeper tree would recurse too far.
const MAX_DEPTH: usize = 128;
/// Nodes per stream, counting every alias expansion: stops alias bombs ("billion laughs").
const MAX_NODES: usize = 1_000_000;

/// A YAML node.
#[derive(Clone, Debug)]
pub struct Node {
    /// What it holds.
    pub value: Value,
}

/// The untyped content of a node. Scalars stay text; the rules decide how to read them.
#[derive(Clone, Debug)]
pub enum Value {
    /// `~`, `null` or nothing at all.
    Null,
    /// Any scalar, with whether it was written plain (unquoted), as YAML types only those.
    Scalar {
        /// The scalar's text.
        text: String,
        /// Written without quotes or block indicators.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping in source order; complex (non-scalar) keys are kept as an empty key.
    Map(Vec<(String, Node)>),
}

/// One document of a stream.
#[derive(Debug)]
pub struct Document {
    /// The line (1-based) the document starts on.
    pub line: usize,
    /// Its root node.
    pub root: Node,
}

/// Why a text is not YAML that lameduck can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// The line (1-based) of the problem.
    pub line: usize,
    /// What is wrong, in one line.
    pub reason: String,
}

impl Node {
    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value at a chain of mapping keys.
    pub fn at(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |node, key| node.get(key))
    }

    /// The text of a scalar.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// An integer written plain (`8099`, not `"8099"`).
    pub fn int(&self) -> Option<i64> {
        match &self.value {
            Value::Scalar { text, plain: true } => text.parse().ok(),
            _ => None,
        }
    }

    /// `true` written plain, in any of the YAML 1.2 spellings.
    pub fn is_true(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if matches!(text.as_str(), "true" | "True" | "TRUE"))
    }

    /// The items of a sequence; nothing for any other node.
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// The entries of a mapping; nothing for any other node.
    pub fn entries(&self) -> &[(String, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// Whether the node is a mapping.
    pub fn is_map(&self) -> bool {
        matches!(self.value, Value::Map(_))
    }

    /// How many nodes the tree holds, itself included.
    fn size(&self) -> usize {
        1 + match &self.value {
            Value::Null | Value::Scalar { .. } => 0,
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(entries) => entries.iter().map(|(_, v)| v.size()).sum(),
        }
    }
}

/// A collection being read, with its anchor to register once it is complete.
enum Open {
    Seq {
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        entries: Vec<(String, Node)>,
        key: Option<String>,
    },
}

/// Reads every document of `text`. Empty documents are dropped.
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut documents = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    // Each anchored node with its size, so an alias is measured before it is copied.
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut document_line = 1;
    let mut nodes = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|err| SyntaxError {
            line: err.marker().line(),
            reason: err.info().to_owned(),
        })?;
        let line = line_of(&span);
        let complete = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                document_line = line;
                anchors.clear();
                None
            }
            Event::Scalar(text, style, anchor, _) => {
                let value = if style == ScalarStyle::Plain && is_null(&text) {
                    Value::Null
                } else {
                    Value::Scalar {
                        plain: style == ScalarStyle::Plain,
                        text: text.into_owned(),
                    }
                };
                Some((anchor, Node { value }))
            }
            Event::Alias(id) => {
                let (node, size) = anchors.get(&id).ok_or_else(|| SyntaxError {
                    line,
                    reason: "alias to an unknown anchor".into(),
                })?;
                // The alias itself is counted below with the other completed nodes.
                nodes = nodes.saturating_add(size.saturating_sub(1));
                if nodes > MAX_NODES {
                    return Err(too_many_nodes(line));
                }
                Some((0, node.clone()))
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        line,
                        reason: format!("collections nested deeper than {MAX_DEPTH} levels"),
                    });
                }
                open.push(if matches!(event, Event::SequenceStart(..)) {
                    Open::Seq {
                        anchor,
                        items: Vec::new(),
                    }
                } else {
                    Open::Map {
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match open.pop() {
                Some(Open::Seq { anchor, items }) => Some((
                    anchor,
                    Node {
                        value: Value::Seq(items),
                    },
                )),
                Some(Open::Map {
                    anchor, entries, ..
                }) => Some((
                    anchor,
                    Node {
                        value: Value::Map(entries),
                    },
                )),
                None => None,
            },
        };
        let Some((anchor, node)) = complete else {
            continue;
        };
        nodes = nodes.saturating_add(1);
        if anchor != 0 {
            // The copy kept for aliases counts too, or nested anchors could multiply memory.
            let size = node.size();
            nodes = nodes.saturating_add(size);
            anchors.insert(anchor, (node.clone(), size));
        }
        if nodes > MAX_NODES {
            return Err(too_many_nodes(line));
        }
        match open.last_mut() {
            None => {
                if !matches!(node.value, Value::Null) {
                    documents.push(Document {
                        line: document_line,
                        root: node,
                    });
                }
            }
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node.text().unwrap_or_default().to_owned()),
                Some(name) => entries.push((name, node)),
            },
        }
    }
    Ok(documents)
}

/// The document `parse` reads from the JSON text (JSON is YAML) of an object with these
/// entries, built from the values where they are, without assembling that object: strings are
/// quoted scalars, numbers and booleans plain ones, `null` is null. The same limits apply
/// (depth and node count, at line 1).
pub fn from_json_entries(entries: &[(&str, &serde_json::Value)]) -> Result<Document, SyntaxError> {
    let mut nodes = 1usize;
    let entries = entries
        .iter()
        .map(|&(key, value)| Ok((key.to_owned(), node_of(value, 1, &mut nodes)?)))
        .collect::<Result<_, _>>()?;
    Ok(Document {
        line: 1,
        root: Node {
            value: Value::Map(entries),
        },
    })
}

/// One JSON value as a node, `depth` collections deep. Recursion is bounded by [`MAX_DEPTH`].
fn node_of(json: &serde_json::Value, depth: usize, nodes: &mut usize) -> Result<Node, SyntaxError> {
    use serde_json::Value as Json;
    *nodes = nodes.saturating_add(1);
    if *nodes > MAX_NODES {
        return Err(too_many_nodes(1));
    }
    let is_collection = matches!(json, Json::Array(_) | Json::Object(_));
    if is_collection && depth >= MAX_DEPTH {
        return Err(SyntaxError {
            line: 1,
            reason: format!("collections nested deeper than {MAX_DEPTH} levels"),
        });
    }
    let plain = |text: String| Value::Scalar { text, plain: true };
    let value = match json {
        Json::Null => Value::Null,
        Json::Bool(b) => plain(b.to_string()),
        Json::Number(n) => plain(n.to_string()),
        Json::String(text) => Value::Scalar {
            text: text.clone(),
            plain: false,
        },
        Json::Array(items) => Value::Seq(
            items
                .iter()
                .map(|item| node_of(item, depth + 1, nodes))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(entries) => Value::Map(
            entries
                .iter()
                .map(|(key, item)| Ok((key.clone(), node_of(item, depth + 1, nodes)?)))
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Node { value })
}

fn too_many_nodes(line: usize) -> SyntaxError {
    SyntaxError {
        line,
        reason: format!("more than {MAX_NODES} nodes once aliases are expanded"),
    }
}

/// The line a span starts on.
fn line_of(span: &Span) -> usize {
    span.start.line()
}

/// The plain scalars YAML 1.2 reads as null.
fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_documents_with_their_lines_and_types() {
        let docs = parse("a: 1\n---\nb:\n  - \"2\"\n  - ~\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].root.get("a").unwrap().int(), Some(1));
        assert_eq!(docs[1].line, 2);
        let b = docs[1].root.get("b").unwrap();
        assert_eq!(b.items()[0].int(), None, "a quoted number is a string");
        assert_eq!(b.items()[0].text(), Some("2"));
        assert!(matches!(b.items()[1].value, Value::Null));
    }

    /// The tree of a JSON value, debug-printed, for comparing trees.
    fn shown(documents: &[Document]) -> Vec<(usize, String)> {
        documents
            .iter()
            .map(|d| (d.line, format!("{:?}", d.root)))
            .collect()
    }

    #[test]
    fn a_json_value_is_the_tree_its_json_text_parses_to() {
        let value = serde_json::json!({
            "s": "text", "empty": "", "quoted-number": "8099", "quoted-null": "null",
            "n": 8099, "f": 1.5, "neg": -3, "t": true, "no": false, "nil": null,
            "esc": "tab\tquote\"nl\nuni\u{e9}\u{1}", "list": [1, "a", [], {}], "nested": {"k": [null]}
        });
        let entries: Vec<(&str, &serde_json::Value)> = value
            .as_object()
            .unwrap()
            .iter()
            .map(|(key, value)| (key.as_str(), value))
            .collect();
        assert_eq!(
            shown(&[from_json_entries(&entries).unwrap()]),
            shown(&parse(&value.to_string()).unwrap())
        );
    }

    #[test]
    fn a_json_value_nested_too_deep_is_refused_as_its_text_is() {
        let mut value = serde_json::json!(1);
        for _ in 0..=MAX_DEPTH {
            value = serde_json::json!([value]);
        }
        let err = from_json_entries(&[("k", &value)]).unwrap_err();
        assert!(err.reason.contains("nested"), "{err:?}");
        let text = serde_json::json!({ "k": value }).to_string();
        assert_eq!(err, parse(&text).unwrap_err());
    }

    #[test]
    fn aliases_expand_to_their_anchor() {
        let docs = parse("a: &x {k: v}\nb: *x\n").unwrap();
        assert_eq!(docs[0].root.at(&["b", "k"]).unwrap().text(), Some("v"));
    }

    #[test]
    fn errors_carry_the_line() {
        let err = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
        assert!(!err.reason.is_empty());
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let err = parse(&"- ".repeat(100_000)).unwrap_err();
        assert!(err.reason.contains("nested"), "{err:?}");
        let err = parse(&"[".repeat(100_000)).unwrap_err();
        assert!(!err.reason.is_empty());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.reason.contains("aliases"), "{err:?}");
    }
}
