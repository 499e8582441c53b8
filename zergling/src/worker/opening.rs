//! The opening of a connection before hyper reads its first request head: a TLS handshake, a
//! uwsgi packet. It gets what a request head gets: `header-timeout`, and once the worker
//! stops, [`IDLE_DRAIN_GRACE`] at most, so a client that connects and says nothing costs a
//! socket for a while, never a worker's stop.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::http::IDLE_DRAIN_GRACE;

/// A deadline that never comes, for a `header-timeout` of 0.
pub const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// What `opening` gives, or `None` if it took longer than `header_timeout`, or than the drain
/// grace once `stop` turned true.
pub async fn within<F: Future>(
    opening: F,
    header_timeout: Option<Duration>,
    stop: &mut watch::Receiver<bool>,
) -> Option<F::Output> {
    tokio::pin!(opening);
    let timer = tokio::time::sleep(header_timeout.unwrap_or(NEVER));
    tokio::pin!(timer);
    let mut stopping = false;
    loop {
        if !stopping && *stop.borrow_and_update() {
            stopping = true;
            let grace = Instant::now() + IDLE_DRAIN_GRACE;
            if grace < timer.deadline() {
                timer.as_mut().reset(grace);
            }
        }
        tokio::select! {
            done = opening.as_mut() => return Some(done),
            _ = timer.as_mut() => return None,
            changed = stop.changed(), if !stopping => {
                // The worker is gone if the sender is: as good as a stop.
                stopping |= changed.is_err();
            }
        }
    }
}
