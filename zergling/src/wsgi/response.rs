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

use super::reply::{Chunks, Reply, ResponseBody, STREAM_DEPTH};

/// What `start_response` was given, checked and converted.
struct Head {
    status: StatusCode,
    reason: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The app's `Content-Length`, kept apart: for a whole body hyper writes it from the body's
    /// size (no header value to allocate and copy); a streamed body is framed by it.
    content_length: Option<u64>,
}

impl Head {
    /// The reply with a whole body, whose length hyper writes. The app's Content-Length rules
    /// (PEP 3333): a longer body is cut to it; a shorter one is an error of the app, logged, and
    /// the connection closes after it. An empty answer to HEAD keeps the app's header: it is
    /// the length a GET would have.
    fn full_reply(mut self, mut body: Bytes, head_request: bool) -> Reply {
        crate::wsgi::reply::fit_to_length(
            &mut self.headers,
            &mut self.content_length,
            &mut body,
            head_request,
        );
        self.into_reply(ResponseBody::Full(Some(body)))
    }

    fn into_reply(self, body: ResponseBody) -> Reply {
        let mut headers = self.headers;
        if let Some(n) = self.content_length {
            headers.push((http::header::CONTENT_LENGTH, HeaderValue::from(n)));
        }
        Reply {
            status: self.status,
            reason: self.reason,
            headers,
            body,
        }
    }
}

/// The response of one request, shared by `start_response`, `write()` and the call driver.
pub struct Responder {
    state: Mutex<State>,
}

struct State {
    /// Set by `start_response`, not sent yet.
    head: Option<Head>,
    /// Where the reply goes.
    outlet: Outlet,
    /// The body stream, once the head went out as streaming.
    stream: Option<Sink>,
    /// The app runs on the event loop: nothing may wait.
    inline: bool,
    /// The request is a HEAD.
    head_request: bool,
    /// A body chunk found the connection gone.
    client_gone: bool,
}

enum Outlet {
    /// To the connection's task, waiting on the other end.
    Channel(oneshot::Sender<Reply>),
    /// An inline call: the caller, on this very thread, takes the reply when the app returns.
    Keep(Option<Reply>),
    /// Delivered.
    Sent,
}

#[derive(Clone)]
enum Sink {
    Bounded(mpsc::Sender<io::Result<Bytes>>),
    Unbounded(mpsc::UnboundedSender<io::Result<Bytes>>),
}

/// Where a call runs, which decides where its reply goes.
pub enum Caller {
    /// On a Python thread: the reply goes through the channel.
    Thread(oneshot::Sender<Reply>),
    /// On the event-loop thread: the reply is kept for [`Responder::take_kept`].
    Inline,
}

impl State {
    fn new(caller: Caller, head_request: bool) -> State {
        let (outlet, inline) = match caller {
            Caller::Thread(reply) => (Outlet::Channel(reply), false),
            Caller::Inline => (Outlet::Keep(None), true),
        };
        State {
            head: None,
            outlet,
            stream: None,
            inline,
            head_request,
            client_gone: false,
        }
    }
}

impl Responder {
    /// The reply of an inline call, once it has one. Taken, it counts as sent.
    pub fn take_kept(&self) -> Option<Reply> {
        let mut st = self.lock();
        match std::mem::replace(&mut st.outlet, Outlet::Sent) {
            Outlet::Keep(kept) => kept,
            other => {
                st.outlet = other;
                None
            }
        }
    }

    /// The rest of the response is produced on a Python thread, which may wait for the client:
    /// the reply, unless it went out already (then it is returned), goes through `reply`.
    pub fn leave_inline(&self, reply: oneshot::Sender<Reply>) -> Option<Reply> {
        let mut st = self.lock();
        st.inline = false;
        match std::mem::replace(&mut st.outlet, Outlet::Channel(reply)) {
            Outlet::Keep(None) => None,
            Outlet::Keep(Some(kept)) => {
                st.outlet = Outlet::Sent;
                Some(kept)
            }
            other => {
                st.outlet = other;
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn headers_sent(&self) -> bool {
        self.lock().headers_sent()
    }

    /// The Content-Length of the head `start_response` gave, while that head is unsent.
    pub fn declared_length(&self) -> Option<u64> {
        self.lock().head.as_ref()?.content_length
    }

    /// Sends the head with a whole body (Content-Length known). Only while the head is unsent.
    pub fn finish_full(&self, body: Bytes) -> PyResult<()> {
        let mut st = self.lock();
        let head = st.head.take().ok_or_else(no_start_response)?;
        let head_request = st.head_request;
        st.deliver(head.full_reply(body, head_request));
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
        if !st.headers_sent() {
            st.deliver(Reply::error(StatusCode::INTERNAL_SERVER_ERROR));
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
            self.lock().client_gone = true;
            Err(PyOSError::new_err("client disconnected"))
        }
    }

    /// Whether a body chunk found the connection gone: the client left, or was closed for
    /// taking nothing of the response.
    pub fn client_gone(&self) -> bool {
        self.lock().client_gone
    }

    /// The body channel, sending the head as a streaming response first if it has not gone.
    fn stream_sender(&self) -> PyResult<Sink> {
        let mut st = self.lock();
        if let Some(tx) = &st.stream {
            return Ok(tx.clone());
        }
        if st.headers_sent() {
            return Err(PyOSError::new_err("the response is already complete"));
        }
        let head = st.head.take().ok_or_else(no_start_response)?;
        let declared = head.content_length;
        let (sink, chunks) = if st.inline {
            let (tx, rx) = mpsc::unbounded_channel();
            (Sink::Unbounded(tx), Chunks::unbounded(rx, declared))
        } else {
            let (tx, rx) = mpsc::channel(STREAM_DEPTH);
            (Sink::Bounded(tx), Chunks::bounded(rx, declared))
        };
        let body = ResponseBody::Stream(chunks);
        st.deliver(head.into_reply(body));
        st.stream = Some(sink.clone());
        Ok(sink)
    }
}

impl State {
    fn headers_sent(&self) -> bool {
        !matches!(self.outlet, Outlet::Channel(_) | Outlet::Keep(None))
    }

    /// Hands the reply over; only the first one counts.
    fn deliver(&mut self, reply: Reply) {
        match std::mem::replace(&mut self.outlet, Outlet::Sent) {
            Outlet::Channel(tx) => {
                let _ = tx.send(reply);
            }
            Outlet::Keep(None) => self.outlet = Outlet::Keep(Some(reply)),
            kept @ Outlet::Keep(Some(_)) => self.outlet = kept,
            Outlet::Sent => {}
        }
    }
}

fn no_start_response() -> PyErr {
    PyAssertionError::new_err("the app produced a body without calling start_response")
}

/// The objects of one call: the [`Responder`], and the `start_response` and `write()`
/// callables the app gets, which hold it. Made anew only when the app kept one of them: a
/// kit the app let go of is reset and serves the next call on the same thread (three Python
/// objects and an `Arc` less to make and free per request).
pub struct CallKit {
    responder: Arc<Responder>,
    /// The function the app is given (see [`fastcall`](super::fastcall)), holding `target`.
    start_response: Py<PyAny>,
    target: Py<StartResponse>,
}

thread_local! {
    /// This thread's kit between two calls.
    static SPARE: std::cell::Cell<Option<CallKit>> = const { std::cell::Cell::new(None) };
}

impl CallKit {
    /// A kit for one call: this thread's spare one, reset, or a new one.
    pub fn take(py: Python<'_>, caller: Caller, head_request: bool) -> PyResult<CallKit> {
        if let Some(kit) = SPARE.take() {
            *kit.responder.lock() = State::new(caller, head_request);
            return Ok(kit);
        }
        let responder = Arc::new(Responder {
            state: Mutex::new(State::new(caller, head_request)),
        });
        let write = Py::new(
            py,
            Write {
                responder: responder.clone(),
            },
        )?;
        let target = Bound::new(
            py,
            StartResponse {
                responder: responder.clone(),
                write,
            },
        )?;
        Ok(CallKit {
            responder,
            start_response: super::fastcall::new(&target)?.unbind(),
            target: target.unbind(),
        })
    }

    pub fn responder(&self) -> &Arc<Responder> {
        &self.responder
    }

    pub fn start_response<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.start_response.bind(py)
    }

    /// Done with the call: keeps the kit for the next one on this thread if nothing else holds
    /// a part of it (the app, a stream still being sent); otherwise it is left to whoever does.
    /// Never under `ZERG_FORCE_FALLBACKS`, as where reference counts cannot be trusted (see
    /// `python::fast_paths`).
    pub fn put_back(self, py: Python<'_>) {
        let sole = crate::python::fast_paths::allowed()
            && references(py, &self.start_response) == 1
            // A weak reference (a WeakKeyDictionary's, say) does not show in the count.
            && !super::fastcall::weakly_referenced(self.start_response.bind(py))
            // Ours and the function's (its `__self__`).
            && references(py, &self.target) == 2
            && references(py, &self.target.get().write) == 1
            // Ours, start_response's and write's.
            && Arc::strong_count(&self.responder) == 3;
        // A call that somehow left its reply undelivered keeps no client waiting in a spare
        // kit: dropped, its reply channel closes (a 500).
        let delivered = || {
            let st = self.responder.lock();
            matches!(st.outlet, Outlet::Sent) && st.stream.is_none()
        };
        if sole && delivered() {
            SPARE.set(Some(self));
        }
    }
}

/// How many references to `obj` there are. A free-threaded interpreter keeps no such count
/// that one thread can trust, so there it says "many" (and no kit is reused).
fn references<T>(_gil: Python<'_>, obj: &Py<T>) -> isize {
    #[cfg(Py_GIL_DISABLED)]
    {
        let _ = obj;
        isize::MAX
    }
    // SAFETY: `obj` is alive (the caller holds a reference to it) and the GIL is held, so its
    // reference count is a plain field that no other thread changes while it is read.
    #[cfg(not(Py_GIL_DISABLED))]
    unsafe {
        pyo3::ffi::Py_REFCNT(obj.as_ptr())
    }
}

/// What the app's `start_response` holds: the [`Responder`], and the `write()` it returns.
/// The callable itself is a function made by [`fastcall`](super::fastcall).
#[pyclass(module = "zerg", frozen)]
pub struct StartResponse {
    responder: Arc<Responder>,
    /// What every call returns (PEP 3333's `write`).
    write: Py<Write>,
}

impl StartResponse {
    /// `start_response(status, headers, exc_info=None)`.
    pub(super) fn start(
        &self,
        py: Python<'_>,
        status: &str,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Write>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        let head = parse_head(status, headers)?;
        let mut st = self.responder.lock();
        match exc_info {
            Some(info) if st.headers_sent() => {
                // PEP 3333: too late to change the status, re-raise the app's error.
                drop(st);
                let info = info.cast::<PyTuple>()?;
                return Err(PyErr::from_value(info.get_item(1)?));
            }
            Some(_) => {}
            None if st.head.is_some() => {
                return Err(PyAssertionError::new_err(
                    "start_response called a second time without exc_info",
                ))
            }
            None if st.headers_sent() => {
                return Err(PyAssertionError::new_err(
                    "start_response called after the headers were sent",
                ))
            }
            None => {}
        }
        st.head = Some(head);
        Ok(self.write.clone_ref(py))
    }
}

/// The `write(data)` callable `start_response` returns (for legacy apps).
#[pyclass(module = "zerg", frozen)]
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
/// A status or header with CR, LF, NUL or another control character is refused, never sent:
/// the app's error then names it (escaped), and the client gets a 500.
fn parse_head(status: &str, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    if !is_text(status) {
        return Err(PyValueError::new_err(format!(
            "bad status line {status:?}: latin-1 text without control characters, e.g. \"200 OK\""
        )));
    }
    let (code, reason) = split_status(status);
    let code = three_digits(code).ok_or_else(|| {
        PyValueError::new_err(format!(
            "bad status line {status:?}: expected e.g. \"200 OK\""
        ))
    })?;
    let status_code = StatusCode::from_u16(code)
        .map_err(|_| PyValueError::new_err(format!("bad status code {code}")))?;
    let reason = reason.trim();
    let reason = (!reason.is_empty() && Some(reason) != status_code.canonical_reason())
        .then(|| reason.to_owned());
    let mut head = Head {
        status: status_code,
        reason,
        headers: super::reply::spare_header_list(),
        content_length: None,
    };
    // PEP 3333 says a list; other sequences of pairs are taken too, as most servers do.
    if let Ok(list) = headers.cast::<PyList>() {
        head.headers.reserve(list.len());
        for item in list.iter() {
            add_header(&mut head, &item)?;
        }
    } else {
        let not_pairs = |_| {
            PyTypeError::new_err("start_response: headers must be a list of (name, value) tuples")
        };
        for item in headers.try_iter().map_err(not_pairs)? {
            add_header(&mut head, &item.map_err(not_pairs)?)?;
        }
    }
    Ok(head)
}

/// Checks and converts one `(name, value)` pair into `head`.
fn add_header(head: &mut Head, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let pair = item
        .cast::<PyTuple>()
        .ok()
        .filter(|t| t.len() == 2)
        .ok_or_else(|| {
            PyTypeError::new_err(format!(
                "start_response: each header must be a (name, value) tuple, not {item}"
            ))
        })?;
    let name_obj = pair.get_borrowed_item(0)?;
    let value_obj = pair.get_borrowed_item(1)?;
    let name = as_str(&name_obj, "header name")?;
    let value = as_str(&value_obj, "header value")?;
    let hn = match common_name(name) {
        Some(hn) => hn,
        None => HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PyValueError::new_err(format!("bad header name {name:?}")))?,
    };
    if hn == http::header::TRANSFER_ENCODING {
        // Hop-by-hop: the server frames the body itself.
        return Ok(());
    }
    let bad = || {
        PyValueError::new_err(format!(
            "bad value for header {name}: {value:?} (latin-1 text without control characters)"
        ))
    };
    if hn == http::header::CONTENT_LENGTH {
        let n = decimal(value).ok_or_else(bad)?;
        if head.content_length.is_some_and(|first| first != n) {
            return Err(PyValueError::new_err(format!(
                "two different Content-Length headers: {} and {n}",
                head.content_length.unwrap_or_default()
            )));
        }
        head.content_length = Some(n);
        return Ok(());
    }
    let value = if hn == http::header::CONTENT_TYPE || hn == http::header::CACHE_CONTROL {
        repeated_value(value)
    } else {
        header_value(value)
    };
    head.headers.push((hn, value.ok_or_else(bad)?));
    Ok(())
}

/// The names nearly every response carries, recognised without parsing (any case). Apps
/// nearly always spell them as written here or in lower case, which compare as plain bytes.
fn common_name(name: &str) -> Option<HeaderName> {
    use http::header;
    let (known, spelling) = match name.len() {
        12 => (header::CONTENT_TYPE, "Content-Type"),
        14 => (header::CONTENT_LENGTH, "Content-Length"),
        10 => (header::SET_COOKIE, "Set-Cookie"),
        8 => (header::LOCATION, "Location"),
        13 => (header::CACHE_CONTROL, "Cache-Control"),
        _ => return None,
    };
    let same =
        name == spelling || name == known.as_str() || known.as_str().eq_ignore_ascii_case(name);
    same.then_some(known)
}

/// A Content-Length value: plain decimal digits that fit.
fn decimal(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None; // 19 digits always fit in a u64
    }
    value.bytes().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// `"200 OK"` as `("200", "OK")`: the code is what comes before the first space.
fn split_status(status: &str) -> (&str, &str) {
    match status.as_bytes().iter().position(|&b| b == b' ') {
        Some(at) => (&status[..at], &status[at + 1..]),
        None => (status, ""),
    }
}

/// Latin-1 text in which only HTAB among the control characters may stand (what HTTP allows
/// in a reason phrase). Checked on the UTF-8 bytes, a loop of compares: a char past U+00FF
/// starts with a byte past 0xC3, and a continuation byte only follows a leading one.
fn is_text(s: &str) -> bool {
    s.bytes()
        .all(|b| matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xbf | 0xc2 | 0xc3))
}

/// A status code: exactly three decimal digits, the first not 0.
fn three_digits(code: &str) -> Option<u16> {
    match *code.as_bytes() {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

fn as_str<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a str> {
    super::fastcall::text(
        obj.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!("start_response: {what} {obj} is not a str"))
        })?,
    )
}

/// How many values of the headers that repeat from one response to the next each thread
/// keeps, and up to what length.
const KEPT_VALUES: usize = 32;
const KEPT_VALUE_LEN: usize = 96;

thread_local! {
    /// Values of Content-Type and Cache-Control, which most apps send alike in response after
    /// response, each checked and copied once and then shared (a clone is a reference count;
    /// a fresh value is a check, an allocation and a copy, and a free after it went out:
    /// ~200 of a hello request's instructions). The first distinct values are kept, no others:
    /// an app whose values vary only misses.
    static KEPT: std::cell::RefCell<Vec<HeaderValue>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`header_value`] for a header whose values repeat: the kept value if there is one.
fn repeated_value(value: &str) -> Option<HeaderValue> {
    if value.len() > KEPT_VALUE_LEN || !value.is_ascii() {
        return header_value(value);
    }
    KEPT.with_borrow_mut(|kept| {
        if let Some(known) = kept.iter().find(|v| v.as_bytes() == value.as_bytes()) {
            return Some(known.clone());
        }
        let fresh = header_value(value)?;
        if kept.len() < KEPT_VALUES {
            kept.push(fresh.clone());
        }
        Some(fresh)
    })
}

/// A header value from the app's str: latin-1 text (PEP 3333), in which control characters
/// such as CR and LF stay refused. (`HeaderValue::from_str` alone would take the UTF-8 bytes of
/// a non-ASCII str.)
fn header_value(value: &str) -> Option<HeaderValue> {
    if value.is_ascii() {
        return HeaderValue::from_str(value).ok();
    }
    let latin1: Vec<u8> = value
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<_>>()?;
    HeaderValue::from_bytes(&latin1).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_match_in_any_case_and_only_whole() {
        assert_eq!(
            common_name("Content-Type"),
            Some(http::header::CONTENT_TYPE)
        );
        assert_eq!(
            common_name("CONTENT-LENGTH"),
            Some(http::header::CONTENT_LENGTH)
        );
        assert_eq!(common_name("set-cookie"), Some(http::header::SET_COOKIE));
        assert_eq!(
            common_name("content-TYPE"),
            Some(http::header::CONTENT_TYPE)
        );
        assert_eq!(common_name("Content-Typo"), None);
        assert_eq!(common_name("X-Frame-Options"), None);
    }

    #[test]
    fn header_values_are_latin1_text_without_controls() {
        assert_eq!(header_value("text/plain").unwrap(), "text/plain");
        assert_eq!(header_value("").unwrap(), "");
        assert_eq!(header_value("caf\u{e9}").unwrap().as_bytes(), b"caf\xe9");
        for bad in ["a\r\nSet-Cookie: x=1", "a\nb", "nul\0", "snowman \u{2603}"] {
            assert!(header_value(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn repeated_values_are_kept_checked_and_bounded() {
        let first = repeated_value("text/plain; charset=utf-8").unwrap();
        let again = repeated_value("text/plain; charset=utf-8").unwrap();
        assert_eq!(first, again);
        assert_eq!(
            first.as_bytes().as_ptr(),
            again.as_bytes().as_ptr(),
            "the same bytes, shared"
        );
        assert_eq!(
            KEPT.with_borrow(|k| k.len()),
            1,
            "kept once, however often sent"
        );
        for bad in ["a\r\nSet-Cookie: x=1", "nul\0"] {
            assert!(repeated_value(bad).is_none(), "{bad:?}");
            assert!(repeated_value(bad).is_none(), "{bad:?} twice");
        }
        assert_eq!(
            repeated_value("caf\u{e9}").unwrap().as_bytes(),
            b"caf\xe9",
            "latin-1"
        );
        let long = "x".repeat(KEPT_VALUE_LEN + 1);
        assert_eq!(repeated_value(&long).unwrap(), long.as_str());
        assert_eq!(
            KEPT.with_borrow(|k| k.len()),
            1,
            "none of the bad, latin-1 or long ones kept"
        );
        for n in 0..2 * KEPT_VALUES {
            let v = format!("text/x-{n}");
            assert_eq!(repeated_value(&v).unwrap(), v.as_str());
        }
        assert_eq!(
            KEPT.with_borrow(|k| k.len()),
            KEPT_VALUES,
            "no more than that"
        );
        assert_eq!(
            repeated_value("text/x-40").unwrap(),
            "text/x-40",
            "one not kept is still right"
        );
    }

    #[test]
    fn content_length_is_plain_decimal() {
        assert_eq!(decimal("0"), Some(0));
        assert_eq!(decimal("1048576"), Some(1 << 20));
        assert_eq!(
            decimal("9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in ["", "+5", "-1", " 5", "5 ", "0x10", "99999999999999999999"] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_status_line_is_latin1_text_without_controls() {
        for good in ["200 OK", "404 Not\tFound", "200 caf\u{e9}", "599 ", "204"] {
            assert!(is_text(good), "{good:?}");
        }
        for bad in [
            "200 OK\r\n",
            "200 OK\r\nSet-Cookie: x=1",
            "200 O\nK",
            "200 O\0K",
            "200 \x7f",
            "200 \u{2603}",
        ] {
            assert!(!is_text(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_status_line_is_three_digits_then_a_reason() {
        assert_eq!(split_status("200 OK"), ("200", "OK"));
        assert_eq!(split_status("404 Not Found"), ("404", "Not Found"));
        assert_eq!(split_status("204"), ("204", ""));
        assert_eq!(split_status("599 "), ("599", ""));
        assert_eq!(three_digits("200"), Some(200));
        assert_eq!(three_digits("100"), Some(100));
        assert_eq!(three_digits("999"), Some(999));
        for bad in ["", "20", "2000", "099", "+20", "2x0", "OK", "20 "] {
            assert_eq!(three_digits(bad), None, "{bad:?}");
        }
    }
}
