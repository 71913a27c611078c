//! Opening the upstream session: TCP, optional TLS, and the login.

use std::io;

use airlock_pgwire::upstream::{LoginError, UpstreamLogin, UpstreamReady};
use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stream::{MaybeTls, UpstreamStream};

/// How to secure the upstream connection (`upstream.tls`).
#[derive(Clone)]
pub enum UpstreamTls {
    Disable,
    /// TLS when the server offers it, unverified (libpq's `prefer`).
    Prefer(tokio_rustls::TlsConnector),
    /// TLS or fail, unverified (libpq's `require`).
    Require(tokio_rustls::TlsConnector),
    /// TLS, certificate and host name verified.
    VerifyFull(tokio_rustls::TlsConnector),
}

/// Where a connection's upstream is.
#[derive(Clone)]
pub struct UpstreamTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub tls: UpstreamTls,
}

/// A role profile's upstream credential.
#[derive(Clone)]
pub struct Credential {
    pub user: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(***)")
    }
}

/// Why the upstream session could not be opened. Display never includes the
/// credential or the upstream's own error text.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the upstream: {0}")]
    Unreachable(io::Error),
    #[error("the upstream does not offer TLS, and the connection requires it")]
    TlsUnavailable,
    #[error("TLS with the upstream failed: {0}")]
    Tls(io::Error),
    #[error("the upstream closed the connection during login")]
    Closed,
    #[error(transparent)]
    Login(#[from] LoginError),
}

impl ConnectError {
    /// The SQLSTATE the client is shown.
    pub fn sqlstate(&self) -> &'static str {
        use airlock_pgwire::sqlstate;
        match self {
            ConnectError::Login(LoginError::Rejected { .. } | LoginError::PasswordRequired) => {
                sqlstate::SERVER_REJECTED_CONNECTION
            }
            _ => sqlstate::CONNECTION_FAILURE,
        }
    }
}

/// Connects and logs in; returns the ready stream and what the upstream said.
pub async fn connect(
    target: &UpstreamTarget,
    credential: &Credential,
    settings: &[(String, String)],
) -> Result<(UpstreamStream, UpstreamReady), ConnectError> {
    let tcp = tcp_connect(target).await?;
    let mut stream = match &target.tls {
        UpstreamTls::Disable => MaybeTls::Plain(tcp),
        // As libpq's sslmode=prefer: a server that accepts the SSLRequest
        // but fails the handshake is tried again without TLS.
        UpstreamTls::Prefer(c) => match negotiate_tls(tcp, c, &target.host, false).await {
            Err(ConnectError::Tls(e)) => {
                tracing::warn!(error = %e, "upstream TLS handshake failed; connecting without TLS (tls: prefer)");
                MaybeTls::Plain(tcp_connect(target).await?)
            }
            other => other?,
        },
        UpstreamTls::Require(c) | UpstreamTls::VerifyFull(c) => {
            negotiate_tls(tcp, c, &target.host, true).await?
        }
    };

    let mut out = BytesMut::new();
    let mut login = UpstreamLogin::start(
        &credential.user,
        &target.database,
        credential.password.clone(),
        scram_nonce(),
        settings,
        &mut out,
    );
    let mut input = BytesMut::with_capacity(4096);
    loop {
        if !out.is_empty() {
            stream
                .write_all(&out)
                .await
                .map_err(ConnectError::Unreachable)?;
            stream.flush().await.map_err(ConnectError::Unreachable)?;
            out.clear();
        }
        if stream
            .read_buf(&mut input)
            .await
            .map_err(ConnectError::Unreachable)?
            == 0
        {
            return Err(ConnectError::Closed);
        }
        if let Some(ready) = login.handle(&mut input, &mut out)? {
            if !input.is_empty() {
                return Err(
                    LoginError::Protocol(airlock_pgwire::ProtocolError::Malformed(
                        "data after the first ReadyForQuery",
                    ))
                    .into(),
                );
            }
            return Ok((stream, ready));
        }
    }
}

async fn tcp_connect(target: &UpstreamTarget) -> Result<TcpStream, ConnectError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(ConnectError::Unreachable)?;
    tcp.set_nodelay(true).map_err(ConnectError::Unreachable)?;
    Ok(tcp)
}

async fn negotiate_tls(
    mut tcp: TcpStream,
    connector: &tokio_rustls::TlsConnector,
    host: &str,
    require: bool,
) -> Result<UpstreamStream, ConnectError> {
    let mut req = BytesMut::new();
    airlock_pgwire::codec::ssl_request(&mut req);
    tcp.write_all(&req)
        .await
        .map_err(ConnectError::Unreachable)?;
    match tcp.read_u8().await.map_err(ConnectError::Unreachable)? {
        b'S' => {
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| ConnectError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(ConnectError::Tls)?;
            Ok(MaybeTls::Tls(Box::new(tls)))
        }
        b'N' if !require => Ok(MaybeTls::Plain(tcp)),
        b'N' => Err(ConnectError::TlsUnavailable),
        _ => Err(ConnectError::Tls(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected answer to SSLRequest",
        ))),
    }
}

/// A SCRAM client nonce: 18 random bytes in base64 (24 characters, as
/// libpq's).
fn scram_nonce() -> String {
    use base64::Engine;
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
