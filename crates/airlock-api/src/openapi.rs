//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, written by
//! hand next to the routes it describes. A test checks that it documents
//! exactly the routes the router serves.

use serde_json::{Value as Json, json};

/// The document.
pub fn document() -> Json {
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
                                "kind": { "type": "string", "enum": ["session_start", "statement", "result", "session_end", "policy_reload"] }
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
