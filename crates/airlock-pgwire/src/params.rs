//! Which startup parameters a client may pass through to the upstream.
//!
//! Every startup parameter other than `user`, `database` and `options` is a
//! setting (GUC) that PostgreSQL applies before the first statement, outside
//! any SQL the gateway could inspect: `role=postgres` would be a `SET ROLE`,
//! `default_transaction_read_only=off` would undo read-only mode. So settings
//! are allow-listed: the ones drivers send for encoding, dates and naming
//! pass; anything else is refused with `42501` naming the parameter.
//! `options` is accepted only when it holds `-c name=value` (or
//! `--name=value`) pairs of allowed settings, which are then forwarded as
//! plain parameters. `replication` is refused.

use crate::codec::Startup;

/// Settings a client may set at startup, in lower case (PostgreSQL setting
/// names are case-insensitive).
pub const ALLOWED_SETTINGS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "bytea_output",
    "client_min_messages",
];

fn allowed(name: &str) -> bool {
    ALLOWED_SETTINGS
        .iter()
        .any(|a| a.eq_ignore_ascii_case(name))
}

/// The settings to forward upstream, or the reason the startup is refused.
pub fn check(startup: &Startup) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (name, value) in &startup.params {
        match name.as_str() {
            "user" | "database" => {}
            n if n.starts_with("_pq_.") => {}
            "options" => {
                for (k, v) in parse_options(value)? {
                    if !allowed(&k) {
                        return Err(refusal(&k));
                    }
                    out.push((k, v));
                }
            }
            n if allowed(n) => out.push((name.clone(), value.clone())),
            n => return Err(refusal(n)),
        }
    }
    Ok(out)
}

fn refusal(name: &str) -> String {
    format!("startup parameter \"{name}\" is not allowed through airlock")
}

/// Splits an `options` value (`-c a=b --c=d`, backslash escapes spaces) into
/// settings.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next().ok_or("options: -c without a setting")?
        } else if let Some(rest) = w.strip_prefix("--").or_else(|| w.strip_prefix("-c")) {
            rest.to_string()
        } else {
            return Err(format!(
                "options: only -c name=value settings are allowed through airlock, not \"{w}\""
            ));
        };
        let (k, v) = setting
            .split_once('=')
            .ok_or_else(|| format!("options: \"{setting}\" is not name=value"))?;
        settings.push((k.replace('-', "_"), v.to_string()));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> Startup {
        Startup {
            major: 3,
            minor: 0,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn driver_parameters_pass() {
        let s = startup(&[
            ("user", "readonly"),
            ("database", "orders"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
        ]);
        let fwd = check(&s).unwrap();
        assert_eq!(fwd.len(), 5);
        assert_eq!(fwd[0], ("application_name".into(), "psql".into()));
    }

    #[test]
    fn escapes_are_refused() {
        for (k, v) in [
            ("role", "postgres"),
            ("session_authorization", "postgres"),
            ("default_transaction_read_only", "off"),
            ("replication", "database"),
            ("options", "-c default_transaction_read_only=off"),
            ("options", "--role=postgres"),
            ("options", "-crole=postgres"),
            ("options", "-c statement_timeout=5s -c role=x"),
            ("options", "-D /tmp"),
            ("options", "-c"),
            ("options", "-c novalue"),
        ] {
            let s = startup(&[("user", "u"), (k, v)]);
            assert!(check(&s).is_err(), "{k}={v} must be refused");
        }
    }

    #[test]
    fn options_settings_are_forwarded() {
        let s = startup(&[(
            "options",
            r"-c statement_timeout=5s --search-path=a\ b -capplication_name=x",
        )]);
        assert_eq!(
            check(&s).unwrap(),
            vec![
                ("statement_timeout".into(), "5s".into()),
                ("search_path".into(), "a b".into()),
                ("application_name".into(), "x".into()),
            ]
        );
    }
}
