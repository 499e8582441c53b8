//! The app's Python side: start the interpreter and set up `sys.path` in the master, and
//! import the WSGI or ASGI callable, once in the master (workers then share it copy-on-write;
//! an ASGI app's event loop and lifespan start in each worker, after the fork) or, under
//! `lazy-apps`, in each worker after its fork.

pub mod fast_paths;
mod interp;

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};
use zerg::config::{Config, EventLoop, Interface};

/// The imported app: a WSGI callable, or an ASGI one.
pub struct App {
    pub callable: Py<PyAny>,
}

/// Starts Python and imports the app named by the config. The error is one line for the
/// operator plus the traceback, if Python raised.
pub fn load(config: &Config) -> Result<App, String> {
    start(config)?;
    import(config)
}

/// Starts Python and sets up `sys.path`, without importing the app: the master's part under
/// `lazy-apps`, where each worker then calls [`import`] after its fork.
pub fn start(config: &Config) -> Result<(), String> {
    interp::start(config.virtualenv.as_deref())?;
    Python::attach(|py| set_path(py, config).map_err(|e| describe(py, &e)))
}

/// Imports the app named by the config in an interpreter [`start`] started (in this process
/// or, before a fork, in the master).
pub fn import(config: &Config) -> Result<App, String> {
    Python::attach(|py| import_app(py, config).map_err(|e| describe(py, &e)))
}

/// Like uWSGI: the working directory (after chdir) first, then each pythonpath entry.
fn set_path(py: Python<'_>, config: &Config) -> PyResult<()> {
    let path = py.import("sys")?.getattr("path")?.cast_into::<PyList>()?;
    let mut front: Vec<String> = vec![std::env::current_dir()?.display().to_string()];
    front.extend(config.pythonpath.iter().map(absolute));
    for (i, dir) in front.iter().enumerate() {
        path.insert(i, dir)?;
    }
    Ok(())
}

fn import_app(py: Python<'_>, config: &Config) -> PyResult<App> {
    let callable = if let Some(file) = &config.wsgi_file {
        load_wsgi_file(py, file, &config.callable)?
    } else {
        let spec = config.module.as_deref().unwrap_or_default();
        load_module(py, spec, &config.callable)?
    };
    let interface = match config.interface {
        Interface::Wsgi => "WSGI",
        Interface::Asgi => "ASGI",
    };
    if !callable.bind(py).is_callable() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "the {interface} app is not callable"
        )));
    }
    if config.interface == Interface::Asgi {
        import_event_loop(py, config.event_loop)?;
    }
    Ok(App { callable })
}

/// Imports what an ASGI worker's loop needs, here in the master's main thread, before any
/// fork: workers share it, and `threading` learns which thread is the main one. Were it first
/// imported on a worker's loop thread, `threading.main_thread()` would be that thread, and
/// uvloop would take it for the main one and fail to set up signals there. A missing uvloop
/// with `loop: uvloop` fails the generation with one line, not each worker. The loops
/// themselves are made in the workers, after the fork.
fn import_event_loop(py: Python<'_>, event_loop: EventLoop) -> PyResult<()> {
    py.import("threading")?;
    py.import("asyncio")?;
    match event_loop {
        EventLoop::Asyncio => {}
        EventLoop::Auto => {
            if let Err(e) = py.import("uvloop") {
                if !e.is_instance_of::<pyo3::exceptions::PyImportError>(py) {
                    return Err(e);
                }
            }
        }
        EventLoop::Uvloop => {
            py.import("uvloop").map_err(|e| {
                pyo3::exceptions::PyImportError::new_err(format!(
                    "`loop: uvloop`, but uvloop cannot be imported ({e}): pip install uvloop, \
                     or use `loop: auto`"
                ))
            })?;
        }
    }
    Ok(())
}

fn absolute(p: &str) -> String {
    std::path::absolute(p)
        .map(|a| a.display().to_string())
        .unwrap_or_else(|_| p.to_owned())
}

/// `wsgi-file`: executes the file as a module (its directory joins `sys.path`).
fn load_wsgi_file(py: Python<'_>, file: &Path, callable: &str) -> PyResult<Py<PyAny>> {
    let file = std::path::absolute(file)?;
    if let Some(dir) = file.parent() {
        py.import("sys")?
            .getattr("path")?
            .call_method1("insert", (0, dir.display().to_string()))?;
    }
    let util = py.import("importlib.util")?;
    let spec = util.call_method1(
        "spec_from_file_location",
        ("zerg_wsgi_file", file.display().to_string()),
    )?;
    if spec.is_none() {
        return Err(pyo3::exceptions::PyImportError::new_err(format!(
            "cannot load wsgi-file {}",
            file.display()
        )));
    }
    let module = util.call_method1("module_from_spec", (&spec,))?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("zerg_wsgi_file", &module)?;
    spec.getattr("loader")?
        .call_method1("exec_module", (&module,))?;
    Ok(module.getattr(callable)?.unbind())
}

/// `module: pkg.mod:callable`, `pkg.mod` (then `callable`), or `pkg.mod:factory()`.
fn load_module(py: Python<'_>, spec: &str, default_callable: &str) -> PyResult<Py<PyAny>> {
    let (module_name, attr) = spec.split_once(':').unwrap_or((spec, default_callable));
    let module = PyModule::import(py, module_name)?;
    let (name, call) = match attr.strip_suffix("()") {
        Some(factory) => (factory, true),
        None => (attr, false),
    };
    let mut obj = module.as_any().clone();
    for part in name.split('.') {
        obj = obj.getattr(part)?;
    }
    if call {
        obj = obj.call0()?;
    }
    Ok(obj.unbind())
}

/// One line naming the exception, then its traceback.
pub fn describe(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| tb.call_method1("format_exception", (err.clone_ref(py),)))
        .and_then(|lines| lines.extract::<Vec<String>>());
    match formatted {
        Ok(lines) => format!("{}\n{}", err, lines.concat().trim_end()),
        Err(_) => err.to_string(),
    }
}

/// The Python threads running beside the calling one, by name: in the master after the
/// import, threads the app started while it was built, which no forked worker or mule has.
pub fn other_threads() -> Vec<String> {
    Python::attach(|py| -> PyResult<Vec<String>> {
        // Counts threads started through `threading` and `_thread` alike.
        let count: usize = py.import("_thread")?.call_method0("_count")?.extract()?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        let modules = py.import("sys")?.getattr("modules")?;
        if let Ok(threading) = modules.get_item("threading") {
            let main = threading.call_method0("main_thread")?;
            for thread in threading.call_method0("enumerate")?.try_iter()? {
                let thread = thread?;
                if !thread.is(&main) {
                    names.push(thread.getattr("name")?.extract::<String>()?);
                }
            }
        }
        if names.len() < count {
            names.push(format!("{} more", count - names.len()));
        }
        Ok(names)
    })
    .unwrap_or_default()
}

/// Sets (or, for `None`, removes) each variable through `os.environ`, which changes the
/// process environment too (putenv), so that both the Python code and what it starts see
/// it. The interpreter was started in the master, so `os.environ` was read before the fork:
/// the process environment alone would not reach it.
pub fn set_environ(py: Python<'_>, vars: &[(String, Option<String>)]) -> PyResult<()> {
    let environ = py.import("os")?.getattr("environ")?;
    for (name, value) in vars {
        match value {
            Some(value) => environ.set_item(name, value)?,
            None => {
                environ.call_method1("pop", (name, py.None()))?;
            }
        }
    }
    Ok(())
}

/// In a worker or mule, after its fork: `sig` makes Python write the stack of every thread to
/// stderr, the log (`faulthandler`, which does it from the signal handler itself, so a thread
/// stuck in a C call such as `time.sleep` is shown too). The master sends it before a
/// harakiri kill.
pub fn dump_stacks_on(sig: nix::sys::signal::Signal) {
    let registered = Python::attach(|py| -> PyResult<()> {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("all_threads", true)?;
        py.import("faulthandler")?
            .getattr("register")?
            .call((sig as i32,), Some(&kwargs))?;
        Ok(())
    });
    if let Err(e) = registered {
        let why = Python::attach(|py| describe(py, &e));
        tracing::warn!(signal = sig.as_str(), "no Python stacks on harakiri: {why}");
    }
}
