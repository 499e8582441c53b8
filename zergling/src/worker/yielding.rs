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
//! "Run" is the thread's own CPU time, not the time on the clock: a worker that was itself
//! preempted during its spell has already let the others run, and yielding again as soon as
//! it is back would only hand them the core a second time (with wall time, a saturated worker
//! yielded about every 6 requests; each yield is a switch, and the client then finds fewer
//! answers ready per wake-up). The clock is read on every request (vDSO, cheap); the thread's
//! CPU time is a system call, read at a spell's second request (a worker that is not
//! saturated mostly wakes for one request, and never pays it) and then only once the clock
//! says the budget may be spent. The first request of a spell goes uncounted.
//!
//! With nothing else runnable on the core the call returns at once; otherwise the others get
//! their turn now rather than at the end of the slice. The spell restarts whenever the event
//! loop waits (tokio's after-unpark hook), so a worker that is not saturated never yields.

use std::cell::Cell;
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};

/// The start of a busy spell, as the clock and as this thread's CPU time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spell {
    /// When the CPU time is next worth reading: the spell's start, moved on by whatever part
    /// of the clock's time the thread spent off the CPU.
    wall: Instant,
    /// The thread's CPU time at the spell's second request; `None` before it.
    cpu: Option<Duration>,
}

thread_local! {
    /// The event loop's current busy spell on this thread; `None` while it has not started a
    /// request since it last woke.
    static SPELL: Cell<Option<Spell>> = const { Cell::new(None) };
}

/// The runtime's after-unpark hook: the event loop waited, a new busy spell begins.
pub fn woke() {
    SPELL.set(None);
}

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`, which cannot fail for the
/// calling thread; zero if it somehow did, which only delays a yield).
fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
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

    /// Called as each request starts: yields if the event loop has run for the budget.
    pub fn before_request(&self) {
        let Some(budget) = self.budget else { return };
        let Some(spell) = SPELL.get() else {
            SPELL.set(Some(Spell {
                wall: Instant::now(),
                cpu: None,
            }));
            return;
        };
        let Some(cpu) = spell.cpu else {
            SPELL.set(Some(Spell {
                cpu: Some(thread_cpu()),
                ..spell
            }));
            return;
        };
        let now = Instant::now();
        if now.duration_since(spell.wall) < budget {
            return; // cannot have run for the budget yet
        }
        let ran = thread_cpu().saturating_sub(cpu);
        if ran >= budget {
            // The GIL too, if the loop kept it: the others may be Python threads.
            crate::wsgi::gil::release();
            std::thread::yield_now();
            SPELL.set(None); // the next request starts a new spell
        } else {
            // Preempted for part of it: look again once the rest may be spent.
            SPELL.set(Some(Spell {
                wall: now - ran,
                cpu: Some(cpu),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps this thread on the CPU for `d` of its own CPU time.
    fn spin(d: Duration) {
        let start = thread_cpu();
        while thread_cpu() - start < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_spell_yields_once_its_budget_is_spent() {
        let yielder = Yielder::new(1_000);
        yielder.before_request();
        assert_eq!(
            SPELL.get().and_then(|s| s.cpu),
            None,
            "the first request starts a spell"
        );
        yielder.before_request();
        let counted = SPELL
            .get()
            .and_then(|s| s.cpu)
            .expect("the second request counts");
        yielder.before_request();
        assert_eq!(
            SPELL.get().and_then(|s| s.cpu),
            Some(counted),
            "within the budget: the same spell"
        );
        // Busy past the budget without waiting (no event loop here to wake).
        spin(Duration::from_millis(2));
        yielder.before_request();
        assert_eq!(SPELL.get(), None, "the yield ended the spell");
    }

    #[test]
    fn time_off_the_cpu_does_not_count() {
        let yielder = Yielder::new(1_000);
        yielder.before_request();
        yielder.before_request();
        let start = SPELL.get().expect("a spell");
        // Off the CPU past the budget by the clock, as a preempted worker is.
        std::thread::sleep(Duration::from_millis(3));
        yielder.before_request();
        let after = SPELL.get().expect("no yield: the thread hardly ran");
        assert_eq!(after.cpu, start.cpu, "the same spell");
        assert!(after.wall > start.wall, "the next look is put off");
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
            assert!(SPELL.get().is_some(), "a request starts a spell");
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(SPELL.get().is_none(), "the wait ended it");
        });
    }

    #[test]
    fn a_zero_budget_never_yields() {
        Yielder::new(0).before_request();
        assert!(SPELL.get().is_none());
    }
}
