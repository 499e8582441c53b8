//! Forking the master into a worker.
//!
//! Invariants, which the callers keep and this module relies on:
//! - only the master's single supervisor thread calls [`fork_child`]; no tokio runtime and no
//!   Rust thread exists in the master (threads the app itself started at import are Python's
//!   business: `PyOS_AfterFork_Child` forgets them in the child, as `os.fork()` does);
//! - the child never returns into the master's code: it runs its closure and exits, so the
//!   master-only fds it closes by number are never used by it again;
//! - the child sets `PR_SET_PDEATHSIG` and then checks that its parent is still the master, so
//!   no worker outlives its master even if the master died during the fork.

use std::os::fd::RawFd;

use nix::sys::signal::Signal;
use nix::unistd::{fork, ForkResult, Pid};
use pyo3::{ffi, Python};

use crate::signals;

/// Forks; in the child closes `close_in_child`, resets signals, and runs `child`, whose return
/// value becomes the exit code. Returns the child's pid in the master.
pub fn fork_child(close_in_child: &[RawFd], child: impl FnOnce() -> i32) -> nix::Result<Pid> {
    let master = nix::unistd::getpid();
    let forked = Python::attach(|_py| {
        // SAFETY: we are attached to the interpreter (the GIL is held), as PyOS_BeforeFork and
        // friends require; this mirrors CPython's own os.fork(), including at-fork hooks.
        unsafe {
            ffi::PyOS_BeforeFork();
            // SAFETY: the master is single-threaded (see the module invariants), so the child
            // inherits no lock held by another thread.
            let r = fork();
            match r {
                Ok(ForkResult::Child) => ffi::PyOS_AfterFork_Child(),
                _ => ffi::PyOS_AfterFork_Parent(),
            }
            r
        }
    })?;
    match forked {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            signals::reset_in_child();
            for &fd in close_in_child {
                // SAFETY: these fds belong to master-only objects this child never touches
                // again: it runs `child` and exits without returning to the master's code.
                unsafe { libc::close(fd) };
            }
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
            if nix::unistd::getppid() != master {
                // The master died between fork and prctl: nobody supervises us.
                std::process::exit(1);
            }
            let code = child();
            std::process::exit(code);
        }
    }
}
