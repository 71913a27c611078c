//! The SQL analyzers: never a panic, never an empty analysis, spans inside
//! the text, and `unknown` for whatever the parser cannot read.

use airlock_policy::statement::StatementKind;
use airlock_sql::mysql::{self, Mode};

/// PostgreSQL text as the simple and extended protocols carry it.
pub fn pg(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let analyzer = airlock_sql::Analyzer::new(&[]);
    let statements = analyzer.analyze(sql);
    well_formed(sql, &statements);
    if pg_query::parse(sql).is_err() {
        assert!(
            statements.iter().all(|s| s.kind == StatementKind::Unknown),
            "unparsable {sql:?} analyzed as {statements:?}"
        );
    }
}

/// MySQL text in each lexing mode (`ANSI_QUOTES`, `NO_BACKSLASH_ESCAPES`),
/// which the first byte picks.
pub fn mysql(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(sql) = std::str::from_utf8(rest) else {
        return;
    };
    let mode = Mode {
        ansi_quotes: first & 1 != 0,
        no_backslash_escapes: first & 2 != 0,
    };
    let analyzer = mysql::Analyzer::new(&[]);
    let statements = analyzer.analyze(sql, mode);
    well_formed(sql, &statements);
    let _ = mysql::tracked(sql, mode);
    if let Some(spans) = mysql::value_spans(sql, mode) {
        for (from, to) in spans {
            assert!(
                sql.get(from..to).is_some(),
                "value span {from}..{to} of {sql:?}"
            );
        }
    }
}

/// Never empty, spans inside the text, and every `unknown` says why.
fn well_formed(sql: &str, statements: &[airlock_policy::Statement]) {
    assert!(!statements.is_empty(), "an empty analysis of {sql:?}");
    for s in statements {
        assert!(
            sql.get(s.span.0..s.span.1).is_some(),
            "span {:?} of {sql:?}",
            s.span
        );
        if s.kind == StatementKind::Unknown {
            assert!(
                s.unknown_reason.is_some(),
                "unknown without a reason: {sql:?}"
            );
        }
    }
}
