//! A busy worker hands the CPU back to the scheduler between requests (`busy-yield-us`).
//!
//! A saturated worker never waits for an event, so it keeps its core for the scheduler's whole
//! slice (1.4 ms with 2 cores, longer with more) while the processes it trades bytes with sit
//! runnable behind it: the proxy in front, a client on the same host, the sibling worker. Every
//! connection those carry waits with them, and that wait is the tail of the latency: at
//! saturation a plain event loop (bare hyper, say) answers the median request in under a
//! millisecond and the slowest hundredth in 6 or 7 (`perf sched` shows the load generator's
//! threads waiting 2-7 ms for a core behind workers running 1-4 ms bursts). So a worker whose
//! event loop has run for `budget` without waiting yields (`sched_yield`) before it starts the
//! next request.
//!
//! With nothing else runnable on the core the call returns at once; otherwise the others get
//! their turn now rather than at the end of the slice. The spell restarts whenever the event
//! loop waits (tokio's after-unpark hook), so a worker that is not saturated never yields.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    /// When the event loop on this thread last started running without a wait in between;
    /// `None` while it has not started a request since it last woke.
    static BUSY_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The runtime's after-unpark hook: the event loop waited, a new busy spell begins.
pub fn woke() {
    BUSY_SINCE.set(None);
}

/// How long the event loop may run without waiting before it yields; `None` never yields.
#[derive(Debug, Clone, Copy)]
pub struct Yielder {
    budget: Option<Duration>,
}

impl Yielder {
    /// `busy-yield-us`: 0 turns yielding off.
    pub fn new(budget_us: u64) -> Self {
        Yielder {
            budget: (budget_us > 0).then(|| Duration::from_micros(budget_us)),
        }
    }

    /// Called as each request starts: yields if the event loop has been busy for the budget.
    pub fn before_request(&self) {
        let Some(budget) = self.budget else { return };
        let now = Instant::now();
        match BUSY_SINCE.get() {
            None => BUSY_SINCE.set(Some(now)),
            Some(start) if now.duration_since(start) >= budget => {
                std::thread::yield_now();
                BUSY_SINCE.set(Some(Instant::now()));
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spell_yields_once_its_budget_is_spent() {
        let yielder = Yielder::new(1_000);
        yielder.before_request();
        let start = BUSY_SINCE.get().expect("the first request starts a spell");
        yielder.before_request();
        assert_eq!(
            BUSY_SINCE.get(),
            Some(start),
            "within the budget: the same spell"
        );
        // Busy past the budget without waiting (no event loop here to wake).
        std::thread::sleep(Duration::from_millis(2));
        yielder.before_request();
        let next = BUSY_SINCE.get().expect("a spell");
        assert!(next > start, "the yield began a new spell");
    }

    #[test]
    fn waiting_ends_the_spell() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .on_thread_unpark(woke)
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let yielder = Yielder::new(1_000_000);
            yielder.before_request();
            assert!(BUSY_SINCE.get().is_some(), "a request starts a spell");
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(BUSY_SINCE.get().is_none(), "the wait ended it");
        });
    }

    #[test]
    fn a_zero_budget_never_yields() {
        Yielder::new(0).before_request();
        assert!(BUSY_SINCE.get().is_none());
    }
}
