//! Building the WSGI environ (PEP 3333) from a parsed request.
//!
//! Keys that never change in a worker are put once in a template dict, and the addresses of a
//! connection in a copy of it made on the connection's first request (its base, which then
//! also keeps what the connection's requests mostly share: see [`ConnEnv`]); each request
//! copies that and adds its own keys. Keys and common values (methods, protocol, header
//! names) are interned strings made once. Strings from the wire are decoded as latin-1, as
//! PEP 3333 requires for "native strings".

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use http::request::Parts;
use http::{HeaderName, Method, Version};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyDict, PyString};
use pyo3::{ffi, intern};

use super::input::Input;
use super::streams::{ErrorStream, FileWrapper};
use super::Static;

/// Which connection a request came in on.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp {
        remote: SocketAddr,
        local: SocketAddr,
    },
    Unix {
        path: String,
    },
}

/// The environ keys every request of this worker shares.
pub fn template(py: Python<'_>, statics: &Static) -> PyResult<Py<PyDict>> {
    // The switch is read here, as the worker starts, and said once.
    if !crate::python::fast_paths::allowed() {
        tracing::info!(
            worker = statics.worker_id,
            "ZERG_FORCE_FALLBACKS: CPython fast paths off, public API calls instead"
        );
    }
    let env = PyDict::new(py);
    env.set_item("wsgi.version", (1, 0))?;
    env.set_item("wsgi.url_scheme", "http")?;
    env.set_item("wsgi.multithread", statics.multithread)?;
    env.set_item("wsgi.multiprocess", statics.multiprocess)?;
    env.set_item("wsgi.run_once", false)?;
    env.set_item("wsgi.input_terminated", true)?;
    env.set_item("wsgi.errors", Bound::new(py, ErrorStream)?)?;
    env.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
    env.set_item("SCRIPT_NAME", "")?;
    env.set_item(
        "SERVER_SOFTWARE",
        concat!("zerg/", env!("CARGO_PKG_VERSION")),
    )?;
    // Keys every connection or request sets: present already, so setting one replaces a value
    // in the copied table instead of inserting a new entry.
    for key in [
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "SERVER_NAME",
        "SERVER_PORT",
        "REQUEST_METHOD",
        "PATH_INFO",
        "REQUEST_URI",
        "QUERY_STRING",
        "SERVER_PROTOCOL",
    ] {
        env.set_item(PyString::intern(py, key), py.None())?;
    }
    // Requests with a body replace it with their own.
    env.set_item(intern!(py, "wsgi.input"), Bound::new(py, Input::empty())?)?;
    make_room(py, &env)?;
    Ok(env.unbind())
}

/// Latin-1 decoding of wire bytes, as PEP 3333 wants for native strings.
fn native<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    if bytes.is_empty() {
        return Ok(intern!(py, "").clone());
    }
    // SAFETY: the pointer and length describe `bytes`, alive for the call; CPython copies
    // them into a new str and returns a new reference, or NULL with an exception set, which
    // `from_owned_ptr_or_err` turns into a PyErr.
    unsafe {
        let obj = ffi::PyUnicode_DecodeLatin1(
            bytes.as_ptr().cast(),
            bytes.len() as ffi::Py_ssize_t,
            std::ptr::null(),
        );
        Ok(Bound::from_owned_ptr_or_err(py, obj)?.cast_into_unchecked())
    }
}

/// What every request on one connection shares: the worker's template plus the addresses.
/// Built on the connection's first request; a request's environ is a copy of it, or the last
/// request's environ made over (see below).
///
/// The base also keeps the method, protocol and empty query string of the connection's
/// last request that had common ones, and its Host, so that the next request like it sets
/// none of these in its copy (-0.65k instructions a hello request for the first three: the
/// requests of a keep-alive connection, from a proxy above all, mostly differ in their path
/// and other headers alone).
///
/// An environ that its app let go of unchanged (nothing else holds a reference to it, and
/// CPython's version tag of the dict, PEP 509, is the one it had when the app was called) is
/// kept, and made over into the next request's: it sets the keys that differ and deletes the
/// headers the next request lacks. That saves the copy and the deallocation of ~25 entries
/// (-0.84k instructions a hello request, 13.1k -> 12.3k). What an app could tell: the dict's
/// `id()` repeats (as it often does anyway, CPython reusing freed dicts), and a header name
/// that an earlier request of the connection sent keeps that request's place in the order
/// of the keys (HTTP gives the order of different field names no meaning). An app that
/// keeps the environ or changes it (werkzeug adds `werkzeug.request`) gets a copy of the base
/// for the next request, and so does the request after one with a body, or with headers over
/// [`KEEP_HEADER_BYTES`] (a kept environ would hold on to them while the connection idles).
///
/// The base changes only while a request's environ is made, and a kept environ is taken for
/// one request at a time; the lock orders those. A connection's requests follow each other
/// (HTTP/1 reads the next head once the last response is out), but an app on a thread may
/// still be running after its response is (a `write()` of its whole Content-Length): the
/// next request then copies the base, as nothing is kept yet.
pub struct ConnEnv {
    peer: Peer,
    /// The CGI variables a gateway sent with the request (see [`ConnEnv::forwarded`]); empty
    /// for HTTP.
    forwarded: Vec<(bytes::Bytes, bytes::Bytes)>,
    /// Over TLS (an `https` listener): `wsgi.url_scheme` is `https` and `HTTPS` is `on`.
    tls: bool,
    base: OnceLock<Py<PyDict>>,
    state: Mutex<State>,
}

/// What the base holds, and the environ kept for the next request.
struct State {
    base: Holds,
    kept: Option<(Py<PyDict>, Holds)>,
}

/// What a dict (a base or an environ) holds of the keys that vary between a connection's
/// requests.
#[derive(Default)]
struct Holds {
    /// The str that is both PATH_INFO and REQUEST_URI, the path of a request that had no
    /// query and nothing percent-encoded; `None` if they are anything else (a base holds
    /// placeholders). A request with the same path sets neither (-0.35k instructions a hello
    /// request: what a connection repeats is mostly a benchmark's, a poller's or a health
    /// check's path).
    path: Option<Py<PyString>>,
    /// Which [`common_method`] REQUEST_METHOD is (its number); 0 for another, or the
    /// template's placeholder.
    method: u8,
    /// Which SERVER_PROTOCOL: 0 the placeholder, 1 HTTP/1.0, 2 HTTP/1.1.
    protocol: u8,
    /// QUERY_STRING is "".
    no_query: bool,
    host: Host,
    /// The keys of its other headers.
    headers: Vec<Py<PyString>>,
    /// An empty list with room, for the next request's `headers`.
    spare: Vec<Py<PyString>>,
}

/// What a dict holds as HTTP_HOST.
#[derive(Clone, Default)]
enum Host {
    #[default]
    Absent,
    /// A single Host header of these bytes. A copy: a `HeaderValue` from hyper would keep the
    /// connection's first read buffer alive.
    Single(bytes::Bytes),
    /// Repeated Host headers, joined.
    Joined,
}

impl Holds {
    /// What a copy of the base holds: the base holds no header but Host.
    fn of_copy(&self) -> Holds {
        Holds {
            method: self.method,
            protocol: self.protocol,
            no_query: self.no_query,
            host: self.host.clone(),
            ..Holds::default()
        }
    }
}

impl Host {
    fn is(&self, value: &[u8]) -> bool {
        matches!(self, Host::Single(held) if held.as_ref() == value)
    }
}

impl ConnEnv {
    /// The client's address as a log line names it: the gateway's `REMOTE_ADDR` (uwsgi), else
    /// the peer's IP; `-` over a unix socket.
    pub fn client_addr(&self) -> String {
        if let Some((_, v)) = self
            .forwarded
            .iter()
            .find(|(k, _)| &k[..] == b"REMOTE_ADDR")
        {
            return String::from_utf8_lossy(v).into_owned();
        }
        match &self.peer {
            Peer::Tcp { remote, .. } => remote.ip().to_string(),
            Peer::Unix { .. } => "-".to_owned(),
        }
    }

    pub fn new(peer: Peer) -> ConnEnv {
        ConnEnv::forwarded(peer, Vec::new())
    }

    /// A client's connection over TLS: its environ says so as uWSGI's HTTPS router does
    /// (`wsgi.url_scheme` `https`, `HTTPS` `on`).
    pub fn tls(peer: Peer) -> ConnEnv {
        ConnEnv {
            tls: true,
            ..ConnEnv::new(peer)
        }
    }

    /// A connection on which a gateway (nginx's `uwsgi_pass`) forwards one request with these
    /// CGI variables. Its environ takes them as they are, over whatever zerg would set from
    /// the request and the socket, as uWSGI makes its environ of them: REMOTE_ADDR is the
    /// client's, not the gateway's, PATH_INFO the gateway's decoded path, and so on. Such an
    /// environ is never kept, as the connection serves no other request.
    pub fn forwarded(peer: Peer, forwarded: Vec<(bytes::Bytes, bytes::Bytes)>) -> ConnEnv {
        ConnEnv {
            peer,
            forwarded,
            tls: false,
            base: OnceLock::new(),
            state: Mutex::new(State {
                base: Holds::default(),
                kept: None,
            }),
        }
    }

    /// The connection's socket addresses.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The CGI variables a gateway forwarded (empty for HTTP).
    pub fn forwarded_vars(&self) -> &[(bytes::Bytes, bytes::Bytes)] {
        &self.forwarded
    }

    /// Whether the connection came over TLS (an `https` listener).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    fn base<'py>(
        &self,
        py: Python<'py>,
        template: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        if let Some(base) = self.base.get() {
            return Ok(base.bind(py).clone());
        }
        let env = template.copy()?;
        match &self.peer {
            Peer::Tcp { remote, local } => {
                env.set_item(intern!(py, "REMOTE_ADDR"), remote.ip().to_string())?;
                env.set_item(intern!(py, "REMOTE_PORT"), remote.port().to_string())?;
                env.set_item(intern!(py, "SERVER_NAME"), local.ip().to_string())?;
                env.set_item(intern!(py, "SERVER_PORT"), local.port().to_string())?;
            }
            Peer::Unix { path } => {
                env.set_item(intern!(py, "REMOTE_ADDR"), "")?;
                env.del_item(intern!(py, "REMOTE_PORT"))?;
                env.set_item(intern!(py, "SERVER_NAME"), path.as_str())?;
                env.set_item(intern!(py, "SERVER_PORT"), "0")?;
            }
        }
        if self.tls {
            env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
            env.set_item(intern!(py, "HTTPS"), intern!(py, "on"))?;
        }
        let _ = self.base.set(env.clone().unbind());
        Ok(env)
    }

    fn state(&self, py: Python<'_>) -> std::sync::MutexGuard<'_, State> {
        // Locked attached-aware, as `HeaderKeys::key` locks: the GIL is let go while it
        // waits, in the rare case another thread holds it (see [`ConnEnv`]).
        self.state
            .lock_py_attached(py)
            .unwrap_or_else(|p| p.into_inner())
    }

    /// After the app's call: keeps `env` for the next request if nothing else holds it and
    /// it is as it was made (see [`ConnEnv`]).
    pub fn keep(&self, py: Python<'_>, env: Environ<'_>) {
        let Some(made) = env.version else { return };
        // SAFETY: reads the reference count of a live object; with the GIL held, as here,
        // nothing changes it under the read.
        let alone = unsafe { ffi::Py_REFCNT(env.dict.as_ptr()) } == 1;
        if alone && version(&env.dict) == Some(made) {
            self.state(py).kept = Some((env.dict.unbind(), env.holds));
        }
    }
}

/// A request's environ, and what it holds.
pub struct Environ<'py> {
    pub dict: Bound<'py, PyDict>,
    holds: Holds,
    /// The dict's version tag once made; `None` if it may not be kept (a request with a body,
    /// or a CPython without version tags).
    version: Option<u64>,
}

/// The dict's version tag (PEP 509): CPython gives a dict a new one at every change. `None`
/// under `ZERG_FORCE_FALLBACKS`, as where there is none (see `python::fast_paths`).
#[cfg(not(any(Py_LIMITED_API, PyPy, GraalPy, Py_3_14, Py_GIL_DISABLED)))]
#[allow(deprecated)] // deprecated in 3.12, but still kept by 3.12 and 3.13
fn version(dict: &Bound<'_, PyDict>) -> Option<u64> {
    if !crate::python::fast_paths::allowed() {
        return None;
    }
    // SAFETY: `dict` is a live dict object, so its pointer is to a PyDictObject; the tag is
    // a plain field that CPython only writes with the GIL held, which we hold.
    Some(unsafe { (*dict.as_ptr().cast::<ffi::PyDictObject>()).ma_version_tag })
}

/// No version tag to read (3.14 on), or reference counts that cannot tell that nothing else
/// holds the dict (a free-threaded build): no environ is kept.
#[cfg(any(Py_LIMITED_API, PyPy, GraalPy, Py_3_14, Py_GIL_DISABLED))]
fn version(_dict: &Bound<'_, PyDict>) -> Option<u64> {
    None
}

/// How many keys the template's table is grown to hold.
const ROOM: usize = 22;

/// Grows the table of `env` past [`ROOM`] keys. CPython sizes a dict's table by the most keys
/// it has held, and a copy keeps that size: the template's 20 keys sit in a table of 32 slots
/// with 21 usable, which a request's second header overflows, so nearly every request (curl
/// sends three headers, a browser ten) resized its environ. Grown once past 21, the template
/// has a table of 64 slots (42 usable) that every connection's and request's copy shares, with
/// room for 20 headers; the placeholders are deleted again (13-header request: 620 fewer
/// instructions).
fn make_room(py: Python<'_>, env: &Bound<'_, PyDict>) -> PyResult<()> {
    let placeholders: Vec<String> = (env.len()..ROOM)
        .map(|i| format!("zerg.room.{i}"))
        .collect();
    for key in &placeholders {
        env.set_item(key, py.None())?;
    }
    for key in &placeholders {
        env.del_item(key)?;
    }
    Ok(())
}

/// The environ keys for header names (`HTTP_USER_AGENT`, ...), made once per name.
#[derive(Default)]
pub struct HeaderKeys {
    /// A `HeaderMap` for its hashing, much cheaper than std's SipHash for header names.
    keys: Mutex<http::HeaderMap<Py<PyString>>>,
}

/// Distinct header names remembered; past this, keys of new names are made per request.
const HEADER_KEYS_MAX: usize = 256;

impl HeaderKeys {
    /// The CGI key for `name`; `None` for names with `_`, which are dropped (see
    /// [`add_headers`]).
    fn key<'py>(&self, py: Python<'py>, name: &HeaderName) -> Option<Bound<'py, PyString>> {
        if let Some(key) = common_key(py, name.as_str()) {
            return Some(key.clone());
        }
        // Locked attached-aware: the lock is held across CPython calls (interning may run
        // the collector, and finalizers then, which may let another thread have the GIL);
        // a thread that blocked on it holding the GIL would wait for this one for good.
        let mut keys = self
            .keys
            .lock_py_attached(py)
            .unwrap_or_else(|p| p.into_inner());
        if let Some(key) = keys.get(name) {
            return Some(key.bind(py).clone());
        }
        let key = match name.as_str() {
            // content-type and content-length are among the common keys.
            n if n.contains('_') => return None,
            n => {
                let mut k = String::with_capacity(5 + n.len());
                k.push_str("HTTP_");
                k.extend(n.chars().map(|c| {
                    if c == '-' {
                        '_'
                    } else {
                        c.to_ascii_uppercase()
                    }
                }));
                k
            }
        };
        let key = PyString::intern(py, &key);
        if keys.len() < HEADER_KEYS_MAX {
            keys.insert(name, key.clone().unbind());
        }
        Some(key)
    }
}

/// Keys of the headers nearly every request carries, without a lookup in the map.
fn common_key<'py>(py: Python<'py>, name: &str) -> Option<&'py Bound<'py, PyString>> {
    Some(match name {
        "host" => intern!(py, "HTTP_HOST"),
        "user-agent" => intern!(py, "HTTP_USER_AGENT"),
        "accept" => intern!(py, "HTTP_ACCEPT"),
        "accept-encoding" => intern!(py, "HTTP_ACCEPT_ENCODING"),
        "accept-language" => intern!(py, "HTTP_ACCEPT_LANGUAGE"),
        "connection" => intern!(py, "HTTP_CONNECTION"),
        "cookie" => intern!(py, "HTTP_COOKIE"),
        "content-type" => intern!(py, "CONTENT_TYPE"),
        "content-length" => intern!(py, "CONTENT_LENGTH"),
        "referer" => intern!(py, "HTTP_REFERER"),
        "authorization" => intern!(py, "HTTP_AUTHORIZATION"),
        "x-forwarded-for" => intern!(py, "HTTP_X_FORWARDED_FOR"),
        "x-forwarded-proto" => intern!(py, "HTTP_X_FORWARDED_PROTO"),
        "x-real-ip" => intern!(py, "HTTP_X_REAL_IP"),
        "cache-control" => intern!(py, "HTTP_CACHE_CONTROL"),
        "origin" => intern!(py, "HTTP_ORIGIN"),
        "if-modified-since" => intern!(py, "HTTP_IF_MODIFIED_SINCE"),
        "if-none-match" => intern!(py, "HTTP_IF_NONE_MATCH"),
        _ => return None,
    })
}

/// A common method: its number (never 0) and its interned name. Others are made per request.
fn common_method<'py>(py: Python<'py>, method: &Method) -> Option<(u8, &'py Bound<'py, PyString>)> {
    Some(match *method {
        Method::GET => (1, intern!(py, "GET")),
        Method::POST => (2, intern!(py, "POST")),
        Method::HEAD => (3, intern!(py, "HEAD")),
        Method::PUT => (4, intern!(py, "PUT")),
        Method::DELETE => (5, intern!(py, "DELETE")),
        Method::PATCH => (6, intern!(py, "PATCH")),
        Method::OPTIONS => (7, intern!(py, "OPTIONS")),
        _ => return None,
    })
}

/// The environ for one request; `input` is `None` for a request without a body. The request's
/// headers are moved into it (the request keeps none). The last request's environ, if kept
/// (see [`ConnEnv`]), is made into this one's; otherwise the base is copied.
pub fn build<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    conn: &ConnEnv,
    header_keys: &HeaderKeys,
    parts: &mut Parts,
    input: Option<Input>,
) -> PyResult<Environ<'py>> {
    let line = Line {
        method: &parts.method,
        common_method: common_method(py, &parts.method),
        protocol: match parts.version {
            Version::HTTP_10 => (1, intern!(py, "HTTP/1.0")),
            _ => (2, intern!(py, "HTTP/1.1")),
        },
        query: parts.uri.query().filter(|q| !q.is_empty()),
    };
    let mut state = conn.state(py);
    let state = &mut *state;
    let (env, mut holds, mut base) = match state.kept.take() {
        Some((kept, holds)) => (kept.into_bound(py), holds, None),
        None => {
            // The base is made to hold what of this request it keeps, then copied.
            let base = conn.base(py, template)?;
            set_line(py, &base, &mut state.base, &line, false)?;
            (
                base.copy()?,
                state.base.of_copy(),
                Some((base, &mut state.base)),
            )
        }
    };
    set_line(py, &env, &mut holds, &line, true)?;
    set_path(py, &env, &mut holds, &parts.uri)?;
    let base = base.as_mut().map(|(dict, holds)| (&*dict, &mut **holds));
    let header_bytes = add_headers(py, &env, &mut holds, base, header_keys, &mut parts.headers)?;
    super::reply::recycle_header_map(std::mem::take(&mut parts.headers));
    for (key, value) in &conn.forwarded {
        env.set_item(native(py, key)?, native(py, value)?)?;
    }
    let version = match input {
        Some(input) => {
            env.set_item(intern!(py, "wsgi.input"), Bound::new(py, input)?)?;
            None
        }
        None if header_bytes > KEEP_HEADER_BYTES || !conn.forwarded.is_empty() => None,
        None => version(&env),
    };
    Ok(Environ {
        dict: env,
        holds,
        version,
    })
}

/// A request whose header values come to more than this leaves no environ kept (see
/// [`ConnEnv`]): an idle connection holds no big cookie or token.
const KEEP_HEADER_BYTES: usize = 4096;

/// What of a request line the environ holds in keys of their own.
struct Line<'a, 'py> {
    method: &'a Method,
    common_method: Option<(u8, &'py Bound<'py, PyString>)>,
    protocol: (u8, &'py Bound<'py, PyString>),
    /// The query, if not empty.
    query: Option<&'a str>,
}

/// Sets PATH_INFO (decoded) and REQUEST_URI (as sent) in `dict`, unless `holds` says it
/// holds them for this very path already.
fn set_path(
    py: Python<'_>,
    dict: &Bound<'_, PyDict>,
    holds: &mut Holds,
    uri: &http::Uri,
) -> PyResult<()> {
    let query = uri.query();
    let raw_path = uri.path();
    // A held path needed no decoding, so the same bytes need none: compared before decoding.
    // Compared as ASCII only: a path with other bytes is decoded as latin-1, whose text is
    // not its bytes.
    let held = holds
        .path
        .as_ref()
        .and_then(|p| super::fastcall::ascii(p.bind(py)));
    if query.is_none() && held == Some(raw_path) {
        return Ok(());
    }
    let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode_str(raw_path).into();
    // The common case: REQUEST_URI is the very same text as PATH_INFO.
    let plain = query.is_none() && matches!(decoded, Cow::Borrowed(_));
    let path_info = native(py, &decoded)?;
    let request_uri = if plain {
        path_info.clone()
    } else {
        native(
            py,
            uri.path_and_query()
                .map_or(raw_path, |pq| pq.as_str())
                .as_bytes(),
        )?
    };
    holds.path = plain.then(|| path_info.clone().unbind());
    dict.set_item(intern!(py, "PATH_INFO"), path_info)?;
    dict.set_item(intern!(py, "REQUEST_URI"), request_uri)?;
    Ok(())
}

/// Makes `dict` hold the request's protocol, its method if common and "" as QUERY_STRING if
/// it has no query, where `holds` says it does not yet; a base holds no more than that. An
/// environ (`request`) also gets any other method and a query that is not empty.
fn set_line(
    py: Python<'_>,
    dict: &Bound<'_, PyDict>,
    holds: &mut Holds,
    line: &Line<'_, '_>,
    request: bool,
) -> PyResult<()> {
    match line.common_method {
        Some((number, name)) if holds.method != number => {
            dict.set_item(intern!(py, "REQUEST_METHOD"), name)?;
            holds.method = number;
        }
        None if request => {
            let name = PyString::new(py, line.method.as_str());
            dict.set_item(intern!(py, "REQUEST_METHOD"), name)?;
            holds.method = 0;
        }
        _ => {}
    }
    let (protocol, name) = line.protocol;
    if holds.protocol != protocol {
        dict.set_item(intern!(py, "SERVER_PROTOCOL"), name)?;
        holds.protocol = protocol;
    }
    match line.query {
        None if !holds.no_query => {
            dict.set_item(intern!(py, "QUERY_STRING"), intern!(py, ""))?;
            holds.no_query = true;
        }
        Some(query) if request => {
            dict.set_item(intern!(py, "QUERY_STRING"), native(py, query.as_bytes())?)?;
            holds.no_query = false;
        }
        _ => {}
    }
    Ok(())
}

/// `Content-Type`/`Content-Length` as CGI names, every other header as `HTTP_*`; the keys of
/// headers `holds` has that the request lacks are deleted. Repeated headers are joined with
/// ", " (cookies with "; "). Names with `_` are dropped, as nginx does, so
/// `X_Forwarded_For` cannot pose as `X-Forwarded-For`. A single Host goes in the
/// connection's base too, if given (see [`ConnEnv`]). Returns the length of the header values.
fn add_headers(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    holds: &mut Holds,
    mut base: Option<(&Bound<'_, PyDict>, &mut Holds)>,
    keys: &HeaderKeys,
    headers: &mut http::HeaderMap,
) -> PyResult<usize> {
    let spare = std::mem::take(&mut holds.spare);
    let mut held = std::mem::replace(&mut holds.headers, spare);
    let mut saw_host = false;
    let mut length = 0;
    // Taken apart in one pass, no lookup by name: a name comes with its first value, and the
    // values after it that carry no name are its own (`HeaderMap::drain`, which leaves the
    // map empty but keeps its room).
    let mut pairs = headers.drain().peekable();
    while let Some((name, first)) = pairs.next() {
        length += first.len();
        let more = std::iter::from_fn(|| pairs.next_if(|(next, _)| next.is_none()));
        let Some(key) = name.as_ref().and_then(|name| keys.key(py, name)) else {
            more.for_each(drop);
            continue;
        };
        let mut more = more
            .map(|(_, value)| value)
            .inspect(|value| length += value.len())
            .peekable();
        let is_host = name.as_ref() == Some(&http::header::HOST);
        if is_host && more.peek().is_none() {
            saw_host = true;
            let bytes = first.as_bytes();
            if !holds.host.is(bytes) {
                let value = native(py, bytes)?;
                let single = Host::Single(bytes::Bytes::copy_from_slice(bytes));
                if let Some((base, base_holds)) = base.as_mut() {
                    if !base_holds.host.is(bytes) {
                        base.set_item(&key, &value)?;
                        base_holds.host = single.clone();
                    }
                }
                env.set_item(key, value)?;
                holds.host = single;
            }
            continue;
        }
        let value = if more.peek().is_none() {
            native(py, first.as_bytes())?
        } else {
            let sep: &[u8] = if name == Some(http::header::COOKIE) {
                b"; "
            } else {
                b", "
            };
            let mut joined = first.as_bytes().to_vec();
            for v in more {
                joined.extend_from_slice(sep);
                joined.extend_from_slice(v.as_bytes());
            }
            native(py, &joined)?
        };
        if is_host {
            saw_host = true;
            holds.host = Host::Joined;
            env.set_item(key, value)?;
        } else {
            env.set_item(&key, value)?;
            holds.headers.push(key.unbind());
        }
    }
    if !saw_host && !matches!(holds.host, Host::Absent) {
        env.del_item(intern!(py, "HTTP_HOST"))?;
        holds.host = Host::Absent;
    }
    for key in held.drain(..) {
        // By identity: keys are interned, so the key of a name that this request set is the
        // object the dict holds (and keeps alive), even past `HEADER_KEYS_MAX` names, when
        // a key is made per request.
        if !holds.headers.iter().any(|k| k.as_ptr() == key.as_ptr()) {
            env.del_item(key.bind(py))?;
        }
    }
    holds.spare = held;
    Ok(length)
}
