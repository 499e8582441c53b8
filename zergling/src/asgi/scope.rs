//! The HTTP connection scope of a request (asgiref's "HTTP & WebSocket" spec, "HTTP
//! Connection Scope"), made on the loop's thread from the head hyper parsed.
//!
//! Keys that never change in a worker are put once in a template dict that each scope copies.
//! Header names hyper knows (its standard ones, all lower case as ASGI wants) are made into
//! bytes once and reused; values, the path and the addresses are made per request.
//!
//! A request that nginx forwarded over the uwsgi protocol is described as nginx saw it, as the
//! WSGI environ does: the client is REMOTE_ADDR/REMOTE_PORT, the server SERVER_NAME/
//! SERVER_PORT, the scheme what UWSGI_SCHEME or X-Forwarded-Proto said.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, Method, Version};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::wsgi::environ::{ConnEnv, Peer};

/// The ASGI version and the version of the HTTP spec followed: 2.4 says `send()` raises an
/// `OSError` once the client is gone (which apps such as Starlette's streaming responses
/// rely on instead of watching `receive()`).
const SPEC_VERSION: &str = "2.4";

/// Makes scopes; lives on the loop's thread.
pub struct Scopes {
    template: Py<PyDict>,
    /// Common header names as bytes, made on first use.
    names: HashMap<HeaderName, Py<PyBytes>>,
    /// `(host, port)` tuples of the addresses seen lately: a keep-alive connection's client
    /// and every connection's server repeat (formatting an address was ~1.3% of the loop).
    addresses: HashMap<SocketAddr, Py<PyTuple>>,
}

/// The most addresses [`Scopes`] keeps; past it the table starts anew.
const ADDRESSES_MAX: usize = 4096;

impl Scopes {
    pub fn new(py: Python<'_>) -> PyResult<Scopes> {
        let template = PyDict::new(py);
        template.set_item(intern!(py, "type"), intern!(py, "http"))?;
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", SPEC_VERSION)?;
        template.set_item(intern!(py, "asgi"), asgi)?;
        template.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
        template.set_item(intern!(py, "scheme"), intern!(py, "http"))?;
        template.set_item(intern!(py, "root_path"), intern!(py, ""))?;
        // Present already, so setting them per request replaces entries in the copy.
        for key in [
            "method",
            "path",
            "raw_path",
            "query_string",
            "headers",
            "client",
            "server",
            "state",
        ] {
            template.set_item(PyString::intern(py, key), py.None())?;
        }
        Ok(Scopes {
            template: template.unbind(),
            names: HashMap::new(),
            addresses: HashMap::new(),
        })
    }

    /// The scope of a request; `state` is the lifespan's, copied (shallowly) per request.
    pub fn build<'py>(
        &mut self,
        py: Python<'py>,
        parts: &Parts,
        conn: &ConnEnv,
        state: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let scope = self.template.bind(py).copy()?;
        scope.set_item(intern!(py, "method"), method(py, &parts.method))?;
        if parts.version == Version::HTTP_10 {
            scope.set_item(intern!(py, "http_version"), intern!(py, "1.0"))?;
        }
        let raw_path = parts.uri.path();
        let path: Cow<'_, str> = if raw_path.contains('%') {
            percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy()
        } else {
            Cow::Borrowed(raw_path)
        };
        scope.set_item(intern!(py, "path"), path.as_ref())?;
        scope.set_item(
            intern!(py, "raw_path"),
            PyBytes::new(py, raw_path.as_bytes()),
        )?;
        let query = parts.uri.query().unwrap_or("");
        scope.set_item(
            intern!(py, "query_string"),
            PyBytes::new(py, query.as_bytes()),
        )?;
        let headers = PyList::empty(py);
        for (name, value) in &parts.headers {
            let name = match self.names.get(name) {
                Some(bytes) => bytes.clone_ref(py).into_bound(py),
                None => {
                    let bytes = PyBytes::new(py, name.as_str().as_bytes());
                    if common(name) {
                        self.names.insert(name.clone(), bytes.clone().unbind());
                    }
                    bytes
                }
            };
            let value = PyBytes::new(py, value.as_bytes());
            headers.append(PyTuple::new(py, [name, value])?)?;
        }
        scope.set_item(intern!(py, "headers"), headers)?;
        if conn.is_tls() {
            scope.set_item(intern!(py, "scheme"), intern!(py, "https"))?;
        }
        let forwarded = conn.forwarded_vars();
        if forwarded.is_empty() {
            match conn.peer() {
                Peer::Tcp { remote, local } => {
                    scope.set_item(intern!(py, "client"), self.address(py, remote)?)?;
                    scope.set_item(intern!(py, "server"), self.address(py, local)?)?;
                }
                Peer::Unix { path } => {
                    scope.set_item(intern!(py, "server"), (path.as_str(), py.None()))?;
                }
            }
        } else {
            describe_forwarded(py, &scope, forwarded)?;
        }
        scope.set_item(intern!(py, "state"), state.copy()?)?;
        Ok(scope)
    }
}

impl Scopes {
    /// `addr` as `(host, port)`.
    fn address<'py>(
        &mut self,
        py: Python<'py>,
        addr: &SocketAddr,
    ) -> PyResult<Bound<'py, PyTuple>> {
        if let Some(tuple) = self.addresses.get(addr) {
            return Ok(tuple.bind(py).clone());
        }
        if self.addresses.len() >= ADDRESSES_MAX {
            self.addresses.clear();
        }
        let tuple = (addr.ip().to_string(), addr.port()).into_pyobject(py)?;
        self.addresses.insert(*addr, tuple.clone().unbind());
        Ok(tuple)
    }
}

/// Whether `name` is common enough to keep its bytes (a client's made-up names are not kept:
/// they would grow the table without bound).
fn common(name: &HeaderName) -> bool {
    COMMON.contains(&name.as_str())
}

/// The request headers common enough to keep their names' bytes.
const COMMON: &[&str] = &[
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "authorization",
    "referer",
    "origin",
    "cache-control",
    "pragma",
    "if-none-match",
    "if-modified-since",
    "upgrade-insecure-requests",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
];

/// The method as a str, interned for the common ones.
fn method<'py>(py: Python<'py>, method: &Method) -> Bound<'py, PyString> {
    match *method {
        Method::GET => intern!(py, "GET").clone(),
        Method::POST => intern!(py, "POST").clone(),
        Method::HEAD => intern!(py, "HEAD").clone(),
        Method::PUT => intern!(py, "PUT").clone(),
        Method::DELETE => intern!(py, "DELETE").clone(),
        Method::PATCH => intern!(py, "PATCH").clone(),
        Method::OPTIONS => intern!(py, "OPTIONS").clone(),
        _ => PyString::new(py, method.as_str()),
    }
}

/// The client, server, scheme and HTTP version of a request nginx forwarded.
fn describe_forwarded(
    py: Python<'_>,
    scope: &Bound<'_, PyDict>,
    vars: &[(Bytes, Bytes)],
) -> PyResult<()> {
    let var = |key: &[u8]| {
        vars.iter()
            .rev()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let port = |key: &[u8]| var(key).and_then(|p| p.parse::<u16>().ok());
    if let Some(addr) = var(b"REMOTE_ADDR").filter(|a| !a.is_empty()) {
        scope.set_item(
            intern!(py, "client"),
            (addr, port(b"REMOTE_PORT").unwrap_or(0)),
        )?;
    }
    if let Some(name) = var(b"SERVER_NAME") {
        scope.set_item(intern!(py, "server"), (name, port(b"SERVER_PORT")))?;
    }
    if let Some(scheme) = var(b"wsgi.url_scheme") {
        scope.set_item(intern!(py, "scheme"), scheme)?;
    }
    if var(b"SERVER_PROTOCOL").as_deref() == Some("HTTP/1.1") {
        scope.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
    }
    Ok(())
}
