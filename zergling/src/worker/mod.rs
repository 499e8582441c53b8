//! A web worker process: accepts on the inherited listeners with tokio + hyper (HTTP, the
//! uwsgi protocol on `socket` listeners, HTTP over TLS on `https` ones, redirects on
//! `http-to-https` ones) and runs the WSGI app on `threads` OS threads, or an ASGI app on an
//! asyncio loop of its own (`crate::asgi`).
//!
//! Lifecycle: import the app (under `lazy-apps`; otherwise the master did), build the runtime
//! and the Python threads (an ASGI app's lifespan startup runs then: a failed one is reported
//! on the pipe instead of "ready"), register every listener, tell the master "ready" through
//! the pipe, serve. On SIGTERM (from the master, or as the death signal
//! when the master dies) stop accepting, let each connection finish its current request
//! (answered with `Connection: close`), wait for them up to `worker-reload-mercy` (less a
//! part kept for an ASGI app's lifespan shutdown, which runs last), exit.

mod access;
mod http;
mod opening;
mod redirect;
pub mod refuse;
mod static_files;
pub mod tls;
mod uwsgi;
mod woken;
mod yielding;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use zerg::config::{Config, Interface, ListenAddr, Protocol};
use zerg::control::ListenerInfo;

use crate::asgi;
use crate::python::App;
use crate::scoreboard::Scoreboard;
use crate::wsgi::{self, Pool};

/// Everything a freshly forked worker needs from the master.
pub struct Spec<'a> {
    pub id: u32,
    pub generation: u64,
    pub config: &'a Config,
    pub listeners: &'a [OwnedFd],
    pub manifest: &'a [ListenerInfo],
    /// The TLS setup of the `https` listeners, read by the master as the generation started.
    pub certs: &'a tls::Certs,
    /// The app the master imported, or `None` under `lazy-apps`: this worker imports it.
    pub app: Option<&'a App>,
    /// This worker's own listener for the master's health check, when one is set.
    pub private: Option<&'a crate::health::PrivateListener>,
    /// Write end of the readiness pipe.
    pub ready: OwnedFd,
    /// The generation's open connections per worker.
    pub scoreboard: Scoreboard,
}

/// Runs the worker; the return value is the process exit code.
pub fn run(spec: Spec<'_>) -> i32 {
    let _span = tracing::info_span!("worker", id = spec.id, gen = spec.generation).entered();
    crate::uwsgi_api::set_worker(spec.id);
    crate::python::dump_stacks_on(crate::signals::DUMP_STACKS);
    let env = spec.config.worker_env_for(spec.id);
    if let Err(e) = pyo3::Python::attach(|py| crate::python::set_environ(py, &env)) {
        tracing::error!("cannot set `worker-env`: {e}");
        return 1;
    }
    crate::uwsgi_api::run_post_fork_hook();
    match serve(spec) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("worker failed: {e:#}");
            1
        }
    }
}

/// What a listener's connections get.
#[derive(Clone)]
pub enum Serves {
    Http,
    Uwsgi,
    /// HTTP/1.1 after a TLS handshake with this generation's certificate.
    Https(tokio_rustls::TlsAcceptor),
    /// A redirect to HTTPS for every request.
    Redirect(redirect::Redirect),
}

impl Serves {
    /// What the `index`th listener of the manifest, `info`, serves.
    fn of(
        index: usize,
        info: &ListenerInfo,
        config: &Config,
        certs: &tls::Certs,
    ) -> anyhow::Result<Serves> {
        Ok(match info.protocol {
            Protocol::Http => Serves::Http,
            Protocol::Uwsgi => Serves::Uwsgi,
            Protocol::Https => Serves::Https(certs.acceptor(index).ok_or_else(|| {
                anyhow::anyhow!("listener {}: no certificate was loaded for it", info.name)
            })?),
            Protocol::HttpToHttps => Serves::Redirect(redirect::Redirect::new(
                config.https_redirect_port(&info.addr),
            )),
        })
    }
}

/// Counts open connections, so shutdown can wait for the last one and the workers of a
/// generation can spread them evenly (the scoreboard).
pub struct Tracker {
    open: AtomicUsize,
    idle: Notify,
    scoreboard: Scoreboard,
    slot: usize,
}

impl Tracker {
    fn new(scoreboard: Scoreboard, worker_id: u32) -> Tracker {
        Tracker {
            open: AtomicUsize::new(0),
            idle: Notify::new(),
            scoreboard,
            slot: worker_id as usize - 1,
        }
    }

    fn enter(self: &Arc<Self>) -> ConnGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.scoreboard.opened(self.slot);
        ConnGuard(self.clone())
    }

    /// Before an accept: lets a less loaded sibling worker take the connection first.
    pub async fn take_turn(&self) {
        self.scoreboard.take_turn(self.slot).await;
    }
    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub struct ConnGuard(Arc<Tracker>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.scoreboard.closed(self.0.slot);
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

fn serve(spec: Spec<'_>) -> anyhow::Result<()> {
    let config = spec.config;
    let threads = config.threads as usize;
    let imported;
    let app = match spec.app {
        Some(app) => app,
        None => {
            imported = import_here(config, &spec.ready, spec.id)?;
            &imported
        }
    };
    let (app, asgi) = match config.interface {
        Interface::Wsgi => {
            let pool = Pool::start(
                app,
                wsgi::Static {
                    multithread: threads > 1,
                    multiprocess: config.processes > 1,
                    worker_id: spec.id,
                    post_buffering: config.post_buffering,
                },
                threads,
            )?;
            (http::App::Wsgi(Arc::new(pool)), None)
        }
        // The app's lifespan startup runs here, before the worker says it accepts.
        Interface::Asgi => match asgi::Bridge::start(app, config, spec.id) {
            Ok(bridge) => {
                let bridge = Arc::new(bridge);
                (http::App::Asgi(bridge.clone()), Some(bridge))
            }
            Err(err) => {
                report_failure(&spec.ready, &err.to_string());
                return Err(err.into());
            }
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .on_thread_park(wsgi::gil::release)
        .on_thread_unpark(yielding::woke)
        .enable_all()
        .build()?;
    crate::signals::flag_worker_stop()?;
    let mercy = config.worker_reload_mercy();
    // An ASGI app's lifespan shutdown runs once the requests are done, within the mercy.
    let shutdown_reserve = match asgi {
        Some(_) => (mercy / 4).min(ASGI_SHUTDOWN_MAX),
        None => Duration::ZERO,
    };
    let statics = config.static_maps();
    let busy_yield_us = config.busy_yield_us;
    let header_timeout = config.header_timeout();
    let limits = refuse::Limits::from_config(config);
    let max_fields = config.limit_request_fields as usize;
    let id = spec.id;
    let generation = spec.generation;
    let access_format = config.log_format;
    let mut listeners: Vec<(ListenerInfo, Serves, OwnedFd)> = spec
        .manifest
        .iter()
        .enumerate()
        .map(|(i, info)| Ok((info.clone(), Serves::of(i, info, config, spec.certs)?)))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .zip(
            spec.listeners
                .iter()
                .map(OwnedFd::try_clone)
                .collect::<Result<Vec<_>, _>>()?,
        )
        .map(|((info, serves), fd)| (info, serves, fd))
        .collect();
    if let Some(private) = spec.private {
        let info = ListenerInfo {
            name: "health".into(),
            addr: ListenAddr::Unix(format!("@{}", private.name).into()),
            protocol: Protocol::Http,
        };
        listeners.push((info, Serves::Http, private.fd.try_clone()?));
    }
    let served = runtime.block_on(async move {
        let stop = stop_signals()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let tracker = Arc::new(Tracker::new(spec.scoreboard, id));
        let state = Arc::new(http::State {
            app,
            statics: static_files::StaticMap::new(statics),
            yielder: yielding::Yielder::new(busy_yield_us),
            header_timeout,
            limits,
            max_fields,
            board: spec.scoreboard.lane(id as usize - 1, std::process::id()),
            access: access_format.map(|format| access::AccessLog {
                format,
                worker: id,
                generation,
                pid: std::process::id(),
            }),
        });
        for (info, serves, fd) in listeners {
            let acceptor = http::Acceptor::new(&info.addr, fd)?;
            tokio::spawn(http::accept_loop(
                acceptor,
                serves,
                state.clone(),
                tracker.clone(),
                stop_rx.clone(),
            ));
        }
        nix::unistd::write(&spec.ready, b"R")?;
        drop(spec.ready);
        wait_for_stop(stop).await;
        tracing::info!(
            worker = id,
            "stopping: no new connections, finishing in-flight requests"
        );
        let _ = stop_tx.send(true);
        if tokio::time::timeout(mercy - shutdown_reserve, tracker.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                worker = id,
                open = tracker.open.load(Ordering::Relaxed),
                "mercy expired with connections open"
            );
        }
        tracing::info!(worker = id, "worker exits");
        Ok::<_, anyhow::Error>(())
    });
    // Whatever the loop ended with, the GIL it may keep goes before anything else runs.
    wsgi::gil::release();
    served?;
    // Python threads may be blocked waiting for work; the process exit ends them. Dropped
    // with the runtime, the connections still open let go of their requests: an ASGI app's
    // `receive()` says `http.disconnect` to each (a stream past the mercy ends so).
    runtime.shutdown_timeout(Duration::from_millis(100));
    if let Some(bridge) = asgi {
        bridge.shutdown(shutdown_reserve.max(Duration::from_millis(100)));
    }
    Ok(())
}

/// `lazy-apps`: imports the app in this worker, after its fork, so that the threads it starts
/// while it is built run here. A failure is told to the master as the worker's reason, which
/// fails a generation that is not ready yet with the app's own error.
fn import_here(config: &Config, ready: &OwnedFd, id: u32) -> anyhow::Result<App> {
    let started = std::time::Instant::now();
    match crate::python::import(config) {
        Ok(app) => {
            tracing::info!(
                worker = id,
                ms = started.elapsed().as_millis() as u64,
                "app imported in this worker (lazy-apps)"
            );
            Ok(app)
        }
        Err(reason) => {
            let reason = format!("cannot import the app: {reason}");
            report_failure(ready, &reason);
            Err(anyhow::anyhow!(reason))
        }
    }
}

/// The longest part of `worker-reload-mercy` kept for an ASGI app's lifespan shutdown (a
/// quarter of the mercy, up to this).
const ASGI_SHUTDOWN_MAX: Duration = Duration::from_secs(5);

/// The most bytes of a failure the ready pipe carries: one write of at most `PIPE_BUF` is
/// read whole by the master.
const FAILURE_MAX: usize = 4000;

/// Tells the master, instead of "ready", why this worker cannot serve: `F` and the reason
/// (the app's own message, for a failed lifespan startup), which the master reports to the
/// pool for a generation that was not ready yet.
fn report_failure(ready: &OwnedFd, reason: &str) {
    let mut end = reason.len().min(FAILURE_MAX - 1);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut message = Vec::with_capacity(end + 1);
    message.push(b'F');
    message.extend_from_slice(&reason.as_bytes()[..end]);
    let _ = nix::unistd::write(ready, &message);
}

/// The signals that stop a worker, as tokio streams. Made before the worker says it is ready:
/// tokio sees a signal only once a stream for it exists, and a SIGTERM sent as soon as the
/// master knows the worker (a stop or reload right after a start, the master's death) would
/// otherwise be lost, and the worker serve on for good.
fn stop_signals() -> std::io::Result<[tokio::signal::unix::Signal; 2]> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok([
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    ])
}

/// Until SIGTERM or SIGINT: one that came before the streams were made is in the flag that
/// [`crate::signals::flag_worker_stop`] sets.
async fn wait_for_stop([mut term, mut int]: [tokio::signal::unix::Signal; 2]) {
    if crate::signals::WORKER_STOPPING.load(Ordering::Relaxed) {
        return;
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

impl http::Acceptor {
    fn new(addr: &ListenAddr, fd: OwnedFd) -> std::io::Result<http::Acceptor> {
        Ok(match addr {
            ListenAddr::Tcp(_) => {
                let l = std::net::TcpListener::from(fd);
                l.set_nonblocking(true)?;
                http::Acceptor::Tcp(tokio::net::TcpListener::from_std(l)?)
            }
            ListenAddr::Unix(path) => {
                let l = std::os::unix::net::UnixListener::from(fd);
                l.set_nonblocking(true)?;
                http::Acceptor::Unix(
                    tokio::net::UnixListener::from_std(l)?,
                    path.display().to_string(),
                )
            }
        })
    }
}
