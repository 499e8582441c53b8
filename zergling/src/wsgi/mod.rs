//! The WSGI bridge (PEP 3333). The app runs either inline on the worker's event-loop thread or
//! on a few OS threads that keep their Python thread state and take the GIL per call; the
//! answer goes back to hyper as a [`reply::Reply`] whose body is whole or streamed.
//!
//! Inline calls are the fast path: with `threads: 1` only one call may run at a time anyway,
//! and a request whose body is already complete (none, or a small announced one read first)
//! needs nothing from the event loop while the app runs. Running it right there saves two
//! thread hand-offs per request. Whatever could block the loop goes to the thread instead: a
//! body to stream into `wsgi.input`, and the rest of a response iterable that may be a stream
//! (its iteration continues on the thread, with backpressure from the client). An iterable
//! whose first chunk already completes the declared Content-Length (how Flask, Django and most
//! frameworks answer) is finished inline: its end and `close()` are taken right there.

pub mod environ;
mod fastcall;
pub mod gil;
pub mod input;
pub mod reply;
pub mod response;
pub mod streams;

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, StatusCode};
use hyper::body::Incoming;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyTuple};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::python::{describe, App};
use crate::scoreboard::{Claim, Lane};
use environ::{ConnEnv, HeaderKeys};
use input::{BadRequestBody, Input, Lease, Prefetched, Source};
use reply::Reply;
use response::{CallKit, Caller, Responder};

/// Facts about the worker that the environ reports, and how it calls the app.
pub struct Static {
    pub multithread: bool,
    pub multiprocess: bool,
    pub worker_id: u32,
    /// Bodies announced at up to this many bytes are read before the call (`post-buffering`).
    pub post_buffering: u64,
}

/// One of the worker's app slots, taken for a request: harakiri follows the request from
/// the moment the slot is taken until the app's work on it is done (the call, its
/// iterable's end and `close()`), on whatever thread does it, whether its client waits for
/// the answer or is gone.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _running: Claim,
}

impl Slot {
    fn take(permit: OwnedSemaphorePermit, parts: &Parts, board: Lane) -> Slot {
        let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
        let what = [parts.method.as_str().as_bytes(), b" ", target.as_bytes()];
        Slot {
            _permit: permit,
            _running: board.claim(&what),
        }
    }
}

/// Work for a Python thread. Each holds one of the worker's app slots until it is done.
enum Job {
    /// Call the app for a request.
    Call {
        parts: Parts,
        conn: Arc<ConnEnv>,
        body: Source,
        reply: oneshot::Sender<Reply>,
        slot: Slot,
    },
    /// Go on with the response of an app called inline: iterate the rest of its body and
    /// close it.
    Continue {
        parts: Parts,
        rest: Rest,
        responder: Arc<Responder>,
        slot: Slot,
    },
}

/// Runs the app: inline or on its threads, never more than `threads` calls at once.
pub struct Pool {
    jobs: crossbeam_channel::Sender<Job>,
    shared: Arc<Shared>,
    /// One permit per concurrent app call (`threads`).
    slots: Arc<Semaphore>,
    inline: bool,
    post_buffering: u64,
}

struct Shared {
    app: Py<PyAny>,
    template: Py<PyDict>,
    header_keys: HeaderKeys,
    worker_id: u32,
}

impl Pool {
    /// Starts `threads` threads; with one thread, calls may also run inline.
    pub fn start(app: &App, statics: Static, threads: usize) -> anyhow::Result<Pool> {
        let shared = Python::attach(|py| -> PyResult<_> {
            Ok(Arc::new(Shared {
                app: app.callable.clone_ref(py),
                template: environ::template(py, &statics)?,
                header_keys: HeaderKeys::default(),
                worker_id: statics.worker_id,
            }))
        })
        .map_err(|e| anyhow::anyhow!("cannot prepare the WSGI environ: {e}"))?;
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for n in 0..threads {
            let rx = rx.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("wsgi-{n}"))
                .spawn(move || {
                    // The thread attaches once and keeps its Python thread state for life,
                    // releasing only the GIL while it waits: attaching per job would create
                    // and destroy a thread state (and mmap its frame stack) every request.
                    Python::attach(|py| {
                        while let Ok(job) = py.detach(|| rx.recv()) {
                            run_job(py, &shared, job);
                        }
                    })
                })?;
        }
        Ok(Pool {
            jobs: tx,
            shared,
            slots: Arc::new(Semaphore::new(threads)),
            inline: threads == 1,
            post_buffering: statics.post_buffering,
        })
    }

    /// A slot for [`call_now`](Pool::call_now), if a request with `body` can be called at
    /// once: it has none, calls run inline, and a slot is free (a permit is only free when
    /// nobody queues for one, so this jumps no queue). Most requests of a worker with
    /// `threads: 1` can; they then need no future of their own.
    pub fn slot_now(&self, body: &Incoming) -> Option<OwnedSemaphorePermit> {
        if !self.inline || !http_body::Body::is_end_stream(body) {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Calls the app inline for a request without a body, in a slot from
    /// [`slot_now`](Pool::slot_now); `board` follows the call for harakiri.
    pub fn call_now(
        &self,
        parts: Parts,
        conn: &ConnEnv,
        slot: OwnedSemaphorePermit,
        board: Lane,
    ) -> Called {
        let slot = Slot::take(slot, &parts, board);
        self.run_inline(parts, conn, Source::Done, slot)
    }

    /// Answers one request through the app. Called on the worker's event-loop thread. A body
    /// streamed to the app comes with its [`Lease`], which the connection keeps until the
    /// response is done. `board` follows the app's work for harakiri, from when it has its
    /// slot (not while the body is read first, or the request waits for a slot).
    pub async fn call(
        &self,
        parts: Parts,
        conn: Arc<ConnEnv>,
        body: Incoming,
        board: Lane,
    ) -> (Reply, Option<Lease>) {
        // The body is read before taking a slot: a slow client must not hold the app idle.
        let (body, lease) = match input::prefetch(&parts, body, self.post_buffering).await {
            Ok(Prefetched::Whole(body)) => (body, None),
            Ok(Prefetched::Later(body, lease)) => (body, Some(lease)),
            Err(e) => {
                tracing::debug!(error = %e, "request body unreadable");
                return (Reply::error(StatusCode::BAD_REQUEST), None);
            }
        };
        // A free slot is taken without a future to poll (see `slot_now`).
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Ok(slot),
            Err(_) => self.slots.clone().acquire_owned().await,
        };
        let Ok(slot) = slot else {
            return (Reply::error(StatusCode::SERVICE_UNAVAILABLE), lease);
        };
        let slot = Slot::take(slot, &parts, board);
        let answer = if self.inline && lease.is_none() {
            match self.run_inline(parts, &conn, body, slot) {
                Called::Answered(reply) => return (reply, None),
                Called::Pending(answer) => answer,
            }
        } else {
            let (reply, answer) = oneshot::channel();
            let _ = self.jobs.send(Job::Call {
                parts,
                conn,
                body,
                reply,
                slot,
            });
            answer
        };
        (reply_from_thread(answer).await, lease)
    }

    /// Calls the app inline, holding `slot`: answered, or the response's head or whole reply
    /// still to come from the thread that goes on with the body.
    fn run_inline(&self, mut parts: Parts, conn: &ConnEnv, body: Source, slot: Slot) -> Called {
        let head_request = parts.method == Method::HEAD;
        gil::keep();
        let called = Python::attach(|py| -> PyResult<Inline> {
            let kit = CallKit::take(py, Caller::Inline, head_request)?;
            Ok(match self.call_inline(py, &mut parts, conn, body, &kit) {
                None => {
                    // Answered (or failed, which answers too) while we waited.
                    let reply = kit.responder().take_kept();
                    kit.put_back(py);
                    Inline::Answered(reply)
                }
                Some(rest) => Inline::Continues(rest, kit.responder().clone()),
            })
        });
        let (rest, responder) = match called {
            Ok(Inline::Answered(reply)) => {
                return Called::Answered(reply.unwrap_or_else(server_error))
            }
            Ok(Inline::Continues(rest, responder)) => (rest, responder),
            Err(err) => {
                tracing::error!("cannot prepare the call: {err}");
                return Called::Answered(server_error());
            }
        };
        let (reply, answer) = oneshot::channel();
        let sent = responder.leave_inline(reply);
        let _ = self.jobs.send(Job::Continue {
            parts,
            rest,
            responder,
            slot,
        });
        match sent {
            // The head went out already; the thread goes on with the body.
            Some(sent) => Called::Answered(sent),
            None => Called::Pending(answer),
        }
    }

    /// Calls the app here. A list or tuple body is answered at once, and so is an iterable
    /// that [`answer_inline`] can finish; the rest of any other is returned, for a thread.
    fn call_inline(
        &self,
        py: Python<'_>,
        parts: &mut Parts,
        conn: &ConnEnv,
        body: Source,
        kit: &CallKit,
    ) -> Option<Rest> {
        let shared = &self.shared;
        let responder = kit.responder();
        let result = call_app(py, shared, parts, conn, body, kit).and_then(|iterable| {
            if is_sequence(&iterable) {
                drive(py, responder, &iterable).map(|()| None)
            } else {
                answer_inline(responder, iterable)
            }
        });
        result.unwrap_or_else(|err| {
            app_failed(py, shared, parts, responder, &err);
            None
        })
    }
}

fn run_job(py: Python<'_>, shared: &Shared, job: Job) {
    match job {
        Job::Call {
            mut parts,
            conn,
            body,
            reply,
            slot,
        } => {
            let kit = match CallKit::take(py, Caller::Thread(reply), parts.method == Method::HEAD) {
                Ok(kit) => kit,
                Err(err) => {
                    // The dropped reply channel answers 500.
                    tracing::error!("cannot prepare the call: {err}");
                    return;
                }
            };
            let responder = kit.responder();
            let result = call_app(py, shared, &mut parts, &conn, body, &kit)
                .and_then(|iterable| complete(py, responder, &iterable));
            if let Err(err) = result {
                app_failed(py, shared, &parts, responder, &err);
            }
            kit.put_back(py);
            drop(slot);
        }
        Job::Continue {
            parts,
            rest,
            responder,
            slot,
        } => {
            let iterable = rest.iterable.bind(py);
            let first = rest.first.map(|c| c.into_bound(py));
            let streamed = stream(py, &responder, first, rest.iterator.bind(py));
            if let Err(err) = streamed.and(close(iterable)) {
                app_failed(py, shared, &parts, &responder, &err);
            }
            drop(slot);
        }
    }
}

fn server_error() -> Reply {
    Reply::error(StatusCode::INTERNAL_SERVER_ERROR)
}

/// How a call made inline on the event loop stands.
pub enum Called {
    /// Its reply, whole or with a body that a thread goes on streaming.
    Answered(Reply),
    /// A thread answers: the rest of the response went to it before its head was made.
    Pending(oneshot::Receiver<Reply>),
}

/// The reply a thread sends; 500 if it dropped the sender (its call could not be made).
pub async fn reply_from_thread(answer: oneshot::Receiver<Reply>) -> Reply {
    answer.await.unwrap_or_else(|_| server_error())
}

/// Builds the environ (which takes the request's headers) and calls the app; returns its
/// response iterable.
fn call_app<'py>(
    py: Python<'py>,
    shared: &Shared,
    parts: &mut Parts,
    conn: &ConnEnv,
    body: Source,
    kit: &CallKit,
) -> PyResult<Bound<'py, PyAny>> {
    let environ = environ::build(
        py,
        shared.template.bind(py),
        conn,
        &shared.header_keys,
        parts,
        (!matches!(body, Source::Done)).then(|| Input::new(body)),
    )?;
    let iterable = shared
        .app
        .bind(py)
        .call1((&environ.dict, kit.start_response(py)));
    conn.keep(py, environ);
    iterable
}

/// Sends the whole body of `iterable`, then calls its `close()` whatever happened (PEP 3333).
fn complete(py: Python<'_>, responder: &Responder, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    let driven = drive(py, responder, iterable);
    if is_sequence(iterable) {
        return driven; // no close(); asking would build an AttributeError each request
    }
    driven.and(close(iterable))
}

/// Calls the iterable's `close()`, if it has one.
fn close(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    match iterable.getattr(pyo3::intern!(iterable.py(), "close")) {
        Ok(close) => close.call0().map(drop),
        Err(_) => Ok(()),
    }
}

/// How an inline call ended: answered, or with the rest of its body for a thread to send.
enum Inline {
    Answered(Option<Reply>),
    Continues(Rest, Arc<Responder>),
}

/// What is left of a response iterable for a thread to send: the chunk taken from it already,
/// then whatever its iterator still yields; then its `close()`.
pub struct Rest {
    iterable: Py<PyAny>,
    iterator: Py<PyIterator>,
    first: Option<Py<PyBytes>>,
}

/// On the event loop: answers with what [`pull`] takes whole, and calls `close()`. Otherwise the
/// response may be a stream whose next chunk takes its time (or the app wrote the head
/// already): the rest is returned, for a thread to send.
fn answer_inline(responder: &Responder, iterable: Bound<'_, PyAny>) -> PyResult<Option<Rest>> {
    match pull(responder, &iterable) {
        Ok(Pulled::Whole(body)) => {
            // An answer given stands even if close() fails (that is logged).
            let answered = responder.finish_full(body);
            answered.and(close(&iterable)).map(|()| None)
        }
        Ok(Pulled::Partly(iterator, first)) => Ok(Some(Rest {
            iterator: iterator.unbind(),
            first: first.map(Bound::unbind),
            iterable: iterable.unbind(),
        })),
        Err(err) => {
            let _ = close(&iterable);
            Err(err)
        }
    }
}

enum Pulled<'py> {
    /// The iterator ended: this is the whole body.
    Whole(Bytes),
    /// The first chunk, if it was taken; the iterator may yield more.
    Partly(Bound<'py, PyIterator>, Option<Bound<'py, PyBytes>>),
}

/// The first chunk of a response iterable, and the iterator's end too if that chunk completes
/// the declared Content-Length: then the body goes out whole, without a stream (and inline,
/// without a thread).
///
/// PEP 3333 wants each block sent before the app is asked for the next. A block that completes
/// the declared length is held until the iterator ends instead: nothing may follow it, and the
/// app's iterator normally ends at once (Flask's and Django's do). It is still asked to end, as
/// gunicorn and uWSGI do, so that a generator's code after its last `yield` runs. An app that
/// yields all it declared and then works on before its iterator ends delays its own response
/// by that work, and with `threads: 1` keeps the event loop waiting meanwhile. One that yields
/// more than it declared is not iterated further (PEP 3333's rule): `close()` ends it.
fn pull<'py>(responder: &Responder, iterable: &Bound<'py, PyAny>) -> PyResult<Pulled<'py>> {
    let mut iterator = iterable.try_iter()?;
    if responder.headers_sent() {
        return Ok(Pulled::Partly(iterator, None));
    }
    let Some(first) = iterator.next().transpose()? else {
        return Ok(Pulled::Whole(Bytes::new()));
    };
    let first = as_bytes(&first)?.clone();
    let completes = responder
        .declared_length()
        .is_some_and(|declared| first.as_bytes().len() as u64 >= declared);
    if !completes {
        return Ok(Pulled::Partly(iterator, Some(first)));
    }
    while let Some(more) = iterator.next().transpose()? {
        if !as_bytes(&more)?.as_bytes().is_empty() {
            // PEP 3333: stop iterating once the declared length has been sent.
            tracing::warn!(
                "the app's iterable goes on past its Content-Length; the rest is not sent"
            );
            break;
        }
    }
    Ok(Pulled::Whole(body_bytes(&first)))
}

fn app_failed(py: Python<'_>, shared: &Shared, parts: &Parts, responder: &Responder, err: &PyErr) {
    if responder.client_gone() && err.is_instance_of::<PyOSError>(py) {
        // The OSError of a write to a connection that is gone: no fault of the app's.
        tracing::info!(
            worker = shared.worker_id,
            method = %parts.method,
            path = parts.uri.path(),
            "the client went away before the end of its response"
        );
        responder.fail();
        return;
    }
    if err.is_instance_of::<BadRequestBody>(py) {
        // The client's fault, answered 400 by the connection: nothing for the app's owner.
        tracing::info!(
            worker = shared.worker_id,
            method = %parts.method,
            path = parts.uri.path(),
            "{}",
            err.value(py)
        );
        responder.fail();
        return;
    }
    tracing::error!(
        worker = shared.worker_id,
        method = %parts.method,
        path = parts.uri.path(),
        "app raised: {}",
        describe(py, err)
    );
    responder.fail();
}

/// A plain list or tuple: sent whole, with nothing to close and nothing that could block.
fn is_sequence(iterable: &Bound<'_, PyAny>) -> bool {
    iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>()
}

/// Sends the app's body: a list or tuple goes out whole with a Content-Length; any other
/// iterable is streamed chunk by chunk.
fn drive(py: Python<'_>, responder: &Responder, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    // The common answer, `[body]`, without collecting anything.
    if let Ok(list) = iterable.cast_exact::<PyList>() {
        if list.len() == 1 && !responder.headers_sent() {
            return responder.finish_full(body_bytes(as_bytes(&list.get_item(0)?)?));
        }
    }
    let sequence: Option<Vec<Bound<'_, PyAny>>> = if let Ok(list) = iterable.cast_exact::<PyList>()
    {
        Some(list.iter().collect())
    } else if let Ok(tuple) = iterable.cast_exact::<PyTuple>() {
        Some(tuple.iter().collect())
    } else {
        None
    };
    match sequence {
        Some(items) if !responder.headers_sent() => {
            let chunks = items.iter().map(as_bytes).collect::<PyResult<Vec<_>>>()?;
            let body = match chunks.as_slice() {
                [one] => body_bytes(one),
                many => many
                    .iter()
                    .flat_map(|c| c.as_bytes().iter().copied())
                    .collect(),
            };
            responder.finish_full(body)
        }
        _ => match pull(responder, iterable)? {
            Pulled::Whole(body) => responder.finish_full(body),
            Pulled::Partly(iterator, first) => stream(py, responder, first, &iterator),
        },
    }
}

/// Streams a body: the `first` chunk taken from `iterator` already, then the rest of it.
fn stream(
    py: Python<'_>,
    responder: &Responder,
    first: Option<Bound<'_, PyBytes>>,
    iterator: &Bound<'_, PyIterator>,
) -> PyResult<()> {
    if let Some(chunk) = first {
        responder.write(py, chunk.as_bytes())?;
    }
    for item in iterator {
        responder.write(py, as_bytes(&item?)?.as_bytes())?;
    }
    responder.finish()
}

/// Bodies at least this big are sent from the Python bytes object itself, not from a copy.
const ZERO_COPY_MIN: usize = 64 * 1024;

/// One body chunk as `Bytes`. A big one keeps a reference to the immutable Python object
/// instead of copying it; the reference is dropped off the GIL after the write, which pyo3
/// defers to the next time a thread attaches.
pub(crate) fn body_bytes(chunk: &Bound<'_, PyBytes>) -> bytes::Bytes {
    let data = chunk.as_bytes();
    if data.len() < ZERO_COPY_MIN {
        return bytes::Bytes::copy_from_slice(data);
    }
    bytes::Bytes::from_owner(pyo3::pybacked::PyBackedBytes::from(chunk.clone()))
}

fn as_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyBytes>> {
    item.cast::<PyBytes>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "the app yielded {}, but a WSGI body is made of bytes",
            type_name(item)
        ))
    })
}

/// The name of `obj`'s type, for error messages (empty if it has none to give).
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}
