//! The repository explains itself from inside (issue #54), and keeps doing so as it
//! changes: nothing points outside it ([`outside`]), and the documentation says what the
//! code has ([`docs`]): every link lands, every route, metric, command and configuration
//! key is in its chapter; and the build profile names every procedural macro at
//! `opt-level` 0 ([`profile`]), which CI's time depends on.
//!
//! A test target of its own that reads files (and asks the binary for its `--help`, cargo
//! for its dependency tree): it builds in seconds, without recompiling the library's unit
//! tests.

mod docs;
mod outside;
mod profile;
