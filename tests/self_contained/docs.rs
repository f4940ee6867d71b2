//! The documentation says what the code has, and its links land: README.md stays a
//! front page that starts with the two commands; every relative link of README.md and
//! `docs/` reaches a file and, with an anchor, one of its headings; every route the API
//! declares is in the HTTP API chapter, every metric the code names in the operations
//! chapter, every command `wfmd --help` lists in the command-line chapter, and every key
//! of `config/wfmd.example.toml` under its section's heading in the configuration chapter.
//!
//! The code is read as text (the `#[utoipa::path]` attributes, the `"wfmd_…"` names), so
//! this target builds without the library; what follows a file's `#[cfg(test)]` is its
//! tests' and not read.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The front page's length at most (issue #54).
const README_LINES_AT_MOST: usize = 300;

/// The two commands the README starts with, as `.ci/run` and a new machine run them.
const FIRST_COMMANDS: [&str; 2] = [
    "cargo run --release -- serve --simulate",
    "cargo test --locked",
];

/// Names of the form `"wfmd_…"` in the code that are not metrics: the session cookie's,
/// the schema the instances share, the schema a pooled connection searches between tenants.
const NOT_METRICS: [&str; 3] = ["wfmd_session", "wfmd_cluster", "wfmd_no_tenant"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// README.md and every Markdown file of `docs/`, relative to the root, with their text.
fn documents() -> Vec<(PathBuf, String)> {
    let mut paths = vec![PathBuf::from("README.md")];
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| PathBuf::from("docs").join(entry.expect("docs/ is readable").file_name()))
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    paths.extend(chapters);
    paths
        .into_iter()
        .map(|path| {
            let text = read(&root().join(&path));
            (path, text)
        })
        .collect()
}

fn chapter(name: &str) -> String {
    read(&root().join("docs").join(name))
}

/// The lines of `text` outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The headings of `text` (outside code), without their `#`s.
fn headings(text: &str) -> Vec<&str> {
    prose_lines(text)
        .into_iter()
        .filter_map(|line| {
            let title = line.trim_start_matches('#');
            (title.len() < line.len() && line.len() - title.len() <= 6)
                .then(|| title.strip_prefix(' '))
                .flatten()
                .map(str::trim)
        })
        .collect()
}

/// A heading's anchor as GitHub makes it: lower case, a link's text for the link, no
/// punctuation but `-` and `_`, a `-` for each space.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // `[text](target)` reads as `text`.
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|at| open + at) else {
            break;
        };
        let Some(end) = rest[close..].find(')').map(|at| close + at) else {
            break;
        };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor of `text`: a repeated heading's gets `-1`, `-2`, … as on GitHub.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    headings(text)
        .into_iter()
        .map(|heading| {
            let base = slug(heading);
            let count = seen.entry(base.clone()).or_default();
            let anchor = match *count {
                0 => base,
                n => format!("{base}-{n}"),
            };
            *count += 1;
            anchor
        })
        .collect()
}

/// `line` without its inline code spans.
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The targets of the Markdown links in `text`'s prose.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest
                .find(|c: char| c == ')' || c.is_whitespace())
                .unwrap_or(rest.len());
            targets.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    targets
}

/// Where a link `target` written in `from` fails to land, if it does.
fn broken(
    from: &Path,
    target: &str,
    anchors_of: &mut impl FnMut(&Path) -> Option<BTreeSet<String>>,
) -> Option<String> {
    let is_url = target.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic())
    });
    if is_url {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().unwrap_or(Path::new("")).join(path)
    };
    let Some(anchors) = anchors_of(&file) else {
        return Some(format!("no file {}", file.display()));
    };
    (!anchor.is_empty() && !anchors.contains(anchor))
        .then(|| format!("no heading in {} for #{anchor}", file.display()))
}

/// The Rust files under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("readable folder").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// A source file's text before its tests (`#[cfg(test)]`).
fn before_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// `path` with each `{parameter}` written `{}`: the chapters name parameters as they read
/// best (`{id}` for `{agent_id}`).
fn unnamed_parameters(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_parameter = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_parameter = true;
                out.push('{');
            }
            '}' => {
                in_parameter = false;
                out.push('}');
            }
            _ if in_parameter => {}
            _ => out.push(c),
        }
    }
    out
}

/// Every `METHOD /path` the API declares with `#[utoipa::path(method, path = "…")]`,
/// itself or through `console_page!`.
fn declared_routes() -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for file in rust_files(&root().join("src/api")) {
        let text = read(&file);
        let pieces: Vec<&str> = before_tests(&text).split("#[utoipa::path(").collect();
        // An attribute starts its line; one in a comment (`//! … #[utoipa::path(…`) is prose.
        let attributes = pieces.windows(2).filter_map(|pair| {
            let line_start = pair[0].rsplit('\n').next().unwrap_or_default();
            line_start.trim().is_empty().then_some(pair[1])
        });
        for declaration in attributes {
            // A macro's template (`path = $path`) declares its routes where it is invoked.
            let attribute = declaration.split(")]").next().unwrap_or_default();
            if attribute.contains("path = $") {
                continue;
            }
            let method = declaration
                .trim_start()
                .split(|c: char| !c.is_ascii_alphabetic())
                .next()
                .unwrap_or_default()
                .to_uppercase();
            let path = declaration
                .split_once("path = \"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(path, _)| path)
                .unwrap_or_else(|| panic!("{}: a #[utoipa::path] without a path", file.display()));
            routes.insert(format!("{method} {path}"));
        }
        // `console_page!` declares a page's two GET routes as `name at "/path"`.
        for invocation in before_tests(&text).split("\nconsole_page! {").skip(1) {
            let invocation = invocation.split("\n}").next().unwrap_or_default();
            for piece in invocation.split(" at \"").skip(1) {
                let (path, _) = piece.split_once('"').unwrap_or_default();
                routes.insert(format!("GET {path}"));
            }
        }
    }
    routes
}

/// Every name `"wfmd_…"` the code writes as a whole string literal (metrics), but
/// [`NOT_METRICS`].
fn metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in rust_files(&root().join("src")) {
        let text = read(&file);
        for piece in before_tests(&text).split("\"wfmd_").skip(1) {
            let Some((name, _)) = piece.split_once('"') else {
                continue;
            };
            let whole = name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            let name = format!("wfmd_{name}");
            if whole && !name.ends_with('_') && !NOT_METRICS.contains(&name.as_str()) {
                names.insert(name);
            }
        }
    }
    names
}

/// Whether `text` holds `word` not as part of a longer name.
fn holds_word(text: &str, word: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(is_name)
    })
}

/// Whether `text` names `route` itself, not only a longer path it begins.
fn names_route(text: &str, route: &str) -> bool {
    text.match_indices(route).any(|(at, _)| {
        let after = text[at + route.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '{'))
    })
}

/// The example configuration's sections (`[server]`, `[[tenants]]`, …) each with its
/// keys, written or commented out (`# key = …`).
fn example_keys() -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in read(&root().join("config/wfmd.example.toml")).lines() {
        let line = line.trim_end();
        let bare = line.strip_prefix("# ").unwrap_or(line);
        let header = bare.split('#').next().unwrap_or_default().trim();
        let is_header = header.starts_with('[')
            && header.ends_with(']')
            && header
                .trim_matches(|c| c == '[' || c == ']')
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
        if is_header && !header.is_empty() {
            sections.push((header.to_owned(), Vec::new()));
            continue;
        }
        let key = bare.split_once(" = ").map(|(key, _)| key);
        let is_key = key.is_some_and(|key| {
            key.starts_with(|c: char| c.is_ascii_lowercase())
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
        if let (true, Some(key), Some((_, keys))) = (is_key, key, sections.last_mut()) {
            keys.push(key.to_owned());
        }
    }
    sections
}

#[test]
fn the_readme_is_a_front_page_that_starts_with_the_two_commands() {
    let readme = read(&root().join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= README_LINES_AT_MOST,
        "README.md has {lines} lines, more than {README_LINES_AT_MOST}: move the detail into a \
         chapter of docs/ and link it"
    );
    let top = readme.split("\n---").next().unwrap_or_default();
    for command in FIRST_COMMANDS {
        assert!(
            top.contains(&format!("```sh\n{command}\n```")),
            "README.md does not start with the command `{command}`"
        );
    }
    let ci = read(&root().join(".ci/run"));
    assert!(
        ci.lines().any(|line| line.trim() == FIRST_COMMANDS[1]),
        ".ci/run does not run the README's test command `{}`",
        FIRST_COMMANDS[1]
    );
}

#[test]
fn every_link_of_the_documentation_lands_on_a_file_and_heading() {
    let documents = documents();
    let mut cache: HashMap<PathBuf, Option<BTreeSet<String>>> = HashMap::new();
    let mut anchors_of = |file: &Path| {
        // `docs/../README.md` and `README.md` are one file.
        let file = file.components().fold(PathBuf::new(), |mut path, part| {
            match part {
                std::path::Component::ParentDir => {
                    path.pop();
                }
                std::path::Component::CurDir => {}
                other => path.push(other),
            }
            path
        });
        cache
            .entry(file.clone())
            .or_insert_with(|| {
                let full = root().join(&file);
                match full.extension().and_then(|e| e.to_str()) {
                    Some("md") => std::fs::read_to_string(&full)
                        .ok()
                        .map(|text| anchors(&text)),
                    _ => full.exists().then(BTreeSet::new),
                }
            })
            .clone()
    };
    let mut problems = Vec::new();
    let mut links = 0;
    for (path, text) in &documents {
        for target in link_targets(text) {
            links += 1;
            if let Some(problem) = broken(path, &target, &mut anchors_of) {
                problems.push(format!("{}: ({target}): {problem}", path.display()));
            }
        }
    }
    assert!(
        links > 50,
        "found only {links} links: the link reader is broken"
    );
    assert!(
        problems.is_empty(),
        "{} broken links:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_declared_route_is_in_the_http_api_chapter() {
    let routes = declared_routes();
    assert!(
        routes.len() > 30,
        "found only {} routes: the reader is broken",
        routes.len()
    );
    let chapter = unnamed_parameters(&chapter("http-api.md"));
    let missing: Vec<_> = routes
        .iter()
        .filter(|route| !names_route(&chapter, &unnamed_parameters(route)))
        .collect();
    assert!(
        missing.is_empty(),
        "routes the API declares that docs/http-api.md does not name (as `METHOD /path`):\n{missing:#?}"
    );
}

#[test]
fn every_metric_is_in_the_operations_chapter() {
    let metrics = metric_names();
    assert!(
        metrics.len() > 40,
        "found only {} metrics: the reader is broken",
        metrics.len()
    );
    let chapter = chapter("operations.md");
    let missing: Vec<_> = metrics
        .iter()
        .filter(|name| !holds_word(&chapter, name))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics the code records that docs/operations.md does not name (or names that are \
         not metrics: list them in NOT_METRICS):\n{missing:#?}"
    );
}

#[test]
fn every_command_is_in_the_command_line_chapter() {
    let help = Command::new(env!("CARGO_BIN_EXE_wfmd"))
        .arg("--help")
        .output()
        .expect("wfmd --help runs");
    let help = String::from_utf8_lossy(&help.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        // A command's line; its description's further lines are indented deeper.
        .filter(|line| !line[2..].starts_with(' '))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|command| *command != "help")
        .collect();
    assert!(commands.len() > 8, "found only {commands:?} in wfmd --help");
    let chapter = chapter("command-line.md");
    let missing: Vec<_> = commands
        .iter()
        .filter(|command| !holds_word(&chapter, &format!("wfmd {command}")))
        .collect();
    assert!(
        missing.is_empty(),
        "commands docs/command-line.md does not name: {missing:?}"
    );
}

#[test]
fn every_key_of_the_example_configuration_is_under_its_section_in_the_chapter() {
    let chapter = chapter("configuration.md");
    // Each heading's part of the chapter, under every section it names (`[server]`).
    let mut parts: HashMap<String, String> = HashMap::new();
    let mut current: Vec<String> = Vec::new();
    for line in chapter.lines() {
        if line.starts_with('#') {
            current = line
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|name| name.starts_with('['))
                .map(str::to_owned)
                .collect();
        }
        for section in &current {
            let part = parts.entry(section.clone()).or_default();
            part.push_str(line);
            part.push('\n');
        }
    }
    let sections = example_keys();
    assert!(
        sections.len() > 15,
        "found only {} sections in the example",
        sections.len()
    );
    let mut missing = Vec::new();
    for (section, keys) in &sections {
        let Some(part) = parts.get(section) else {
            missing.push(format!("{section} (no heading names it)"));
            continue;
        };
        for key in keys {
            if !part.contains(&format!("`{key}`")) {
                missing.push(format!("{section} {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys of config/wfmd.example.toml that docs/configuration.md does not give under \
         their section's heading:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readers_find_what_they_are_for() {
    assert_eq!(
        slug("`[server]` and [TLS](#tls): the keys"),
        "server-and-tls-the-keys"
    );
    assert_eq!(
        anchors("# A\n## B\n```\n# not a heading\n```\n## B\n"),
        BTreeSet::from(["a".to_owned(), "b".to_owned(), "b-1".to_owned()])
    );
    assert_eq!(
        link_targets("see [x](docs/a.md#b) and `[y](no)`, [z](https://e.example) (c)"),
        ["docs/a.md#b", "https://e.example"]
    );
    assert_eq!(
        unnamed_parameters("/v1/agents/{agent_id}/history"),
        "/v1/agents/{}/history"
    );
    assert!(names_route("| `GET /v1/jobs/{}` |", "GET /v1/jobs/{}"));
    assert!(!names_route("`GET /v1/jobs/{}/items`", "GET /v1/jobs/{}"));
    assert!(!names_route("`GET /v1/jobsets`", "GET /v1/jobs"));
    assert!(holds_word("`wfmd_x_total`", "wfmd_x_total"));
    assert!(!holds_word("wfmd_x_total_more", "wfmd_x_total"));
}
