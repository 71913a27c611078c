//! Guidance an agent can act on: every refusal carries a [`Hint`] saying
//! which rule refused, whether the same statement could succeed later, and
//! what would be allowed instead.
//!
//! Doors render it machine-readably, as one JSON object: PostgreSQL's
//! `HINT` field, a suffix of a MySQL error message, a field of an MCP tool
//! error. Its keys are stable (docs/agents.md):
//! - `rule`: the rule that refused (a guardrail's name, or a built-in one:
//!   `unknown`, `read-only`, `masking`, `rate`, …);
//! - `retry`: whether sending the same statement again, unchanged, may
//!   succeed (a timed-out approval, a rate limit), or never will;
//! - `try`: what would be allowed instead, in one sentence;
//! - `command`: when one gets it, the exact command to run (a JIT request).

use std::fmt;

/// What a refusal tells the client to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub rule: String,
    pub retry: bool,
    /// `try`.
    pub instead: String,
    pub command: Option<String>,
}

impl Hint {
    /// A refusal that the same statement will meet again.
    pub fn never(rule: &str, instead: impl Into<String>) -> Hint {
        Hint {
            rule: rule.to_string(),
            retry: false,
            instead: instead.into(),
            command: None,
        }
    }

    /// A refusal the same statement may not meet later.
    pub fn later(rule: &str, instead: impl Into<String>) -> Hint {
        Hint {
            retry: true,
            ..Hint::never(rule, instead)
        }
    }

    #[must_use]
    pub fn with_command(mut self, command: String) -> Hint {
        self.command = Some(command);
        self
    }

    /// The hint as a JSON value (the MCP door's field).
    pub fn to_value(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "rule": self.rule,
            "retry": self.retry,
            "try": self.instead,
        });
        if let Some(c) = &self.command {
            v["command"] = c.as_str().into();
        }
        v
    }

    /// The hint as JSON, one line, its keys always in the documented order
    /// (`rule`, `retry`, `try`, `command`), however serde_json orders maps.
    pub fn to_json(&self) -> String {
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        let command = self
            .command
            .as_deref()
            .map(|c| format!(",\"command\":{}", quote(c)))
            .unwrap_or_default();
        format!(
            "{{\"rule\":{},\"retry\":{},\"try\":{}{command}}}",
            quote(&self.rule),
            self.retry,
            quote(&self.instead)
        )
    }
}

impl Hint {
    /// [`Hint::to_json`] in at most `max` bytes when it can be: `try` is
    /// shortened (ending in `…`); the rule, `retry` and the command are
    /// kept whole.
    pub fn to_json_within(&self, max: usize) -> String {
        let mut json = self.to_json();
        if json.len() <= max {
            return json;
        }
        let mut short = self.clone();
        short.instead.push('…');
        while json.len() > max && short.instead.len() > '…'.len_utf8() {
            let cut = short.instead.len() - '…'.len_utf8();
            short.instead.truncate(cut);
            short.instead.pop();
            short.instead.push('…');
            json = short.to_json();
        }
        json
    }
}

impl fmt::Display for Hint {
    /// The JSON form every door sends.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

/// The command that requests `role` on `connection` just in time, for at
/// most `max` (30 minutes when the rule allows that long).
pub fn access_request(connection: &str, role: &str, max: std::time::Duration) -> String {
    let minutes = (max.as_secs() / 60).clamp(1, 30);
    format!(
        "airlock access request {} --role {} --for {minutes}m --reason \"<why>\"",
        shell_word(connection),
        shell_word(role)
    )
}

/// `word` as one shell word: quoted unless it is plainly safe.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@/".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_one_json_object_with_stable_keys() {
        let h = Hint::never("no-unbounded-writes", "add a WHERE clause");
        assert_eq!(
            h.to_string(),
            r#"{"rule":"no-unbounded-writes","retry":false,"try":"add a WHERE clause"}"#
        );
        let h = Hint::later("rate", "say \"when\"\n").with_command("x".into());
        let v: serde_json::Value = serde_json::from_str(&h.to_string()).unwrap();
        assert_eq!(v, h.to_value());
        assert_eq!(v["retry"], true);
        assert_eq!(v["try"], "say \"when\"\n");
        assert_eq!(v["command"], "x");
        assert!(!h.to_string().contains('\n'));
    }

    #[test]
    fn a_long_hint_is_shortened_in_its_try_only() {
        let h = Hint::never("r", "é\"".repeat(300)).with_command("airlock x".into());
        let json = h.to_json_within(200);
        assert!(json.len() <= 200, "{}", json.len());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (&v["rule"], &v["command"]),
            (&"r".into(), &"airlock x".into())
        );
        assert!(v["try"].as_str().unwrap().ends_with('…'));
        let short = Hint::never("r", "fine");
        assert_eq!(short.to_json_within(200), short.to_json());
    }

    #[test]
    fn an_access_request_command_quotes_what_a_shell_would_split() {
        let thirty = std::time::Duration::from_secs(3600);
        assert_eq!(
            access_request("orders", "admin", thirty),
            "airlock access request orders --role admin --for 30m --reason \"<why>\""
        );
        assert_eq!(
            access_request("my db", "it's", std::time::Duration::from_secs(600)),
            "airlock access request 'my db' --role 'it'\\''s' --for 10m --reason \"<why>\""
        );
    }
}
