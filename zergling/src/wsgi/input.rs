//! `wsgi.input`: the request body, streamed (PEP 3333), never buffered whole.
//!
//! The body stays untouched in hyper until the app first reads, so `Expect: 100-continue` is
//! answered only when the app wants the body. Then a task on the worker's runtime pumps chunks
//! through a channel of depth [`DEPTH`]: memory per upload is a few chunks, whatever its size.
//! The Python thread waits for chunks with the GIL released.
//!
//! The body is only lent to the app: the connection takes it back (a [`Lease`]) once the
//! response is done, whatever the app still holds. An app that answered without reading its
//! body (a 4xx, an early redirect) may keep `wsgi.input` alive in a traceback or a cycle until
//! the collector runs, and hyper cannot read the connection's next request while the unread
//! body is held: the connection would wedge with the client's next request unanswered. Taken
//! back, an unread body is read and thrown away, up to [`DISCARD_MAX`] bytes within
//! [`DISCARD_WAIT`] (a client sends the body it announced right behind its head), so that the
//! connection serves on; past either, it closes (hyper's own answer to a body let go of
//! unread: read what has arrived, else close once the response is out).
//!
//! A body the client framed wrongly (a bad chunk size line, a missing CRLF, a trailer with a
//! field that may not be one) is the client's fault: `read()` raises [`BadRequestBody`], the
//! log says so without blaming the app, and the client gets 400 whatever the app answered.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::worker::refuse::forbidden_trailer;

pyo3::create_exception!(
    zerg,
    BadRequestBody,
    PyOSError,
    "The client sent a request body that is not framed as HTTP/1.1 says (the client's fault)."
);

/// The most of an unread body thrown away to keep its connection open.
const DISCARD_MAX: usize = 1 << 20;

/// How long an unread body is waited for to be thrown away.
const DISCARD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Chunks buffered between the socket and the app.
const DEPTH: usize = 2;

/// Where the next body bytes come from.
pub enum Source {
    /// Lent by the connection and not read yet (or taken back).
    Lent(Arc<LentBody>),
    /// A pump task is feeding chunks.
    Streaming(mpsc::Receiver<io::Result<Bytes>>, Arc<LentBody>),
    /// Read whole before the call (see [`prefetch`]), as the chunks it came in.
    Buffered(VecDeque<Bytes>),
    /// End of body.
    Done,
}

/// A request body the app may read until its connection takes it back.
pub struct LentBody {
    held: Mutex<Held>,
    /// The client framed the body wrongly: the request is answered 400.
    malformed: AtomicBool,
    /// The pump read the body to its end: a channel that closes after this is an end of
    /// body, before it an aborted request (the connection died, or the body was taken back).
    ended: AtomicBool,
    /// The client waits for `100 Continue` before it sends the body.
    expects_continue: bool,
}

/// Where a lent body is.
enum Held {
    /// Still hyper's, unread.
    Unread { body: Incoming, runtime: Handle },
    /// Read by a pump task, which holds it.
    Pumping(AbortHandle),
    /// Taken back: the request is over.
    Over,
}

impl LentBody {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts reading the body, on the connection's runtime, into a channel of depth
    /// [`DEPTH`] (chunks coalesced up to [`COALESCE`] bytes): what `wsgi.input` and an ASGI
    /// app's `receive()` read. `None` if it was started already, or taken back.
    pub fn pump(self: &Arc<Self>) -> Option<mpsc::Receiver<io::Result<Bytes>>> {
        let mut held = self.held();
        let Held::Unread { body, runtime } = std::mem::replace(&mut *held, Held::Over) else {
            return None;
        };
        let (tx, rx) = mpsc::channel(DEPTH);
        *held = Held::Pumping(runtime.spawn(pump(body, tx, self.clone())).abort_handle());
        Some(rx)
    }

    /// Whether the pump read the body to its end (see [`LentBody::pump`]).
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// The error a read gets when the body stops short of its end.
    pub fn cut_short() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the request is over before the end of its body (the client went away, or the \
             response was done)",
        )
    }
}

/// The connection's claim on a body it lent: dropped once the response is done, it takes the
/// body back from the app (see the module doc).
pub struct Lease(Arc<LentBody>);

impl Lease {
    /// Whether the client framed the body wrongly (known once the app has read that far).
    pub fn malformed(&self) -> bool {
        self.0.malformed.load(Ordering::Acquire)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match std::mem::replace(&mut *self.0.held(), Held::Over) {
            // A client that waits for 100 Continue sends no body now that the response is
            // out: hyper closes the connection rather than read the next request as one.
            Held::Unread { body, .. } if self.0.expects_continue => drop(body),
            Held::Unread { body, runtime } => drop(runtime.spawn(discard(body))),
            // A body read in part: the pump lets go of it.
            Held::Pumping(pump) => pump.abort(),
            Held::Over => {}
        }
    }
}

/// Reads an unread body to its end and throws it away, unless it is bigger than
/// [`DISCARD_MAX`] or takes longer than [`DISCARD_WAIT`]: then it is let go of, and hyper
/// closes the connection.
async fn discard(mut body: Incoming) {
    let mut left = DISCARD_MAX;
    let _ = tokio::time::timeout(DISCARD_WAIT, async {
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else {
                continue;
            };
            left = left.saturating_sub(data.len());
            if left == 0 {
                return;
            }
        }
    })
    .await;
}

/// A request body as an app call gets it.
pub enum Prefetched {
    /// Complete already: nothing to wait for, so the call may run on the event loop.
    Whole(Source),
    /// To be streamed from the socket as the app reads, until the lease is dropped.
    Later(Source, Lease),
}

/// Reads the body now if it is empty or announced by Content-Length as at most `max` bytes,
/// unless the client waits for `100 Continue` (which only a read from the app may send).
pub async fn prefetch(parts: &Parts, mut body: Incoming, max: u64) -> hyper::Result<Prefetched> {
    if body.is_end_stream() {
        return Ok(Prefetched::Whole(Source::Done));
    }
    let small = body.size_hint().exact().is_some_and(|n| n <= max);
    let expects_continue = parts.headers.contains_key(http::header::EXPECT);
    if !small || expects_continue {
        let lent = Arc::new(LentBody {
            held: Mutex::new(Held::Unread {
                body,
                runtime: Handle::current(),
            }),
            malformed: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            expects_continue,
        });
        return Ok(Prefetched::Later(Source::Lent(lent.clone()), Lease(lent)));
    }
    // Kept as received: `read()` copies the chunks straight into its bytes object.
    let mut chunks = VecDeque::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if !data.is_empty() {
                chunks.push_back(data);
            }
        }
    }
    Ok(Prefetched::Whole(Source::Buffered(chunks)))
}

impl Source {
    /// Waits for the next chunk (call with the GIL released). `None` at end of body.
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            match std::mem::replace(self, Source::Done) {
                Source::Done => return Ok(None),
                Source::Buffered(mut chunks) => {
                    let next = chunks.pop_front();
                    if next.is_some() {
                        *self = Source::Buffered(chunks);
                    }
                    return Ok(next);
                }
                Source::Lent(lent) => match lent.pump() {
                    Some(rx) => *self = Source::Streaming(rx, lent),
                    // Taken back before it was read.
                    None => return Err(LentBody::cut_short()),
                },
                Source::Streaming(mut rx, lent) => match rx.blocking_recv() {
                    Some(Ok(chunk)) => {
                        *self = Source::Streaming(rx, lent);
                        if !chunk.is_empty() {
                            return Ok(Some(chunk));
                        }
                    }
                    Some(Err(e)) => return Err(e),
                    None if lent.ended() => return Ok(None),
                    None => return Err(LentBody::cut_short()),
                },
            }
        }
    }
}

/// Chunks handed to the app are coalesced up to this size from what the socket already has:
/// each chunk costs a wake-up of the Python thread, and hyper yields a few KiB at a time.
const COALESCE: usize = 64 * 1024;

async fn pump(mut body: Incoming, tx: mpsc::Sender<io::Result<Bytes>>, lent: Arc<LentBody>) {
    loop {
        let chunk = std::future::poll_fn(|cx| poll_coalesced(Pin::new(&mut body), cx)).await;
        let Some(chunk) = chunk else {
            lent.ended.store(true, Ordering::Release);
            return;
        };
        let failed = chunk.is_err();
        if chunk
            .as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::InvalidData)
        {
            lent.malformed.store(true, Ordering::Release);
        }
        if tx.send(chunk).await.is_err() || failed {
            return;
        }
    }
}

/// The next chunk: waits for one data frame, then takes the frames that are ready at once, up
/// to [`COALESCE`] bytes. `None` at the end of the body.
fn poll_coalesced(
    mut body: Pin<&mut Incoming>,
    cx: &mut Context<'_>,
) -> Poll<Option<io::Result<Bytes>>> {
    let mut out: Option<BytesMut> = None;
    loop {
        let have = out.as_ref().map_or(0, BytesMut::len);
        if have >= COALESCE {
            return Poll::Ready(out.map(|b| Ok(b.freeze())));
        }
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let data = match frame.into_data() {
                    Ok(data) => data,
                    // Never put in the environ; refused if they may not be trailers.
                    Err(frame) => match frame.trailers_ref().and_then(forbidden_trailer) {
                        Some(name) => {
                            let e = format!("{name} may not be sent in a trailer");
                            return Poll::Ready(Some(Err(malformed(e))));
                        }
                        None => continue,
                    },
                };
                match &mut out {
                    None if data.len() >= COALESCE => return Poll::Ready(Some(Ok(data))),
                    None => out = Some(BytesMut::from(&data[..])),
                    Some(buf) => buf.extend_from_slice(&data),
                }
            }
            Poll::Ready(Some(Err(e))) if framing_error(&e) => {
                let why = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
                return Poll::Ready(Some(Err(malformed(why))));
            }
            Poll::Ready(Some(Err(e))) => {
                let err = io::Error::other(format!("reading the request body: {e}"));
                return Poll::Ready(Some(Err(err)));
            }
            Poll::Ready(None) => return Poll::Ready(out.map(|b| Ok(b.freeze()))),
            Poll::Pending if have > 0 => return Poll::Ready(out.map(|b| Ok(b.freeze()))),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// A body the client framed wrongly, as the pump reports it.
fn malformed(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the client sent a malformed request body: {what}"),
    )
}

/// Whether hyper failed to read a body because of how the client framed it (its decoder's
/// errors are `InvalidInput` or `InvalidData`), not because the client went away.
fn framing_error(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData
            )
        })
}

struct State {
    source: Source,
    buf: BytesMut,
}

/// The `wsgi.input` object.
#[pyclass(module = "zerg")]
pub struct Input {
    /// `None`: the body is empty. Such an input has no state at all, so one object serves
    /// every bodiless request of a worker, on any thread.
    state: Option<Mutex<State>>,
}

impl Input {
    pub fn new(source: Source) -> Input {
        Input {
            state: Some(Mutex::new(State {
                source,
                buf: BytesMut::new(),
            })),
        }
    }

    /// The input of requests without a body.
    pub fn empty() -> Input {
        Input { state: None }
    }

    /// The reading state; `None` for an empty body.
    fn lock(&self) -> PyResult<Option<MutexGuard<'_, State>>> {
        let Some(state) = &self.state else {
            return Ok(None);
        };
        state
            .try_lock()
            .map(Some)
            .map_err(|_| PyRuntimeError::new_err("wsgi.input is being read by another thread"))
    }
}

impl State {
    /// Appends the next chunk to the buffer; false at end of body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        let source = &mut self.source;
        match py.detach(|| source.next_chunk()) {
            Ok(Some(chunk)) => {
                if self.buf.is_empty() {
                    // Takes the chunk's buffer when it is the only owner, instead of a copy.
                    self.buf = BytesMut::from(chunk);
                } else {
                    self.buf.extend_from_slice(&chunk);
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Err(BadRequestBody::new_err(e.to_string()))
            }
            Err(e) => Err(PyOSError::new_err(e.to_string())),
        }
    }

    /// `read(n)` of a body read before the call, with nothing buffered here yet: the bytes
    /// object is filled straight from the body's chunks (one copy, not two). `None` otherwise.
    fn read_prefetched<'py>(
        &mut self,
        py: Python<'py>,
        n: Option<usize>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let Source::Buffered(chunks) = &mut self.source else {
            return Ok(None);
        };
        if !self.buf.is_empty() {
            return Ok(None);
        }
        let total: usize = chunks.iter().map(Bytes::len).sum();
        let want = n.map_or(total, |n| n.min(total));
        let out = PyBytes::new_with(py, want, |dst| {
            let mut filled = 0;
            while let Some(front) = chunks.front_mut().filter(|_| filled < want) {
                let k = front.len().min(want - filled);
                dst[filled..filled + k].copy_from_slice(&front[..k]);
                front.advance(k);
                if front.is_empty() {
                    chunks.pop_front();
                }
                filled += k;
            }
            Ok(())
        })?;
        Ok(Some(out))
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(self.buf.len());
        let out = PyBytes::new(py, &self.buf[..n]);
        let _ = self.buf.split_to(n);
        out
    }

    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + i + 1;
                return Ok(self.take(py, limit.map_or(end, |l| l.min(end))));
            }
            if limit.is_some_and(|l| self.buf.len() >= l) {
                return Ok(self.take(py, limit.unwrap_or(0)));
            }
            searched = self.buf.len();
            if !self.fill(py)? {
                let all = self.buf.len();
                return Ok(self.take(py, all));
            }
        }
    }
}

/// Python passes -1 or None for "no limit".
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let Some(mut st) = self.lock()? else {
            return Ok(PyBytes::new(py, b""));
        };
        if let Some(read) = st.read_prefetched(py, limit(size))? {
            return Ok(read);
        }
        match limit(size) {
            None => {
                while st.fill(py)? {}
                let all = st.buf.len();
                Ok(st.take(py, all))
            }
            Some(n) => {
                while st.buf.len() < n && st.fill(py)? {}
                Ok(st.take(py, n))
            }
        }
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        match self.lock()? {
            Some(mut st) => st.readline(py, limit(size)),
            None => Ok(PyBytes::new(py, b"")),
        }
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let mut lines = Vec::new();
        let Some(mut st) = self.lock()? else {
            return Ok(lines);
        };
        let hint = limit(hint).filter(|&h| h > 0);
        let mut total = 0;
        loop {
            let line = st.readline(py, None)?;
            let len = line.as_bytes().len();
            if len == 0 {
                break;
            }
            total += len;
            lines.push(line);
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let Some(mut st) = self.lock()? else {
            return Ok(None);
        };
        let line = st.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
