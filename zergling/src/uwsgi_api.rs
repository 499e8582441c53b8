//! `import uwsgi`: the part of uWSGI's Python API that Galaxy calls, over the pool's queues.
//!
//! Process-wide facts (which worker or mule this is, the queues, the options) live in statics
//! set by the master before the app is imported and updated in each child right after fork.
//! Differences from uWSGI, on purpose: a message that cannot be queued (queue full, too large,
//! unknown farm) raises instead of vanishing silently. Messages and names are taken as uWSGI
//! takes them: `str` (sent as UTF-8) or any bytes-like object.
//!
//! A stopping mule talks only to itself: zerg's queues outlive a generation (uWSGI's die with
//! its master), so a control message a stopping mule sends to wake its own dispatcher (Galaxy's
//! `__SHUTDOWN__`) would otherwise reach, and stop, a mule of the next generation. Once a mule
//! is asked to stop, what it sends with `farm_msg` or `mule_msg` is queued in the mule itself
//! and taken by its own next `farm_get_msg`/`mule_get_msg`; what it has not taken when it exits
//! is dropped, and logged.
//!
//! Queue fds: `farm:NAME` and `mule:K` socketpairs (SOCK_SEQPACKET) held by the pool; messages
//! are sent on the first end and taken from the second, one whole message per read.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use pyo3::exceptions::{PyOSError, PySystemExit, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString};

use ::zerg::mule_record::{self, MAX_MESSAGE};

use crate::scoreboard::{Claim, Lane, Ticket};

/// One queue's two ends.
pub struct Queue {
    pub name: String,
    pub send: OwnedFd,
    pub recv: OwnedFd,
}

/// What the module knows about the server, fixed before the app is imported.
pub struct Setup {
    pub numproc: u32,
    /// Options in config order, as (key, value) strings; lists give one pair per item.
    pub opt: Vec<(String, String)>,
    pub queues: Vec<Queue>,
    /// Farm name -> mule positions.
    pub farms: Vec<::zerg::config::Farm>,
    /// Per mule position (index k-1): the pool's record of the message in hand.
    pub records: Vec<OwnedFd>,
}

static SETUP: OnceLock<Setup> = OnceLock::new();
static WORKER_ID: AtomicU32 = AtomicU32::new(0);
static MULE_ID: AtomicU32 = AtomicU32::new(0);
static MASTER_PID: AtomicI32 = AtomicI32::new(0);
/// In a mule: the read end of its stop pipe, readable once the mule is asked to stop.
static STOP_FD: AtomicI32 = AtomicI32::new(-1);
/// In a mule: the write end of its stop pipe, to wake its own `farm_get_msg`.
static STOP_WAKE: AtomicI32 = AtomicI32::new(-1);
/// In a stopping mule: what it sent, for itself only (see the module doc).
static LOOPBACK: Mutex<VecDeque<Vec<u8>>> = Mutex::new(VecDeque::new());
/// In a mule: its place on the generation's scoreboard, and the message in hand there, which
/// the master times for `mule-harakiri`.
static BOARD: OnceLock<Lane> = OnceLock::new();
static HELD: Mutex<Option<(Ticket, Claim)>> = Mutex::new(None);
/// The most bytes of a message the scoreboard shows (it keeps [`crate::scoreboard::TEXT_MAX`] in all).
const SHOWN: usize = 80;

/// In the master, before Python starts: records the setup and registers the module.
pub fn install(setup: Setup) {
    MASTER_PID.store(std::process::id() as i32, Ordering::Relaxed);
    let _ = SETUP.set(setup);
    pyo3::append_to_inittab!(uwsgi);
    pyo3::append_to_inittab!(zerg);
}

/// In the master: the queues' names, then their fds (send and receive end each) and the mule
/// records, in the order of the pool's welcome: what this generation hands back to a pool
/// started again (see `pool_link`). Empty before [`install`].
pub fn held() -> (Vec<String>, Vec<BorrowedFd<'static>>, usize) {
    let Some(setup) = SETUP.get() else {
        return (Vec::new(), Vec::new(), 0);
    };
    let names = setup.queues.iter().map(|q| q.name.clone()).collect();
    let fds = setup
        .queues
        .iter()
        .flat_map(|q| [q.send.as_fd(), q.recv.as_fd()])
        .chain(setup.records.iter().map(|r| r.as_fd()))
        .collect();
    (names, fds, setup.records.len())
}

pub fn set_worker(id: u32) {
    WORKER_ID.store(id, Ordering::Relaxed);
}

/// In a mule: its position, the fd that says "stop" and the one that makes it say so. Both
/// stay open until [`mule_ends`].
pub fn set_mule(id: u32, stop: BorrowedFd<'_>, wake: std::os::fd::RawFd, board: Lane) {
    let _ = BOARD.set(board);
    MULE_ID.store(id, Ordering::Relaxed);
    STOP_FD.store(stop.as_raw_fd(), Ordering::Relaxed);
    STOP_WAKE.store(wake, Ordering::Relaxed);
}

fn setup() -> PyResult<&'static Setup> {
    SETUP
        .get()
        .ok_or_else(|| PyOSError::new_err("the uwsgi module is only available inside zerg"))
}

fn queue(name: &str) -> Option<&'static Queue> {
    SETUP.get()?.queues.iter().find(|q| q.name == name)
}

/// A message or a name as uWSGI takes it: `str` as UTF-8, or a bytes-like object.
fn bytes_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    if obj.cast::<PyMemoryView>().is_ok() {
        return Ok(obj
            .call_method0("tobytes")?
            .cast::<PyBytes>()?
            .as_bytes()
            .to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be str or bytes-like, not {}",
        obj.get_type().name()?
    )))
}

/// A farm name as uWSGI takes it (`str` or bytes).
fn name_of(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    String::from_utf8(bytes_of(obj, "a farm name")?)
        .map_err(|_| PyValueError::new_err("a farm name must be UTF-8"))
}

/// In a mule: whether it has been asked to stop (its stop pipe is readable), or its master is
/// gone (then it got SIGTERM, which its own Python handler may have taken).
fn stop_requested() -> bool {
    let stop = STOP_FD.load(Ordering::Relaxed);
    if stop < 0 {
        return false;
    }
    if nix::unistd::getppid().as_raw() != MASTER_PID.load(Ordering::Relaxed) {
        return true;
    }
    // SAFETY: `stop` is the mule's stop pipe, open until `mule_ends` sets STOP_FD to -1.
    let fd = unsafe { BorrowedFd::borrow_raw(stop) };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Makes the stop pipe readable, so that a `farm_get_msg` blocked in this mule takes what
/// was just kept for it (a Python signal handler may have replaced zerg's, which does this).
fn wake_self() {
    let wake = STOP_WAKE.load(Ordering::Relaxed);
    if wake >= 0 {
        // SAFETY: the write end is open for the mule's whole life (never closed, see mule.rs).
        let fd = unsafe { BorrowedFd::borrow_raw(wake) };
        let _ = nix::unistd::write(fd, b"s");
    }
}

fn loopback() -> std::sync::MutexGuard<'static, VecDeque<Vec<u8>>> {
    LOOPBACK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// At a mule's exit: its stop pipe is no longer looked at, and what it sent itself while
/// stopping and never took is dropped.
pub fn mule_ends() {
    STOP_FD.store(-1, Ordering::Relaxed);
    let left = std::mem::take(&mut *loopback());
    if !left.is_empty() {
        tracing::info!(
            messages = left.len(),
            "dropped what this mule sent itself while stopping"
        );
    }
}

/// Queues one message without blocking; every failure is an exception the caller sees. A
/// stopping mule's message goes to itself (see the module doc).
fn put(queue_name: &str, what: &str, msg: &[u8]) -> PyResult<()> {
    if msg.len() > MAX_MESSAGE {
        return Err(PyValueError::new_err(format!(
            "message of {} bytes is larger than the {MAX_MESSAGE}-byte limit",
            msg.len()
        )));
    }
    let q = queue(queue_name).ok_or_else(|| PyValueError::new_err(format!("unknown {what}")))?;
    if MULE_ID.load(Ordering::Relaxed) != 0
        && stop_requested()
        && mule_queues(true).is_ok_and(|mine| mine.iter().any(|m| std::ptr::eq(*m, q)))
    {
        // A queue this mule reads: the next generation's mule would read it too.
        tracing::debug!(to = what, "a stopping mule's message kept for itself");
        loopback().push_back(msg.to_vec());
        wake_self();
        return Ok(());
    }
    match send(
        q.send.as_raw_fd(),
        msg,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    ) {
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::EAGAIN) => Err(PyOSError::new_err(format!(
            "{what}: queue full, message not sent"
        ))),
        Err(e) => Err(PyOSError::new_err(format!("{what}: {e}"))),
    }
}

/// Right after a fork, in a worker or a mule: calls `uwsgi.post_fork_hook` if the app set one
/// (uWSGI's hook for reopening connections a forked process must not share).
pub fn run_post_fork_hook() {
    Python::attach(|py| {
        let hook = py
            .import("uwsgi")
            .and_then(|m| m.getattr("post_fork_hook"))
            .ok()
            .filter(|h| !h.is_none());
        if let Some(hook) = hook {
            if let Err(e) = hook.call0() {
                tracing::error!("post_fork_hook raised: {}", crate::python::describe(py, &e));
            }
        }
    });
}

/// This mule's "message in hand" record, if it is a mule.
fn my_record() -> Option<&'static OwnedFd> {
    let id = MULE_ID.load(Ordering::Relaxed) as usize;
    SETUP.get()?.records.get(id.checked_sub(1)?)
}

/// Marks the message in hand as finished (uWSGI has no ack: asking for the next message is
/// one; `zerg.ack()` is the explicit form).
pub fn ack() {
    if let Some(record) = my_record() {
        let _ = mule_record::clear(record);
    }
    drop(HELD.lock().unwrap_or_else(PoisonError::into_inner).take());
}

/// At a mule's start: a message its position's previous holder took and never finished goes
/// back on its queue, so another mule (or this one) handles it.
pub fn requeue_in_hand() {
    let (Some(record), Some(setup)) = (my_record(), SETUP.get()) else {
        return;
    };
    let Some((index, msg)) = mule_record::in_hand(record) else {
        return;
    };
    let Some(queue) = setup.queues.get(index as usize) else {
        return;
    };
    match send(
        queue.send.as_raw_fd(),
        &msg,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    ) {
        Ok(_) => {
            tracing::warn!(
                queue = queue.name,
                bytes = msg.len(),
                "requeued a message whose mule died before finishing it"
            );
            let _ = mule_record::count_redelivery(record);
            ack();
        }
        Err(e) => {
            tracing::error!(queue = queue.name, error = %e, "cannot requeue an unfinished message; it stays recorded")
        }
    }
}

/// Waits for one message on any of `queues` (GIL released). `None` on timeout; SystemExit
/// when the mule is asked to stop (only between messages: the one in hand is finished first).
fn take(py: Python<'_>, queues: &[&'static Queue], timeout_ms: i32) -> PyResult<Option<Vec<u8>>> {
    // Asking for the next message finishes the one in hand.
    ack();
    let stop = STOP_FD.load(Ordering::Relaxed);
    let result = py.detach(|| -> Result<Option<Vec<u8>>, String> {
        let deadline = (timeout_ms >= 0).then(|| {
            std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms as u64)
        });
        loop {
            // What the stopping mule sent itself comes before the stop.
            if let Some(msg) = loopback().pop_front() {
                return Ok(Some(msg));
            }
            // SAFETY: `stop` is the mule's stop pipe, open for the mule's whole life.
            let stop_fd = (stop >= 0).then(|| unsafe { BorrowedFd::borrow_raw(stop) });
            let mut fds: Vec<PollFd> = queues
                .iter()
                .map(|q| PollFd::new(q.recv.as_fd(), PollFlags::POLLIN))
                .collect();
            if let Some(fd) = stop_fd {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            let wait = match deadline {
                None => PollTimeout::NONE,
                Some(d) => PollTimeout::try_from(
                    d.saturating_duration_since(std::time::Instant::now())
                        .as_millis()
                        .min(i32::MAX as u128) as i32,
                )
                .unwrap_or(PollTimeout::ZERO),
            };
            match poll(&mut fds, wait) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.to_string()),
            }
            if stop_fd.is_some()
                && fds
                    .last()
                    .and_then(PollFd::revents)
                    .is_some_and(|r| !r.is_empty())
            {
                return Err("stop".into());
            }
            let ready: Vec<usize> = fds
                .iter()
                .take(queues.len())
                .enumerate()
                .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| i)
                .collect();
            for i in ready {
                let mut buf = vec![0u8; MAX_MESSAGE];
                // Another mule may have taken it first: EAGAIN means poll again.
                match recv(queues[i].recv.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => {
                        buf.truncate(n);
                        let index = SETUP
                            .get()
                            .and_then(|s| s.queues.iter().position(|q| std::ptr::eq(q, queues[i])))
                            .unwrap_or(0);
                        if let Some(record) = my_record() {
                            let _ = mule_record::remember(record, index as u32, &buf);
                        }
                        if let Some(board) = BOARD.get() {
                            let shown = &buf[..buf.len().min(SHOWN)];
                            let ticket = board.begin();
                            let claim = board.claim(&[
                                b"message from ",
                                queues[i].name.as_bytes(),
                                b": ",
                                shown,
                            ]);
                            *HELD.lock().unwrap_or_else(PoisonError::into_inner) =
                                Some((ticket, claim));
                        }
                        return Ok(Some(buf));
                    }
                    Err(nix::errno::Errno::EAGAIN) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    });
    match result {
        Ok(msg) => Ok(msg),
        Err(stop) if stop == "stop" => Err(PySystemExit::new_err(0)),
        Err(e) => Err(PyOSError::new_err(e)),
    }
}

/// The queues a mule reads: its own, and (if `farms`) those of the farms it belongs to.
fn mule_queues(farms: bool) -> PyResult<Vec<&'static Queue>> {
    let id = MULE_ID.load(Ordering::Relaxed);
    if id == 0 {
        return Err(PyValueError::new_err("only a mule can receive messages"));
    }
    let setup = setup()?;
    let mut out: Vec<&Queue> = queue(&format!("mule:{id}")).into_iter().collect();
    if farms {
        out.extend(
            setup
                .farms
                .iter()
                .filter(|f| f.mules.contains(&id))
                .filter_map(|f| queue(&format!("farm:{}", f.name))),
        );
    }
    Ok(out)
}

#[pymodule]
pub mod uwsgi {
    use super::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = m.py();
        let numproc = SETUP.get().map_or(0, |s| s.numproc);
        m.add("numproc", numproc)?;
        // uWSGI: values are bytes; a repeated key becomes a list.
        let opt = PyDict::new(py);
        if let Some(setup) = SETUP.get() {
            for (key, value) in &setup.opt {
                let v = PyBytes::new(py, value.as_bytes());
                match opt.get_item(key)? {
                    None => opt.set_item(key, v)?,
                    Some(existing) => match existing.cast::<PyList>() {
                        Ok(list) => list.append(v)?,
                        Err(_) => opt.set_item(key, PyList::new(py, [existing, v.into_any()])?)?,
                    },
                }
            }
        }
        m.add("opt", opt)?;
        m.add("post_fork_hook", py.None())?;
        m.add("SPOOL_OK", -2)?;
        Ok(())
    }

    /// 1-based id of this web worker; 0 in a mule or the master.
    #[pyfunction]
    pub fn worker_id() -> u32 {
        WORKER_ID.load(Ordering::Relaxed)
    }

    /// 1-based id of this mule; 0 elsewhere.
    #[pyfunction]
    pub fn mule_id() -> u32 {
        MULE_ID.load(Ordering::Relaxed)
    }

    #[pyfunction]
    pub fn masterpid() -> i32 {
        MASTER_PID.load(Ordering::Relaxed)
    }

    /// One dict per web worker (`id`; `pid` is known for the calling worker only).
    #[pyfunction]
    pub fn workers(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
        let me = WORKER_ID.load(Ordering::Relaxed);
        (1..=setup()?.numproc)
            .map(|id| {
                let d = PyDict::new(py);
                d.set_item("id", id)?;
                d.set_item("pid", if id == me { std::process::id() } else { 0 })?;
                Ok(d)
            })
            .collect()
    }

    /// In a mule: True if it belongs to `name` (or to any farm); None otherwise, as in uWSGI.
    #[pyfunction]
    #[pyo3(signature = (name = None))]
    pub fn in_farm(name: Option<&str>) -> PyResult<Option<bool>> {
        let id = MULE_ID.load(Ordering::Relaxed);
        if id == 0 {
            return Ok(None);
        }
        let found = setup()?
            .farms
            .iter()
            .any(|f| f.mules.contains(&id) && name.is_none_or(|n| n == f.name));
        Ok(found.then_some(true))
    }

    /// Takes user lock `i` (shared by every process and thread of the generation).
    #[pyfunction]
    #[pyo3(signature = (i = 0))]
    pub fn lock(py: Python<'_>, i: u32) -> PyResult<()> {
        py.detach(|| crate::locks::lock(i))
            .map_err(PyValueError::new_err)
    }

    /// Releases user lock `i`.
    #[pyfunction]
    #[pyo3(signature = (i = 0))]
    pub fn unlock(i: u32) -> PyResult<()> {
        crate::locks::unlock(i).map_err(PyValueError::new_err)
    }

    /// Queues `msg` (str or bytes-like) for exactly one mule of `farm`.
    #[pyfunction]
    pub fn farm_msg(farm: &Bound<'_, PyAny>, msg: &Bound<'_, PyAny>) -> PyResult<()> {
        send_to_farm(&name_of(farm)?, &bytes_of(msg, "a message")?)
    }

    /// In a mule: the next message from any of its farms (blocks).
    #[pyfunction]
    pub fn farm_get_msg(py: Python<'_>) -> PyResult<Option<Bound<'_, PyBytes>>> {
        let mut queues = mule_queues(true)?;
        queues.retain(|q| q.name.starts_with("farm:"));
        Ok(take(py, &queues, -1)?.map(|m| PyBytes::new(py, &m)))
    }

    /// Sends `msg` (str or bytes-like) to mule `target` (an int) or to a farm (a name).
    #[pyfunction]
    #[pyo3(signature = (msg, target = None))]
    pub fn mule_msg(msg: &Bound<'_, PyAny>, target: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        send_to_target(&bytes_of(msg, "a message")?, target, name_of)
    }

    /// In a mule: the next message for it or (if `farms`) its farms; None after `timeout`
    /// seconds (-1: wait forever).
    #[pyfunction]
    #[pyo3(signature = (signals = true, farms = true, buffer_size = 65536, timeout = -1))]
    pub fn mule_get_msg(
        py: Python<'_>,
        signals: bool,
        farms: bool,
        buffer_size: usize,
        timeout: i64,
    ) -> PyResult<Option<Bound<'_, PyBytes>>> {
        let _ = (signals, buffer_size);
        let queues = mule_queues(farms)?;
        let ms = if timeout < 0 {
            -1
        } else {
            (timeout.min(i32::MAX as i64 / 1000) * 1000) as i32
        };
        Ok(take(py, &queues, ms)?.map(|m| PyBytes::new(py, &m)))
    }
}

fn send_to_farm(farm: &str, msg: &[u8]) -> PyResult<()> {
    put(&format!("farm:{farm}"), &format!("farm {farm:?}"), msg)
}

/// `mule_msg`'s target: a mule id (an int), or a farm named as `name` reads it.
fn send_to_target(
    msg: &[u8],
    target: Option<&Bound<'_, PyAny>>,
    name: fn(&Bound<'_, PyAny>) -> PyResult<String>,
) -> PyResult<bool> {
    match target {
        Some(t) if t.extract::<u32>().is_ok() => {
            let id: u32 = t.extract()?;
            put(&format!("mule:{id}"), &format!("mule {id}"), msg)?
        }
        Some(t) => send_to_farm(&name(t)?, msg)?,
        None => {
            return Err(PyValueError::new_err(
                "mule_msg needs a mule id or a farm name (zerg has no shared mule queue)",
            ))
        }
    }
    Ok(true)
}

/// `import zerg`: the same calls as `uwsgi` (arguments checked by type: bytes messages, str
/// names, int ids), plus what zerg offers beyond uWSGI's API.
#[pymodule]
pub mod zerg {
    #[pymodule_export]
    use super::uwsgi::{
        farm_get_msg, in_farm, lock, masterpid, mule_get_msg, mule_id, unlock, worker_id, workers,
    };
    use pyo3::prelude::*;

    /// Queues `msg` for exactly one mule of `farm`.
    #[pyfunction]
    fn farm_msg(farm: &str, msg: &[u8]) -> PyResult<()> {
        super::send_to_farm(farm, msg)
    }

    /// Sends `msg` to mule `target` (an int) or to a farm (a str).
    #[pyfunction]
    #[pyo3(signature = (msg, target = None))]
    fn mule_msg(msg: &[u8], target: Option<&Bound<'_, PyAny>>) -> PyResult<bool> {
        super::send_to_target(msg, target, |t| t.extract::<String>())
    }

    /// In a mule: the message in hand is finished; it will not be delivered again even if this
    /// mule dies now. (Asking for the next message does the same.)
    #[pyfunction]
    fn ack() {
        crate::uwsgi_api::ack();
    }
}
