//! SQL syntax highlighting for statements shown to approvers: the text is
//! cut into tokens (keywords, strings, quoted names, comments, numbers,
//! the rest) that the template wraps in `<span class=…>`. Every token is
//! escaped by the template like any other text, so an attacker's statement
//! (`/* <script> */`) is shown, never run. Only the look depends on this
//! lexer: a wrong cut colours a token wrongly and changes nothing else.

/// What a token is, named by its CSS class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Keyword,
    String,
    Comment,
    Number,
    Plain,
}

impl Class {
    pub fn css(self) -> &'static str {
        match self {
            Class::Keyword => "kw",
            Class::String => "str",
            Class::Comment => "cm",
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
    "CASCADE",
    "COMMIT",
    "COPY",
    "CREATE",
    "DELETE",
    "DISTINCT",
    "DROP",
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
    "NOT",
    "NULL",
    "ON",
    "OR",
    "ORDER",
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

/// `sql` cut into classified pieces that, joined, are `sql` again.
pub fn tokens(sql: &str) -> Vec<(Class, &str)> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut plain = 0;
    fn flush<'a>(out: &mut Vec<(Class, &'a str)>, sql: &'a str, from: usize, to: usize) {
        if from < to {
            out.push((Class::Plain, &sql[from..to]));
        }
    }
    while i < bytes.len() {
        let rest = &bytes[i..];
        let (class, len) = if rest.starts_with(b"--") || rest[0] == b'#' {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            (Class::Comment, end)
        } else if rest.starts_with(b"/*") {
            let end = sql[i + 2..].find("*/").map_or(rest.len(), |e| e + 4);
            (Class::Comment, end)
        } else if matches!(rest[0], b'\'' | b'"' | b'`') {
            let quote = rest[0];
            let mut j = 1;
            while j < rest.len() {
                if rest[j] == quote {
                    if rest.get(j + 1) == Some(&quote) {
                        j += 2;
                        continue;
                    }
                    j += 1;
                    break;
                }
                j += 1;
            }
            let class = if quote == b'\'' {
                Class::String
            } else {
                Class::Plain
            };
            (class, j.min(rest.len()))
        } else if rest[0].is_ascii_digit() {
            let end = rest
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'.'))
                .unwrap_or(rest.len());
            (Class::Number, end)
        } else if rest[0].is_ascii_alphabetic() || rest[0] == b'_' {
            let end = rest
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$'))
                .unwrap_or(rest.len());
            let word = &sql[i..i + end];
            let keyword = KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word));
            (
                if keyword {
                    Class::Keyword
                } else {
                    Class::Plain
                },
                end,
            )
        } else {
            // One character (UTF-8: the whole of it).
            let len = sql[i..].chars().next().map_or(1, char::len_utf8);
            i += len;
            continue;
        };
        if class == Class::Plain {
            i += len;
            continue;
        }
        flush(&mut out, sql, plain, i);
        out.push((class, &sql[i..i + len]));
        i += len;
        plain = i;
    }
    flush(&mut out, sql, plain, sql.len());
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
            "'unterminated",
            "SELECT 'é' # mysql comment\nFROM t",
            "",
        ] {
            let joined: String = tokens(sql).iter().map(|(_, t)| *t).collect();
            assert_eq!(joined, sql);
        }
    }

    #[test]
    fn tokens_are_classified() {
        let t = tokens("DELETE FROM users /* x */ WHERE note = 'a' AND id = 42");
        let get = |c: Class| -> Vec<&str> {
            t.iter().filter(|(k, _)| *k == c).map(|(_, s)| *s).collect()
        };
        assert_eq!(get(Class::Keyword), ["DELETE", "FROM", "WHERE", "AND"]);
        assert_eq!(get(Class::Comment), ["/* x */"]);
        assert_eq!(get(Class::String), ["'a'"]);
        assert_eq!(get(Class::Number), ["42"]);
    }
}
