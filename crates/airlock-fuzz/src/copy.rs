//! COPY rows as masking rewrites them: a rewrite that keeps every field
//! gives the row back unchanged, and a value written in place of a field
//! reads back as exactly that value, in its own column. (A masked value
//! that could spill into the next column, or end the row, would be a
//! leak.)

use std::borrow::Cow;

use airlock_mask::copy::{CopyError, Edit, Field, rewrite_csv, rewrite_text};
use airlock_policy::lineage::CopyFormat;

/// Stands in for every value in the second pass: delimiters, quotes,
/// escapes, newlines and the text format's NULL marker.
const AWKWARD: &[u8] = b"a\tb,c|d;\"e'\\N\\\nf\rg";

/// The first byte picks the format and its options (the combinations
/// PostgreSQL accepts); the rest is one CopyData body.
pub fn rows(data: &[u8]) {
    let Some((&first, row)) = data.split_first() else {
        return;
    };
    let delimiter = [b'\t', b',', b'|', b';'][usize::from(first & 3)];
    let format = if first & 4 == 0 {
        CopyFormat::Text { delimiter }
    } else {
        let quote = [b'"', b'\''][usize::from(first >> 3 & 1)];
        let escape = if first & 16 == 0 { quote } else { b'\\' };
        CopyFormat::Csv {
            delimiter,
            quote,
            escape,
            header: false,
        }
    };
    let Ok(original) = fields(format, row) else {
        return;
    };
    let mut kept = Vec::new();
    rewrite(format, row, |_, _| Edit::Keep, &mut kept).expect("a row read once reads again");
    assert_eq!(kept, row, "keeping every field changed the row");
    let mut awkward = Vec::new();
    rewrite(
        format,
        row,
        |_, field| match field {
            Field::Null => Edit::Null,
            Field::Value(_) => Edit::Replace(AWKWARD.to_vec()),
        },
        &mut awkward,
    )
    .expect("a row read once reads again");
    let reread = fields(format, &awkward).expect("a rewritten row reads");
    let expected: Vec<Option<Vec<u8>>> = original
        .iter()
        .map(|f| f.as_ref().map(|_| AWKWARD.to_vec()))
        .collect();
    assert_eq!(
        reread,
        expected,
        "a written value did not read back in place: {:?}",
        String::from_utf8_lossy(&awkward)
    );
}

/// A COPY row rewritten as the gateway's masking does for `format`.
fn rewrite(
    format: CopyFormat,
    row: &[u8],
    edit: impl FnMut(usize, &Field<'_>) -> Edit,
    out: &mut Vec<u8>,
) -> Result<(), CopyError> {
    match format {
        CopyFormat::Text { delimiter } => rewrite_text(row, delimiter, edit, out),
        CopyFormat::Csv {
            delimiter,
            quote,
            escape,
            ..
        } => rewrite_csv(row, delimiter, quote, escape, edit, out),
        CopyFormat::Binary => unreachable!("binary COPY is never rewritten"),
    }
}

/// The row's fields, `None` for NULL.
fn fields(format: CopyFormat, row: &[u8]) -> Result<Vec<Option<Vec<u8>>>, CopyError> {
    let mut fields = Vec::new();
    rewrite(
        format,
        row,
        |_, field| {
            fields.push(match field {
                Field::Null => None,
                Field::Value(v) => Some(Cow::into_owned(v.clone())),
            });
            Edit::Keep
        },
        &mut Vec::new(),
    )?;
    Ok(fields)
}
