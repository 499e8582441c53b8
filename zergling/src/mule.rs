//! A mule: a process with no web stack that runs Python code, typically a job handler looping
//! on `uwsgi.farm_get_msg()`, or a program with a command line of its own (Galaxy 26's
//! `galaxy-main --server-name handler_1 --attach-to-pool job-handlers`). Its `env` and
//! `sys.argv` are set before any of its Python code runs, and its code runs on the process's
//! main thread, so the signal handlers it installs are the ones that run.
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

use zerg::mule_entry::{MuleEntry, Program};

use crate::scoreboard::Scoreboard;
use crate::uwsgi_api;

/// The two ends of a mule's stop pipe as the mule holds them.
pub struct StopPipe {
    /// Readable once the mule is asked to stop (never read: it stays readable).
    pub read: OwnedFd,
    /// For the mule's own signal handlers.
    pub write: OwnedFd,
}

/// Runs mule `id` (its position) with `entry`; returns the exit code.
pub fn run(id: u32, entry: &MuleEntry, stop: StopPipe, board: Scoreboard) -> i32 {
    let _span = tracing::info_span!("mule", id).entered();
    // Open for the mule's whole life: signal handlers and `uwsgi_api` write it at any time.
    let wake = std::os::fd::IntoRawFd::into_raw_fd(stop.write);
    if let Err(e) = crate::signals::mule_stop_on_signals(wake) {
        tracing::error!(error = %e, "cannot install the stop signal handlers");
        return 1;
    }
    let lane = board.lane(board.mule_slot(id), std::process::id());
    uwsgi_api::set_mule(id, std::os::fd::AsFd::as_fd(&stop.read), wake, lane);
    crate::python::dump_stacks_on(crate::signals::DUMP_STACKS);
    let args = entry.args_for(id);
    // Before any of the mule's Python code, the post-fork hook included, runs.
    if let Err(e) = Python::attach(|py| {
        crate::python::set_environ(py, &entry.env_for(id))?;
        set_argv(py, &entry.program, &args)
    }) {
        let why = Python::attach(|py| crate::python::describe(py, &e));
        tracing::error!("cannot set up the mule's environment: {why}");
        return 1;
    }
    uwsgi_api::requeue_in_hand();
    uwsgi_api::run_post_fork_hook();
    tracing::info!(program = %entry.program, ?args, "mule running");
    let code = Python::attach(|py| match run_program(py, &entry.program) {
        Ok(()) => 0,
        Err(e) if e.is_instance_of::<pyo3::exceptions::PySystemExit>(py) => {
            let code = e.value(py).getattr("code").ok();
            match code {
                Some(c) if c.is_none() => 0,
                Some(c) => c.extract::<i32>().unwrap_or_else(|_| {
                    tracing::error!("mule exits: {c}");
                    1
                }),
                None => 0,
            }
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

/// `sys.argv` as the program would see it started from a shell: its name, then `args`.
fn set_argv(py: Python<'_>, program: &Program, args: &[String]) -> PyResult<()> {
    let first = match program {
        Program::File(path) => absolute(path)?,
        Program::Module(module) => module.clone(),
        Program::Callable { module, .. } => module.clone(),
        Program::Script(name) => name.clone(),
    };
    let argv: Vec<&str> = std::iter::once(first.as_str())
        .chain(args.iter().map(String::as_str))
        .collect();
    py.import("sys")?.setattr("argv", argv)
}

fn run_program(py: Python<'_>, program: &Program) -> PyResult<()> {
    let runpy = || py.import("runpy");
    let as_main = || -> PyResult<Bound<'_, PyDict>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("run_name", "__main__")?;
        Ok(kwargs)
    };
    match program {
        Program::File(path) => {
            runpy()?.call_method("run_path", (absolute(path)?,), Some(&as_main()?))?;
        }
        Program::Module(module) => {
            // As `python -m`: sys.argv[0] becomes the module's file.
            let kwargs = as_main()?;
            kwargs.set_item("alter_sys", true)?;
            runpy()?.call_method("run_module", (module,), Some(&kwargs))?;
        }
        Program::Callable { module, callable } => {
            let mut obj = py.import(module.as_str())?.into_any();
            for part in callable.split('.') {
                obj = obj.getattr(part)?;
            }
            exit_with(py, obj.call0()?)?;
        }
        Program::Script(name) => {
            // What the script's wrapper in bin/ would do: load its entry point and call it.
            let kwargs = PyDict::new(py);
            kwargs.set_item("group", "console_scripts")?;
            kwargs.set_item("name", name)?;
            let found: Vec<Bound<'_, PyAny>> = py
                .import("importlib.metadata")?
                .call_method("entry_points", (), Some(&kwargs))?
                .try_iter()?
                .collect::<PyResult<_>>()?;
            let Some(entry_point) = found.first() else {
                return Err(pyo3::exceptions::PyLookupError::new_err(format!(
                    "no console script `{name}` is installed in the app's environment"
                )));
            };
            exit_with(py, entry_point.call_method0("load")?.call0()?)?;
        }
    }
    Ok(())
}

/// What a console script's wrapper does with its entry point's result: `sys.exit(result)`.
fn exit_with(py: Python<'_>, result: Bound<'_, PyAny>) -> PyResult<()> {
    if result.is_none() {
        return Ok(());
    }
    Err(PyErr::from_value(
        py.import("builtins")?
            .getattr("SystemExit")?
            .call1((result,))?,
    ))
}

fn absolute(path: &str) -> PyResult<String> {
    Ok(std::path::absolute(path)?.display().to_string())
}
