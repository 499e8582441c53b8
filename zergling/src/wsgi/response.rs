//! `start_response`, the `write()` callable, and the rules of PEP 3333 on when headers go out:
//! not at `start_response`, but with the first non-empty body chunk (or the end of the body), so
//! an app may still call `start_response` again with `exc_info` until then.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use tokio::sync::{mpsc, oneshot};

use super::reply::{Reply, ResponseBody, STREAM_DEPTH};

type Head = (StatusCode, Option<String>, Vec<(HeaderName, HeaderValue)>);

/// The response of one request, shared by `start_response`, `write()` and the call driver.
pub struct Responder {
    state: Mutex<State>,
}

struct State {
    /// Set by `start_response`, not sent yet.
    head: Option<Head>,
    /// Where the head goes; `None` once sent.
    reply: Option<oneshot::Sender<Reply>>,
    /// The body stream, once the head went out as streaming.
    stream: Option<mpsc::Sender<io::Result<Bytes>>>,
}

impl Responder {
    pub fn new(reply: oneshot::Sender<Reply>) -> Arc<Responder> {
        Arc::new(Responder {
            state: Mutex::new(State {
                head: None,
                reply: Some(reply),
                stream: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn headers_sent(&self) -> bool {
        self.lock().reply.is_none()
    }

    /// Sends the head with a whole body (Content-Length known). Only while the head is unsent.
    pub fn finish_full(&self, body: Bytes) -> PyResult<()> {
        let mut st = self.lock();
        let (status, reason, headers) = st.head.take().ok_or_else(no_start_response)?;
        if let Some(reply) = st.reply.take() {
            let _ = reply.send(Reply {
                status,
                reason,
                headers,
                body: ResponseBody::Full(Some(body)),
            });
        }
        Ok(())
    }

    /// Ends the body: sends the head with an empty body if nothing went out yet, and closes
    /// the stream otherwise.
    pub fn finish(&self) -> PyResult<()> {
        if !self.headers_sent() {
            return self.finish_full(Bytes::new());
        }
        self.lock().stream = None;
        Ok(())
    }

    /// The app failed: a 500 if the head is still ours, else abort the stream so the client
    /// sees a truncated response rather than a complete-looking one.
    pub fn fail(&self) {
        let mut st = self.lock();
        if let Some(reply) = st.reply.take() {
            let _ = reply.send(Reply::error(StatusCode::INTERNAL_SERVER_ERROR));
        } else if let Some(stream) = st.stream.take() {
            let _ = stream.try_send(Err(io::Error::other("the app failed mid-response")));
        }
    }

    /// Sends one body chunk (the head first if needed), waiting with the GIL released while
    /// the client is slow.
    pub fn write(&self, py: Python<'_>, chunk: &[u8]) -> PyResult<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let data = Bytes::copy_from_slice(chunk);
        let tx = self.stream_sender()?;
        py.detach(|| tx.blocking_send(Ok(data)))
            .map_err(|_| PyOSError::new_err("client disconnected"))
    }

    /// The body channel, sending the head as a streaming response first if it has not gone.
    fn stream_sender(&self) -> PyResult<mpsc::Sender<io::Result<Bytes>>> {
        let mut st = self.lock();
        if let Some(tx) = &st.stream {
            return Ok(tx.clone());
        }
        if st.reply.is_none() {
            return Err(PyOSError::new_err("the response is already complete"));
        }
        let (status, reason, headers) = st.head.take().ok_or_else(no_start_response)?;
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        if let Some(reply) = st.reply.take() {
            let _ = reply.send(Reply {
                status,
                reason,
                headers,
                body: ResponseBody::Stream(rx),
            });
        }
        st.stream = Some(tx.clone());
        Ok(tx)
    }
}

fn no_start_response() -> PyErr {
    PyAssertionError::new_err("the app produced a body without calling start_response")
}

/// The `start_response` callable passed to the app.
#[pyclass(module = "zerg")]
pub struct StartResponse {
    responder: Arc<Responder>,
}

impl StartResponse {
    pub fn new(responder: Arc<Responder>) -> StartResponse {
        StartResponse { responder }
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
        &self,
        status: &str,
        headers: Vec<(String, String)>,
        exc_info: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        let head = parse_head(status, headers)?;
        let mut st = self.responder.lock();
        match exc_info {
            Some(info) if st.reply.is_none() => {
                // PEP 3333: too late to change the status, re-raise the app's error.
                drop(st);
                let info = info.cast_into::<PyTuple>()?;
                return Err(PyErr::from_value(info.get_item(1)?));
            }
            Some(_) => {}
            None if st.head.is_some() => {
                return Err(PyAssertionError::new_err(
                    "start_response called a second time without exc_info",
                ))
            }
            None if st.reply.is_none() => {
                return Err(PyAssertionError::new_err(
                    "start_response called after the headers were sent",
                ))
            }
            None => {}
        }
        st.head = Some(head);
        Ok(Write {
            responder: self.responder.clone(),
        })
    }
}

/// The `write(data)` callable `start_response` returns (for legacy apps).
#[pyclass(module = "zerg")]
pub struct Write {
    responder: Arc<Responder>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        self.responder.write(py, bytes.as_bytes())
    }
}

/// Validates `"200 OK"` and the header list; names and values are latin-1 strings.
fn parse_head(status: &str, headers: Vec<(String, String)>) -> PyResult<Head> {
    let (code, reason) = status.split_once(' ').unwrap_or((status, ""));
    let code: u16 = code
        .parse()
        .ok()
        .filter(|c| (100..1000).contains(c))
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "bad status line {status:?}: expected e.g. \"200 OK\""
            ))
        })?;
    let status_code = StatusCode::from_u16(code)
        .map_err(|_| PyValueError::new_err(format!("bad status code {code}")))?;
    let reason = reason.trim();
    let reason = (!reason.is_empty() && Some(reason) != status_code.canonical_reason())
        .then(|| reason.to_owned());
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let hn = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("bad header name {name:?}")))?;
        if hn == http::header::TRANSFER_ENCODING {
            // Hop-by-hop: the server frames the body itself.
            continue;
        }
        let hv = HeaderValue::from_bytes(&latin1(&value)?).map_err(|_| {
            PyValueError::new_err(format!("bad value for header {name}: {value:?}"))
        })?;
        out.push((hn, hv));
    }
    Ok((status_code, reason, out))
}

fn latin1(s: &str) -> PyResult<Vec<u8>> {
    s.chars()
        .map(|c| u8::try_from(c as u32))
        .collect::<Result<_, _>>()
        .map_err(|_| PyValueError::new_err(format!("header value {s:?} is not latin-1")))
}
