//! Applying mask plans to PostgreSQL messages: DataRow in text and binary
//! format, CopyData rows in text and CSV, and the text fields of
//! ErrorResponse, NoticeResponse, NotificationResponse and ParameterStatus.
//!
//! The policy core decides *which* columns are masked and how; this module
//! knows the wire: which types can hold a placeholder, how values are
//! framed. Each message is rewritten on its own as it passes: nothing is
//! buffered beyond the message in hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use airlock_mask::Masked;
pub use airlock_mask::Masking;
use airlock_mask::copy::{self, Edit, Field};
use airlock_policy::lineage::CopyFormat;
use airlock_policy::masking::{CopyPlan, FieldOrigin, Mask, MaskPlan};
use bytes::{BufMut, BytesMut};

/// Type OIDs whose values are text the client reads as text, in either
/// format: a placeholder can stand in for them.
pub(crate) fn text_like(type_oid: u32) -> bool {
    // text, varchar, bpchar, name, unknown
    matches!(type_oid, 25 | 1043 | 1042 | 19 | 705)
}

/// Whether content detectors can read a value's bytes: every text-format
/// value, and binary values whose encoding is their text (text types,
/// json, jsonb, xml) or embeds it (arrays and records of such).
fn scannable(type_oid: u32, binary: bool) -> bool {
    !binary
        || text_like(type_oid)
        // json, jsonb, xml, text[], varchar[], bpchar[], name[], record
        || matches!(type_oid, 114 | 3802 | 142 | 1009 | 1015 | 1014 | 1003 | 2249)
}

/// One result column's treatment.
#[derive(Debug, Clone, Copy)]
struct Column {
    mask: Option<Mask>,
    /// Whether a placeholder can stand in for the value.
    text: bool,
    /// Whether detectors read the value.
    scan: bool,
}

/// How to mask the rows of one result.
pub struct RowMask {
    masking: Arc<Masking>,
    columns: Vec<Column>,
    /// With `masking.flag_planted_instructions`: the columns' names, to
    /// name the values flagged.
    names: Vec<String>,
}

/// A value of a row that passed unchanged and reads like instructions to
/// an agent: its column's name, and the kind.
pub type Flagged<'a> = (&'a str, &'static str);

/// A RowDescription's fields: `(origin, type OID, binary)`.
pub fn fields(body: &[u8]) -> Option<Vec<(FieldOrigin, u32, bool)>> {
    let count = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut at = 2;
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count {
        let name_end = at + body.get(at..)?.iter().position(|&b| b == 0)?;
        at = name_end + 1;
        let f = body.get(at..at + 18)?;
        let table_oid = u32::from_be_bytes(f[0..4].try_into().ok()?);
        let attnum = i16::from_be_bytes(f[4..6].try_into().ok()?);
        let type_oid = u32::from_be_bytes(f[6..10].try_into().ok()?);
        let format = i16::from_be_bytes(f[16..18].try_into().ok()?);
        out.push((
            FieldOrigin::Oid {
                table: table_oid,
                attnum,
            },
            type_oid,
            format == 1,
        ));
        at += 18;
    }
    Some(out)
}

impl RowMask {
    /// `None` when the plan changes nothing and flagging is off.
    /// `description` is the RowDescription body (its names, for flags).
    pub fn new(
        masking: &Arc<Masking>,
        plan: MaskPlan,
        fields: &[(FieldOrigin, u32, bool)],
        description: &[u8],
    ) -> Option<RowMask> {
        let flag = masking.flag_planted;
        if plan.is_pass() && !flag {
            return None;
        }
        let columns = fields
            .iter()
            .zip(plan.columns.iter().chain(std::iter::repeat(&None)))
            .map(|(&(_, type_oid, binary), &mask)| Column {
                mask,
                text: text_like(type_oid),
                scan: (plan.detect || flag) && scannable(type_oid, binary),
            })
            .collect();
        Some(RowMask {
            masking: Arc::clone(masking),
            columns,
            names: if flag {
                crate::record::column_names(description)
            } else {
                Vec::new()
            },
        })
    }

    /// A mask that NULLs or redacts every column: for results whose
    /// description could not be read.
    pub fn everything(masking: &Arc<Masking>) -> RowMask {
        RowMask {
            masking: Arc::clone(masking),
            columns: Vec::new(),
            names: Vec::new(),
        }
    }

    /// Writes DataRow `body` as a whole message, masked, to `out`; the
    /// first value flagged as planted instructions, if any.
    pub fn data_row(&self, body: &[u8], out: &mut BytesMut) -> Option<Flagged<'_>> {
        let start = out.len();
        out.put_u8(b'D');
        out.put_i32(0);
        let mut flagged = None;
        if self.rewrite(body, out, &mut flagged).is_none() {
            // A malformed row: send its columns as NULLs rather than
            // anything unmasked.
            flagged = None;
            out.truncate(start + 5);
            let count = body
                .get(..2)
                .map_or(0, |c| i16::from_be_bytes([c[0], c[1]]));
            out.put_i16(count.max(0));
            for _ in 0..count.max(0) {
                out.put_i32(-1);
            }
        }
        let len = (out.len() - start - 1) as i32;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
        let (column, kind) = flagged?;
        Some((self.names.get(column).map_or("?", String::as_str), kind))
    }

    fn rewrite(
        &self,
        body: &[u8],
        out: &mut BytesMut,
        flagged: &mut Option<(usize, &'static str)>,
    ) -> Option<()> {
        out.put_i16(airlock_pgwire::codec::DataRowValues::declared(body));
        let mut values = airlock_pgwire::codec::data_row_values(body);
        let mut scratch = Vec::new();
        for (i, value) in values.by_ref().enumerate() {
            let Some(value) = value else {
                out.put_i32(-1);
                continue;
            };
            // Columns the description did not cover are masked whole.
            let column = self.columns.get(i).copied().unwrap_or(Column {
                mask: Some(Mask::UNTRACED),
                text: false,
                scan: false,
            });
            // One scan for the detectors that mask and, when flagged,
            // planted instructions.
            let mask = column.mask.or_else(|| {
                if !column.scan {
                    return None;
                }
                match self.masking.scan_value(value)? {
                    Ok(d) => Some(self.masking.detector_mask(d)),
                    Err(()) => {
                        if flagged.is_none() {
                            *flagged = airlock_mask::planted::scan(value).map(|p| (i, p.name()));
                        }
                        None
                    }
                }
            });
            match mask {
                None => {
                    out.put_i32(value.len() as i32);
                    out.extend_from_slice(value);
                }
                Some(m) => {
                    scratch.clear();
                    match self
                        .masking
                        .masker
                        .apply(m.strategy, value, column.text, &mut scratch)
                    {
                        Masked::Value => {
                            out.put_i32(scratch.len() as i32);
                            out.extend_from_slice(&scratch);
                        }
                        Masked::Null => out.put_i32(-1),
                    }
                }
            }
        }
        values.is_complete().then_some(())
    }
}

/// How to mask the rows of one `COPY … TO STDOUT`.
pub struct CopyMask {
    masking: Arc<Masking>,
    plan: CopyPlan,
    format: CopyFormat,
    /// The first row of a CSV COPY with HEADER is the header.
    header_pending: AtomicBool,
}

impl CopyMask {
    pub fn new(masking: &Arc<Masking>, plan: CopyPlan, format: CopyFormat) -> Option<CopyMask> {
        let pass = match &plan {
            CopyPlan::Columns(p) => p.is_pass(),
            CopyPlan::Uniform(..) => false,
        };
        if pass {
            // (A binary COPY gets here only when nothing in it is masked and
            // no detector runs: `MaskingPolicy::check` refuses the rest.)
            return None;
        }
        let header = matches!(format, CopyFormat::Csv { header: true, .. });
        Some(CopyMask {
            masking: Arc::clone(masking),
            plan,
            format,
            header_pending: AtomicBool::new(header),
        })
    }

    pub fn masking(&self) -> &Arc<Masking> {
        &self.masking
    }

    /// Writes CopyData `body`, masked, as a whole message to `out`. A row
    /// that cannot be read (or a binary COPY, which was refused before it
    /// ran unless nothing in it is masked) is dropped rather than sent
    /// unmasked.
    pub fn copy_data(&self, body: &[u8], out: &mut BytesMut) {
        if self.header_pending.swap(false, Ordering::Relaxed) {
            write_copy_data(body, out);
            return;
        }
        let (mask, detect) = match &self.plan {
            CopyPlan::Columns(p) => (None, p.detect),
            CopyPlan::Uniform(m, detect) => (Some(*m), *detect),
        };
        let column_mask = |i: usize| match &self.plan {
            // A field the plan does not cover (the row is wider than the
            // statement said) is masked.
            CopyPlan::Columns(p) if p.columns.is_empty() => None,
            CopyPlan::Columns(p) => p.columns.get(i).copied().unwrap_or(Some(Mask::UNTRACED)),
            CopyPlan::Uniform(..) => mask,
        };
        let m = &self.masking;
        let edit = |i: usize, field: &Field<'_>| -> Edit {
            let Field::Value(value) = field else {
                return Edit::Keep;
            };
            let chosen = column_mask(i).or_else(|| {
                detect
                    .then(|| m.detectors.scan(value))
                    .flatten()
                    .map(|d| m.detector_mask(d))
            });
            let Some(chosen) = chosen else {
                return Edit::Keep;
            };
            let mut masked = Vec::new();
            // COPY text carries no types: every value is text to the reader.
            match m.masker.apply(chosen.strategy, value, true, &mut masked) {
                Masked::Value => Edit::Replace(masked),
                Masked::Null => Edit::Null,
            }
        };
        let mut row = Vec::with_capacity(body.len());
        let ok = match self.format {
            CopyFormat::Text { delimiter } => copy::rewrite_text(body, delimiter, edit, &mut row),
            CopyFormat::Csv {
                delimiter,
                quote,
                escape,
                ..
            } => copy::rewrite_csv(body, delimiter, quote, escape, edit, &mut row),
            CopyFormat::Binary => return,
        };
        if ok.is_ok() {
            write_copy_data(&row, out);
        }
    }
}

fn write_copy_data(body: &[u8], out: &mut BytesMut) {
    out.put_u8(b'd');
    out.put_i32(body.len() as i32 + 4);
    out.extend_from_slice(body);
}

/// SQLSTATE classes whose messages name objects, settings or states, never
/// a value: a schema-only session sees them whole. Not notices and
/// warnings (`00`, `01`: a function's RAISE), nor `42883`/`42725`, which
/// quote a `reg*` cast's text (`operator does not exist: …`).
const NAMING_CLASSES: &[&str] = &[
    "08", "0A", "25", "28", "3D", "3F", "40", "42", "53", "54", "55", "57", "58",
];

/// Codes of [`NAMING_CLASSES`] whose messages can quote a value anyway.
const QUOTING_CODES: &[&str] = &["42883", "42725"];

/// Scrubs an ErrorResponse or NoticeResponse. Detectors run over every
/// text field; when `sensitive` (something is masked) or `schema_only`,
/// quoted values in its text fields are hidden, but those `keep` accepts
/// (the client's own words, names it may know). With `schema_only`, the
/// message of any other class than
/// [`NAMING_CLASSES`] (data exceptions, constraint violations, a
/// function's own RAISE), or of a [`QUOTING_CODES`] code, is replaced
/// whole: such a message can carry a value in any form. Writes the
/// replacement to `out` and returns true when anything changed.
pub fn notice(
    masking: &Masking,
    tag: u8,
    body: &[u8],
    (sensitive, schema_only): (bool, bool),
    keep: airlock_mask::Keep<'_>,
    out: &mut BytesMut,
) -> bool {
    let fields = airlock_pgwire::codec::notice_fields(body);
    let mut changed = false;
    let sensitive = sensitive || schema_only;
    let opaque = schema_only
        && fields
            .iter()
            .find(|(f, _)| *f == b'C')
            .is_none_or(|(_, code)| {
                !NAMING_CLASSES.iter().any(|c| code.starts_with(c))
                    || QUOTING_CODES.contains(&code.as_str())
            });
    let scrubbed: Vec<(u8, String)> = fields
        .into_iter()
        .map(|(f, v)| {
            // Message, detail, hint, context and internal query carry
            // values; the names of what failed (column, constraint, table,
            // schema, type) get the detectors only.
            let values = matches!(f, b'M' | b'D' | b'H' | b'W' | b'q');
            let names = matches!(f, b'c' | b'n' | b't' | b's' | b'd');
            if !values && !names {
                return (f, v);
            }
            if opaque && f == b'M' {
                changed = true;
                return (
                    f,
                    "airlock: the server's message is hidden on a schema-only route (it may quote a value); its SQLSTATE says what failed".to_string(),
                );
            }
            if matches!(f, b'D' | b'W' | b'q') && sensitive {
                // Details quote keys and whole rows (`Key (ssn)=(…)`,
                // `Failing row contains (…)`), contexts quote the data being
                // parsed and internal queries their literals, in forms no
                // pattern can delimit reliably: hidden whole.
                changed = true;
                return (f, HIDDEN.to_string());
            }
            match masking.scrub(&v, (sensitive && values).then_some(keep)) {
                Some(new) => {
                    changed = true;
                    (f, new)
                }
                None => (f, v),
            }
        })
        .collect();
    if !changed {
        return false;
    }
    let start = out.len();
    out.put_u8(tag);
    out.put_i32(0);
    for (f, v) in &scrubbed {
        out.put_u8(*f);
        out.extend_from_slice(v.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
    let len = (out.len() - start - 1) as i32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    true
}

/// What DETAIL, CONTEXT and internal-query fields become when anything is
/// masked.
pub const HIDDEN: &str = "(hidden by airlock masking)";

/// Scrubs a NotificationResponse payload or a ParameterStatus value with
/// the detectors. Returns true when it wrote a replacement.
pub fn async_message(masking: &Masking, tag: u8, body: &[u8], out: &mut BytesMut) -> bool {
    let split = |b: &[u8]| -> Option<(usize, usize)> {
        // The start and end of the last string field.
        let end = b.len().checked_sub(1)?;
        let start = b[..end].iter().rposition(|&c| c == 0).map_or(0, |p| p + 1);
        Some((start, end))
    };
    let Some((start, end)) = (match tag {
        b'A' => body.get(4..).and_then(split).map(|(s, e)| (s + 4, e + 4)),
        b'S' => split(body),
        _ => None,
    }) else {
        return false;
    };
    let new = match std::str::from_utf8(&body[start..end]) {
        Ok(value) => match masking.scrub(value, None) {
            Some(new) => new,
            None => return false,
        },
        // Not UTF-8 (another client encoding): scanned as bytes, hidden
        // whole on a match.
        Err(_) => match masking.detectors.scan(&body[start..end]) {
            Some(_) => airlock_mask::PLACEHOLDER.to_string(),
            None => return false,
        },
    };
    let len = (body.len() - (end - start) + new.len() + 4) as i32;
    out.put_u8(tag);
    out.put_i32(len);
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(&body[end..]);
    true
}
