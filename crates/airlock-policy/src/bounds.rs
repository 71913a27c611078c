//! Row bounds a statement proves by itself, so that no planner estimate
//! needs to be fetched: an UPDATE or DELETE whose WHERE clause pins every
//! column of a unique key of the table it changes touches at most one row.
//!
//! The facts come from the upstream's catalog through the door; this module
//! only matches them, and fails towards "no bound" (an estimate is then
//! fetched as before): a name it does not know, a name that could mean a
//! relation without such a key (an unqualified name is looked up in every
//! schema, since the session's search path decides), a statement with other
//! DML nested in it.

use std::collections::HashMap;

use crate::statement::{Statement, StatementKind};

/// A unique key: its columns.
type Key = Vec<String>;

/// The relations of the upstream's catalog by name, with the unique keys
/// that bound rows: those of plain tables without inheritance children and
/// of partitioned tables, enforced immediately, on plain columns, without a
/// predicate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UniqueKeys {
    /// Relation name → (schema, its bounding keys) for every relation of
    /// that name, keyed or not.
    by_name: HashMap<String, Vec<(String, Vec<Key>)>>,
}

impl UniqueKeys {
    /// Notes relation `schema.name` (any kind); call once per relation.
    pub fn add_relation(&mut self, schema: &str, name: &str) {
        let entries = self.by_name.entry(name.to_string()).or_default();
        if !entries.iter().any(|(s, _)| s == schema) {
            entries.push((schema.to_string(), Vec::new()));
        }
    }

    /// Notes a bounding key of relation `schema.name`.
    pub fn add_key(&mut self, schema: &str, name: &str, columns: Vec<String>) {
        self.add_relation(schema, name);
        let entries = self.by_name.get_mut(name).expect("added above");
        if let Some((_, keys)) = entries.iter_mut().find(|(s, _)| s == schema) {
            keys.push(columns);
        }
    }

    /// Whether `stmt` changes at most one row by itself.
    pub fn at_most_one_row(&self, stmt: &Statement) -> bool {
        if !matches!(stmt.kind, StatementKind::Update | StatementKind::Delete)
            || !stmt.nested.is_empty()
        {
            return false;
        }
        let Some(pinned) = &stmt.pinned else {
            return false;
        };
        let Some(candidates) = self.by_name.get(&pinned.relation.name) else {
            return false;
        };
        let pins = |keys: &Vec<Key>| {
            keys.iter()
                .any(|key| !key.is_empty() && key.iter().all(|c| pinned.columns.contains(c)))
        };
        match &pinned.relation.schema {
            Some(schema) => candidates.iter().any(|(s, keys)| s == schema && pins(keys)),
            None => candidates.iter().all(|(_, keys)| pins(keys)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::{Pinned, Relation};

    fn update(schema: Option<&str>, name: &str, columns: &[&str]) -> Statement {
        Statement {
            kind: StatementKind::Update,
            pinned: Some(Box::new(Pinned {
                relation: Relation {
                    schema: schema.map(str::to_string),
                    name: name.into(),
                },
                columns: columns.iter().map(|c| c.to_string()).collect(),
            })),
            unknown_reason: None,
            ..Statement::unknown("", (0, 0))
        }
    }

    fn keys() -> UniqueKeys {
        let mut k = UniqueKeys::default();
        k.add_key("public", "accounts", vec!["aid".into()]);
        k.add_key("public", "pairs", vec!["a".into(), "b".into()]);
        k.add_relation("public", "logs");
        k.add_key("public", "twice", vec!["id".into()]);
        k.add_relation("other", "twice");
        k
    }

    #[test]
    fn a_pinned_unique_key_bounds_rows() {
        let k = keys();
        assert!(k.at_most_one_row(&update(None, "accounts", &["aid"])));
        assert!(k.at_most_one_row(&update(Some("public"), "accounts", &["aid", "x"])));
        assert!(k.at_most_one_row(&update(None, "pairs", &["b", "a"])));
    }

    #[test]
    fn anything_less_is_no_bound() {
        let k = keys();
        // Part of a key, no key, an unknown relation or schema.
        assert!(!k.at_most_one_row(&update(None, "pairs", &["a"])));
        assert!(!k.at_most_one_row(&update(None, "logs", &["id"])));
        assert!(!k.at_most_one_row(&update(None, "nowhere", &["id"])));
        assert!(!k.at_most_one_row(&update(Some("other"), "accounts", &["aid"])));
        // An unqualified name some schema has without the key.
        assert!(!k.at_most_one_row(&update(None, "twice", &["id"])));
        assert!(k.at_most_one_row(&update(Some("public"), "twice", &["id"])));
        // Nothing pinned, DML nested, not an UPDATE or DELETE.
        let mut s = update(None, "accounts", &["aid"]);
        s.pinned = None;
        assert!(!k.at_most_one_row(&s));
        let mut s = update(None, "accounts", &["aid"]);
        s.nested = vec![StatementKind::Delete];
        assert!(!k.at_most_one_row(&s));
        let mut s = update(None, "accounts", &["aid"]);
        s.kind = StatementKind::Insert;
        assert!(!k.at_most_one_row(&s));
    }
}
