//! The init's modules form no import circle: each module's `crate::` paths (in `use` lines and
//! inline) point only downward, so every module can be read from its dependencies up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module of `src/` (the crate root as `lib`) and the modules it names with `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|e| e != "rs") || name == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests may reach anywhere; only the module's own code counts.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let mut named = BTreeSet::new();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let target: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '{')
                .collect();
            if target.starts_with('{') {
                // `use crate::{a, b::C}`: every name of the group.
                let end = rest.find('}').unwrap_or(rest.len());
                for item in rest[..end].trim_start_matches('{').split(',') {
                    let module = item.trim().split("::").next().unwrap_or_default();
                    named.insert(module.to_owned());
                }
            } else {
                named.insert(target);
            }
        }
        named.remove(&name);
        graph.insert(name, named);
    }
    // A name that is no module is an item of the crate root.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for named in graph.values_mut() {
        *named = named
            .iter()
            .map(|n| {
                if modules.contains(n) {
                    n.clone()
                } else {
                    "lib".to_owned()
                }
            })
            .collect();
    }
    for (name, named) in &mut graph {
        named.remove(name);
    }
    graph
}

/// A circle through `from`, if any, found depth first.
fn circle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    let here = path.last()?.clone();
    for next in graph.get(&here).into_iter().flatten() {
        if let Some(start) = path.iter().position(|p| p == next) {
            let mut found = path[start..].to_vec();
            found.push(next.clone());
            return Some(found);
        }
        if done.contains(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(found) = circle(graph, path, done) {
            return Some(found);
        }
        path.pop();
    }
    done.insert(here);
    None
}

#[test]
fn no_module_of_the_init_imports_one_that_imports_it_back() {
    let graph = imports();
    assert!(graph.len() > 10, "only {} modules found", graph.len());
    assert!(graph["readiness"].contains("status"), "{graph:?}");
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if let Some(found) = circle(&graph, &mut path, &mut done) {
            panic!("import circle: {}", found.join(" -> "));
        }
    }
}

#[test]
fn settings_duration_and_signals_are_leaves() {
    let graph = imports();
    for leaf in ["duration", "signals", "exit"] {
        assert!(graph[leaf].is_empty(), "{leaf} imports {:?}", graph[leaf]);
    }
    let settings: Vec<&String> = graph["settings"]
        .iter()
        .filter(|m| !matches!(m.as_str(), "duration" | "signals"))
        .collect();
    assert!(settings.is_empty(), "settings imports {settings:?}");
}
