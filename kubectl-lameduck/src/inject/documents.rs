//! An input stream as inject reads and writes it: YAML documents (split at their `---`
//! lines, each parsed on its own with serde_yaml_ng) or JSON values, each with its original
//! text, so that a document inject does not change is written back byte for byte. A changed
//! document is written by the same crate, in the input's format.

use serde_json::Value;

/// The input's format, which is the output's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML, one or more documents.
    Yaml,
    /// One or more JSON values.
    Json,
}

/// One document of a stream.
#[derive(Debug)]
pub struct Document {
    /// What comes before the document's text: its `---` line, or nothing for the first.
    separator: String,
    /// The document's text as read.
    text: String,
    /// The line (1-based) its text starts on.
    pub line: usize,
    /// Its content; `None` for a document of only comments or blanks.
    pub value: Option<Value>,
    /// Its new content, when inject changed it.
    pub changed: Option<Value>,
    /// Documents inject adds after it (PodDisruptionBudgets).
    pub added: Vec<Value>,
    /// Whether `--remove` takes it out (a budget inject added).
    pub dropped: bool,
}

impl Document {
    /// The content as it will be written.
    pub fn current(&self) -> Option<&Value> {
        self.changed.as_ref().or(self.value.as_ref())
    }
}

/// A parsed input.
#[derive(Debug)]
pub struct Stream {
    /// YAML or JSON.
    pub format: Format,
    /// Its documents, in order.
    pub documents: Vec<Document>,
    /// Text after the last JSON value (whitespace).
    trailing: String,
}

/// Why an input cannot be read: the line and the reason.
#[derive(Debug)]
pub struct Unreadable {
    /// The line (1-based).
    pub line: usize,
    /// What is wrong, in one line.
    pub reason: String,
}

/// Reads a stream: JSON when its first character that is not blank is `{` or `[`.
pub fn read(text: &str) -> Result<Stream, Unreadable> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with(['{', '[']) {
        read_json(text)
    } else {
        read_yaml(text)
    }
}

fn read_json(text: &str) -> Result<Stream, Unreadable> {
    let mut documents = Vec::new();
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut start = 0;
    while let Some(value) = values.next() {
        let value = value.map_err(|err| Unreadable {
            line: err.line().max(1),
            reason: format!("invalid JSON: {}", one_line(&err.to_string())),
        })?;
        let end = values.byte_offset();
        let chunk = &text[start..end];
        documents.push(Document {
            separator: String::new(),
            text: chunk.to_owned(),
            line: 1 + text[..start].matches('\n').count() + leading_lines(chunk),
            value: Some(value),
            changed: None,
            added: Vec::new(),
            dropped: false,
        });
        start = end;
    }
    Ok(Stream {
        format: Format::Json,
        documents,
        trailing: text[start..].to_owned(),
    })
}

/// Lines before the first character that is not blank.
fn leading_lines(chunk: &str) -> usize {
    let blank = chunk.len() - chunk.trim_start().len();
    chunk[..blank].matches('\n').count()
}

fn read_yaml(text: &str) -> Result<Stream, Unreadable> {
    // A `---` at the start of a line always starts a document: YAML forbids it inside
    // scalars, so splitting there needs no parser.
    let mut chunks: Vec<(String, String, usize)> = vec![(String::new(), String::new(), 1)];
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let is_marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']));
        if is_marker {
            let rest = &line[3..];
            let (separator, body) = if rest.trim().is_empty() {
                (line.to_owned(), String::new())
            } else {
                ("---".to_owned(), rest.to_owned())
            };
            chunks.push((separator, body, index + 1));
        } else if let Some(last) = chunks.last_mut() {
            last.1.push_str(line);
        }
    }
    let mut documents = Vec::new();
    for (separator, body, marker_line) in chunks {
        // The body starts on the marker's line when text follows `---`, else after it.
        let line = if separator.is_empty() || separator == "---" {
            marker_line
        } else {
            marker_line + 1
        };
        let value = if has_content(&body) {
            let value: Value = serde_yaml_ng::from_str(&body).map_err(|err| Unreadable {
                line: line + err.location().map_or(0, |l| l.line().saturating_sub(1)),
                reason: format!(
                    "invalid YAML: {}",
                    one_line(&without_position(&err.to_string()))
                ),
            })?;
            Some(value).filter(|v| !v.is_null())
        } else {
            None
        };
        if separator.is_empty() && body.is_empty() {
            continue;
        }
        documents.push(Document {
            separator,
            text: body,
            line,
            value,
            changed: None,
            added: Vec::new(),
            dropped: false,
        });
    }
    Ok(Stream {
        format: Format::Yaml,
        documents,
        trailing: String::new(),
    })
}

/// Whether a YAML text holds more than comments, blanks and document end markers.
fn has_content(body: &str) -> bool {
    body.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#') && line != "..."
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// serde_yaml_ng's message without its own `at line N column M`, which counts from the
/// document's start, not the file's.
fn without_position(text: &str) -> String {
    let mut out = text.to_owned();
    while let Some(at) = out.find(" at line ") {
        let rest = &out[at + " at line ".len()..];
        let end = rest
            .find(',')
            .map_or(out.len(), |i| at + " at line ".len() + i);
        out.replace_range(at..end, "");
    }
    out
}

/// Whether YAML 1.1, which kubectl's YAML reader follows, reads this plain scalar as
/// something else than the string it is (`yes`, `on`, `1_000`, `0b1`, `.inf`); YAML 1.2 and
/// serde_yaml_ng read it as a string, so it leaves it unquoted.
fn ambiguous_in_yaml_1_1(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let unsigned = text.trim_start_matches(['-', '+']);
    WORDS.contains(&text)
        || (unsigned.contains('_')
            && unsigned.starts_with(|c: char| c.is_ascii_digit())
            && unsigned
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        || unsigned.strip_prefix("0b").is_some_and(|bits| {
            !bits.is_empty() && bits.chars().all(|c| matches!(c, '0' | '1' | '_'))
        })
        || matches!(
            unsigned,
            ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN"
        )
}

/// Whether any string (or key) in the value is ambiguous in YAML 1.1.
fn has_ambiguous_string(value: &Value) -> bool {
    match value {
        Value::String(text) => ambiguous_in_yaml_1_1(text),
        Value::Array(items) => items.iter().any(has_ambiguous_string),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| ambiguous_in_yaml_1_1(key) || has_ambiguous_string(value)),
        _ => false,
    }
}

/// Writes one value in a format. A YAML document holding a string that YAML 1.1 would read
/// as a boolean or number is written as JSON (which is YAML), where every string is quoted.
pub fn emit(format: Format, value: &Value) -> Result<String, String> {
    match format {
        Format::Yaml if has_ambiguous_string(value) => emit(Format::Json, value),
        Format::Yaml => serde_yaml_ng::to_string(value).map_err(|err| err.to_string()),
        Format::Json => serde_json::to_string_pretty(value)
            .map(|text| text + "\n")
            .map_err(|err| err.to_string()),
    }
}

/// Which text of the output: a document's own `(index, None)`, or the N-th it added.
pub type Written = (usize, Option<usize>);

impl Stream {
    /// The text of each document as it will be written (unchanged ones as read), then of
    /// each added one, in output order; `(document index, added index)` says which is which.
    pub fn texts(&self) -> Result<Vec<(Written, String)>, String> {
        let mut texts = Vec::new();
        for (index, document) in self.documents.iter().enumerate() {
            if document.dropped {
                continue;
            }
            let text = match &document.changed {
                Some(value) => emit(self.format, value)?,
                None => document.text.clone(),
            };
            texts.push(((index, None), text));
            for (added, value) in document.added.iter().enumerate() {
                texts.push(((index, Some(added)), emit(self.format, value)?));
            }
        }
        Ok(texts)
    }

    /// The whole output.
    pub fn write(&self) -> Result<String, String> {
        let mut out = String::new();
        let texts = self.texts()?;
        for ((index, added), text) in texts {
            let document = &self.documents[index];
            let separator = match (self.format, added, &document.changed) {
                (Format::Json, None, Some(_)) => leading_blank(&document.text).to_owned(),
                (Format::Json, None, None) => String::new(),
                (Format::Json, Some(_), _) => String::new(),
                (Format::Yaml, None, None) => document.separator.clone(),
                (Format::Yaml, _, _) if out.is_empty() => String::new(),
                (Format::Yaml, _, _) => "---\n".to_owned(),
            };
            let piece = separator + &text;
            if !out.is_empty() && !out.ends_with('\n') && !piece.starts_with(char::is_whitespace) {
                out.push('\n');
            }
            out.push_str(&piece);
        }
        out.push_str(&self.trailing);
        Ok(out)
    }
}

fn leading_blank(text: &str) -> &str {
    &text[..text.len() - text.trim_start().len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_yaml_comes_back_byte_for_byte() {
        let text = "# a comment\na: 1 # kept\n---\n--- \nb: [1,  2]\n...\n---\n# only a comment\n";
        let stream = read(text).unwrap();
        assert_eq!(stream.format, Format::Yaml);
        assert_eq!(stream.write().unwrap(), text);
        let values: Vec<_> = stream.documents.iter().map(|d| d.value.is_some()).collect();
        assert_eq!(values, [true, false, true, false]);
        assert_eq!(stream.documents[2].line, 5);
    }

    #[test]
    fn unchanged_json_comes_back_byte_for_byte() {
        let text = "\n{\"a\":   1}\n  {\"b\": 2}\n";
        let stream = read(text).unwrap();
        assert_eq!(stream.format, Format::Json);
        assert_eq!(stream.documents.len(), 2);
        assert_eq!(stream.documents[1].line, 3);
        assert_eq!(stream.write().unwrap(), text);
    }

    #[test]
    fn errors_carry_the_line_in_the_whole_stream() {
        let err = read("a: 1\n---\nb: 2\nc: [\n").unwrap_err();
        assert!(err.line >= 4, "{err:?}");
        let err = read("{\"a\": 1,\n\"b\": }").unwrap_err();
        assert_eq!(err.line, 2, "{err:?}");
    }

    #[test]
    fn strings_yaml_1_1_would_misread_stay_strings() {
        let value = serde_json::json!({"env": [{"name": "DEBUG", "value": "on"}], "n": "1_000"});
        let text = emit(Format::Yaml, &value).unwrap();
        assert!(
            text.contains("\"on\"") && text.contains("\"1_000\""),
            "{text}"
        );
        let plain = emit(Format::Yaml, &serde_json::json!({"value": "online"})).unwrap();
        assert_eq!(plain, "value: online\n");
    }

    #[test]
    fn a_changed_document_is_written_in_its_format_between_the_others() {
        let mut stream = read("a: 1\n---\nb: 2\n---\nc: 3\n").unwrap();
        stream.documents[1].changed = Some(serde_json::json!({"b": 3}));
        stream.documents[1].added.push(serde_json::json!({"d": 4}));
        assert_eq!(
            stream.write().unwrap(),
            "a: 1\n---\nb: 3\n---\nd: 4\n---\nc: 3\n"
        );
    }
}
