//! The lifespan protocol (asgiref's "Lifespan" spec), as uvicorn's `lifespan: auto` runs it.
//!
//! The worker starts the app's lifespan task on its loop before it accepts, and waits for
//! the outcome: `lifespan.startup.complete` lets it go on; `lifespan.startup.failed`, or an
//! exception the app raises after it took the `lifespan.startup` event, fails the worker with
//! the app's message (the master then reports the generation as failed, and a reload rolls
//! back). An app that raises before it asks for any event, or returns at once, does not speak
//! the protocol: it is served without one, as under uvicorn's `auto`.
//!
//! `shutdown` is asked once the worker has drained; the outcome is logged.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::awaitable::Ready;
use super::Shared;
use crate::python::describe;

/// What the lifespan task tells the worker's main thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// `lifespan.startup.complete`.
    Started,
    /// The app does not speak the protocol (why, for the log).
    Unsupported(String),
    /// Startup failed: the app's message.
    StartupFailed(String),
    /// `lifespan.shutdown.complete`, or the task ended.
    ShutdownDone,
    /// Shutdown failed: the app's message.
    ShutdownFailed(String),
    /// The loop itself could not run (the message, with a traceback).
    LoopFailed(String),
}

/// Where the lifespan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The app has not asked for an event yet.
    Created,
    /// `lifespan.startup` was given.
    StartupGiven,
    /// The worker asked for shutdown; the app has not taken the event yet.
    ShutdownAsked,
    /// `lifespan.shutdown` was given.
    ShutdownGiven,
}

pub struct Lifespan {
    shared: Arc<Shared>,
    reports: Mutex<mpsc::Sender<Report>>,
    side: Mutex<Side>,
}

struct Side {
    phase: Phase,
    /// A `receive()` waiting for the shutdown event.
    waiter: Option<Py<PyAny>>,
    startup_reported: bool,
    shutdown_reported: bool,
    /// The task has ended.
    ended: bool,
}

impl Lifespan {
    pub fn new(shared: Arc<Shared>, reports: mpsc::Sender<Report>) -> Arc<Lifespan> {
        Arc::new(Lifespan {
            shared,
            reports: Mutex::new(reports),
            side: Mutex::new(Side {
                phase: Phase::Created,
                waiter: None,
                startup_reported: false,
                shutdown_reported: false,
                ended: false,
            }),
        })
    }

    fn side(&self) -> MutexGuard<'_, Side> {
        self.side.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn report(&self, report: Report) {
        let _ = self
            .reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(report);
    }

    /// On the loop: the worker has drained; the app's `receive()` gets `lifespan.shutdown`.
    pub fn ask_shutdown(&self, py: Python<'_>) {
        let mut side = self.side();
        if side.ended || side.shutdown_reported {
            side.shutdown_reported = true;
            drop(side);
            self.report(Report::ShutdownDone);
            return;
        }
        match side.waiter.take() {
            Some(waiter) => {
                side.phase = Phase::ShutdownGiven;
                let resolved = event(py, "lifespan.shutdown").and_then(|message| {
                    waiter.call_method1(py, intern!(py, "set_result"), (message,))
                });
                if let Err(err) = resolved {
                    tracing::error!("cannot give lifespan.shutdown: {}", describe(py, &err));
                }
            }
            None => side.phase = Phase::ShutdownAsked,
        }
    }

    fn receive<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut side = self.side();
        match side.phase {
            Phase::Created => {
                side.phase = Phase::StartupGiven;
                Ready::with(py, event(py, "lifespan.startup")?)
            }
            Phase::ShutdownAsked => {
                side.phase = Phase::ShutdownGiven;
                Ready::with(py, event(py, "lifespan.shutdown")?)
            }
            Phase::StartupGiven | Phase::ShutdownGiven => {
                let future = self.shared.create_future(py)?;
                side.waiter = Some(future.clone().unbind());
                Ok(future)
            }
        }
    }

    fn send<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let message = message
            .cast::<PyDict>()
            .map_err(|_| PyTypeError::new_err("send() takes a dict, the ASGI message"))?;
        let kind = message
            .get_item(intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("the message has no \"type\""))?;
        let kind = kind.cast::<PyString>()?.to_str()?.to_owned();
        let text = || -> PyResult<String> {
            Ok(match message.get_item(intern!(py, "message"))? {
                Some(m) if !m.is_none() => m.str()?.to_string(),
                _ => String::new(),
            })
        };
        let mut side = self.side();
        let report = match kind.as_str() {
            "lifespan.startup.complete" if !side.startup_reported => {
                side.startup_reported = true;
                Report::Started
            }
            "lifespan.startup.failed" if !side.startup_reported => {
                side.startup_reported = true;
                Report::StartupFailed(text()?)
            }
            "lifespan.shutdown.complete" if !side.shutdown_reported => {
                side.shutdown_reported = true;
                Report::ShutdownDone
            }
            "lifespan.shutdown.failed" if !side.shutdown_reported => {
                side.shutdown_reported = true;
                Report::ShutdownFailed(text()?)
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "unexpected lifespan message {other:?} at this point"
                )))
            }
        };
        drop(side);
        self.report(report);
        Ok(self.shared.done(py))
    }

    /// The lifespan task raised `err`.
    fn raised(&self, py: Python<'_>, err: &PyErr) {
        let mut side = self.side();
        side.ended = true;
        side.waiter = None;
        let report = if !side.startup_reported {
            side.startup_reported = true;
            if side.phase == Phase::Created {
                Report::Unsupported(err.to_string())
            } else {
                Report::StartupFailed(describe(py, err))
            }
        } else if matches!(side.phase, Phase::ShutdownAsked | Phase::ShutdownGiven)
            && !side.shutdown_reported
        {
            side.shutdown_reported = true;
            Report::ShutdownFailed(describe(py, err))
        } else {
            // After a failure it reported itself (Starlette re-raises what it reported).
            tracing::debug!("the lifespan task raised: {}", describe(py, err));
            return;
        };
        drop(side);
        self.report(report);
    }

    /// The lifespan task returned.
    fn returned(&self) {
        let mut side = self.side();
        side.ended = true;
        let report = if !side.startup_reported {
            side.startup_reported = true;
            Report::Unsupported("its lifespan task returned without starting up".into())
        } else if matches!(side.phase, Phase::ShutdownAsked | Phase::ShutdownGiven)
            && !side.shutdown_reported
        {
            side.shutdown_reported = true;
            Report::ShutdownDone
        } else {
            return;
        };
        drop(side);
        self.report(report);
    }
}

/// `{"type": kind}`.
fn event<'py>(py: Python<'py>, kind: &str) -> PyResult<Bound<'py, PyAny>> {
    let message = PyDict::new(py);
    message.set_item(intern!(py, "type"), kind)?;
    Ok(message.into_any())
}

/// The lifespan scope's `receive`.
#[pyclass(module = "zerg", frozen)]
pub struct LifespanReceive {
    pub(super) lifespan: Arc<Lifespan>,
}

#[pymethods]
impl LifespanReceive {
    fn __call__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.lifespan.receive(py)
    }
}

/// The lifespan scope's `send`; `raised` and `returned` are for zerg's wrapper.
#[pyclass(module = "zerg", frozen)]
pub struct LifespanSend {
    pub(super) lifespan: Arc<Lifespan>,
}

#[pymethods]
impl LifespanSend {
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.lifespan.send(py, message)
    }

    fn raised(&self, py: Python<'_>, exc: &Bound<'_, PyAny>) {
        self.lifespan.raised(py, &PyErr::from_value(exc.clone()));
    }

    fn returned(&self) {
        self.lifespan.returned();
    }
}
