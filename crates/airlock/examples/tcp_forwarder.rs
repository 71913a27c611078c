//! A bare TCP forwarder, the benchmark baseline for "one extra hop".
//!
//! `cargo run --release -p airlock --example tcp_forwarder -- LISTEN UPSTREAM`
//! (for example `127.0.0.1:6433 127.0.0.1:5432`). Each accepted connection
//! gets its own upstream connection, TCP_NODELAY on both sockets, and one
//! task running `tokio::io::copy_bidirectional`. No parsing, no
//! authentication: it measures what any proxy pays for the hop itself.
//! Used by `bench/pgbench.sh`; not part of the product.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream), None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: tcp_forwarder LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let parse = |s: &str| -> std::io::Result<SocketAddr> {
        s.parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{s}: {e}")))
    };
    let (listen, upstream) = (parse(&listen)?, parse(&upstream)?);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("tcp_forwarder: {} -> {upstream}", listener.local_addr()?);
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = forward(client, upstream).await {
                eprintln!("tcp_forwarder: {e}");
            }
        });
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
