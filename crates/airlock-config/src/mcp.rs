//! The `mcp` section: the MCP endpoint on the HTTP listener.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::{ByteSize, HumanDuration};

/// The MCP endpoint (`/mcp` on the HTTP listener): agents use connections through MCP tools,
/// under the same policy as the wire doors. The caps below are the operator's: nothing a tool
/// call says can raise them.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Mcp {
    /// Serve the endpoint (needs `listen.http`).
    pub enabled: bool,
    /// The most rows one `query` returns; more are cut off and the result says `truncated`.
    pub max_rows: u64,
    /// The most bytes of rows (as JSON) one `query` returns.
    pub max_bytes: ByteSize,
    /// How long one statement may run upstream before it is cancelled.
    pub statement_timeout: HumanDuration,
    /// Browser `Origin` values allowed to call the endpoint (such as `https://app.example.com`).
    /// None by default: a request that carries any `Origin` is refused.
    pub allowed_origins: Vec<String>,
    /// The largest request body accepted.
    pub max_request_size: ByteSize,
}

impl Default for Mcp {
    fn default() -> Self {
        Mcp {
            enabled: false,
            max_rows: 1000,
            max_bytes: ByteSize(ByteSize::MIB.0),
            statement_timeout: HumanDuration(Duration::from_secs(30)),
            allowed_origins: Vec::new(),
            max_request_size: ByteSize(ByteSize::MIB.0),
        }
    }
}
