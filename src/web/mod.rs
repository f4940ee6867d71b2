//! The supervisor console's pages, embedded in the binary: each an HTML document with
//! its styles and scripts inlined, so it needs nothing from a CDN or a font service and
//! works on an operations-floor network without internet access.
//!
//! Every page is one file set, `{name}.html` (what goes inside `<body>`), `{name}.css`
//! and `{name}.js`, put into `shell.html` beside what all pages share: `console.css`
//! and `console.js` (the navigation, the API client and its sign-in, the live feed
//! client, formatting and the words for states and verdicts, the dialog that changes an
//! agent's state). Plain scripts, no build step: the pages draw what the API answers
//! and keep it current from the live feed, which is what templates could not do.
//!
//! A page's [`Page::content_security_policy`] names its two scripts and two styles by
//! their hashes, so nothing else can run in the page, not even a script smuggled into
//! it. What differs between requests (the tenant, the caller's role, whether tokens are
//! configured) goes into `<body>`'s attributes, never into a script or a style, so the
//! hashes hold for every request.

use std::sync::LazyLock;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::api_tokens::Role;

const SHELL: &str = include_str!("shell.html");
const SHARED_STYLE: &str = include_str!("console.css");
const SHARED_SCRIPT: &str = include_str!("console.js");

/// A page of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/`: skill and queue tiles, agents by state (`?kiosk=1` for wall displays,
    /// `?kiosk=1&board=NAME` for a board of `[[boards]]`).
    Wallboard,
    /// `/rta`: real-time adherence, out of adherence first.
    Rta,
    /// `/agents/{id}`: one agent's day, history, waiting change, exceptions.
    Agent,
    /// `/jobs`: bulk jobs.
    Jobs,
    /// `/exceptions`: adherence exceptions to review.
    Exceptions,
    /// `/reports`: the compliance report and analytics results.
    Reports,
    /// `/sign-in` and `/sign-out`.
    SignIn,
}

/// One page's own files.
struct Parts {
    name: &'static str,
    title: &'static str,
    body: &'static str,
    style: &'static str,
    script: &'static str,
}

impl Page {
    pub const ALL: [Page; 7] = [
        Page::Wallboard,
        Page::Rta,
        Page::Agent,
        Page::Jobs,
        Page::Exceptions,
        Page::Reports,
        Page::SignIn,
    ];

    fn parts(self) -> Parts {
        macro_rules! parts {
            ($name:literal, $title:literal) => {
                Parts {
                    name: $name,
                    title: $title,
                    body: include_str!(concat!($name, ".html")),
                    style: include_str!(concat!($name, ".css")),
                    script: include_str!(concat!($name, ".js")),
                }
            };
        }
        match self {
            Page::Wallboard => parts!("wallboard", "Wallboard"),
            Page::Rta => parts!("rta", "Real-time adherence"),
            Page::Agent => parts!("agent", "Agent"),
            Page::Jobs => parts!("jobs", "Bulk jobs"),
            Page::Exceptions => parts!("exceptions", "Exceptions"),
            Page::Reports => parts!("reports", "Reports"),
            Page::SignIn => parts!("sign-in", "Sign in"),
        }
    }

    /// The page for a request: `tenant` when it is a tenant's (`/t/{tenant}/…`), `role`
    /// the role of the caller the request proves (none: the page finds out from the
    /// API, which sends it to sign in), `tokens` whether any are configured (without,
    /// nobody signs in).
    pub fn render(self, tenant: Option<&str>, role: Option<Role>, tokens: bool) -> String {
        self.render_with_boards(tenant, role, tokens, "[]")
    }

    /// [`Page::render`], with `boards` (the `[[boards]]` as JSON) where the page's body
    /// takes them (the wallboard's `data-boards`); as an attribute, not a script, they
    /// leave the page's hashes as they are.
    pub fn render_with_boards(
        self,
        tenant: Option<&str>,
        role: Option<Role>,
        tokens: bool,
        boards: &str,
    ) -> String {
        let parts = self.parts();
        let body = fill(parts.body, &[("boards", &attribute_text(boards))]);
        let root = tenant.map(|t| format!("/t/{t}")).unwrap_or_default();
        fill(
            SHELL,
            &[
                ("title", parts.title),
                ("shared_style", SHARED_STYLE),
                ("page_style", parts.style),
                ("page", parts.name),
                ("root", &root),
                ("tenant", tenant.unwrap_or_default()),
                ("role", role.map(Role::as_str).unwrap_or_default()),
                ("auth", if tokens { "tokens" } else { "open" }),
                ("body", &body),
                ("shared_script", SHARED_SCRIPT),
                ("page_script", parts.script),
            ],
        )
    }

    /// The page's `Content-Security-Policy`: only its own inline scripts and styles,
    /// the API and the feed of its own origin, and no framing (kiosk mode is the page
    /// itself).
    pub fn content_security_policy(self) -> &'static str {
        static POLICIES: LazyLock<Vec<String>> = LazyLock::new(|| {
            Page::ALL
                .iter()
                .map(|page| {
                    let parts = page.parts();
                    // `connect-src 'self'` covers the feed's ws:/wss: on the page's own
                    // host too.
                    format!(
                        "default-src 'none'; script-src {} {}; style-src {} {}; \
                         connect-src 'self'; img-src 'self'; form-action 'self'; \
                         frame-ancestors 'none'; base-uri 'none'",
                        source_hash(SHARED_SCRIPT),
                        source_hash(parts.script),
                        source_hash(SHARED_STYLE),
                        source_hash(parts.style),
                    )
                })
                .collect()
        });
        let index = Page::ALL
            .iter()
            .position(|page| *page == self)
            .expect("every page is in Page::ALL");
        &POLICIES[index]
    }
}

/// The CSP source naming `text` by its SHA-256.
fn source_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// `text` as an HTML attribute's value between double quotes.
fn attribute_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `template` with each `{name}` replaced by its value, in one pass: a value is never
/// read for placeholders itself (scripts and styles are full of braces).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (close, *v))
        });
        match value {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text between the `index`th `open` and the `close` after it.
    fn between<'a>(page: &'a str, open: &str, close: &str, index: usize) -> &'a str {
        let mut from = 0;
        for _ in 0..index {
            from += page[from..].find(open).unwrap() + open.len();
        }
        let start = from + page[from..].find(open).unwrap() + open.len();
        let end = start + page[start..].find(close).unwrap();
        &page[start..end]
    }

    /// `html` without what its scripts and styles say (which may well write `{root}`).
    fn markup(html: &str) -> String {
        let mut out = String::new();
        let mut rest = html;
        while let Some(open) = rest
            .find("<script>")
            .into_iter()
            .chain(rest.find("<style>"))
            .min()
        {
            out.push_str(&rest[..open]);
            let close = if rest[open..].starts_with("<script>") {
                "</script>"
            } else {
                "</style>"
            };
            rest = &rest[open + rest[open..].find(close).unwrap() + close.len()..];
        }
        out.push_str(rest);
        out
    }

    fn every_rendering() -> Vec<(Page, String)> {
        let mut pages = Vec::new();
        for page in Page::ALL {
            for tenant in [None, Some("bpo-alpha")] {
                for role in [None, Some(Role::Viewer), Some(Role::Admin)] {
                    for tokens in [false, true] {
                        pages.push((page, page.render(tenant, role, tokens)));
                    }
                }
            }
        }
        pages
    }

    #[test]
    fn every_page_is_self_contained_and_filled() {
        for (page, html) in every_rendering() {
            assert!(html.starts_with("<!doctype html>"), "{page:?}");
            assert!(
                html.contains("<style>") && html.contains("<script>"),
                "{page:?}"
            );
            // (The SVG namespace URI is a name, never fetched.)
            for external in [
                "src=\"http",
                "href=\"http",
                "url(",
                "@import",
                "src=\"//",
                "https://",
                "<link",
            ] {
                assert!(!html.contains(external), "{page:?} refers to {external}");
            }
            let shell_placeholders = [
                "{title}",
                "{shared_style}",
                "{page_style}",
                "{page}",
                "{root}",
                "{tenant}",
                "{role}",
                "{auth}",
                "{body}",
                "{shared_script}",
                "{page_script}",
            ];
            let markup = markup(&html);
            for placeholder in shell_placeholders {
                assert!(
                    !markup.contains(placeholder),
                    "{page:?} keeps {placeholder}"
                );
            }
            assert_eq!(markup.matches("<body").count(), 1, "{page:?}: one body");
            assert_eq!(
                markup.matches("id=\"content\"").count(),
                1,
                "{page:?}: the skip link's target"
            );
        }
    }

    #[test]
    fn every_policy_allows_exactly_its_pages_own_scripts_and_styles() {
        for (page, html) in every_rendering() {
            let policy = page.content_security_policy();
            let hash = |text: &str| source_hash(text);
            let scripts = [
                hash(between(&html, "<script>", "</script>", 0)),
                hash(between(&html, "<script>", "</script>", 1)),
            ];
            let styles = [
                hash(between(&html, "<style>", "</style>", 0)),
                hash(between(&html, "<style>", "</style>", 1)),
            ];
            assert!(
                policy.contains(&format!("script-src {} {};", scripts[0], scripts[1])),
                "{page:?}: {policy}"
            );
            assert!(
                policy.contains(&format!("style-src {} {};", styles[0], styles[1])),
                "{page:?}: {policy}"
            );
            assert_eq!(
                html.matches("<script").count(),
                2,
                "{page:?}: the two hashed scripts"
            );
            assert_eq!(
                html.matches("<style").count(),
                2,
                "{page:?}: the two hashed styles"
            );
            // Inline handlers and style attributes would need 'unsafe-inline'.
            for inline in [
                " onclick=",
                " onload=",
                " onsubmit=",
                " style=\"",
                "javascript:",
            ] {
                assert!(!html.contains(inline), "{page:?} has {inline}");
            }
            assert!(!policy.contains("unsafe"), "{policy}");
            assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        }
    }

    #[test]
    fn each_page_gets_its_own_policy() {
        let policies: std::collections::BTreeSet<_> = Page::ALL
            .iter()
            .map(|page| page.content_security_policy())
            .collect();
        assert_eq!(policies.len(), Page::ALL.len());
    }

    #[test]
    fn the_request_decides_only_bodys_attributes() {
        let page = Page::Rta.render(Some("bpo-alpha"), Some(Role::Supervisor), true);
        assert!(
            page.contains(
                "<body data-page=\"rta\" data-root=\"/t/bpo-alpha\" data-tenant=\"bpo-alpha\" \
                 data-role=\"supervisor\" data-auth=\"tokens\">"
            ),
            "{}",
            &page[page.find("<body").unwrap()..][..200]
        );
        assert!(page.contains("href=\"/t/bpo-alpha/jobs\""));
        let open = Page::Rta.render(None, None, false);
        assert!(open.contains(
            "<body data-page=\"rta\" data-root=\"\" data-tenant=\"\" data-role=\"\" data-auth=\"open\">"
        ));
        assert!(open.contains("href=\"/jobs\""));
    }

    #[test]
    fn the_wallboard_carries_the_boards_as_an_attribute_that_cannot_end_early() {
        let boards = r#"[{"name":"care","teams":["A \"&\" <B>"]}]"#;
        let page = Page::Wallboard.render_with_boards(None, None, false, boards);
        let start = page.find("data-boards=\"").unwrap() + "data-boards=\"".len();
        let value = &page[start..start + page[start..].find('"').unwrap()];
        assert_eq!(
            value,
            "[{&quot;name&quot;:&quot;care&quot;,&quot;teams&quot;:[&quot;A \\&quot;&amp;\\&quot; &lt;B&gt;&quot;]}]"
        );
        let plain = Page::Wallboard.render(None, None, false);
        assert!(plain.contains("data-boards=\"[]\""));
    }

    #[test]
    fn fill_replaces_known_placeholders_once_and_keeps_other_braces() {
        assert_eq!(
            fill("a {x} b {y} {z} {", &[("x", "{y}"), ("y", "2")]),
            "a {y} b 2 {z} {"
        );
    }
}
