//! PostgreSQL's own error for a statement that does not parse: its
//! SQLSTATE, message and cursor position, as the server would report them.
//!
//! pg_query's Rust API gives only the message of a parse error.
//! libpg_query, which it links, also reports the cursor position; this
//! module asks it through its C API, on the cold path only (after
//! `pg_query::parse` failed). The SQLSTATE, DETAIL and HINT are not
//! reported at all: they are looked up by message in a table generated from
//! the parser's sources (`parse_sqlstate.rs`); every other parser error is
//! 42601 with neither.
//!
//! This is the crate's one use of `unsafe`: a call into the C library the
//! `pg_query` crate already links, with the result freed by the library's
//! own function before returning.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};

use airlock_policy::SyntaxError;

use crate::parse_sqlstate::PARSER_ERRORS;

#[repr(C)]
struct PgQueryError {
    message: *mut c_char,
    funcname: *mut c_char,
    filename: *mut c_char,
    lineno: c_int,
    cursorpos: c_int,
    context: *mut c_char,
}

#[repr(C)]
struct PgQueryParseResult {
    parse_tree: *mut c_char,
    stderr_buffer: *mut c_char,
    error: *mut PgQueryError,
}

unsafe extern "C" {
    fn pg_query_parse(input: *const c_char) -> PgQueryParseResult;
    fn pg_query_free_parse_result(result: PgQueryParseResult);
}

/// PostgreSQL's error for `sql`, which `pg_query::parse` refused with
/// `message`. `None` when the parser accepts it after all.
pub fn of(sql: &str, message: &str) -> Option<SyntaxError> {
    let position = cursor_position(sql)?;
    let (code, detail, hint) = known(sql, message);
    Some(SyntaxError {
        code,
        message: message.to_string(),
        position,
        detail,
        hint,
    })
}

/// The SQLSTATE, DETAIL and HINT of a raw parser error with this message
/// (42601 and neither when the table has none). "invalid Unicode escape" is
/// raised for `E''` strings (22025) and for `U&''` strings (42601, another
/// hint): the text tells which.
fn known(sql: &str, message: &str) -> (&'static str, Option<&'static str>, Option<&'static str>) {
    let unicode = sql.contains("U&") || sql.contains("u&");
    let mut found = PARSER_ERRORS
        .iter()
        .filter(|(pieces, ..)| matches_format(message, pieces));
    let first = found.next();
    let chosen = match (first, found.next()) {
        (Some(a), Some(b)) => Some(if (a.1 == "42601") == unicode { a } else { b }),
        (a, _) => a,
    };
    chosen.map_or(("42601", None, None), |(_, code, detail, hint)| {
        (code, *detail, *hint)
    })
}

/// The SQLSTATE of a raw parser error with this message.
pub fn sqlstate(message: &str) -> &'static str {
    known("", message).0
}

/// Whether `message` is `pieces` joined by arbitrary text (a format's
/// conversions).
fn matches_format(message: &str, pieces: &[&str]) -> bool {
    let [first, rest @ ..] = pieces else {
        return false;
    };
    let Some(mut at) = message.strip_prefix(first) else {
        return false;
    };
    for (i, piece) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        if last {
            return at.ends_with(piece);
        }
        match at.find(piece) {
            Some(n) => at = &at[n + piece.len()..],
            None => return false,
        }
    }
    at.is_empty()
}

/// The error's cursor position (1-based, in characters, as PostgreSQL
/// reports it; `Some(None)` when the error has none). `None` when the text
/// parses, or holds a NUL byte that no C string can carry.
fn cursor_position(sql: &str) -> Option<Option<u32>> {
    let input = CString::new(sql).ok()?;
    // SAFETY: `input` is a valid NUL-terminated string that outlives the
    // call; the result is read only before it is freed, by the library's
    // own function, exactly once.
    unsafe {
        let result = pg_query_parse(input.as_ptr());
        let position = result.error.as_ref().map(|e| {
            // libpg_query sets a message on every error.
            debug_assert!(!e.message.is_null() && !CStr::from_ptr(e.message).is_empty());
            u32::try_from(e.cursorpos).ok().filter(|p| *p > 0)
        });
        pg_query_free_parse_result(result);
        position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(sql: &str) -> SyntaxError {
        let message = match pg_query::parse(sql) {
            Err(pg_query::Error::Parse(m)) => m,
            other => panic!("{sql:?} parsed: {other:?}"),
        };
        of(sql, &message).expect("an error")
    }

    #[test]
    fn as_postgresql_reports_it() {
        // Positions and messages as psql shows them from PostgreSQL 15.
        let e = error("selec 1");
        assert_eq!(
            (e.code, e.message.as_str(), e.position),
            ("42601", "syntax error at or near \"selec\"", Some(1))
        );
        let e = error("select 1 from");
        assert_eq!(
            (e.code, e.message.as_str(), e.position),
            ("42601", "syntax error at end of input", Some(14))
        );
        // Positions count characters, not bytes.
        let e = error("select 'é' 'ü'");
        assert_eq!(e.position, Some(12));
        let e = error("alter index i alter column 0 set statistics 1000");
        assert_eq!(e.code, "22023");
        assert_eq!(e.message, "column number must be in range from 1 to 32767");
        let e = error("select 1::float(0)");
        assert_eq!(e.code, "22023");
        let e = error("create assertion a check (true)");
        assert_eq!(e.code, "0A000");
        let e = error("select 1 + ");
        assert_eq!(e.hint, None);
        let e = error("select 1 ! ");
        assert_eq!(e.code, "42601");
        let e = error("SELECT E'wrong: \\u061';");
        assert_eq!(
            (e.code, e.hint),
            (
                "22025",
                Some("Unicode escapes must be \\uXXXX or \\UXXXXXXXX.")
            )
        );
        let e = error("SELECT U&'wrong: \\061';");
        assert_eq!(
            (e.code, e.hint),
            (
                "42601",
                Some("Unicode escapes must be \\XXXX or \\+XXXXXX.")
            )
        );
        let e = error("CREATE PUBLICATION p FOR s.t");
        assert_eq!(e.message, "invalid publication object list");
        assert!(
            e.detail
                .is_some_and(|d| d.starts_with("One of TABLE or TABLES IN SCHEMA"))
        );
        let e = error("select 'unterminated");
        assert_eq!(e.code, "42601");
        assert_eq!(
            e.message,
            "unterminated quoted string at or near \"'unterminated\""
        );
        assert_eq!(e.position, Some(8));
    }

    #[test]
    fn formats_match_with_their_conversions() {
        assert!(matches_format("a x b", &["a ", " b"]));
        assert!(matches_format("exact", &["exact"]));
        assert!(!matches_format("exact!", &["exact"]));
        assert!(matches_format(
            "role name \"none\" is reserved",
            &["role name \"", "\" is reserved"]
        ));
        assert!(!matches_format(
            "role name",
            &["role name \"", "\" is reserved"]
        ));
        assert_eq!(sqlstate("something else entirely"), "42601");
    }

    #[test]
    fn a_text_that_parses_has_no_error() {
        assert_eq!(of("select 1", "whatever"), None);
    }
}
