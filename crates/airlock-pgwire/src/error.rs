//! Errors of the wire layer.

/// A peer broke the protocol. The session cannot continue: the driver sends
/// the client a FATAL `08P01` (or `54000` for [`ProtocolError::TooLarge`])
/// and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("invalid length of startup packet: {0}")]
    InvalidStartupLength(i32),
    #[error("invalid message length: {0}")]
    InvalidLength(i32),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("invalid UTF-8 in a protocol string")]
    InvalidUtf8,
    #[error("unexpected message type '{}' ({context})", char::from(*.tag))]
    UnexpectedMessage { tag: u8, context: &'static str },
}

impl ProtocolError {
    /// The SQLSTATE a client is shown for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ProtocolError::TooLarge { .. } => crate::sqlstate::PROGRAM_LIMIT_EXCEEDED,
            _ => crate::sqlstate::PROTOCOL_VIOLATION,
        }
    }
}
