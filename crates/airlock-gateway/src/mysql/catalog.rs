//! The MySQL door's catalog source: `information_schema` (the connection's
//! database and the server's own schemas) read into the neutral
//! `CatalogFacts` masking is compiled from.
//!
//! MySQL has databases where PostgreSQL has schemas: a relation's `schema`
//! is its database. Relation ids are assigned here, in the order read (the
//! wire names origins, so ids never leave the gateway). Column names are
//! case-insensitive in MySQL and are kept in lower case. Nothing in
//! `information_schema` says which columns a view reads, so every view is
//! untraceable: masked whole once anything is masked. The server's own
//! schemas are built in, except what shows other sessions' statements or
//! credentials: `performance_schema`, `mysql` and `sys` entirely, and
//! `information_schema.PROCESSLIST.INFO`.

use airlock_policy::masking::{CatalogFacts, CatalogRelation, RelationKind};

use super::upstream::QueryError;

/// The schemas read: the connection's database and the server's own. A
/// relation of another database is unknown to masking, so masked whole
/// (and a scan of every database would race other sessions' DDL and cost
/// time on a server with many).
const SCHEMAS: &str = "(DATABASE(), 'information_schema', 'performance_schema', 'mysql', 'sys')";

pub fn columns() -> String {
    format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, EXTRA \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN {SCHEMAS} \
         ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
    )
}

pub fn views() -> String {
    format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN {SCHEMAS}"
    )
}

pub fn routines() -> String {
    format!(
        "SELECT ROUTINE_SCHEMA, ROUTINE_NAME FROM information_schema.ROUTINES \
         WHERE ROUTINE_TYPE = 'FUNCTION' AND ROUTINE_SCHEMA IN {SCHEMAS}"
    )
}

type Rows = Vec<Vec<Option<String>>>;

/// Builds the facts from the answers to [`columns`], [`views`] and
/// [`routines`].
pub fn facts(columns: Rows, views: Rows, routines: Rows) -> Result<CatalogFacts, QueryError> {
    let text = |row: &[Option<String>], i: usize| -> Result<String, QueryError> {
        row.get(i)
            .cloned()
            .flatten()
            .ok_or(QueryError::Malformed("a NULL catalog name"))
    };
    let mut facts = CatalogFacts {
        first_user_id: 1,
        ..CatalogFacts::default()
    };
    let views: std::collections::HashSet<(String, String)> = views
        .iter()
        .map(|r| Ok((text(r, 0)?, text(r, 1)?)))
        .collect::<Result<_, QueryError>>()?;
    for row in &columns {
        let (schema, table, column) = (text(row, 0)?, text(row, 1)?, text(row, 2)?.to_lowercase());
        let position: i16 = text(row, 3)?
            .parse()
            .map_err(|_| QueryError::Malformed("a column position"))?;
        let generated = row
            .get(4)
            .cloned()
            .flatten()
            .is_some_and(|e| e.to_ascii_uppercase().contains("GENERATED"));
        let last = facts.relations.last_mut();
        let relation = match last {
            Some(r) if r.schema == schema && r.name == table => r,
            _ => {
                let oid = facts.relations.len() as u32 + 1;
                let kind = kind(&schema, &table);
                if views.contains(&(schema.clone(), table.clone())) {
                    facts.view_functions.push(oid);
                }
                facts.relations.push(CatalogRelation {
                    oid,
                    schema,
                    name: table,
                    columns: Vec::new(),
                    generated: Vec::new(),
                    kind,
                });
                facts.relations.last_mut().expect("pushed")
            }
        };
        relation.columns.push((position, column));
        if generated {
            relation.generated.push(position);
        }
    }
    for row in &routines {
        facts
            .user_functions
            .push((text(row, 0)?, text(row, 1)?.to_lowercase()));
    }
    Ok(facts)
}

fn kind(schema: &str, table: &str) -> RelationKind {
    match schema.to_ascii_lowercase().as_str() {
        "performance_schema" | "mysql" | "sys" => RelationKind::Exposes {
            column: None,
            built_in: true,
        },
        "information_schema" if table.eq_ignore_ascii_case("PROCESSLIST") => {
            RelationKind::Exposes {
                column: Some("info".into()),
                built_in: true,
            }
        }
        "information_schema" => RelationKind::BuiltIn,
        _ => RelationKind::User,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn relations_views_and_the_servers_own_schemas() {
        let facts = facts(
            vec![
                row(&["information_schema", "PROCESSLIST", "INFO", "8", ""]),
                row(&["mysql", "user", "authentication_string", "1", ""]),
                row(&["shop", "customers", "id", "1", ""]),
                row(&["shop", "customers", "SSN", "2", ""]),
                row(&["shop", "customers", "ssn_tail", "3", "VIRTUAL GENERATED"]),
                row(&["shop", "v", "ssn", "1", ""]),
            ],
            vec![row(&["shop", "v"])],
            vec![row(&["shop", "Reveal"])],
        )
        .unwrap();
        assert_eq!(facts.relations.len(), 4);
        let customers = &facts.relations[2];
        assert_eq!(
            (
                customers.schema.as_str(),
                customers.name.as_str(),
                customers.kind.clone()
            ),
            ("shop", "customers", RelationKind::User)
        );
        assert_eq!(customers.columns[1], (2, "ssn".to_string()));
        assert_eq!(customers.generated, vec![3]);
        assert_eq!(facts.view_functions, vec![facts.relations[3].oid]);
        assert!(
            matches!(facts.relations[0].kind, RelationKind::Exposes { column: Some(ref c), .. } if c == "info")
        );
        assert!(matches!(
            facts.relations[1].kind,
            RelationKind::Exposes { column: None, .. }
        ));
        assert_eq!(facts.user_functions, vec![("shop".into(), "reveal".into())]);
        assert!(super::facts(vec![vec![None]], vec![], vec![]).is_err());
    }
}
