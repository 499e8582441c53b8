//! The benchmark's ceiling: the same hello world answered by hyper from Rust, no Python, in
//! the same shape as a zerg worker (N forked processes sharing one listener, each a
//! current-thread tokio runtime). `benches/throughput.py` runs it next to the WSGI servers.
//!
//!     hyper_ceiling 127.0.0.1:8000 [PROCESSES] [WORK_NS]
//!
//! `WORK_NS` makes each request spin that many nanoseconds before it is answered: the harness
//! runs the ceiling with a microsecond or two of such work to show how steeply its req/s falls
//! with work per request on the machine at hand, which is what a ratio to it means.

use std::convert::Infallible;
use std::net::TcpListener;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8000".into())
        .parse()
        .map_err(|e| std::io::Error::other(format!("bad address: {e}")))?;
    let processes: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(2);
    let work = match args.next() {
        None => std::time::Duration::ZERO,
        Some(ns) => std::time::Duration::from_nanos(
            ns.parse()
                .map_err(|e| std::io::Error::other(format!("bad WORK_NS {ns:?}: {e}")))?,
        ),
    };
    for _ in 1..processes {
        // SAFETY: single-threaded here (no runtime or thread exists yet), so the child may
        // run anything; it dies with the parent through PR_SET_PDEATHSIG.
        match unsafe { libc::fork() } {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {
                // SAFETY: prctl with a plain integer signal number.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
                break;
            }
            _ => {}
        }
    }
    // Each process its own SO_REUSEPORT socket: the kernel spreads connections evenly, the
    // best case for a server with no Python (zerg itself shares one socket between workers,
    // so that no queued connection is lost when a worker exits, and balances with its
    // scoreboard instead).
    serve(reuseport_listener(addr)?, work)
}

fn reuseport_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrStorage,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    listen(&fd, Backlog::new(1024).map_err(std::io::Error::from)?)?;
    let listener = TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn serve(listener: TcpListener, work: std::time::Duration) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                    spin(work);
                    let mut response =
                        Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Busy for `work` by the clock (the vDSO's, no system call), as a request's own work would be.
/// A preemption during the spin counts as work: at a microsecond or two, that is rare.
fn spin(work: std::time::Duration) {
    if work.is_zero() {
        return;
    }
    let start = std::time::Instant::now();
    while start.elapsed() < work {
        std::hint::spin_loop();
    }
}
