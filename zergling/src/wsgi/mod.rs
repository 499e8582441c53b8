//! The WSGI bridge (PEP 3333): the app runs on a few OS threads that take the GIL per call;
//! requests reach them as [`Job`]s from the worker's tokio thread, and the answer goes back as
//! a [`reply::Reply`] whose body is either whole or streamed.

pub mod environ;
pub mod input;
pub mod reply;
pub mod response;
pub mod streams;

use http::request::Parts;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use tokio::sync::oneshot;

use crate::python::{describe, App};
use environ::Peer;
use input::{Input, Source};
use reply::Reply;
use response::{Responder, StartResponse};

/// Facts about the worker that the environ reports.
pub struct Static {
    pub multithread: bool,
    pub multiprocess: bool,
    pub worker_id: u32,
}

/// One request for a Python thread.
pub struct Job {
    pub parts: Parts,
    pub peer: Peer,
    pub body: Source,
    pub reply: oneshot::Sender<Reply>,
}

/// The threads that run the app.
pub struct Pool {
    jobs: crossbeam_channel::Sender<Job>,
}

struct Shared {
    app: Py<PyAny>,
    template: Py<PyDict>,
    worker_id: u32,
}

impl Pool {
    /// Starts `threads` threads, each calling the app for one job at a time.
    pub fn start(app: &App, statics: Static, threads: usize) -> anyhow::Result<Pool> {
        let shared = Python::attach(|py| -> PyResult<_> {
            Ok(std::sync::Arc::new(Shared {
                app: app.callable.clone_ref(py),
                template: environ::template(py, &statics)?,
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
                    while let Ok(job) = rx.recv() {
                        Python::attach(|py| call(py, &shared, job));
                    }
                })?;
        }
        Ok(Pool { jobs: tx })
    }

    /// Queues a job; it is dropped (and its reply channel with it) only if every thread died.
    pub fn submit(&self, job: Job) {
        let _ = self.jobs.send(job);
    }
}

/// Runs the app for one request and drives its response to the end.
fn call(py: Python<'_>, shared: &Shared, job: Job) {
    let Job {
        parts,
        peer,
        body,
        reply,
    } = job;
    let responder = Responder::new(reply);
    let result = (|| -> PyResult<()> {
        let environ = environ::build(
            py,
            shared.template.bind(py),
            &parts,
            &peer,
            Input::new(body),
        )?;
        let start_response = Bound::new(py, StartResponse::new(responder.clone()))?;
        let iterable = shared.app.bind(py).call1((environ, start_response))?;
        let driven = drive(py, &responder, &iterable);
        // PEP 3333: close() is called whatever happened while iterating.
        let closed = match iterable.getattr(pyo3::intern!(py, "close")) {
            Ok(close) => close.call0().map(drop),
            Err(_) => Ok(()),
        };
        driven.and(closed)
    })();
    if let Err(err) = result {
        tracing::error!(
            worker = shared.worker_id,
            method = %parts.method,
            path = parts.uri.path(),
            "app raised: {}",
            describe(py, &err)
        );
        responder.fail();
    }
}

/// Sends the app's body: a list or tuple goes out whole with a Content-Length; any other
/// iterable is streamed chunk by chunk.
fn drive(py: Python<'_>, responder: &Responder, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
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
                [one] => bytes::Bytes::copy_from_slice(one.as_bytes()),
                many => many
                    .iter()
                    .flat_map(|c| c.as_bytes().iter().copied())
                    .collect(),
            };
            responder.finish_full(body)
        }
        _ => {
            for item in iterable.try_iter()? {
                let item = item?;
                responder.write(py, as_bytes(&item)?.as_bytes())?;
            }
            responder.finish()
        }
    }
}

fn as_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyBytes>> {
    item.cast::<PyBytes>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "the app yielded {}, but a WSGI body is made of bytes",
            item.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}
