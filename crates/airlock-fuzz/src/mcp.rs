//! The MCP endpoint's JSON-RPC decoding: rmcp's reading of a client
//! message (the endpoint has already refused bodies that are not one JSON
//! value). What decodes must encode and decode again.

use rmcp::model::ClientJsonRpcMessage;

/// The input is a POST body.
pub fn message(data: &[u8]) {
    let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(data) else {
        return;
    };
    let again = serde_json::to_vec(&message).expect("a decoded message encodes");
    serde_json::from_slice::<ClientJsonRpcMessage>(&again).expect("an encoded message decodes");
}
