//! The ASGI bridge (ASGI 3; asgiref's "HTTP & WebSocket" spec 2.4 for HTTP, and "Lifespan"):
//! a worker whose `interface` is `asgi` runs its app on one asyncio loop, on a Python thread
//! of its own, while hyper's tasks run on the worker's tokio thread as for WSGI.
//!
//! What crosses between the two threads, and how often:
//! - hyper's side never takes the GIL. A request crosses as Rust data (its parsed head, its
//!   connection's addresses, its body still in hyper or read whole before) through the
//!   [`inbox`]: a queue and a pipe the loop watches, written only when the loop has no
//!   wake-up pending, so that a busy loop takes any number of requests per wake-up. The scope
//!   is made on the loop's thread.
//! - The app's `receive()` and `send()` return an awaitable that completes at once whenever
//!   they need not wait (the body is there, the stream has room): no future, no callback, no
//!   turn of the loop. Only one that must wait returns an asyncio future, resolved when the
//!   loop is woken for it through the same inbox (by a `Waker` that hyper's side calls).
//! - The response goes back as the WSGI side's [`Reply`]: the head and a whole body in one
//!   hand-over (waking the connection's task once), or a head and a bounded stream of
//!   chunks.
//!
//! The refusals of `worker::refuse`, static files, the request-body lease of `wsgi::input`,
//! the drain's `Connection: close` and the watchdog are the connection's, before and around
//! this bridge, and apply to ASGI requests unchanged.

mod awaitable;
mod cycle;
mod event_loop;
mod inbox;
mod lifespan;
mod scope;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use pyo3::prelude::*;
use tokio::sync::mpsc::OwnedPermit;
use tokio::sync::{mpsc as mpsc_tokio, oneshot, Notify};
use zerg::config::Config;

use crate::python::App;
use crate::scoreboard::Lane;
use crate::wsgi::environ::ConnEnv;
use crate::wsgi::input::{self, Lease, Prefetched, Source};
use crate::wsgi::reply::{Reply, ResponseBody};
use cycle::{Call, Cycle, RequestBody};
use inbox::{Event, Inbox};
use lifespan::{Lifespan, Report};

pub use cycle::Watch;

/// What both threads of the bridge share.
pub struct Shared {
    inbox: Inbox,
    worker_id: u32,
    /// Requests whose app task has not ended yet; the lifespan shutdown waits for none.
    live: AtomicUsize,
    /// Locked to wait for `live` to reach 0, and to say it did.
    waiting: Mutex<()>,
    ended: Condvar,
    /// Replies made on the loop, not handed over yet.
    outbox: Mutex<Outbox>,
    /// To the task on hyper's thread that hands replies to their connections.
    replies: mpsc_tokio::UnboundedSender<Vec<Delivery>>,
    /// Tells [`wake_loop`], on hyper's thread, to wake the loop.
    wake_soon: Notify,
    /// [`wake_loop`] runs (from its first poll until the runtime drops it).
    waking: AtomicBool,
    /// The app started (its lifespan startup is over): from here on, a loop that ends ends
    /// the worker.
    started: AtomicBool,
    /// Made on the loop's thread once the loop exists.
    python: OnceLock<LoopObjects>,
}

struct LoopObjects {
    create_future: Py<PyAny>,
    call_soon: Py<PyAny>,
    done: Py<PyAny>,
    /// The callback that hands the outbox over.
    flush: Py<PyAny>,
}

/// What the loop hands to hyper's side, and where it goes.
enum Delivery {
    /// A response's head (and whole body), to its connection's task.
    Reply(oneshot::Sender<Reply>, Reply),
    /// A chunk of a streamed body, into the room reserved for it in the stream's channel.
    Chunk(OwnedPermit<io::Result<Bytes>>, io::Result<Bytes>),
}

impl Delivery {
    fn hand_over(self) {
        match self {
            Delivery::Reply(to, reply) => {
                let _ = to.send(reply);
            }
            Delivery::Chunk(room, chunk) => {
                room.send(chunk);
            }
        }
    }
}

/// Replies made during a turn of the loop (see [`Shared::deliver`]).
#[derive(Default)]
struct Outbox {
    pending: Vec<Delivery>,
    /// A flush is scheduled on the loop.
    scheduled: bool,
}

/// The loop callback that hands over the replies of a turn.
#[pyclass(module = "zerg", frozen)]
struct Flush {
    shared: Arc<Shared>,
}

#[pymethods]
impl Flush {
    fn __call__(&self) {
        self.shared.flush();
    }
}

impl Shared {
    /// A request's task is on its way.
    fn task_begins(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    /// A request's task has ended.
    fn task_ended(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the lock, so that a waiter between its check and its wait cannot miss it.
            let _waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            self.ended.notify_all();
        }
    }

    /// Waits until no request's task is left, up to `deadline`; returns how many are.
    fn wait_for_tasks(&self, deadline: Instant) -> usize {
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = deadline.saturating_duration_since(Instant::now());
        let _ = self
            .ended
            .wait_timeout_while(waiting, wait, |_| self.live.load(Ordering::Acquire) > 0)
            .unwrap_or_else(PoisonError::into_inner);
        self.live.load(Ordering::Acquire)
    }

    /// On the loop: hands `reply` to its connection's task. Not at once: the replies made
    /// during one turn of the loop go together, from a callback the first of them schedules
    /// behind the callbacks already due (the other requests' task steps), as one batch to
    /// one task on hyper's thread ([`hand_over`]), which gives each to its connection there.
    /// hyper's thread is thus woken once per batch: tokio writes its eventfd for every task
    /// woken from another thread, so a reply sent to its connection from here cost a
    /// wake-up each (~0.9 per request, measured; see benches/RESULTS.md).
    fn deliver(&self, py: Python<'_>, to: oneshot::Sender<Reply>, reply: Reply) {
        self.hand_over(py, Delivery::Reply(to, reply));
    }

    /// On the loop: puts `chunk` in the room reserved for it in its stream, as
    /// [`deliver`](Shared::deliver) hands replies over (in order with them): the stream's
    /// connection is woken once per batch, not once per chunk.
    fn deliver_chunk(
        &self,
        py: Python<'_>,
        room: OwnedPermit<io::Result<Bytes>>,
        chunk: io::Result<Bytes>,
    ) {
        self.hand_over(py, Delivery::Chunk(room, chunk));
    }

    fn hand_over(&self, py: Python<'_>, delivery: Delivery) {
        let mut outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        outbox.pending.push(delivery);
        if outbox.scheduled {
            return;
        }
        let scheduled = self
            .objects()
            .and_then(|o| o.call_soon.bind(py).call1((o.flush.bind(py),)));
        match scheduled {
            Ok(_) => outbox.scheduled = true,
            Err(err) => {
                tracing::error!("cannot schedule the replies' hand-over: {err}");
                drop(outbox);
                self.flush();
            }
        }
    }

    /// Queues `event` for the loop, whose wake-up [`wake_loop`] sends after the tasks due in
    /// this turn of hyper's thread (or at once, without it: before it first ran, once the
    /// runtime dropped it).
    fn push_soon(&self, event: Event) {
        if self.inbox.push_later(event) {
            if self.waking.load(Ordering::SeqCst) {
                self.wake_soon.notify_one();
            } else {
                self.inbox.signal();
            }
        }
    }

    /// Hands every reply of the outbox over.
    fn flush(&self) {
        let pending = {
            let mut outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
            outbox.scheduled = false;
            std::mem::take(&mut outbox.pending)
        };
        if pending.is_empty() {
            return;
        }
        if let Err(mpsc_tokio::error::SendError(pending)) = self.replies.send(pending) {
            // No runtime to hand them over (the worker is going): straight to each.
            pending.into_iter().for_each(Delivery::hand_over);
        }
    }

    fn set_loop(self: &Arc<Self>, py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
        let objects = LoopObjects {
            create_future: event_loop.getattr("create_future")?.unbind(),
            call_soon: event_loop.getattr("call_soon")?.unbind(),
            done: Bound::new(py, awaitable::Done)?.into_any().unbind(),
            flush: Bound::new(
                py,
                Flush {
                    shared: self.clone(),
                },
            )?
            .into_any()
            .unbind(),
        };
        let _ = self.python.set(objects);
        Ok(())
    }

    fn objects(&self) -> PyResult<&LoopObjects> {
        self.python
            .get()
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("no event loop yet"))
    }

    /// A new future of the loop.
    fn create_future<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.objects()?.create_future.bind(py).call0()
    }

    /// The awaitable that completes at once with `None`.
    fn done<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        match self.objects() {
            Ok(objects) => objects.done.bind(py).clone(),
            Err(_) => py.None().into_bound(py),
        }
    }
}

/// Why an ASGI worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The app's lifespan startup failed: its message.
    #[error("the app's lifespan startup failed: {0}")]
    Startup(String),
    #[error("the ASGI event loop could not start: {0}")]
    Loop(String),
    #[error("cannot start the ASGI event loop: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot make the ASGI inbox: {0}")]
    Pipe(#[from] nix::Error),
}

/// A worker's ASGI app, on its loop.
pub struct Bridge {
    shared: Arc<Shared>,
    /// The replies' way to their connections, until [`hand_over`] takes it on hyper's
    /// thread (at the first request: the runtime does not exist yet when the bridge starts).
    deliveries: Mutex<Option<mpsc_tokio::UnboundedReceiver<Vec<Delivery>>>>,
    post_buffering: u64,
    /// The lifespan's reports after its startup (its shutdown's).
    reports: Mutex<mpsc::Receiver<Report>>,
    /// The app took part in the lifespan protocol: its shutdown is asked for.
    lifespan: bool,
}

impl Bridge {
    /// Starts the loop's thread and the app's lifespan, and waits for its startup (the
    /// ready-timeout of the pool bounds how long).
    pub fn start(app: &App, config: &Config, worker_id: u32) -> Result<Bridge, StartError> {
        let (replies, deliveries) = mpsc_tokio::unbounded_channel();
        let shared = Arc::new(Shared {
            inbox: Inbox::new()?,
            worker_id,
            live: AtomicUsize::new(0),
            waiting: Mutex::new(()),
            ended: Condvar::new(),
            outbox: Mutex::new(Outbox::default()),
            replies,
            wake_soon: Notify::new(),
            waking: AtomicBool::new(false),
            started: AtomicBool::new(false),
            python: OnceLock::new(),
        });
        let (tx, reports) = mpsc::channel();
        let lifespan = Lifespan::new(shared.clone(), tx);
        let callable = Python::attach(|py| app.callable.clone_ref(py));
        event_loop::spawn(event_loop::Setup {
            shared: shared.clone(),
            app: callable,
            choice: config.event_loop,
            lifespan,
        })?;
        let took_part = match reports.recv() {
            Ok(Report::Started) => {
                tracing::info!(worker = worker_id, "lifespan startup complete");
                true
            }
            Ok(Report::Unsupported(why)) => {
                tracing::info!(
                    worker = worker_id,
                    "the app does not take part in the ASGI lifespan protocol ({why}); \
                     serving it without"
                );
                false
            }
            Ok(Report::StartupFailed(message)) => return Err(StartError::Startup(message)),
            Ok(Report::LoopFailed(message)) => return Err(StartError::Loop(message)),
            Ok(other) => return Err(StartError::Loop(format!("unexpected {other:?}"))),
            Err(_) => return Err(StartError::Loop("its thread ended".into())),
        };
        shared.started.store(true, Ordering::Release);
        Ok(Bridge {
            shared,
            deliveries: Mutex::new(Some(deliveries)),
            post_buffering: config.post_buffering,
            reports: Mutex::new(reports),
            lifespan: took_part,
        })
    }

    /// Answers one request through the app. Called on the worker's event-loop thread. A body
    /// streamed to the app comes with its [`Lease`], and the response with its [`Watch`]: the
    /// connection keeps both until the response is done. `board` follows the app's
    /// coroutine for harakiri, from when it is handed to the loop (after a small body is
    /// read) until it returns: for a stream (SSE), its whole life.
    pub async fn call(
        &self,
        parts: Parts,
        conn: Arc<ConnEnv>,
        body: Incoming,
        board: Lane,
    ) -> (Reply, Option<Lease>, Option<Watch>) {
        if let Some(deliveries) = self
            .deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            tokio::spawn(hand_over(deliveries));
            tokio::spawn(wake_loop(self.shared.clone()));
        }
        let (body, lease) = if http_body::Body::is_end_stream(&body) {
            (RequestBody::Empty, None)
        } else {
            // A small announced body is read first, so a slow client never holds the app.
            match input::prefetch(&parts, body, self.post_buffering).await {
                Ok(Prefetched::Whole(Source::Buffered(chunks))) => {
                    (RequestBody::Whole(chunks), None)
                }
                Ok(Prefetched::Whole(_)) => (RequestBody::Empty, None),
                Ok(Prefetched::Later(Source::Lent(lent), lease)) => {
                    (RequestBody::Lent(lent), Some(lease))
                }
                Ok(Prefetched::Later(_, lease)) => (RequestBody::Empty, Some(lease)),
                Err(e) => {
                    tracing::debug!(error = %e, "request body unreadable");
                    return (Reply::error(StatusCode::BAD_REQUEST), None, None);
                }
            }
        };
        let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
        let running = board.claim(&[parts.method.as_str().as_bytes(), b" ", target.as_bytes()]);
        let (cycle, reply) = Cycle::new(
            self.shared.clone(),
            body,
            parts.method == Method::HEAD,
            running,
        );
        let watch = Watch(cycle.clone());
        // The wake-up waits for the other connections due in this turn of hyper's thread,
        // so that their requests go in one.
        self.shared
            .push_soon(Event::Call(Box::new(Call { parts, conn, cycle })));
        let reply = reply
            .await
            .unwrap_or_else(|_| Reply::error(StatusCode::INTERNAL_SERVER_ERROR));
        (reply, lease, Some(watch))
    }

    /// Once the worker has drained (its connections closed, the apps of those still open
    /// told `http.disconnect`): waits for the requests' tasks to end, then asks the app's
    /// lifespan `shutdown` and waits for it; all within `within`.
    pub fn shutdown(&self, within: Duration) {
        let worker = self.shared.worker_id;
        let deadline = Instant::now() + within;
        let left = self.shared.wait_for_tasks(deadline);
        if left > 0 {
            tracing::warn!(
                worker,
                tasks = left,
                "requests' tasks still running at shutdown"
            );
        }
        if !self.lifespan {
            return;
        }
        self.shared.inbox.push(Event::Shutdown);
        let reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        match reports.recv_timeout(wait) {
            Ok(Report::ShutdownDone) => tracing::info!(worker, "lifespan shutdown complete"),
            Ok(Report::ShutdownFailed(message)) => {
                tracing::error!(worker, "lifespan shutdown failed: {message}")
            }
            Ok(other) => tracing::warn!(worker, "lifespan shutdown: unexpected {other:?}"),
            Err(_) => tracing::warn!(
                worker,
                seconds = within.as_secs_f32(),
                "lifespan shutdown did not finish in time"
            ),
        }
    }
}

/// On hyper's thread: gives each reply of each batch from the loop to its connection (a wake
/// of a task on its own thread: no system call).
async fn hand_over(mut deliveries: mpsc_tokio::UnboundedReceiver<Vec<Delivery>>) {
    while let Some(batch) = deliveries.recv().await {
        batch.into_iter().for_each(Delivery::hand_over);
    }
}

/// On hyper's thread: wakes the loop for the requests queued since it last did. Woken (on the
/// same thread, which costs no system call) by the first request queued after a wake-up,
/// it runs after the other tasks due in the same turn: the requests that all the connections
/// with one ready in that turn queue go to the loop in one wake-up (one pipe write) rather
/// than the first alone, the loop taking it while the rest are still being read.
///
/// The same goes for a request's wake-ups (a body chunk read, room made in a response's
/// stream, the client gone), which hyper's side mostly calls while it runs its tasks. Dropped
/// with the runtime, it sends the wake-up it may owe, and any queued after goes at once: no
/// event is left without one.
async fn wake_loop(shared: Arc<Shared>) {
    /// Marks the task as running, and its end.
    struct Waking(Arc<Shared>);
    impl Drop for Waking {
        fn drop(&mut self) {
            self.0.waking.store(false, Ordering::SeqCst);
            self.0.inbox.signal();
        }
    }
    shared.waking.store(true, Ordering::SeqCst);
    let waking = Waking(shared);
    loop {
        waking.0.wake_soon.notified().await;
        waking.0.inbox.signal();
    }
}

/// The answer to a WebSocket upgrade: zerg does not serve WebSockets yet, and says so at
/// once (501, then the connection closes) rather than leave the client waiting.
pub fn refuse_websocket(headers: &HeaderMap) -> Option<Reply> {
    let upgrade = headers.get(http::header::UPGRADE)?;
    if !upgrade.as_bytes().eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    tracing::info!("WebSocket upgrade refused: zerg does not serve WebSockets");
    Some(Reply {
        status: StatusCode::NOT_IMPLEMENTED,
        reason: None,
        headers: vec![
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            ),
            (http::header::CONNECTION, HeaderValue::from_static("close")),
        ],
        body: ResponseBody::Full(Some(bytes::Bytes::from_static(
            b"501 Not Implemented: this server does not serve WebSockets\n",
        ))),
    })
}
