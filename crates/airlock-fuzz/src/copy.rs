//! COPY rows as masking rewrites them: a rewrite that keeps every field
//! gives the row back unchanged, and a value written in place of a field
//! reads back as exactly that value, in its own column. (A masked value
//! that could spill into the next column, or end the row, would be a
//! leak.)

use std::borrow::Cow;

use airlock_mask::copy::{CopyError, Edit, Field, rewrite_csv, rewrite_text};

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
        Format::Text { delimiter }
    } else {
        let quote = [b'"', b'\''][usize::from(first >> 3 & 1)];
        let escape = if first & 16 == 0 { quote } else { b'\\' };
        Format::Csv {
            delimiter,
            quote,
            escape,
        }
    };
    let Ok(fields) = format.fields(row) else {
        return;
    };
    let mut kept = Vec::new();
    format
        .rewrite(row, |_, _| Edit::Keep, &mut kept)
        .expect("a row read once reads again");
    assert_eq!(kept, row, "keeping every field changed the row");
    let mut awkward = Vec::new();
    format
        .rewrite(
            row,
            |_, field| match field {
                Field::Null => Edit::Null,
                Field::Value(_) => Edit::Replace(AWKWARD.to_vec()),
            },
            &mut awkward,
        )
        .expect("a row read once reads again");
    let reread = format.fields(&awkward).expect("a rewritten row reads");
    let expected: Vec<Option<Vec<u8>>> = fields
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

#[derive(Debug, Clone, Copy)]
enum Format {
    Text {
        delimiter: u8,
    },
    Csv {
        delimiter: u8,
        quote: u8,
        escape: u8,
    },
}

impl Format {
    fn rewrite(
        self,
        row: &[u8],
        edit: impl FnMut(usize, &Field<'_>) -> Edit,
        out: &mut Vec<u8>,
    ) -> Result<(), CopyError> {
        match self {
            Format::Text { delimiter } => rewrite_text(row, delimiter, edit, out),
            Format::Csv {
                delimiter,
                quote,
                escape,
            } => rewrite_csv(row, delimiter, quote, escape, edit, out),
        }
    }

    /// The row's fields, `None` for NULL.
    fn fields(self, row: &[u8]) -> Result<Vec<Option<Vec<u8>>>, CopyError> {
        let mut fields = Vec::new();
        self.rewrite(
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
}
