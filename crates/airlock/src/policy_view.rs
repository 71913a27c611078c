//! The policy in force as the API shows it (`GET /api/v1/policy`, the
//! console's policy page): connections without credentials, access rules,
//! masking rules and guardrails.

use airlock_config::Config;
use serde_json::{Value, json};

/// A readable name of a config enum value (its `Debug`, in snake case).
fn name(value: &impl std::fmt::Debug) -> String {
    let debug = format!("{value:?}");
    let mut out = String::with_capacity(debug.len() + 4);
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

pub fn policy_json(config: &Config) -> Value {
    let connections: Vec<Value> = config
        .connections
        .iter()
        .map(|(n, c)| {
            json!({
                "name": n,
                "protocol": name(&c.protocol),
                "upstream": format!("{}:{}/{}", c.upstream.host, c.port(), c.upstream.database),
                "roles": c.roles.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    let access: Vec<Value> = config
        .access
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "groups": r.groups,
                "subjects": r.subjects,
                "claims": r.claims.iter().map(|(k, v)| (k.clone(), json!(format!("{v:?}")))).collect::<serde_json::Map<_, _>>(),
                "connections": r.connections,
                "roles": r.roles,
                "mode": name(&r.mode),
                "unmask": r.unmask,
                "jit": r.jit.as_ref().map(|j| json!({
                    "max_duration": humantime::format_duration(j.max_duration.0).to_string(),
                    "approvers": j.approvers,
                    "min_approvals": j.min_approvals,
                })),
            })
        })
        .collect();
    let masking: Vec<Value> = config
        .masking
        .rules
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "columns": r.columns,
                "detect": r.detect,
                "strategy": format!("{:?}", r.strategy),
            })
        })
        .collect();
    let guardrails: Vec<Value> = config
        .guardrails
        .iter()
        .map(|g| {
            let m = &g.matches;
            let mut matched = Vec::new();
            if !m.effects.is_empty() {
                matched.push(format!("effects {}", m.effects.join(", ")));
            }
            if !m.statements.is_empty() {
                matched.push(format!("statements {}", m.statements.join(", ")));
            }
            if let Some(w) = &m.where_clause {
                matched.push(format!("where {}", name(w)));
            }
            if let Some(n) = m.estimated_rows_over {
                matched.push(format!("estimated rows over {n}"));
            }
            json!({
                "name": g.name,
                "match": matched.join("; "),
                "action": name(&g.action),
                "message": g.message,
                "approvers": g.approvers,
                "min_approvals": g.min_approvals,
            })
        })
        .collect();
    json!({
        "connections": connections,
        "access": access,
        "masking": masking,
        "guardrails": guardrails,
    })
}
