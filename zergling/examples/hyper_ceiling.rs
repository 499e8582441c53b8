//! The benchmark's ceiling: the same hello world answered by hyper from Rust, no Python, in
//! the same shape as a zerg worker (N forked processes sharing one listener, each a
//! current-thread tokio runtime). `benches/http.py` runs it next to the WSGI servers.
//!
//!     hyper_ceiling 127.0.0.1:8000 [PROCESSES]

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
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8000".into());
    let processes: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(2);
    let listener = TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
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
    serve(listener)
}

fn serve(listener: TcpListener) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
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
