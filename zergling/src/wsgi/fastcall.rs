//! `start_response` as a built-in function (`METH_FASTCALL | METH_KEYWORDS`), so that the
//! app's call reaches it by CPython's vectorcall: the arguments arrive as the caller's own
//! array. A `#[pyclass]` with `__call__` is called through `tp_call` instead, which packs
//! them into a tuple for PyO3 to unpack again (PyO3 #4252); that was ~400 of the ~18k
//! instructions of a hello-world request. The function holds its [`StartResponse`] as
//! `__self__`, as a bound method would. Its strings (the status, the header names and values)
//! are read in place when they are compact ASCII, as nearly all are ([`text`]).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use super::response::StartResponse;
use super::type_name;

/// The names of `start_response`'s parameters, in order (PEP 3333).
const PARAMS: [&str; 3] = ["status", "headers", "exc_info"];

struct MethodDef(ffi::PyMethodDef);

// SAFETY: the definition is never written (CPython only reads it) and points only at
// 'static C strings and a function.
unsafe impl Sync for MethodDef {}

static START_RESPONSE: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"start_response".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: start_response,
    },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: c"start_response(status, headers, exc_info=None)\n--\n\nPEP 3333's start_response."
        .as_ptr(),
});

/// The `start_response` function of `target`.
pub fn new<'py>(target: &Bound<'py, StartResponse>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the definition is 'static and CPython never writes through the pointer (the
    // C API merely lacks `const`); `target` is alive, and the new function takes a reference
    // of its own to it. The result is a new reference or NULL with an exception set.
    unsafe {
        let function = ffi::PyCFunction_NewEx(
            ptr::addr_of!(START_RESPONSE.0).cast_mut(),
            target.as_ptr(),
            ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(target.py(), function)
    }
}

/// Whether something holds a weak reference to `function` (made by [`new`]): a reference the
/// reference count does not show.
pub fn weakly_referenced(function: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `function` is a live built-in function object made by `new` (its layout is
    // `PyCFunctionObject`), read with the GIL held.
    unsafe {
        let f = function.as_ptr().cast::<ffi::PyCFunctionObject>();
        !(*f).m_weakreflist.is_null()
    }
}

/// The function's C entry point: `slf` is the [`StartResponse`], `args` holds `nargs`
/// positional arguments followed by one value per name in the `kwnames` tuple (or NULL).
unsafe extern "C" fn start_response(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // CPython calls a function only from a thread attached to the interpreter; `attach`
    // tells PyO3 so (a thread-local count), even on a thread the app started itself.
    Python::attach(|py| {
        let called = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the arguments are the vectorcall's, passed on unchanged.
            unsafe { call(py, slf, args, nargs, kwnames) }
        }));
        let err = match called {
            Ok(Ok(write)) => return write,
            Ok(Err(err)) => err,
            Err(panic) => PanicException::new_err(panic_message(&*panic)),
        };
        err.restore(py);
        ptr::null_mut()
    })
}

/// The call itself; returns the new reference to `write()`.
///
/// # Safety
/// The arguments are those CPython passed to [`start_response`].
unsafe fn call(
    py: Python<'_>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: `slf` is the `__self__` that `new` gave the function, a live `StartResponse`
    // (the function holds a reference to it).
    let target = unsafe { Bound::ref_from_ptr(py, &slf).cast_unchecked::<StartResponse>() };
    // SAFETY: the vectorcall convention: `kwnames` is NULL or a tuple of str, and `args`
    // points at `nargs` + len(kwnames) live references, borrowed for the call.
    let (given, kwnames) = unsafe {
        let kwnames = (!kwnames.is_null())
            .then(|| Bound::ref_from_ptr(py, &kwnames).cast_unchecked::<PyTuple>());
        let total = nargs as usize + kwnames.map_or(0, |k| k.len());
        let given = if total == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(args, total)
        };
        (given, kwnames)
    };
    let [status, headers, exc_info] = arguments(py, given, nargs as usize, kwnames)?;
    let (Some(status), Some(headers)) = (status, headers) else {
        return Err(missing(status.is_none(), headers.is_none()));
    };
    let status = status.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "start_response: status must be a str such as \"200 OK\", not {}",
            type_name(status)
        ))
    })?;
    let write = target.get().start(py, text(status)?, headers, exc_info)?;
    Ok(write.into_ptr())
}

/// Sorts the call's arguments into [`PARAMS`]' slots, refusing what Python would refuse.
fn arguments<'a, 'py>(
    py: Python<'py>,
    given: &'a [*mut ffi::PyObject],
    nargs: usize,
    kwnames: Option<&Bound<'py, PyTuple>>,
) -> PyResult<[Option<&'a Bound<'py, PyAny>>; 3]> {
    if nargs > PARAMS.len() {
        return Err(PyTypeError::new_err(format!(
            "start_response() takes from 2 to 3 positional arguments but {nargs} were given"
        )));
    }
    // SAFETY (for both borrows below): each pointer is a live reference the caller lends
    // for the whole call, which outlives 'a.
    let mut slots: [Option<&'a Bound<'py, PyAny>>; 3] = [None; 3];
    for (slot, value) in slots.iter_mut().zip(&given[..nargs]) {
        *slot = Some(unsafe { Bound::ref_from_ptr(py, value) });
    }
    let Some(kwnames) = kwnames else {
        return Ok(slots);
    };
    for (name, value) in kwnames.iter().zip(&given[nargs..]) {
        let name = name.cast::<PyString>()?;
        let name = name.to_str()?;
        let index = PARAMS.iter().position(|p| *p == name).ok_or_else(|| {
            PyTypeError::new_err(format!(
                "start_response() got an unexpected keyword argument '{name}'"
            ))
        })?;
        if slots[index].is_some() {
            return Err(PyTypeError::new_err(format!(
                "start_response() got multiple values for argument '{name}'"
            )));
        }
        slots[index] = Some(unsafe { Bound::ref_from_ptr(py, value) });
    }
    Ok(slots)
}

/// Python's complaint about missing required arguments.
fn missing(status: bool, headers: bool) -> PyErr {
    PyTypeError::new_err(match (status, headers) {
        (true, true) => {
            "start_response() missing 2 required positional arguments: 'status' and 'headers'"
        }
        (true, false) => "start_response() missing 1 required positional argument: 'status'",
        _ => "start_response() missing 1 required positional argument: 'headers'",
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "start_response panicked".to_owned())
}

/// The text of a str. A compact ASCII str (what nearly every status and header is) is read
/// in place; any other goes through `PyUnicode_AsUTF8AndSize`, a call and its checks, ~60
/// instructions more a string.
pub(super) fn text<'a>(s: &'a Bound<'_, PyString>) -> PyResult<&'a str> {
    match in_place::ascii(s) {
        Some(text) => Ok(text),
        None => s.to_str(),
    }
}

/// The text of a compact ASCII str, read in place; `None` for any other str, wherever the
/// layout is not known, and under `ZERG_FORCE_FALLBACKS` (see `python::fast_paths`).
pub(super) fn ascii<'a>(s: &'a Bound<'_, PyString>) -> Option<&'a str> {
    in_place::ascii(s)
}

/// Where a str's layout is known: CPython up to 3.13 (3.14 no longer exposes it), not the
/// limited API, on a little-endian machine (the bit field's place in its word).
#[cfg(all(
    target_endian = "little",
    not(any(Py_LIMITED_API, PyPy, GraalPy, Py_3_14))
))]
mod in_place {
    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::PyString;

    /// Whether strs are read in place here (for the test).
    #[cfg(test)]
    pub const AVAILABLE: bool = true;

    /// `compact` and `ascii` in a str's `state` bit field (`interned:2`, `kind:3`,
    /// `compact:1`, `ascii:1`, ..., as pyo3-ffi's accessors read it). Tested as one mask:
    /// pyo3-ffi's accessors take a bindgen bit loop each, ~60 instructions a string.
    const COMPACT_ASCII: u32 = 0b11 << 5;

    pub fn ascii<'a>(s: &'a Bound<'_, PyString>) -> Option<&'a str> {
        if !crate::python::fast_paths::allowed() {
            return None;
        }
        let op = s.as_ptr().cast::<ffi::PyASCIIObject>();
        // SAFETY: `op` is a live str object (the Bound says so) that outlives 'a (borrowed
        // from `s`). Its state says whether it is compact ASCII: then, as CPython's own
        // macros read it, its `length` bytes of ASCII follow its header and never change
        // while it lives. A str subclass or a legacy string is not compact and takes the call.
        unsafe {
            if (*op).state & COMPACT_ASCII != COMPACT_ASCII {
                return None;
            }
            let len = usize::try_from((*op).length).ok()?;
            let data = op.add(1).cast::<u8>();
            Some(std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                data, len,
            )))
        }
    }
}

/// Elsewhere every str takes the call.
#[cfg(not(all(
    target_endian = "little",
    not(any(Py_LIMITED_API, PyPy, GraalPy, Py_3_14))
)))]
mod in_place {
    use pyo3::prelude::*;
    use pyo3::types::PyString;

    #[cfg(test)]
    pub const AVAILABLE: bool = false;

    pub fn ascii<'a>(_: &'a Bound<'_, PyString>) -> Option<&'a str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reads_every_kind_of_str() {
        Python::initialize();
        Python::attach(|py| {
            let locals = pyo3::types::PyDict::new(py);
            py.run(
                c"class S(str): pass\nsub = S('text/plain')\nbuilt = ''.join(['20', '0 OK'])",
                None,
                Some(&locals),
            )
            .unwrap();
            let get = |name: &str| locals.get_item(name).unwrap().unwrap();
            let sub = get("sub");
            let built = get("built");
            // Each with its text, and whether it is compact ASCII.
            let cases = [
                (PyString::new(py, "200 OK"), "200 OK", true),
                (PyString::new(py, ""), "", true),
                (PyString::new(py, "caf\u{e9}"), "caf\u{e9}", false),
                (PyString::new(py, "\u{2603}"), "\u{2603}", false),
                (sub.cast::<PyString>().unwrap().clone(), "text/plain", false),
                (built.cast::<PyString>().unwrap().clone(), "200 OK", true),
            ];
            for (s, want, compact_ascii) in &cases {
                assert_eq!(text(s).unwrap(), *want);
                let read_in_place = in_place::ascii(s).is_some();
                let fast = in_place::AVAILABLE && crate::python::fast_paths::allowed();
                assert_eq!(read_in_place, fast && *compact_ascii, "{s}");
            }
        });
    }
}
