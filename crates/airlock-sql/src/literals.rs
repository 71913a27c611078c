//! Where a statement's literal values and comments are, for recording.
//!
//! A recorded statement that touches masked columns must not carry the
//! values it compares or writes (`WHERE ssn = '123-45-6789'`). PostgreSQL's
//! own scanner finds every constant token (strings in every spelling,
//! numbers, bit strings) and every comment, so nothing a hand-written lexer
//! could miscount slips through.

use pg_query::protobuf::{KeywordKind, Token};

/// Byte ranges of `sql`'s constants and comments, in order; `None` when
/// PostgreSQL's scanner rejects the text (the caller then withholds it).
pub fn value_spans(sql: &str) -> Option<Vec<(usize, usize)>> {
    let scanned = pg_query::scan(sql).ok()?;
    let mut spans = Vec::new();
    for t in &scanned.tokens {
        let hides = matches!(
            Token::try_from(t.token),
            Ok(Token::Sconst
                | Token::Usconst
                | Token::Bconst
                | Token::Xconst
                | Token::Iconst
                | Token::Fconst
                | Token::SqlComment
                | Token::CComment)
        );
        if !hides {
            continue;
        }
        let (start, end) = (usize::try_from(t.start).ok()?, usize::try_from(t.end).ok()?);
        if start > end || end > sql.len() {
            return None;
        }
        spans.push((start, end));
    }
    Some(spans)
}

/// The words a client wrote in `sql`, as PostgreSQL would quote them back
/// in an error: identifiers (folded to lower case unless quoted),
/// keywords, numbers and the contents of plain string literals. Empty when
/// the scanner rejects the text.
pub fn own_words(sql: &str) -> Vec<String> {
    let Ok(scanned) = pg_query::scan(sql) else {
        return Vec::new();
    };
    let mut words = Vec::new();
    for t in &scanned.tokens {
        let (Ok(start), Ok(end)) = (usize::try_from(t.start), usize::try_from(t.end)) else {
            continue;
        };
        let Some(raw) = sql.get(start..end) else {
            continue;
        };
        let keyword = t.keyword_kind != KeywordKind::NoKeyword as i32;
        let word = match Token::try_from(t.token) {
            Ok(Token::Ident) if raw.starts_with('"') => raw.trim_matches('"').replace("\"\"", "\""),
            Ok(Token::Sconst) if raw.starts_with('\'') => raw
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .unwrap_or(raw)
                .replace("''", "'"),
            Ok(Token::Ident | Token::Iconst | Token::Fconst) => raw.to_lowercase(),
            _ if keyword => raw.to_lowercase(),
            _ => continue,
        };
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(sql: &str) -> Vec<&str> {
        value_spans(sql)
            .unwrap()
            .into_iter()
            .map(|(a, b)| &sql[a..b])
            .collect()
    }

    #[test]
    fn own_words_are_as_postgresql_quotes_them() {
        assert_eq!(
            own_words("SELECT \"Nme\", Age FROM people WHERE id = 'a''b' AND n = 12"),
            [
                "select", "Nme", "age", "from", "people", "where", "id", "a'b", "and", "n", "12"
            ]
        );
        assert!(own_words("select 'unterminated").is_empty());
    }

    #[test]
    fn finds_every_spelling_of_a_value() {
        assert_eq!(
            hidden("select * from t where ssn = '123-45-6789' and n = 42 and f = 1.5e3"),
            ["'123-45-6789'", "42", "1.5e3"]
        );
        assert_eq!(
            hidden("select E'a\\'b', $$dollar$$, $x$tagged$x$, U&'d\\0061t', B'101', X'ff'"),
            [
                "E'a\\'b'",
                "$$dollar$$",
                "$x$tagged$x$",
                "U&'d\\0061t'",
                "B'101'",
                "X'ff'"
            ]
        );
        assert_eq!(
            hidden("select 1 -- ssn 123-45-6789\n, /* card */ 2"),
            ["1", "-- ssn 123-45-6789", "/* card */", "2"]
        );
        // Identifiers and parameters are not values.
        assert_eq!(hidden("select \"ssn\", $1 from t"), Vec::<&str>::new());
    }

    #[test]
    fn unscannable_text_has_no_spans() {
        assert_eq!(value_spans("select 'unterminated"), None);
    }
}
