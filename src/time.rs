//! Instants at the edges: parsing what users type and printing what they read.
//!
//! Inside, time is `DateTime<Utc>`. Users may give a full RFC 3339 instant
//! (`2026-11-20T14:00:00Z`, `2026-11-20T09:00:00-05:00`) or a bare date (`2026-11-20`,
//! meaning midnight UTC).

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// Parses an RFC 3339 instant or a `YYYY-MM-DD` date (midnight UTC).
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc());
    }
    Err(format!(
        "`{text}` is not a date (2026-11-20) or an RFC 3339 instant (2026-11-20T14:00:00Z)"
    ))
}

/// RFC 3339 with milliseconds and `Z`, the one format wfmd prints.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `serialize_with` helper: an instant as [`rfc3339`].
pub fn serialize_rfc3339<S: serde::Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339(*at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn dates_instants_and_offsets_parse_to_utc() {
        let midnight = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
        assert_eq!(parse_instant("2026-11-20"), Ok(midnight));
        assert_eq!(parse_instant("2026-11-20T00:00:00Z"), Ok(midnight));
        assert_eq!(
            parse_instant("2026-11-19T19:00:00-05:00"),
            Ok(midnight),
            "offsets are converted"
        );
        let err = parse_instant("yesterday").unwrap_err();
        assert!(err.contains("`yesterday`"), "{err}");
        assert_eq!(rfc3339(midnight), "2026-11-20T00:00:00.000Z");
    }
}
