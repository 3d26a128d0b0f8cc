//! The arrows between `shared`'s layers point one way: a module uses the layers below its own
//! and nothing above or beside it (the table in `src/lib.rs`). One crate cannot make the
//! compiler refuse a wrong arrow, so this test reads every source file and does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of `shared` and its layer, as `src/lib.rs` documents them.
const LAYERS: [(&str, u8); 11] = [
    ("error", 0),
    ("stamp", 0),
    ("knob", 0),
    ("duration", 0),
    ("os", 1),
    ("process", 2),
    ("log", 3),
    ("docker", 3),
    ("emulator", 3),
    ("wait", 4),
    ("cli", 5),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules named as `crate::NAME` in `text`, outside comments.
fn uses(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|name| name.trim_end_matches(".rs").to_string())
            .expect("a module name");
        if top == "lib" {
            continue;
        }
        let own = layer(&top).unwrap_or_else(|| {
            panic!(
                "{}: module `{top}` has no layer in LAYERS",
                relative.display()
            )
        });
        let text = std::fs::read_to_string(file).expect("read source");
        for used in uses(&text) {
            if used == top {
                continue;
            }
            match layer(&used) {
                Some(l) if l < own => {}
                _ => wrong
                    .entry(relative.display().to_string())
                    .or_default()
                    .push(used),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "modules using a layer that is not below their own: {wrong:#?}"
    );
}

#[test]
fn the_layer_table_names_every_module() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("read lib.rs");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let mut listed: Vec<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    listed.sort_unstable();
    let mut declared_sorted = declared.clone();
    declared_sorted.sort_unstable();
    assert_eq!(declared_sorted, listed);
}
