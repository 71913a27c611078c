//! Recording, as the PostgreSQL door reports to the engine's
//! [`RecordingSession`]: what its messages mean.
//!
//! - a simple Query's statement is recorded as it is judged, before it is
//!   forwarded (or instead, when refused);
//! - an extended-protocol statement at its Bind (text from its Parse,
//!   parameters from the Bind), before the Bind and Execute are forwarded;
//!   one refused at Parse, at the Parse;
//! - a result per statement once its CommandComplete, EmptyQueryResponse,
//!   PortalSuspended or ErrorResponse passes, with the RowDescription's
//!   column names and the DataRows as the client got them.

use airlock_engine::recording::{At, Param, Params, RecordingSession};
use airlock_pgwire::codec;
use airlock_pgwire::relay::StatementRef;

/// A Bind body's parameters, as recording reads them.
pub(crate) fn params(bind: &[u8]) -> Params<'_> {
    match codec::bind_parameters(bind) {
        Some(params) => Params::Values(
            params
                .into_iter()
                .map(|p| Param {
                    value: p.value,
                    binary: p.binary,
                })
                .collect(),
        ),
        None => Params::Malformed,
    }
}

pub(crate) fn at(r: StatementRef) -> At {
    At {
        id: r.id,
        index: r.index,
    }
}

/// An upstream message answering statement `at`, as the client gets it
/// (masked and scrubbed).
pub(crate) fn observe(recording: &mut RecordingSession, r: StatementRef, tag: u8, body: &[u8]) {
    match tag {
        b'T' => recording.columns(r.id, column_names(body).into()),
        b'D' => recording.row(at(r), codec::data_row_values(body)),
        b'C' | b'I' | b's' => {
            let tag_text = (tag == b'C').then(|| cstr(body));
            recording.complete(at(r), tag_text, tag == b's');
        }
        b'E' => {
            let (code, message) = error_fields(body);
            recording.error(at(r), code, message);
        }
        _ => {}
    }
}

/// The field names of a RowDescription body.
pub(crate) fn column_names(body: &[u8]) -> Vec<String> {
    let count = body
        .get(..2)
        .map_or(0, |c| i16::from_be_bytes([c[0], c[1]]).max(0));
    let mut names = Vec::with_capacity(count as usize);
    let mut rest = body.get(2..).unwrap_or_default();
    for _ in 0..count {
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            break;
        };
        names.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        // name, NUL, then table OID 4, attnum 2, type 4, size 2, mod 4, format 2.
        rest = rest.get(end + 1 + 18..).unwrap_or_default();
    }
    names
}

fn cstr(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// An ErrorResponse's SQLSTATE and message.
fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut message = String::new();
    for (field, value) in codec::notice_fields(body) {
        match field {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_description_names() {
        let mut b = vec![0, 2];
        for name in ["id", "ssn"] {
            b.extend_from_slice(name.as_bytes());
            b.push(0);
            b.extend_from_slice(&[0; 18]);
        }
        assert_eq!(column_names(&b), ["id", "ssn"]);
    }
}
