//! The wallboard page, embedded in the binary: one HTML document with its style and
//! script inlined, so it needs nothing from a CDN or a font service and works on an
//! operations-floor network without internet access.
//!
//! `wallboard.html`, `wallboard.css` and `wallboard.js` are kept apart for editing; [`page`] puts
//! them together once. Its [`content_security_policy`] names that one script and that
//! one style by their hashes, so nothing else can run in the page, not even a script
//! smuggled into it.

use std::sync::LazyLock;

use base64::Engine;
use sha2::{Digest, Sha256};

const STYLE: &str = include_str!("wallboard.css");
const SCRIPT: &str = include_str!("wallboard.js");

static PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("wallboard.html")
        .replace("/*STYLE*/", STYLE)
        .replace("/*SCRIPT*/", SCRIPT)
});

static POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = |text: &str| {
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    };
    // `connect-src 'self'` covers the feed's ws:/wss: on the page's own host too.
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        hash(SCRIPT),
        hash(STYLE)
    )
});

/// The complete page.
pub fn page() -> &'static str {
    &PAGE
}

/// The page's `Content-Security-Policy`: only its own inline script and style, the API
/// and the feed of its own origin, and no framing (kiosk mode is the page itself).
pub fn content_security_policy() -> &'static str {
    &POLICY
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_is_self_contained() {
        let page = super::page();
        assert!(page.contains("<style>") && page.contains("<script>"));
        assert!(!page.contains("/*STYLE*/") && !page.contains("/*SCRIPT*/"));
        // (The SVG namespace URI is a name, never fetched.)
        for external in [
            "src=\"http",
            "href=\"http",
            "url(",
            "@import",
            "src=\"//",
            "https://",
        ] {
            assert!(!page.contains(external), "the page refers to {external}");
        }
    }

    #[test]
    fn the_policy_allows_exactly_the_pages_own_script_and_style() {
        use base64::Engine;
        use sha2::{Digest, Sha256};

        let page = super::page();
        let inline = |open: &str, close: &str| {
            let start = page.find(open).unwrap() + open.len();
            let end = start + page[start..].find(close).unwrap();
            let digest = Sha256::digest(&page.as_bytes()[start..end]);
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        let policy = super::content_security_policy();
        assert!(
            policy.contains(&format!("script-src {};", inline("<script>", "</script>"))),
            "{policy}"
        );
        assert!(
            policy.contains(&format!("style-src {};", inline("<style>", "</style>"))),
            "{policy}"
        );
        assert_eq!(
            page.matches("<script").count(),
            1,
            "one script, the hashed one"
        );
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    }
}
