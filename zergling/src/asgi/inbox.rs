//! The one way into the worker's asyncio loop from any other thread: a queue of events and a
//! pipe the loop watches (`loop.add_reader`). Nothing here needs the GIL, so hyper's thread
//! never waits for Python to hand over work.
//!
//! Wake-ups are batched: the pipe is written only when the loop has no wake-up pending, so a
//! loop that is busy (or already woken) takes every event queued meanwhile in one callback,
//! whatever their number. Under load that is one pipe write per batch, not per request.
//!
//! The protocol: a producer queues its event, then sets `signalled`; only the one that turns it
//! from false to true writes a byte. The loop empties the pipe, then clears `signalled`, then
//! takes the queue: an event queued after the take finds `signalled` clear and writes again,
//! and `signalled` is never left set without a byte on its way. None is left behind without
//! a wake-up (at worst a wake-up finds the queue empty).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nix::fcntl::OFlag;

use super::cycle::{Call, Cycle};

/// What the loop is asked to do.
pub enum Event {
    /// Call the app for a new request.
    Call(Box<Call>),
    /// A request's `receive()` or `send()` that waits may go on (data came, room was made,
    /// the client went away).
    Wake(Arc<Cycle>),
    /// Run the lifespan `shutdown`.
    Shutdown,
}

pub struct Inbox {
    queue: Mutex<Vec<Event>>,
    /// A wake-up is on its way (a byte in the pipe, or the loop about to take the queue).
    signalled: AtomicBool,
    read: OwnedFd,
    write: OwnedFd,
}

impl Inbox {
    pub fn new() -> nix::Result<Inbox> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Inbox {
            queue: Mutex::new(Vec::with_capacity(64)),
            signalled: AtomicBool::new(false),
            read,
            write,
        })
    }

    /// The fd the loop watches for reading.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Queues `event`, waking the loop unless a wake-up is pending already.
    pub fn push(&self, event: Event) {
        if self.push_later(event) {
            self.signal();
        }
    }

    /// Queues `event`; true if the caller must now wake the loop with [`signal`], soon (a
    /// wake-up counts as on its way from here on, so none other is sent meanwhile).
    ///
    /// [`signal`]: Inbox::signal
    pub fn push_later(&self, event: Event) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
        !self.signalled.swap(true, Ordering::SeqCst)
    }

    /// Wakes the loop.
    pub fn signal(&self) {
        // A full pipe holds a wake-up already; nothing else can fail here.
        let _ = nix::unistd::write(self.write.as_fd(), b"w");
    }

    /// On the loop: everything queued, into `into` (emptied first, its room kept).
    pub fn take(&self, into: &mut Vec<Event>) {
        // The pipe is emptied before `signalled` is cleared: cleared first, a producer could
        // set it and write, the byte be read here, and `signalled` stay set with no byte on
        // its way, so that no later producer would ever wake the loop again.
        let mut bytes = [0u8; 64];
        while nix::unistd::read(self.read.as_fd(), &mut bytes).is_ok_and(|n| n == bytes.len()) {}
        self.signalled.store(false, Ordering::SeqCst);
        into.clear();
        std::mem::swap(
            &mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner),
            into,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    /// Producers on several threads, the loop waiting on the pipe as asyncio does: every
    /// event is taken, and none waits for a wake-up that never comes (the loop's wait would
    /// time out).
    #[test]
    fn no_event_is_left_without_a_wake_up() {
        const PRODUCERS: usize = 4;
        const EACH: usize = 20_000;
        let inbox = Arc::new(Inbox::new().unwrap());
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|_| {
                let inbox = inbox.clone();
                std::thread::spawn(move || {
                    for _ in 0..EACH {
                        inbox.push(Event::Shutdown);
                    }
                })
            })
            .collect();
        let mut taken = 0;
        let mut batch = Vec::new();
        let mut wake_ups = 0;
        while taken < PRODUCERS * EACH {
            let mut fds = [PollFd::new(inbox.read.as_fd(), PollFlags::POLLIN)];
            let ready = poll(&mut fds, PollTimeout::from(5_000u16)).unwrap();
            assert_eq!(ready, 1, "events queued, no wake-up: {taken} taken");
            inbox.take(&mut batch);
            taken += batch.len();
            wake_ups += 1;
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(taken, PRODUCERS * EACH);
        assert!(
            wake_ups < taken,
            "wake-ups are batched: {wake_ups} for {taken}"
        );
    }
}
