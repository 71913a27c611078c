//! Framing and encoding of PostgreSQL protocol 3.0 messages.
//!
//! Parsing is check-then-split: a parser looks at the bytes it has, returns
//! `Ok(None)` when it needs more, and only then splits a whole message off the
//! buffer. Lengths are checked before any allocation, so a peer cannot make
//! the gateway reserve memory it announces but never sends.
//!
//! Encoders are free functions that append one message to a `BytesMut`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;

/// Protocol version 3.0, as sent in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// The request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// The largest startup packet accepted; PostgreSQL's own limit.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// The first packet of a client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { process_id: i32, secret_key: i32 },
    Startup(Startup),
}

/// A StartupMessage: protocol version and parameters, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl Startup {
    /// The value of parameter `name`, if the client sent it.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a startup-phase packet (no type byte, an int32 length first).
pub fn parse_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes(buf[..4].try_into().unwrap());
    if len < 8 || len as usize > MAX_STARTUP_PACKET {
        return Err(ProtocolError::InvalidStartupLength(len));
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let mut body = buf.split_to(len).freeze();
    body.advance(4);
    let code = body.get_i32();
    let packet = match code {
        SSL_REQUEST_CODE if body.is_empty() => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE if body.is_empty() => StartupPacket::GssEncRequest,
        CANCEL_REQUEST_CODE if body.len() == 8 => StartupPacket::Cancel {
            process_id: body.get_i32(),
            secret_key: body.get_i32(),
        },
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE | CANCEL_REQUEST_CODE => {
            return Err(ProtocolError::Malformed(
                "request packet of the wrong length",
            ));
        }
        version => StartupPacket::Startup(Startup {
            major: (version >> 16) as u16,
            minor: (version & 0xffff) as u16,
            params: parse_startup_params(body)?,
        }),
    };
    Ok(Some(packet))
}

fn parse_startup_params(mut body: Bytes) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let key = read_cstr(&mut body)?;
        if key.is_empty() {
            break;
        }
        let value = read_cstr(&mut body)?;
        params.push((key, value));
    }
    if !body.is_empty() {
        return Err(ProtocolError::Malformed(
            "bytes after the startup parameters",
        ));
    }
    Ok(params)
}

/// Reads a NUL-terminated UTF-8 string off the front of `buf`.
pub fn read_cstr(buf: &mut Bytes) -> Result<String, ProtocolError> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(ProtocolError::Malformed(
            "string without its terminating NUL",
        ))?;
    let s = buf.split_to(end);
    buf.advance(1);
    String::from_utf8(s.to_vec()).map_err(|_| ProtocolError::InvalidUtf8)
}

/// The header of a typed message found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// The whole message length, type byte included.
    pub total_len: usize,
}

/// Looks at the typed message at the front of `buf` without consuming it.
///
/// Returns `Ok(None)` until the header is there, and the header as soon as it
/// is, whether or not the body has arrived: callers compare `total_len` with
/// what they have. Lengths under 4 and over `max_len` are errors.
#[inline]
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<Header>, ProtocolError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtocolError::InvalidLength(len));
    }
    let len = len as usize;
    if len > max_len {
        return Err(ProtocolError::TooLarge { len, max: max_len });
    }
    Ok(Some(Header {
        tag: buf[0],
        total_len: len + 1,
    }))
}

/// A whole typed message, split off a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tag: u8,
    /// The body, without type byte and length.
    pub body: Bytes,
}

/// Splits one whole typed message off the front of `buf`.
pub fn parse_message(buf: &mut BytesMut, max_len: usize) -> Result<Option<Message>, ProtocolError> {
    match peek_header(buf, max_len)? {
        Some(h) if buf.len() >= h.total_len => {
            let mut msg = buf.split_to(h.total_len).freeze();
            msg.advance(5);
            Ok(Some(Message {
                tag: h.tag,
                body: msg,
            }))
        }
        _ => Ok(None),
    }
}

/// Writes a typed message whose body `f` fills in, patching the length.
fn write_message(tag: u8, buf: &mut BytesMut, f: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    f(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: impl AsRef<[u8]>) {
    // NULs would end the field early and shift every later one.
    buf.extend(s.as_ref().iter().copied().filter(|&b| b != 0));
    buf.put_u8(0);
}

/// The severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Notice,
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "FATAL",
            Severity::Error => "ERROR",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse that airlock writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice<'a> {
    pub severity: Severity,
    pub code: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
    /// The error's cursor position in the statement (1-based, characters).
    pub position: Option<u32>,
}

impl<'a> Notice<'a> {
    pub fn new(severity: Severity, code: &'a str, message: &'a str) -> Self {
        Notice {
            severity,
            code,
            message,
            detail: None,
            hint: None,
            position: None,
        }
    }

    pub fn position(mut self, position: Option<u32>) -> Self {
        self.position = position;
        self
    }

    pub fn hint(mut self, hint: &'a str) -> Self {
        self.hint = Some(hint);
        self
    }

    pub fn detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// Appends an ErrorResponse (`E`), or a NoticeResponse (`N`) for the notice
/// and warning severities.
pub fn notice_message(n: &Notice<'_>, buf: &mut BytesMut) {
    let tag = match n.severity {
        Severity::Fatal | Severity::Error => b'E',
        Severity::Notice | Severity::Warning => b'N',
    };
    let position = n.position.map(|p| p.to_string());
    write_message(tag, buf, |b| {
        for (field, value) in [
            (b'S', Some(n.severity.as_str())),
            (b'V', Some(n.severity.as_str())),
            (b'C', Some(n.code)),
            (b'M', Some(n.message)),
            (b'D', n.detail),
            (b'H', n.hint),
            (b'P', position.as_deref()),
        ] {
            if let Some(v) = value {
                b.put_u8(field);
                put_cstr(b, v);
            }
        }
        b.put_u8(0);
    });
}

/// One parameter of a Bind message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindParam<'a> {
    /// Format code 1: the value is in the type's binary format.
    pub binary: bool,
    /// `None` for SQL NULL.
    pub value: Option<&'a [u8]>,
}

/// The parameters of a Bind body (portal, statement, format codes, values),
/// or `None` when it is malformed: truncated, or with a number of format
/// codes other than 0, 1 or one per parameter.
pub fn bind_parameters(body: &[u8]) -> Option<Vec<BindParam<'_>>> {
    let skip_cstr = |at: usize| -> Option<usize> {
        Some(at + body.get(at..)?.iter().position(|&b| b == 0)? + 1)
    };
    let i16_at = |at: usize| -> Option<i16> {
        Some(i16::from_be_bytes(body.get(at..at + 2)?.try_into().ok()?))
    };
    let mut at = skip_cstr(skip_cstr(0)?)?;
    let nformats = usize::try_from(i16_at(at)?).ok()?;
    let formats: Vec<i16> = (0..nformats)
        .map(|i| i16_at(at + 2 + 2 * i))
        .collect::<Option<_>>()?;
    at += 2 + 2 * nformats;
    let count = usize::try_from(i16_at(at)?).ok()?;
    at += 2;
    let mut params = Vec::with_capacity(count);
    for i in 0..count {
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => *formats.get(i)?,
        };
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let value = match usize::try_from(len) {
            Ok(len) => {
                let v = body.get(at..at + len)?;
                at += len;
                Some(v)
            }
            Err(_) => None,
        };
        params.push(BindParam {
            binary: format == 1,
            value,
        });
    }
    Some(params)
}

/// The values of a DataRow body, in order; `None` is SQL NULL. Iteration
/// stops at the first malformed value, and [`DataRowValues::is_complete`]
/// then says so: a row is never read past what it declares.
pub fn data_row_values(body: &[u8]) -> DataRowValues<'_> {
    let count = body
        .get(..2)
        .map_or(-1, |c| i16::from_be_bytes([c[0], c[1]]));
    DataRowValues {
        body,
        at: 2,
        left: count,
    }
}

/// See [`data_row_values`].
pub struct DataRowValues<'a> {
    body: &'a [u8],
    at: usize,
    /// Values still to read; negative when the row is malformed.
    left: i16,
}

impl<'a> DataRowValues<'a> {
    /// The number of values the row declares (0 for a malformed one).
    pub fn declared(body: &[u8]) -> i16 {
        body.get(..2)
            .map_or(0, |c| i16::from_be_bytes([c[0], c[1]]).max(0))
    }

    /// Whether every declared value was read and well-formed.
    pub fn is_complete(&self) -> bool {
        self.left == 0
    }
}

impl<'a> Iterator for DataRowValues<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left <= 0 {
            return None;
        }
        let Some(len) = self
            .body
            .get(self.at..self.at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            self.left = -1;
            return None;
        };
        self.at += 4;
        self.left -= 1;
        if len < 0 {
            return Some(None);
        }
        match self.body.get(self.at..self.at + len as usize) {
            Some(v) => {
                self.at += len as usize;
                Some(Some(v))
            }
            None => {
                self.left = -1;
                None
            }
        }
    }
}

/// The fields of a received ErrorResponse or NoticeResponse, by field code.
pub fn notice_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        out.push((field, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    out
}

/// AuthenticationOk.
pub fn authentication_ok(buf: &mut BytesMut) {
    write_message(b'R', buf, |b| b.put_i32(0));
}

/// AuthenticationCleartextPassword.
pub fn authentication_cleartext_password(buf: &mut BytesMut) {
    write_message(b'R', buf, |b| b.put_i32(3));
}

/// ParameterStatus.
pub fn parameter_status(name: &str, value: &str, buf: &mut BytesMut) {
    write_message(b'S', buf, |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

/// BackendKeyData.
pub fn backend_key_data(process_id: i32, secret_key: i32, buf: &mut BytesMut) {
    write_message(b'K', buf, |b| {
        b.put_i32(process_id);
        b.put_i32(secret_key);
    });
}

/// ReadyForQuery with transaction status `I`, `T` or `E`.
pub fn ready_for_query(status: u8, buf: &mut BytesMut) {
    write_message(b'Z', buf, |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest minor version supported and the
/// protocol options (`_pq_.*`) not recognized.
pub fn negotiate_protocol_version(minor: i32, unrecognized: &[&str], buf: &mut BytesMut) {
    write_message(b'v', buf, |b| {
        b.put_i32(minor);
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            put_cstr(b, o);
        }
    });
}

/// An SSLRequest packet.
pub fn ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(SSL_REQUEST_CODE);
}

/// A Parse message with no parameter types.
pub fn parse(statement: impl AsRef<[u8]>, sql: &str, buf: &mut BytesMut) {
    write_message(b'P', buf, |b| {
        put_cstr(b, statement);
        put_cstr(b, sql);
        b.put_i16(0);
    });
}

/// A Parse message with the parameter types `types` (a Parse body's own
/// types section: a count, then that many type OIDs).
pub fn parse_typed(statement: &str, sql: &str, types: &[u8], buf: &mut BytesMut) {
    write_message(b'P', buf, |b| {
        put_cstr(b, statement);
        put_cstr(b, sql);
        if types.is_empty() {
            b.put_i16(0);
        } else {
            b.extend_from_slice(types);
        }
    });
}

/// The parameter types section of a Parse body (after the name and the
/// query), or `None` when it is malformed.
pub fn parse_types(body: &[u8]) -> Option<&[u8]> {
    let name = body.iter().position(|&b| b == 0)?;
    let sql = body[name + 1..].iter().position(|&b| b == 0)?;
    let types = &body[name + 1 + sql + 1..];
    let n = i16::from_be_bytes(types.get(..2)?.try_into().ok()?);
    let len = 2 + 4 * usize::try_from(n).ok()?;
    (types.len() == len).then_some(types)
}

/// A Query or Parse message `tag` with `body`, its statement text replaced
/// by `sql` (a Parse keeps its name and parameter types). `None` when the
/// body is malformed.
pub fn with_text(tag: u8, body: &[u8], sql: &str, buf: &mut BytesMut) -> Option<()> {
    match tag {
        b'Q' => query(sql, buf),
        b'P' => {
            let name = &body[..body.iter().position(|&b| b == 0)?];
            let types = parse_types(body)?;
            write_message(b'P', buf, |b| {
                put_cstr(b, name);
                put_cstr(b, sql);
                b.extend_from_slice(types);
            });
        }
        _ => return None,
    }
    Some(())
}

/// A Bind of `statement` to `portal` with the parameter formats and values
/// of another Bind's body, all results in text.
pub fn bind_like(portal: &str, statement: &str, like: &[u8], buf: &mut BytesMut) -> Option<()> {
    let params = bind_params_section(like)?;
    write_message(b'B', buf, |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        b.extend_from_slice(params);
        b.put_i16(0);
    });
    Some(())
}

/// The part of a Bind body with its parameter formats and values (between
/// the names and the result formats), or `None` when it is malformed.
fn bind_params_section(body: &[u8]) -> Option<&[u8]> {
    let skip_cstr = |at: usize| -> Option<usize> {
        Some(at + body.get(at..)?.iter().position(|&b| b == 0)? + 1)
    };
    let i16_at = |at: usize| -> Option<i16> {
        Some(i16::from_be_bytes(body.get(at..at + 2)?.try_into().ok()?))
    };
    let start = skip_cstr(skip_cstr(0)?)?;
    let formats = usize::try_from(i16_at(start)?).ok()?;
    let mut at = start + 2 + 2 * formats;
    let params = usize::try_from(i16_at(at)?).ok()?;
    at += 2;
    for _ in 0..params {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4 + usize::try_from(len).unwrap_or(0);
    }
    body.get(start..at)
}

/// A Flush message.
pub fn flush(buf: &mut BytesMut) {
    write_message(b'H', buf, |_| {});
}

/// A Bind message with no parameters, all results in text.
pub fn bind(portal: impl AsRef<[u8]>, statement: impl AsRef<[u8]>, buf: &mut BytesMut) {
    write_message(b'B', buf, |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    });
}

/// A Bind message with `params` in text (`None` is NULL), all results in
/// text.
pub fn bind_text(portal: &str, statement: &str, params: &[Option<&[u8]>], buf: &mut BytesMut) {
    write_message(b'B', buf, |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        b.put_i16(0);
        b.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.extend_from_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(0);
    });
}

/// An Execute message fetching every row.
pub fn execute(portal: &str, buf: &mut BytesMut) {
    execute_rows(portal, 0, buf);
}

/// An Execute message fetching at most `max_rows` rows (0: every row).
pub fn execute_rows(portal: &str, max_rows: u32, buf: &mut BytesMut) {
    write_message(b'E', buf, |b| {
        put_cstr(b, portal);
        b.put_i32(max_rows as i32);
    });
}

/// A Close message for a prepared statement (`S`) or portal (`P`).
pub fn close(kind: u8, name: &str, buf: &mut BytesMut) {
    write_message(b'C', buf, |b| {
        b.put_u8(kind);
        put_cstr(b, name);
    });
}

/// A Describe message for a prepared statement (`S`) or portal (`P`).
pub fn describe(kind: u8, name: impl AsRef<[u8]>, buf: &mut BytesMut) {
    write_message(b'D', buf, |b| {
        b.put_u8(kind);
        put_cstr(b, name);
    });
}

/// A CopyFail message.
pub fn copy_fail(message: &str, buf: &mut BytesMut) {
    write_message(b'f', buf, |b| put_cstr(b, message));
}

/// A Sync message.
pub fn sync(buf: &mut BytesMut) {
    write_message(b'S', buf, |_| {});
}

/// A CancelRequest packet.
pub fn cancel_request(process_id: i32, secret_key: i32, buf: &mut BytesMut) {
    buf.put_i32(16);
    buf.put_i32(CANCEL_REQUEST_CODE);
    buf.put_i32(process_id);
    buf.put_i32(secret_key);
}

/// A simple Query message.
pub fn query(sql: &str, buf: &mut BytesMut) {
    write_message(b'Q', buf, |b| put_cstr(b, sql));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_bytes(version: i32, params: &[(&str, &str)]) -> BytesMut {
        let mut body = BytesMut::new();
        body.put_i32(version);
        for (k, v) in params {
            put_cstr(&mut body, k);
            put_cstr(&mut body, v);
        }
        body.put_u8(0);
        let mut buf = BytesMut::new();
        buf.put_i32(body.len() as i32 + 4);
        buf.extend_from_slice(&body);
        buf
    }

    #[test]
    fn startup_parses_only_when_complete() {
        let full = startup_bytes(
            PROTOCOL_3_0,
            &[("user", "readonly"), ("database", "orders")],
        );
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(parse_startup(&mut part).unwrap(), None, "cut at {cut}");
            assert_eq!(part.len(), cut, "nothing consumed while incomplete");
        }
        let mut buf = full.clone();
        buf.extend_from_slice(b"next");
        let Some(StartupPacket::Startup(s)) = parse_startup(&mut buf).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!((s.major, s.minor), (3, 0));
        assert_eq!(s.param("database"), Some("orders"));
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn startup_rejects_bad_lengths() {
        for len in [-1i32, 0, 7, 10_001, i32::MAX, 0x4745_5420 /* "GET " */] {
            let mut buf = BytesMut::new();
            buf.put_i32(len);
            buf.put_i32(PROTOCOL_3_0);
            assert_eq!(
                parse_startup(&mut buf),
                Err(ProtocolError::InvalidStartupLength(len)),
                "{len}"
            );
        }
    }

    #[test]
    fn special_requests() {
        let mut buf = BytesMut::new();
        buf.put_i32(8);
        buf.put_i32(SSL_REQUEST_CODE);
        buf.put_i32(8);
        buf.put_i32(GSSENC_REQUEST_CODE);
        buf.put_i32(16);
        buf.put_i32(CANCEL_REQUEST_CODE);
        buf.put_i32(7);
        buf.put_i32(-9);
        assert_eq!(
            parse_startup(&mut buf).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        assert_eq!(
            parse_startup(&mut buf).unwrap(),
            Some(StartupPacket::GssEncRequest)
        );
        assert_eq!(
            parse_startup(&mut buf).unwrap(),
            Some(StartupPacket::Cancel {
                process_id: 7,
                secret_key: -9
            })
        );
        let mut short_cancel = BytesMut::new();
        short_cancel.put_i32(12);
        short_cancel.put_i32(CANCEL_REQUEST_CODE);
        short_cancel.put_i32(7);
        assert!(parse_startup(&mut short_cancel).is_err());
    }

    #[test]
    fn startup_params_must_be_terminated_and_utf8() {
        let mut body = BytesMut::new();
        body.put_i32(PROTOCOL_3_0);
        body.extend_from_slice(b"user\0x"); // value without NUL
        let mut buf = BytesMut::new();
        buf.put_i32(body.len() as i32 + 4);
        buf.extend_from_slice(&body);
        assert!(matches!(
            parse_startup(&mut buf),
            Err(ProtocolError::Malformed(_))
        ));

        let mut buf = startup_bytes(PROTOCOL_3_0, &[("user", "x")]);
        let at = buf.len() - 3;
        buf[at] = 0xff;
        assert_eq!(parse_startup(&mut buf), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn typed_message_lengths() {
        let mut buf = BytesMut::new();
        query("select 1", &mut buf);
        let total = buf.len();
        assert_eq!(
            peek_header(&buf, 1 << 20).unwrap(),
            Some(Header {
                tag: b'Q',
                total_len: total
            })
        );
        assert_eq!(peek_header(&buf[..4], 1 << 20).unwrap(), None);
        let mut half = BytesMut::from(&buf[..total - 1]);
        assert_eq!(parse_message(&mut half, 1 << 20).unwrap(), None);
        let msg = parse_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(&msg.body[..], b"select 1\0");
        assert!(buf.is_empty());

        assert_eq!(
            peek_header(b"Q\xff\xff\xff\xfe", 1 << 20),
            Err(ProtocolError::InvalidLength(-2))
        );
        assert_eq!(
            peek_header(b"Q\0\0\0\x03", 1 << 20),
            Err(ProtocolError::InvalidLength(3))
        );
        assert_eq!(
            peek_header(b"Q\x40\0\0\x01", 1 << 20),
            Err(ProtocolError::TooLarge {
                len: 0x4000_0001,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn notice_round_trip_and_nul_safety() {
        let mut buf = BytesMut::new();
        notice_message(
            &Notice::new(Severity::Error, "42501", "bad\0guy").hint("try again"),
            &mut buf,
        );
        let msg = parse_message(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(msg.tag, b'E');
        let fields = notice_fields(&msg.body);
        assert!(fields.contains(&(b'C', "42501".into())));
        assert!(fields.contains(&(b'M', "badguy".into())));
        assert!(fields.contains(&(b'H', "try again".into())));
        assert!(fields.contains(&(b'S', "ERROR".into())));

        let mut buf = BytesMut::new();
        notice_message(&Notice::new(Severity::Notice, "00000", "hi"), &mut buf);
        assert_eq!(buf[0], b'N');
    }

    #[test]
    fn data_row_values_stop_at_malformed_values() {
        let row = |parts: &[&[u8]]| parts.concat();
        let good = row(&[
            &2i16.to_be_bytes(),
            &3i32.to_be_bytes(),
            b"abc",
            &(-1i32).to_be_bytes(),
        ]);
        let mut v = data_row_values(&good);
        assert_eq!(
            v.by_ref().collect::<Vec<_>>(),
            vec![Some(&b"abc"[..]), None]
        );
        assert!(v.is_complete());
        // Declares two values, carries one; and a length past the end.
        for bad in [
            row(&[&2i16.to_be_bytes(), &3i32.to_be_bytes(), b"abc"]),
            row(&[&1i16.to_be_bytes(), &9i32.to_be_bytes(), b"abc"]),
            row(&[&[0u8][..]]),
        ] {
            let mut v = data_row_values(&bad);
            let _ = v.by_ref().count();
            assert!(!v.is_complete(), "{bad:?}");
        }
    }

    #[test]
    fn bind_parameters_with_formats() {
        // portal "", statement "s", formats [0, 1, 0], 3 values, results: none.
        let mut b = vec![0, b's', 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 3];
        b.extend_from_slice(&1i32.to_be_bytes());
        b.push(b'x');
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&[0xff, 0x01]);
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        let got = bind_parameters(&b).unwrap();
        let param = |binary, value| BindParam { binary, value };
        assert_eq!(
            got,
            [
                param(false, Some(&b"x"[..])),
                param(true, Some(&[0xff, 0x01][..])),
                param(false, None)
            ]
        );
        assert!(bind_parameters(&b[..8]).is_none(), "truncated");
        // Two format codes for three values is malformed.
        let mut two = vec![0, b's', 0, 0, 2, 0, 0, 0, 1, 0, 3];
        two.extend_from_slice(&b[13..]);
        assert!(bind_parameters(&two).is_none());
        // So is a negative count.
        assert!(bind_parameters(&[0, 0, 0xff, 0xff]).is_none());
    }
}
