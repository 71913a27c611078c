//! The MCP door's PostgreSQL upstream: one statement per call through the
//! extended protocol (Parse, Bind with text parameters, Describe, Execute
//! with a row limit, Sync), its answer streamed to a [`Sink`].

use std::time::Duration;

use airlock_pgwire::codec;
use airlock_policy::masking::FieldOrigin;
use airlock_policy::{AccessMode, Route};
use bytes::BytesMut;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::run::{Answer, Catalogs, Column, Done, Failure, Lost, Param, Sink, UpstreamError};
use crate::snapshot::Snapshot;
use crate::stream::UpstreamStream;

pub(super) struct Conn {
    stream: UpstreamStream,
    input: BytesMut,
    max_message: usize,
    /// How to cancel the statement running (an upstream that stops
    /// answering).
    pub(super) cancel: Option<crate::cancel::CancelTarget>,
}

/// Logs in as the route's role (read-only upstream too for a read-only
/// route, with `statement_timeout` set) and reads the masking catalog
/// when the route is masked.
pub(super) async fn open(
    snapshot: &Snapshot,
    route: &Route,
    statement_timeout: Duration,
) -> Result<(Conn, Catalogs), Failure> {
    let conn = &snapshot.connections[&route.connection];
    let credential = &conn.roles[&route.role];
    // The analyzer lexes PostgreSQL's standard strings in UTF-8: set at
    // login (over any role or database default) and checked below.
    let mut settings = vec![
        ("application_name".to_string(), "airlock-mcp".to_string()),
        ("standard_conforming_strings".to_string(), "on".to_string()),
        ("client_encoding".to_string(), "UTF8".to_string()),
        (
            "statement_timeout".to_string(),
            statement_timeout.as_millis().to_string(),
        ),
    ];
    if route.mode == AccessMode::ReadOnly {
        settings.push(("default_transaction_read_only".into(), "on".into()));
    }
    let timeout = snapshot.limits.upstream_connect_timeout;
    let connect = crate::upstream::connect(&conn.target, credential, &settings);
    let (mut stream, ready) = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream login failed");
            return Err(Failure::unavailable(&route.connection));
        }
        Err(_) => return Err(Failure::unavailable(&route.connection)),
    };
    let setting = |name: &str| {
        ready
            .parameters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if setting("standard_conforming_strings") != Some("on")
        || !setting("client_encoding").is_some_and(|e| e.eq_ignore_ascii_case("UTF8"))
    {
        return Err(Failure::new(
            "unavailable",
            "58000",
            "airlock: the upstream session does not use standard strings in UTF-8, which airlock needs to read statements as the server does",
        ));
    }
    let cancel = ready
        .backend_key
        .map(|(process_id, secret_key)| crate::cancel::CancelTarget {
            host: conn.target.host.clone(),
            port: conn.target.port,
            process_id,
            secret_key,
        });
    let read = crate::catalog::read(&mut stream, &snapshot.masking.policy);
    let catalog = crate::catalog::for_masking(snapshot, route, read)
        .await
        .map_err(|_| Failure::unmaskable(&route.connection))?;
    // As the wire door: unique keys spare a read-write route most row
    // estimates.
    let read = crate::catalog::read_keys(&mut stream);
    let keys = crate::catalog::for_bounds(snapshot, route, read)
        .await
        .map_err(|_| Failure::unavailable(&route.connection))?;
    Ok((
        Conn {
            stream,
            input: BytesMut::with_capacity(16 << 10),
            max_message: snapshot.limits.max_message_size,
            cancel,
        },
        Catalogs {
            masking: catalog,
            keys,
        },
    ))
}

impl Conn {
    /// Runs `sql` with `params`, streaming at most `max_rows` rows (one
    /// more tells the sink there were more) to `sink`.
    pub(super) async fn execute(
        &mut self,
        sql: &str,
        params: &[Param],
        max_rows: u64,
        sink: &mut (dyn Sink + Send),
    ) -> Result<Answer, Lost> {
        let mut out = BytesMut::new();
        codec::parse("", sql, &mut out);
        let texts: Vec<Option<Vec<u8>>> = params.iter().map(Param::text).collect();
        let values: Vec<Option<&[u8]>> = texts.iter().map(Option::as_deref).collect();
        codec::bind_text("", "", &values, &mut out);
        codec::describe(b'P', "", &mut out);
        let limit = u32::try_from(max_rows.saturating_add(1)).unwrap_or(i32::MAX as u32);
        codec::execute_rows("", limit.min(i32::MAX as u32), &mut out);
        codec::sync(&mut out);
        self.stream.write_all(&out).await.map_err(|_| Lost)?;
        self.stream.flush().await.map_err(|_| Lost)?;
        let mut kinds: Vec<Kind> = Vec::new();
        let mut done = None;
        let mut error = None;
        loop {
            let Some(msg) =
                codec::parse_message(&mut self.input, self.max_message).map_err(|_| Lost)?
            else {
                if self
                    .stream
                    .read_buf(&mut self.input)
                    .await
                    .map_err(|_| Lost)?
                    == 0
                {
                    return Err(Lost);
                }
                continue;
            };
            match msg.tag {
                b'T' => {
                    let columns = row_description(&msg.body).ok_or(Lost)?;
                    kinds = columns.iter().map(|(_, _, oid)| Kind::of(*oid)).collect();
                    sink.columns(
                        columns
                            .into_iter()
                            .map(|(name, origin, oid)| Column {
                                name,
                                origin,
                                text: crate::mask::text_like(oid),
                            })
                            .collect(),
                    );
                }
                b'n' => sink.columns(Vec::new()),
                b'D' => {
                    let mut values = codec::data_row_values(&msg.body);
                    let row: Vec<Value> = values
                        .by_ref()
                        .enumerate()
                        .map(|(i, v)| json(kinds.get(i).copied().unwrap_or(Kind::Text), v))
                        .collect();
                    if !values.is_complete() {
                        return Err(Lost);
                    }
                    sink.row(row);
                }
                b'C' => {
                    done = Some(Done {
                        tag: Some(cstr(&msg.body)),
                        suspended: false,
                    })
                }
                b's' => {
                    done = Some(Done {
                        tag: None,
                        suspended: true,
                    })
                }
                b'I' => {
                    done = Some(Done {
                        tag: None,
                        suspended: false,
                    })
                }
                b'E' => {
                    let fields = codec::notice_fields(&msg.body);
                    let get = |f: u8| {
                        fields
                            .iter()
                            .find(|(c, _)| *c == f)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    error = Some(UpstreamError {
                        code: get(b'C'),
                        message: get(b'M'),
                        raw: msg.body.to_vec(),
                    });
                }
                // COPY (refused before it runs; a function could still
                // start one): no data goes up, none comes back.
                // The Sync sent with the statement was ignored in copy-in
                // mode: another ends the failed COPY's batch.
                b'G' | b'W' => {
                    let mut fail = BytesMut::new();
                    codec::copy_fail("airlock: COPY is not available through MCP", &mut fail);
                    codec::sync(&mut fail);
                    self.stream.write_all(&fail).await.map_err(|_| Lost)?;
                }
                b'H' => {
                    error = Some(UpstreamError {
                        code: "0A000".into(),
                        message: "airlock: COPY is not available through MCP".into(),
                        raw: Vec::new(),
                    });
                }
                b'Z' => {
                    return Ok(super::run::answer(error, done));
                }
                // ParseComplete, BindComplete, notices, parameter status.
                _ => {}
            }
        }
    }

    /// The planner's row estimate and total cost of `sql` (its EXPLAIN,
    /// with the same parameters; nothing runs).
    pub(super) async fn estimate(
        &mut self,
        sql: &str,
        params: &[Param],
    ) -> (Option<u64>, Option<f64>) {
        let mut plan = super::run::FirstValue::default();
        let explain = format!("EXPLAIN (FORMAT JSON) {sql}");
        match (
            self.execute(&explain, params, 1, &mut plan).await,
            plan.value,
        ) {
            // `json` comes back parsed.
            (Ok(Ok(_)), Some(plan)) => (
                crate::inspect::plan_rows_in(&plan),
                crate::inspect::plan_cost_in(&plan),
            ),
            _ => (None, None),
        }
    }
}

/// How a column's text values become JSON.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Float,
    Bool,
    Json,
}

impl Kind {
    fn of(type_oid: u32) -> Kind {
        match type_oid {
            20 | 21 | 23 | 26 => Kind::Integer,
            700 | 701 => Kind::Float,
            16 => Kind::Bool,
            114 | 3802 => Kind::Json,
            _ => Kind::Text,
        }
    }
}

fn json(kind: Kind, value: Option<&[u8]>) -> Value {
    let Some(bytes) = value else {
        return Value::Null;
    };
    let text = String::from_utf8_lossy(bytes);
    match kind {
        Kind::Integer => text
            .parse::<i64>()
            .map_or_else(|_| Value::String(text.into_owned()), Value::from),
        Kind::Float => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Value::from(f),
            _ => Value::String(text.into_owned()),
        },
        Kind::Bool => Value::Bool(text == "t"),
        Kind::Json => serde_json::from_str(&text).unwrap_or(Value::String(text.into_owned())),
        Kind::Text => Value::String(text.into_owned()),
    }
}

/// A RowDescription's columns: name, origin, type OID.
fn row_description(body: &[u8]) -> Option<Vec<(String, FieldOrigin, u32)>> {
    let fields = crate::mask::fields(body)?;
    let mut names = Vec::with_capacity(fields.len());
    let mut at = 2;
    for _ in 0..fields.len() {
        let end = at + body.get(at..)?.iter().position(|&b| b == 0)?;
        names.push(String::from_utf8_lossy(&body[at..end]).into_owned());
        at = end + 1 + 18;
    }
    Some(
        names
            .into_iter()
            .zip(fields)
            .map(|(name, (origin, oid, _))| (name, origin, oid))
            .collect(),
    )
}

fn cstr(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}
