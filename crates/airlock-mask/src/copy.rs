//! Rewriting rows of `COPY … TO STDOUT` output.
//!
//! PostgreSQL sends exactly one row per CopyData message, ending in `\n`,
//! so masking a COPY is rewriting one row at a time: split it into fields,
//! let the caller decide per field, and put the row back together. Fields
//! the caller keeps are copied byte for byte, so a row with nothing to mask
//! comes out exactly as it went in.
//!
//! Anything that does not look like one well-formed row is an error rather
//! than a guess: a misread field boundary would shift values into the wrong
//! columns and past their masks.

use std::borrow::Cow;
use std::fmt;

use memchr::{memchr2, memchr3};

/// One field of a row, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<'a> {
    Null,
    Value(Cow<'a, [u8]>),
}

/// What to do with a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Copy the field as it was.
    Keep,
    /// Write NULL.
    Null,
    /// Write these bytes, escaped or quoted as the format needs.
    Replace(Vec<u8>),
}

/// A CopyData payload that is not one well-formed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyError {
    /// The row does not end with a newline.
    MissingNewline,
    /// A newline or carriage return that is neither escaped, quoted nor
    /// the row's end: more than one row, or not COPY output.
    EmbeddedNewline,
    /// A text-format row ends in a lone backslash.
    TrailingBackslash,
    /// A CSV row ends inside a quoted field.
    UnclosedQuote,
}

impl fmt::Display for CopyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CopyError::MissingNewline => "COPY row does not end with a newline",
            CopyError::EmbeddedNewline => "COPY row contains an unescaped line break",
            CopyError::TrailingBackslash => "COPY row ends in a lone backslash",
            CopyError::UnclosedQuote => "COPY row ends inside a quoted field",
        })
    }
}

impl std::error::Error for CopyError {}

/// Rewrites one row of text-format COPY output into `out`. `edit` is called
/// with each column's index and unescaped value (`\N` is NULL). Replaced
/// values are escaped as PostgreSQL escapes them; on error `out` is left as
/// it was.
pub fn rewrite_text(
    row: &[u8],
    delimiter: u8,
    edit: impl FnMut(usize, &Field<'_>) -> Edit,
    out: &mut Vec<u8>,
) -> Result<(), CopyError> {
    let len = out.len();
    let result = text_row(row, delimiter, edit, out);
    if result.is_err() {
        out.truncate(len);
    }
    result
}

fn text_row(
    row: &[u8],
    delimiter: u8,
    mut edit: impl FnMut(usize, &Field<'_>) -> Edit,
    out: &mut Vec<u8>,
) -> Result<(), CopyError> {
    let Some((b'\n', body)) = row.split_last() else {
        return Err(CopyError::MissingNewline);
    };
    if memchr2(b'\n', b'\r', body).is_some() {
        return Err(CopyError::EmbeddedNewline);
    }
    out.reserve(row.len());
    let (mut start, mut column) = (0, 0);
    loop {
        let (end, escaped) = text_field_end(body, start, delimiter)?;
        let raw = &body[start..end];
        let field = if raw == b"\\N" {
            Field::Null
        } else if escaped {
            Field::Value(Cow::Owned(unescape_text(raw)))
        } else {
            Field::Value(Cow::Borrowed(raw))
        };
        match edit(column, &field) {
            Edit::Keep => out.extend_from_slice(raw),
            Edit::Null => out.extend_from_slice(b"\\N"),
            Edit::Replace(value) => escape_text(&value, delimiter, out),
        }
        if end == body.len() {
            out.push(b'\n');
            return Ok(());
        }
        out.push(delimiter);
        start = end + 1;
        column += 1;
    }
}

/// The end of the field starting at `start` (the next unescaped delimiter,
/// or the end of the body) and whether it contains escapes.
fn text_field_end(body: &[u8], start: usize, delimiter: u8) -> Result<(usize, bool), CopyError> {
    let (mut i, mut escaped) = (start, false);
    while let Some(k) = memchr2(delimiter, b'\\', &body[i..]) {
        let p = i + k;
        if body[p] == delimiter {
            return Ok((p, escaped));
        }
        if p + 1 >= body.len() {
            return Err(CopyError::TrailingBackslash);
        }
        escaped = true;
        i = p + 2;
    }
    Ok((body.len(), escaped))
}

/// Undoes text-format escapes, as PostgreSQL's COPY FROM reads them:
/// `\b \f \n \r \t \v`, octal `\d`–`\ddd`, hex `\xh`–`\xhh`, and a
/// backslash before any other byte stands for that byte.
fn unescape_text(raw: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' {
            v.push(b);
            continue;
        }
        // text_field_end saw to it that a backslash is never last.
        let c = raw[i];
        i += 1;
        let byte = match c {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'0'..=b'7' => {
                let mut val = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            val = val * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                (val & 0xff) as u8
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut val = hex(raw[i]);
                i += 1;
                if let Some(&d) = raw.get(i).filter(|d| d.is_ascii_hexdigit()) {
                    val = val * 16 + hex(d);
                    i += 1;
                }
                val
            }
            other => other,
        };
        v.push(byte);
    }
    v
}

fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

/// Escapes a value for text-format COPY the way PostgreSQL's COPY TO does.
fn escape_text(value: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &b in value {
        let escaped = match b {
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x0b => b'v',
            _ if b == delimiter => b,
            _ => {
                out.push(b);
                continue;
            }
        };
        out.push(b'\\');
        out.push(escaped);
    }
}

/// Rewrites one row of CSV-format COPY output into `out`. An unquoted
/// empty field is NULL, a quoted empty one the empty string. Replaced
/// values are always quoted; NULL is written as an empty unquoted field.
/// On error `out` is left as it was.
pub fn rewrite_csv(
    row: &[u8],
    delimiter: u8,
    quote: u8,
    escape: u8,
    edit: impl FnMut(usize, &Field<'_>) -> Edit,
    out: &mut Vec<u8>,
) -> Result<(), CopyError> {
    let len = out.len();
    let result = csv_row(
        row,
        CsvFormat {
            delimiter,
            quote,
            escape,
        },
        edit,
        out,
    );
    if result.is_err() {
        out.truncate(len);
    }
    result
}

#[derive(Clone, Copy)]
struct CsvFormat {
    delimiter: u8,
    quote: u8,
    escape: u8,
}

fn csv_row(
    row: &[u8],
    fmt: CsvFormat,
    mut edit: impl FnMut(usize, &Field<'_>) -> Edit,
    out: &mut Vec<u8>,
) -> Result<(), CopyError> {
    if row.last() != Some(&b'\n') {
        return Err(CopyError::MissingNewline);
    }
    out.reserve(row.len());
    let (mut start, mut column) = (0, 0);
    loop {
        let (end, quoted) = csv_field_end(row, start, fmt)?;
        let raw = &row[start..end];
        let field = if !quoted {
            if raw.is_empty() {
                Field::Null
            } else {
                Field::Value(Cow::Borrowed(raw))
            }
        } else {
            Field::Value(unquote_csv(raw, fmt))
        };
        match edit(column, &field) {
            Edit::Keep => out.extend_from_slice(raw),
            Edit::Null => {}
            Edit::Replace(value) => quote_csv(&value, fmt, out),
        }
        if end == row.len() - 1 {
            out.push(b'\n');
            return Ok(());
        }
        out.push(fmt.delimiter);
        start = end + 1;
        column += 1;
    }
}

/// The end of the field starting at `start`: the next delimiter or the
/// row's final newline outside quotes. Also whether it has quotes. Like
/// PostgreSQL's reader, a field may mix quoted and unquoted parts.
fn csv_field_end(row: &[u8], start: usize, fmt: CsvFormat) -> Result<(usize, bool), CopyError> {
    let last = row.len() - 1;
    let (mut i, mut quoted) = (start, false);
    loop {
        // Outside quotes: up to a delimiter, a quote or a line break.
        let k = memchr3(fmt.delimiter, fmt.quote, b'\n', &row[i..])
            .map(|k| i + k)
            .ok_or(CopyError::MissingNewline)?;
        if memchr::memchr(b'\r', &row[i..k]).is_some() {
            return Err(CopyError::EmbeddedNewline);
        }
        let b = row[k];
        if b == fmt.delimiter {
            return Ok((k, quoted));
        }
        if b == b'\n' {
            return if k == last {
                Ok((k, quoted))
            } else {
                Err(CopyError::EmbeddedNewline)
            };
        }
        // Inside quotes: up to the closing quote.
        quoted = true;
        i = k + 1;
        loop {
            let Some(&c) = row.get(i) else {
                return Err(CopyError::UnclosedQuote);
            };
            if c == fmt.escape
                && row
                    .get(i + 1)
                    .is_some_and(|&n| n == fmt.quote || n == fmt.escape)
            {
                i += 2;
            } else if c == fmt.quote {
                i += 1;
                break;
            } else {
                i += 1;
            }
        }
    }
}

/// The value of a field with quotes in it. A field that is one quoted
/// section without escapes, the usual case, is borrowed.
fn unquote_csv(raw: &[u8], fmt: CsvFormat) -> Cow<'_, [u8]> {
    if let [first, inner @ .., last] = raw
        && *first == fmt.quote
        && *last == fmt.quote
        && !inner.iter().any(|&b| b == fmt.quote || b == fmt.escape)
    {
        return Cow::Borrowed(inner);
    }
    let mut v = Vec::with_capacity(raw.len());
    let (mut i, mut in_quotes) = (0, false);
    while i < raw.len() {
        let c = raw[i];
        if !in_quotes {
            if c == fmt.quote {
                in_quotes = true;
            } else {
                v.push(c);
            }
            i += 1;
        } else if c == fmt.escape
            && raw
                .get(i + 1)
                .is_some_and(|&n| n == fmt.quote || n == fmt.escape)
        {
            v.push(raw[i + 1]);
            i += 2;
        } else if c == fmt.quote {
            in_quotes = false;
            i += 1;
        } else {
            v.push(c);
            i += 1;
        }
    }
    Cow::Owned(v)
}

/// Quotes a value as PostgreSQL's COPY TO does: quote and escape bytes are
/// preceded by the escape (when they are the same byte, it is doubled).
fn quote_csv(value: &[u8], fmt: CsvFormat, out: &mut Vec<u8>) {
    out.push(fmt.quote);
    for &b in value {
        if b == fmt.quote || b == fmt.escape {
            out.push(fmt.escape);
        }
        out.push(b);
    }
    out.push(fmt.quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field as the edit callback sees it.
    fn text_fields(row: &[u8], delimiter: u8) -> Vec<Option<Vec<u8>>> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        rewrite_text(
            row,
            delimiter,
            |_, f| {
                seen.push(owned(f));
                Edit::Keep
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, row, "keeping every field must give the row back");
        seen
    }

    fn csv_fields(row: &[u8], delimiter: u8, quote: u8, escape: u8) -> Vec<Option<Vec<u8>>> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        rewrite_csv(
            row,
            delimiter,
            quote,
            escape,
            |_, f| {
                seen.push(owned(f));
                Edit::Keep
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, row, "keeping every field must give the row back");
        seen
    }

    fn owned(f: &Field<'_>) -> Option<Vec<u8>> {
        match f {
            Field::Null => None,
            Field::Value(v) => Some(v.to_vec()),
        }
    }

    fn v(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    /// Rewrites with `edits` by column (missing columns are kept).
    fn text_edit(row: &[u8], delimiter: u8, edits: &[Edit]) -> Result<Vec<u8>, CopyError> {
        let mut out = b"before|".to_vec();
        rewrite_text(
            row,
            delimiter,
            |i, _| edits.get(i).cloned().unwrap_or(Edit::Keep),
            &mut out,
        )?;
        Ok(out.split_off(7))
    }

    fn csv_edit(
        row: &[u8],
        delimiter: u8,
        quote: u8,
        escape: u8,
        edits: &[Edit],
    ) -> Result<Vec<u8>, CopyError> {
        let mut out = Vec::new();
        rewrite_csv(
            row,
            delimiter,
            quote,
            escape,
            |i, _| edits.get(i).cloned().unwrap_or(Edit::Keep),
            &mut out,
        )?;
        Ok(out)
    }

    fn replace(s: &str) -> Edit {
        Edit::Replace(s.as_bytes().to_vec())
    }

    #[test]
    fn text_fields_are_split_and_unescaped() {
        assert_eq!(
            text_fields(b"1\tAlice\t\\N\n", b'\t'),
            [v("1"), v("Alice"), None]
        );
        assert_eq!(
            text_fields(
                b"a\\tb\tline1\\nline2\\r\tback\\\\slash\ttab\\\there\n",
                b'\t'
            ),
            [
                v("a\tb"),
                v("line1\nline2\r"),
                v("back\\slash"),
                v("tab\there")
            ]
        );
        assert_eq!(
            text_fields(b"\\b\\f\\v\\101\\x41\\x4a\\7\\0101\\xz\\q\n", b'\t'),
            [Some(b"\x08\x0c\x0bAAJ\x07\x081xzq".to_vec())]
        );
        assert_eq!(text_fields(b"\n", b'\t'), [v("")]);
        assert_eq!(text_fields(b"\t\n", b'\t'), [v(""), v("")]);
        assert_eq!(text_fields(b"\\N\t\\\\N\n", b'\t'), [None, v("\\N")]);
        assert_eq!(
            text_fields("Zoë\tЖ\\t日本\n".as_bytes(), b'\t'),
            [v("Zoë"), v("Ж\t日本")]
        );
        // Octal escapes may spell multibyte characters.
        assert_eq!(text_fields(b"\\303\\251\n", b'\t'), [v("é")]);
    }

    #[test]
    fn text_custom_delimiters() {
        assert_eq!(
            text_fields(b"1|a\\|b|c\\\\|\\N\n", b'|'),
            [v("1"), v("a|b"), v("c\\"), None]
        );
        assert_eq!(
            text_fields(b"x;y\\;z;\t\n", b';'),
            [v("x"), v("y;z"), v("\t")]
        );
    }

    #[test]
    fn text_edits() {
        let row = b"1\tAlice\t123-45-6789\tx\n";
        assert_eq!(
            text_edit(row, b'\t', &[Edit::Keep, replace("A*****"), Edit::Null]).unwrap(),
            b"1\tA*****\t\\N\tx\n"
        );
        // Replacements are escaped.
        assert_eq!(
            text_edit(row, b'\t', &[replace("a\tb\nc\r\\d\x08\x0b\x0c")]).unwrap(),
            b"a\\tb\\nc\\r\\\\d\\b\\v\\f\tAlice\t123-45-6789\tx\n"
        );
        assert_eq!(
            text_edit(b"a|b\n", b'|', &[replace("x|y"), replace("\\N")]).unwrap(),
            b"x\\|y|\\\\N\n"
        );
        // An escaped original is copied untouched when kept.
        assert_eq!(
            text_edit(b"a\\tb\\101\tc\n", b'\t', &[Edit::Keep, replace("*")]).unwrap(),
            b"a\\tb\\101\t*\n"
        );
    }

    #[test]
    fn text_replacements_round_trip() {
        let nasty = b"tab\there\nnl\\bs|pipe\r\x0b\x08\x0c\xff".to_vec();
        for delimiter in [b'\t', b'|', b';', b','] {
            let mut out = Vec::new();
            rewrite_text(
                b"a\n",
                delimiter,
                |_, _| Edit::Replace(nasty.clone()),
                &mut out,
            )
            .unwrap();
            assert_eq!(text_fields(&out, delimiter), [Some(nasty.clone())]);
        }
    }

    #[test]
    fn text_errors() {
        let mut out = b"kept".to_vec();
        let keep = |_: usize, _: &Field<'_>| Edit::Keep;
        assert_eq!(
            rewrite_text(b"a\tb", b'\t', keep, &mut out),
            Err(CopyError::MissingNewline)
        );
        assert_eq!(
            rewrite_text(b"", b'\t', keep, &mut out),
            Err(CopyError::MissingNewline)
        );
        assert_eq!(
            rewrite_text(b"a\nb\n", b'\t', keep, &mut out),
            Err(CopyError::EmbeddedNewline)
        );
        assert_eq!(
            rewrite_text(b"a\rb\n", b'\t', keep, &mut out),
            Err(CopyError::EmbeddedNewline)
        );
        assert_eq!(
            rewrite_text(b"a\tb\\\n", b'\t', keep, &mut out),
            Err(CopyError::TrailingBackslash)
        );
        assert_eq!(out, b"kept");
    }

    #[test]
    fn csv_fields_are_split_and_unquoted() {
        assert_eq!(
            csv_fields(b"1,Alice,,\"\"\n", b',', b'"', b'"'),
            [v("1"), v("Alice"), None, v("")]
        );
        assert_eq!(
            csv_fields(
                b"\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\n",
                b',',
                b'"',
                b'"'
            ),
            [v("a,b"), v("say \"hi\""), v("two\nlines")]
        );
        assert_eq!(
            csv_fields(b"\"\"\"\",\"\"\"\"\"\"\n", b',', b'"', b'"'),
            [v("\""), v("\"\"")]
        );
        assert_eq!(csv_fields(b"\n", b',', b'"', b'"'), [None]);
        assert_eq!(csv_fields(b",\n", b',', b'"', b'"'), [None, None]);
        // Mixed quoted and unquoted parts, as PostgreSQL reads them.
        assert_eq!(
            csv_fields(b"ab\"c,d\"ef\n", b',', b'"', b'"'),
            [v("abc,def")]
        );
        assert_eq!(
            csv_fields("\"Zoë, Ødegård\",日本\n".as_bytes(), b',', b'"', b'"'),
            [v("Zoë, Ødegård"), v("日本")]
        );
        assert_eq!(csv_fields(b"\"a\r\nb\"\n", b',', b'"', b'"'), [v("a\r\nb")]);
    }

    #[test]
    fn csv_custom_delimiter_quote_and_escape() {
        assert_eq!(
            csv_fields(b"1|'a|b'|'it''s'\n", b'|', b'\'', b'\''),
            [v("1"), v("a|b"), v("it's")]
        );
        assert_eq!(
            csv_fields(b"\"a\\\"b\";\"c\\\\d\";\"e\\f\"\n", b';', b'"', b'\\'),
            [v("a\"b"), v("c\\d"), v("e\\f")]
        );
        // With a distinct escape, a doubled quote closes and reopens.
        assert_eq!(csv_fields(b"\"a\"\"b\"\n", b',', b'"', b'\\'), [v("ab")]);
    }

    #[test]
    fn csv_edits() {
        let row = b"1,Alice,\"a,b\",\n";
        assert_eq!(
            csv_edit(
                row,
                b',',
                b'"',
                b'"',
                &[Edit::Keep, replace("A*****"), Edit::Null, replace("x")]
            )
            .unwrap(),
            b"1,\"A*****\",,\"x\"\n"
        );
        assert_eq!(
            csv_edit(row, b',', b'"', b'"', &[replace("say \"hi\", ok")]).unwrap(),
            b"\"say \"\"hi\"\", ok\",Alice,\"a,b\",\n"
        );
        assert_eq!(
            csv_edit(b"a;b\n", b';', b'"', b'\\', &[replace("q\"e\\;")]).unwrap(),
            b"\"q\\\"e\\\\;\";b\n"
        );
        // An empty replacement is the empty string, not NULL.
        assert_eq!(
            csv_edit(b"a\n", b',', b'"', b'"', &[replace("")]).unwrap(),
            b"\"\"\n"
        );
    }

    #[test]
    fn csv_replacements_round_trip() {
        let nasty = b"a,b;c|d\"e'f\\g\nh\ri\x00\xff".to_vec();
        for (d, q, e) in [
            (b',', b'"', b'"'),
            (b';', b'\'', b'\\'),
            (b'|', b'"', b'\\'),
            (b'\t', b'"', b'"'),
        ] {
            let mut out = Vec::new();
            rewrite_csv(
                b"x\n",
                d,
                q,
                e,
                |_, _| Edit::Replace(nasty.clone()),
                &mut out,
            )
            .unwrap();
            assert_eq!(csv_fields(&out, d, q, e), [Some(nasty.clone())]);
        }
    }

    #[test]
    fn csv_errors() {
        let mut out = b"kept".to_vec();
        let keep = |_: usize, _: &Field<'_>| Edit::Keep;
        assert_eq!(
            rewrite_csv(b"a,b", b',', b'"', b'"', keep, &mut out),
            Err(CopyError::MissingNewline)
        );
        assert_eq!(
            rewrite_csv(b"\"a\n", b',', b'"', b'"', keep, &mut out),
            Err(CopyError::UnclosedQuote)
        );
        assert_eq!(
            rewrite_csv(b"\"a\"\"\n", b',', b'"', b'"', keep, &mut out),
            Err(CopyError::UnclosedQuote)
        );
        assert_eq!(
            rewrite_csv(b"a\nb\n", b',', b'"', b'"', keep, &mut out),
            Err(CopyError::EmbeddedNewline)
        );
        assert_eq!(
            rewrite_csv(b"a\rb\n", b',', b'"', b'"', keep, &mut out),
            Err(CopyError::EmbeddedNewline)
        );
        assert_eq!(out, b"kept");
    }

    #[test]
    fn keep_everything_is_byte_for_byte() {
        let text_rows: &[(&[u8], u8)] = &[
            (b"1\tAlice\t\\N\t\\t\\n\\\\\\101\\x41\n", b'\t'),
            (b"\n", b'\t'),
            ("a|\\|b|ü|\\N\n".as_bytes(), b'|'),
            (b"x;;y\n", b';'),
        ];
        for &(row, d) in text_rows {
            let mut out = Vec::new();
            rewrite_text(row, d, |_, _| Edit::Keep, &mut out).unwrap();
            assert_eq!(out, row);
        }
        let csv_rows: &[(&[u8], u8, u8, u8)] = &[
            (b"1,,\"\",\"a\"\"b\",\"x\ny\",plain\n", b',', b'"', b'"'),
            (b"'a;b';'c\\'d';\n", b';', b'\'', b'\\'),
            ("\"日本|語\"|é\n".as_bytes(), b'|', b'"', b'"'),
        ];
        for &(row, d, q, e) in csv_rows {
            let mut out = Vec::new();
            rewrite_csv(row, d, q, e, |_, _| Edit::Keep, &mut out).unwrap();
            assert_eq!(out, row);
        }
    }

    #[test]
    fn field_indices_count_from_zero() {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        rewrite_text(
            b"a\tb\tc\n",
            b'\t',
            |i, _| {
                seen.push(i);
                Edit::Keep
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(seen, [0, 1, 2]);
    }
}
