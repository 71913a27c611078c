//! The SQLSTATE codes airlock itself raises. Names follow PostgreSQL's
//! `errcodes.txt`.

/// `08P01` protocol_violation.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `08006` connection_failure: the upstream could not be reached.
pub const CONNECTION_FAILURE: &str = "08006";
/// `08004` sqlserver_rejected_establishment_of_sqlconnection: the upstream
/// refused the gateway's login.
pub const SERVER_REJECTED_CONNECTION: &str = "08004";
/// `0A000` feature_not_supported.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `22021` character_not_in_repertoire: a statement that is not valid UTF-8.
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
/// `28000` invalid_authorization_specification: bad token, no access rule.
pub const INVALID_AUTHORIZATION: &str = "28000";
/// `42501` insufficient_privilege: a denied statement.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `53300` too_many_connections.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `54000` program_limit_exceeded: a message over the size limit.
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// `57P01` admin_shutdown: the gateway is shutting down.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `57P05` idle_session_timeout: a client left a message unfinished for
/// `limits.message_timeout`.
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
/// `58000` system_error: the audit trail is unavailable.
pub const SYSTEM_ERROR: &str = "58000";
