//! What a WSGI call hands back to hyper: the status line and headers, then the body, either
//! whole (a list response, sent with Content-Length) or as a stream of chunks (iterables and
//! `write()`), which the Python thread fills through a bounded channel.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
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

    pub fn into_response(self) -> Response<ResponseBody> {
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.reserve(self.headers.len());
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        if let Some(reason) = self.reason {
            if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
                response.extensions_mut().insert(phrase);
            }
        }
        response
    }
}

/// A response body: whole, or streamed from the Python thread.
pub enum ResponseBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<io::Result<Bytes>>),
    /// `write()` from an app called on the event loop, which must never wait for the client.
    Unbounded(mpsc::UnboundedReceiver<io::Result<Bytes>>),
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
            ResponseBody::Stream(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|r| r.map(Frame::data))),
            ResponseBody::Unbounded(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(data) => data.as_ref().is_none_or(Bytes::is_empty),
            ResponseBody::Stream(_) | ResponseBody::Unbounded(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64))
            }
            ResponseBody::Stream(_) | ResponseBody::Unbounded(_) => SizeHint::default(),
        }
    }
}
