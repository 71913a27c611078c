//! The `guardrails` section: decisions on statements by effect.

use schemars::JsonSchema;
use serde::Deserialize;

/// One guardrail. Every condition under `match` must hold; a list holds when any entry does.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Guardrail {
    pub name: String,
    #[serde(rename = "match")]
    pub matches: GuardrailMatch,
    pub action: GuardrailAction,
    /// Shown to the client with a denial.
    pub message: Option<String>,
    /// What to do instead, sent with a denial as the hint's `try` (default:
    /// derived from the match, such as "add a WHERE clause"). docs/agents.md.
    pub hint: Option<String>,
    /// Groups whose members may approve (required with `action: approve` or `review_commit`).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How many distinct approvers are needed (1 to 10; default 1). Only with `action: approve` or `review_commit`.
    #[schemars(range(min = 1, max = 10))]
    pub min_approvals: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct GuardrailMatch {
    /// Matches statements with any of these effects.
    #[serde(default)]
    #[schemars(schema_with = "effect_names")]
    pub effects: Vec<String>,
    /// Matches statements that are, or run, any of these kinds.
    #[serde(default)]
    #[schemars(schema_with = "statement_names")]
    pub statements: Vec<String>,
    /// `absent`: an UPDATE/DELETE without WHERE; `present`: with one.
    #[serde(rename = "where")]
    pub where_clause: Option<WhereClause>,
    /// Matches UPDATE/DELETE whose planner row estimate is over this.
    pub estimated_rows_over: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhereClause {
    Absent,
    Present,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailAction {
    Allow,
    Approve,
    /// PostgreSQL: the statement runs inside the client's transaction block
    /// and the COMMIT waits for approval of what the transaction measurably
    /// did (rows per table, a masked sample). docs/agents.md.
    ReviewCommit,
    Deny,
}

fn names_schema(names: Vec<&'static str>) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "string", "enum": names},
    })
}

fn effect_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    names_schema(
        airlock_policy::Effect::ALL
            .iter()
            .map(|e| e.name())
            .collect(),
    )
}

fn statement_names(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    names_schema(
        airlock_policy::StatementKind::ALL
            .iter()
            .map(|k| k.name())
            .collect(),
    )
}
