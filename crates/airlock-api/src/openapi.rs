//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, written by
//! hand next to the routes it describes. Tests check that it documents
//! exactly the routes the router serves, and that its schemas, request
//! bodies and query parameters name the fields of the wire types.

use serde_json::{Value as Json, json};

/// One approvals operation: `method` on a path, taking an optional JSON
/// `body` schema, answering `ok` (200 or 201) with `answer`.
fn operation(id: &str, summary: &str, body: Option<Json>, ok: &str, answer: Json) -> Json {
    let error = json!({ "$ref": "#/components/responses/Error" });
    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "tags": ["approvals"],
        "security": [{ "bearer": [] }],
        "responses": {
            ok: { "description": "OK", "content": { "application/json": { "schema": answer } } },
            "400": error.clone(),
            "401": { "$ref": "#/components/responses/Unauthorized" },
            "403": { "$ref": "#/components/responses/Forbidden" },
            "404": error.clone(),
            "409": { "description": "Already decided, timed out, or already voted by this approver", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
            "503": { "$ref": "#/components/responses/Unavailable" }
        }
    });
    if id.starts_with("show")
        || id.starts_with("approve")
        || id.starts_with("deny")
        || id.starts_with("revoke")
    {
        op["parameters"] = json!([
            { "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } }
        ]);
    }
    if id.starts_with("list") {
        op["parameters"] = json!([
            { "name": "status", "in": "query", "required": false, "description": "pending (default for approvals), open (default for access: pending and granted), all, or one status", "schema": { "type": "string" } },
            { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } }
        ]);
    }
    if let Some(schema) = body {
        op["requestBody"] =
            json!({ "required": false, "content": { "application/json": { "schema": schema } } });
    }
    op
}

/// The paths of `/api/v1/approvals` and `/api/v1/access`.
fn approval_paths() -> Vec<(&'static str, &'static str, Json)> {
    let one = json!({ "$ref": "#/components/schemas/Approval" });
    let list = |key: &str| json!({ "type": "object", "required": [key], "properties": { key: { "type": "array", "items": { "$ref": "#/components/schemas/Approval" } } } });
    let voted = json!({ "$ref": "#/components/schemas/VoteAnswer" });
    let reason = |required: bool| {
        let mut s = json!({ "type": "object", "properties": { "reason": { "type": ["string", "null"] } }, "additionalProperties": false });
        if required {
            s["required"] = json!(["reason"]);
        }
        s
    };
    vec![
        (
            "/api/v1/approvals",
            "get",
            operation(
                "listApprovals",
                "Held statements visible to the caller (requester, approver, auditor or admin)",
                None,
                "200",
                list("approvals"),
            ),
        ),
        (
            "/api/v1/approvals/{id}",
            "get",
            operation(
                "showApproval",
                "One held statement",
                None,
                "200",
                one.clone(),
            ),
        ),
        (
            "/api/v1/approvals/{id}/approve",
            "post",
            operation(
                "approveApproval",
                "Approve a held statement (an approver, never the requester)",
                Some(reason(false)),
                "200",
                voted.clone(),
            ),
        ),
        (
            "/api/v1/approvals/{id}/deny",
            "post",
            operation(
                "denyApproval",
                "Deny a held statement (an approver or an admin; a reason is required)",
                Some(reason(true)),
                "200",
                voted.clone(),
            ),
        ),
        (
            "/api/v1/access",
            "get",
            operation(
                "listAccess",
                "JIT access requests and grants visible to the caller",
                None,
                "200",
                list("requests"),
            ),
        ),
        (
            "/api/v1/access/requests",
            "post",
            operation(
                "requestAccess",
                "Request a JIT grant of a role on a connection",
                Some(json!({
                    "type": "object",
                    "required": ["connection", "role", "duration", "reason"],
                    "properties": {
                        "connection": { "type": "string" },
                        "role": { "type": "string" },
                        "duration": { "type": "string", "description": "e.g. 30m; at most the access rule's jit.max_duration" },
                        "reason": { "type": "string" }
                    },
                    "additionalProperties": false
                })),
                "201",
                one.clone(),
            ),
        ),
        (
            "/api/v1/access/{id}",
            "get",
            operation(
                "showAccess",
                "One JIT access request or grant",
                None,
                "200",
                one,
            ),
        ),
        (
            "/api/v1/access/{id}/approve",
            "post",
            operation(
                "approveAccess",
                "Approve a JIT access request",
                Some(reason(false)),
                "200",
                voted.clone(),
            ),
        ),
        (
            "/api/v1/access/{id}/deny",
            "post",
            operation(
                "denyAccess",
                "Deny a JIT access request (a reason is required)",
                Some(reason(true)),
                "200",
                voted.clone(),
            ),
        ),
        (
            "/api/v1/access/{id}/revoke",
            "post",
            operation(
                "revokeAccess",
                "Revoke a grant: every session using it is cut (the grantee, an approver or an admin; a reason is required)",
                Some(reason(true)),
                "200",
                voted,
            ),
        ),
    ]
}

/// The paths the gateway answers ([`crate::admin`]).
fn gateway_paths() -> Vec<(&'static str, &'static str, Json)> {
    let op = |id: &str, summary: &str, body: Option<Json>, answer: Json| {
        let mut op = json!({
            "operationId": id,
            "summary": summary,
            "tags": ["gateway"],
            "security": [{ "bearer": [] }],
            "responses": {
                "200": { "description": "OK", "content": { "application/json": { "schema": answer } } },
                "400": { "$ref": "#/components/responses/Error" },
                "401": { "$ref": "#/components/responses/Unauthorized" },
                "403": { "$ref": "#/components/responses/Forbidden" },
                "503": { "$ref": "#/components/responses/Unavailable" }
            }
        });
        if let Some(schema) = body {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
        }
        op
    };
    let verify = json!({
        "type": "object",
        "required": ["checked_at", "lines", "ok"],
        "properties": {
            "checked_at": { "type": ["string", "null"], "format": "date-time" },
            "lines": { "type": "array", "items": { "type": "string" } },
            "ok": { "type": ["boolean", "null"] }
        }
    });
    let mut terminate = op(
        "terminateSession",
        "End a live session: its client gets a FATAL naming the administrator and the reason, and its end is recorded (admins; a reason is required)",
        Some(
            json!({ "type": "object", "required": ["reason"], "properties": { "reason": { "type": "string" } }, "additionalProperties": false }),
        ),
        json!({ "type": "object", "required": ["id", "reason"], "properties": { "id": { "type": "string", "format": "uuid" }, "reason": { "type": "string" } } }),
    );
    terminate["parameters"] = json!([
        { "name": "id", "in": "path", "required": true, "description": "The session id", "schema": { "type": "string", "format": "uuid" } }
    ]);
    terminate["responses"]["404"] = json!({ "$ref": "#/components/responses/Error" });
    let mut explain = op(
        "explainPolicy",
        "What the gateway would decide for SQL from a principal with these groups (auditors and admins)",
        Some(json!({
            "type": "object",
            "required": ["connection", "sql"],
            "properties": {
                "connection": { "type": "string" },
                "groups": { "type": "array", "items": { "type": "string" } },
                "role": { "type": ["string", "null"] },
                "sql": { "type": "string" },
                "subject": { "type": ["string", "null"] }
            },
            "additionalProperties": false
        })),
        json!({ "type": "object", "description": "airlock policy explain --json's answer: route, statements, decision" }),
    );
    explain["responses"]["422"] = json!({ "$ref": "#/components/responses/Error" });
    vec![
        ("/api/v1/sessions/{id}/terminate", "post", terminate),
        (
            "/api/v1/policy",
            "get",
            op(
                "showPolicy",
                "The policy in force: connections (without credentials), access rules, masking rules and guardrails (auditors and admins)",
                None,
                json!({ "type": "object" }),
            ),
        ),
        ("/api/v1/policy/explain", "post", explain),
        (
            "/api/v1/audit/verify",
            "post",
            op(
                "verifyAudit",
                "Verify every hash chain of the journal and the store now (auditors and admins)",
                None,
                verify.clone(),
            ),
        ),
        (
            "/api/v1/audit/status",
            "get",
            op(
                "auditStatus",
                "What the last verification found, and when it ran (auditors and admins)",
                None,
                verify,
            ),
        ),
    ]
}

/// The document.
pub fn document() -> Json {
    let mut doc = base_document();
    for (path, method, op) in approval_paths().into_iter().chain(gateway_paths()) {
        doc["paths"][path] = json!({ method: op });
    }
    doc["components"]["schemas"]["Approval"] = json!({
        "type": "object",
        "required": ["id", "kind", "status", "requester", "connection", "role", "rule", "approvers", "min_approvals", "approvals", "created_at", "votes"],
        "properties": {
            "id": { "type": "string", "format": "uuid" },
            "kind": { "type": "string", "enum": ["statement", "access"] },
            "status": { "type": "string", "enum": ["pending", "approved", "denied", "timed_out", "cancelled", "abandoned", "granted", "expired", "revoked"] },
            "requester": { "type": "string" },
            "requester_issuer": { "type": "string" },
            "act": { "type": ["string", "null"] },
            "connection": { "type": "string" },
            "context": { "type": "array", "items": { "type": "string" }, "description": "A held statement shown alone: the session's last statements before it, redacted, oldest first" },
            "role": { "type": "string" },
            "rule": { "type": "string", "description": "The guardrail (statement) or access rule (access)" },
            "approvers": { "type": "array", "items": { "type": "string" } },
            "min_approvals": { "type": "integer" },
            "approvals": { "type": "integer" },
            "session": { "type": ["string", "null"] },
            "created_at": { "type": "string", "format": "date-time" },
            "deadline": { "type": ["string", "null"], "format": "date-time" },
            "decided_at": { "type": ["string", "null"], "format": "date-time" },
            "decided_by": { "type": ["string", "null"] },
            "reason": { "type": ["string", "null"] },
            "duration_seconds": { "type": ["integer", "null"] },
            "expires_at": { "type": ["string", "null"], "format": "date-time" },
            "detail": { "type": "object", "description": "statement: statement, parameters, kinds, effects, estimated_rows, in_transaction; access: reason" },
            "votes": { "type": "array", "items": { "$ref": "#/components/schemas/ApprovalVote" } }
        }
    });
    doc["components"]["schemas"]["ApprovalVote"] = json!({
        "type": "object",
        "required": ["at", "human", "reason", "vote", "voter"],
        "properties": {
            "at": { "type": "string", "format": "date-time" },
            "human": { "type": "string", "description": "The human behind the vote: one vote per human" },
            "reason": { "type": ["string", "null"] },
            "vote": { "type": "string", "enum": ["approve", "deny"] },
            "voter": { "type": "string", "description": "The identity that voted" }
        }
    });
    doc["components"]["schemas"]["VoteAnswer"] = json!({
        "type": "object",
        "required": ["result", "approval"],
        "properties": {
            "result": { "type": "string", "enum": ["approved", "denied", "counted", "granted", "revoked"] },
            "approval": { "$ref": "#/components/schemas/Approval" }
        }
    });
    doc
}

fn base_document() -> Json {
    let error = json!({ "$ref": "#/components/responses/Error" });
    let unauthorized = json!({ "$ref": "#/components/responses/Unauthorized" });
    let forbidden = json!({ "$ref": "#/components/responses/Forbidden" });
    let unavailable = json!({ "$ref": "#/components/responses/Unavailable" });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "airlock",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "airlock's HTTP API: health, readiness, metrics, the dev issuer's \
                discovery documents, and the read-only audit endpoints. Audit endpoints take an \
                OIDC bearer token from one of the gateway's issuers; the caller must be in a \
                group of api.auditor_groups or api.admin_groups. Errors are \
                {\"error\": \"...\"}.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "paths": {
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness: the process serves HTTP",
                    "tags": ["operations"],
                    "responses": {
                        "200": { "description": "Alive", "content": { "text/plain": { "schema": { "type": "string", "const": "ok\n" } } } }
                    }
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: the policy is loaded and the store and journal are writable",
                    "tags": ["operations"],
                    "responses": {
                        "200": { "description": "Ready", "content": { "text/plain": { "schema": { "type": "string" } } } },
                        "503": { "description": "Not ready, and why", "content": { "text/plain": { "schema": { "type": "string" } } } }
                    }
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Metrics in the Prometheus text format",
                    "tags": ["operations"],
                    "responses": {
                        "200": { "description": "Metrics", "content": { "text/plain": { "schema": { "type": "string" } } } }
                    }
                }
            },
            "/.well-known/openid-configuration": {
                "get": {
                    "operationId": "devIssuerDiscovery",
                    "summary": "The dev issuer's OIDC discovery document (when identity.dev_issuer is on)",
                    "tags": ["dev issuer"],
                    "responses": {
                        "200": { "description": "Discovery document", "content": { "application/json": { "schema": { "type": "object" } } } },
                        "404": { "description": "The dev issuer is off" }
                    }
                }
            },
            "/.well-known/jwks.json": {
                "get": {
                    "operationId": "devIssuerJwks",
                    "summary": "The dev issuer's signing keys (when identity.dev_issuer is on)",
                    "tags": ["dev issuer"],
                    "responses": {
                        "200": { "description": "JSON Web Key Set", "content": { "application/json": { "schema": { "type": "object", "required": ["keys"], "properties": { "keys": { "type": "array", "items": { "type": "object" } } } } } } },
                        "404": { "description": "The dev issuer is off" }
                    }
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "tags": ["meta"],
                    "responses": {
                        "200": { "description": "OpenAPI 3.1 document", "content": { "application/json": { "schema": { "type": "object" } } } }
                    }
                }
            },
            "/api/v1/sessions": {
                "get": {
                    "operationId": "listSessions",
                    "summary": "List recorded sessions, newest first",
                    "tags": ["audit"],
                    "security": [{ "bearer": [] }],
                    "parameters": [
                        { "name": "principal", "in": "query", "description": "Only this principal (the token subject)", "schema": { "type": "string" } },
                        { "name": "connection", "in": "query", "description": "Only this connection", "schema": { "type": "string" } },
                        { "name": "since", "in": "query", "description": "Only sessions started since: a duration before now (30m, 1h, 7d) or an RFC 3339 time (2024-05-01T12:00:00Z)", "schema": { "type": "string" }, "examples": { "duration": { "value": "1h" }, "time": { "value": "2024-05-01T12:00:00Z" } } },
                        { "name": "decision", "in": "query", "description": "Only sessions with at least one statement that got this decision", "schema": { "type": "string", "enum": ["allow", "deny", "approve"] } },
                        { "name": "limit", "in": "query", "description": "At most this many sessions", "schema": { "type": "integer", "minimum": 1, "maximum": crate::audit::MAX_LIMIT, "default": crate::audit::DEFAULT_LIMIT } }
                    ],
                    "responses": {
                        "200": {
                            "description": "Sessions",
                            "content": { "application/json": { "schema": {
                                "type": "object",
                                "required": ["sessions"],
                                "properties": { "sessions": { "type": "array", "items": { "$ref": "#/components/schemas/SessionSummary" } } }
                            } } }
                        },
                        "400": error.clone(),
                        "401": unauthorized.clone(),
                        "403": forbidden.clone(),
                        "503": unavailable.clone()
                    }
                }
            },
            "/api/v1/sessions/{id}": {
                "get": {
                    "operationId": "showSession",
                    "summary": "Every recorded event of one session, in journal order",
                    "tags": ["audit"],
                    "security": [{ "bearer": [] }],
                    "parameters": [
                        { "name": "id", "in": "path", "required": true, "description": "The session id", "schema": { "type": "string", "format": "uuid" } }
                    ],
                    "responses": {
                        "200": {
                            "description": "The session's events",
                            "content": { "application/json": { "schema": {
                                "type": "object",
                                "required": ["id", "events"],
                                "properties": {
                                    "id": { "type": "string", "format": "uuid" },
                                    "events": { "type": "array", "items": { "$ref": "#/components/schemas/StoredEvent" } }
                                }
                            } } }
                        },
                        "400": error.clone(),
                        "401": unauthorized,
                        "403": forbidden,
                        "404": error,
                        "503": unavailable
                    }
                }
            }
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An OIDC token from one of the gateway's issuers"
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "string" } }
                },
                "SessionSummary": {
                    "type": "object",
                    "required": ["id", "principal", "connection", "started_at", "stream", "seq"],
                    "properties": {
                        "id": { "type": "string", "format": "uuid" },
                        "live": { "type": "boolean", "description": "Open on the gateway that answered" },
                        "principal": { "type": ["string", "null"], "description": "The token subject" },
                        "act": { "type": ["string", "null"], "description": "The human the principal acts for" },
                        "groups": { "type": "array", "items": { "type": "string" } },
                        "connection": { "type": ["string", "null"] },
                        "role": { "type": "string" },
                        "access_rule": { "type": "string" },
                        "mode": { "type": "string", "enum": ["read-only", "read-write"] },
                        "client_addr": { "type": "string" },
                        "application_name": { "type": ["string", "null"] },
                        "tls": { "type": "boolean" },
                        "started_at": { "type": "string", "format": "date-time" },
                        "stream": { "type": "string", "format": "uuid", "description": "The journal stream of the session_start event" },
                        "seq": { "type": "integer", "minimum": 1 }
                    }
                },
                "StoredEvent": {
                    "type": "object",
                    "description": "One event as stored: its place in the hash chain and the event itself (see docs/audit.md for the event schema)",
                    "required": ["stream", "seq", "prev", "hash", "recorded_at"],
                    "properties": {
                        "stream": { "type": "string", "format": "uuid" },
                        "seq": { "type": "integer", "minimum": 1 },
                        "prev": { "type": "string", "pattern": "^[0-9a-f]{64}$" },
                        "hash": { "type": "string", "pattern": "^[0-9a-f]{64}$", "description": "SHA-256(prev || seq || payload)" },
                        "recorded_at": { "type": "integer", "description": "When the store received it, Unix milliseconds" },
                        "event": {
                            "type": "object",
                            "required": ["v", "at", "kind"],
                            "properties": {
                                "v": { "type": "integer" },
                                "at": { "type": "string", "format": "date-time" },
                                "kind": { "type": "string", "enum": ["session_start", "statement", "result", "session_end", "policy_reload", "approval"] }
                            },
                            "additionalProperties": true
                        },
                        "payload_b64": { "type": "string", "contentEncoding": "base64", "description": "Instead of event, when the stored payload is not JSON" }
                    }
                }
            },
            "responses": {
                "Error": {
                    "description": "Bad request, or not found",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                },
                "Unauthorized": {
                    "description": "No bearer token, or an invalid one",
                    "headers": { "WWW-Authenticate": { "schema": { "type": "string" } } },
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                },
                "Forbidden": {
                    "description": "The caller is neither an auditor nor an admin",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                },
                "Unavailable": {
                    "description": "The audit store is not connected, or API authentication is not configured",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
                }
            }
        }
    })
}
