//! `uwsgi.lock(i)` / `uwsgi.unlock(i)`: user locks shared by every process of a generation and
//! every thread in them (uWSGI's `locks` option).
//!
//! The master creates one memfd (byte i = lock i) before forking. Each process reopens it via
//! `/proc/self/fd`, which gives it an open file description of its own, and takes OFD
//! byte-range locks on that: those exclude other processes (a lock taken through a description
//! shared across fork would not). Threads of one process first take an in-process lock for the
//! same index, since OFD locks do not exclude users of the same description.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Condvar, Mutex, OnceLock};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

struct Locks {
    memfd: OwnedFd,
    count: u32,
    /// Per index: held by a thread of this process.
    local: Vec<(Mutex<bool>, Condvar)>,
    /// This process's own description of the memfd, with the pid that opened it.
    own: Mutex<Option<(u32, OwnedFd)>>,
}

static LOCKS: OnceLock<Locks> = OnceLock::new();

/// In the master, before any fork.
pub fn create(count: u32) -> nix::Result<()> {
    let memfd =
        nix::sys::memfd::memfd_create("zerg-locks", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(&memfd, count.max(1) as i64)?;
    let local = (0..count)
        .map(|_| (Mutex::new(false), Condvar::new()))
        .collect();
    let _ = LOCKS.set(Locks {
        memfd,
        count,
        local,
        own: Mutex::new(None),
    });
    Ok(())
}

fn flock(kind: i32, index: u32) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value that we then fill in.
    let mut f: libc::flock = unsafe { std::mem::zeroed() };
    f.l_type = kind as libc::c_short;
    f.l_whence = libc::SEEK_SET as libc::c_short;
    f.l_start = index as libc::off_t;
    f.l_len = 1;
    f
}

impl Locks {
    /// This process's own open file description, reopened after a fork.
    fn own_fd(&self) -> Result<BorrowedFd<'static>, String> {
        let pid = std::process::id();
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        if own.as_ref().is_none_or(|(p, _)| *p != pid) {
            let path = format!("/proc/self/fd/{}", self.memfd.as_raw_fd());
            let fd = nix::fcntl::open(
                path.as_str(),
                OFlag::O_RDWR | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("cannot open the lock file: {e}"))?;
            *own = Some((pid, fd));
        }
        let raw = own
            .as_ref()
            .map(|(_, fd)| fd.as_raw_fd())
            .ok_or("no lock file")?;
        // SAFETY: the fd lives in a static and is replaced only after a fork, in the child,
        // where no borrow from the parent's use is live.
        Ok(unsafe { BorrowedFd::borrow_raw(raw) })
    }
}

fn get(index: u32) -> Result<&'static Locks, String> {
    let locks = LOCKS.get().ok_or("locks are not set up")?;
    if index >= locks.count {
        return Err(format!(
            "lock {index} does not exist (`locks: {}`)",
            locks.count
        ));
    }
    Ok(locks)
}

/// Blocks until lock `index` is held by the calling thread.
pub fn lock(index: u32) -> Result<(), String> {
    let locks = get(index)?;
    let (held, freed) = &locks.local[index as usize];
    let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
    while *h {
        h = freed.wait(h).unwrap_or_else(|p| p.into_inner());
    }
    *h = true;
    drop(h);
    let fd = locks.own_fd()?;
    let wr = flock(libc::F_WRLCK, index);
    loop {
        match fcntl(fd, FcntlArg::F_OFD_SETLKW(&wr)) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                release_local(locks, index);
                return Err(format!("lock {index}: {e}"));
            }
        }
    }
}

/// Releases lock `index`.
pub fn unlock(index: u32) -> Result<(), String> {
    let locks = get(index)?;
    let fd = locks.own_fd()?;
    fcntl(fd, FcntlArg::F_OFD_SETLK(&flock(libc::F_UNLCK, index)))
        .map_err(|e| format!("unlock {index}: {e}"))?;
    release_local(locks, index);
    Ok(())
}

fn release_local(locks: &Locks, index: u32) {
    let (held, freed) = &locks.local[index as usize];
    *held.lock().unwrap_or_else(|p| p.into_inner()) = false;
    freed.notify_one();
}
