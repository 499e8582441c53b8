//! The readiness health check. A generation must prove itself before the pool retires the old
//! one, and the proof must come from its own workers: the master binds a private abstract unix
//! socket before forking, only its workers accept on it, and the check request goes there (a
//! request on the shared listener could be answered by an old worker).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

/// How long the app gets to answer the check.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Binds `zerg-health-<pid>` in the abstract namespace (nothing on disk to clean up; gone when
/// the last fd closes). std creates it close-on-exec.
pub fn private_listener() -> std::io::Result<(String, OwnedFd)> {
    let name = format!("zerg-health-{}", std::process::id());
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    Ok((name, OwnedFd::from(listener)))
}

/// The check: GET `path` on the private socket.
pub struct Check {
    pub socket: String,
    pub path: String,
}

impl Check {
    /// `Ok` on a 2xx answer; otherwise what was wrong.
    pub fn run(&self) -> Result<(), String> {
        let what = format!("health check GET {}", self.path);
        let addr = SocketAddr::from_abstract_name(self.socket.as_bytes())
            .map_err(|e| format!("{what}: {e}"))?;
        let mut stream =
            UnixStream::connect_addr(&addr).map_err(|e| format!("{what}: cannot connect: {e}"))?;
        let _ = stream.set_read_timeout(Some(TIMEOUT));
        let _ = stream.set_write_timeout(Some(TIMEOUT));
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: zerg-health-check\r\nConnection: close\r\n\r\n",
            self.path
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("{what}: cannot send: {e}"))?;
        let mut head = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            match stream.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(format!("{what}: no answer: {e}")),
            }
        }
        let line = String::from_utf8_lossy(&head[..got]);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{what}: not an HTTP answer: {line:?}"))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("{what} answered {status}"))
        }
    }
}
