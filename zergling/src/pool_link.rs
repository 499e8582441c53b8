//! The master's link to the pool, and what a generation does while it has none.
//!
//! The pool is not a single point of failure: when its control connection drops, a serving
//! generation serves on (its workers and mules hold the listeners and queues too), a draining
//! one finishes its drain, and a starting one gives up (nobody would ever tell it to serve).
//! Serving and draining generations knock on the control socket's path again, with backoff,
//! and hand their fds back to whichever pool answers ([`PoolLink::ask_adoption`]).
//!
//! A link at end of stream is never polled (a socket at end of stream is readable forever, and
//! polling one spun a core): a lost link holds no socket at all.

use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use zerg::control::{Adoption, Connection, Message, Role, ADOPT_WINDOW, PROTOCOL_VERSION};

/// First pause before knocking again on a pool that went away.
pub const FIRST_RETRY: Duration = Duration::from_millis(50);
/// Longest pause between two knocks: a pool started again waits `adoption window` seconds
/// for its zerglings, far longer than this.
pub const MAX_RETRY: Duration = Duration::from_secs(1);
/// Failed knocks before the master warns (once) that no pool answers: a restarting pool
/// answers within the first few.
const WARN_AFTER: u32 = 5;
/// How long the control socket's path may be missing before the generation stops: no pool
/// will come back to adopt it (`systemctl stop`, or the site's directory removed). A pool
/// being restarted binds the path before its adoption window, so twice that window and a
/// margin is long past any restart. A path that exists but refuses (ECONNREFUSED) keeps the
/// master knocking: systemd may be about to restart the pool.
pub const CONTROL_GONE_FOR: Duration = Duration::from_secs(2 * ADOPT_WINDOW.as_secs() + 5);

/// Where the master stands with the pool. Moves: Attached -> Lost (the pool died) -> Asking
/// (a connection and an adoption hello) -> Attached (adopted) or Lost (no answer) or Closed
/// (refused); Attached -> Closed for a starting generation.
pub enum PoolLink {
    /// Welcomed or adopted: messages flow both ways.
    Attached(Connection),
    /// An adoption hello was sent on this connection; the pool's answer is awaited.
    Asking(Connection),
    /// No pool: knock again at `retry_at`; the pause after that is `backoff` doubled.
    /// `failures` knocks failed so far; the path has been missing since `gone_since`.
    Lost {
        retry_at: Instant,
        backoff: Duration,
        failures: u32,
        gone_since: Option<Instant>,
    },
    /// Never again: this generation stops on its own.
    Closed,
}

impl PoolLink {
    /// The link just broke: knock again soon.
    pub fn lost() -> PoolLink {
        PoolLink::Lost {
            retry_at: Instant::now() + FIRST_RETRY,
            backoff: FIRST_RETRY,
            failures: 0,
            gone_since: None,
        }
    }

    /// The open connection, if there is one (to poll, and to close in forked children).
    pub fn conn(&self) -> Option<&Connection> {
        match self {
            PoolLink::Attached(conn) | PoolLink::Asking(conn) => Some(conn),
            _ => None,
        }
    }

    /// When the next knock is due.
    pub fn retry_at(&self) -> Option<Instant> {
        match self {
            PoolLink::Lost { retry_at, .. } => Some(*retry_at),
            _ => None,
        }
    }

    /// Knocks once on the control socket at `path`: connects and sends an adoption hello with
    /// `fds` (listeners, queue ends, mule records) attached. On failure the link stays lost,
    /// with a longer pause; failures are the normal state of a dead pool and log at debug,
    /// with one warning after [`WARN_AFTER`]. Returns `false` once the path has been missing
    /// for [`CONTROL_GONE_FOR`]: no pool will adopt this generation, and it should stop.
    pub fn ask_adoption(
        &mut self,
        path: &Path,
        generation: u64,
        adoption: Adoption,
        fds: &[BorrowedFd<'_>],
    ) -> bool {
        let PoolLink::Lost {
            backoff,
            failures,
            gone_since,
            ..
        } = *self
        else {
            return true;
        };
        let hello = Message::Hello {
            protocol: PROTOCOL_VERSION,
            role: Role::Zergling,
            pid: std::process::id(),
            generation: Some(generation),
            adopt: Some(adoption),
        };
        let knocked = connect_now(path)
            .map_err(zerg::control::ControlError::from)
            .and_then(|stream| {
                let mut conn = Connection::new(stream);
                conn.send(&hello, fds).map(|()| conn)
            });
        let e = match knocked {
            Ok(conn) => {
                tracing::info!(path = %path.display(), "a pool answers on the control socket; asking it to adopt this generation");
                *self = PoolLink::Asking(conn);
                return true;
            }
            Err(e) => e,
        };
        let failures = failures + 1;
        let gone = matches!(&e, zerg::control::ControlError::Io(io) if io.kind() == std::io::ErrorKind::NotFound);
        let gone_since = if gone {
            Some(gone_since.unwrap_or_else(Instant::now))
        } else {
            None
        };
        if failures == WARN_AFTER {
            tracing::warn!(path = %path.display(), error = %e, failures, "no pool answers on the control socket; this generation serves on unsupervised and keeps knocking");
        } else {
            tracing::debug!(path = %path.display(), error = %e, "no pool yet");
        }
        if let Some(since) = gone_since.filter(|s| s.elapsed() >= CONTROL_GONE_FOR) {
            tracing::error!(path = %path.display(), missing_secs = since.elapsed().as_secs(), "control socket gone: no pool will come back to adopt this generation");
            *self = PoolLink::Closed;
            return false;
        }
        *self = PoolLink::Lost {
            retry_at: Instant::now() + backoff,
            backoff: (backoff * 2).min(MAX_RETRY),
            failures,
            gone_since,
        };
        true
    }
}

/// Connects to the unix socket at `path` without ever blocking: a pool whose accept backlog
/// is full answers EAGAIN (a knock that failed) instead of freezing the single-threaded
/// master. The stream is made blocking again once connected, as `Connection` expects.
fn connect_now(path: &Path) -> std::io::Result<UnixStream> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    // A unix stream connect completes or fails at once: EAGAIN (a full backlog) is one more
    // failed knock, like ECONNREFUSED or ENOENT.
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)?;
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}
