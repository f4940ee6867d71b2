//! A test that no two public types of the crate share a name (issue #54's "one type per
//! name"), so a reader who meets `Settings` or `Verdict` in a signature knows which one
//! it is without looking at the imports, and a second one cannot come back unseen.
//!
//! It reads the source as [`crate::import_cycles`] does (comments and tests left out)
//! and lists every `pub struct`, `pub enum`, `pub type` and `pub trait`. The simulator
//! (`src/sim`) is left out: it is written from the platform's contract apart from the
//! rest, and may name its things as the platform does.

use std::collections::BTreeMap;
use std::path::Path;

use crate::import_cycles::modules;

/// The name of the public type a line declares, if it declares one.
fn declared(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("pub ")?;
    let rest = ["struct ", "enum ", "type ", "trait "]
        .iter()
        .find_map(|kind| rest.strip_prefix(kind))?;
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|name| !name.is_empty())
}

#[test]
fn the_declaration_of_a_public_type_is_read_and_nothing_else() {
    assert_eq!(declared("pub struct Settings {"), Some("Settings"));
    assert_eq!(declared("    pub enum Verdict {"), Some("Verdict"));
    assert_eq!(declared("pub type Routes = Vec<u8>;"), Some("Routes"));
    assert_eq!(declared("pub trait Sink<T>: Send {"), Some("Sink"));
    assert_eq!(declared("pub struct Marker;"), Some("Marker"));
    for other in [
        "pub(crate) struct Kind {",
        "struct Inner {",
        "pub fn settings() -> Settings {",
        "pub const TYPE: &str = \"x\";",
        "pub mod types;",
    ] {
        assert_eq!(declared(other), None, "{other}");
    }
}

#[test]
fn no_two_public_types_share_a_name() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let modules = modules(&src);
    for (path, module) in &modules {
        if path.first().is_some_and(|top| top == "sim") {
            continue;
        }
        for name in module.text.lines().filter_map(declared) {
            by_name
                .entry(name)
                .or_default()
                .push(format!("crate::{}", path.join("::")));
        }
    }
    assert!(by_name.len() > 100, "read {} public types", by_name.len());
    let shared: Vec<String> = by_name
        .iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|(name, places)| format!("{name} ({})", places.join(", ")))
        .collect();
    assert!(
        shared.is_empty(),
        "public types sharing a name: {}",
        shared.join("; ")
    );
}
