//! The MySQL/MariaDB door: the tokio driver around `airlock-mywire`'s
//! machines. It turns COM_QUERY texts into `Statement`s with the MySQL
//! analyzer, asks the engine and the judge, and applies the answers in
//! MySQL's wire format: ERR packets with MySQL error numbers, text rows
//! masked by the policy core's plan, origins from ColumnDefinition names.

pub(crate) mod binary;
pub(crate) mod catalog;
pub(crate) mod mask;
mod review;
pub(crate) mod session;
pub(crate) mod upstream;

/// Literal spans for the recording's redaction, in the default `sql_mode`
/// (a text lexed with other modes is at worst redacted more).
pub(crate) fn value_spans(sql: &str) -> Option<Vec<(usize, usize)>> {
    airlock_sql::mysql::value_spans(sql, airlock_sql::mysql::Mode::default())
}

/// The MySQL sessions `KILL QUERY <id>` can reach: airlock's connection id
/// (the one its greeting gave) to whose session it is and its upstream
/// connection. Only the same principal may kill a session's query.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: std::sync::Mutex<std::collections::HashMap<u32, Registered>>,
}

#[derive(Clone)]
pub(crate) struct Registered {
    /// `issuer subject`: who may kill.
    pub owner: String,
    pub target: crate::upstream::UpstreamTarget,
    pub credential: crate::upstream::Credential,
    /// The upstream's own connection id.
    pub upstream_id: u32,
}

/// Removes its session from [`Sessions`] when dropped.
pub(crate) struct Registration<'a> {
    sessions: &'a Sessions,
    id: u32,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.sessions
            .by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Sessions {
    pub(crate) fn register(&self, id: u32, session: Registered) -> Registration<'_> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, session);
        Registration { sessions: self, id }
    }

    /// The session `id`, if `owner` owns it.
    pub(crate) fn owned(&self, id: u32, owner: &str) -> Option<Registered> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .filter(|s| s.owner == owner)
            .cloned()
    }
}

/// The principal a session belongs to, as [`Sessions`] compares it.
pub(crate) fn owner(p: &airlock_policy::Principal) -> String {
    format!("{} {}", p.issuer, p.subject)
}
