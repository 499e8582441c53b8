//! A mule: a process with no web stack that runs Python code, typically a job handler looping
//! on `uwsgi.farm_get_msg()`.
//!
//! Stopping: SIGTERM and SIGINT are blocked and read through a signalfd, so a stop never
//! interrupts the message in hand: the next `farm_get_msg`/`mule_get_msg` raises SystemExit
//! instead of returning a message, and the script ends. The master kills a mule that does not
//! end within the mercy.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::uwsgi_api;

/// Runs mule `id` with `entry` (a `.py` path or `pkg.mod:callable`); returns the exit code.
pub fn run(id: u32, entry: &str) -> i32 {
    let _span = tracing::info_span!("mule", id).entered();
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None) {
        tracing::error!(error = %e, "cannot block signals");
        return 1;
    }
    let stop = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the stop signalfd");
            return 1;
        }
    };
    uwsgi_api::set_mule(id, std::os::fd::AsFd::as_fd(&stop));
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
    tracing::info!(code, "mule exits");
    drop(stop);
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
