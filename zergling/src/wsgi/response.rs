//! `start_response`, the `write()` callable, and the rules of PEP 3333 on when headers go out:
//! not at `start_response`, but with the first non-empty body chunk (or the end of the body), so
//! an app may still call `start_response` again with `exc_info` until then.
//!
//! While the app runs inline on the event loop, `write()` cannot wait for the client: its
//! chunks queue unbounded and go out once the app returns (a legacy `write()` body is held in
//! memory then; iterables still stream with backpressure, from a thread).

use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
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
    stream: Option<Sink>,
    /// The app runs on the event loop: nothing may wait.
    inline: bool,
}

#[derive(Clone)]
enum Sink {
    Bounded(mpsc::Sender<io::Result<Bytes>>),
    Unbounded(mpsc::UnboundedSender<io::Result<Bytes>>),
}

impl Responder {
    /// `inline`: the app is called on the event-loop thread.
    pub fn new(reply: oneshot::Sender<Reply>, inline: bool) -> Arc<Responder> {
        Arc::new(Responder {
            state: Mutex::new(State {
                head: None,
                reply: Some(reply),
                stream: None,
                inline,
            }),
        })
    }

    /// The rest of the response is produced on a Python thread, which may wait for the client.
    pub fn leave_inline(&self) {
        self.lock().inline = false;
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
            let broken = Err(io::Error::other("the app failed mid-response"));
            let _ = match stream {
                Sink::Bounded(tx) => tx.try_send(broken).is_ok(),
                Sink::Unbounded(tx) => tx.send(broken).is_ok(),
            };
        }
    }

    /// Sends one body chunk (the head first if needed), waiting with the GIL released while
    /// the client is slow.
    pub fn write(&self, py: Python<'_>, chunk: &[u8]) -> PyResult<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let data = Bytes::copy_from_slice(chunk);
        let sent = match self.stream_sender()? {
            Sink::Bounded(tx) => py.detach(|| tx.blocking_send(Ok(data))).is_ok(),
            Sink::Unbounded(tx) => tx.send(Ok(data)).is_ok(),
        };
        if sent {
            Ok(())
        } else {
            Err(PyOSError::new_err("client disconnected"))
        }
    }

    /// The body channel, sending the head as a streaming response first if it has not gone.
    fn stream_sender(&self) -> PyResult<Sink> {
        let mut st = self.lock();
        if let Some(tx) = &st.stream {
            return Ok(tx.clone());
        }
        if st.reply.is_none() {
            return Err(PyOSError::new_err("the response is already complete"));
        }
        let (status, reason, headers) = st.head.take().ok_or_else(no_start_response)?;
        let (sink, body) = if st.inline {
            let (tx, rx) = mpsc::unbounded_channel();
            (Sink::Unbounded(tx), ResponseBody::Unbounded(rx))
        } else {
            let (tx, rx) = mpsc::channel(STREAM_DEPTH);
            (Sink::Bounded(tx), ResponseBody::Stream(rx))
        };
        if let Some(reply) = st.reply.take() {
            let _ = reply.send(Reply {
                status,
                reason,
                headers,
                body,
            });
        }
        st.stream = Some(sink.clone());
        Ok(sink)
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
        headers: &Bound<'_, PyAny>,
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

/// Validates `"200 OK"` and the header list (of `(name, value)` tuples of latin-1 strings).
fn parse_head(status: &str, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
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
    // PEP 3333 says a list; other sequences of pairs are taken too, as most servers do.
    let items: Vec<Bound<'_, PyAny>> = match headers.cast::<PyList>() {
        Ok(list) => list.iter().collect(),
        Err(_) => headers
            .try_iter()
            .and_then(|it| it.collect())
            .map_err(|_| {
                PyTypeError::new_err(
                    "start_response: headers must be a list of (name, value) tuples",
                )
            })?,
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "start_response: each header must be a (name, value) tuple, not {item}"
                ))
            })?;
        let name_obj = pair.get_item(0)?;
        let value_obj = pair.get_item(1)?;
        let name = as_str(&name_obj, "header name")?;
        let value = as_str(&value_obj, "header value")?;
        let hn = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("bad header name {name:?}")))?;
        if hn == http::header::TRANSFER_ENCODING {
            // Hop-by-hop: the server frames the body itself.
            continue;
        }
        let bad = || PyValueError::new_err(format!("bad value for header {name}: {value:?}"));
        let hv = if value.is_ascii() {
            HeaderValue::from_str(value).map_err(|_| bad())?
        } else {
            HeaderValue::from_bytes(&latin1(value)?).map_err(|_| bad())?
        };
        out.push((hn, hv));
    }
    Ok((status_code, reason, out))
}

fn as_str<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a str> {
    obj.cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("start_response: {what} {obj} is not a str")))?
        .to_str()
}

fn latin1(s: &str) -> PyResult<Vec<u8>> {
    s.chars()
        .map(|c| u8::try_from(c as u32))
        .collect::<Result<_, _>>()
        .map_err(|_| PyValueError::new_err(format!("header value {s:?} is not latin-1")))
}
