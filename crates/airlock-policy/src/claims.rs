//! Matching principals by their token's claims: a path into the claim set,
//! and the values a rule accepts there.
//!
//! **Paths.** A dot separates levels: `kubernetes.io.namespace` reaches
//! `{"kubernetes.io": {"namespace": …}}`. Claim names may contain dots
//! themselves (Kubernetes puts its claims under `kubernetes.io`), so every
//! way of splitting the path into names is tried; when more than one
//! reaches a value and they differ (a token with both
//! `"kubernetes.io.namespace"` and `{"kubernetes.io": {"namespace"}}`), the
//! path is ambiguous and matches nothing. `\.` is a dot inside a name
//! that never splits, and `\\` a backslash.
//!
//! **Values.** A rule accepts one value or a list of them; a value with `*`
//! is a glob (`*` matches any run of characters, `/` included). A string
//! claim matches when an accepted value matches it; a number or boolean
//! compares as its JSON text (`123`, `true`); an array claim matches when
//! any of its elements does. A missing claim, `null` or an object matches
//! nothing.

use std::sync::Arc;

use serde_json::{Map, Value};

/// A token's claims, as verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims(pub Arc<Map<String, Value>>);

impl Claims {
    pub fn new(claims: Map<String, Value>) -> Claims {
        Claims(Arc::new(claims))
    }

    /// The value at `path` (see the module's path syntax); `None` when
    /// nothing is there, or when the path reaches different values.
    pub fn get(&self, path: &ClaimPath) -> Option<&Value> {
        let mut found = Vec::new();
        lookup(&self.0, &path.0, &mut found);
        let first = *found.first()?;
        found.iter().all(|v| *v == first).then_some(first)
    }
}

/// A parsed claim path: its segments, with escapes undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// Parses `path`; `None` for an empty path or an empty segment.
    pub fn parse(path: &str) -> Option<ClaimPath> {
        let mut segments = vec![String::new()];
        let mut chars = path.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('.' | '\\')) => segments.last_mut()?.push(e),
                    _ => return None,
                },
                '.' => segments.push(String::new()),
                c => segments.last_mut()?.push(c),
            }
        }
        segments
            .iter()
            .all(|s| !s.is_empty())
            .then_some(ClaimPath(segments))
    }
}

/// Every value `segments` reaches in `object`, one per way of grouping
/// them into names.
fn lookup<'v>(object: &'v Map<String, Value>, segments: &[String], found: &mut Vec<&'v Value>) {
    for k in 1..=segments.len() {
        let Some(value) = object.get(&segments[..k].join(".")) else {
            continue;
        };
        match (&segments[k..], value.as_object()) {
            ([], _) => found.push(value),
            (rest, Some(inner)) => lookup(inner, rest, found),
            (_, None) => {}
        }
    }
}

/// One claim condition of an access rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMatcher {
    /// The path as written, for messages.
    pub name: String,
    pub path: ClaimPath,
    /// Accepted values; `*` globs.
    pub accepts: Vec<String>,
}

impl ClaimMatcher {
    /// The condition `path` accepting `accepts`; one that matches nothing
    /// when the path does not parse (validation refuses such a file; a
    /// matcher never widens a rule by going missing).
    pub fn new(path: &str, accepts: Vec<String>) -> ClaimMatcher {
        match ClaimPath::parse(path) {
            Some(parsed) => ClaimMatcher {
                name: path.to_string(),
                path: parsed,
                accepts,
            },
            None => ClaimMatcher {
                name: path.to_string(),
                path: ClaimPath(vec![String::new()]),
                accepts: Vec::new(),
            },
        }
    }

    /// Whether `claims` hold an accepted value at the path.
    pub fn matches(&self, claims: &Claims) -> bool {
        claims
            .get(&self.path)
            .is_some_and(|v| self.accepts_value(v))
    }

    fn accepts_value(&self, value: &Value) -> bool {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(items) => {
                return items.iter().any(|v| !v.is_array() && self.accepts_value(v));
            }
            Value::Null | Value::Object(_) => return false,
        };
        self.accepts.iter().any(|pattern| glob(pattern, &text))
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters and everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut text) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        match text.find(part) {
            Some(at) => text = &text[at + part.len()..],
            None => return false,
        }
    }
    text.len() >= last.len() && text.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        Claims::new(v.as_object().unwrap().clone())
    }

    fn matcher(path: &str, accepts: &[&str]) -> ClaimMatcher {
        ClaimMatcher {
            name: path.into(),
            path: ClaimPath::parse(path).unwrap(),
            accepts: accepts.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn paths_reach_names_with_dots() {
        let k8s = claims(json!({
            "sub": "system:serviceaccount:agents:devin",
            "kubernetes.io": {"namespace": "agents", "serviceaccount": {"name": "devin"}},
            "a.b": 1,
            "a": {"b": 2},
            "x.y": "same",
            "x": {"y": "same"},
        }));
        assert!(matcher("kubernetes.io.namespace", &["agents"]).matches(&k8s));
        assert!(matcher("kubernetes.io.serviceaccount.name", &["devin"]).matches(&k8s));
        // Two readings that differ: ambiguous, nothing matches.
        assert!(!matcher("a.b", &["1"]).matches(&k8s));
        assert!(!matcher("a.b", &["2"]).matches(&k8s));
        assert!(!matcher("a.b", &["*"]).matches(&k8s));
        // Escaped, the dotted name alone; readings that agree match.
        assert!(matcher(r"a\.b", &["1"]).matches(&k8s));
        assert!(!matcher(r"a\.b", &["2"]).matches(&k8s));
        assert!(matcher("x.y", &["same"]).matches(&k8s));
        // A planted decoy makes the real claim ambiguous: refused.
        let decoy = claims(json!({
            "kubernetes.io": {"namespace": "agents"},
            "kubernetes": {"io": {"namespace": "other"}},
        }));
        assert!(!matcher("kubernetes.io.namespace", &["agents"]).matches(&decoy));
        assert_eq!(ClaimPath::parse(""), None);
        assert_eq!(ClaimPath::parse("a..b"), None);
        assert_eq!(ClaimPath::parse(r"a\x"), None);
    }

    #[test]
    fn values_types_and_globs() {
        let gh = claims(json!({
            "repository": "acme/app",
            "ref": "refs/heads/main",
            "repository_id": 123,
            "fork": false,
            "aud": ["airlock", "other"],
            "nested": {"x": 1},
            "nothing": null,
        }));
        assert!(matcher("repository", &["acme/app"]).matches(&gh));
        assert!(!matcher("repository", &["acme/app2"]).matches(&gh));
        assert!(matcher("repository", &["acme/*"]).matches(&gh));
        assert!(!matcher("repository", &["acme"]).matches(&gh));
        assert!(matcher("ref", &["refs/heads/dev", "refs/heads/main"]).matches(&gh));
        assert!(!matcher("ref", &["refs/pull/*"]).matches(&gh));
        assert!(matcher("repository_id", &["123"]).matches(&gh));
        assert!(matcher("fork", &["false"]).matches(&gh));
        assert!(matcher("aud", &["airlock"]).matches(&gh));
        assert!(!matcher("nested", &["*"]).matches(&gh));
        assert!(!matcher("nothing", &["*"]).matches(&gh));
        assert!(!matcher("missing", &["*"]).matches(&gh));
    }

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("*", "", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "abbbc", true),
            ("a*b*c", "a-b-c", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            (
                "repo:acme/*:ref:refs/heads/main",
                "repo:acme/app:ref:refs/heads/main",
                true,
            ),
            (
                "repo:acme/*:ref:refs/heads/main",
                "repo:acme/app:pull_request",
                false,
            ),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
    }
}
