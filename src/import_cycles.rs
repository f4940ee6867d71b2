//! A test that no module of `src/` imports one that imports it (issue #35's "no import
//! cycle"), so a cycle cannot come back unseen.
//!
//! It reads the source as text: every `use` and every `crate::…`/`super::…` path in
//! production code (comments and `#[cfg(test)]` modules left out) is resolved to the file
//! that defines the item, through `pub use` re-exports, glob ones included. An edge
//! between a file and its ancestor or descendant is not one between modules.
//!
//! Two checks: no cycle between files, and none between the pieces of the design, a
//! piece being a module of a layer with everything below it (`engine::bulk` with
//! `engine/bulk/*`): two folders whose files import each other's, by different files,
//! are a cycle of the design even when no two files are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

pub(crate) type ModPath = Vec<String>;

/// One production source file: its text without comments or tests, and the child
/// modules it declares as `#[cfg(test)] mod x;`.
pub(crate) struct Module {
    pub(crate) text: String,
    test_children: Vec<String>,
}

/// Every production module of the crate, by module path (`[]` is `lib.rs`).
pub(crate) fn modules(src: &Path) -> BTreeMap<ModPath, Module> {
    let mut found = BTreeMap::new();
    visit(src, src, &mut found);
    // Modules declared `#[cfg(test)] mod x;` are test code, with all below them.
    let test_only: Vec<ModPath> = found
        .iter()
        .flat_map(|(path, module)| {
            module.test_children.iter().map(|child| {
                let mut p = path.clone();
                p.push(child.clone());
                p
            })
        })
        .collect();
    found.retain(|path, _| !test_only.iter().any(|t| path.starts_with(t)));
    found
}

fn visit(src: &Path, dir: &Path, found: &mut BTreeMap<ModPath, Module>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable src dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            visit(src, &path, found);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let rel = path
            .strip_prefix(src)
            .expect("under src")
            .with_extension("");
        let mut parts: ModPath = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(parts.first().map(String::as_str), Some("bin" | "main")) {
            continue;
        }
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        let raw = std::fs::read_to_string(&path).expect("readable source");
        found.insert(
            parts,
            Module {
                text: production(&raw),
                test_children: test_declared(&raw),
            },
        );
    }
}

/// The names of the child modules a file declares as `#[cfg(test)] mod x;`.
fn test_declared(raw: &str) -> Vec<String> {
    let lines: Vec<&str> = raw.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| {
            let rest = w[1]
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            let name = rest.strip_prefix("mod ")?.strip_suffix(';')?;
            Some(name.trim().to_owned())
        })
        .collect()
}

/// The text up to its inline test module, without `//` comments.
fn production(raw: &str) -> String {
    let lines: Vec<&str> = raw.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        let opens_module = next.contains("mod ") && next.ends_with('{');
        if line.trim() == "#[cfg(test)]" && opens_module {
            break;
        }
        let code = match line.find("//") {
            // A `//` inside a string (a URL) is rare in paths' lines; cut it all the same.
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`, white space removed) into paths.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').expect("balanced use tree")];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .flat_map(|item| {
            expand(item)
                .into_iter()
                .map(move |e| format!("{prefix}{e}"))
        })
        .collect()
}

/// The `use` declarations of `text` (only `pub`, `pub(crate)`, … ones when
/// `public_only`), expanded, with the name each brings in (`*` for a glob).
fn uses(text: &str, public_only: bool) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_start();
        let (is_public, rest) = match line.strip_prefix("pub") {
            Some(after) => (true, after.split_once(' ').map_or("", |(_, r)| r)),
            None => (false, line),
        };
        let Some(statement) = rest.strip_prefix("use ") else {
            continue;
        };
        let mut statement = statement.to_owned();
        while !statement.contains(';') {
            let Some(more) = lines.next() else { break };
            statement.push(' ');
            statement.push_str(more);
        }
        if public_only && !is_public {
            continue;
        }
        let statement = statement.split(';').next().unwrap_or_default();
        // `a as b` keeps a marker through the removal of white space.
        let tree: String = statement
            .split_whitespace()
            .map(|word| if word == "as" { "=>" } else { word })
            .collect();
        for path in expand(&tree) {
            let (path, name) = match path.split_once("=>") {
                Some((p, alias)) => (p.to_owned(), alias.to_owned()),
                None => {
                    let name = path.rsplit("::").next().unwrap_or_default().to_owned();
                    (path, name)
                }
            };
            found.push((path, name));
        }
    }
    found
}

/// Paths written in full in code: `crate::a::b`, `super::c`.
fn inline_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for start in ["crate::", "super::"] {
        for (at, _) in text.match_indices(start) {
            let prev = text[..at].chars().next_back();
            if prev.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '$') {
                continue;
            }
            let path: String = text[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(path.trim_end_matches(':').to_owned());
        }
    }
    found
}

struct Resolver<'a> {
    modules: &'a BTreeMap<ModPath, Module>,
    reexports: HashMap<ModPath, Vec<(String, String)>>,
}

impl Resolver<'_> {
    /// The module a path names, and what it names inside it; `None` for paths outside
    /// the crate.
    fn locate(&self, from: &ModPath, path: &str) -> Option<(ModPath, Vec<String>)> {
        let mut parts = path.split("::").filter(|p| !p.is_empty()).peekable();
        let mut base: ModPath = match *parts.peek()? {
            "crate" => {
                parts.next();
                Vec::new()
            }
            "super" => {
                let mut base = from.clone();
                while parts.peek() == Some(&"super") {
                    parts.next();
                    base.pop();
                }
                base
            }
            "self" => {
                parts.next();
                from.clone()
            }
            _ => return None,
        };
        let rest: Vec<String> = parts.map(str::to_owned).collect();
        base.extend(rest);
        (0..=base.len()).rev().find_map(|n| {
            let (module, inside) = base.split_at(n);
            self.modules
                .contains_key(module)
                .then(|| (module.to_vec(), inside.to_vec()))
        })
    }

    /// The module that defines what `path` names, following re-exports.
    fn resolve(&self, from: &ModPath, path: &str, depth: u32) -> Option<ModPath> {
        let (module, inside) = self.locate(from, path)?;
        let Some(name) = inside.first().filter(|_| depth < 8) else {
            return Some(module);
        };
        let exports = self.reexports.get(&module).map_or(&[][..], Vec::as_slice);
        let relative = |p: &str| {
            if p.starts_with("crate") || p.starts_with("super") || p.starts_with("self") {
                p.to_owned()
            } else {
                format!("self::{p}")
            }
        };
        if let Some((target, _)) = exports.iter().find(|(_, n)| n == name) {
            return self
                .resolve(&module, &relative(target), depth + 1)
                .or(Some(module));
        }
        for (target, n) in exports {
            if n != "*" {
                continue;
            }
            let glob = relative(target.trim_end_matches("::*"));
            let Some((source, _)) = self.locate(&module, &glob) else {
                continue;
            };
            if defines(&self.modules[&source].text, name) {
                return self
                    .resolve(&module, &format!("{glob}::{name}"), depth + 1)
                    .or(Some(source));
            }
        }
        Some(module)
    }
}

/// Whether `text` defines a public item called `name`.
fn defines(text: &str, name: &str) -> bool {
    ["struct", "enum", "fn", "const", "type", "trait", "static"]
        .iter()
        .any(|kind| {
            text.match_indices(&format!("{kind} {name}"))
                .any(|(at, _)| {
                    let after = text[at + kind.len() + 1 + name.len()..].chars().next();
                    let before = text[..at].trim_end();
                    after.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                        && (before.ends_with("pub")
                            || before.ends_with(')')
                            || before.ends_with("async"))
                })
        })
}

fn related(a: &ModPath, b: &ModPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The piece of the design `module` belongs to: itself, or its ancestor a level below
/// the layer (`engine::bulk::settle` belongs to `engine::bulk`).
fn piece(module: &ModPath) -> ModPath {
    module.iter().take(2).cloned().collect()
}

/// Every import between unrelated modules: by importing module, the imported ones and
/// the path written for the first such import.
fn import_edges(src: &Path) -> BTreeMap<ModPath, BTreeMap<ModPath, String>> {
    let modules = modules(src);
    assert!(
        modules.len() > 100,
        "read {} modules of src/",
        modules.len()
    );
    let reexports = modules
        .iter()
        .map(|(path, module)| (path.clone(), uses(&module.text, true)))
        .collect();
    let resolver = Resolver {
        modules: &modules,
        reexports,
    };
    let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, String>> = BTreeMap::new();
    for (path, module) in &modules {
        let written = uses(&module.text, false)
            .into_iter()
            .map(|(p, _)| p)
            .chain(inline_paths(&module.text));
        for used in written {
            let used = used.trim_end_matches("::*").trim_end_matches("::self");
            let Some(target) = resolver.resolve(path, used, 0) else {
                continue;
            };
            if !related(path, &target) {
                edges
                    .entry(path.clone())
                    .or_default()
                    .entry(target)
                    .or_insert_with(|| format!("{used} (in {})", path.join("/")));
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_one_that_imports_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert_no_cycle(&import_edges(&src));
}

#[test]
fn no_folder_imports_one_that_imports_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut pieces: BTreeMap<ModPath, BTreeMap<ModPath, String>> = BTreeMap::new();
    for (from, imported) in import_edges(&src) {
        for (to, written) in imported {
            let (from, to) = (piece(&from), piece(&to));
            if !related(&from, &to) {
                pieces.entry(from).or_default().entry(to).or_insert(written);
            }
        }
    }
    assert_no_cycle(&pieces);
}

/// Fails naming the imports of a cycle through modules that are not one another's
/// ancestors, found by a depth-first search that keeps the path it is on.
fn assert_no_cycle(edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>) {
    let mut done = BTreeSet::new();
    for start in edges.keys() {
        let mut trail: Vec<ModPath> = Vec::new();
        if let Some(cycle) = find_cycle(start, edges, &mut trail, &mut done) {
            let shown: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} uses {}", w[0].join("/"), edges[&w[0]][&w[1]]))
                .collect();
            panic!("import cycle: {}", shown.join(", "));
        }
    }
}

fn find_cycle(
    at: &ModPath,
    edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>,
    trail: &mut Vec<ModPath>,
    done: &mut BTreeSet<ModPath>,
) -> Option<Vec<ModPath>> {
    if let Some(i) = trail.iter().position(|m| m == at) {
        let mut cycle = trail[i..].to_vec();
        cycle.push(at.clone());
        return Some(cycle);
    }
    if done.contains(at) {
        return None;
    }
    trail.push(at.clone());
    for next in edges.get(at).into_iter().flat_map(BTreeMap::keys) {
        if let Some(cycle) = find_cycle(next, edges, trail, done) {
            return Some(cycle);
        }
    }
    trail.pop();
    done.insert(at.clone());
    None
}
