//! The import rule of the layers, checked: each folder of `src/` names only itself, the layers
//! below it, and `config` (a leaf), so the imports go one way (`api` → `rooms` → `access` →
//! `storage`/`fs` → `http`, see ARCHITECTURE.md) and nothing but the router in `lib.rs` names
//! `api`. Imports inside the crate are written `crate::layer::…` or `super::…` (never
//! `super::super::…` nor `crate::{…}`), which is what makes reading them here exact. Only
//! `storage` uses SQLite (`rusqlite`): no other module writes SQL.

use std::path::Path;

/// Each layer and what it may name besides itself and `config`.
const LAYERS: [(&str, &[&str]); 6] = [
    ("http", &[]),
    ("storage", &["http"]),
    ("fs", &["storage", "http"]),
    ("access", &["storage", "fs", "http"]),
    ("rooms", &["access", "storage", "fs", "http", "AppState"]),
    (
        "api",
        &["rooms", "access", "storage", "fs", "http", "AppState"],
    ),
];

/// The `crate::NAME` names a file's code uses (comments left out), and lines that escape the
/// rule's reading.
fn crate_names(text: &str) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut unreadable = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        if code.contains("super::super") || code.contains("crate::{") {
            unreadable.push(line.to_string());
        }
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    (names, unreadable)
}

fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn each_layer_names_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for (layer, below) in LAYERS {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "no files in src/{layer}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                layer == "storage" || !text.contains("rusqlite"),
                "{}: only storage writes SQL",
                file.display()
            );
            let (names, unreadable) = crate_names(&text);
            assert!(
                unreadable.is_empty(),
                "{}: write `crate::layer::…` or `super::…` paths: {unreadable:?}",
                file.display()
            );
            for name in names {
                assert!(
                    name == layer || name == "config" || below.contains(&name.as_str()),
                    "{} (in {layer}) names crate::{name}: {layer} may name only {below:?}",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} imports read: is the reading broken?"
    );
    for root_file in ["config.rs", "main.rs"] {
        let text = std::fs::read_to_string(src.join(root_file)).unwrap();
        let (names, _) = crate_names(&text);
        assert!(names.is_empty(), "{root_file} names {names:?}");
        assert!(
            !text.contains("rusqlite"),
            "{root_file}: only storage writes SQL"
        );
    }
}

#[test]
fn the_reading_catches_what_it_must() {
    let (names, unreadable) = crate_names(
        "use crate::api::x;\n// crate::rooms in a comment\nlet a = crate::AppState::new();\n",
    );
    assert_eq!(names, ["api", "AppState"]);
    assert!(unreadable.is_empty());
    let (_, unreadable) = crate_names("use crate::{api, rooms};\nuse super::super::x;\n");
    assert_eq!(unreadable.len(), 2);
}
