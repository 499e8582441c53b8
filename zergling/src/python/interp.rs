//! Starting the embedded CPython interpreter, once, in the master before any fork.
//!
//! With a `virtualenv`, the interpreter is configured as if it were that venv's `bin/python`
//! (PyConfig.executable), so CPython's own path logic reads `pyvenv.cfg` and finds both the base
//! stdlib and the venv's site-packages. (uWSGI sets PYTHONHOME to the venv instead, which breaks
//! with venvs that hold no stdlib: the well-known "No module named 'encodings'".)
//!
//! Invariant: after [`start`] returns, the interpreter is initialized, Python's own signal
//! handlers are not installed (the master owns signals), and the calling thread has released
//! the GIL, so `Python::attach` works from any thread.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use pyo3::ffi;

/// Initializes the interpreter; `virtualenv` picks the venv whose interpreter to emulate.
pub fn start(virtualenv: Option<&Path>) -> Result<(), String> {
    let Some(venv) = virtualenv else {
        pyo3::Python::initialize();
        return Ok(());
    };
    let python = venv.join("bin").join("python");
    if !python.exists() {
        return Err(format!(
            "virtualenv {}: no bin/python inside; is it a virtualenv?",
            venv.display()
        ));
    }
    let executable = CString::new(python.as_os_str().as_bytes())
        .map_err(|_| "virtualenv path contains a NUL byte".to_string())?;
    let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
    // SAFETY: PyConfig_InitPythonConfig fully initializes the struct before we read it; every
    // later call gets a pointer to that initialized struct, which lives until PyConfig_Clear.
    // No other thread exists, and the interpreter is not initialized yet (checked first).
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Err("the interpreter is already initialized".into());
        }
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let config_ptr = config.as_mut_ptr();
        (*config_ptr).install_signal_handlers = 0;
        // Do not parse the zergling's command line as Python's.
        (*config_ptr).parse_argv = 0;
        let status = ffi::PyConfig_SetBytesString(
            config_ptr,
            &mut (*config_ptr).executable,
            executable.as_ptr(),
        );
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(config_ptr);
            return Err(format!(
                "cannot configure the interpreter for {}",
                python.display()
            ));
        }
        let status = ffi::Py_InitializeFromConfig(config_ptr);
        ffi::PyConfig_Clear(config_ptr);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(format!(
                "cannot start Python for virtualenv {}",
                venv.display()
            ));
        }
        // Release the GIL that initialization left held, as pyo3's own initialize does.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}
