//! The MySQL door's upstream: TCP, the login machine with TLS by the
//! connection's `tls` setting, and internal queries (the catalog, the
//! read-only setting) whose answers the client never sees.

use std::io;

use airlock_mywire::codec::{self, Framer};
use airlock_mywire::response::{Expect, Part, Response};
use airlock_mywire::upstream::{LoginError, Ready, Step, TlsWant, UpstreamLogin};
use bytes::BytesMut;
use mysql_common::constants::CapabilityFlags;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stream::{MaybeTls, UpstreamStream};
use crate::upstream::{Credential, UpstreamTarget, UpstreamTls};

/// Why the upstream session could not be opened; never the upstream's text.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the upstream: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection during login")]
    Closed,
    #[error(transparent)]
    Login(#[from] LoginError),
}

/// Reads the upstream's greeting only: its version string and whether it
/// is MySQL. For the client's greeting, which goes out before the client
/// names its connection.
pub async fn probe(target: &UpstreamTarget) -> Result<(Vec<u8>, bool), ConnectError> {
    let mut tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let mut input = BytesMut::with_capacity(256);
    let framer = Framer::new(64 * 1024);
    loop {
        if let Ok(Some(p)) = framer.next(&mut input) {
            let g = mysql_common::packets::HandshakePacket::deserialize(
                (),
                &mut mysql_common::io::ParseBuf(&p.payload),
            )
            .map_err(|_| LoginError::Protocol("a malformed greeting"))?;
            return Ok((
                g.server_version_ref().to_vec(),
                g.capabilities()
                    .contains(CapabilityFlags::CLIENT_LONG_PASSWORD),
            ));
        }
        if tcp.read_buf(&mut input).await? == 0 {
            return Err(ConnectError::Closed);
        }
    }
}

use mysql_common::proto::MyDeserialize;

/// Connects and logs in with the role's credential.
pub async fn connect(
    target: &UpstreamTarget,
    credential: &Credential,
    client: CapabilityFlags,
    collation: u8,
) -> Result<(UpstreamStream, Ready, BytesMut), ConnectError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    let (want, connector) = match &target.tls {
        UpstreamTls::Disable => (TlsWant::Disable, None),
        UpstreamTls::Prefer(c) => (TlsWant::Prefer, Some(c)),
        UpstreamTls::Require(c) | UpstreamTls::VerifyFull(c) => (TlsWant::Require, Some(c)),
    };
    let mut login = UpstreamLogin::new(
        &credential.user,
        credential.password.as_deref(),
        &target.database,
        client,
        collation,
        want,
    );
    let mut stream = MaybeTls::Plain(tcp);
    let mut input = BytesMut::with_capacity(1024);
    let mut out = BytesMut::new();
    loop {
        let step = login.handle(&mut input, &mut out);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        match step {
            Step::NeedMore => {
                if stream.read_buf(&mut input).await? == 0 {
                    return Err(ConnectError::Closed);
                }
            }
            Step::StartTls => {
                let (MaybeTls::Plain(tcp), Some(connector)) = (stream, connector) else {
                    return Err(LoginError::Protocol("TLS twice").into());
                };
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tls = connector.connect(name, tcp).await?;
                stream = MaybeTls::Tls(Box::new(tls));
                login.tls_established(&mut out);
                stream.write_all(&out).await?;
                out.clear();
            }
            Step::Ready(ready) => return Ok((stream, ready, input)),
            Step::Failed(e) => return Err(e.into()),
        }
    }
}

/// Runs `KILL {what} {upstream_id}` (`QUERY` or `CONNECTION`) on a
/// connection of its own, as `credential`.
pub async fn kill(
    target: &UpstreamTarget,
    credential: &Credential,
    what: &str,
    upstream_id: u32,
) -> Result<(), String> {
    let (mut up, ready, mut input) = connect(
        target,
        credential,
        CapabilityFlags::CLIENT_PROTOCOL_41,
        crate::mysql::session::UTF8MB4,
    )
    .await
    .map_err(|e| e.to_string())?;
    let deprecate_eof = ready
        .capabilities
        .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let sql = format!("KILL {what} {upstream_id}");
    query(&mut up, &mut input, deprecate_eof, &sql)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// An internal query's failure.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the upstream refused an internal query (error {0})")]
    Refused(u16),
    #[error("the upstream's answer was malformed: {0}")]
    Malformed(&'static str),
}

/// The idle upstream session's status flags (whether a transaction is
/// open, autocommit), from the OK of a COM_PING of airlock's own.
pub async fn status(
    upstream: &mut UpstreamStream,
    input: &mut BytesMut,
    deprecate_eof: bool,
) -> Result<u16, QueryError> {
    let mut out = BytesMut::new();
    codec::write(&mut out, &mut 0, &[codec::command::PING]);
    upstream.write_all(&out).await?;
    let framer = Framer::new(64 << 20);
    let mut response = Response::new(deprecate_eof);
    response.expect(Expect::Status);
    loop {
        let packet = match framer.next(input) {
            Ok(Some(p)) => p,
            Ok(None) => {
                if upstream.read_buf(input).await? == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                }
                continue;
            }
            Err(_) => return Err(QueryError::Malformed("a bad frame")),
        };
        match response.next(&packet.payload) {
            Ok(Part::Ok(info)) => return Ok(info.status),
            Ok(Part::Err) => {
                return Err(QueryError::Refused(
                    codec::err_info(&packet.payload).map_or(0, |e| e.code),
                ));
            }
            Ok(_) => return Err(QueryError::Malformed("an unexpected answer to COM_PING")),
            Err(e) => return Err(QueryError::Malformed(e.0)),
        }
    }
}

/// Runs `sql` on the idle upstream and returns its text rows.
pub async fn query(
    upstream: &mut UpstreamStream,
    input: &mut BytesMut,
    deprecate_eof: bool,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, QueryError> {
    query_named(upstream, input, deprecate_eof, sql)
        .await
        .map(|(_, rows)| rows)
}

/// Runs `sql` on the idle upstream and returns its (last) result's column
/// names and its text rows.
pub async fn query_named(
    upstream: &mut UpstreamStream,
    input: &mut BytesMut,
    deprecate_eof: bool,
    sql: &str,
) -> Result<(Vec<String>, Vec<Vec<Option<String>>>), QueryError> {
    let mut out = BytesMut::new();
    let mut payload = Vec::with_capacity(sql.len() + 1);
    payload.push(codec::command::QUERY);
    payload.extend_from_slice(sql.as_bytes());
    codec::write(&mut out, &mut 0, &payload);
    upstream.write_all(&out).await?;
    let framer = Framer::new(64 << 20);
    let mut response = Response::new(deprecate_eof);
    response.expect(Expect::Results { binary: false });
    let mut rows = Vec::new();
    let mut names = Vec::new();
    let mut error = None;
    while !response.done() {
        let packet = loop {
            match framer.next(input) {
                Ok(Some(p)) => break p,
                Ok(None) => {
                    if upstream.read_buf(input).await? == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                    }
                }
                Err(_) => return Err(QueryError::Malformed("a bad frame")),
            }
        };
        match response.next(&packet.payload) {
            Ok(Part::Row) => {
                let mut b = &packet.payload[..];
                let mut row = Vec::new();
                while !b.is_empty() {
                    let v = codec::text_value(&mut b)
                        .map_err(|()| QueryError::Malformed("a bad row"))?;
                    row.push(v.map(|v| String::from_utf8_lossy(v).into_owned()));
                }
                rows.push(row);
            }
            Ok(Part::ColumnCount(_)) => names.clear(),
            Ok(Part::Column(_)) => {
                let column = mysql_common::packets::Column::deserialize(
                    (),
                    &mut mysql_common::io::ParseBuf(&packet.payload),
                )
                .map_err(|_| QueryError::Malformed("a bad column definition"))?;
                names.push(column.name_str().into_owned());
            }
            Ok(Part::Err) => {
                error = Some(codec::err_info(&packet.payload).map_or(0, |e| e.code));
            }
            Ok(_) => {}
            Err(e) => return Err(QueryError::Malformed(e.0)),
        }
    }
    match error {
        Some(code) => Err(QueryError::Refused(code)),
        None => Ok((names, rows)),
    }
}
