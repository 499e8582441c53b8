//! The master's signal handling: handlers only write the signal number to a self-pipe, and the
//! supervisor loop reads it (gunicorn's arbiter does the same). Nothing else runs in a handler.
//!
//! Invariants: the pipe is created `O_CLOEXEC | O_NONBLOCK` so a full pipe never blocks a
//! handler; a forked child calls [`reset_in_child`] before anything else so it neither runs the
//! master's handlers nor keeps the master's pipe.

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};

/// Signals the master reacts to.
pub const HANDLED: [Signal; 5] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
];

/// What the master sends a worker or mule it is about to kill for `harakiri`: Python writes
/// every thread's stack on it (see `python::dump_stacks_on`). Nothing else in zerg uses it
/// (SIGUSR1 stays free for reopening logs, as uWSGI's `log-reopen`).
pub const DUMP_STACKS: Signal = Signal::SIGUSR2;

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signo: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signo as u8;
        // SAFETY: write(2) is async-signal-safe; `fd` is the non-blocking pipe end that lives
        // as long as the `SelfPipe` (the master's whole life). errno is saved and restored so
        // the interrupted code does not see it change.
        unsafe {
            let saved = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = saved;
        }
    }
}

/// The read end of the self-pipe, polled by the supervisor loop.
pub struct SelfPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SelfPipe {
    /// Creates the pipe and installs the handlers for [`HANDLED`].
    pub fn install() -> nix::Result<SelfPipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for sig in HANDLED {
            // SAFETY: the handler only calls write(2) on a pipe, which is async-signal-safe.
            unsafe { sigaction(sig, &action)? };
        }
        Ok(SelfPipe {
            read,
            _write: write,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.read.as_fd()
    }

    /// Every signal delivered since the last call, oldest first.
    pub fn drain(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = nix::unistd::read(&self.read, &mut buf) {
            if n == 0 {
                break;
            }
            out.extend(
                buf[..n]
                    .iter()
                    .filter_map(|&b| Signal::try_from(b as i32).ok()),
            );
        }
        out
    }

    /// Raw fds a forked child must close.
    pub fn raw_fds(&self) -> [RawFd; 2] {
        [self.read.as_raw_fd(), self._write.as_raw_fd()]
    }
}

/// In a freshly forked child: default dispositions and an empty signal mask.
pub fn reset_in_child() {
    WRITE_FD.store(-1, Ordering::Relaxed);
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in HANDLED {
        // SAFETY: restoring the default disposition installs no handler.
        let _ = unsafe { sigaction(sig, &default) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Set when a worker is asked to stop (SIGTERM or SIGINT), as the signal arrives. tokio sees
/// the signal only when its event loop next runs, which is after an app call running inline on
/// that loop returns; the response of that call must already know the worker is stopping.
pub static WORKER_STOPPING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Makes SIGTERM and SIGINT set [`WORKER_STOPPING`] in a worker, beside tokio's own handling.
pub fn flag_worker_stop() -> std::io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the action only stores to an atomic, which is async-signal-safe; it never
        // allocates, locks or touches errno.
        unsafe {
            signal_hook_registry::register(signal, || {
                WORKER_STOPPING.store(true, Ordering::Relaxed);
            })?;
        }
    }
    Ok(())
}

/// In a worker or mule: its end of the socket on which the master hands it a reopened log
/// (see [`reopen_log_on_signal`]); -1 in the master.
static LOG_CHANNEL: AtomicI32 = AtomicI32::new(-1);

/// What the master sends a process once it has put a reopened log on its channel.
pub const REOPEN_LOG: Signal = Signal::SIGUSR1;

/// In the master, before it forks: on [`REOPEN_LOG`], a worker or mule takes the file waiting
/// on its channel (set with [`set_log_channel`] after the fork) and points its stdout and
/// stderr at it. Installed before the first fork, so a signal that reaches a child before it
/// has set its channel does nothing rather than kill it; the master itself has no channel.
/// Done in the handler itself, so a process whose threads are all busy in Python moves too.
pub fn reopen_log_on_signal() -> std::io::Result<()> {
    // SAFETY: the action only calls recvmsg(2), dup2(2) and close(2), which are
    // async-signal-safe, on stack buffers; it allocates nothing and restores errno.
    unsafe {
        signal_hook_registry::register(REOPEN_LOG as libc::c_int, take_log)?;
    }
    Ok(())
}

/// In a freshly forked worker or mule: `channel` is where its reopened logs arrive, kept open
/// for the process's life. A log handed over between the fork and now came with a
/// [`REOPEN_LOG`] that found no channel yet: it is taken at once.
pub fn set_log_channel(channel: OwnedFd) {
    LOG_CHANNEL.store(channel.into_raw_fd(), Ordering::Relaxed);
    take_log();
}

/// Takes every file waiting on the log channel; the last one becomes stdout and stderr.
fn take_log() {
    let channel = LOG_CHANNEL.load(Ordering::Relaxed);
    if channel < 0 {
        return;
    }
    /// Room for one control message carrying one fd, aligned as `cmsghdr` needs.
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    // SAFETY: errno is this thread's; it is read and restored around the calls below.
    let saved = unsafe { *libc::__errno_location() };
    loop {
        let mut byte = 0u8;
        let mut iov = libc::iovec {
            iov_base: (&mut byte as *mut u8).cast(),
            iov_len: 1,
        };
        let mut control = Control([0; 64]);
        // SAFETY: a zeroed msghdr is valid; every pointer set in it is to a live stack buffer
        // of the length given, for the duration of the call.
        let fd = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = control.0.len();
            let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
            if libc::recvmsg(channel, &mut msg, flags) <= 0 {
                break;
            }
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null()
                || (*cmsg).cmsg_level != libc::SOL_SOCKET
                || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            {
                continue;
            }
            std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>())
        };
        // SAFETY: `fd` was just received and is this process's; stdout and stderr are
        // replaced atomically by dup2, and the received fd is closed once copied.
        unsafe {
            libc::dup2(fd, libc::STDOUT_FILENO);
            libc::dup2(fd, libc::STDERR_FILENO);
            libc::close(fd);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// The signals that ask a mule to stop: SIGHUP is what uWSGI's master sends a mule it reloads
/// or stops, and what Galaxy's mule waits for (with SIGTERM and SIGINT).
pub const MULE_STOP: [libc::c_int; 3] = [libc::SIGHUP, libc::SIGTERM, libc::SIGINT];

/// In a mule, before its Python code runs: each of [`MULE_STOP`] writes a byte to `wake`, the
/// write end of the mule's stop pipe, so that its next `farm_get_msg` raises SystemExit. A
/// mule script that installs a Python handler for one of them replaces this one, and stops
/// its own way (Galaxy's does); the master writes the pipe itself too, so that way out stays.
pub fn mule_stop_on_signals(wake: std::os::fd::RawFd) -> std::io::Result<()> {
    for signal in MULE_STOP {
        // SAFETY: the action only calls write(2) on `wake`, which the caller keeps open for
        // the mule's whole life; write is async-signal-safe, a full pipe (EAGAIN, non-blocking)
        // needs no second byte, and errno is saved and restored around the call.
        unsafe {
            signal_hook_registry::register(signal, move || {
                let saved = *libc::__errno_location();
                let _ = libc::write(wake, b"s".as_ptr().cast(), 1);
                *libc::__errno_location() = saved;
            })?;
        }
    }
    Ok(())
}
