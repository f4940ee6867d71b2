//! No tracked file sends its reader to a document outside the repository, neither to
//! the shared folder beside it nor to the three files kept there (the platform contract,
//! the interface, the first design). What they said now lives in `docs/` and README.md.

use std::path::Path;
use std::process::Command;

/// The folder outside the repository, named any way at all.
const OUTSIDE_FOLDER: &str = "../shared";

/// The outside files, as names to open. Written as `docs/<name>`, a name is a file of
/// this repository, which is fine.
const OUTSIDE_FILES: [&str; 3] = ["cxone-api.md", "interface.md", "DESIGN.md"];

/// The places in `text` that point outside the repository, as the mentions found.
fn outside_mentions(text: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    if text.contains(OUTSIDE_FOLDER) {
        found.push(OUTSIDE_FOLDER);
    }
    for name in OUTSIDE_FILES {
        let named_outside = text.match_indices(name).any(|(at, _)| {
            let before = &text[..at];
            // Part of a longer file name (`my-interface.md`) is another file.
            let longer = before
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
            !longer && !before.ends_with("docs/")
        });
        if named_outside {
            found.push(name);
        }
    }
    found
}

/// The files git tracks, relative to the repository root, without `target/`.
pub(crate) fn tracked_files(root: &Path) -> Vec<String> {
    let what = format!("git ls-files in {}", root.display());
    crate::stdout_of(
        &what,
        Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(root),
    )
    .split('\0')
    .filter(|path| !path.is_empty() && !path.starts_with("target/"))
    .map(str::to_owned)
    .collect()
}

#[test]
fn no_tracked_file_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = tracked_files(root);
    assert!(
        files.len() > 100,
        "listed only {} tracked files",
        files.len()
    );
    let this_file = Path::new(file!());
    let mut pointers = Vec::new();
    for path in &files {
        if Path::new(path) == this_file || root.join(path) == this_file {
            continue;
        }
        // A file deleted but not yet staged is listed and absent: nothing to read.
        let Ok(bytes) = std::fs::read(root.join(path)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for (number, line) in text.lines().enumerate() {
            for mention in outside_mentions(line) {
                pointers.push(format!(
                    "{path}:{}: `{mention}` in: {}",
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        pointers.is_empty(),
        "{} places point outside the repository; point them at docs/platform-api.md, \
         docs/architecture.md or README.md instead:\n{}",
        pointers.len(),
        pointers.join("\n")
    );
}

#[test]
fn the_check_tells_outside_names_from_files_of_the_repository() {
    assert_eq!(outside_mentions("see ../shared/notes"), ["../shared"]);
    assert_eq!(
        outside_mentions("the contract (cxone-api.md)"),
        ["cxone-api.md"]
    );
    assert_eq!(
        outside_mentions("`interface.md`: the body"),
        ["interface.md"]
    );
    assert_eq!(
        outside_mentions("This departs from DESIGN.md"),
        ["DESIGN.md"]
    );
    for inside in [
        "docs/platform-api.md, docs/interface.md and docs/DESIGN.md",
        "my-interface.md, old_DESIGN.md, a.cxone-api.md",
        "the interface and the design, in docs/architecture.md",
    ] {
        assert!(outside_mentions(inside).is_empty(), "{inside}");
    }
}
