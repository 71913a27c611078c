//! Masking MySQL text-protocol rows with a plan from the policy core: which
//! column types can hold a placeholder, how values are framed. A row is
//! rewritten only when its result has something to mask.

use std::sync::Arc;

use airlock_mask::{Masked, Masking, Quote};
use airlock_mywire::codec;
use airlock_policy::masking::{Mask, MaskPlan, SensitiveCatalog};
use bytes::BytesMut;

/// The binary character set's id: such a string column holds bytes.
const BINARY: u16 = 63;

/// Whether a column of this type (and character set) is text a client
/// reads as text: a placeholder can stand in for it, detectors read it.
pub(crate) fn text_like(column_type: u8, charset: u16) -> bool {
    // VARCHAR, JSON, ENUM, SET, the BLOB/TEXT types, VAR_STRING, STRING.
    column_type == 245 || matches!(column_type, 15 | 247 | 248 | 249..=254) && charset != BINARY
}

#[derive(Debug, Clone, Copy)]
struct Column {
    mask: Option<Mask>,
    text: bool,
    column_type: u8,
}

/// How to mask the rows of one result.
pub struct RowMask {
    masking: Arc<Masking>,
    columns: Vec<Column>,
    detect: bool,
    /// Text values are scrubbed as error messages are (SHOW output): every
    /// single-quoted value but the catalog's names is hidden.
    scrub: Option<Arc<SensitiveCatalog>>,
}

impl RowMask {
    /// `None` when the plan changes nothing. `types`: each column's
    /// `(type, character set)`.
    pub fn new(
        masking: &Arc<Masking>,
        plan: MaskPlan,
        types: &[(u8, u16)],
        scrub: Option<Arc<SensitiveCatalog>>,
    ) -> Option<RowMask> {
        if plan.is_pass() && scrub.is_none() {
            return None;
        }
        let columns = types
            .iter()
            .zip(plan.columns.iter().chain(std::iter::repeat(&None)))
            .map(|(&(t, cs), &mask)| Column {
                mask,
                text: text_like(t, cs),
                column_type: t,
            })
            .collect();
        Some(RowMask {
            masking: Arc::clone(masking),
            columns,
            detect: plan.detect,
            scrub,
        })
    }

    /// Writes the masked payload of text row `row` to `out`. A malformed
    /// row is sent as NULLs, never as it was.
    pub fn text_row(&self, row: &[u8], out: &mut BytesMut) {
        let mut b = row;
        let mut scratch = Vec::new();
        let mut i = 0;
        while !b.is_empty() {
            let Ok(value) = codec::text_value(&mut b) else {
                out.clear();
                out.extend(std::iter::repeat_n(0xFB, self.columns.len().max(1)));
                return;
            };
            let column = self.column(i);
            i += 1;
            let Some(value) = value else {
                out.extend_from_slice(&[0xFB]);
                continue;
            };
            match self.mask_of(column, value) {
                None => match self.scrubbed(column, value) {
                    Some(s) => codec::put_lenenc_bytes(out, s.as_bytes()),
                    None => codec::put_lenenc_bytes(out, value),
                },
                Some(m) => {
                    scratch.clear();
                    match self
                        .masking
                        .masker
                        .apply(m.strategy, value, column.text, &mut scratch)
                    {
                        Masked::Value => codec::put_lenenc_bytes(out, &scratch),
                        Masked::Null => out.extend_from_slice(&[0xFB]),
                    }
                }
            }
        }
    }

    /// A SHOW value with its quoted values hidden, when it has any.
    fn scrubbed(&self, column: Column, value: &[u8]) -> Option<String> {
        let catalog = self.scrub.as_ref().filter(|_| column.text)?;
        let text = std::str::from_utf8(value).ok()?;
        let keep =
            |quoted: &[u8]| std::str::from_utf8(quoted).is_ok_and(|n| catalog.names_object(n));
        self.masking.scrub_quoted(text, Quote::Single, Some(&keep))
    }

    fn column(&self, i: usize) -> Column {
        self.columns.get(i).copied().unwrap_or(Column {
            mask: Some(Mask::UNTRACED),
            text: false,
            column_type: 0,
        })
    }

    fn mask_of(&self, column: Column, value: &[u8]) -> Option<Mask> {
        column.mask.or_else(|| {
            (self.detect && column.text)
                .then(|| self.masking.detectors.scan(value))
                .flatten()
                .map(|d| self.masking.detector_mask(d))
        })
    }

    /// Writes the masked payload of binary row `row` (header, NULL bitmap
    /// with its offset of 2, values by column type) to `out`. A masked
    /// value that cannot stand as its type becomes NULL. A malformed row,
    /// or one of more columns than described, is sent with every value
    /// NULL.
    pub fn binary_row(&self, row: &[u8], out: &mut BytesMut) {
        let n = self.columns.len();
        let bitmap_len = (n + 7 + 2) / 8;
        let Some(bitmap) = row.get(1..1 + bitmap_len) else {
            return self.all_null(out);
        };
        let mut bitmap = bitmap.to_vec();
        let mut values = BytesMut::new();
        let mut rest = &row[1 + bitmap_len..];
        let mut scratch = Vec::new();
        for (i, column) in self.columns.iter().enumerate() {
            let (byte, bit) = ((i + 2) / 8, 1u8 << ((i + 2) % 8));
            if bitmap[byte] & bit != 0 {
                continue;
            }
            let Some(len) = super::binary::value_len(column.column_type, rest) else {
                return self.all_null(out);
            };
            let (whole, tail) = rest.split_at(len);
            rest = tail;
            let string = super::binary::is_string(column.column_type);
            let value = if string {
                let mut b = whole;
                let _ = codec::lenenc_int(&mut b);
                b
            } else {
                whole
            };
            match self.mask_of(*column, value) {
                None => match self.scrubbed(*column, value).filter(|_| string) {
                    Some(s) => codec::put_lenenc_bytes(&mut values, s.as_bytes()),
                    None => values.extend_from_slice(whole),
                },
                Some(m) => {
                    scratch.clear();
                    match self.masking.masker.apply(
                        m.strategy,
                        value,
                        column.text && string,
                        &mut scratch,
                    ) {
                        Masked::Value => codec::put_lenenc_bytes(&mut values, &scratch),
                        Masked::Null => bitmap[byte] |= bit,
                    }
                }
            }
        }
        if !rest.is_empty() {
            return self.all_null(out);
        }
        out.extend_from_slice(&[0x00]);
        out.extend_from_slice(&bitmap);
        out.extend_from_slice(&values);
    }

    fn all_null(&self, out: &mut BytesMut) {
        let n = self.columns.len();
        out.clear();
        out.extend_from_slice(&[0x00]);
        let mut bitmap = vec![0u8; (n + 7 + 2) / 8];
        for i in 0..n {
            bitmap[(i + 2) / 8] |= 1 << ((i + 2) % 8);
        }
        out.extend_from_slice(&bitmap);
    }
}

/// `text` (a MySQL error message or SHOW value) scrubbed: detector matches
/// masked and, when anything is masked, every single-quoted value but the
/// catalog's names hidden. `None` when nothing changed.
pub fn scrub(masking: &Masking, catalog: &SensitiveCatalog, text: &str) -> Option<String> {
    let keep = |quoted: &[u8]| std::str::from_utf8(quoted).is_ok_and(|n| catalog.names_object(n));
    let sensitive: Option<airlock_mask::Keep<'_>> = catalog.any_sensitive.then_some(&keep);
    masking.scrub_quoted(text, Quote::Single, sensitive)
}
