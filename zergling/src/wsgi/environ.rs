//! Building the WSGI environ (PEP 3333) from a parsed request.
//!
//! Keys that never change in a worker are put once in a template dict; each request copies it
//! and adds its own keys. Strings from the wire are decoded as latin-1, as PEP 3333 requires
//! for "native strings".

use std::net::SocketAddr;

use http::request::Parts;
use http::Version;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

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
    Ok(env.unbind())
}

/// Latin-1 decoding of wire bytes (ASCII is the fast, common case).
fn native<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => PyString::new(py, s),
        _ => PyString::new(py, &bytes.iter().map(|&b| b as char).collect::<String>()),
    }
}

/// The environ for one request.
pub fn build<'py>(
    py: Python<'py>,
    template: &Bound<'py, PyDict>,
    parts: &Parts,
    peer: &Peer,
    input: Input,
) -> PyResult<Bound<'py, PyDict>> {
    let env = template.copy()?;
    env.set_item(intern!(py, "REQUEST_METHOD"), parts.method.as_str())?;
    let raw_path = parts.uri.path();
    let path: Vec<u8> = percent_encoding::percent_decode_str(raw_path).collect();
    env.set_item(intern!(py, "PATH_INFO"), native(py, &path))?;
    env.set_item(
        intern!(py, "QUERY_STRING"),
        native(py, parts.uri.query().unwrap_or("").as_bytes()),
    )?;
    let uri = parts
        .uri
        .path_and_query()
        .map_or(raw_path, |pq| pq.as_str());
    env.set_item(intern!(py, "REQUEST_URI"), native(py, uri.as_bytes()))?;
    env.set_item(
        intern!(py, "SERVER_PROTOCOL"),
        match parts.version {
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
    )?;
    match peer {
        Peer::Tcp { remote, local } => {
            env.set_item(intern!(py, "REMOTE_ADDR"), remote.ip().to_string())?;
            env.set_item(intern!(py, "REMOTE_PORT"), remote.port().to_string())?;
            env.set_item(intern!(py, "SERVER_NAME"), local.ip().to_string())?;
            env.set_item(intern!(py, "SERVER_PORT"), local.port().to_string())?;
        }
        Peer::Unix { path } => {
            env.set_item(intern!(py, "REMOTE_ADDR"), "")?;
            env.set_item(intern!(py, "SERVER_NAME"), path.as_str())?;
            env.set_item(intern!(py, "SERVER_PORT"), "0")?;
        }
    }
    add_headers(py, &env, &parts.headers)?;
    env.set_item(intern!(py, "wsgi.input"), Bound::new(py, input)?)?;
    Ok(env)
}

/// `Content-Type`/`Content-Length` as CGI names, every other header as `HTTP_*`. Repeated
/// headers are joined with ", " (cookies with "; "). Names with `_` are dropped, as nginx
/// does, so `X_Forwarded_For` cannot pose as `X-Forwarded-For`.
fn add_headers(py: Python<'_>, env: &Bound<'_, PyDict>, headers: &http::HeaderMap) -> PyResult<()> {
    for name in headers.keys() {
        let key = match name.as_str() {
            "content-type" => "CONTENT_TYPE".to_owned(),
            "content-length" => "CONTENT_LENGTH".to_owned(),
            n if n.contains('_') => continue,
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
        let mut values = headers.get_all(name).iter();
        let first = values.next().map(|v| v.as_bytes()).unwrap_or_default();
        let value = match values.next() {
            None => native(py, first),
            Some(second) => {
                let sep: &[u8] = if name == http::header::COOKIE {
                    b"; "
                } else {
                    b", "
                };
                let mut joined = first.to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(sep);
                    joined.extend_from_slice(v.as_bytes());
                }
                native(py, &joined)
            }
        };
        env.set_item(key, value)?;
    }
    Ok(())
}
