//! Awaitables that complete without suspending: what `receive()` and `send()` return when
//! they need not wait. `await` on one runs its `__next__` once, which returns the value at
//! once (as `StopIteration`); the coroutine goes on in the same step of its task, with no
//! future made, no callback scheduled and no turn of the loop. Only a call that must wait
//! returns an asyncio future, resolved when the loop is woken for it (see `inbox`).

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

/// Completes at once with a value (a `receive()` message).
#[pyclass(module = "zerg")]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

impl Ready {
    pub fn with<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        Ok(Bound::new(
            py,
            Ready {
                value: Some(value.unbind()),
            },
        )?
        .into_any())
    }
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<()> {
        // The value returned by `await` is the StopIteration's.
        let value = self.value.take().unwrap_or_else(|| py.None());
        Err(PyStopIteration::new_err((value,)))
    }

    fn send(&mut self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.__next__(py)
    }
}

/// Completes at once with `None` (a `send()` that took its message): one object, made once
/// per worker, serves every such call.
#[pyclass(module = "zerg", frozen)]
pub struct Done;

#[pymethods]
impl Done {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self) -> PyResult<()> {
        Err(PyStopIteration::new_err(()))
    }

    fn send(&self, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.__next__()
    }
}
