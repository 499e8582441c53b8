//! HTTP/1.1 on the worker's listeners with hyper: keep-alive, pipelining, chunked bodies, HEAD
//! and `Expect: 100-continue` (hyper answers it when the app first reads `wsgi.input`). A
//! uwsgi listener's connections are served here too, once `worker::uwsgi` has restated their
//! packet as the HTTP/1.0 request it stands for, and an `https` listener's once `worker::tls`
//! has made the handshake; an `http-to-https` listener's get `worker::redirect`'s answer.
//!
//! A stop never closes a keep-alive connection under a client that may be sending on it (the
//! race that makes gunicorn and HAProxy reset requests after a reload): each connection's next
//! response carries `Connection: close`, and only a connection still idle after
//! [`IDLE_DRAIN_GRACE`] is closed.
//!
//! A connection that takes longer than `header-timeout` to send its next request head (idle
//! keep-alive, or a slowloris), or whose socket accepts nothing of its response for that long,
//! is closed by a watchdog of its own: one timer per connection, looked at only when it fires,
//! and a note of when its last response was done, and of whether a write waits for the client
//! (and since when). (hyper's `header_read_timeout` does the first part with a timer made and
//! cancelled per request, 7% of a hello request's instructions.)
//!
//! Responses are written with backpressure: hyper takes the next body chunk only once the
//! last ones are on their way (its `pipeline_flush` would buffer a whole body in memory for a
//! client slower than the app), so a stream to a slow client holds its app thread back, a few
//! chunks ahead, as it would in any WSGI server; and a client that stops reading frees it at
//! the timeout. (A full socket is reported writable again once about a third of its send
//! buffer has drained, so a client that reads only a trickle counts as not reading.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::time::Instant;

use super::access::{AccessLog, Entry};
use super::redirect::Redirect;
use super::refuse::{self, Limits, Refusal};
use super::woken::WhenWoken;
use super::{Serves, Tracker};
use crate::scoreboard::{Lane, Ticket};
use crate::wsgi::environ::{ConnEnv, Peer};
use crate::wsgi::input::Lease;
use crate::wsgi::reply::{Reply, ResponseBody};
use crate::wsgi::{Called, Pool};

/// A listener as this worker accepts on it.
pub enum Acceptor {
    Tcp(TcpListener),
    /// With the socket path, reported as SERVER_NAME.
    Unix(UnixListener, String),
}

/// How long a draining worker keeps an idle keep-alive connection open for the client's next
/// request (answered, with `Connection: close`) before closing it.
pub const IDLE_DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The longest tick of the kernel's coarse clock (`HZ=100`).
const COARSE_TICK: Duration = Duration::from_millis(10);

/// The watchdog's deadline without a `header-timeout` (its branch is off then).
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The app a worker calls.
pub enum App {
    Wsgi(Arc<Pool>),
    Asgi(Arc<crate::asgi::Bridge>),
}

/// What every connection of the worker shares.
pub struct State {
    pub app: App,
    pub statics: super::static_files::StaticMap,
    pub yielder: super::yielding::Yielder,
    /// `header-timeout`.
    pub header_timeout: Option<Duration>,
    /// What a request head may hold before it is refused.
    pub limits: Limits,
    /// `limit-request-fields`: hyper refuses a head with more fields (431).
    pub max_fields: usize,
    /// This worker's place on the generation's scoreboard, where each request is counted.
    pub board: Lane,
    /// The access log, when `log-format` is set.
    pub access: Option<AccessLog>,
}

/// Accepts until `stop` turns true, then drops this worker's copy of the listener (the socket
/// itself stays open in the pool and in other workers).
pub async fn accept_loop(
    acceptor: Acceptor,
    serves: Serves,
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
                let serves = serves.clone();
                tokio::spawn(async move {
                    match io {
                        Stream::Tcp(s) => {
                            let _ = s.set_nodelay(true);
                            serve(s, peer, serves, state, stop).await
                        }
                        Stream::Unix(s) => serve(s, peer, serves, state, stop).await,
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

/// Serves an accepted connection in its listener's protocol.
async fn serve<S>(io: S, peer: Peer, serves: Serves, state: Arc<State>, stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match serves {
        Serves::Http => serve_connection(io, Arc::new(ConnEnv::new(peer)), state, stop).await,
        Serves::Uwsgi => super::uwsgi::serve(io, peer, state, stop).await,
        Serves::Https(tls) => super::tls::serve(io, tls, peer, state, stop).await,
        Serves::Redirect(redirect) => {
            let conn_env = Arc::new(ConnEnv::new(peer));
            serve_answering(io, conn_env, state, stop, Some(redirect)).await
        }
    }
}

/// Serves HTTP/1 on a connection whose environ keys are `conn_env`'s: a client's connection,
/// a TLS one (`worker::tls`), or a uwsgi one restated as HTTP (`worker::uwsgi`).
pub(super) async fn serve_connection<S>(
    io: S,
    conn_env: Arc<ConnEnv>,
    state: Arc<State>,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_answering(io, conn_env, state, stop, None).await
}

/// [`serve_connection`], every request answered with `redirect` if there is one.
async fn serve_answering<S>(
    io: S,
    conn_env: Arc<ConnEnv>,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    redirect: Option<Redirect>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let header_timeout = state.header_timeout;
    let max_fields = state.max_fields;
    let board = state.board;
    let service = {
        let activity = activity.clone();
        service_fn(move |req| handle(req, &conn_env, &state, activity.begin(), redirect))
    };
    let io = Noted {
        io: TokioIo::new(io),
        activity: activity.clone(),
        board,
    };
    // hyper's default writes a response's head and body chunks with one writev, without
    // copying the body: a 1 MiB response went from ~2.1k to ~2.6k req/s against a single
    // flat buffer (`writev(false)`, which `pipeline_flush` implies), which saves a tiny body
    // only ~500 instructions.
    let conn = http1::Builder::new()
        // The watchdog below does this, once per connection instead of once per request.
        .header_read_timeout(None)
        .max_headers(max_fields)
        // hyper's default `half_close(false)`: an end of input while a request is read or
        // answered ends its connection, so a client that gives up frees its connection and
        // its place in the queue for an app slot at once (nginx, proxying, aborts the same
        // way). The price: a client that only stops sending once its request is out
        // (`nc -N`) may be closed unanswered.
        .serve_connection(io, service);
    tokio::pin!(conn);
    // Looked at when it fires: most connections send their next request long before.
    let watchdog = tokio::time::sleep(header_timeout.unwrap_or(NEVER));
    tokio::pin!(watchdog);
    // A connection accepted as the stop came drains at once.
    let mut phase = if *stop.borrow_and_update() {
        Phase::Draining
    } else {
        Phase::Serving
    };
    let drain = tokio::time::sleep(IDLE_DRAIN_GRACE);
    tokio::pin!(drain);
    let result = loop {
        // Polled when it was woken, not on each of the connection's reads and writes.
        let aside = {
            let aside = std::pin::pin!(async {
                tokio::select! {
                    _ = stop.changed(), if phase == Phase::Serving => Aside::Stop,
                    _ = drain.as_mut(), if phase == Phase::Draining => Aside::DrainOver,
                    _ = watchdog.as_mut(), if header_timeout.is_some() => Aside::Watchdog,
                    else => std::future::pending().await,
                }
            });
            tokio::select! {
                biased;
                r = conn.as_mut() => break r,
                aside = WhenWoken::new(aside) => aside,
            }
        };
        match aside {
            Aside::Stop => {
                // The next response says `Connection: close`; a connection on which no request
                // comes within the grace is closed (a busy one after its response).
                phase = Phase::Draining;
                drain.as_mut().reset(Instant::now() + IDLE_DRAIN_GRACE);
            }
            Aside::DrainOver => {
                tracing::debug!("drain grace over: closing the connection once idle");
                conn.as_mut().graceful_shutdown();
                phase = Phase::Closing;
            }
            Aside::Watchdog => {
                let timeout = header_timeout.unwrap_or_default();
                match activity.stalled_for() {
                    Some((quiet, stall)) if quiet >= timeout => {
                        tracing::debug!(
                            seconds = timeout.as_secs(),
                            "{stall}: closing the connection"
                        );
                        return;
                    }
                    // At least a tick of the coarse clock ahead: sooner, it may not have moved.
                    Some((quiet, _)) => watchdog
                        .as_mut()
                        .reset(Instant::now() + (timeout - quiet).max(COARSE_TICK)),
                    // A request is being answered: look again a timeout from now.
                    None => watchdog.as_mut().reset(Instant::now() + timeout),
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What the connection's loop was woken for, besides hyper's connection.
enum Aside {
    /// The worker stops.
    Stop,
    /// The drain grace is over.
    DrainOver,
    /// The watchdog's timer fired.
    Watchdog,
}

/// How far a connection is through its worker's stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Answering with `Connection: close` until the drain grace is over.
    Draining,
    /// Told to close once idle.
    Closing,
}

/// Whether a connection is answering a request or waiting for its client to read, and since
/// when it has been quiet: what its watchdog needs, noted with a few stores per request.
struct Activity {
    /// Requests begun whose response hyper has not let go of yet.
    in_flight: AtomicU32,
    /// When a response was last let go of, or a write began to wait or went out after waiting
    /// ([`coarse_now`]).
    quiet_since: AtomicU64,
    /// The last write found the client's socket full, and none has gone out since.
    write_waits: AtomicBool,
}

/// Why a connection's watchdog may close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// It has no request to answer and no complete head of the next one.
    NoHead,
    /// Its client takes nothing of the response.
    NotReading,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stall::NoHead => "no request head within header-timeout",
            Stall::NotReading => "the client took nothing of its response within header-timeout",
        })
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicU32::new(0),
            quiet_since: AtomicU64::new(coarse_now()),
            write_waits: AtomicBool::new(false),
        }
    }

    /// A request head has arrived; the guard goes with its response.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            activity: self.clone(),
            ticket: None,
            access: None,
        }
    }

    /// Something happened: the quiet starts again.
    fn touch(&self) {
        self.quiet_since.store(coarse_now(), Ordering::Release);
    }

    /// A write went out (`true`) or found the socket full (`false`). The client's quiet
    /// starts at the first write that waits (the last that went out may be a keep-alive's
    /// idle time ago), and again when a write goes out after waiting. A write that goes out
    /// at once changes nothing the watchdog looks at: while a request is answered only a
    /// waiting write counts, and after it the quiet began when its response was let go of,
    /// microseconds before hyper flushed the last of it.
    fn wrote(&self, progressed: bool) {
        if progressed {
            if self.write_waits.load(Ordering::Acquire) {
                self.write_waits.store(false, Ordering::Release);
                self.touch();
            }
        } else if !self.write_waits.swap(true, Ordering::AcqRel) {
            self.touch();
        }
    }

    /// How long the connection has waited for a request head, or for its client to take a
    /// response, and which; `None` while it answers a request (the app may take its time).
    fn stalled_for(&self) -> Option<(Duration, Stall)> {
        let stall = if self.write_waits.load(Ordering::Acquire) {
            Stall::NotReading
        } else if self.in_flight.load(Ordering::Acquire) == 0 {
            Stall::NoHead
        } else {
            return None;
        };
        let since = self.quiet_since.load(Ordering::Acquire);
        Some((
            Duration::from_nanos(coarse_now().saturating_sub(since)),
            stall,
        ))
    }
}

/// The monotonic clock as of the kernel's last tick, in nanoseconds (`CLOCK_MONOTONIC_COARSE`:
/// read from the vDSO without reading the TSC, a few instructions where `Instant::now` takes
/// ~100). A tick ([`COARSE_TICK`] at most) is nothing against a timeout of seconds. Linux has
/// had the clock since 2.6.32; were it missing, `CLOCK_MONOTONIC` (the same clock, to the
/// nanosecond) is read instead.
fn coarse_now() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .map(|t| u64::try_from(Duration::from(t).as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// One request being answered, until hyper drops its response body (taken whole, or the
/// connection gone).
struct InFlight {
    activity: Arc<Activity>,
    /// The request on the scoreboard (counted there as it is dropped, with this).
    ticket: Option<Ticket>,
    /// Its access log line, written as it is dropped.
    access: Option<Box<Entry>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.touch();
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's socket, noting each write in its [`Activity`], and each that waits for
/// the client: hyper lets go of a body once it has taken the last chunk, which may still be on
/// its way to a slow reader.
struct Noted<S> {
    io: TokioIo<S>,
    activity: Arc<Activity>,
    board: Lane,
}

impl<S> Noted<S> {
    /// Notes a write that took bytes or waits for room, and passes its outcome on.
    fn note(&self, written: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.board.sent(n);
                self.activity.wrote(true)
            }
            Poll::Pending => self.activity.wrote(false),
            _ => {}
        }
        written
    }
}

impl<S: AsyncRead + Unpin> hyper::rt::Read for Noted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        crate::wsgi::gil::tick();
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> hyper::rt::Write for Noted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        crate::wsgi::gil::tick();
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        crate::wsgi::gil::tick();
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.note(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that carries its request's [`InFlight`], and the [`Lease`] on its request
/// body if the app was lent one: hyper drops it once the response is done, which takes the
/// body back from the app.
struct Answer {
    body: ResponseBody,
    _in_flight: InFlight,
    _lease: Option<Lease>,
    /// An ASGI request's: tells the app's `receive()` if the response is let go of before
    /// it is complete (the client went away).
    _watch: Option<crate::asgi::Watch>,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let (Some(entry), Poll::Ready(Some(Ok(frame)))) = (&mut this._in_flight.access, &frame) {
            entry.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Answers a request: at once when nothing needs to wait (a static file, an inline call
/// whose response head it makes), else with a future boxed for the wait. A future of its own
/// per request, moved into hyper and polled once, made a hello request ~740 instructions
/// dearer. The app is thus called as hyper hands over the request, before hyper reads on.
fn handle(
    req: Request<Incoming>,
    conn: &Arc<ConnEnv>,
    state: &Arc<State>,
    mut in_flight: InFlight,
    redirect: Option<Redirect>,
) -> Handled {
    state.yielder.before_request();
    // The one place every request (HTTP, HTTPS, uwsgi, WSGI or ASGI) begins; it is counted
    // as answered when hyper lets go of its response. Harakiri follows only the app's work
    // on it, from when the app is called (see `wsgi::Slot`, `asgi::Bridge::call`).
    in_flight.ticket = Some(state.board.begin());
    if let Some(log) = &state.access {
        in_flight.access = Some(log.begin(&req, conn));
    }
    if let Some(refusal) = refuse::check(req.method(), req.uri(), req.headers(), &state.limits) {
        return Handled::now(respond(refused(refusal, &req), in_flight));
    }
    if let Some(redirect) = redirect {
        return Handled::now(respond(redirect.reply(&req), in_flight));
    }
    if let Some(file) = state.statics.resolve(req.method(), req.uri().path()) {
        // No Python here, and file system calls that may block: no kept GIL across them.
        crate::wsgi::gil::release();
        let reply = super::static_files::serve(&file, req.method(), req.headers());
        return Handled::now(respond(reply, in_flight));
    }
    let python = match &state.app {
        App::Wsgi(pool) => pool,
        App::Asgi(bridge) => return call_asgi(req, conn, bridge, in_flight, state.board),
    };
    let slot = python.slot_now(req.body());
    let (parts, body) = req.into_parts();
    let Some(slot) = slot else {
        let (conn, python, board) = (conn.clone(), python.clone(), state.board);
        return Handled::Later(Box::pin(async move {
            let (reply, lease) = python.call(parts, conn, body, board).await;
            respond_lent(reply, in_flight, lease)
        }));
    };
    match python.call_now(parts, conn, slot, state.board) {
        Called::Answered(reply) => Handled::now(respond(reply, in_flight)),
        Called::Pending(answer) => Handled::Later(Box::pin(async move {
            respond(crate::wsgi::reply_from_thread(answer).await, in_flight)
        })),
    }
}

/// Answers a request through an ASGI app, on its loop. A WebSocket upgrade is refused at
/// once: zerg serves none yet.
fn call_asgi(
    req: Request<Incoming>,
    conn: &Arc<ConnEnv>,
    bridge: &Arc<crate::asgi::Bridge>,
    in_flight: InFlight,
    board: Lane,
) -> Handled {
    if let Some(refusal) = crate::asgi::refuse_websocket(req.headers()) {
        return Handled::now(respond(refusal, in_flight));
    }
    let (parts, body) = req.into_parts();
    let (conn, bridge) = (conn.clone(), bridge.clone());
    Handled::Later(Box::pin(async move {
        let (reply, lease, watch) = bridge.call(parts, conn, body, board).await;
        let mut response = respond_lent(reply, in_flight, lease);
        response.body_mut()._watch = watch;
        response
    }))
}

/// The answer to a request refused before the app saw it; the connection closes after it, as
/// the client may not frame its next request the way zerg would.
fn refused(refusal: Refusal, req: &Request<Incoming>) -> Reply {
    tracing::debug!(
        method = %req.method(),
        status = refusal.status().as_u16(),
        "request refused: {}",
        refusal.reason()
    );
    let mut reply = Reply::refusal(refusal.status());
    if refusal == Refusal::Connect {
        reply.headers.push((
            http::header::ALLOW,
            http::HeaderValue::from_static(refuse::ALLOWED),
        ));
    }
    reply
}

/// A response, made already or on its way.
// The large variant is the common one (a hello answered at once): boxing it would cost an
// allocation per request to shrink a future that lives for one poll.
#[allow(clippy::large_enum_variant)]
enum Handled {
    /// Made: the first poll takes it.
    Now(std::future::Ready<Result<Response<Answer>, Infallible>>),
    /// Waiting for a request body, an app slot or a thread's reply.
    Later(Pin<Box<dyn Future<Output = Response<Answer>> + Send>>),
}

impl Handled {
    fn now(response: Response<Answer>) -> Handled {
        Handled::Now(std::future::ready(Ok(response)))
    }
}

impl Future for Handled {
    type Output = Result<Response<Answer>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Handled::Now(response) => Pin::new(response).poll(cx),
            Handled::Later(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

/// The response for `reply`, carrying its request's [`InFlight`].
fn respond(reply: Reply, in_flight: InFlight) -> Response<Answer> {
    respond_lent(reply, in_flight, None)
}

/// The response for `reply` to a request whose body was lent to the app: 400 instead if the
/// client framed that body wrongly, whatever the app made of it (its read raised).
fn respond_lent(reply: Reply, mut in_flight: InFlight, lease: Option<Lease>) -> Response<Answer> {
    let reply = match &lease {
        Some(lease) if lease.malformed() => Reply::refusal(http::StatusCode::BAD_REQUEST),
        _ => reply,
    };
    if let Some(ticket) = &mut in_flight.ticket {
        ticket.status = reply.status.as_u16();
    }
    if let Some(entry) = &mut in_flight.access {
        entry.status = reply.status.as_u16();
    }
    finish(reply).map(|body| Answer {
        body,
        _in_flight: in_flight,
        _lease: lease,
        _watch: None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `act` notes a change of its quiet (its mark, zeroed first, moves).
    fn touches(activity: &Activity, act: impl FnOnce()) -> bool {
        activity.quiet_since.store(0, Ordering::Release);
        act();
        activity.quiet_since.load(Ordering::Acquire) != 0
    }

    #[test]
    fn the_quiet_starts_when_a_response_is_let_go_of_or_a_write_waits() {
        let activity = Arc::new(Activity::new());
        assert!(matches!(activity.stalled_for(), Some((_, Stall::NoHead))));
        let in_flight = activity.begin();
        assert_eq!(
            activity.stalled_for(),
            None,
            "answering: the app may take its time"
        );
        assert!(
            !touches(&activity, || activity.wrote(true)),
            "a write that went out at once"
        );
        assert!(
            touches(&activity, || activity.wrote(false)),
            "the first write that waits"
        );
        assert!(matches!(
            activity.stalled_for(),
            Some((_, Stall::NotReading))
        ));
        assert!(
            !touches(&activity, || activity.wrote(false)),
            "still waiting: since the first"
        );
        assert!(
            touches(&activity, || activity.wrote(true)),
            "out after waiting"
        );
        assert_eq!(activity.stalled_for(), None);
        assert!(
            touches(&activity, || drop(in_flight)),
            "the response let go of"
        );
        assert!(matches!(activity.stalled_for(), Some((_, Stall::NoHead))));
        assert!(
            !touches(&activity, || activity.wrote(true)),
            "its last bytes flushed"
        );
    }

    #[test]
    fn a_quiet_is_measured_from_its_mark() {
        let activity = Activity::new();
        // An hour back, or to the clock's start on a machine up for less.
        let back = coarse_now().min(3_600 * 1_000_000_000);
        activity
            .quiet_since
            .store(coarse_now() - back, Ordering::Release);
        let (quiet, _) = activity.stalled_for().expect("idle");
        let back = Duration::from_nanos(back);
        assert!(quiet >= back, "{quiet:?}");
        assert!(quiet < back + Duration::from_secs(1), "{quiet:?}");
    }
}
