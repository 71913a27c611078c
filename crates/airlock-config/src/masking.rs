//! The `masking` section: which result values are hidden, and how.

use schemars::JsonSchema;
use serde::Deserialize;

/// Masking of result data (rows, COPY output, error and notice text).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Masking {
    /// The rules; a value matched by several is masked by the first in file order.
    pub rules: Vec<MaskRule>,
    /// Refuse statements whose WHERE, JOIN, GROUP BY, HAVING or ORDER BY refer to a masked
    /// column, so its values cannot be inferred by filtering. Off by default.
    pub deny_predicates: bool,
    /// Flag result values that read like instructions to an agent (prompt-injection phrases,
    /// tool-call-shaped JSON, hidden Unicode) on the wire doors: the values pass unchanged, the
    /// PostgreSQL client gets a WARNING naming their rows and columns after the result, and the
    /// recording and the metrics keep them. Every result of a masked session is then scanned.
    /// Off by default (the MCP endpoint always flags). A masking rule with the
    /// `planted_instructions` detector masks such values instead.
    pub flag_planted_instructions: bool,
}

/// One masking rule: the columns it covers and/or the content detectors it runs, and the
/// strategy that hides what they match.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct MaskRule {
    pub name: String,
    /// `[schema.]table.column` globs (`*` matches within one part); a two-part pattern matches
    /// the table in any schema.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Content detectors, run on text values of every column.
    #[serde(default)]
    #[schemars(schema_with = "detector_names")]
    pub detect: Vec<String>,
    #[schemars(with = "StrategyRepr")]
    pub strategy: MaskStrategy,
}

/// How matched values are hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(from = "StrategyRepr")]
pub enum MaskStrategy {
    /// `*****` for text, NULL for other types.
    Redact,
    /// Keep the first or last characters: `{partial: {keep_last: 4}}`.
    Partial(Partial),
    /// `j***@example.com`.
    Email,
    /// A keyed HMAC pseudonym (key in the data dir): deterministic, joinable, not reversible.
    Hash,
    /// NULL.
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Partial {
    pub keep_first: u16,
    pub keep_last: u16,
}

/// The file's spelling of a strategy: a name, or `{partial: {…}}`. (serde_yaml spells enum
/// variants with data as YAML tags, which nobody writes by hand.)
#[derive(Deserialize, JsonSchema)]
#[serde(
    untagged,
    expecting = "redact, email, hash, null or {partial: {keep_first: N, keep_last: N}}"
)]
enum StrategyRepr {
    Name(StrategyName),
    Partial(PartialRepr),
    /// YAML reads an unquoted `null` as no value.
    Null(()),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PartialRepr {
    partial: Partial,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum StrategyName {
    Redact,
    Email,
    Hash,
    Null,
}

impl From<StrategyRepr> for MaskStrategy {
    fn from(r: StrategyRepr) -> Self {
        match r {
            StrategyRepr::Name(StrategyName::Redact) => MaskStrategy::Redact,
            StrategyRepr::Name(StrategyName::Email) => MaskStrategy::Email,
            StrategyRepr::Name(StrategyName::Hash) => MaskStrategy::Hash,
            StrategyRepr::Name(StrategyName::Null) | StrategyRepr::Null(()) => MaskStrategy::Null,
            StrategyRepr::Partial(p) => MaskStrategy::Partial(p.partial),
        }
    }
}

fn detector_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = airlock_policy::masking::Detector::ALL
        .iter()
        .map(|d| d.name())
        .collect();
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "string", "enum": names},
    })
}
