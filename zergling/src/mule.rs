//! A mule: a process with no web stack that runs Python code, typically a job handler looping
//! on `uwsgi.farm_get_msg()`.
//!
//! Stopping, as uWSGI stops a mule: its master writes to the mule's stop pipe and sends it
//! SIGHUP. A mule script that handles SIGHUP itself (Galaxy's handles SIGHUP, SIGTERM and
//! SIGINT, and sends itself `__SHUTDOWN__` so that its dispatcher thread returns) stops its own
//! way; one that does not gets zerg's handler, which only wakes the pipe. Either way the
//! message in hand is finished first, the next `farm_get_msg`/`mule_get_msg` raises SystemExit,
//! and what a stopping mule sends goes back to itself only (see `uwsgi_api`), never to a mule
//! of the next generation. The master kills a mule that does not end within the mercy.

use std::os::fd::OwnedFd;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::uwsgi_api;

/// The two ends of a mule's stop pipe as the mule holds them.
pub struct StopPipe {
    /// Readable once the mule is asked to stop (never read: it stays readable).
    pub read: OwnedFd,
    /// For the mule's own signal handlers.
    pub write: OwnedFd,
}

/// Runs mule `id` with `entry` (a `.py` path or `pkg.mod:callable`); returns the exit code.
pub fn run(id: u32, entry: &str, stop: StopPipe) -> i32 {
    let _span = tracing::info_span!("mule", id).entered();
    // Open for the mule's whole life: signal handlers and `uwsgi_api` write it at any time.
    let wake = std::os::fd::IntoRawFd::into_raw_fd(stop.write);
    if let Err(e) = crate::signals::mule_stop_on_signals(wake) {
        tracing::error!(error = %e, "cannot install the stop signal handlers");
        return 1;
    }
    uwsgi_api::set_mule(id, std::os::fd::AsFd::as_fd(&stop.read), wake);
    uwsgi_api::requeue_in_hand();
    uwsgi_api::run_post_fork_hook();
    tracing::info!(entry, "mule running");
    let code = Python::attach(|py| match run_entry(py, entry) {
        Ok(()) => 0,
        Err(e) if e.is_instance_of::<pyo3::exceptions::PySystemExit>(py) => {
            let code = e
                .value(py)
                .getattr("code")
                .ok()
                .and_then(|c| c.extract::<i32>().ok());
            code.unwrap_or(0)
        }
        Err(e) => {
            tracing::error!("mule raised: {}", crate::python::describe(py, &e));
            1
        }
    });
    uwsgi_api::mule_ends();
    tracing::info!(code, "mule exits");
    drop(stop.read);
    code
}

fn run_entry(py: Python<'_>, entry: &str) -> PyResult<()> {
    if entry.ends_with(".py") {
        let path = std::path::absolute(entry)?.display().to_string();
        let kwargs = PyDict::new(py);
        kwargs.set_item("run_name", "__main__")?;
        py.import("runpy")?
            .call_method("run_path", (path,), Some(&kwargs))?;
    } else {
        let (module, func) = entry.split_once(':').unwrap_or((entry, "main"));
        py.import(module)?.getattr(func)?.call0()?;
    }
    Ok(())
}
