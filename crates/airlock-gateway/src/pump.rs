//! The I/O loop of a ready session.
//!
//! One future polls all four directions of a session (read client, write
//! upstream, read upstream, write client) in one `poll` call, on one task:
//! no split streams, no locks, no cross-thread wake-ups between the halves of
//! a round trip. Each direction stops reading while its outgoing buffer is
//! above a high-water mark, so a slow reader on one side pushes back on the
//! other and memory per session stays bounded by the buffers plus one
//! message.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use airlock_pgwire::ProtocolError;
use airlock_pgwire::codec;
use airlock_pgwire::relay::{ClientFlow, Ending, Inspector, Relay};
use bytes::{Buf, BytesMut};
use metrics::Counter;
use tokio::io::{AsyncRead, AsyncWrite};

/// Stop reading a side while this much is queued for the other.
const HIGH_WATER: usize = 256 * 1024;
/// Read at least this much at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Grow a buffer by at most this much for one read.
const MAX_RESERVE: usize = 1024 * 1024;
/// While a statement is held for approval, the client is still read (to
/// notice it leaving) until this much waits behind the held message.
const HELD_READ_LIMIT: usize = 64 * 1024;

/// Which side of the session something happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

/// How a pump run ended.
#[derive(Debug)]
pub enum PumpEnd {
    /// The client closed its socket without Terminate.
    ClientClosed,
    /// The client sent Terminate; it has been passed upstream.
    Terminated,
    /// The upstream closed; everything it sent has been delivered.
    UpstreamClosed,
    /// A peer broke the protocol.
    Protocol(Side, ProtocolError),
    /// A socket failed.
    Io(Side, io::Error),
    /// The inspector holds a message ([`Verdict::Hold`]); the session is
    /// intact. Run again to keep relaying while the hold lasts (the client
    /// is read only to notice it leaving), and [`Pump::release`] to end it.
    ///
    /// [`Verdict::Hold`]: airlock_pgwire::relay::Verdict::Hold
    Held,
    /// The inspector wants the upstream to itself
    /// ([`Inspector::wants_idle_upstream`]) and it is idle: use it, tell the
    /// inspector, and run again.
    ///
    /// [`Inspector::wants_idle_upstream`]: airlock_pgwire::relay::Inspector::wants_idle_upstream
    Idle,
    /// The client began a message and completed none for the message
    /// timeout while it was being read (a slowloris).
    Stalled,
    /// The inspector reached a limit that ends the session
    /// ([`Inspector::ending`]), and what it waits for was answered; what
    /// was queued for the client is still to be written.
    ///
    /// [`Inspector::ending`]: airlock_pgwire::relay::Inspector::ending
    Ended,
}

/// Per-session byte counters.
pub struct ByteCounters {
    pub client_to_upstream: Counter,
    pub upstream_to_client: Counter,
}

/// The buffers and streams of a ready session.
pub struct Pump<C, U, I: Inspector> {
    pub client: C,
    pub upstream: U,
    relay: Relay<I>,
    counters: ByteCounters,
    from_client: BytesMut,
    from_upstream: BytesMut,
    to_upstream: BytesMut,
    to_client: BytesMut,
    upstream_dirty: bool,
    client_dirty: bool,
    terminating: bool,
    upstream_eof: bool,
    /// `limits.message_timeout`, and its one timer.
    message_timeout: Option<(std::time::Duration, Pin<Box<tokio::time::Sleep>>)>,
    /// Bytes of client messages the relay has taken, and bytes read from
    /// the client, so far.
    client_taken: u64,
    client_read: u64,
    /// While a client message is incomplete: `client_taken` and
    /// `client_read` when the timer last started.
    stall: Option<(u64, u64)>,
}

/// A message still arriving at least this fast (per message timeout) is
/// not stalling: a large one over a slow link is not cut.
pub(crate) const STALL_PROGRESS: u64 = 64 * 1024;

impl<C, U, I> Pump<C, U, I>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
    I: Inspector,
{
    /// `to_client` may already hold messages (the login answer), and
    /// `from_client` bytes the client sent behind its password.
    pub fn new(
        client: C,
        upstream: U,
        relay: Relay<I>,
        counters: ByteCounters,
        from_client: BytesMut,
        to_client: BytesMut,
    ) -> Self {
        Pump {
            client,
            upstream,
            relay,
            counters,
            from_client,
            from_upstream: BytesMut::with_capacity(READ_CHUNK),
            to_upstream: BytesMut::with_capacity(READ_CHUNK),
            to_client,
            upstream_dirty: false,
            client_dirty: false,
            terminating: false,
            upstream_eof: false,
            message_timeout: None,
            client_taken: 0,
            client_read: 0,
            stall: None,
        }
    }

    /// Ends the session ([`PumpEnd::Stalled`]) when the client, while read,
    /// completes no message for `timeout` with one begun.
    pub fn set_message_timeout(&mut self, timeout: std::time::Duration) {
        self.message_timeout = Some((timeout, Box::pin(tokio::time::sleep(timeout))));
    }

    /// Relays until the session ends. Cancel-safe: dropping the future loses
    /// no data, and calling `run` again resumes.
    pub async fn run(&mut self) -> PumpEnd {
        // Time between runs (a hold being filed, the catalog read again)
        // is airlock's, not the client's.
        self.stall = None;
        if !self.from_client.is_empty() && self.to_upstream.is_empty() {
            // Messages pipelined behind the password.
            if let Err(end) = self.feed_client() {
                return end;
            }
        }
        poll_fn(|cx| self.poll(cx)).await
    }

    /// Hands what the client sent to the relay.
    fn feed_client(&mut self) -> Result<(), PumpEnd> {
        if self.relay.inspector().wants_idle_upstream()
            && self.relay.idle_outside_transaction()
            && self.to_upstream.is_empty()
            && self.from_upstream.is_empty()
        {
            return Err(PumpEnd::Idle);
        }
        let before = self.from_client.len();
        let flow = self
            .relay
            .handle_client(&mut self.from_client, &mut self.to_upstream);
        self.client_taken += before.saturating_sub(self.from_client.len()) as u64;
        if self.ended() {
            return Err(PumpEnd::Ended);
        }
        match flow {
            Ok(ClientFlow::Continue) => Ok(()),
            Ok(ClientFlow::Terminate) => {
                self.terminating = true;
                Ok(())
            }
            Err(e) => Err(PumpEnd::Protocol(Side::Client, e)),
        }
    }

    /// Whether the inspector's limit ends the session now: at once, or
    /// once everything sent upstream has been answered.
    fn ended(&self) -> bool {
        match self.relay.inspector().ending() {
            Some(Ending::Now) => true,
            Some(Ending::AfterAnswers) => !self.upstream_busy() && !self.upstream_dirty,
            None => false,
        }
    }

    /// Whether the upstream may still be executing something for the client.
    pub fn upstream_busy(&self) -> bool {
        self.relay.busy() || !self.to_upstream.is_empty()
    }

    /// The relay's inspector.
    pub fn inspector(&self) -> &I {
        self.relay.inspector()
    }

    pub fn inspector_mut(&mut self) -> &mut I {
        self.relay.inspector_mut()
    }

    /// Whether the client is inside a transaction block, or in the middle
    /// of an extended-protocol batch (an implicit transaction, holding
    /// whatever locks its statements took).
    pub fn in_transaction(&self) -> bool {
        self.relay.transaction_status() != b'I' || self.relay.busy()
    }

    /// Ends a hold: the held message is judged again at once.
    pub fn release(&mut self) -> Result<(), PumpEnd> {
        self.relay.release_hold();
        self.feed_client()
    }

    /// The messages still queued for the client (to append a last FATAL).
    pub fn client_out(&mut self) -> &mut BytesMut {
        &mut self.to_client
    }

    /// Writes out what is queued for the client, then shuts its socket down.
    pub async fn close_client(&mut self) {
        while !self.to_client.is_empty() {
            match poll_fn(|cx| Pin::new(&mut self.client).poll_write(cx, &self.to_client)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => self.to_client.advance(n),
            }
        }
        let _ = poll_fn(|cx| Pin::new(&mut self.client).poll_shutdown(cx)).await;
    }

    /// Sends Terminate upstream (unless the client already did) and closes.
    pub async fn close_upstream(&mut self) {
        if !self.terminating && !self.upstream_eof {
            self.to_upstream.extend_from_slice(&[b'X', 0, 0, 0, 4]);
        }
        while !self.to_upstream.is_empty() {
            match poll_fn(|cx| Pin::new(&mut self.upstream).poll_write(cx, &self.to_upstream)).await
            {
                Ok(0) | Err(_) => break,
                Ok(n) => self.to_upstream.advance(n),
            }
        }
        let _ = poll_fn(|cx| Pin::new(&mut self.upstream).poll_shutdown(cx)).await;
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<PumpEnd> {
        loop {
            let mut progress = false;

            match poll_drain(
                &mut self.upstream,
                cx,
                &mut self.to_upstream,
                &mut self.upstream_dirty,
            ) {
                Poll::Ready(Ok(moved)) => progress |= moved,
                Poll::Ready(Err(e)) => return Poll::Ready(PumpEnd::Io(Side::Upstream, e)),
                Poll::Pending => {}
            }
            match poll_drain(
                &mut self.client,
                cx,
                &mut self.to_client,
                &mut self.client_dirty,
            ) {
                Poll::Ready(Ok(moved)) => progress |= moved,
                Poll::Ready(Err(e)) => return Poll::Ready(PumpEnd::Io(Side::Client, e)),
                Poll::Pending => {}
            }
            if self.terminating && self.to_upstream.is_empty() && !self.upstream_dirty {
                return Poll::Ready(PumpEnd::Terminated);
            }
            if self.upstream_eof && self.to_client.is_empty() && !self.client_dirty {
                return Poll::Ready(PumpEnd::UpstreamClosed);
            }
            if self.relay.take_new_hold() {
                return Poll::Ready(PumpEnd::Held);
            }

            // While a message is held for its row estimate, what follows it
            // stays unread: the client's pipelining waits, memory does not
            // grow. A hold for approval may last minutes: the client is read
            // on, within a bound, to notice it leaving.
            let reading = if self.relay.held_by_inspector() {
                self.from_client.len() < HELD_READ_LIMIT
            } else {
                !self.relay.holding()
            };
            let reading = !self.terminating
                && !self.upstream_eof
                // Ending: the client's messages are not taken any more.
                && self.relay.inspector().ending().is_none()
                && reading
                && self.to_upstream.len() < HIGH_WATER;
            if reading {
                match poll_fill(&mut self.client, cx, &mut self.from_client) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(PumpEnd::ClientClosed),
                    Poll::Ready(Ok(n)) => {
                        self.counters.client_to_upstream.increment(n as u64);
                        self.client_read += n as u64;
                        if let Err(end) = self.feed_client() {
                            return Poll::Ready(end);
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(PumpEnd::Io(Side::Client, e)),
                    Poll::Pending => {}
                }
            }

            if !self.upstream_eof && self.to_client.len() < HIGH_WATER {
                match poll_fill(&mut self.upstream, cx, &mut self.from_upstream) {
                    Poll::Ready(Ok(0)) => {
                        self.upstream_eof = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        self.counters.upstream_to_client.increment(n as u64);
                        match self.relay.handle_upstream(
                            &mut self.from_upstream,
                            &mut self.to_client,
                            &mut self.to_upstream,
                        ) {
                            Ok(_) if self.ended() => return Poll::Ready(PumpEnd::Ended),
                            Ok(false) => {}
                            // A held message can be judged now.
                            Ok(true) => {
                                if let Err(end) = self.feed_client() {
                                    return Poll::Ready(end);
                                }
                            }
                            Err(e) => return Poll::Ready(PumpEnd::Protocol(Side::Upstream, e)),
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(PumpEnd::Io(Side::Upstream, e)),
                    Poll::Pending => {}
                }
            }

            if !progress {
                // A message held for approval is answered by airlock.
                let counting = reading && !self.relay.held_by_inspector();
                return self.poll_stall(cx, counting);
            }
        }
    }

    /// [`PumpEnd::Stalled`] once the client, read all along, has for the
    /// message timeout neither completed a message nor sent
    /// [`STALL_PROGRESS`] bytes, while one is incomplete. Only time spent
    /// reading counts: a client that is not read (a hold, backpressure) is
    /// not stalling.
    fn poll_stall(&mut self, cx: &mut Context<'_>, counting: bool) -> Poll<PumpEnd> {
        let Some((timeout, sleep)) = &mut self.message_timeout else {
            return Poll::Pending;
        };
        if !counting || !incomplete(&self.from_client) {
            self.stall = None;
            return Poll::Pending;
        }
        let (taken, read) = (self.client_taken, self.client_read);
        let going = matches!(self.stall, Some((t, r)) if t == taken && read - r < STALL_PROGRESS);
        if !going {
            self.stall = Some((taken, read));
            sleep.as_mut().reset(tokio::time::Instant::now() + *timeout);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(PumpEnd::Stalled),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Whether `buf` ends in an incomplete message (a header or body still
/// arriving), after the whole ones in front of it.
fn incomplete(buf: &[u8]) -> bool {
    let mut at = 0;
    while at < buf.len() {
        let Some(len) = buf.get(at + 1..at + 5) else {
            return true;
        };
        let len = u32::from_be_bytes(len.try_into().expect("four bytes")) as usize;
        at = at.saturating_add(1).saturating_add(len.max(4));
    }
    at > buf.len()
}

/// Writes as much of `buf` as the socket takes, then flushes (TLS streams
/// buffer records until flushed). Returns whether anything moved.
fn poll_drain<W: AsyncWrite + Unpin>(
    w: &mut W,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    dirty: &mut bool,
) -> Poll<io::Result<bool>> {
    let mut moved = false;
    while !buf.is_empty() {
        match Pin::new(&mut *w).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                *dirty = true;
                moved = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => break,
        }
    }
    if *dirty && buf.is_empty() {
        match Pin::new(&mut *w).poll_flush(cx) {
            Poll::Ready(Ok(())) => *dirty = false,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
    }
    if moved {
        Poll::Ready(Ok(true))
    } else if buf.is_empty() && !*dirty {
        Poll::Ready(Ok(false))
    } else {
        Poll::Pending
    }
}

/// Reads into `buf`, first making room for at least a chunk, or for the rest
/// of a large message whose header has arrived.
fn poll_fill<R: AsyncRead + Unpin>(
    r: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    // The relay has already checked any header at the front against the
    // size limit; growth is still capped per read.
    let want = match codec::peek_header(buf, usize::MAX) {
        Ok(Some(h)) if h.total_len > buf.len() => {
            (h.total_len - buf.len()).clamp(READ_CHUNK, MAX_RESERVE)
        }
        _ => READ_CHUNK,
    };
    if buf.capacity() - buf.len() < want.min(READ_CHUNK) {
        buf.reserve(want);
    }
    tokio_util::io::poll_read_buf(Pin::new(r), cx, buf)
}

#[cfg(test)]
mod tests {
    use super::incomplete;

    #[test]
    fn an_incomplete_message_is_found_behind_whole_ones() {
        let q = [b'Q', 0, 0, 0, 8, b's', b'e', b'l', b'\0'];
        assert!(!incomplete(&[]));
        assert!(!incomplete(&q));
        assert!(!incomplete(&[q, q].concat()));
        for cut in 1..q.len() {
            assert!(incomplete(&q[..cut]), "{cut}");
            assert!(incomplete(&[&q[..], &q[..cut]].concat()), "{cut}");
        }
    }
}
