//! The `stats` and `metrics` endpoints: sockets the pool binds at start and serves from tasks
//! of their own. Each connection asks the supervisor for the document ([`Event::Observe`])
//! and writes it; nothing here touches a worker or a master.
//!
//! `stats` behaves as uWSGI's stats server: the JSON is written and the connection closed;
//! with `stats-http`, any HTTP request gets it as the body. `metrics` is HTTP, the text
//! exposition format at `/metrics`.

use std::convert::Infallible;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot};
use zerg::config::{Config, ListenAddr, ServeAddr};

use crate::control_server::Event;
use crate::listeners;

/// Most connections waiting for an endpoint's accept (scrapers are few).
const BACKLOG: u32 = 64;
/// How long a client may take to send its request head, or to take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of fds), so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// uWSGI's stats JSON, written raw (`http: false`) or as an HTTP response.
    Stats { http: bool },
    /// Prometheus text exposition over HTTP.
    Metrics,
}

impl Served {
    fn name(self) -> &'static str {
        match self {
            Served::Stats { http: false } => "stats",
            Served::Stats { http: true } => "stats-http",
            Served::Metrics => "metrics",
        }
    }
}

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A bound endpoint, not yet served.
pub struct Endpoint {
    pub served: Served,
    pub addr: ListenAddr,
    bound: Bound,
}

impl Endpoint {
    /// Another fd for the endpoint's socket, for an upgrade's handover.
    pub fn dup(&self) -> std::io::Result<OwnedFd> {
        match &self.bound {
            Bound::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Bound::Unix(l) => l.as_fd().try_clone_to_owned(),
        }
    }
}

/// Binds the endpoints the config names. Called where the listeners are bound: before the
/// pool gives up root, once for its whole life. An endpoint whose address is among `handed`
/// (an upgrade's: the old pool's sockets, still open) takes that socket, as the listeners do:
/// the old pool holds the address until it exits, so binding it again would fail.
pub fn bind(
    config: &Config,
    mut handed: Vec<(ListenAddr, OwnedFd)>,
) -> anyhow::Result<Vec<Endpoint>> {
    let wanted = [
        (
            Served::Stats {
                http: config.stats_http,
            },
            &config.stats,
        ),
        (Served::Metrics, &config.metrics),
    ];
    let mut endpoints = Vec::new();
    for (served, addr) in wanted {
        let Some(ServeAddr(addr)) = addr else {
            continue;
        };
        let fd = match handed.iter().position(|(a, _)| a == addr) {
            Some(i) => handed.swap_remove(i).1,
            None => listeners::bind_one(addr, BACKLOG, config.chmod_socket.0)?,
        };
        let bound = match addr {
            ListenAddr::Tcp(_) => {
                let l = std::net::TcpListener::from(fd);
                l.set_nonblocking(true)?;
                Bound::Tcp(TcpListener::from_std(l)?)
            }
            ListenAddr::Unix(_) => {
                let l = std::os::unix::net::UnixListener::from(fd);
                l.set_nonblocking(true)?;
                Bound::Unix(UnixListener::from_std(l)?)
            }
        };
        tracing::info!(serves = served.name(), %addr, "listening");
        endpoints.push(Endpoint {
            served,
            addr: addr.clone(),
            bound,
        });
    }
    Ok(endpoints)
}

/// Accepts and serves connections for as long as the pool runs.
pub async fn run(endpoint: Endpoint, events: mpsc::UnboundedSender<Event>) {
    let served = endpoint.served;
    loop {
        let accepted = match &endpoint.bound {
            Bound::Tcp(l) => l.accept().await.map(|(s, _)| {
                tokio::spawn(serve_one(s, served, events.clone()));
            }),
            Bound::Unix(l) => l.accept().await.map(|(s, _)| {
                tokio::spawn(serve_one(s, served, events.clone()));
            }),
        };
        if let Err(e) = accepted {
            tracing::warn!(serves = served.name(), error = %e, "accept failed");
            tokio::time::sleep(ACCEPT_PAUSE).await;
        }
    }
}

/// Asks the supervisor for the document; `None` if the pool is going away.
async fn ask(events: &mpsc::UnboundedSender<Event>, what: Served) -> Option<String> {
    let (reply, answer) = oneshot::channel();
    events.send(Event::Observe { what, reply }).ok()?;
    answer.await.ok()
}

async fn serve_one<S>(mut stream: S, served: Served, events: mpsc::UnboundedSender<Event>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if served == (Served::Stats { http: false }) {
        // uWSGI's way: the document, then the end of the stream.
        let Some(doc) = ask(&events, served).await else {
            return;
        };
        let write = async {
            stream.write_all(doc.as_bytes()).await?;
            stream.shutdown().await
        };
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(CLIENT_TIMEOUT, write)
            .await
            .map_err(std::io::Error::from)
        {
            tracing::debug!(error = %e, "stats client went away");
        }
        return;
    }
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let events = events.clone();
        async move { Ok::<_, Infallible>(answer(&events, served, req.uri().path()).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_TIMEOUT)
        .keep_alive(served == Served::Metrics)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!(serves = served.name(), error = %e, "client connection ended");
    }
}

async fn answer(
    events: &mpsc::UnboundedSender<Event>,
    served: Served,
    path: &str,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a response from valid parts")
    };
    if served == Served::Metrics && path != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "the metrics are at /metrics\n".into(),
        );
    }
    let content_type = match served {
        Served::Metrics => "text/plain; version=0.0.4; charset=utf-8",
        Served::Stats { .. } => "application/json",
    };
    match ask(events, served).await {
        Some(doc) => reply(StatusCode::OK, content_type, doc),
        None => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "the pool is stopping\n".into(),
        ),
    }
}
