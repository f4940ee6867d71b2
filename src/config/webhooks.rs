//! `[[webhooks]]`: the subscribers of wfmd's events, their signing secrets and the
//! event types each wants.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The event types wfmd emits; the names are part of the webhook contract.
pub const EVENT_TYPES: [&str; 10] = [
    "agent.state_changed",
    "transition.rejected",
    "bulk.completed",
    "adherence.exception",
    "report.ready",
    "audit.checkpoint",
    "transition.deferred",
    "transition.expired",
    "transition.cancelled",
    "adherence.exception_reviewed",
];

/// Shortest accepted webhook signing key, in decoded bytes (the Standard Webhooks
/// reference secrets are 24 bytes).
const MIN_WEBHOOK_KEY_BYTES: usize = 24;

/// One subscriber of webhook events.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed. It may carry the receiver's credentials (a user part, a
    /// query token): shown and stored only masked ([`crate::redact::url`]).
    #[serde(serialize_with = "mask_url")]
    pub url: String,
    /// `whsec_<base64>`; a list of several during a rotation (each signs every message).
    #[serde(
        deserialize_with = "one_or_many_secrets",
        serialize_with = "mask_secrets"
    )]
    pub secret: Vec<SecretString>,
    /// Event types to send; all of them when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &crate::redact::url(&self.url))
            .field("secret", &self.secret)
            .field("events", &self.events)
            .finish()
    }
}

impl WebhookConfig {
    pub fn wants(&self, event_type: &str) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.iter().any(|e| e == event_type))
    }
}

/// Adds a line naming the key for every bad entry of `[[webhooks]]`.
pub fn validate(hooks: &[WebhookConfig], problems: &mut Vec<String>) {
    // Endpoints are stored and shown by their masked URL, so two that differ only
    // in credentials or query values would be one.
    let mut endpoints: Vec<String> = Vec::new();
    for (i, hook) in hooks.iter().enumerate() {
        let key = format!("webhooks[{i}]");
        // Not echoed: a URL that does not parse cannot be masked.
        match reqwest::Url::parse(&hook.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(url) => problems.push(format!(
                "{key}.url must be an http(s) URL, got scheme `{}`",
                url.scheme()
            )),
            Err(e) => problems.push(format!("{key}.url is not a valid URL ({e})")),
        }
        let endpoint = crate::redact::url(&hook.url);
        if reqwest::Url::parse(&hook.url).is_ok()
            && let Some(j) = endpoints.iter().position(|e| *e == endpoint)
        {
            problems.push(format!(
                "{key}.url is the same endpoint as webhooks[{j}].url once credentials and \
                 query values are masked (`{endpoint}`), which is how wfmd stores and shows \
                 endpoints; give each a different fragment (e.g. `#billing`), which is \
                 never sent"
            ));
        }
        endpoints.push(endpoint);
        if hook.secret.is_empty() {
            problems.push(format!("{key}.secret must be set"));
        }
        for (j, secret) in hook.secret.iter().enumerate() {
            if let Err(problem) = webhook_key(secret) {
                let which = if hook.secret.len() > 1 {
                    format!("{key}.secret[{j}]")
                } else {
                    format!("{key}.secret")
                };
                problems.push(format!("{which} {problem}"));
            }
        }
        for event in hook.events.iter().flatten() {
            if !EVENT_TYPES.contains(&event.as_str()) {
                problems.push(format!(
                    "{key}.events has unknown event type `{event}`; expected one of: {}",
                    EVENT_TYPES.join(", ")
                ));
            }
        }
    }
}

/// The decoded signing key of a `whsec_` secret, or what is wrong with it.
pub fn webhook_key(secret: &SecretString) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let text = secret.expose_secret();
    let encoded = text
        .strip_prefix("whsec_")
        .ok_or_else(|| "must start with `whsec_`".to_owned())?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "is not valid base64 after `whsec_`".to_owned())?;
    if key.len() < MIN_WEBHOOK_KEY_BYTES {
        return Err(format!(
            "decodes to {} bytes; at least {MIN_WEBHOOK_KEY_BYTES} are needed",
            key.len()
        ));
    }
    Ok(key)
}

fn one_or_many_secrets<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(secret) => vec![secret.into()],
        OneOrMany::Many(secrets) => secrets.into_iter().map(Into::into).collect(),
    })
}

fn mask_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::redact::url(url))
}

fn mask_secrets<S: Serializer>(secrets: &[SecretString], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(secrets.len()))?;
    for _ in secrets {
        seq.serialize_element("********")?;
    }
    seq.end()
}
