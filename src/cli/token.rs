//! `wfmd token new NAME --role ROLE`: a fresh API bearer token, shown once, and the
//! `[[api_tokens]]` entry that lets it in.
//!
//! The token is 32 bytes from the operating system's random source, URL-safe base64
//! behind a `wfmd_` prefix (so secret scanners and people can tell what it is). Only
//! its SHA-256 goes into the configuration; wfmd cannot show the token again, so a lost
//! token is replaced, not recovered. Needs no configuration and no database.

use std::process::ExitCode;

use base64::Engine;
use clap::{Args, Subcommand};
use rand::TryRngCore;
use sha2::{Digest, Sha256};

use super::Failure;
use crate::config::api_tokens::{Role, check_name};

/// Random bytes in a token: 256 bits, beyond guessing.
const TOKEN_BYTES: usize = 32;
/// What every token starts with.
pub const TOKEN_PREFIX: &str = "wfmd_";

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new API token; print it once, with the `[[api_tokens]]` entry to add.
    New(NewTokenArgs),
}

#[derive(Debug, Args)]
pub struct NewTokenArgs {
    /// Who will hold the token (1-64 letters, digits, '.', '_' or '-'); the actor of
    /// every change made with it.
    pub name: String,
    /// viewer (reads), supervisor (also changes states and runs bulk jobs) or admin
    /// (also replays webhooks and verifies and exports the audit log).
    #[arg(long, value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<Role>()))]
    pub role: Role,
}

pub fn run(command: TokenCommand) -> Result<ExitCode, Failure> {
    let TokenCommand::New(args) = command;
    check_name(&args.name).map_err(|e| Failure::usage(format!("NAME {e}")))?;
    let token = new_token().map_err(Failure::action)?;
    print!("{}", announce(&args.name, args.role, &token));
    Ok(ExitCode::SUCCESS)
}

/// A fresh token from the operating system's random source.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's random source failed: {e}"))?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// What `wfmd token new` prints: the token on a line of its own, then the entry.
fn announce(name: &str, role: Role, token: &str) -> String {
    let sha256 = hex::encode(Sha256::digest(token.as_bytes()));
    format!(
        "API token for {name} ({role}); it is shown only this once, keep it secret:\n\
         \n    {token}\n\n\
         Add this entry to the configuration (wfmd keeps only the hash) and restart wfmd:\n\
         \n[[api_tokens]]\n\
         name = \"{name}\"\n\
         token_sha256 = \"{sha256}\"\n\
         role = \"{role}\"\n\
         \nCallers send it as: Authorization: Bearer <token>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_url_safe_and_carry_256_bits() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        let body = a.strip_prefix(TOKEN_PREFIX).unwrap();
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap();
        assert_eq!(decoded.len(), TOKEN_BYTES);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{a}"
        );
    }

    #[test]
    fn the_printed_entry_is_valid_configuration_for_the_printed_token() {
        let text = announce("desk", Role::Supervisor, "wfmd_abc");
        let entry = &text[text.find("[[api_tokens]]").unwrap()..];
        let entry = entry.split("\n\n").next().unwrap();
        let config: crate::config::Config = toml::from_str(entry).unwrap();
        config.validate(true).unwrap();
        let token = &config.api_tokens[0];
        assert_eq!(token.name, "desk");
        assert_eq!(token.role(), Ok(Role::Supervisor));
        let expected: [u8; 32] = Sha256::digest(b"wfmd_abc").into();
        assert_eq!(token.digest(), Ok(expected));
        assert!(text.contains("\n    wfmd_abc\n"), "{text}");
    }
}
