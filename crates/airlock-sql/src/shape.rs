//! The shape of a statement: its text with literal values taken out.
//!
//! `select abalance from accounts where aid = 48213` and `… aid = 7` have the
//! same shape and, unless a literal's value steers the classification (the
//! analyzer says when one does), the same analysis. The cache keys on shapes
//! so that statements with inlined literals are parsed once, not every time.
//!
//! A wrong shape would be a security hole: two statements that PostgreSQL
//! parses differently must never share one. So [`shape`] lexes only a
//! deliberately small language whose tokenization is unambiguous: ASCII
//! identifiers and keywords, double-quoted identifiers, numbers, plain
//! `'…'` strings without backslashes, whitespace and operator punctuation.
//! Anything else (comments, `$`, backslashes, prefixed strings such as
//! `E'…'` or `U&'…'`, non-ASCII bytes) returns `None`, and the statement is
//! cached by its exact text only.

/// The shape of `sql`, or `None` when its text is outside the small language
/// described above.
pub fn shape(sql: &str) -> Option<String> {
    shape_after(String::with_capacity(sql.len()), sql)
}

/// The shape of `sql`, appended to `prefix` (one allocation for a cache
/// key that starts with a marker).
pub fn shape_after(prefix: String, sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    let mut out = prefix;
    out.reserve(sql.len());
    let mut i = 0;
    // Two strings separated only by whitespace are one string to PostgreSQL
    // when a newline is among it, and an error otherwise: refuse both.
    let mut after_string = false;
    while i < b.len() {
        let c = b[i];
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\'') {
            after_string = false;
        }
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
                    i += 1;
                }
                out.push(' ');
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                // A word glued to a quote is a prefixed string (E'', U&'',
                // N'', B'', X'') or a typed literal: outside the language.
                if matches!(b.get(i), Some(b'\'' | b'$' | b'&' | b'"')) {
                    return None;
                }
                // `float(p)`: the grammar itself checks p's value (1 to 53),
                // so texts differing only in p may not both parse.
                if sql[start..i].eq_ignore_ascii_case("float")
                    && sql[i..].trim_start().starts_with('(')
                {
                    return None;
                }
                out.push_str(&sql[start..i]);
            }
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                // `1.2.3` is two numbers to PostgreSQL.
                if sql[start..i].matches('.').count() > 1 {
                    return None;
                }
                if matches!(b.get(i), Some(b'e' | b'E')) {
                    i += 1;
                    if matches!(b.get(i), Some(b'+' | b'-')) {
                        i += 1;
                    }
                    // `1e` is the number 1 followed by a name to PostgreSQL.
                    if !b.get(i).is_some_and(u8::is_ascii_digit) {
                        return None;
                    }
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                // `123abc`, `0x1F`, `1_000`: let the exact text decide.
                if b.get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    return None;
                }
                // PostgreSQL's scanner makes an integer that fits in 32 bits
                // one token (ICONST) and every other number another (FCONST),
                // and the grammar takes only the first in places (`FETCH 5`,
                // not `FETCH 5.5` or `FETCH 99999999999`): keep them apart.
                // Zero has a token of its own: `LIMIT 0` shows no row, and
                // its analysis says so (schema-only access).
                match sql[start..i].parse::<i32>() {
                    Ok(0) => out.push_str("\u{1}0"),
                    Ok(_) => out.push_str("\u{1}n"),
                    Err(_) => out.push_str("\u{1}f"),
                }
            }
            b'\'' => {
                if after_string {
                    return None;
                }
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
                        b'\'' => break,
                        b'\\' => return None,
                        c if !c.is_ascii() => return None,
                        _ => i += 1,
                    }
                }
                i += 1;
                after_string = true;
                out.push_str("\u{1}s");
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match b.get(i)? {
                        b'"' if b.get(i + 1) == Some(&b'"') => i += 2,
                        b'"' => break,
                        c if !c.is_ascii() => return None,
                        _ => i += 1,
                    }
                }
                i += 1;
                out.push_str(&sql[start..i]);
            }
            b'-' if b.get(i + 1) == Some(&b'-') => return None,
            b'/' if b.get(i + 1) == Some(&b'*') => return None,
            b'(' | b')' | b',' | b';' | b'.' | b':' | b'=' | b'<' | b'>' | b'+' | b'-' | b'*'
            | b'/' | b'%' | b'^' | b'[' | b']' | b'|' | b'!' | b'~' | b'@' | b'#' | b'&' => {
                out.push(c as char);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_taken_out() {
        assert_eq!(
            shape("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"),
            shape("SELECT abalance FROM pgbench_accounts WHERE aid = 7;")
        );
        assert_eq!(shape("select 'a''b', 1.5e-3"), shape("select 'x', 2.0"));
        assert_eq!(shape("fetch 5 from c"), shape("fetch 2147483647 from c"));
        assert_eq!(shape("select   1\n"), Some("select \u{1}n ".into()));
    }

    #[test]
    fn structure_is_kept() {
        let same = |a: &str, b: &str| shape(a).is_some() && shape(a) == shape(b);
        assert!(!same("select 1", "select 1, 2"));
        assert!(!same("select a from t", "select b from t"));
        assert!(!same("select \"a\" from t", "select \"b\" from t"));
        assert!(!same("delete from t where a = 1", "delete from t"));
        assert!(!same("select 1; delete from t", "select 1"));
        assert!(!same("begin read write", "begin read only"));
        // Integers that fit in 32 bits are another token than other numbers.
        assert!(!same("fetch 5 from c", "fetch 5.5 from c"));
        assert!(!same("fetch 5 from c", "fetch 2147483648 from c"));
        assert!(!same("select 1", "select 1e3"));
        assert!(!same(
            "explain (analyze off) delete from t",
            "explain (analyze on) delete from t"
        ));
    }

    #[test]
    fn outside_the_language_there_is_no_shape() {
        for sql in [
            "select 1 -- comment",
            "select /* c */ 1",
            "select $$x$$",
            "select $1",
            "select E'a'",
            "select e'\\''",
            "select U&'a'",
            "select N'a'",
            "select B'1'",
            "select X'ff'",
            "select date'2020-01-01'",
            "select 'a\\'",
            "select 'é'",
            "select \"é\"",
            "select 0x1F",
            "select 1_000",
            "select 123abc",
            "select 'a' 'b'",
            "select 'a'\n'b'",
            "select 1e from t",
            "select 1.2.3",
            "select 1e+ from t",
            "select 'unterminated",
            "select \"unterminated",
            "select `x`",
            "select {x}",
            "select ?",
            "select 1::float(5)",
            "select 1::FLOAT (5)",
        ] {
            assert_eq!(shape(sql), None, "{sql}");
        }
    }
}
