//! Connection limits for every listening socket, so that nobody can exhaust a process by
//! opening connections and saying nothing:
//!
//! - at most `max_connections` at a time per port; a connection past the cap is closed at
//!   once (accepting keeps draining the backlog, so the health checks of a load balancer
//!   still get through as connections end);
//! - the first bytes (the HTTP/2 preface, a TLS ClientHello, an HTTP/1 request line) must
//!   arrive within `handshake_timeout` of the accept;
//! - a connection with no traffic either way for `idle_timeout` is closed (an idle HTTP/1
//!   keep-alive connection; an HTTP/2 client that stopped answering is closed by the server's
//!   keep-alive pings, which count as traffic while it answers).
//!
//! [`raise_fd_limit`] lifts the soft file-descriptor limit to the hard one at start, so the caps
//! are reached before the process runs out of descriptors for its database connections.
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Bytes that end the handshake phase: the HTTP/2 client preface is 24, any TLS ClientHello or
/// HTTP/1 request line is longer.
const HANDSHAKE_BYTES: usize = 24;

enum Phase {
    Handshake { remaining: usize },
    Open,
}

/// A connection under the limits: it holds one of its port's permits until dropped.
pub struct Guarded<IO> {
    io: IO,
    timer: Pin<Box<Sleep>>,
    phase: Phase,
    idle: Duration,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, limits: &ConnectionLimits, permit: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            io,
            timer: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
            phase: Phase::Handshake {
                remaining: HANDSHAKE_BYTES,
            },
            idle: limits.idle_timeout,
            _permit: permit,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn traffic(&mut self, read: usize) {
        match &mut self.phase {
            Phase::Handshake { remaining } => {
                *remaining = remaining.saturating_sub(read);
                if *remaining == 0 {
                    self.phase = Phase::Open;
                    self.timer.as_mut().reset(Instant::now() + self.idle);
                }
            }
            Phase::Open => self.timer.as_mut().reset(Instant::now() + self.idle),
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.timer.as_mut().poll(cx).is_ready().then(|| {
            let what = match self.phase {
                Phase::Handshake { .. } => "no request within the handshake timeout",
                Phase::Open => "idle connection",
            };
            io::Error::new(io::ErrorKind::TimedOut, what)
        })
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    this.traffic(n);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write(cx, buf);
        // Writes keep an open connection alive (a stream the server feeds, keep-alive pings);
        // they do not end the handshake phase.
        if let (Poll::Ready(Ok(n)), Phase::Open) = (&res, &this.phase)
            && *n > 0
        {
            this.traffic(0);
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Phase::Open) = (&res, &this.phase)
            && *n > 0
        {
            this.traffic(0);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// tonic reads the peer address (and, over TLS, the peer's certificates) through this.
impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A TCP listener that hands out [`Guarded`] connections, at most `max_connections` at once.
pub struct GuardedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    /// Whom to tell in the log ("gRPC", "HTTP").
    port: &'static str,
}

impl GuardedListener {
    pub fn new(listener: TcpListener, limits: ConnectionLimits, port: &'static str) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            port,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection within the cap; connections past it are closed at once, accept
    /// errors (out of descriptors) back off instead of spinning.
    pub async fn accept(&self) -> (Guarded<TcpStream>, SocketAddr) {
        let mut refused: u64 = 0;
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => match self.permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let _ = stream.set_nodelay(true);
                        if refused > 0 {
                            tracing::warn!(
                                port = self.port,
                                refused,
                                "connections refused: the connection cap was reached"
                            );
                        }
                        return (Guarded::new(stream, &self.limits, Some(permit)), peer);
                    }
                    Err(_) => {
                        refused += 1;
                        if refused == 1 {
                            tracing::warn!(port = self.port, max = self.limits.max_connections, %peer, "connection cap reached: closing new connections");
                        }
                        drop(stream);
                    }
                },
                Err(e) => {
                    tracing::warn!(port = self.port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// The connections as a stream (what tonic's `serve_with_incoming` takes).
    pub fn incoming(self) -> impl tokio_stream::Stream<Item = io::Result<Guarded<TcpStream>>> {
        let me = Arc::new(self);
        futures_lite_unfold(me)
    }
}

fn futures_lite_unfold(
    me: Arc<GuardedListener>,
) -> impl tokio_stream::Stream<Item = io::Result<Guarded<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (conn, _) = me.accept().await;
            if tx.send(Ok(conn)).await.is_err() {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Lifts the soft limit on open file descriptors to the hard limit (what a server should be
/// allowed); returns the limit in force.
pub fn raise_fd_limit() -> Option<u64> {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(lim.rlim_max);
            }
        }
        Some(lim.rlim_cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(limits: ConnectionLimits) -> (Guarded<TcpStream>, TcpStream, GuardedListener) {
        let l = GuardedListener::new(
            TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            limits,
            "test",
        );
        let addr = l.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = l.accept().await;
        (server, client, l)
    }

    fn quick() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 2,
            handshake_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(400),
        }
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
        let (mut server, _client, _l) = pair(quick()).await;
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = server.read(&mut buf).await.expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(190));
    }

    #[tokio::test]
    async fn a_trickle_does_not_extend_the_handshake_but_traffic_extends_an_open_connection() {
        let (mut server, mut client, _l) = pair(quick()).await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                match server.read(&mut buf).await {
                    Ok(0) => return (got, None),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => return (got, Some(e.kind())),
                }
            }
        });
        for _ in 0..3 {
            client.write_all(b"x").await.expect("write");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (got, err) = reader.await.expect("reader");
        assert_eq!(
            err,
            Some(io::ErrorKind::TimedOut),
            "trickle of {} bytes",
            got.len()
        );

        let (mut server, mut client, _l) = pair(quick()).await;
        client.write_all(&[b'p'; 24]).await.expect("preface");
        // Traffic every 300 ms (under the 400 ms idle timeout) keeps it open for over a second.
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if client.write_all(b"ping").await.is_err() {
                    return None;
                }
            }
            // Kept open, silent.
            Some(client)
        });
        let mut total = 0;
        let mut buf = [0u8; 64];
        while total < 24 + 16 {
            total += server.read(&mut buf).await.expect("open connection");
        }
        let _client = writer
            .await
            .ok()
            .flatten()
            .expect("the writer kept writing");
        let err = server.read(&mut buf).await.expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_and_a_freed_slot_is_reused() {
        let l = GuardedListener::new(
            TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            quick(),
            "test",
        );
        let addr = l.local_addr().expect("addr");
        let _c1 = TcpStream::connect(addr).await.expect("c1");
        let (s1, _) = l.accept().await;
        let _c2 = TcpStream::connect(addr).await.expect("c2");
        let (_s2, _) = l.accept().await;
        let l = Arc::new(l);
        let accepting = tokio::spawn({
            let l = l.clone();
            async move { l.accept().await }
        });
        let mut c3 = TcpStream::connect(addr).await.expect("c3");
        let mut buf = [0u8; 1];
        // The third is closed by the server.
        let n = tokio::time::timeout(Duration::from_secs(2), c3.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0);
        drop(s1);
        let _c4 = TcpStream::connect(addr).await.expect("c4");
        let accepted = tokio::time::timeout(Duration::from_secs(2), accepting).await;
        assert!(accepted.is_ok(), "the freed slot took the next connection");
    }
}
