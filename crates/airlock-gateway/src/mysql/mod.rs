//! The MySQL/MariaDB door: the tokio driver around `airlock-mywire`'s
//! machines. It turns COM_QUERY texts into `Statement`s with the MySQL
//! analyzer, asks the engine and the judge, and applies the answers in
//! MySQL's wire format: ERR packets with MySQL error numbers, text rows
//! masked by the policy core's plan, origins from ColumnDefinition names.

pub(crate) mod binary;
pub(crate) mod catalog;
pub(crate) mod mask;
pub(crate) mod session;
pub(crate) mod upstream;

pub(crate) use crate::session::{cut_at, grant_revoked};

/// Literal spans for the recording's redaction, in the default `sql_mode`
/// (a text lexed with other modes is at worst redacted more).
pub(crate) fn value_spans(sql: &str) -> Option<Vec<(usize, usize)>> {
    airlock_sql::mysql::value_spans(sql, airlock_sql::mysql::Mode::default())
}
