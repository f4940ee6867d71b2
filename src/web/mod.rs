//! The wallboard page, embedded in the binary: one HTML document with its style and
//! script inlined, so it needs nothing from a CDN or a font service and works on an
//! operations-floor network without internet access.
//!
//! `index.html`, `style.css` and `app.js` are kept apart for editing; [`page`] puts
//! them together once.

use std::sync::LazyLock;

static PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("index.html")
        .replace("/*STYLE*/", include_str!("style.css"))
        .replace("/*SCRIPT*/", include_str!("app.js"))
});

/// The complete page.
pub fn page() -> &'static str {
    &PAGE
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
}
