//! The uwsgi protocol on `socket` listeners: what nginx's `uwsgi_pass` speaks (uWSGI:
//! `core/protocol.c`, `plugins/python/wsgi_subhandler.c`; nginx: `ngx_http_uwsgi_module.c`).
//!
//! A request is a packet: a 4-byte header (modifier1, the size of the rest as a u16
//! little-endian, modifier2), then CGI variables, each a key and a value preceded by their u16
//! little-endian lengths. The request body follows the packet, CONTENT_LENGTH bytes of it. The
//! answer is an HTTP/1.x response (status line, headers, body), which nginx parses as it would
//! a proxied one.
//!
//! What nginx does as a uwsgi client, and this module is built for:
//! - One request per connection: its uwsgi module never keeps an upstream connection alive
//!   (`upstream { keepalive N; }` does nothing for it), so a connection closes after its one
//!   response, as uWSGI's do.
//! - The body always comes with CONTENT_LENGTH. A chunked upload is read whole by nginx and
//!   sent de-chunked with its length, even with `uwsgi_request_buffering off` (which streams
//!   only bodies the client sent with a Content-Length, as they arrive).
//! - It parses no chunked response from a uwsgi server (only `proxy_pass` does): a response
//!   without Content-Length ends with the connection.
//!
//! Serving: a packet is read and checked here, bounded by `buffer-size` (a malformed, oversized
//! or truncated one closes its connection with a log line; the worker serves on), restated as
//! the HTTP/1.0 request head it stands for, and put before the body still in the socket; the
//! connection is then served by the code that serves HTTP (`worker::http`): its refusals,
//! `static-map`, WSGI calls, request body streaming, drain on stop and watchdog. HTTP/1.0,
//! because then hyper answers as nginx expects: never a chunked body (a Content-Length, or the
//! end of the connection) and a close after the response. The environ, though, is made of what
//! nginx sent, as uWSGI makes it (see [`ConnEnv::forwarded`]): REMOTE_ADDR is the client's,
//! SERVER_NAME and SERVER_PORT are nginx's virtual server's, PATH_INFO nginx's decoded path,
//! and `wsgi.url_scheme` comes from UWSGI_SCHEME, X-Forwarded-Proto or HTTPS.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::http::State;
use crate::wsgi::environ::{ConnEnv, Peer};

/// The size of a packet's header.
const HEADER: usize = 4;

/// modifier1 of a WSGI request: uWSGI's python plugin's, and nginx's default.
const MODIFIER_WSGI: u8 = 0;

/// modifier1 30 (uWSGI's `UWSGI_MODIFIER_MANAGE_PATH_INFO`, nginx's `uwsgi_modifier1 30;`): a
/// WSGI request whose PATH_INFO begins with its SCRIPT_NAME, which is taken off it.
const MODIFIER_MANAGE_PATH_INFO: u8 = 30;

/// A decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub modifier1: u8,
    pub modifier2: u8,
    /// The variables in the order sent; keys are never empty.
    pub vars: Vec<(Bytes, Bytes)>,
}

/// Why a connection's packet cannot be served; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPacket {
    #[error("a packet of {size} bytes of variables, over buffer-size ({limit})")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "modifier1 {0} is not served (0: WSGI; 30: WSGI with SCRIPT_NAME taken off PATH_INFO)"
    )]
    Modifier(u8),
    #[error(
        "an HTTP request, not a uwsgi packet: `socket` listeners speak uwsgi (nginx's \
         uwsgi_pass); HTTP clients and proxy_pass belong on `http`"
    )]
    Http,
    #[error("the connection ended {have} bytes into a packet of {need}")]
    Truncated { have: usize, need: usize },
    #[error("variable {index}: {what}")]
    Var { index: usize, what: &'static str },
    #[error("REQUEST_METHOD is missing or not a method")]
    Method,
    #[error("CONTENT_LENGTH {0:?} is not a length")]
    ContentLength(String),
}

/// Takes the packet `buf` begins with off it: `None` while it is incomplete. What follows the
/// packet (the start of the body) stays in `buf`. The header is checked as soon as it is in,
/// so an oversized packet is refused before it is read.
pub fn decode(buf: &mut BytesMut, limit: usize) -> Result<Option<Packet>, BadPacket> {
    let Some(&[modifier1, low, high, modifier2]) = buf.get(..HEADER) else {
        return Ok(None);
    };
    if modifier1 != MODIFIER_WSGI && modifier1 != MODIFIER_MANAGE_PATH_INFO {
        let letter = |b: &u8| b.is_ascii_uppercase() || *b == b' ';
        return Err(if buf[..HEADER].iter().all(letter) {
            // "GET ", "POST", "HEAD"...: the first letters of a method.
            BadPacket::Http
        } else {
            BadPacket::Modifier(modifier1)
        });
    }
    let size = usize::from(u16::from_le_bytes([low, high]));
    if size > limit {
        return Err(BadPacket::TooLarge { size, limit });
    }
    if buf.len() < HEADER + size {
        return Ok(None);
    }
    buf.advance(HEADER);
    let data = buf.split_to(size).freeze();
    Ok(Some(Packet {
        modifier1,
        modifier2,
        vars: parse_vars(&data)?,
    }))
}

/// The whole size of the packet `buf` begins with, once its header is in.
fn packet_size(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..HEADER)?;
    Some(HEADER + usize::from(u16::from_le_bytes([header[1], header[2]])))
}

fn parse_vars(data: &Bytes) -> Result<Vec<(Bytes, Bytes)>, BadPacket> {
    let mut vars = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let index = vars.len();
        let bad = |what| BadPacket::Var { index, what };
        let key = take(data, &mut at).ok_or(bad("its key runs past the packet"))?;
        if key.is_empty() {
            return Err(bad("an empty key"));
        }
        let value = take(data, &mut at).ok_or(bad("its value runs past the packet"))?;
        vars.push((key, value));
    }
    Ok(vars)
}

/// A length-prefixed string at `at`, which moves past it.
fn take(data: &Bytes, at: &mut usize) -> Option<Bytes> {
    let len = data.get(*at..*at + 2)?;
    let start = *at + 2;
    let end = start + usize::from(u16::from_le_bytes([len[0], len[1]]));
    if end > data.len() {
        return None;
    }
    *at = end;
    Some(data.slice(start..end))
}

/// A packet as the HTTP path takes it.
#[derive(Debug)]
pub struct Restated {
    /// The HTTP/1.0 request head it stands for, for hyper to parse.
    pub head: Vec<u8>,
    /// The variables for the environ: duplicates merged, `wsgi.url_scheme` added.
    pub vars: Vec<(Bytes, Bytes)>,
}

/// Request headers the restated head leaves out, though the environ keeps their variables:
/// hyper would act on them, and they are nginx's business with its client (the body's framing
/// is CONTENT_LENGTH's; nginx answered any `Expect: 100-continue` itself), or set from the
/// CGI variables instead (Content-Type, Content-Length).
const LEFT_OUT: &[&[u8]] = &[
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"expect",
    b"content-length",
    b"content-type",
];

/// Restates a packet for the HTTP path (see the module doc).
pub fn restate(packet: Packet) -> Result<Restated, BadPacket> {
    let scheme = url_scheme(&packet.vars);
    let mut vars = merge(packet.vars);
    let get = |vars: &[(Bytes, Bytes)], key: &[u8]| -> Option<Bytes> {
        vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let method = get(&vars, b"REQUEST_METHOD")
        .filter(|m| Method::from_bytes(m).is_ok())
        .ok_or(BadPacket::Method)?;
    let length = match get(&vars, b"CONTENT_LENGTH") {
        Some(v) if !v.is_empty() => Some(parse_length(&v)?),
        _ => None,
    };
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(&method);
    head.push(b' ');
    target(
        &mut head,
        get(&vars, b"PATH_INFO").as_deref(),
        get(&vars, b"QUERY_STRING").as_deref(),
        get(&vars, b"REQUEST_URI").as_deref(),
    );
    head.extend_from_slice(b" HTTP/1.0\r\n");
    for (key, value) in &vars {
        if let Some(name) = key.strip_prefix(b"HTTP_") {
            let name: Vec<u8> = name
                .iter()
                .map(|&b| {
                    if b == b'_' {
                        b'-'
                    } else {
                        b.to_ascii_lowercase()
                    }
                })
                .collect();
            if !LEFT_OUT.contains(&name.as_slice()) {
                header_line(&mut head, &name, value);
            }
        }
    }
    if let Some(content_type) = get(&vars, b"CONTENT_TYPE").filter(|v| !v.is_empty()) {
        header_line(&mut head, b"content-type", &content_type);
    }
    if let Some(length) = length {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");

    if packet.modifier1 == MODIFIER_MANAGE_PATH_INFO {
        manage_path_info(&mut vars);
    }
    // The server's own keys are not the gateway's to set.
    vars.retain(|(key, _)| !key.starts_with(b"wsgi."));
    vars.push((Bytes::from_static(b"wsgi.url_scheme"), scheme));
    Ok(Restated { head, vars })
}

/// Repeated variables as one: a header's values joined as HTTP joins them (", ", or "; " for
/// cookies), as zerg's HTTP path does (nginx before 1.23 sends a repeated header as repeated
/// variables); of any other, the last, as uWSGI's environ keeps. In the order first sent.
fn merge(vars: Vec<(Bytes, Bytes)>) -> Vec<(Bytes, Bytes)> {
    let mut merged: Vec<(Bytes, Bytes)> = Vec::with_capacity(vars.len());
    let mut seen: HashMap<Bytes, usize> = HashMap::with_capacity(vars.len());
    for (key, value) in vars {
        let Some(&i) = seen.get(&key) else {
            seen.insert(key.clone(), merged.len());
            merged.push((key, value));
            continue;
        };
        let slot = &mut merged[i].1;
        if key.starts_with(b"HTTP_") {
            let sep: &[u8] = if key == "HTTP_COOKIE" { b"; " } else { b", " };
            let mut joined = BytesMut::with_capacity(slot.len() + sep.len() + value.len());
            joined.extend_from_slice(slot);
            joined.extend_from_slice(sep);
            joined.extend_from_slice(&value);
            *slot = joined.freeze();
        } else {
            *slot = value;
        }
    }
    merged
}

/// `wsgi.url_scheme` as uWSGI sets it: UWSGI_SCHEME or X-Forwarded-Proto, whichever came last;
/// else `https` if HTTPS (or X-Forwarded-Ssl) is `on` or begins with `1`; else `http`.
fn url_scheme(vars: &[(Bytes, Bytes)]) -> Bytes {
    let mut scheme = None;
    let mut https = None;
    for (key, value) in vars {
        match &key[..] {
            b"UWSGI_SCHEME" | b"HTTP_X_FORWARDED_PROTO" if !value.is_empty() => {
                scheme = Some(value)
            }
            b"HTTPS" | b"HTTP_X_FORWARDED_SSL" if !value.is_empty() => https = Some(value),
            _ => {}
        }
    }
    match (scheme, https) {
        (Some(scheme), _) => scheme.clone(),
        (None, Some(on)) if on.eq_ignore_ascii_case(b"on") || on.starts_with(b"1") => {
            Bytes::from_static(b"https")
        }
        _ => Bytes::from_static(b"http"),
    }
}

/// modifier1 30: SCRIPT_NAME is taken off the start of PATH_INFO (uWSGI takes off as many
/// bytes without looking; this only takes off what is there).
fn manage_path_info(vars: &mut [(Bytes, Bytes)]) {
    let Some(script) = vars
        .iter()
        .find(|(k, _)| k == "SCRIPT_NAME")
        .map(|(_, v)| v.clone())
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    if let Some((_, path)) = vars.iter_mut().find(|(k, _)| k == "PATH_INFO") {
        if path.starts_with(&script) {
            path.advance(script.len());
        }
    }
}

fn parse_length(value: &[u8]) -> Result<u64, BadPacket> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BadPacket::ContentLength(String::from_utf8_lossy(value).into_owned()))
}

/// The request target: PATH_INFO (nginx's decoded, normalised path, which is also what uWSGI's
/// `static-map` looks at) percent-encoded again, and the query; REQUEST_URI's path if there is
/// no PATH_INFO. Only what this target's path decodes to counts (static-map, the refusals):
/// the environ takes REQUEST_URI, PATH_INFO and QUERY_STRING as sent.
fn target(head: &mut Vec<u8>, path: Option<&[u8]>, query: Option<&[u8]>, uri: Option<&[u8]>) {
    let start = head.len();
    match (path.filter(|p| !p.is_empty()), uri) {
        (Some(path), _) => {
            if !path.starts_with(b"/") {
                head.push(b'/');
            }
            encode(head, path, b"/");
        }
        (None, Some(uri)) if uri.starts_with(b"/") => {
            let path = uri.split(|&b| b == b'?').next().unwrap_or_default();
            // Sent encoded already: only what may not stand in a target is encoded.
            encode(head, path, b"/%");
        }
        _ => head.push(b'/'),
    }
    debug_assert!(head.len() > start);
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        head.push(b'?');
        encode(head, query, b"/?%");
    }
}

/// Appends `bytes`, percent-encoding every byte but unreserved ones, sub-delims, `:`, `@` and
/// those in `keep`: what any URI parser takes in a path or a query (RFC 3986).
fn encode(out: &mut Vec<u8>, bytes: &[u8], keep: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        let plain =
            b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) || keep.contains(&b);
        if plain {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Appends `name: value` if it is a header hyper would take as sent; one that is not (a CR or
/// LF in the value, which could smuggle a header line in) is left out of the head, not of the
/// environ.
fn header_line(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if HeaderName::from_bytes(name).is_err() || HeaderValue::from_bytes(value).is_err() {
        return;
    }
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Why no packet came.
enum Unread {
    Bad(BadPacket),
    Io(std::io::Error),
    /// Closed before sending anything (a port check).
    Closed,
}

/// Reads a connection's packet: the packet, and what of the body came with it.
async fn read_packet<S: AsyncRead + Unpin>(
    io: &mut S,
    limit: usize,
) -> Result<(Packet, BytesMut), Unread> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(packet) = decode(&mut buf, limit).map_err(Unread::Bad)? {
            return Ok((packet, buf));
        }
        let want = packet_size(&buf).unwrap_or(HEADER) - buf.len();
        buf.reserve(want.max(4096));
        if io.read_buf(&mut buf).await.map_err(Unread::Io)? == 0 {
            return Err(match packet_size(&buf) {
                _ if buf.is_empty() => Unread::Closed,
                need => Unread::Bad(BadPacket::Truncated {
                    have: buf.len(),
                    need: need.unwrap_or(HEADER),
                }),
            });
        }
    }
}

/// Serves one uwsgi connection: its packet, then its request through the HTTP path. A stop
/// that comes before the packet leaves it [`IDLE_DRAIN_GRACE`](super::http::IDLE_DRAIN_GRACE) to come (nginx sends it as it
/// connects), and the request is then answered like any in flight.
pub async fn serve<S>(mut io: S, peer: Peer, state: Arc<State>, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let packet = read_packet(&mut io, state.limits.head_size);
    let read = super::opening::within(packet, state.header_timeout, &mut stop).await;
    let restated = match read {
        Some(Ok((packet, rest))) => restate(packet).map(|r| (r, rest)),
        Some(Err(Unread::Bad(bad))) => Err(bad),
        Some(Err(Unread::Io(e))) => {
            tracing::debug!(peer = %describe(&peer), error = %e, "uwsgi: reading the packet failed");
            return;
        }
        Some(Err(Unread::Closed)) => return,
        None => {
            tracing::debug!(peer = %describe(&peer), "uwsgi: no packet in time; connection closed");
            return;
        }
    };
    let (restated, rest) = match restated {
        Ok(r) => r,
        Err(bad) => {
            tracing::warn!(peer = %describe(&peer), "uwsgi: {bad}; connection closed");
            return;
        }
    };
    let mut prefix = BytesMut::with_capacity(restated.head.len() + rest.len());
    prefix.extend_from_slice(&restated.head);
    prefix.extend_from_slice(&rest);
    let io = Prefixed {
        prefix: prefix.freeze(),
        io,
    };
    let conn = Arc::new(ConnEnv::forwarded(peer, restated.vars));
    super::http::serve_connection(io, conn, state, stop).await;
}

fn describe(peer: &Peer) -> String {
    match peer {
        Peer::Tcp { remote, .. } => remote.to_string(),
        Peer::Unix { path } => path.clone(),
    }
}

/// A connection whose reads begin with `prefix` (the restated head and the body bytes read
/// with the packet), then go on from the socket; writes go straight to it.
struct Prefixed<S> {
    prefix: Bytes,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A packet as nginx writes one.
    fn encode(modifier1: u8, vars: &[(&[u8], &[u8])], modifier2: u8) -> Vec<u8> {
        let mut data = Vec::new();
        for (k, v) in vars {
            data.extend_from_slice(&(k.len() as u16).to_le_bytes());
            data.extend_from_slice(k);
            data.extend_from_slice(&(v.len() as u16).to_le_bytes());
            data.extend_from_slice(v);
        }
        let mut packet = vec![modifier1];
        packet.extend_from_slice(&(data.len() as u16).to_le_bytes());
        packet.push(modifier2);
        packet.extend_from_slice(&data);
        packet
    }

    /// What nginx's uwsgi_params sends for `GET /a%20b?x=1` with a Host header.
    fn nginx_get() -> Vec<(&'static [u8], &'static [u8])> {
        vec![
            (b"QUERY_STRING", b"x=1"),
            (b"REQUEST_METHOD", b"GET"),
            (b"CONTENT_TYPE", b""),
            (b"CONTENT_LENGTH", b""),
            (b"REQUEST_URI", b"/a%20b?x=1"),
            (b"PATH_INFO", b"/a b"),
            (b"DOCUMENT_ROOT", b"/usr/share/nginx/html"),
            (b"SERVER_PROTOCOL", b"HTTP/1.1"),
            (b"REQUEST_SCHEME", b"http"),
            (b"REMOTE_ADDR", b"192.0.2.7"),
            (b"REMOTE_PORT", b"50000"),
            (b"SERVER_PORT", b"80"),
            (b"SERVER_NAME", b"example.org"),
            (b"HTTP_HOST", b"example.org"),
            (b"HTTP_USER_AGENT", b"curl/8"),
        ]
    }

    fn decoded(bytes: &[u8], limit: usize) -> Result<Option<Packet>, BadPacket> {
        decode(&mut BytesMut::from(bytes), limit)
    }

    fn restated(vars: &[(&[u8], &[u8])]) -> Restated {
        restate(decoded(&encode(0, vars, 0), 65535).unwrap().unwrap()).unwrap()
    }

    fn var<'a>(r: &'a Restated, key: &str) -> Option<&'a [u8]> {
        r.vars
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| &v[..])
    }

    #[test]
    fn a_packet_round_trips_and_leaves_the_body_in_the_buffer() {
        let vars = nginx_get();
        let mut buf = BytesMut::from(&encode(0, &vars, 7)[..]);
        buf.extend_from_slice(b"body");
        let packet = decode(&mut buf, 65535).unwrap().unwrap();
        assert_eq!((packet.modifier1, packet.modifier2), (0, 7));
        let got: Vec<(&[u8], &[u8])> = packet.vars.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(got, vars);
        assert_eq!(&buf[..], b"body");
    }

    #[test]
    fn every_prefix_of_a_packet_waits_for_more() {
        let packet = encode(0, &nginx_get(), 0);
        for end in 0..packet.len() {
            assert_eq!(decoded(&packet[..end], 65535), Ok(None), "prefix of {end}");
        }
        assert!(decoded(&packet, 65535).unwrap().is_some());
    }

    #[test]
    fn an_empty_packet_has_no_variables() {
        assert_eq!(
            decoded(&[0, 0, 0, 0], 4096).unwrap().unwrap().vars,
            Vec::new()
        );
    }

    #[test]
    fn a_packet_over_the_limit_is_refused_from_its_header() {
        assert_eq!(
            decoded(&[0, 0x01, 0x10, 0], 4096),
            Err(BadPacket::TooLarge {
                size: 4097,
                limit: 4096
            })
        );
        assert!(decoded(&encode(0, &nginx_get(), 0), 64).is_err());
    }

    #[test]
    fn garbage_is_refused_and_http_is_named() {
        assert_eq!(decoded(b"GET / HTTP/1.1\r\n", 65535), Err(BadPacket::Http));
        assert_eq!(decoded(b"POST", 65535), Err(BadPacket::Http));
        assert_eq!(decoded(&[5, 0, 0, 0], 65535), Err(BadPacket::Modifier(5)));
        // A key whose length runs past the packet, an empty key, a value past the end.
        let bad = [0, 4, 0, 0, 9, 0, b'A', b'B'];
        assert!(matches!(
            decoded(&bad, 65535),
            Err(BadPacket::Var { index: 0, .. })
        ));
        let empty_key = [0, 4, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            decoded(&empty_key, 65535),
            Err(BadPacket::Var {
                what: "an empty key",
                ..
            })
        ));
        let mut short_value = encode(0, &[(b"A", b"1")], 0);
        short_value[HEADER + 3] = 2; // the value's length now runs past the packet
        assert!(matches!(
            decoded(&short_value, 65535),
            Err(BadPacket::Var { index: 0, .. })
        ));
        // A key with no value at all.
        let lone_key = [0, 3, 0, 0, 1, 0, b'A'];
        assert!(decoded(&lone_key, 65535).is_err());
    }

    #[test]
    fn nginx_request_is_restated_as_http_1_0() {
        let r = restated(&nginx_get());
        assert_eq!(
            String::from_utf8(r.head.clone()).unwrap(),
            "GET /a%20b?x=1 HTTP/1.0\r\nhost: example.org\r\nuser-agent: curl/8\r\n\r\n"
        );
        assert_eq!(var(&r, "wsgi.url_scheme"), Some(&b"http"[..]));
        assert_eq!(var(&r, "REMOTE_ADDR"), Some(&b"192.0.2.7"[..]));
        assert_eq!(var(&r, "CONTENT_LENGTH"), Some(&b""[..]));
    }

    #[test]
    fn the_body_is_framed_by_content_length_alone() {
        let mut vars = nginx_get();
        vars[1].1 = b"POST";
        vars[2].1 = b"text/plain";
        vars[3].1 = b"11";
        vars.push((b"HTTP_TRANSFER_ENCODING", b"chunked"));
        vars.push((b"HTTP_EXPECT", b"100-continue"));
        vars.push((b"HTTP_CONNECTION", b"keep-alive"));
        vars.push((b"HTTP_CONTENT_LENGTH", b"999"));
        let r = restated(&vars);
        let head = String::from_utf8(r.head.clone()).unwrap();
        assert!(head.starts_with("POST /a%20b?x=1 HTTP/1.0\r\n"), "{head}");
        assert!(head.ends_with("content-type: text/plain\r\ncontent-length: 11\r\n\r\n"));
        for gone in ["transfer-encoding", "expect", "connection", "999"] {
            assert!(!head.contains(gone), "{gone} in {head}");
        }
        // The environ still has what nginx sent.
        assert_eq!(var(&r, "HTTP_TRANSFER_ENCODING"), Some(&b"chunked"[..]));
    }

    #[test]
    fn bad_method_or_length_is_refused() {
        let mut vars = nginx_get();
        vars[3].1 = b"12x";
        let packet = decoded(&encode(0, &vars, 0), 65535).unwrap().unwrap();
        assert_eq!(
            restate(packet).unwrap_err(),
            BadPacket::ContentLength("12x".into())
        );
        for method in [&b""[..], b"G T", b"GET\r\n"] {
            let mut vars = nginx_get();
            vars[1].1 = method;
            let packet = decoded(&encode(0, &vars, 0), 65535).unwrap().unwrap();
            assert_eq!(restate(packet).unwrap_err(), BadPacket::Method);
        }
        let vars: Vec<_> = nginx_get().into_iter().skip(2).collect();
        let packet = decoded(&encode(0, &vars, 0), 65535).unwrap().unwrap();
        assert_eq!(restate(packet).unwrap_err(), BadPacket::Method);
    }

    #[test]
    fn a_header_line_cannot_be_smuggled_into_the_head() {
        let mut vars = nginx_get();
        vars.push((b"HTTP_X_EVIL", b"a\r\nContent-Length: 5"));
        vars.push((b"HTTP_BAD NAME", b"1"));
        let r = restated(&vars);
        let head = String::from_utf8_lossy(&r.head);
        assert!(!head.contains("x-evil") && !head.contains("bad"), "{head}");
        assert_eq!(var(&r, "HTTP_X_EVIL"), Some(&b"a\r\nContent-Length: 5"[..]));
    }

    #[test]
    fn the_scheme_comes_from_uwsgi_scheme_forwarded_proto_or_https() {
        let with = |extra: &[(&'static [u8], &'static [u8])]| {
            let mut vars = nginx_get();
            vars.extend_from_slice(extra);
            var(&restated(&vars), "wsgi.url_scheme").map(<[u8]>::to_vec)
        };
        assert_eq!(with(&[(b"HTTPS", b"on")]).unwrap(), b"https");
        assert_eq!(with(&[(b"HTTPS", b"1")]).unwrap(), b"https");
        assert_eq!(with(&[(b"HTTPS", b"off")]).unwrap(), b"http");
        assert_eq!(with(&[(b"UWSGI_SCHEME", b"https")]).unwrap(), b"https");
        assert_eq!(
            with(&[(b"HTTPS", b"on"), (b"UWSGI_SCHEME", b"http")]).unwrap(),
            b"http"
        );
        assert_eq!(
            with(&[(b"HTTP_X_FORWARDED_PROTO", b"https")]).unwrap(),
            b"https"
        );
        // The gateway does not set the server's own keys.
        let r = restated(&[(b"REQUEST_METHOD", b"GET"), (b"wsgi.input", b"x")]);
        assert_eq!(var(&r, "wsgi.input"), None);
    }

    #[test]
    fn modifier_30_takes_script_name_off_path_info() {
        let mut vars = nginx_get();
        vars[5].1 = b"/galaxy/api/jobs";
        vars.push((b"SCRIPT_NAME", b"/galaxy"));
        let packet = decoded(&encode(30, &vars, 0), 65535).unwrap().unwrap();
        let r = restate(packet).unwrap();
        assert_eq!(var(&r, "PATH_INFO"), Some(&b"/api/jobs"[..]));
        // The target keeps the whole path, as uWSGI's static-map sees it.
        assert!(r.head.starts_with(b"GET /galaxy/api/jobs?x=1 "));
        // Without modifier 30, PATH_INFO is left as sent.
        let packet = decoded(&encode(0, &vars, 0), 65535).unwrap().unwrap();
        let r = restate(packet).unwrap();
        assert_eq!(var(&r, "PATH_INFO"), Some(&b"/galaxy/api/jobs"[..]));
    }

    #[test]
    fn repeated_headers_are_joined_and_other_variables_last_wins() {
        let mut vars = nginx_get();
        vars.push((b"HTTP_COOKIE", b"a=1"));
        vars.push((b"HTTP_ACCEPT", b"text/html"));
        vars.push((b"HTTP_COOKIE", b"b=2"));
        vars.push((b"HTTP_ACCEPT", b"*/*"));
        vars.push((b"SERVER_NAME", b"second"));
        let r = restated(&vars);
        assert_eq!(var(&r, "HTTP_COOKIE"), Some(&b"a=1; b=2"[..]));
        assert_eq!(var(&r, "HTTP_ACCEPT"), Some(&b"text/html, */*"[..]));
        assert_eq!(var(&r, "SERVER_NAME"), Some(&b"second"[..]));
        let head = String::from_utf8(r.head).unwrap();
        assert!(head.contains("cookie: a=1; b=2\r\n"), "{head}");
    }

    #[test]
    fn the_target_encodes_what_a_uri_may_not_hold() {
        let t = |path: Option<&[u8]>, query: Option<&[u8]>, uri: Option<&[u8]>| {
            let mut out = Vec::new();
            target(&mut out, path, query, uri);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(t(Some(b"/a b%?#\xe9"), None, None), "/a%20b%25%3F%23%E9");
        assert_eq!(
            t(Some(b"/x"), Some(b"q={1}|\""), None),
            "/x?q=%7B1%7D%7C%22"
        );
        assert_eq!(t(None, Some(b"a=1"), Some(b"/p%41th?a=1")), "/p%41th?a=1");
        assert_eq!(t(None, None, Some(b"http://elsewhere/")), "/");
        assert_eq!(t(Some(b"relative"), None, None), "/relative");
    }

    #[tokio::test]
    async fn a_prefixed_connection_reads_its_prefix_then_the_socket() {
        use tokio::io::AsyncWriteExt;
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = Prefixed {
            prefix: Bytes::from_static(b"head+"),
            io: a,
        };
        b.write_all(b"body").await.unwrap();
        drop(b);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"head+body");
    }

    /// Checks that `head` is a request head hyper takes: a method, a target that parses as a
    /// URI, HTTP/1.0, and header lines that parse as names and values.
    fn assert_parses(head: &[u8]) {
        let mut rest = head
            .strip_suffix(b"\r\n")
            .expect("a head ends with an empty line");
        // Every line ends with CRLF and holds no other CR or LF.
        let mut lines = Vec::new();
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n').expect("LF");
            let line = rest[..end].strip_suffix(b"\r").expect("CRLF");
            assert!(!line.contains(&b'\r'), "a lone CR");
            lines.push(line);
            rest = &rest[end + 1..];
        }
        let (line, headers) = lines.split_first().expect("a request line");
        let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        assert_eq!(parts.len(), 3, "{:?}", String::from_utf8_lossy(line));
        assert!(Method::from_bytes(parts[0]).is_ok());
        let uri = http::Uri::try_from(parts[1]).expect("the target is a URI");
        assert!(uri.path().starts_with('/'));
        assert_eq!(parts[2], b"HTTP/1.0");
        for line in headers {
            let colon = line.iter().position(|&b| b == b':').expect("a colon");
            HeaderName::from_bytes(&line[..colon]).expect("a header name");
            HeaderValue::from_bytes(&line[colon + 1..]).expect("a header value");
        }
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 512,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x7577_7367),
            ..ProptestConfig::default()
        }
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![
                b"REQUEST_METHOD".to_vec(),
                b"PATH_INFO".to_vec(),
                b"QUERY_STRING".to_vec(),
                b"REQUEST_URI".to_vec(),
                b"CONTENT_LENGTH".to_vec(),
                b"CONTENT_TYPE".to_vec(),
                b"SCRIPT_NAME".to_vec(),
                b"HTTPS".to_vec(),
                b"HTTP_HOST".to_vec(),
                b"HTTP_COOKIE".to_vec(),
                b"HTTP_X_A".to_vec(),
            ]),
            "HTTP_[A-Z_ -]{0,8}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 1..12),
        ]
    }

    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::sample::select(vec![
                b"GET".to_vec(),
                b"POST".to_vec(),
                b"/a/b".to_vec(),
                b"12".to_vec(),
                b"".to_vec(),
            ]),
            prop::collection::vec(any::<u8>(), 0..24),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        /// Whatever arrives, decoding returns (never panics), takes no more than it was given
        /// and never more than the limit.
        #[test]
        fn decoding_anything_is_safe(bytes in prop::collection::vec(any::<u8>(), 0..300),
                                     limit in 0usize..300) {
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(_)) = decode(&mut buf, limit) {
                prop_assert!(bytes.len() - buf.len() <= HEADER + limit);
            }
        }

        /// Any variables round-trip through a packet, and whatever a packet says, its
        /// restated head is one hyper parses.
        #[test]
        fn packets_round_trip_and_restate_to_a_parsable_head(
            vars in prop::collection::vec((key(), value()), 0..12),
            modifier in prop::sample::select(vec![0u8, 30]),
            cut in any::<prop::sample::Index>(),
        ) {
            let borrowed: Vec<(&[u8], &[u8])> =
                vars.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            let bytes = encode(modifier, &borrowed, 0);
            let packet = decoded(&bytes, 65535).unwrap().unwrap();
            let got: Vec<(&[u8], &[u8])> =
                packet.vars.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            prop_assert_eq!(&got, &borrowed);
            // Truncated anywhere: more is needed, nothing is refused.
            let end = cut.index(bytes.len());
            prop_assert_eq!(decoded(&bytes[..end], 65535), Ok(None));
            if let Ok(restated) = restate(packet) {
                assert_parses(&restated.head);
                prop_assert_eq!(
                    restated.vars.iter().filter(|(k, _)| k == "wsgi.url_scheme").count(),
                    1
                );
            }
        }
    }
}
