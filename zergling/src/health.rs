//! The readiness health check. A generation must prove itself before the pool retires the old
//! one, and the proof must come from each of its own workers: before its first fork, the
//! master binds one private abstract unix socket per web worker position, only that worker
//! accepts on it, and the check request for that worker goes there (a request on the shared
//! listener could be answered by an old worker, or by a sibling).
//!
//! A check never blocks the master's loop: the request is sent at once (a unix socket
//! takes it whatever the app is doing), and the answer is read when poll(2) says it is there.
//! It gets no timeout of its own: it may take as long as the generation may take to be
//! ready (`ready-timeout`), past which the master fails the generation and says which worker
//! did not answer.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Instant;

/// The private listener of one web worker position, kept across its respawns.
pub struct PrivateListener {
    /// Its abstract name (without the leading NUL).
    pub name: String,
    pub fd: OwnedFd,
}

/// Binds `zerg-health-<pid>-<worker>` in the abstract namespace (nothing on disk to clean
/// up; gone when the last fd closes). std creates it close-on-exec.
pub fn private_listener(worker: u32) -> std::io::Result<PrivateListener> {
    let name = format!("zerg-health-{}-{worker}", std::process::id());
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    Ok(PrivateListener {
        name,
        fd: OwnedFd::from(listener),
    })
}

/// What a probe has come to.
pub enum Verdict {
    /// No status line yet.
    Waiting,
    /// The app answered 2xx.
    Passed,
    /// Anything else, said for the operator.
    Failed(String),
}

/// A check in flight against one worker: GET `path` sent on its private socket.
pub struct Probe {
    stream: UnixStream,
    what: String,
    pub sent: Instant,
    got: Vec<u8>,
}

impl Probe {
    /// Connects to `socket` and sends `GET path`.
    pub fn start(socket: &str, path: &str) -> Result<Probe, String> {
        let what = format!("health check GET {path}");
        let addr = SocketAddr::from_abstract_name(socket.as_bytes())
            .map_err(|e| format!("{what}: {e}"))?;
        let mut stream =
            UnixStream::connect_addr(&addr).map_err(|e| format!("{what}: cannot connect: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: zerg-health-check\r\nConnection: close\r\n\r\n"
        );
        // A connected unix socket's buffer takes these few bytes whatever the worker does.
        stream
            .write_all(request.as_bytes())
            .and_then(|()| stream.set_nonblocking(true))
            .map_err(|e| format!("{what}: cannot send: {e}"))?;
        Ok(Probe {
            stream,
            what,
            sent: Instant::now(),
            got: Vec::new(),
        })
    }

    /// What poll(2) waits on for the answer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// What the request is, for the operator.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Reads what has arrived; decides once the status line is complete.
    pub fn advance(&mut self) -> Verdict {
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Verdict::Failed(format!(
                        "{}: the worker closed the connection without an answer",
                        self.what
                    ))
                }
                Ok(n) => {
                    self.got.extend_from_slice(&buf[..n]);
                    if let Some(end) = self.got.windows(2).position(|w| w == b"\r\n") {
                        return self.judge(&self.got[..end]);
                    }
                    if self.got.len() > 4096 {
                        return self.judge(&self.got[..64]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Verdict::Waiting,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Verdict::Failed(format!("{}: no answer: {e}", self.what)),
            }
        }
    }

    fn judge(&self, line: &[u8]) -> Verdict {
        let line = String::from_utf8_lossy(line);
        let status = line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok());
        match status {
            Some(200..=299) => Verdict::Passed,
            Some(status) => Verdict::Failed(format!("{} answered {status}", self.what)),
            None => Verdict::Failed(format!("{}: not an HTTP answer: {line:?}", self.what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe against a private listener this test answers itself.
    fn probe_answered(answer: &[u8]) -> Verdict {
        let listener = private_listener(std::process::id() ^ answer.len() as u32).unwrap();
        let mut probe = Probe::start(&listener.name, "/up").unwrap();
        let (mut conn, _) = UnixListener::from(listener.fd).accept().unwrap();
        let mut request = [0u8; 512];
        let n = conn.read(&mut request).unwrap();
        assert!(request[..n].starts_with(b"GET /up HTTP/1.1\r\n"));
        assert!(matches!(probe.advance(), Verdict::Waiting));
        conn.write_all(answer).unwrap();
        drop(conn);
        loop {
            match probe.advance() {
                Verdict::Waiting => std::thread::yield_now(),
                verdict => return verdict,
            }
        }
    }

    #[test]
    fn a_2xx_passes_and_anything_else_fails_with_what_it_was() {
        assert!(matches!(
            probe_answered(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Verdict::Passed
        ));
        let Verdict::Failed(why) = probe_answered(b"HTTP/1.1 503 Busy\r\n\r\n") else {
            panic!("a 503 passed");
        };
        assert_eq!(why, "health check GET /up answered 503");
        let Verdict::Failed(why) = probe_answered(b"") else {
            panic!("no answer passed");
        };
        assert!(
            why.contains("closed the connection without an answer"),
            "{why}"
        );
        let Verdict::Failed(why) = probe_answered(b"SSH-2.0-x\r\n") else {
            panic!("a non-HTTP answer passed");
        };
        assert!(why.contains("not an HTTP answer"), "{why}");
    }
}
