//! URLs as wfmd stores and shows them: without the credentials they may carry.
//!
//! A webhook URL may hold a receiver's credentials in its user part
//! (`https://user:password@host/…`) or its query (`?token=…`), and a redirect's
//! `Location` may hold anything. What reaches the database, a log line, an error
//! message or `wfmd config check` goes through here first; the real URL stays in memory,
//! from the configuration, for sending.

use std::error::Error;

use reqwest::Url;

/// What replaces a credential.
const MASK: &str = "***";

/// `url` with its user part and every query value replaced by `***`
/// (`https://***@host/path?token=***`); scheme, host, port, path, query keys and
/// fragment stay, so the result still says where requests go. A query item without
/// `=` is masked whole, since it may be a bare token. Not a URL at all: `(invalid url)`.
pub fn url(url: &str) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return "(invalid url)".to_owned();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Only fails for URLs that cannot have a user part, which then has none.
        let _ = parsed.set_password(None);
        let _ = parsed.set_username(MASK);
    }
    if let Some(query) = parsed.query() {
        let masked: Vec<String> = query
            .split('&')
            .filter(|item| !item.is_empty())
            .map(|item| match item.split_once('=') {
                Some((key, _)) => format!("{key}={MASK}"),
                None => MASK.to_owned(),
            })
            .collect();
        parsed.set_query(Some(&masked.join("&")));
    }
    parsed.to_string()
}

/// Where a redirect's `Location` points, for an error message: scheme, host, port and
/// path only (a relative location: its path). Neither user part nor query is shown.
pub fn location(location: Option<&str>) -> String {
    let Some(location) = location.map(str::trim).filter(|l| !l.is_empty()) else {
        return "no Location given".to_owned();
    };
    // A relative location is resolved against a base of our own, so it keeps only its
    // path, while a scheme-relative one (`//host/…`) shows its host.
    let relative = Url::parse(location).is_err() && !location.starts_with("//");
    let resolved = Url::parse(location)
        .or_else(|_| Url::parse("http://wfmd.invalid/").and_then(|base| base.join(location)));
    match resolved {
        Ok(target) if relative => format!("{} on the same host", target.path()),
        Ok(target) => {
            let host = target.host_str().unwrap_or_default();
            match target.port() {
                Some(port) => format!("{}://{host}:{port}{}", target.scheme(), target.path()),
                None => format!("{}://{host}{}", target.scheme(), target.path()),
            }
        }
        Err(_) => "an unreadable Location".to_owned(),
    }
}

/// An outbound request's failure for a message: what went wrong and why (its sources),
/// never the URL it went to, which may carry credentials.
pub fn transport_error(err: reqwest::Error) -> String {
    error_chain(&err.without_url())
}

/// `err` and its sources, each said once: reqwest's own message alone rarely says what
/// failed.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_part_and_query_values_are_masked_the_rest_kept() {
        assert_eq!(
            url("http://user:pa55@hooks.example.com:8443/in/wfmd?token=s3cret&channel=ops#b"),
            "http://***@hooks.example.com:8443/in/wfmd?token=***&channel=***#b"
        );
        assert_eq!(url("https://user@h.example/x"), "https://***@h.example/x");
        assert_eq!(url("https://:pw@h.example/x"), "https://***@h.example/x");
        assert_eq!(url("https://h.example/x?s3cret"), "https://h.example/x?***");
        assert_eq!(url("https://h.example/x"), "https://h.example/x");
        assert_eq!(url("not a url"), "(invalid url)");
    }

    #[test]
    fn masking_twice_changes_nothing() {
        let once = url("http://u:p@h.example/p?a=1&b");
        assert_eq!(url(&once), once);
    }

    #[test]
    fn redirect_locations_show_where_but_no_credentials() {
        assert_eq!(
            location(Some("http://admin:pw@10.0.0.5:8080/internal?key=abc")),
            "http://10.0.0.5:8080/internal"
        );
        assert_eq!(
            location(Some("/elsewhere?token=abc")),
            "/elsewhere on the same host"
        );
        assert_eq!(
            location(Some("//u:p@evil.example/x?y=z")),
            "http://evil.example/x"
        );
        assert_eq!(location(None), "no Location given");
    }
}
