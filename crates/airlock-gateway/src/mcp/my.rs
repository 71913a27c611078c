//! The MCP door's MySQL/MariaDB upstream: one statement per call as a
//! prepared statement (COM_STMT_PREPARE, COM_STMT_EXECUTE with typed
//! parameters, COM_STMT_CLOSE), its binary rows streamed to a [`Sink`].

use std::time::Duration;

use airlock_mywire::codec::{self, Framer};
use airlock_mywire::response::{Expect, Part, Response};
use airlock_policy::masking::FieldOrigin;
use airlock_policy::{AccessMode, Route};
use bytes::{BufMut, BytesMut};
use mysql_common::constants::{CapabilityFlags, ColumnFlags};
use mysql_common::proto::MyDeserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::run::{Answer, Catalogs, Column, Done, Failure, Lost, Param, Sink, UpstreamError};
use crate::mysql::upstream;
use crate::snapshot::Snapshot;
use crate::stream::UpstreamStream;

pub(super) struct Conn {
    /// Who to `KILL QUERY` when the upstream stops answering: its target,
    /// the role's credential and the upstream's connection id.
    pub(super) kill: (
        crate::upstream::UpstreamTarget,
        crate::upstream::Credential,
        u32,
    ),
    stream: UpstreamStream,
    input: BytesMut,
    framer: Framer,
    deprecate_eof: bool,
    /// How the server lexes this session's statements.
    pub(super) mode: airlock_sql::mysql::Mode,
}

/// What airlock asks of the upstream as a MySQL client.
fn capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// Logs in as the route's role, makes a read-only route's session read-only
/// upstream too, bounds statements by `statement_timeout`, reads how the
/// server lexes, and the masking catalog when the route is masked.
pub(super) async fn open(
    snapshot: &Snapshot,
    route: &Route,
    statement_timeout: Duration,
) -> Result<(Conn, Catalogs), Failure> {
    let conn = &snapshot.connections[&route.connection];
    let credential = &conn.roles[&route.role];
    let timeout = snapshot.limits.upstream_connect_timeout;
    let connect = upstream::connect(
        &conn.target,
        credential,
        capabilities(),
        crate::mysql::session::UTF8MB4,
    );
    let (mut stream, ready, mut input) = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream login failed");
            return Err(Failure::unavailable(&route.connection));
        }
        Err(_) => return Err(Failure::unavailable(&route.connection)),
    };
    let deprecate_eof = ready
        .capabilities
        .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let mut setup = Vec::new();
    if route.mode == AccessMode::ReadOnly {
        setup.push("SET SESSION TRANSACTION READ ONLY".to_string());
    }
    // MariaDB bounds every statement; MySQL only SELECTs (in milliseconds).
    let seconds = statement_timeout.as_secs_f64();
    setup.push(if ready.mysql {
        format!(
            "SET SESSION max_execution_time = {}",
            statement_timeout.as_millis()
        )
    } else {
        format!("SET SESSION max_statement_time = {seconds}")
    });
    for sql in &setup {
        let set = upstream::query(&mut stream, &mut input, deprecate_eof, sql);
        if !matches!(tokio::time::timeout(timeout, set).await, Ok(Ok(_))) {
            tracing::warn!(sql, "upstream session setup failed");
            return Err(Failure::unavailable(&route.connection));
        }
    }
    let state = upstream::query(
        &mut stream,
        &mut input,
        deprecate_eof,
        crate::mysql::session::LEXING,
    );
    let mode = match tokio::time::timeout(timeout, state).await {
        Ok(Ok(rows)) => crate::mysql::session::lexing(&rows),
        _ => None,
    };
    let Some(mode) = mode else {
        return Err(Failure::unavailable(&route.connection));
    };
    let read = crate::mysql::session::read_catalog(
        &mut stream,
        &mut input,
        deprecate_eof,
        &snapshot.masking.policy,
    );
    let catalog = crate::catalog::for_masking(snapshot, route, read)
        .await
        .map_err(|_| Failure::unmaskable(&route.connection))?;
    Ok((
        Conn {
            kill: (conn.target.clone(), credential.clone(), ready.connection_id),
            stream,
            input,
            framer: Framer::new(snapshot.limits.max_message_size),
            deprecate_eof,
            mode,
        },
        Catalogs {
            masking: catalog,
            keys: None,
        },
    ))
}

/// One column of a binary result, for decoding.
#[derive(Clone, Copy)]
struct Type {
    column_type: u8,
    charset: u16,
    unsigned: bool,
}

impl Conn {
    async fn packet(&mut self) -> Result<codec::Packet, Lost> {
        loop {
            match self.framer.next(&mut self.input) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {
                    if self
                        .stream
                        .read_buf(&mut self.input)
                        .await
                        .map_err(|_| Lost)?
                        == 0
                    {
                        return Err(Lost);
                    }
                }
                Err(_) => return Err(Lost),
            }
        }
    }

    async fn send(&mut self, payload: &[u8]) -> Result<(), Lost> {
        let mut out = BytesMut::new();
        codec::write(&mut out, &mut 0, payload);
        self.stream.write_all(&out).await.map_err(|_| Lost)
    }

    /// Runs `sql` with `params` as a prepared statement, streaming at most
    /// `max_rows` rows (and one more, so the sink knows there were more)
    /// to `sink`; the rest are read and dropped.
    pub(super) async fn execute(
        &mut self,
        sql: &str,
        params: &[Param],
        max_rows: u64,
        sink: &mut (dyn Sink + Send),
    ) -> Result<Answer, Lost> {
        let mut prepare = Vec::with_capacity(sql.len() + 1);
        prepare.push(codec::command::STMT_PREPARE);
        prepare.extend_from_slice(sql.as_bytes());
        self.send(&prepare).await?;
        let mut response = Response::new(self.deprecate_eof);
        response.expect(Expect::Prepare);
        let mut prepared = None;
        let mut error = None;
        while !response.done() {
            let packet = self.packet().await?;
            match response.next(&packet.payload).map_err(|_| Lost)? {
                Part::Prepared {
                    statement, params, ..
                } => prepared = Some((statement, params)),
                Part::Err => error = Some(err(&packet.payload)),
                _ => {}
            }
        }
        if let Some(e) = error {
            return Ok(Err(e));
        }
        let Some((statement, count)) = prepared else {
            return Err(Lost);
        };
        if usize::from(count) != params.len() {
            self.close(statement).await?;
            return Ok(Err(UpstreamError {
                code: "1210".into(),
                message: format!(
                    "the statement has {count} parameter(s) and {} were given",
                    params.len()
                ),
                raw: Vec::new(),
            }));
        }
        self.send(&execute_payload(statement, params)).await?;
        let mut response = Response::new(self.deprecate_eof);
        response.expect(Expect::Results { binary: true });
        let (mut types, mut columns) = (Vec::new(), Vec::new());
        let mut rows = 0u64;
        let mut done = None;
        let mut error = None;
        // Only the first result set reaches the sink (a CALL may answer
        // with more; they are read and dropped).
        let mut results = 0u32;
        let mut described = false;
        while !response.done() {
            let packet = self.packet().await?;
            let part = response.next(&packet.payload).map_err(|_| Lost)?;
            if !described
                && results == 0
                && !columns.is_empty()
                && matches!(part, Part::ColumnsEnd | Part::Row | Part::ResultEnd(_))
            {
                described = true;
                sink.columns(std::mem::take(&mut columns));
            }
            match part {
                Part::ColumnCount(_) => {
                    types.clear();
                    columns.clear();
                }
                Part::Column(_) => {
                    let c = mysql_common::packets::Column::deserialize(
                        (),
                        &mut mysql_common::io::ParseBuf(&packet.payload),
                    )
                    .map_err(|_| Lost)?;
                    let column_type = c.column_type() as u8;
                    types.push(Type {
                        column_type,
                        charset: c.character_set(),
                        unsigned: c.flags().contains(ColumnFlags::UNSIGNED_FLAG),
                    });
                    columns.push(Column {
                        name: c.name_str().into_owned(),
                        origin: FieldOrigin::Named {
                            schema: c.schema_str().into_owned(),
                            table: c.org_table_str().into_owned(),
                            column: c.org_name_str().to_lowercase(),
                        },
                        text: crate::mysql::mask::text_like(column_type, c.character_set()),
                    });
                }
                Part::Row if results == 0 => {
                    rows += 1;
                    if rows <= max_rows.saturating_add(1) {
                        sink.row(row(&packet.payload, &types).ok_or(Lost)?);
                    }
                }
                Part::Ok(info) if results == 0 => {
                    results += 1;
                    if !described {
                        described = true;
                        sink.columns(Vec::new());
                    }
                    done = Some(Done {
                        tag: Some(format!("OK {}", info.affected_rows)),
                        suspended: false,
                    });
                }
                Part::ResultEnd(_) if results == 0 => {
                    results += 1;
                    done = Some(Done {
                        tag: Some(format!("SELECT {rows}")),
                        suspended: false,
                    });
                }
                Part::Err => error = Some(err(&packet.payload)),
                _ => {}
            }
        }
        self.close(statement).await?;
        Ok(super::run::answer(error, done))
    }

    async fn close(&mut self, statement: u32) -> Result<(), Lost> {
        let mut close = vec![codec::command::STMT_CLOSE];
        close.extend_from_slice(&statement.to_le_bytes());
        self.send(&close).await
    }

    /// The largest `rows` of the statement's EXPLAIN (nothing runs).
    pub(super) async fn estimate(&mut self, sql: &str, params: &[Param]) -> Option<u64> {
        let mut all = super::run::AllRows::default();
        let explain = format!("EXPLAIN {sql}");
        match self.execute(&explain, params, 1000, &mut all).await {
            Ok(Ok(_)) => {}
            _ => return None,
        }
        let at = all
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case("rows"))?;
        all.rows.iter().try_fold(0u64, |max, r| {
            let v = match r.get(at)? {
                Value::Number(n) => n.as_u64()?,
                Value::String(s) => s.parse().ok()?,
                _ => return None,
            };
            Some(max.max(v))
        })
    }
}

fn err(payload: &bytes::Bytes) -> UpstreamError {
    match codec::err_info(payload) {
        Some(e) => UpstreamError {
            code: e.code.to_string(),
            message: String::from_utf8_lossy(&e.message).into_owned(),
            raw: Vec::new(),
        },
        None => UpstreamError {
            code: "1105".into(),
            message: "the upstream failed the statement".into(),
            raw: Vec::new(),
        },
    }
}

/// COM_STMT_EXECUTE with `params` bound by their JSON types.
fn execute_payload(statement: u32, params: &[Param]) -> Vec<u8> {
    let mut p = BytesMut::new();
    p.put_u8(codec::command::STMT_EXECUTE);
    p.put_u32_le(statement);
    p.put_u8(0); // no cursor
    p.put_u32_le(1); // iteration count
    if !params.is_empty() {
        let mut bitmap = vec![0u8; params.len().div_ceil(8)];
        for (i, v) in params.iter().enumerate() {
            if matches!(v, Param::Null) {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        p.extend_from_slice(&bitmap);
        p.put_u8(1); // types follow
        for v in params {
            let (ty, unsigned) = match v {
                Param::Null => (0x06, 0),
                Param::Int(_) => (0x08, 0),
                Param::Float(_) => (0x05, 0),
                Param::Bool(_) => (0x01, 0),
                Param::Text(_) => (0xFD, 0),
            };
            p.put_u8(ty);
            p.put_u8(unsigned);
        }
        for v in params {
            match v {
                Param::Null => {}
                Param::Int(i) => p.put_i64_le(*i),
                Param::Float(f) => p.put_f64_le(*f),
                Param::Bool(b) => p.put_u8(u8::from(*b)),
                Param::Text(s) => codec::put_lenenc_bytes(&mut p, s.as_bytes()),
            }
        }
    }
    p.to_vec()
}

/// A binary row's values as JSON.
fn row(payload: &[u8], types: &[Type]) -> Option<Vec<Value>> {
    let pairs: Vec<(u8, u16)> = types.iter().map(|t| (t.column_type, t.charset)).collect();
    let values = crate::mysql::binary::row_values(payload, &pairs)?;
    values
        .into_iter()
        .zip(types)
        .map(|(v, t)| match v {
            None => Some(Value::Null),
            Some(b) => json(*t, b),
        })
        .collect()
}

fn json(t: Type, b: &[u8]) -> Option<Value> {
    let int = |n: i64, u: u64| {
        if t.unsigned {
            Value::from(u)
        } else {
            Value::from(n)
        }
    };
    Some(match t.column_type {
        0x01 => int(i64::from(*b.first()? as i8), u64::from(*b.first()?)),
        0x02 | 0x0D => {
            let v = u16::from_le_bytes(b.get(..2)?.try_into().ok()?);
            int(i64::from(v as i16), u64::from(v))
        }
        0x03 | 0x09 => {
            let v = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
            int(i64::from(v as i32), u64::from(v))
        }
        0x08 => {
            let v = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
            int(v as i64, v)
        }
        0x04 => float(f64::from(f32::from_le_bytes(b.get(..4)?.try_into().ok()?))),
        0x05 => float(f64::from_le_bytes(b.get(..8)?.try_into().ok()?)),
        0x07 | 0x0A | 0x0C | 0x11 | 0x12 => Value::String(datetime(t.column_type, b)?),
        0x0B | 0x13 => Value::String(time(b)?),
        0xF5 => {
            let text = String::from_utf8_lossy(b);
            serde_json::from_str(&text).unwrap_or(Value::String(text.into_owned()))
        }
        _ => Value::String(String::from_utf8_lossy(b).into_owned()),
    })
}

fn float(f: f64) -> Value {
    if f.is_finite() {
        Value::from(f)
    } else {
        Value::String(f.to_string())
    }
}

/// DATE, DATETIME, TIMESTAMP: a length byte, then year, month, day, and
/// optionally time and microseconds.
fn datetime(column_type: u8, b: &[u8]) -> Option<String> {
    let len = usize::from(*b.first()?);
    let b = b.get(1..1 + len)?;
    let get = |i: usize| b.get(i).copied().unwrap_or(0);
    let year = if len >= 2 {
        u16::from_le_bytes([b[0], b[1]])
    } else {
        0
    };
    let date = format!("{year:04}-{:02}-{:02}", get(2), get(3));
    if column_type == 0x0A {
        return Some(date);
    }
    let mut s = format!("{date} {:02}:{:02}:{:02}", get(4), get(5), get(6));
    if len >= 11 {
        let micros = u32::from_le_bytes(b.get(7..11)?.try_into().ok()?);
        s.push_str(&format!(".{micros:06}"));
    }
    Some(s)
}

/// TIME: a length byte, sign, days, hours, minutes, seconds, microseconds.
fn time(b: &[u8]) -> Option<String> {
    let len = usize::from(*b.first()?);
    if len == 0 {
        return Some("00:00:00".into());
    }
    let b = b.get(1..1 + len)?;
    let negative = b.first() == Some(&1);
    let days = u32::from_le_bytes(b.get(1..5)?.try_into().ok()?);
    let hours = days * 24 + u32::from(*b.get(5)?);
    let mut s = format!(
        "{}{hours:02}:{:02}:{:02}",
        if negative { "-" } else { "" },
        b.get(6)?,
        b.get(7)?
    );
    if len >= 12 {
        let micros = u32::from_le_bytes(b.get(8..12)?.try_into().ok()?);
        s.push_str(&format!(".{micros:06}"));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(column_type: u8, unsigned: bool) -> Type {
        Type {
            column_type,
            charset: 45,
            unsigned,
        }
    }

    #[test]
    fn binary_values_become_json() {
        assert_eq!(json(t(0x01, false), &[0xFF]), Some(Value::from(-1)));
        assert_eq!(json(t(0x01, true), &[0xFF]), Some(Value::from(255)));
        assert_eq!(
            json(t(0x08, false), &(-5i64).to_le_bytes()),
            Some(Value::from(-5))
        );
        assert_eq!(
            json(t(0x05, false), &1.5f64.to_le_bytes()),
            Some(Value::from(1.5))
        );
        assert_eq!(
            json(t(0x0C, false), &[7, 0xE8, 0x07, 12, 7, 9, 30, 5]),
            Some(Value::from("2024-12-07 09:30:05"))
        );
        assert_eq!(
            json(t(0x0A, false), &[4, 0xE8, 0x07, 2, 29]),
            Some(Value::from("2024-02-29"))
        );
        assert_eq!(
            json(t(0x0B, false), &[8, 1, 1, 0, 0, 0, 2, 3, 4]),
            Some(Value::from("-26:03:04"))
        );
        assert_eq!(
            json(t(0xF5, false), br#"{"a": [1]}"#),
            Some(serde_json::json!({"a": [1]}))
        );
        assert_eq!(json(t(0xFD, false), b"x"), Some(Value::from("x")));
        assert_eq!(json(t(0x03, false), &[1, 2]), None);
    }

    #[test]
    fn parameters_are_bound_by_type() {
        let p = execute_payload(
            7,
            &[
                Param::Int(3),
                Param::Null,
                Param::Text("a".into()),
                Param::Bool(true),
            ],
        );
        assert_eq!(&p[..10], &[0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(p[10], 0b0000_0010, "the NULL bitmap marks the second");
        assert_eq!(p[11], 1);
        assert_eq!(&p[12..20], &[0x08, 0, 0x06, 0, 0xFD, 0, 0x01, 0]);
        assert_eq!(&p[20..28], &3i64.to_le_bytes());
        assert_eq!(&p[28..], &[1, b'a', 1]);
    }
}
