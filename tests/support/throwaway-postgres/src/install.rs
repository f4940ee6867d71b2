//! Installing what a test needs from Debian's archive (Chromium, Prometheus' promtool,
//! PostgreSQL) when the machine lacks it: CI is a fresh Debian machine with only the Rust
//! toolchain, and the one test command must bring the rest itself.

use std::process::{Command, Stdio};

/// Installs the Debian `packages` with `apt-get install -y` when `command` does not run
/// (with `probe` as its arguments, such as `--version`), failing the test with the
/// reason when that cannot be done. True when it installed them. Blocking: call it from
/// `spawn_blocking` in async tests.
pub fn install_when_missing(command: &str, probe: &[&str], packages: &[&str]) -> bool {
    let present = Command::new(command)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if present.is_ok_and(|status| status.success()) {
        return false;
    }
    if let Err(why) = apt_install(command, packages) {
        panic!("{why}");
    }
    true
}

/// Installs the Debian `packages` because `command` is missing, refreshing the package
/// lists only when the install fails without that (a fresh machine has none; a machine
/// that has them should not wait for a refresh). The error says what failed and why.
pub(crate) fn apt_install(command: &str, packages: &[&str]) -> Result<(), String> {
    let wanted = packages.join(" ");
    let apt = |args: &[&str]| {
        let output = Command::new("apt-get")
            // Another test may be installing at the same time.
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(|e| {
                format!("{command} is missing and apt-get cannot run to install `{wanted}`: {e}")
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{command} is missing and `apt-get {}` failed, so `{wanted}` cannot be \
                 installed:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt(&install).or_else(|_| {
        apt(&["update"])?;
        apt(&install)
    })
}
