//! One HTTP request as an ASGI app sees it: its `receive()` and `send()` callables, and what
//! they share with the connection's task on hyper's thread (asgiref's "HTTP & WebSocket"
//! spec, version 2.4).
//!
//! A [`Cycle`] is made by the connection's task and handed to the loop ([`Call`]); the loop
//! side (the app's calls, always on the loop's thread with the GIL) keeps its state in
//! [`Side`], behind a mutex that only the loop thread takes in practice. The connection's side
//! only sets flags and wakes the loop: it never needs the GIL.
//!
//! - `receive()` gives the request body as `http.request` messages: a body read before the
//!   call (small, announced) in one message; a bigger one streamed from the socket as the app
//!   asks, chunk by chunk (each ends `more_body` when the next is seen to be the end), with
//!   backpressure (the pump reads a few chunks ahead). Then, once the body is all given, it
//!   waits until the response is complete or the client goes away, and gives
//!   `http.disconnect`, as uvicorn does.
//! - `send()` takes `http.response.start` (kept, not sent: the first body decides between a
//!   whole body with its length and a stream) and `http.response.body`. A body without
//!   `more_body` is the whole response; with it, a stream goes out chunk by chunk through a
//!   bounded channel, and a `send()` that finds it full waits until the client took some.
//!   Once the client is gone, `send()` raises [`ClientDisconnected`] (an `OSError`, as spec
//!   2.4 says).
//! - The connection's task holds a [`Watch`] until hyper lets go of the response: dropped
//!   before the response is complete (the client went away, or the worker gave up on it at
//!   `worker-reload-mercy`), it wakes the app's waiting `receive()` with `http.disconnect`.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, HeaderValue, StatusCode};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::sync::oneshot;

use super::awaitable::Ready;
use super::inbox::Event;
use super::Shared;
use crate::python::describe;
use crate::scoreboard::Claim;
use crate::wsgi::environ::ConnEnv;
use crate::wsgi::input::LentBody;
use crate::wsgi::reply::{Chunks, Reply, ResponseBody, STREAM_DEPTH};

pyo3::create_exception!(
    zerg,
    ClientDisconnected,
    PyOSError,
    "The client went away before the response was complete (ASGI spec 2.4: send() raises an \
     OSError)."
);

/// A new request for the loop: what the scope is made of, and its cycle.
pub struct Call {
    pub parts: Parts,
    pub conn: Arc<ConnEnv>,
    pub cycle: Arc<Cycle>,
}

/// What the request's two sides share.
pub struct Cycle {
    shared: Arc<Shared>,
    /// The client went away (or the worker let go of the connection) before the response was
    /// complete.
    gone: AtomicBool,
    /// The response is complete (or was given up): its connection may go.
    done: AtomicBool,
    /// A wake-up of this cycle is queued for the loop.
    queued: AtomicBool,
    /// The app's task has ended (counted once in `Shared`).
    ended: AtomicBool,
    side: Mutex<Side>,
}

/// The request body as the loop side holds it.
pub enum RequestBody {
    /// None at all.
    Empty,
    /// Read before the call, in the chunks it came in.
    Whole(VecDeque<Bytes>),
    /// Lent by the connection, not read yet (see `wsgi::input`).
    Lent(Arc<LentBody>),
    /// Being read: chunks from the pump, and the one taken to see whether it was the last.
    Streaming {
        rx: mpsc::Receiver<io::Result<Bytes>>,
        next: Option<io::Result<Bytes>>,
        lent: Arc<LentBody>,
    },
    /// All given to the app.
    Given,
}

/// The loop side of a request.
struct Side {
    body: RequestBody,
    /// `receive()` calls waiting, as asyncio futures.
    receivers: Vec<Py<PyAny>>,
    response: Progress,
    /// Where the response's head (and whole body, if it has one) goes: the connection's task.
    reply: Option<oneshot::Sender<Reply>>,
    head_request: bool,
    /// The request on the scoreboard for harakiri, until the app's coroutine ends.
    running: Option<Claim>,
}

/// How far the response is.
enum Progress {
    /// Nothing sent yet.
    Waiting,
    /// `http.response.start` came; the head goes out with the first body.
    Started(Head),
    /// The head went out with a streamed body.
    Streaming(Stream),
    /// Complete, or given up.
    Over,
}

/// The response head as `http.response.start` gave it, checked.
struct Head {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The app's Content-Length, kept apart (as the WSGI side does): a whole body is sent
    /// with its own length, a stream is framed by this one.
    content_length: Option<u64>,
}

struct Stream {
    tx: mpsc::Sender<io::Result<Bytes>>,
    /// What the app's Content-Length still allows.
    owed: Option<u64>,
    /// A chunk waiting for room in the channel, and the `send()` that waits with it.
    blocked: Option<Blocked>,
}

type Reserve = Pin<
    Box<
        dyn Future<Output = Result<OwnedPermit<io::Result<Bytes>>, mpsc::error::SendError<()>>>
            + std::marker::Send,
    >,
>;

struct Blocked {
    reserve: Reserve,
    chunk: Bytes,
    last: bool,
    future: Py<PyAny>,
}

impl Cycle {
    pub fn new(
        shared: Arc<Shared>,
        body: RequestBody,
        head_request: bool,
        running: Claim,
    ) -> (Arc<Cycle>, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        shared.task_begins();
        let cycle = Arc::new(Cycle {
            shared,
            gone: AtomicBool::new(false),
            done: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            side: Mutex::new(Side {
                body,
                receivers: Vec::new(),
                response: Progress::Waiting,
                reply: Some(tx),
                head_request,
                running: Some(running),
            }),
        });
        (cycle, rx)
    }

    fn side(&self) -> MutexGuard<'_, Side> {
        self.side.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn waker(self: &Arc<Self>) -> Waker {
        Waker::from(self.clone())
    }

    /// The client is gone: say so to whatever of the app waits.
    fn client_gone(self: &Arc<Self>) {
        if !self.done.load(Ordering::Acquire) && !self.gone.swap(true, Ordering::AcqRel) {
            self.wake_by_ref();
        }
    }

    /// On the loop, for a queued wake-up: resolves what can go on.
    pub fn on_wake(self: &Arc<Self>, py: Python<'_>) {
        self.queued.store(false, Ordering::Release);
        let mut side = self.side();
        if let Err(err) = side.serve_receivers(py, self) {
            tracing::error!("cannot resolve receive(): {}", describe(py, &err));
        }
        if let Err(err) = side.unblock(py, self) {
            tracing::error!("cannot resolve send(): {}", describe(py, &err));
        }
    }

    /// `receive()`.
    fn receive<'py>(self: &Arc<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut side = self.side();
        if side.receivers.is_empty() {
            if let Some(message) = side.message(py, self)? {
                return Ready::with(py, message);
            }
        }
        let future = self.shared.create_future(py)?;
        side.receivers.push(future.clone().unbind());
        Ok(future)
    }

    /// `send(message)`.
    fn send<'py>(
        self: &Arc<Self>,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let message = message
            .cast::<PyDict>()
            .map_err(|_| PyTypeError::new_err("send() takes a dict, the ASGI message"))?;
        let kind = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("the message has no \"type\""))?;
        let kind = kind.cast::<PyString>()?.to_str()?;
        if self.gone.load(Ordering::Acquire) {
            // Spec 2.4: a send on a closed connection raises an OSError.
            return Err(ClientDisconnected::new_err("the client went away"));
        }
        let mut side = self.side();
        match kind {
            "http.response.start" => {
                if !matches!(side.response, Progress::Waiting) {
                    return Err(self.out_of_turn(kind));
                }
                side.response = Progress::Started(parse_head(py, message)?);
                Ok(self.shared.done(py))
            }
            "http.response.body" => {
                let body = message
                    .get_item(intern!(py, "body"))?
                    .map(|b| body_of(&b))
                    .transpose()?
                    .unwrap_or_default();
                let more = match message.get_item(intern!(py, "more_body"))? {
                    Some(more) => more.is_truthy()?,
                    None => false,
                };
                side.body_chunk(py, self, body, !more)
            }
            // Trailers are not offered (no `http.response.trailers` extension in the scope).
            _ => Err(PyValueError::new_err(format!(
                "unknown ASGI message type {kind:?} for an HTTP connection"
            ))),
        }
    }

    fn out_of_turn(&self, kind: &str) -> PyErr {
        if self.gone.load(Ordering::Acquire) {
            return ClientDisconnected::new_err("the client went away");
        }
        PyRuntimeError::new_err(format!("{kind} out of turn: the response is past it"))
    }

    /// The app could not be called: 500.
    pub fn fail(self: &Arc<Self>, py: Python<'_>) {
        let mut side = self.side();
        side.give_up(py, self);
        side.running = None;
        drop(side);
        self.task_ended();
    }

    fn task_ended(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            self.shared.task_ended();
        }
    }

    /// The app's coroutine raised `err`.
    pub fn raised(self: &Arc<Self>, py: Python<'_>, err: &PyErr, request: &Request) {
        let gone = self.gone.load(Ordering::Acquire);
        if gone && err.is_instance_of::<PyOSError>(py) {
            tracing::info!(
                worker = self.shared.worker_id,
                method = %request.method,
                path = request.uri.path(),
                "the client went away before the end of its response"
            );
        } else {
            tracing::error!(
                worker = self.shared.worker_id,
                method = %request.method,
                path = request.uri.path(),
                "app raised: {}",
                describe(py, err)
            );
        }
        let mut side = self.side();
        side.give_up(py, self);
        side.running = None;
        drop(side);
        self.task_ended();
    }

    /// The app's coroutine returned.
    pub fn returned(self: &Arc<Self>, py: Python<'_>, request: &Request) {
        let mut side = self.side();
        side.returned(py, self, request);
        side.running = None;
        drop(side);
        self.task_ended();
    }
}

impl Side {
    fn returned(&mut self, py: Python<'_>, cycle: &Arc<Cycle>, request: &Request) {
        let what = match self.response {
            Progress::Over => return,
            Progress::Waiting => "without sending a response",
            Progress::Started(_) => "without sending the response body",
            Progress::Streaming(_) if cycle.gone.load(Ordering::Acquire) => {
                self.give_up(py, cycle);
                return;
            }
            Progress::Streaming(_) => "before the end of its streamed body",
        };
        tracing::error!(
            worker = cycle.shared.worker_id,
            method = %request.method,
            path = request.uri.path(),
            "the ASGI app returned {what}"
        );
        self.give_up(py, cycle);
    }
}

impl Wake for Cycle {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.shared.push_soon(Event::Wake(self.clone()));
        }
    }
}

impl Side {
    /// The next message for `receive()`, if one is ready.
    fn message<'py>(
        &mut self,
        py: Python<'py>,
        cycle: &Arc<Cycle>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if cycle.gone.load(Ordering::Acquire) || cycle.done.load(Ordering::Acquire) {
            return disconnect(py).map(Some);
        }
        let (data, last) = match &mut self.body {
            RequestBody::Empty => (PyBytes::new(py, b""), true),
            RequestBody::Whole(chunks) => {
                // Copied once, from the chunks as they came, into the bytes the app gets.
                let total = chunks.iter().map(Bytes::len).sum();
                let data = PyBytes::new_with(py, total, |dst| {
                    let mut at = 0;
                    for chunk in chunks.drain(..) {
                        dst[at..at + chunk.len()].copy_from_slice(&chunk);
                        at += chunk.len();
                    }
                    Ok(())
                })?;
                (data, true)
            }
            RequestBody::Lent(lent) => match lent.pump() {
                Some(rx) => {
                    let lent = lent.clone();
                    self.body = RequestBody::Streaming {
                        rx,
                        next: None,
                        lent,
                    };
                    return self.message(py, cycle);
                }
                // Taken back: the response is over.
                None => return disconnect(py).map(Some),
            },
            RequestBody::Streaming { rx, next, lent } => {
                let waker = cycle.waker();
                let mut cx = Context::from_waker(&waker);
                let first = match next.take() {
                    Some(chunk) => Some(chunk),
                    None => match rx.poll_recv(&mut cx) {
                        Poll::Pending => return Ok(None),
                        Poll::Ready(chunk) => chunk,
                    },
                };
                match first {
                    None if lent.ended() => (PyBytes::new(py, b""), true),
                    // Cut short (the client went away): never a shorter whole body.
                    None => {
                        self.body = RequestBody::Given;
                        return disconnect(py).map(Some);
                    }
                    Some(Err(e)) => {
                        // A malformed body is answered 400 by the connection (its lease
                        // says so); for the app, the request is over.
                        tracing::info!(worker = cycle.shared.worker_id, "{e}");
                        self.body = RequestBody::Given;
                        return disconnect(py).map(Some);
                    }
                    Some(Ok(data)) => {
                        let last = match rx.poll_recv(&mut cx) {
                            Poll::Ready(None) if lent.ended() => true,
                            Poll::Ready(None) => {
                                *next = Some(Err(LentBody::cut_short()));
                                false
                            }
                            Poll::Ready(Some(after)) => {
                                *next = Some(after);
                                false
                            }
                            Poll::Pending => false,
                        };
                        (PyBytes::new(py, &data), last)
                    }
                }
            }
            RequestBody::Given => return Ok(None),
        };
        if last {
            self.body = RequestBody::Given;
        }
        let message = PyDict::new(py);
        message.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
        message.set_item(intern!(py, "body"), data)?;
        message.set_item(intern!(py, "more_body"), !last)?;
        Ok(Some(message.into_any()))
    }

    /// Resolves the waiting `receive()` calls that can be: each with its own message, in
    /// order; a cancelled one is dropped (its message was never taken).
    fn serve_receivers(&mut self, py: Python<'_>, cycle: &Arc<Cycle>) -> PyResult<()> {
        while let Some(first) = self.receivers.first() {
            let future = first.bind(py);
            if future.call_method0(intern!(py, "done"))?.is_truthy()? {
                self.receivers.remove(0);
                continue;
            }
            let Some(message) = self.message(py, cycle)? else {
                return Ok(());
            };
            let future = self.receivers.remove(0);
            future.call_method1(py, intern!(py, "set_result"), (message,))?;
        }
        Ok(())
    }

    /// A body chunk from the app (`last`: without `more_body`).
    fn body_chunk<'py>(
        &mut self,
        py: Python<'py>,
        cycle: &Arc<Cycle>,
        chunk: Bytes,
        last: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        match std::mem::replace(&mut self.response, Progress::Over) {
            Progress::Started(head) if last => {
                let reply = head.full_reply(chunk, self.head_request);
                self.deliver(py, cycle, reply);
                self.complete(py, cycle)?;
                Ok(cycle.shared.done(py))
            }
            Progress::Started(head) => {
                let (tx, rx) = mpsc::channel(STREAM_DEPTH);
                let owed = head.content_length;
                let body = ResponseBody::Stream(Chunks::bounded(rx, owed));
                self.deliver(py, cycle, head.into_reply(body));
                self.response = Progress::Streaming(Stream {
                    tx,
                    owed,
                    blocked: None,
                });
                self.stream_chunk(py, cycle, chunk, last)
            }
            Progress::Streaming(stream) => {
                if stream.blocked.is_some() {
                    self.response = Progress::Streaming(stream);
                    return Err(PyRuntimeError::new_err(
                        "send() called before the previous send() was done",
                    ));
                }
                self.response = Progress::Streaming(stream);
                self.stream_chunk(py, cycle, chunk, last)
            }
            other => {
                self.response = other;
                Err(cycle.out_of_turn("http.response.body"))
            }
        }
    }

    /// Puts a chunk in the stream: done at once when the channel has room, else the
    /// returned future waits for it.
    fn stream_chunk<'py>(
        &mut self,
        py: Python<'py>,
        cycle: &Arc<Cycle>,
        mut chunk: Bytes,
        last: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let Progress::Streaming(stream) = &mut self.response else {
            return Err(cycle.out_of_turn("http.response.body"));
        };
        if let Some(owed) = &mut stream.owed {
            if chunk.len() as u64 > *owed {
                tracing::warn!(
                    "the app's streamed body goes past its Content-Length; the rest is not sent"
                );
                chunk.truncate(*owed as usize);
            }
            *owed -= chunk.len() as u64;
        }
        if chunk.is_empty() {
            if last {
                self.complete(py, cycle)?;
            }
            return Ok(cycle.shared.done(py));
        }
        match stream.tx.clone().try_reserve_owned() {
            Ok(room) => {
                cycle.shared.deliver_chunk(py, room, Ok(chunk));
                if last {
                    self.complete(py, cycle)?;
                }
                Ok(cycle.shared.done(py))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                cycle.client_gone();
                self.response = Progress::Over;
                Err(ClientDisconnected::new_err("the client went away"))
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                let future = cycle.shared.create_future(py)?;
                stream.blocked = Some(Blocked {
                    reserve: Box::pin(stream.tx.clone().reserve_owned()),
                    chunk,
                    last,
                    future: future.clone().unbind(),
                });
                self.unblock(py, cycle)?;
                Ok(future)
            }
        }
    }

    /// Sends a blocked chunk if there is room now, and resolves its `send()`.
    fn unblock(&mut self, py: Python<'_>, cycle: &Arc<Cycle>) -> PyResult<()> {
        let Progress::Streaming(stream) = &mut self.response else {
            return Ok(());
        };
        let Some(blocked) = &mut stream.blocked else {
            return Ok(());
        };
        let waker = cycle.waker();
        let mut cx = Context::from_waker(&waker);
        let reserved = match blocked.reserve.as_mut().poll(&mut cx) {
            Poll::Pending => return Ok(()),
            Poll::Ready(reserved) => reserved,
        };
        let Some(blocked) = stream.blocked.take() else {
            return Ok(());
        };
        let future = blocked.future.bind(py);
        let cancelled = future.call_method0(intern!(py, "done"))?.is_truthy()?;
        match reserved {
            Ok(room) => {
                if !cancelled {
                    cycle.shared.deliver_chunk(py, room, Ok(blocked.chunk));
                    if blocked.last {
                        self.complete(py, cycle)?;
                    }
                    future.call_method1(intern!(py, "set_result"), (py.None(),))?;
                }
            }
            Err(_) => {
                cycle.client_gone();
                self.response = Progress::Over;
                if !cancelled {
                    let err = ClientDisconnected::new_err("the client went away");
                    future.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?;
                }
            }
        }
        Ok(())
    }

    fn deliver(&mut self, py: Python<'_>, cycle: &Cycle, reply: Reply) {
        if let Some(to) = self.reply.take() {
            cycle.shared.deliver(py, to, reply);
        }
    }

    /// The response is complete: the stream (if any) ends, and `receive()` calls waiting
    /// for the end get `http.disconnect`.
    fn complete(&mut self, py: Python<'_>, cycle: &Arc<Cycle>) -> PyResult<()> {
        self.response = Progress::Over;
        cycle.done.store(true, Ordering::Release);
        self.serve_receivers(py, cycle)
    }

    /// The app failed or returned early: a 500 if nothing went out, else the stream is cut
    /// (hyper closes the connection, so the client sees a response cut short, not one that
    /// looks complete).
    fn give_up(&mut self, py: Python<'_>, cycle: &Arc<Cycle>) {
        match std::mem::replace(&mut self.response, Progress::Over) {
            Progress::Waiting | Progress::Started(_) => {
                self.deliver(py, cycle, Reply::error(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Progress::Streaming(stream) => {
                // Behind the chunks on their way, if there is room for it; else the stream
                // ends short of the rest.
                if let Ok(room) = stream.tx.try_reserve_owned() {
                    let broken = Err(io::Error::other("the app failed mid-response"));
                    cycle.shared.deliver_chunk(py, room, broken);
                }
            }
            Progress::Over => {}
        }
        cycle.done.store(true, Ordering::Release);
        // Dropped now, on the loop's thread, with the GIL.
        self.receivers.clear();
    }
}

/// `{"type": "http.disconnect"}`.
fn disconnect(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let message = PyDict::new(py);
    message.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(message.into_any())
}

/// A body as bytes: big ones keep the Python object instead of a copy.
fn body_of(body: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(bytes) = body.cast::<PyBytes>() {
        return Ok(crate::wsgi::body_bytes(bytes));
    }
    if let Ok(array) = body.cast::<PyByteArray>() {
        return Ok(Bytes::from(array.to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "\"body\" must be bytes, not {}",
        body.get_type().name()?
    )))
}

/// Checks `http.response.start`: a status, and headers as `[name, value]` byte pairs.
fn parse_head(py: Python<'_>, message: &Bound<'_, PyDict>) -> PyResult<Head> {
    let status = message
        .get_item(intern!(py, "status"))?
        .ok_or_else(|| PyValueError::new_err("http.response.start has no \"status\""))?
        .extract::<u16>()
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| PyValueError::new_err("\"status\" must be an HTTP status code"))?;
    let mut head = Head {
        status,
        headers: crate::wsgi::reply::spare_header_list(),
        content_length: None,
    };
    let Some(headers) = message.get_item(intern!(py, "headers"))? else {
        return Ok(head);
    };
    let not_pairs =
        |_| PyTypeError::new_err("\"headers\" must be an iterable of [name, value] byte pairs");
    if let Ok(list) = headers.cast::<PyList>() {
        head.headers.reserve(list.len());
        for item in list.iter() {
            add_header(&mut head, &item)?;
        }
    } else {
        for item in headers.try_iter().map_err(not_pairs)? {
            add_header(&mut head, &item.map_err(not_pairs)?)?;
        }
    }
    Ok(head)
}

fn add_header(head: &mut Head, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let (name, value) = if let Ok(pair) = item.cast::<PyTuple>() {
        if pair.len() != 2 {
            return Err(pair_error(item));
        }
        (pair.get_item(0)?, pair.get_item(1)?)
    } else if let Ok(pair) = item.cast::<PyList>() {
        if pair.len() != 2 {
            return Err(pair_error(item));
        }
        (pair.get_item(0)?, pair.get_item(1)?)
    } else {
        return Err(pair_error(item));
    };
    let (Ok(name), Ok(value)) = (name.cast::<PyBytes>(), value.cast::<PyBytes>()) else {
        return Err(pair_error(item));
    };
    let (name, value) = (name.as_bytes(), value.as_bytes());
    let name = HeaderName::from_bytes(name).map_err(|_| {
        PyValueError::new_err(format!(
            "bad header name {:?}",
            String::from_utf8_lossy(name)
        ))
    })?;
    let bad = || {
        PyValueError::new_err(format!(
            "bad value for header {name}: {:?} (no CR, LF, NUL or other control bytes)",
            String::from_utf8_lossy(value)
        ))
    };
    if name == http::header::TRANSFER_ENCODING {
        // Hop-by-hop: the server frames the body itself.
        return Ok(());
    }
    if name == http::header::CONTENT_LENGTH {
        let n = std::str::from_utf8(value)
            .ok()
            .filter(|v| !v.is_empty() && v.len() < 20 && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(bad)?;
        if head.content_length.is_some_and(|first| first != n) {
            return Err(PyValueError::new_err(
                "two different content-length headers",
            ));
        }
        head.content_length = Some(n);
        return Ok(());
    }
    let value = HeaderValue::from_bytes(value).map_err(|_| bad())?;
    head.headers.push((name, value));
    Ok(())
}

fn pair_error(item: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "each header must be a [name, value] pair of bytes, not {item}"
    ))
}

impl Head {
    /// The reply with a whole body, sent with its own length. The app's Content-Length rules,
    /// as for WSGI: a longer body is cut to it; a shorter one is the app's error, logged, and
    /// the connection closes after it. An empty answer to HEAD keeps the app's length.
    fn full_reply(mut self, mut body: Bytes, head_request: bool) -> Reply {
        crate::wsgi::reply::fit_to_length(
            &mut self.headers,
            &mut self.content_length,
            &mut body,
            head_request,
        );
        self.into_reply(ResponseBody::Full(Some(body)))
    }

    fn into_reply(self, body: ResponseBody) -> Reply {
        let mut headers = self.headers;
        if let Some(n) = self.content_length {
            headers.push((http::header::CONTENT_LENGTH, HeaderValue::from(n)));
        }
        Reply {
            status: self.status,
            reason: None,
            headers,
            body,
        }
    }
}

/// Held by the connection's task until hyper lets go of the response: dropped before the
/// response is complete, the client is gone.
pub struct Watch(pub(super) Arc<Cycle>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.client_gone();
    }
}

/// The `receive` callable an app gets.
#[pyclass(module = "zerg", frozen)]
pub struct Receive {
    pub(super) cycle: Arc<Cycle>,
}

#[pymethods]
impl Receive {
    fn __call__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.cycle.receive(py)
    }
}

/// The `send` callable an app gets; `raised` and `returned` are for zerg's own wrapper of
/// the app's coroutine.
#[pyclass(module = "zerg", frozen)]
pub struct Send {
    pub(super) cycle: Arc<Cycle>,
    /// The request, for the log lines about it.
    pub(super) request: Request,
}

/// What log lines say of a request.
pub struct Request {
    pub method: http::Method,
    pub uri: http::Uri,
}

#[pymethods]
impl Send {
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.cycle.send(py, message)
    }

    fn raised(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) {
        self.cycle
            .raised(py, &PyErr::from_value(exc.clone()), &self.request);
    }

    fn returned(&self, py: Python<'_>) {
        self.cycle.returned(py, &self.request);
    }
}
