//! HTTP/1.1 on the worker's listeners with hyper: keep-alive, pipelining, chunked bodies, HEAD
//! and `Expect: 100-continue` (hyper answers it when the app first reads `wsgi.input`).
//!
//! A stop never closes a keep-alive connection under a client that may be sending on it (the
//! race that makes gunicorn and HAProxy reset requests after a reload): each connection's next
//! response carries `Connection: close`, and only a connection still idle after
//! [`IDLE_DRAIN_GRACE`] is closed.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use super::Tracker;
use crate::wsgi::environ::{ConnEnv, Peer};
use crate::wsgi::reply::{Reply, ResponseBody};
use crate::wsgi::Pool;

/// A listener as this worker accepts on it.
pub enum Acceptor {
    Tcp(TcpListener),
    /// With the socket path, reported as SERVER_NAME.
    Unix(UnixListener, String),
}

/// How long a draining worker keeps an idle keep-alive connection open for the client's next
/// request (answered, with `Connection: close`) before closing it.
pub const IDLE_DRAIN_GRACE: Duration = Duration::from_secs(1);

/// What every connection of the worker shares.
pub struct State {
    pub python: Pool,
    pub statics: super::static_files::StaticMap,
    pub yielder: super::yielding::Yielder,
}

/// Accepts until `stop` turns true, then drops this worker's copy of the listener (the socket
/// itself stays open in the pool and in other workers).
pub async fn accept_loop(
    acceptor: Acceptor,
    state: Arc<State>,
    tracker: Arc<Tracker>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            a = async {
                tracker.take_turn().await;
                accept(&acceptor).await
            } => a,
        };
        match accepted {
            Ok((io, peer)) => {
                let guard = tracker.enter();
                let state = state.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    match io {
                        Stream::Tcp(s) => {
                            let _ = s.set_nodelay(true);
                            serve_connection(s, peer, state, stop).await
                        }
                        Stream::Unix(s) => serve_connection(s, peer, state, stop).await,
                    }
                    drop(guard);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a ready listener.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(acceptor: &Acceptor) -> std::io::Result<(Stream, Peer)> {
    match acceptor {
        Acceptor::Tcp(l) => {
            let (s, remote) = l.accept().await?;
            let local = s.local_addr()?;
            Ok((Stream::Tcp(s), Peer::Tcp { remote, local }))
        }
        Acceptor::Unix(l, path) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), Peer::Unix { path: path.clone() }))
        }
    }
}

async fn serve_connection<S>(io: S, peer: Peer, state: Arc<State>, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn_env = Arc::new(ConnEnv::new(peer));
    let service = service_fn(move |req| handle(req, conn_env.clone(), state.clone()));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .pipeline_flush(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let stopping = *stop.borrow_and_update();
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { if !stopping { let _ = stop.changed().await; } } => {
            // Draining: the next response says `Connection: close`; a connection on which no
            // request comes within the grace is closed (a busy one after its response).
            tokio::select! {
                r = conn.as_mut() => r,
                _ = tokio::time::sleep(IDLE_DRAIN_GRACE) => {
                    tracing::debug!("drain grace over: closing the connection once idle");
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnEnv>,
    state: Arc<State>,
) -> Result<Response<ResponseBody>, Infallible> {
    state.yielder.before_request();
    if let Some(file) = state.statics.resolve(req.method(), req.uri().path()) {
        let reply = super::static_files::serve(&file, req.method(), req.headers());
        return Ok(finish(reply));
    }
    let (parts, body) = req.into_parts();
    let reply = state.python.call(parts, conn, body).await;
    Ok(finish(reply))
}

/// The response for a reply; once the worker is stopping it closes the connection. The flag
/// is set by the signal handler itself, so a response from an inline call that was running
/// when the stop came knows it too.
fn finish(reply: Reply) -> Response<ResponseBody> {
    let mut response = reply.into_response();
    if crate::signals::WORKER_STOPPING.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}
