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
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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
/// Built on the connection's first request, then copied for each.
///
/// The base also keeps the method, protocol and empty query string of the connection's
/// last request that had common ones, and its Host, so that the next request like it sets
/// none of these in its copy (-0.65k instructions a hello request for the first three: the
/// requests of a keep-alive connection, from a proxy above all, mostly differ in their path
/// and other headers alone). The base never changes under a copy being made or used: HTTP/1
/// reads a connection's next request head only once the last response is out, and that
/// response came from an app called with its environ made. Those hand-offs (channels,
/// hyper's state) order the accesses, so the fields below need no ordering of their own.
pub struct ConnEnv {
    peer: Peer,
    base: OnceLock<Py<PyDict>>,
    /// Which [`common_method`] the base holds as REQUEST_METHOD (its number); 0 for none.
    method: AtomicU8,
    /// Which SERVER_PROTOCOL the base holds: 0 none yet, 1 HTTP/1.0, 2 HTTP/1.1.
    protocol: AtomicU8,
    /// Whether the base holds "" as QUERY_STRING.
    no_query: AtomicBool,
    /// The Host header the base holds as HTTP_HOST; `None` while it holds none. A copy: a
    /// `HeaderValue` from hyper would keep the connection's first read buffer alive.
    host: Mutex<Option<Box<[u8]>>>,
}

/// A connection's base for one request, and what its copy must set still.
struct Base<'py> {
    dict: Bound<'py, PyDict>,
    /// The method is not one the base keeps.
    set_method: bool,
    /// The query is not empty.
    set_query: bool,
}

impl ConnEnv {
    pub fn new(peer: Peer) -> ConnEnv {
        ConnEnv {
            peer,
            base: OnceLock::new(),
            method: AtomicU8::new(0),
            protocol: AtomicU8::new(0),
            no_query: AtomicBool::new(false),
            host: Mutex::new(None),
        }
    }

    /// The base, made to hold this request's method (if common), protocol and empty query (if
    /// empty).
    fn base_for<'py>(
        &self,
        py: Python<'py>,
        template: &Bound<'py, PyDict>,
        parts: &Parts,
        no_query: bool,
    ) -> PyResult<Base<'py>> {
        let base = self.base(py, template)?;
        let method = common_method(py, &parts.method);
        if let Some((number, name)) = method {
            if self.method.load(Ordering::Relaxed) != number {
                base.set_item(intern!(py, "REQUEST_METHOD"), name)?;
                self.method.store(number, Ordering::Relaxed);
            }
        }
        let (protocol, name) = match parts.version {
            Version::HTTP_10 => (1, intern!(py, "HTTP/1.0")),
            _ => (2, intern!(py, "HTTP/1.1")),
        };
        if self.protocol.load(Ordering::Relaxed) != protocol {
            base.set_item(intern!(py, "SERVER_PROTOCOL"), name)?;
            self.protocol.store(protocol, Ordering::Relaxed);
        }
        if no_query && !self.no_query.load(Ordering::Relaxed) {
            base.set_item(intern!(py, "QUERY_STRING"), intern!(py, ""))?;
            self.no_query.store(true, Ordering::Relaxed);
        }
        Ok(Base {
            dict: base,
            set_method: method.is_none(),
            set_query: !no_query,
        })
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
        let _ = self.base.set(env.clone().unbind());
        Ok(env)
    }
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
/// headers are moved into it (the request keeps none).
pub fn build<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    conn: &ConnEnv,
    header_keys: &HeaderKeys,
    parts: &mut Parts,
    input: Option<Input>,
) -> PyResult<Bound<'py, PyDict>> {
    let query = parts.uri.query();
    let no_query = query.is_none_or(str::is_empty);
    let base = conn.base_for(py, template, parts, no_query)?;
    let env = base.dict.copy()?;
    if base.set_method {
        env.set_item(
            intern!(py, "REQUEST_METHOD"),
            PyString::new(py, parts.method.as_str()),
        )?;
    }
    let raw_path = parts.uri.path();
    let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode_str(raw_path).into();
    let path_info = native(py, &decoded)?;
    let request_uri = match query {
        // The common case: REQUEST_URI is the very same text as PATH_INFO.
        None if matches!(decoded, Cow::Borrowed(_)) => path_info.clone(),
        _ => native(
            py,
            parts
                .uri
                .path_and_query()
                .map_or(raw_path, |pq| pq.as_str())
                .as_bytes(),
        )?,
    };
    env.set_item(intern!(py, "PATH_INFO"), path_info)?;
    env.set_item(intern!(py, "REQUEST_URI"), request_uri)?;
    if base.set_query {
        env.set_item(
            intern!(py, "QUERY_STRING"),
            native(py, query.unwrap_or("").as_bytes())?,
        )?;
    }
    add_headers(py, &env, conn, &base.dict, header_keys, &mut parts.headers)?;
    super::reply::recycle_header_map(std::mem::take(&mut parts.headers));
    if let Some(input) = input {
        env.set_item(intern!(py, "wsgi.input"), Bound::new(py, input)?)?;
    }
    Ok(env)
}

/// `Content-Type`/`Content-Length` as CGI names, every other header as `HTTP_*`. Repeated
/// headers are joined with ", " (cookies with "; "). Names with `_` are dropped, as nginx
/// does, so `X_Forwarded_For` cannot pose as `X-Forwarded-For`. A single Host is kept in the
/// connection's base (see [`ConnEnv`]): one like the last is in the copy already.
fn add_headers(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    conn: &ConnEnv,
    base: &Bound<'_, PyDict>,
    keys: &HeaderKeys,
    headers: &mut http::HeaderMap,
) -> PyResult<()> {
    // As `HeaderKeys::key` locks, though a connection's requests never contend for it.
    let mut held_host = conn
        .host
        .lock_py_attached(py)
        .unwrap_or_else(|p| p.into_inner());
    let mut saw_host = false;
    // Taken apart in one pass, no lookup by name: a name comes with its first value, and the
    // values after it that carry no name are its own (`HeaderMap::drain`, which leaves the
    // map empty but keeps its room).
    let mut pairs = headers.drain().peekable();
    while let Some((name, first)) = pairs.next() {
        let more = std::iter::from_fn(|| pairs.next_if(|(next, _)| next.is_none()));
        let Some(key) = name.as_ref().and_then(|name| keys.key(py, name)) else {
            more.for_each(drop);
            continue;
        };
        let mut more = more.map(|(_, value)| value).peekable();
        if name.as_ref() == Some(&http::header::HOST) {
            saw_host = true;
            if more.peek().is_none() {
                if held_host.as_deref() != Some(first.as_bytes()) {
                    let value = native(py, first.as_bytes())?;
                    base.set_item(&key, &value)?;
                    *held_host = Some(first.as_bytes().into());
                    env.set_item(key, value)?;
                }
                continue;
            }
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
        env.set_item(key, value)?;
    }
    if !saw_host && held_host.is_some() {
        env.del_item(intern!(py, "HTTP_HOST"))?;
    }
    Ok(())
}
