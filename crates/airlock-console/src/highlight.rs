//! SQL syntax highlighting for statements shown to approvers: keywords and
//! numbers are coloured, everything else is plain text. The template
//! escapes every piece like any other text, so an attacker's statement is
//! shown, never run.
//!
//! Nothing is ever shown as inert. A highlighter that greys out comments
//! and strings would have to lex exactly as the server does, and the
//! dialects disagree (MySQL runs `/*! … */`, takes `\'` inside a string and
//! needs a space after `--`; `#` is a comment in MySQL and an operator in
//! PostgreSQL): a wrong cut would make code an approver must read look like
//! a comment. Colouring a keyword inside a string errs the other way, which
//! is safe: it draws the eye. The statement's kinds and effects, from the
//! real analyzer, are shown beside it.

/// What a token is, named by its CSS class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Keyword,
    Number,
    Plain,
}

impl Class {
    pub fn css(self) -> &'static str {
        match self {
            Class::Keyword => "kw",
            Class::Number => "num",
            Class::Plain => "",
        }
    }
}

const KEYWORDS: &[&str] = &[
    "ALTER",
    "AND",
    "AS",
    "BEGIN",
    "BY",
    "CALL",
    "CASCADE",
    "COMMIT",
    "COPY",
    "CREATE",
    "DELETE",
    "DISTINCT",
    "DO",
    "DROP",
    "EXECUTE",
    "EXPLAIN",
    "FROM",
    "GRANT",
    "GROUP",
    "HAVING",
    "IN",
    "INSERT",
    "INTO",
    "IS",
    "JOIN",
    "LEFT",
    "LIMIT",
    "LOAD",
    "MERGE",
    "NOT",
    "NULL",
    "ON",
    "OR",
    "ORDER",
    "PREPARE",
    "RENAME",
    "REPLACE",
    "RETURNING",
    "REVOKE",
    "ROLLBACK",
    "SELECT",
    "SET",
    "TABLE",
    "TRUNCATE",
    "UNION",
    "UPDATE",
    "USING",
    "VALUES",
    "WHERE",
    "WITH",
];

fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// `sql` cut into classified pieces that, joined, are `sql` again: words
/// that are keywords, runs of digits, and the plain text between them.
pub fn tokens(sql: &str) -> Vec<(Class, &str)> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut plain = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !word_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let len = bytes[i..]
            .iter()
            .position(|b| !word_byte(*b))
            .unwrap_or(bytes.len() - i);
        let piece = &sql[i..i + len];
        // Part of a longer identifier (`é1`): plain.
        let glued = i > 0 && !bytes[i - 1].is_ascii();
        let class = if glued {
            Class::Plain
        } else if piece.bytes().all(|b| b.is_ascii_digit()) {
            Class::Number
        } else if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(piece)) {
            Class::Keyword
        } else {
            Class::Plain
        };
        if class != Class::Plain {
            if plain < i {
                out.push((Class::Plain, &sql[plain..i]));
            }
            out.push((class, piece));
            plain = i + len;
        }
        i += len;
    }
    if plain < sql.len() {
        out.push((Class::Plain, &sql[plain..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_back_into_the_statement() {
        for sql in [
            "DELETE FROM users /* <script>alert(1)</script> */ WHERE id = 1",
            "select 'it''s', \"q\"\"x\", `b`, 1.5e3 -- tail",
            "/* unterminated",
            "SELECT 'é' # mysql comment\nFROM t1 WHERE é1 = 2",
            "",
        ] {
            let joined: String = tokens(sql).iter().map(|(_, t)| *t).collect();
            assert_eq!(joined, sql);
        }
    }

    #[test]
    fn keywords_and_numbers_are_coloured_and_nothing_looks_inert() {
        let t = tokens("DELETE FROM users /* x */ WHERE note = 'a' AND id = 42");
        let get = |c: Class| -> Vec<&str> {
            t.iter().filter(|(k, _)| *k == c).map(|(_, s)| *s).collect()
        };
        assert_eq!(get(Class::Keyword), ["DELETE", "FROM", "WHERE", "AND"]);
        assert_eq!(get(Class::Number), ["42"]);
        assert!(
            tokens("SELECT é1")
                .iter()
                .all(|(c, s)| *c != Class::Number || *s != "1")
        );
        // What one dialect runs although a naive lexer would call it a
        // comment or a string is coloured like the rest of the statement.
        for sql in [
            "SELECT 'x\\'' , 'y' ; DELETE FROM t -- '",
            "SELECT 1 /*!50000 ; DROP TABLE t */",
            "SELECT 1 --x\nDELETE FROM t",
        ] {
            let kw: Vec<&str> = tokens(sql)
                .into_iter()
                .filter(|(c, _)| *c == Class::Keyword)
                .map(|(_, s)| s)
                .collect();
            assert!(
                kw.contains(&"DELETE") || kw.contains(&"DROP"),
                "{sql}: {kw:?}"
            );
        }
    }
}
