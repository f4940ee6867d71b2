//! The repository explains itself from inside (issue #54), and keeps doing so as it
//! changes: nothing points outside it ([`outside`]), and the documentation says what the
//! code has ([`docs`]): every link lands, every route, metric, command and configuration
//! key is in its chapter; and the build profile names every procedural macro at
//! `opt-level` 0 ([`profile`]), which CI's time depends on.
//!
//! A test target of its own that reads files (and asks the binary for its `--help`, cargo
//! for its dependency tree): it builds in seconds, without recompiling the library's unit
//! tests.

use std::process::Command;

mod docs;
mod outside;
mod profile;

/// What `command` (named `what` in a failure) printed, once it ran and succeeded.
fn stdout_of(what: &str, command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("`{what}` cannot run: {e}"));
    assert!(
        output.status.success(),
        "`{what}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("`{what}` printed no UTF-8: {e}"))
}
