//! The event loop keeps the GIL from one inline call to the next (`threads: 1`), instead of
//! taking and dropping it around each: that pair (`PyGILState_Ensure`/`Release`, a mutex and a
//! condition variable) was ~450 of the ~17.6k instructions of a hello-world request.
//!
//! A kept GIL is let go of whenever another thread could want it:
//! - before the loop waits for events (tokio's before-park hook), so an idle worker never
//!   holds it;
//! - before the worker yields the CPU (`busy-yield-us`);
//! - before a static file is served (file system calls, which may block);
//! - after [`TICKS`] reads and writes on the worker's connections, so a loop that is busy
//!   without Python for a while (streams, slow clients) holds it for a bounded time, as it
//!   would if it ran Python code for that long.
//!
//! A Python thread (the worker's own, for streams and request bodies; the app's, for its
//! background work) thus waits about as long as CPython's own switch interval (5 ms) makes
//! it wait for a thread running bytecode: a release hands the GIL over at once only to a
//! thread that has asked for it that long (before, the loop took it back just as fast). The calls themselves still go through
//! `Python::attach`, which inside a kept GIL only counts a nesting level.

use std::cell::Cell;

use pyo3::ffi;

/// How many socket reads and writes of the loop a kept GIL outlives (about three per
/// request: its head, the read that finds nothing more, the response).
pub const TICKS: u32 = 64;

/// The GIL this thread keeps: the state to hand back, and the ticks since it was taken.
#[derive(Clone, Copy)]
struct Kept {
    state: ffi::PyGILState_STATE,
    ticks: u32,
}

thread_local! {
    static KEPT: Cell<Option<Kept>> = const { Cell::new(None) };
}

/// Before an inline call: makes sure this thread holds the GIL, and keeps it after the call.
/// A free-threaded interpreter has no GIL to keep, and wants threads detached whenever they
/// can be (its collector stops the world): there every call attaches on its own, as it does
/// under `ZERG_FORCE_FALLBACKS` (see `python::fast_paths`).
pub fn keep() {
    if cfg!(Py_GIL_DISABLED) || !crate::python::fast_paths::allowed() {
        return;
    }
    if KEPT.get().is_none() {
        // SAFETY: the interpreter is initialized (the worker imported the app) and this
        // thread has its thread state; the matching `PyGILState_Release` is in `release`,
        // on this same thread (the state is thread-local).
        let state = unsafe { ffi::PyGILState_Ensure() };
        KEPT.set(Some(Kept { state, ticks: 0 }));
    }
}

/// Lets a kept GIL go; nothing if this thread keeps none.
pub fn release() {
    if let Some(kept) = KEPT.take() {
        // SAFETY: `kept.state` is what `keep` got from `PyGILState_Ensure` on this thread, and
        // is handed back once (taken out of the thread-local). Calls made inside the kept
        // GIL have returned: this runs from the event loop, never inside one.
        unsafe { ffi::PyGILState_Release(kept.state) };
    }
}

/// A read or write on a connection: after [`TICKS`] of them a kept GIL is let go.
pub fn tick() {
    if let Some(mut kept) = KEPT.get() {
        kept.ticks += 1;
        if kept.ticks < TICKS {
            KEPT.set(Some(kept));
        } else {
            release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::prelude::*;

    fn holds_gil() -> bool {
        // SAFETY: only reads this thread's state.
        unsafe { ffi::PyGILState_Check() == 1 }
    }

    /// What the event loop does with the GIL between and during its calls.
    fn keep_tick_release() {
        assert!(!holds_gil());
        keep();
        assert!(holds_gil());
        // Calls inside only count a nesting level, and leave it kept.
        Python::attach(|py| py.eval(c"1 + 1", None, None).map(drop)).unwrap();
        assert!(holds_gil());
        for _ in 1..TICKS {
            tick();
        }
        assert!(holds_gil(), "kept for TICKS - 1 ticks");
        tick();
        assert!(!holds_gil(), "let go at the TICKS-th");
        tick(); // nothing kept: nothing happens
        keep();
        keep(); // already kept
        release();
        assert!(!holds_gil());
        release(); // nothing kept
    }

    /// Under `ZERG_FORCE_FALLBACKS`: nothing is kept, each call attaches and detaches.
    fn nothing_kept() {
        assert!(!holds_gil());
        keep();
        assert!(!holds_gil());
        Python::attach(|py| py.eval(c"1 + 1", None, None).map(drop)).unwrap();
        assert!(!holds_gil());
        tick();
        release();
        assert!(!holds_gil());
    }

    #[test]
    fn a_kept_gil_is_let_go_after_its_ticks_or_on_release() {
        // Initialized, the interpreter is left with no thread attached.
        Python::initialize();
        if !crate::python::fast_paths::allowed() {
            std::thread::spawn(nothing_kept).join().unwrap();
            return;
        }
        // A thread with a thread state of its own, detached, as the worker's event loop is
        // between calls (its Release then detaches; it deletes no thread state).
        std::thread::spawn(|| Python::attach(|py| py.detach(keep_tick_release)))
            .join()
            .unwrap();
        // A thread that has none: the first Ensure makes one, the last Release deletes it.
        std::thread::spawn(keep_tick_release).join().unwrap();
    }
}
