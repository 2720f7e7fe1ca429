//! The client API's own accept loop (in place of `axum::serve`, which bounds nothing): HTTP/1.1
//! on hyper with a header read timeout and an idle timeout per connection, at most a set number
//! of connections open at once (a new one past it is answered 503 `overloaded` and closed), TLS
//! when configured, and an `accept` that fails (out of file descriptors) logged, paused and
//! retried, never fatal. Graceful shutdown: stop accepting, let requests in flight finish
//! (idle connections close at once), for at most `CLIENT_SHUTDOWN_GRACE`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bulwark_limits::{
    ACCEPT_ERROR_LOG_EVERY, ACCEPT_RETRY, CLIENT_HEADER_TIMEOUT, CLIENT_IDLE_TIMEOUT,
    CLIENT_REJECT_DRAIN_BYTES, CLIENT_REJECT_LINGER, CLIENT_SHUTDOWN_GRACE, MAX_CLIENT_REJECTIONS,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// How the client API serves its connections.
#[derive(Clone)]
pub struct ServeOptions {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Tests shorten the bounds with these (never lengthen them: a value above the bound is
/// ignored), so that a slowloris or an idle connection is seen closed in seconds.
const TEST_HEADER_TIMEOUT_MS: &str = "BULWARK_TEST_CLIENT_HEADER_TIMEOUT_MS";
const TEST_IDLE_TIMEOUT_MS: &str = "BULWARK_TEST_CLIENT_IDLE_TIMEOUT_MS";
const TEST_MAX_CONNECTIONS: &str = "BULWARK_TEST_MAX_CLIENT_CONNECTIONS";

fn lowered_by_env(name: &str, bound: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(bound, |v| v.clamp(1, bound))
}

impl ServeOptions {
    /// The production bounds, `max_connections` (already capped to the fd limit) and `tls`,
    /// each possibly lowered by a test's environment.
    pub fn new(max_connections: usize, tls: Option<Arc<rustls::ServerConfig>>) -> ServeOptions {
        let ms = |name, bound: Duration| {
            Duration::from_millis(lowered_by_env(name, bound.as_millis() as u64))
        };
        ServeOptions {
            header_timeout: ms(TEST_HEADER_TIMEOUT_MS, CLIENT_HEADER_TIMEOUT),
            idle_timeout: ms(TEST_IDLE_TIMEOUT_MS, CLIENT_IDLE_TIMEOUT),
            max_connections: lowered_by_env(TEST_MAX_CONNECTIONS, max_connections as u64) as usize,
            tls,
        }
    }
}

/// Where connections come from: a `TcpListener`, or in tests one whose `accept` fails at will.
pub trait Listener: Send {
    fn accept(&mut self) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

impl Listener for TcpListener {
    async fn accept(&mut self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// Serves `app` on connections from `listener` until `shutdown` completes, then waits for the
/// requests in flight. Never returns early: an `accept` error is retried after a pause.
pub async fn serve<L: Listener>(
    mut listener: L,
    app: axum::Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let options = Arc::new(options);
    let open = Arc::new(Semaphore::new(options.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_CLIENT_REJECTIONS));
    let (stop, stopping) = watch::channel(false);
    let mut errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE/ENFILE leave the connection in the backlog: accepting again at once
                // would spin. Descriptors come back as connections close.
                if errors.should_log(Instant::now()) {
                    tracing::warn!(error = %e, suppressed = errors.take_suppressed(), "cannot accept a client connection; retrying shortly");
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                let conn = connection(stream, app.clone(), options.clone(), stopping.clone());
                tokio::spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
            Err(_) => reject(stream, &rejecting, options.tls.clone()),
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(options.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(CLIENT_SHUTDOWN_GRACE, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(grace = ?CLIENT_SHUTDOWN_GRACE, "client connections still open after the grace period; closing them");
    }
}

/// When to log a failed `accept`: at most once per `ACCEPT_ERROR_LOG_EVERY`, so that a node out
/// of descriptors does not fill its disk with the same line (the log file needs space too).
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn should_log(&mut self, now: Instant) -> bool {
        let due = self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_ERROR_LOG_EVERY);
        if due {
            self.last_logged = Some(now);
        } else {
            self.suppressed += 1;
        }
        due
    }

    fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// One client connection: its TLS handshake (within the header timeout), then HTTP/1.1 until
/// the client closes, a timeout, or the stop.
async fn connection(
    stream: TcpStream,
    app: axum::Router,
    options: Arc<ServeOptions>,
    stopping: watch::Receiver<bool>,
) {
    let activity = Activity::new();
    // Handlers (the refusals log) see where a request came from, as axum's `ConnectInfo`.
    let app = match stream.peer_addr() {
        Ok(from) => app.layer(axum::Extension(axum::extract::ConnectInfo(from))),
        Err(_) => app,
    };
    let io = Tracked {
        inner: stream,
        activity: activity.clone(),
    };
    let Some(tls) = options.tls.clone() else {
        return serve_http(io, app, &options, activity, stopping).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    match tokio::time::timeout(options.header_timeout, acceptor.accept(io)).await {
        Ok(Ok(tls_stream)) => serve_http(tls_stream, app, &options, activity, stopping).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "client TLS handshake failed"),
        Err(_) => tracing::debug!("client TLS handshake timed out"),
    }
}

async fn serve_http<I>(
    io: I,
    app: axum::Router,
    options: &ServeOptions,
    activity: Activity,
    mut stopping: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let mut stop_seen = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "client connection closed");
                }
                return;
            }
            _ = stopping.changed(), if !stop_seen => {
                stop_seen = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(options.idle_timeout) => {
                tracing::debug!("closing a client connection idle for {:?}", options.idle_timeout);
                return;
            }
        }
    }
}

/// A connection past the limit: answered 503 with `Retry-After`, then closed. At most
/// `MAX_CLIENT_REJECTIONS` are being answered at once; beyond, a connection is closed at once.
fn reject(stream: TcpStream, rejecting: &Arc<Semaphore>, tls: Option<Arc<rustls::ServerConfig>>) {
    let Ok(permit) = rejecting.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit: OwnedSemaphorePermit = permit;
        let answered = tokio::time::timeout(CLIENT_REJECT_LINGER, async move {
            match tls {
                None => answer_overloaded(stream).await,
                Some(config) => {
                    let stream = tokio_rustls::TlsAcceptor::from(config)
                        .accept(stream)
                        .await?;
                    answer_overloaded(stream).await
                }
            }
        });
        let _ = answered.await;
    });
}

/// The whole answer to a connection past the limit, in the API's error shape.
fn overloaded_answer() -> String {
    let body = r#"{"error":"overloaded","message":"too many client connections are open; retry in a second"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Writes the 503 without reading the request first, then reads what the client sent (a little,
/// briefly) before closing: closing with unread bytes resets the connection, and a reset can
/// destroy the answer before the client reads it.
async fn answer_overloaded<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> io::Result<()> {
    stream.write_all(overloaded_answer().as_bytes()).await?;
    stream.shutdown().await?;
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < CLIENT_REJECT_DRAIN_BYTES {
        match stream.read(&mut buf).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// When a byte last moved on a connection, either way.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Completes once nothing moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A stream that records its activity.
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    // hyper writes an answer's head and body in one vectored write when the stream can.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
