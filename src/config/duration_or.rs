//! Settings that are a duration or, for none, a word of their own: `"10m"` or `"off"`
//! for an automation that can be switched off, `"30d"` or `"forever"` for an age at
//! which nothing is ever pruned. One serde helper, told its word by a marker type.

use std::marker::PhantomData;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// The word a setting writes for `None`.
pub(super) trait NoneWord {
    const WORD: &'static str;
}

/// `"off"`.
pub(super) struct Off;

impl NoneWord for Off {
    const WORD: &'static str = "off";
}

/// `"forever"`.
pub(super) struct Forever;

impl NoneWord for Forever {
    const WORD: &'static str = "forever";
}

/// An `Option<Duration>` field as `#[serde(with = "DurationOr::<Off>")]` has it: a
/// duration such as `"10m"`, or `W`'s word for `None` (read in any case).
pub(super) struct DurationOr<W>(PhantomData<W>);

impl<W: NoneWord> DurationOr<W> {
    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_str(W::WORD),
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().eq_ignore_ascii_case(W::WORD) {
            return Ok(None);
        }
        humantime::parse_duration(text.trim())
            .map(Some)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{text}` is not `{}` or a duration: {e}",
                    W::WORD
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Settings {
        #[serde(with = "DurationOr::<Off>")]
        logout: Option<Duration>,
        #[serde(with = "DurationOr::<Forever>")]
        keep: Option<Duration>,
    }

    #[test]
    fn each_field_reads_and_writes_its_own_word_for_none() {
        let read: Settings = toml::from_str("logout = \" OFF \"\nkeep = \"30d\"").unwrap();
        assert_eq!(
            read,
            Settings {
                logout: None,
                keep: Some(Duration::from_secs(30 * 86_400)),
            }
        );
        let written = toml::to_string(&Settings {
            logout: Some(Duration::from_secs(600)),
            keep: None,
        })
        .unwrap();
        assert_eq!(written, "logout = \"10m\"\nkeep = \"forever\"\n");

        for (text, error) in [
            (
                "logout = \"forever\"\nkeep = \"1h\"",
                "`forever` is not `off` or a duration",
            ),
            (
                "logout = \"1h\"\nkeep = \"off\"",
                "`off` is not `forever` or a duration",
            ),
        ] {
            let found = toml::from_str::<Settings>(text).unwrap_err().to_string();
            assert!(found.contains(error), "{found}");
        }
    }
}
