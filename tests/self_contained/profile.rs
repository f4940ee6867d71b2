//! The build profile keeps its promise to CI's two cores: every procedural macro the
//! build compiles is named at `opt-level` 0 in `Cargo.toml` (`[profile.dev.package]`),
//! since the `"*"` entry that optimises the runtime dependencies would otherwise compile
//! it at 1, about five times slower (docs/development.md).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The crates `Cargo.toml` compiles at `opt-level` 0 in the dev profile.
fn unoptimised(root: &Path) -> BTreeSet<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml reads");
    let manifest: toml::Table = manifest.parse().expect("Cargo.toml is TOML");
    let packages = manifest["profile"]["dev"]["package"]
        .as_table()
        .expect("Cargo.toml has [profile.dev.package]");
    packages
        .iter()
        .filter(|(_, settings)| {
            settings.get("opt-level").and_then(toml::Value::as_integer) == Some(0)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// The proc-macro crates a build and a test run on this machine compile, as `cargo tree`
/// (which resolves features and platforms as a build does) marks them.
fn procedural_macros(root: &Path) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    crate::stdout_of(
        "cargo tree",
        Command::new(cargo)
            .args(["tree", "--locked", "--offline", "--prefix", "none"])
            .args(["--edges", "normal,build,dev", "--workspace"])
            .current_dir(root),
    )
    .lines()
    .filter(|line| line.contains(" (proc-macro)"))
    .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
    .collect()
}

#[test]
fn every_procedural_macro_the_build_compiles_is_named_at_opt_level_0() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let named = unoptimised(root);
    let macros = procedural_macros(root);
    assert!(
        macros.contains("serde_derive"),
        "the check sees the macros: {macros:?}"
    );
    let missing: Vec<&String> = macros.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "add these procedural macros to Cargo.toml's [profile.dev.package] at \
         `opt-level = 0`: {missing:?}"
    );
}
