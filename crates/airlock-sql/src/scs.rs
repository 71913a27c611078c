//! Parsing text from a session with `standard_conforming_strings = off`.
//!
//! pg_query always parses with `standard_conforming_strings = on`. In a
//! session where it is off, a backslash inside a plain `'…'` string escapes
//! the next character, so the server and the parser would disagree about
//! where strings end: `SELECT 'a\' , ' ; DELETE FROM t; -- '` is one
//! harmless SELECT to pg_query and a SELECT plus a DELETE to the server.
//!
//! With the setting off, a plain string means exactly what an escape string
//! `E'…'` means with it on. So [`to_conforming`] rewrites every plain string
//! literal that contains a backslash into an `E'…'` literal, and the parser
//! then sees what the server will. The lexer here only has to find where
//! plain strings start; everything it cannot be sure about is refused.

use std::borrow::Cow;

/// Why a text cannot be read as a `standard_conforming_strings = off`
/// session's server reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unconforming {
    /// A Unicode `U&'…'` string at byte `at`, which PostgreSQL's scanner
    /// itself refuses in such a session ("unsafe use of string constant
    /// with Unicode escapes").
    UnicodeString { at: usize },
    /// A form this rewrite does not handle (a national `N'…'` or typed
    /// string with a backslash): the caller treats it as unclassifiable.
    Unhandled,
}

/// `sql` as a `standard_conforming_strings = on` parser must see it, or why
/// it cannot be.
pub fn to_conforming(sql: &str) -> Result<Cow<'_, str>, Unconforming> {
    let unicode = sql
        .as_bytes()
        .windows(3)
        .any(|w| w[0].eq_ignore_ascii_case(&b'u') && w[1] == b'&' && w[2] == b'\'');
    if !sql.contains('\\') && !unicode {
        return Ok(Cow::Borrowed(sql));
    }
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'$' if !prev_is_ident(b, i) => match dollar_tag(b, i) {
                Some(tag_len) => {
                    let tag = &b[i..i + tag_len];
                    let body = i + tag_len;
                    i = find(b, body, tag).map_or(b.len(), |end| end + tag_len);
                }
                None => i += 1,
            },
            b'\'' => {
                let prefix = prefix_of(b, i);
                let escaping = match prefix {
                    Prefix::Escape => true,
                    Prefix::Plain => true,
                    Prefix::Bit => false,
                    Prefix::Unicode(at) => return Err(Unconforming::UnicodeString { at }),
                    Prefix::Other => {
                        // N'…' and typed strings: refuse if a backslash is
                        // inside.
                        let end = string_end(b, i, true);
                        if b[i..end].contains(&b'\\') {
                            return Err(Unconforming::Unhandled);
                        }
                        i = end;
                        continue;
                    }
                };
                let end = string_end(b, i, escaping);
                if prefix == Prefix::Plain && b[i..end].contains(&b'\\') {
                    out.push_str(&sql[copied..i]);
                    out.push('E');
                    copied = i;
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Ok(Cow::Owned(out))
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Prefix {
    Plain,
    Escape,
    Bit,
    /// `U&`, starting at this byte.
    Unicode(usize),
    Other,
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && is_ident(b[i - 1])
}

/// What kind of literal the quote at `i` opens, from the letters before it.
fn prefix_of(b: &[u8], i: usize) -> Prefix {
    let start = b[..i]
        .iter()
        .rposition(|&c| !is_ident(c) && c != b'&')
        .map_or(0, |p| p + 1);
    let word = &b[start..i];
    match word {
        [] => Prefix::Plain,
        [e] if e.eq_ignore_ascii_case(&b'e') => Prefix::Escape,
        [x] if x.eq_ignore_ascii_case(&b'b') || x.eq_ignore_ascii_case(&b'x') => Prefix::Bit,
        [u, b'&'] if u.eq_ignore_ascii_case(&b'u') => Prefix::Unicode(start),
        _ => Prefix::Other,
    }
}

/// The index after the string literal opening at `i`. `''` doubles a quote;
/// with `escaping`, a backslash escapes the next byte.
fn string_end(b: &[u8], i: usize, escaping: bool) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if escaping => j += 2,
            b'\'' if b.get(j + 1) == Some(&b'\'') => j += 2,
            b'\'' => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// The length of a dollar-quote tag (`$$`, `$tag$`) starting at `i`.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(u8::is_ascii_digit) {
        return None; // a parameter such as $1
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_plain_strings_with_backslashes() {
        let cases = [
            ("select 1", "select 1"),
            (r"select 'a\'b'", r"select E'a\'b'"),
            (
                r"select 'a\' , ' ; delete from t; -- '",
                r"select E'a\' , ' ; delete from t; -- '",
            ),
            (r"select E'a\'b', 'c'", r"select E'a\'b', 'c'"),
            (r"select 'x''y\\'", r"select E'x''y\\'"),
            (r"select $$a\'$$, 'b\n'", r"select $$a\'$$, E'b\n'"),
            (r"select $t$ '\' $t$", r"select $t$ '\' $t$"),
            (r"select '\\' -- 'c\'", r"select E'\\' -- 'c\'"),
            (
                r"select /* '\' /* nested */ */ 'a\b'",
                r"select /* '\' /* nested */ */ E'a\b'",
            ),
            (
                r#"select "we\'ird" from t where a = 'q\''"#,
                r#"select "we\'ird" from t where a = E'q\''"#,
            ),
            (
                r"select B'101', X'ff', '\x'",
                r"select B'101', X'ff', E'\x'",
            ),
            (
                r"select a$b$ from t where c = 'd\'",
                r"select a$b$ from t where c = E'd\'",
            ),
            (r"select $1, '\'", r"select $1, E'\'"),
        ];
        for (input, want) in cases {
            assert_eq!(to_conforming(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn refuses_unicode_strings_and_national_strings_with_backslashes() {
        // PostgreSQL refuses every U&'' string in such a session.
        assert_eq!(
            to_conforming(r"select U&'\0041'"),
            Err(Unconforming::UnicodeString { at: 7 })
        );
        assert_eq!(
            to_conforming(r"select 1, u&'wrong: +0061' UESCAPE '+'"),
            Err(Unconforming::UnicodeString { at: 10 })
        );
        // Not a string: a Unicode identifier, or U& inside another string.
        assert!(to_conforming(r#"select 'tricky' AS U&"\" UESCAPE '!'"#).is_ok());
        assert!(to_conforming(r"select 'U&''x'''").is_ok());
        assert_eq!(to_conforming(r"select N'a\'"), Err(Unconforming::Unhandled));
        assert!(to_conforming(r"select N'a', '\'").is_ok());
    }

    #[test]
    fn the_rewrite_parses_as_the_server_would() {
        // With standard_conforming_strings off the server sees two
        // statements here; after the rewrite so does the parser.
        let sql = r"select 'a\' , ' ; delete from t; -- '";
        let fixed = to_conforming(sql).unwrap();
        let stmts = crate::Analyzer::default().analyze(&fixed);
        assert_eq!(stmts.len(), 2, "{fixed}");
        assert_eq!(stmts[1].kind, airlock_policy::StatementKind::Delete);
        assert_eq!(crate::Analyzer::default().analyze(sql).len(), 1);
    }
}
