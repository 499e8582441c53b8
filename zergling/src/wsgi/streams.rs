//! `wsgi.errors` and `wsgi.file_wrapper`.

use std::io::Write as _;

use pyo3::prelude::*;

/// `wsgi.errors`: text written here goes to the server's stderr, i.e. its log.
#[pyclass(module = "zerg")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, s: &str) -> usize {
        let _ = std::io::stderr().write_all(s.as_bytes());
        s.len()
    }

    fn writelines(&self, lines: Vec<String>) {
        let mut err = std::io::stderr().lock();
        for line in lines {
            let _ = err.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// `wsgi.file_wrapper(filelike, blksize=8192)`: iterates a file in blocks (PEP 3333).
#[pyclass(module = "zerg")]
pub struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok((data.len()? > 0).then_some(data))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}
