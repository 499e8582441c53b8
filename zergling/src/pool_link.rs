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
use std::path::Path;
use std::time::{Duration, Instant};

use zerg::control::{Adoption, Connection, Message, Role, PROTOCOL_VERSION};

/// First pause before knocking again on a pool that went away.
pub const FIRST_RETRY: Duration = Duration::from_millis(50);
/// Longest pause between two knocks: a pool started again waits `adoption window` seconds
/// for its zerglings, far longer than this.
pub const MAX_RETRY: Duration = Duration::from_secs(1);

/// Where the master stands with the pool. Moves: Attached -> Lost (the pool died) -> Asking
/// (a connection and an adoption hello) -> Attached (adopted) or Lost (no answer) or Closed
/// (refused); Attached -> Closed for a starting generation.
pub enum PoolLink {
    /// Welcomed or adopted: messages flow both ways.
    Attached(Connection),
    /// An adoption hello was sent on this connection; the pool's answer is awaited.
    Asking(Connection),
    /// No pool: knock again at `retry_at`; the pause after that is `backoff` doubled.
    Lost {
        retry_at: Instant,
        backoff: Duration,
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
    /// with a longer pause; failures are the normal state of a dead pool and log at debug.
    pub fn ask_adoption(
        &mut self,
        path: &Path,
        generation: u64,
        adoption: Adoption,
        fds: &[BorrowedFd<'_>],
    ) {
        let PoolLink::Lost { backoff, .. } = *self else {
            return;
        };
        let hello = Message::Hello {
            protocol: PROTOCOL_VERSION,
            role: Role::Zergling,
            pid: std::process::id(),
            generation: Some(generation),
            adopt: Some(adoption),
        };
        let knocked = Connection::connect(path)
            .map_err(zerg::control::ControlError::from)
            .and_then(|mut conn| conn.send(&hello, fds).map(|()| conn));
        *self = match knocked {
            Ok(conn) => {
                tracing::info!(path = %path.display(), "a pool answers on the control socket; asking it to adopt this generation");
                PoolLink::Asking(conn)
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "no pool yet");
                let next = (backoff * 2).min(MAX_RETRY);
                PoolLink::Lost {
                    retry_at: Instant::now() + backoff,
                    backoff: next,
                }
            }
        };
    }
}
