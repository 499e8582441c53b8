//! What a WSGI call hands back to hyper: the status line and headers, then the body, either
//! whole (a list response, sent with Content-Length) or as a stream of chunks (iterables and
//! `write()`), which the Python thread fills through a bounded channel.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// How many chunks may wait between the Python thread and the socket.
pub const STREAM_DEPTH: usize = 4;

/// The head of a response and its body.
pub struct Reply {
    pub status: StatusCode,
    /// The app's reason phrase when it differs from the standard one.
    pub reason: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: ResponseBody,
}

impl Reply {
    /// A plain-text error the server itself produces (the app failed before sending headers).
    pub fn error(status: StatusCode) -> Reply {
        let text = status.canonical_reason().unwrap_or("Error");
        Reply {
            status,
            reason: None,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            )],
            body: ResponseBody::Full(Some(Bytes::from(format!("{} {text}\n", status.as_u16())))),
        }
    }

    /// An error answered for the client's fault: the connection closes after it, since the
    /// client may not frame its next request as zerg would read it.
    pub fn refusal(status: StatusCode) -> Reply {
        let mut reply = Reply::error(status);
        reply
            .headers
            .push((http::header::CONNECTION, HeaderValue::from_static("close")));
        reply
    }

    pub fn into_response(mut self) -> Response<ResponseBody> {
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some(spare) = SPARE_HEADER_MAP.take() {
            *headers = spare;
        }
        headers.reserve(self.headers.len());
        for (name, value) in self.headers.drain(..) {
            headers.append(name, value);
        }
        recycle_header_list(self.headers);
        if let Some(reason) = self.reason {
            if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
                response.extensions_mut().insert(phrase);
            }
        }
        response
    }
}

/// An app's whole body against its declared Content-Length, as PEP 3333 (and zerg's ASGI
/// side) has it: a longer body is cut to it; a shorter one is the app's error, logged, and the
/// connection closes after it. An empty answer to HEAD keeps the declared length: it is the
/// length a GET would have. Otherwise the length is dropped, for hyper to write from the body.
pub fn fit_to_length(
    headers: &mut Vec<(HeaderName, HeaderValue)>,
    content_length: &mut Option<u64>,
    body: &mut Bytes,
    head_request: bool,
) {
    let len = body.len() as u64;
    match content_length.take() {
        Some(declared) if head_request && len == 0 => *content_length = Some(declared),
        Some(declared) if declared > len => {
            tracing::warn!(
                declared,
                sent = len,
                "the app's body is shorter than its Content-Length; closing the connection"
            );
            headers.push((http::header::CONNECTION, HeaderValue::from_static("close")));
        }
        Some(declared) => body.truncate(declared as usize),
        None => {}
    }
}

/// The list a reply's headers came in, kept empty for the next reply made on this thread (most
/// are made and handed to hyper on the event loop's): one allocation and free less a request.
/// A list grown past [`SPARE_HEADERS_MAX`] is let go of.
pub fn spare_header_list() -> Vec<(HeaderName, HeaderValue)> {
    SPARE_HEADERS.take()
}

fn recycle_header_list(list: Vec<(HeaderName, HeaderValue)>) {
    if list.is_empty() && list.capacity() <= SPARE_HEADERS_MAX {
        SPARE_HEADERS.set(list);
    }
}

/// The most entries a kept header list may have room for.
const SPARE_HEADERS_MAX: usize = 32;

/// The most headers a kept header map may have room for.
const SPARE_MAP_MAX: usize = 32;

/// Keeps a request's header map, emptied into its environ, for the next response made on
/// this thread (hyper in turn keeps a response's map for the next request it parses, so with
/// both an inline call allocates none; a map kept on an app thread, where responses are not
/// made, is only replaced by the next). A map with room for more than [`SPARE_MAP_MAX`]
/// headers is let go of.
pub fn recycle_header_map(map: HeaderMap) {
    if map.is_empty() && map.capacity() <= SPARE_MAP_MAX {
        SPARE_HEADER_MAP.set(Some(map));
    }
}

thread_local! {
    static SPARE_HEADERS: std::cell::Cell<Vec<(HeaderName, HeaderValue)>> =
        const { std::cell::Cell::new(Vec::new()) };
    static SPARE_HEADER_MAP: std::cell::Cell<Option<HeaderMap>> =
        const { std::cell::Cell::new(None) };
}

/// A response body: whole, or streamed from the Python thread (or a file).
pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream(Chunks),
}

/// A body that arrives in chunks through a channel. One that ends short of the Content-Length
/// its head declared cannot be completed (PEP 3333 makes it the app's error): hyper closes the
/// connection, so the client sees a cut body. hyper drops what it still holds unwritten when
/// a body ends short, so the end is held back for one turn in which it flushes; and the cut
/// is logged.
pub struct Chunks {
    rx: Receiver,
    /// What the declared Content-Length still expects.
    owed: Option<u64>,
    /// Ended short, and hyper was given its turn to flush: the next poll ends the body.
    cut: bool,
}

enum Receiver {
    Bounded(mpsc::Receiver<io::Result<Bytes>>),
    /// `write()` from an app called on the event loop, which must never wait for the client.
    Unbounded(mpsc::UnboundedReceiver<io::Result<Bytes>>),
}

impl Chunks {
    /// Chunks from a bounded channel, for a head that declared `content_length` (if any).
    pub fn bounded(rx: mpsc::Receiver<io::Result<Bytes>>, content_length: Option<u64>) -> Self {
        Chunks::new(Receiver::Bounded(rx), content_length)
    }

    /// Chunks from an unbounded channel (a writer that must never wait).
    pub fn unbounded(
        rx: mpsc::UnboundedReceiver<io::Result<Bytes>>,
        content_length: Option<u64>,
    ) -> Self {
        Chunks::new(Receiver::Unbounded(rx), content_length)
    }

    fn new(rx: Receiver, content_length: Option<u64>) -> Self {
        Chunks {
            rx,
            owed: content_length,
            cut: false,
        }
    }

    fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.cut {
            return Poll::Ready(None);
        }
        let next = match &mut self.rx {
            Receiver::Bounded(rx) => rx.poll_recv(cx),
            Receiver::Unbounded(rx) => rx.poll_recv(cx),
        };
        match next {
            Poll::Ready(Some(Ok(data))) => {
                if let Some(owed) = &mut self.owed {
                    *owed = owed.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) if self.owed.is_some_and(|owed| owed > 0) => {
                tracing::warn!(
                    owed = self.owed,
                    "the streamed body ended short of its Content-Length; closing the connection"
                );
                // hyper flushes its buffer when the body is not ready, then polls again.
                self.cut = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other.map(|chunk| chunk.map(|r| r.map(Frame::data))),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(data) => Poll::Ready(
                data.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            ResponseBody::Stream(chunks) => chunks.poll_chunk(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(data) => data.as_ref().is_none_or(Bytes::is_empty),
            ResponseBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_with(headers: Vec<(HeaderName, HeaderValue)>) -> Reply {
        Reply {
            status: StatusCode::OK,
            reason: None,
            headers,
            body: ResponseBody::Full(None),
        }
    }

    #[test]
    fn a_replys_header_list_serves_the_next_one() {
        let mut list = spare_header_list();
        assert_eq!(list.capacity(), 0, "none spare yet on this thread");
        list.reserve(4);
        list.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        ));
        let response = reply_with(list).into_response();
        assert_eq!(response.headers()[http::header::CONTENT_TYPE], "text/plain");
        let spare = spare_header_list();
        assert!(
            spare.is_empty() && spare.capacity() >= 4,
            "emptied and kept"
        );
        assert_eq!(spare_header_list().capacity(), 0, "taken once");

        let _ = reply_with(Vec::with_capacity(SPARE_HEADERS_MAX + 1)).into_response();
        assert_eq!(
            spare_header_list().capacity(),
            0,
            "a grown list is let go of"
        );
    }

    #[test]
    fn a_requests_emptied_header_map_serves_the_next_response() {
        let mut request = HeaderMap::with_capacity(8);
        request.insert(http::header::HOST, HeaderValue::from_static("example.org"));
        let kept = request.capacity();
        recycle_header_map(request.clone());
        assert_eq!(
            reply_with(Vec::new()).into_response().headers().capacity(),
            0,
            "a map that still holds headers is not kept"
        );
        request.drain().for_each(drop);
        recycle_header_map(request);
        let list = vec![(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        )];
        let response = reply_with(list).into_response();
        assert_eq!(response.headers().capacity(), kept, "the request's map");
        assert_eq!(response.headers().len(), 1);
        assert_eq!(response.headers()[http::header::CONTENT_TYPE], "text/plain");
        assert_eq!(
            reply_with(Vec::new()).into_response().headers().capacity(),
            0,
            "taken once"
        );

        recycle_header_map(HeaderMap::with_capacity(SPARE_MAP_MAX + 1));
        assert_eq!(
            reply_with(Vec::new()).into_response().headers().capacity(),
            0,
            "a grown map is let go of"
        );
    }
}
