//! The MySQL error numbers airlock answers with (the server's own, so
//! that clients and their users recognise them), with their SQLSTATEs.

/// ER_CON_COUNT_ERROR (08004): too many sessions.
pub const CON_COUNT: u16 = 1040;
/// ER_TOO_MANY_USER_CONNECTIONS (42000): the principal has too many sessions.
pub const TOO_MANY_USER_CONNECTIONS: u16 = 1203;
/// ER_HANDSHAKE_ERROR (08S01): a malformed login.
pub const HANDSHAKE_ERROR: u16 = 1043;
/// ER_DBACCESS_DENIED_ERROR (42000): a database the route does not grant.
pub const DBACCESS_DENIED: u16 = 1044;
/// ER_ACCESS_DENIED_ERROR (28000): a bad or expired token, or no access rule.
pub const ACCESS_DENIED: u16 = 1045;
/// ER_UNKNOWN_COM_ERROR (08S01): a command airlock does not relay.
pub const UNKNOWN_COM: u16 = 1047;
/// ER_NO_SUCH_THREAD (HY000): KILL of an id that is not the principal's.
pub const NO_SUCH_THREAD: u16 = 1094;
/// ER_UNKNOWN_ERROR (HY000): airlock's own failures: the audit journal
/// cannot be written, the upstream is unavailable.
pub const UNKNOWN_ERROR: u16 = 1105;
/// ER_NET_PACKET_TOO_LARGE (08S01).
pub const NET_PACKET_TOO_LARGE: u16 = 1153;
/// ER_NET_READ_INTERRUPTED (08S01): a client left a packet unfinished for
/// `limits.message_timeout`.
pub const NET_READ_INTERRUPTED: u16 = 1159;
/// ER_WRONG_ARGUMENTS (HY000): a COM_STMT_EXECUTE with the wrong number of
/// parameters.
pub const WRONG_ARGUMENTS: u16 = 1210;
/// ER_USER_LIMIT_REACHED (42000): the principal is over its statement rate
/// (`limits.per_principal.statements_per_second`).
pub const USER_LIMIT_REACHED: u16 = 1226;
/// ER_SPECIFIC_ACCESS_DENIED_ERROR (42000): a statement the policy
/// refuses, or whose approval was denied or timed out.
pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
/// ER_UNKNOWN_STMT_HANDLER (HY000): COM_STMT_* for an unknown statement id.
pub const UNKNOWN_STMT_HANDLER: u16 = 1243;
/// ER_NOT_SUPPORTED_AUTH_MODE (08004).
pub const NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
/// ER_INVALID_CHARACTER_STRING (HY000): a statement that is not UTF-8.
pub const INVALID_CHARACTER_STRING: u16 = 1300;
/// ER_SERVER_SHUTDOWN (08S01): the gateway is shutting down.
pub const SERVER_SHUTDOWN: u16 = 1053;
/// ER_CONNECTION_KILLED (70100): the session was cut (token or grant expired,
/// grant revoked).
pub const CONNECTION_KILLED: u16 = 1927;
