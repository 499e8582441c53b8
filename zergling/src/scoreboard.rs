//! Open connections per web worker, shared by the workers of one generation, so they spread
//! keep-alive clients evenly.
//!
//! Why: the workers accept on one shared socket, and whoever wakes first takes the whole
//! burst. A load balancer or benchmark that opens its 64 keep-alive connections at once could
//! leave one worker with 60 of them and the other idle, for as long as the connections live.
//! With the scoreboard, a worker holding clearly more connections than its least loaded
//! sibling leaves the next accept to it, for a moment ([`Scoreboard::take_turn`]); if the
//! sibling does not take it (busy in a long call, or dead), the worker accepts anyway.
//!
//! Invariants: the master maps the board (anonymous, `MAP_SHARED`) once, before it forks any
//! worker, and never unmaps it, so every process of the generation sees the same counters at
//! the same address for its whole life. A counter is only touched with atomic operations. Slot
//! `i` belongs to web worker `i + 1`; during a chain reload the old and new process of a slot
//! both count into it, which keeps the sum right.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

/// A worker may hold this many connections more than the least loaded one before it defers.
const SLACK: u32 = 1;
/// How long a worker leaves a waiting connection to a less loaded sibling, in steps.
const DEFER_STEP: Duration = Duration::from_millis(1);
const DEFER_STEPS: u32 = 3;

/// The shared counters of one generation's web workers.
#[derive(Clone, Copy)]
pub struct Scoreboard {
    counters: NonNull<AtomicU32>,
    len: usize,
}

// SAFETY: the pointer is to a shared mapping that is never unmapped (module invariants), and
// it is only used through `AtomicU32`, which is safe to share between threads.
unsafe impl Send for Scoreboard {}
// SAFETY: as above.
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// Maps a board for `workers` web workers. Call in the master before the first fork.
    pub fn new(workers: usize) -> nix::Result<Scoreboard> {
        let len = workers.max(1);
        let bytes = NonZeroUsize::new(len * std::mem::size_of::<AtomicU32>())
            .expect("a board has at least one counter");
        // SAFETY: a fresh anonymous mapping at an address the kernel picks aliases nothing;
        // it is zero-filled, and zero is a valid AtomicU32. It is never unmapped (the board
        // lives as long as the process), so the pointer stays valid.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?
        };
        Ok(Scoreboard {
            counters: ptr.cast(),
            len,
        })
    }

    fn counter(&self, slot: usize) -> &AtomicU32 {
        assert!(slot < self.len, "scoreboard slot {slot} of {}", self.len);
        // SAFETY: `slot` is in bounds (checked), the mapping is live and holds `len`
        // initialized AtomicU32s (module invariants).
        unsafe { &*self.counters.as_ptr().add(slot) }
    }

    /// Connections counted for `slot`.
    pub fn open(&self, slot: usize) -> u32 {
        self.counter(slot).load(Ordering::Relaxed)
    }

    pub fn opened(&self, slot: usize) {
        self.counter(slot).fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self, slot: usize) {
        let _ = self
            .counter(slot)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Forgets the connections of a worker that died without closing them (master only).
    pub fn reset(&self, slot: usize) {
        self.counter(slot).store(0, Ordering::Relaxed);
    }

    /// True when `slot` holds more than [`SLACK`] connections above the least loaded slot.
    pub fn ahead(&self, slot: usize) -> bool {
        let mine = self.open(slot);
        let least = (0..self.len)
            .filter(|&s| s != slot)
            .map(|s| self.open(s))
            .min();
        least.is_some_and(|least| mine > least + SLACK)
    }

    /// Waits, briefly, while this worker is ahead of a sibling, so the sibling accepts the
    /// next connection.
    pub async fn take_turn(&self, slot: usize) {
        for _ in 0..DEFER_STEPS {
            if !self.ahead(slot) {
                return;
            }
            tokio::time::sleep(DEFER_STEP).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_ahead_of_its_least_loaded_sibling_defers() {
        let board = Scoreboard::new(3).unwrap();
        assert!(!board.ahead(0), "all at zero");
        board.opened(0);
        assert!(!board.ahead(0), "one ahead is within the slack");
        board.opened(0);
        assert!(board.ahead(0));
        board.opened(1);
        assert!(board.ahead(0), "slot 2 is still at zero");
        board.opened(2);
        assert!(!board.ahead(0));
        board.closed(1);
        board.closed(1); // never below zero
        assert_eq!(board.open(1), 0);
        board.reset(0);
        assert_eq!(board.open(0), 0);
    }

    #[test]
    fn a_lone_worker_never_defers() {
        let board = Scoreboard::new(1).unwrap();
        for _ in 0..10 {
            board.opened(0);
        }
        assert!(!board.ahead(0));
    }

    #[test]
    fn counts_cross_fork() {
        let board = Scoreboard::new(2).unwrap();
        // SAFETY: the test's child only touches the board (atomics) and exits at once.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                board.opened(1);
                board.opened(1);
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(board.open(1), 2);
            }
        }
    }
}
