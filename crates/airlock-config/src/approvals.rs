//! The approval sections: `approvals` (how long a held statement waits), `access[].jit`
//! (just-in-time access through approved requests) and `notifications` (webhooks).

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{HumanDuration, Secret};

/// How long a statement held for approval waits for a decision; without one it is denied.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Approvals {
    /// The wait for a statement outside a transaction block (more than zero, at most 24h).
    pub timeout: HumanDuration,
    /// The wait for a statement inside a transaction block, which holds its locks meanwhile
    /// (more than zero, at most 24h).
    pub timeout_in_transaction: HumanDuration,
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals {
            timeout: HumanDuration(Duration::from_secs(5 * 60)),
            timeout_in_transaction: HumanDuration(Duration::from_secs(60)),
        }
    }
}

/// Just-in-time access: the rule's roles are usable only through a grant, created when an
/// access request (`airlock access request`) is approved, and ended when it expires or is
/// revoked.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Jit {
    /// The longest grant a request may ask for (more than zero, at most 7 days).
    pub max_duration: HumanDuration,
    /// Groups whose members may approve a request; never the requester.
    #[schemars(length(min = 1))]
    pub approvers: Vec<String>,
    /// How many distinct approvers are needed (1 to 10).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub min_approvals: u32,
    /// Requests from principals whose token claims all match these (the same syntax as an
    /// access rule's `claims`) are granted at once, by the policy; still recorded, still
    /// expiring. For CI: `{iss: https://token.actions.githubusercontent.com, ref:
    /// refs/heads/main, environment: production}`.
    #[serde(default)]
    pub preapprove: std::collections::BTreeMap<String, crate::ClaimValues>,
}

fn one() -> u32 {
    1
}

/// Where airlock reports approval and access events.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Notifications {
    /// HTTP endpoints that receive events, each as a POST. Deliveries are retried and never
    /// delay a statement.
    pub webhooks: Vec<Webhook>,
}

/// One webhook endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Webhook {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// The events sent to it; every event when absent.
    #[serde(default = "all_events")]
    #[schemars(length(min = 1))]
    pub events: Vec<WebhookEvent>,
    /// The body: `json` (airlock's event object) or `slack` (a Slack incoming-webhook message).
    #[serde(default)]
    pub format: WebhookFormat,
    /// The HMAC-SHA256 key that signs each delivery (header `X-Airlock-Signature`).
    pub secret: Option<Secret>,
    /// How long one delivery attempt may take (more than zero, at most 60s).
    #[serde(default = "webhook_timeout")]
    pub timeout: HumanDuration,
}

fn all_events() -> Vec<WebhookEvent> {
    WebhookEvent::ALL.to_vec()
}

fn webhook_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// An event a webhook can receive.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum WebhookEvent {
    /// A statement is held for approval.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// A held statement was approved, denied, timed out or cancelled.
    #[serde(rename = "approval.decided")]
    ApprovalDecided,
    /// Someone asked for just-in-time access.
    #[serde(rename = "access.requested")]
    AccessRequested,
    /// An access request was approved and its grant is live.
    #[serde(rename = "access.granted")]
    AccessGranted,
    /// A grant expired or was revoked.
    #[serde(rename = "access.expired")]
    AccessExpired,
}

impl WebhookEvent {
    /// Every event, in the order the documentation lists them.
    pub const ALL: [WebhookEvent; 5] = [
        WebhookEvent::ApprovalRequested,
        WebhookEvent::ApprovalDecided,
        WebhookEvent::AccessRequested,
        WebhookEvent::AccessGranted,
        WebhookEvent::AccessExpired,
    ];

    /// The name used in the configuration file and in deliveries, such as `approval.requested`.
    pub fn name(self) -> &'static str {
        match self {
            WebhookEvent::ApprovalRequested => "approval.requested",
            WebhookEvent::ApprovalDecided => "approval.decided",
            WebhookEvent::AccessRequested => "access.requested",
            WebhookEvent::AccessGranted => "access.granted",
            WebhookEvent::AccessExpired => "access.expired",
        }
    }

    /// The event with this name.
    pub fn from_name(name: &str) -> Option<WebhookEvent> {
        WebhookEvent::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The body of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// airlock's event object as JSON.
    #[default]
    Json,
    /// A Slack incoming-webhook message (`{"text": …}`).
    Slack,
}

/// Why `url` is not an `http://` or `https://` URL with a host, if it is not. A hand check of
/// the parts that matter here; the sender parses the URL again with its HTTP client.
pub(crate) fn webhook_url_problem(url: &str) -> Option<String> {
    let bad = || {
        Some(format!(
            "{url:?} is not an http:// or https:// URL with a host"
        ))
    };
    if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad();
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad();
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return bad();
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Some(
            "holds credentials (user@); deliveries are authenticated by their signature: use `secret`"
                .to_owned(),
        );
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            return bad();
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return bad();
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return bad(),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (authority.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if host_ok && port_ok { None } else { bad() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        for event in WebhookEvent::ALL {
            let yaml = serde_yaml::to_string(&event).unwrap();
            assert_eq!(yaml.trim(), event.name());
            assert_eq!(
                serde_yaml::from_str::<WebhookEvent>(event.name()).unwrap(),
                event
            );
            assert_eq!(WebhookEvent::from_name(event.name()), Some(event));
            assert_eq!(event.to_string(), event.name());
        }
        assert_eq!(WebhookEvent::from_name("approval"), None);
    }

    #[test]
    fn webhook_urls() {
        for url in [
            "http://127.0.0.1:9000/hook",
            "https://hooks.slack.com/services/T0/B0/XYZ",
            "HTTPS://example.com",
            "https://example.com?x=1",
            "http://[::1]:8080/h",
            "http://my_host/",
        ] {
            assert_eq!(webhook_url_problem(url), None, "{url}");
        }
        for url in [
            "",
            "example.com/hook",
            "ftp://example.com/",
            "http://",
            "http:///hook",
            "http://:80/",
            "http://example.com:/",
            "http://example.com:0/",
            "http://example.com:99999/",
            "http://exa mple.com/",
            "http://[::1/",
            "http://[zz]/",
            "http://[::1]x/",
            "http://ex%61mple.com/",
        ] {
            assert_eq!(
                webhook_url_problem(url),
                Some(format!(
                    "{url:?} is not an http:// or https:// URL with a host"
                )),
                "{url}"
            );
        }
        assert!(
            webhook_url_problem("https://user:pw@example.com/")
                .unwrap()
                .starts_with("holds credentials")
        );
    }
}
