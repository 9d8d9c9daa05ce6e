//! The record of what inject changed in a pod template, so that `--remove` can put back
//! exactly what was there. Every change goes through a `Journal`: it notes a field's former
//! value (or its absence) before setting it, and the name of each item it appends to a list.
//! The record travels with the pod as the `lameduck.io/injected` annotation; undoing replays
//! it backwards.
//!
//! Places are JSON pointers into the template (`/spec/containers/0/readinessProbe`). Inject
//! only appends to lists, so the indices of items that were there before never move.

use serde_json::{Map, Value, json};

/// A change that could not be made or undone: the template is not shaped as the record says.
#[derive(Debug)]
pub struct Mismatch(pub String);

/// What inject changed, in order.
#[derive(Debug, Default)]
pub struct Journal {
    entries: Vec<Value>,
}

impl Journal {
    /// The record, as the annotation stores it.
    pub fn to_value(&self) -> Value {
        Value::Array(self.entries.clone())
    }

    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets the field at `pointer`, creating the mappings above it; notes what it replaces.
    pub fn set(&mut self, root: &mut Value, pointer: &str, value: Value) -> Result<(), Mismatch> {
        let (parent, key) = split(pointer)?;
        self.ensure_map(root, parent)?;
        let map = object_at(root, parent)?;
        let entry = match map.get(&key) {
            Some(was) if *was == value => return Ok(()),
            Some(was) => json!({ "set": pointer, "was": was }),
            None => json!({ "set": pointer }),
        };
        map.insert(key, value);
        self.entries.push(entry);
        Ok(())
    }

    /// Appends `item` (a mapping with a `name`) to the list at `pointer`, creating the list.
    pub fn append(&mut self, root: &mut Value, pointer: &str, item: Value) -> Result<(), Mismatch> {
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| Mismatch(format!("an item for {pointer} has no name")))?
            .to_owned();
        if !root.pointer(pointer).is_some_and(Value::is_array) {
            self.set(root, pointer, Value::Array(Vec::new()))?;
        }
        if let Some(Value::Array(items)) = root.pointer_mut(pointer) {
            items.push(item);
        }
        self.entries
            .push(json!({ "append": pointer, "name": name }));
        Ok(())
    }

    /// Makes the node at `pointer` a mapping: creates it (and its parents) when absent, and
    /// replaces anything else there, noting what it was.
    fn ensure_map(&mut self, root: &mut Value, pointer: &str) -> Result<(), Mismatch> {
        if pointer.is_empty() {
            return if root.is_object() {
                Ok(())
            } else {
                Err(Mismatch("the pod template is not a mapping".into()))
            };
        }
        match root.pointer(pointer) {
            Some(Value::Object(_)) => Ok(()),
            // A list item is never created, only modified: it must already be a mapping.
            _ if split(pointer)?.1.parse::<usize>().is_ok() => {
                Err(Mismatch(format!("{pointer} is not a mapping")))
            }
            _ => self.set(root, pointer, Value::Object(Map::new())),
        }
    }
}

/// Undoes a record: the appended items go, and every field gets back its former value or
/// goes when it was absent, newest change first.
pub fn undo(root: &mut Value, record: &Value) -> Result<(), Mismatch> {
    let entries = record
        .as_array()
        .ok_or_else(|| Mismatch("the record is not a list".into()))?;
    for entry in entries.iter().rev() {
        if let Some(pointer) = entry.get("append").and_then(Value::as_str) {
            let name = entry.get("name").and_then(Value::as_str);
            let Some(Value::Array(items)) = root.pointer_mut(pointer) else {
                return Err(Mismatch(format!("{pointer} is no longer a list")));
            };
            let at = items
                .iter()
                .rposition(|item| item.get("name").and_then(Value::as_str) == name)
                .ok_or_else(|| {
                    Mismatch(format!("{pointer} no longer holds {}", name.unwrap_or("?")))
                })?;
            items.remove(at);
        } else if let Some(pointer) = entry.get("set").and_then(Value::as_str) {
            let (parent, key) = split(pointer)?;
            let map = object_at(root, parent)?;
            match entry.get("was") {
                Some(was) => map.insert(key, was.clone()),
                None => map.shift_remove(&key),
            };
        } else {
            return Err(Mismatch(format!(
                "an entry of the record is unknown: {entry}"
            )));
        }
    }
    Ok(())
}

/// A pointer's parent and last key, unescaped.
fn split(pointer: &str) -> Result<(&str, String), Mismatch> {
    let at = pointer
        .rfind('/')
        .ok_or_else(|| Mismatch(format!("'{pointer}' is not a JSON pointer")))?;
    let key = pointer[at + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&pointer[..at], key))
}

/// The mapping at `pointer`.
fn object_at<'v>(
    root: &'v mut Value,
    pointer: &str,
) -> Result<&'v mut Map<String, Value>, Mismatch> {
    root.pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            Mismatch(format!(
                "{} is not a mapping",
                if pointer.is_empty() {
                    "the template"
                } else {
                    pointer
                }
            ))
        })
}

/// A mapping key as a pointer token.
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_restores_values_absences_and_lists() {
        let original = json!({"spec": {"a": 1, "list": [{"name": "x"}]}});
        let mut root = original.clone();
        let mut journal = Journal::default();
        journal.set(&mut root, "/spec/a", json!(2)).unwrap();
        journal.set(&mut root, "/spec/new/deep", json!(3)).unwrap();
        journal
            .append(&mut root, "/spec/list", json!({"name": "y"}))
            .unwrap();
        journal
            .append(&mut root, "/spec/other", json!({"name": "z"}))
            .unwrap();
        journal
            .set(&mut root, "/metadata/annotations/k~1v", json!("s"))
            .unwrap();
        assert_eq!(root["spec"]["new"]["deep"], json!(3));
        assert_eq!(root["metadata"]["annotations"]["k/v"], json!("s"));
        undo(&mut root, &journal.to_value()).unwrap();
        assert_eq!(root, original);
    }

    #[test]
    fn a_field_of_the_wrong_shape_is_replaced_and_restored() {
        let original = json!({"spec": {"lifecycle": "junk"}});
        let mut root = original.clone();
        let mut journal = Journal::default();
        journal
            .set(&mut root, "/spec/lifecycle/preStop", json!({}))
            .unwrap();
        undo(&mut root, &journal.to_value()).unwrap();
        assert_eq!(root, original);
    }
}
