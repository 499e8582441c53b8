//! The worker's asyncio loop, on a Python thread of its own: made after the fork (an event
//! loop never crosses a fork), uvloop's when `loop` asks for it, and run for the worker's
//! life. The thread attaches to the interpreter once; the loop lets go of the GIL whenever it
//! waits for events (asyncio's selector and uvloop's libuv both do), so the app's own threads
//! (anyio's worker threads for sync endpoints, say) run meanwhile.
//!
//! The loop watches the [`Inbox`](super::inbox::Inbox) pipe: [`Drain`] takes every queued event
//! in one callback, making each new request's scope and task, and resolving the futures that
//! waited (see `cycle`).

use std::sync::Arc;

use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};
use zerg::config::EventLoop;

use super::cycle::{Call, Receive, Request, Send};
use super::inbox::Event;
use super::lifespan::{Lifespan, LifespanReceive, LifespanSend, Report};
use super::scope::Scopes;
use super::Shared;
use crate::python::describe;

/// What the loop's thread starts with.
pub struct Setup {
    pub shared: Arc<Shared>,
    pub app: Py<PyAny>,
    pub choice: EventLoop,
    pub lifespan: Arc<Lifespan>,
}

/// Starts the loop's thread. Its first report (through the lifespan) says whether the app
/// started. A loop that ends once the app has started (it raised, or the app stopped it)
/// ends the worker: its requests would wait for ever, and the master forks a new one.
pub fn spawn(setup: Setup) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("asgi-loop".into())
        .spawn(move || {
            Python::attach(|py| {
                let (lifespan, shared) = (setup.lifespan.clone(), setup.shared.clone());
                let why = match run(py, setup) {
                    Ok(()) => "the app stopped it".to_owned(),
                    Err(err) => describe(py, &err),
                };
                if shared.started.load(std::sync::atomic::Ordering::Acquire) {
                    tracing::error!(
                        worker = shared.worker_id,
                        "the ASGI event loop ended ({why}); the worker exits"
                    );
                    std::process::exit(1);
                }
                lifespan.report(Report::LoopFailed(why));
            })
        })
}

fn run(py: Python<'_>, setup: Setup) -> PyResult<()> {
    let Setup {
        shared,
        app,
        choice,
        lifespan,
    } = setup;
    let event_loop = new_loop(py, choice, shared.worker_id)?;
    py.import("asyncio")?
        .call_method1("set_event_loop", (&event_loop,))?;
    let glue = PyModule::from_code(
        py,
        pyo3::ffi::c_str!(include_str!("glue.py")),
        c"zerg_asgi_glue.py",
        c"zerg_asgi_glue",
    )?;
    let run_app = glue.getattr("run")?;
    shared.set_loop(py, &event_loop)?;

    // The lifespan: its state is every request scope's too (a shallow copy each).
    let state = PyDict::new(py);
    let scope = PyDict::new(py);
    scope.set_item("type", "lifespan")?;
    let asgi = PyDict::new(py);
    asgi.set_item("version", "3.0")?;
    asgi.set_item("spec_version", "2.0")?;
    scope.set_item("asgi", asgi)?;
    scope.set_item("state", &state)?;
    let receive = Bound::new(
        py,
        LifespanReceive {
            lifespan: lifespan.clone(),
        },
    )?;
    let send = Bound::new(
        py,
        LifespanSend {
            lifespan: lifespan.clone(),
        },
    )?;
    let create_task = event_loop.getattr("create_task")?;
    create_task.call1((run_app.call1((&app, scope, receive, send))?,))?;

    let drain = Drain {
        shared: shared.clone(),
        app,
        run_app: run_app.unbind(),
        create_task: create_task.unbind(),
        scopes: Scopes::new(py)?,
        state: state.unbind(),
        lifespan,
        events: Vec::with_capacity(64),
    };
    event_loop.call_method1("add_reader", (shared.inbox.fd(), Bound::new(py, drain)?))?;
    event_loop.call_method0("run_forever")?;
    Ok(())
}

/// A new event loop of the kind `choice` names.
fn new_loop<'py>(py: Python<'py>, choice: EventLoop, worker: u32) -> PyResult<Bound<'py, PyAny>> {
    let uvloop = match choice {
        EventLoop::Asyncio => None,
        EventLoop::Uvloop => Some(py.import("uvloop")?),
        EventLoop::Auto => match py.import("uvloop") {
            Ok(uvloop) => Some(uvloop),
            Err(err) if err.is_instance_of::<PyImportError>(py) => None,
            Err(err) => return Err(err),
        },
    };
    let (made, name) = match uvloop {
        Some(uvloop) => (uvloop.call_method0("new_event_loop")?, "uvloop"),
        None => (
            py.import("asyncio")?.call_method0("new_event_loop")?,
            "asyncio",
        ),
    };
    tracing::info!(worker, event_loop = name, "ASGI event loop");
    Ok(made)
}

/// The loop's reader callback on the inbox pipe.
#[pyclass(module = "zerg")]
struct Drain {
    shared: Arc<Shared>,
    app: Py<PyAny>,
    /// The glue's `run(app, scope, receive, send)`.
    run_app: Py<PyAny>,
    /// The loop's `create_task`.
    create_task: Py<PyAny>,
    scopes: Scopes,
    /// The lifespan's state, copied into each scope.
    state: Py<PyDict>,
    lifespan: Arc<Lifespan>,
    /// The events of one wake-up (kept for its room).
    events: Vec<Event>,
}

#[pymethods]
impl Drain {
    fn __call__(&mut self, py: Python<'_>) {
        let mut events = std::mem::take(&mut self.events);
        self.shared.inbox.take(&mut events);
        for event in events.drain(..) {
            match event {
                Event::Call(call) => {
                    let cycle = call.cycle.clone();
                    if let Err(err) = self.start(py, *call) {
                        tracing::error!(
                            worker = self.shared.worker_id,
                            "cannot call the ASGI app: {}",
                            describe(py, &err)
                        );
                        cycle.fail(py);
                    }
                }
                Event::Wake(cycle) => cycle.on_wake(py),
                Event::Shutdown => self.lifespan.ask_shutdown(py),
            }
        }
        self.events = events;
    }
}

impl Drain {
    /// Makes the request's scope and callables, and its task.
    fn start(&mut self, py: Python<'_>, call: Call) -> PyResult<()> {
        let Call { parts, conn, cycle } = call;
        let scope = self.scopes.build(py, &parts, &conn, self.state.bind(py))?;
        let receive = Bound::new(
            py,
            Receive {
                cycle: cycle.clone(),
            },
        )?;
        let send = Bound::new(
            py,
            Send {
                cycle,
                request: Request {
                    method: parts.method,
                    uri: parts.uri,
                },
            },
        )?;
        let coroutine = self
            .run_app
            .bind(py)
            .call1((self.app.bind(py), scope, receive, send))?;
        self.create_task.bind(py).call1((coroutine,))?;
        Ok(())
    }
}
