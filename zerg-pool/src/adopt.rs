//! Adoption: a pool started again (by hand, by systemd's `Restart=`, or by an upgrade) takes
//! back the generations that outlived the pool before it.
//!
//! How a pool knows to wait: every pool keeps a state file beside its control socket
//! (`<zerg-server>.state`) naming its serving and draining generations' masters. A pool that
//! starts and finds some of them still running opens its control socket first and, for at
//! most [`ADOPT_WINDOW`], takes nothing but their adoption hellos. Their listeners, queues and
//! mule records become its own: the same kernel sockets, which were never closed, so no
//! connection was refused meanwhile and no queued message was lost. Only then does it bind
//! what nobody brought back (binding an address a generation still holds would fail, and
//! unlinking a unix listener it still accepts on would hide it). A fresh start (no file, or no
//! master of it alive) waits for nothing. An upgraded pool gets the fds from the pool it
//! replaces and waits the same way for the masters to knock.
//!
//! Every fd handed back is checked: a listener must be a listening stream socket bound to the
//! address the config names, under the same name and protocol; the queues and mule records
//! must be the ones the config makes; and each generation's fds must be the very objects the
//! pool holds (the same inodes). A generation that does not match is refused with a line
//! saying what differs; it then drains and exits (see zergling's `pool_link`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, SockaddrLike, SockaddrStorage};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;
use zerg::config::ListenAddr;
use zerg::control::{Adoption, HandedGeneration, ListenerInfo, Message, Role, PROTOCOL_VERSION};

use zerg::control::running;

use crate::control_server::{may_control, same_pid, AsyncConn};
use crate::listeners::Listener;
use crate::queues::Queue;

/// How long a starting pool waits for the running generations it knows of to come back.
/// Their masters knock at least once a second (zergling's `pool_link::MAX_RETRY`).
pub use zerg::control::ADOPT_WINDOW;
/// How long a connection accepted during the window may take to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(2);
/// How often the window looks again whether the masters it waits for still live.
const RECHECK: Duration = Duration::from_millis(200);

/// What a pool writes beside its control socket for the pool after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Saved {
    pub pool_pid: u32,
    /// Never reused: a pool started again numbers on from here.
    pub last_generation: u64,
    /// The serving and draining generations' masters.
    pub generations: Vec<HandedGeneration>,
    /// The pool was stopping: a pool started before its generations finished goes on
    /// stopping rather than starting a new one.
    pub stopping: bool,
}

/// The state file `<zerg-server>.state`. It is opened once, as the pool starts (still root,
/// if it drops to `uid` later, which then owns it), and rewritten in place through that fd:
/// the control socket's directory may be root's, where a pool that dropped root could neither
/// create nor rename a file. Each rewrite is one `pwrite` at offset 0 padded with spaces to
/// the longest content so far (JSON ignores them), so a pool killed at any instant leaves
/// either the old content or the new, never a mix or an empty file.
pub struct StateFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    written: Option<Saved>,
    /// The longest content written so far: what a shorter one is padded to.
    len: usize,
}

impl StateFile {
    /// Opens (or creates, mode 0600) the file beside `control`, and gives it to `owner` (the
    /// configured `uid`/`gid`) when this pool is root. A file that cannot be opened is logged
    /// once: this pool then serves without it.
    pub fn open(control: &Path, owner: (Option<u32>, Option<u32>)) -> StateFile {
        let mut path = control.as_os_str().to_owned();
        path.push(".state");
        let path = PathBuf::from(path);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|file| {
                if !file.metadata()?.is_file() {
                    return Err(std::io::Error::other("not a regular file"));
                }
                if nix::unistd::geteuid().is_root() {
                    std::os::unix::fs::fchown(&file, owner.0, owner.1)?;
                }
                Ok(file)
            });
        let file = match opened {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the state file; a pool started after this one's death will not know to wait for its generations");
                None
            }
        };
        StateFile {
            path,
            file,
            written: None,
            len: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the pool before this one left, if anything.
    pub fn read(&mut self) -> Option<Saved> {
        use std::io::{Read, Seek};
        let file = self.file.as_mut()?;
        let mut text = Vec::new();
        file.rewind()
            .and_then(|_| file.read_to_end(&mut text))
            .ok()?;
        self.len = text.len();
        if text.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        match serde_json::from_slice(&text) {
            Ok(saved) => Some(saved),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "state file unreadable; starting fresh");
                None
            }
        }
    }

    pub fn write(&mut self, saved: Saved) {
        if self.written.as_ref() == Some(&saved) {
            return;
        }
        let Some(file) = &self.file else { return };
        let mut text = serde_json::to_vec(&saved).expect("the state always serializes");
        let len = text.len().max(self.len);
        text.resize(len, b' ');
        match nix::sys::uio::pwrite(file, &text, 0) {
            Ok(n) if n == len => {
                self.len = len;
                self.written = Some(saved);
            }
            written => {
                tracing::warn!(path = %self.path.display(), result = ?written, "cannot write the state file; it is not written again");
                self.file = None;
            }
        }
    }

    /// At a clean stop: nothing outlives the pool. The file goes if the directory lets this
    /// pool remove it, and says so in any case.
    pub fn clear(&mut self) {
        self.write(Saved::default());
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The sockets and queues the pool must hold: the config's, or those an upgrade handed over.
#[derive(Debug, Clone)]
pub struct Expected {
    pub listeners: Vec<ListenerInfo>,
    pub queues: Vec<String>,
    pub mule_records: usize,
}

/// The fds a pool holds for its whole life, as a generation or an old pool handed them over,
/// in the order of a welcome.
pub struct Held {
    pub listeners: Vec<Listener>,
    pub queues: Vec<Queue>,
    pub records: Vec<OwnedFd>,
}

impl Held {
    /// Splits `fds` (listeners, two per queue, records) after `expected`.
    pub fn split(expected: &Expected, fds: Vec<OwnedFd>) -> Held {
        let mut fds = fds.into_iter();
        let listeners = expected
            .listeners
            .iter()
            .zip(fds.by_ref())
            .map(|(info, fd)| Listener::adopted(info.clone(), fd))
            .collect();
        let queues = expected
            .queues
            .iter()
            .filter_map(|name| {
                let send = fds.next()?;
                let recv = fds.next()?;
                Some(Queue::adopted(name.clone(), send, recv))
            })
            .collect();
        Held {
            listeners,
            queues,
            records: fds.collect(),
        }
    }
}

/// A generation that handed its fds back, its connection waiting for the pool's answer.
pub struct Adopter {
    pub conn: AsyncConn,
    pub pid: u32,
    pub generation: u64,
    pub adoption: Adoption,
}

/// Checks that a generation's `fds` are what `expected` names: same listeners (name,
/// address, protocol; listening stream sockets bound there), same queues, same records.
pub fn check(expected: &Expected, a: &Adoption, fds: &[OwnedFd]) -> Result<(), String> {
    let names = |ls: &[ListenerInfo]| {
        ls.iter()
            .map(|l| format!("{}={} ({})", l.name, l.addr, l.protocol))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if a.listeners != expected.listeners {
        return Err(format!(
            "it holds listeners [{}] but the pool's are [{}] (were the sockets changed in the config? a changed socket needs a restart of the site)",
            names(&a.listeners),
            names(&expected.listeners)
        ));
    }
    if a.queues != expected.queues || a.mule_records != expected.mule_records {
        return Err(format!(
            "it holds queues {:?} and {} mule records but the pool's are {:?} and {}",
            a.queues, a.mule_records, expected.queues, expected.mule_records
        ));
    }
    let wanted = a.fd_count();
    if fds.len() != wanted {
        return Err(format!("it sent {} fds, not {wanted}", fds.len()));
    }
    for (info, fd) in a.listeners.iter().zip(fds) {
        check_listener(info, fd.as_fd()).map_err(|e| format!("listener {}: {e}", info.name))?;
    }
    Ok(())
}

/// A listening stream socket bound to `info.addr`.
fn check_listener(info: &ListenerInfo, fd: BorrowedFd<'_>) -> Result<(), String> {
    let kind = getsockopt(&fd, sockopt::SockType).map_err(|e| format!("not a socket: {e}"))?;
    if kind != SockType::Stream {
        return Err(format!("a {kind:?} socket, not a stream socket"));
    }
    if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
        return Err("not listening".into());
    }
    let local: SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(|e| format!("getsockname: {e}"))?;
    let bound = match &info.addr {
        ListenAddr::Tcp(std::net::SocketAddr::V4(want)) => local
            .as_sockaddr_in()
            .is_some_and(|s| std::net::SocketAddrV4::from(*s) == *want),
        ListenAddr::Tcp(std::net::SocketAddr::V6(want)) => {
            local.as_sockaddr_in6().is_some_and(|s| {
                std::net::SocketAddrV6::from(*s).ip() == want.ip() && s.port() == want.port()
            })
        }
        ListenAddr::Unix(want) => local
            .as_unix_addr()
            .and_then(|u| u.path())
            .is_some_and(|p| p == want.as_path()),
    };
    if !bound {
        return Err(format!(
            "bound to {} (family {:?}), not {}",
            local,
            local.family(),
            info.addr
        ));
    }
    Ok(())
}

/// The (device, inode) of an fd: two fds with the same are one kernel object.
fn identity(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// Every fd the pool hands a generation, in the order of a welcome: listeners, two per queue,
/// mule records.
pub fn all_fds<'a>(
    listeners: &'a [Listener],
    queues: &'a [Queue],
    records: &'a [OwnedFd],
) -> Vec<BorrowedFd<'a>> {
    listeners
        .iter()
        .map(|l| l.fd())
        .chain(queues.iter().flat_map(|q| q.fds()))
        .chain(records.iter().map(|r| r.as_fd()))
        .collect()
}

/// Checks that `fds` (as an adoption hello orders them) are the very sockets, queues and
/// records the pool holds (`ours`, of which the first are `listeners`).
pub fn check_same(
    ours: &[BorrowedFd<'_>],
    listeners: &[ListenerInfo],
    fds: &[OwnedFd],
) -> Result<(), String> {
    if ours.len() != fds.len() {
        return Err(format!(
            "it holds {} sockets and queues, the pool {}",
            fds.len(),
            ours.len()
        ));
    }
    for (i, (a, b)) in ours.iter().zip(fds).enumerate() {
        if identity(*a).is_none() || identity(*a) != identity(b.as_fd()) {
            let what = listeners
                .get(i)
                .map(|l| format!("listener {}", l.name))
                .unwrap_or_else(|| format!("queue or record fd {}", i - listeners.len()));
            return Err(format!(
                "its {what} is not the pool's socket (another kernel object)"
            ));
        }
    }
    Ok(())
}

/// Takes the adoption hellos of the masters in `waiting` for at most [`ADOPT_WINDOW`] (less
/// once every one of them came back or died). The first generation whose fds pass [`check`]
/// gives the pool its fds, unless an upgrade gave them already (`held`); every later one must
/// hand back the same objects. Anyone else is told to come back once the pool serves.
///
/// A SIGTERM, SIGINT or SIGQUIT ends the window early: the caller then stops what came back,
/// and the masters still awaited are sent SIGTERM (nobody would supervise them otherwise). A
/// SIGHUP or SIGUSR2 meanwhile is refused with a log line: there is nothing to reload or hand
/// over yet.
pub async fn collect(
    control: &UnixListener,
    mut waiting: Vec<HandedGeneration>,
    allowed_uid: u32,
    expected: &Expected,
    mut held: Option<Held>,
    signals: &mut Signals,
) -> Collected {
    let deadline = Instant::now() + ADOPT_WINDOW;
    waiting.retain(|g| running(g.master_pid));
    let mut stop = None;
    if waiting.is_empty() {
        return Collected {
            adopters: Vec::new(),
            held,
            kept: Vec::new(),
            stop,
        };
    }
    tracing::info!(
        generations = ?waiting.iter().map(|g| g.generation).collect::<Vec<_>>(),
        window_secs = ADOPT_WINDOW.as_secs(),
        "generations outlived the pool before this one; waiting for them to come back"
    );
    let mut adopted = Vec::new();
    let mut kept: Vec<Listener> = Vec::new();
    while !waiting.is_empty() && Instant::now() < deadline {
        let accepted = tokio::select! {
            a = control.accept() => a,
            _ = tokio::time::sleep(RECHECK) => {
                waiting.retain(|g| {
                    let alive = running(g.master_pid);
                    if !alive {
                        tracing::warn!(generation = g.generation, pid = g.master_pid, "its master is gone; not waiting for it");
                    }
                    alive
                });
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => break,
            _ = signals.term.recv() => { stop = Some(StopSignal::Graceful("SIGTERM")); break }
            _ = signals.int.recv() => { stop = Some(StopSignal::Graceful("SIGINT")); break }
            _ = signals.quit.recv() => { stop = Some(StopSignal::Immediate("SIGQUIT")); break }
            _ = signals.hup.recv() => {
                tracing::warn!("SIGHUP during the adoption window: reload refused; send it again once the pool serves");
                continue;
            }
            _ = signals.usr1.recv() => {
                tracing::warn!("SIGUSR1 during the adoption window: log reopening deferred; send it again once the pool serves");
                continue;
            }
            _ = signals.usr2.recv() => {
                tracing::warn!("SIGUSR2 during the adoption window: upgrade refused; send it again once the pool serves");
                continue;
            }
        };
        let Ok((stream, _)) = accepted else { continue };
        let creds = getsockopt(&stream, sockopt::PeerCredentials);
        let mut conn = AsyncConn::new(stream);
        let refuse = |reason: String| Message::Refused {
            protocol: PROTOCOL_VERSION,
            reason,
        };
        let peer_pid = creds.as_ref().map_or(0, |c| c.pid());
        if !creds.is_ok_and(|c| may_control(c.uid(), allowed_uid)) {
            let why = format!("only root and uid {allowed_uid} may use this control socket");
            let _ = conn.send(&refuse(why), &[]).await;
            continue;
        }
        let hello = match tokio::time::timeout(HELLO_WITHIN, conn.recv_hello()).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(e)) => {
                let _ = conn.send(&refuse(e.to_string()), &[]).await;
                continue;
            }
            Err(_) => continue,
        };
        let (pid, generation, adoption, fds) = match hello {
            (
                Message::Hello {
                    role: Role::Zergling,
                    pid,
                    generation: Some(generation),
                    adopt: Some(adoption),
                    ..
                },
                fds,
            ) => (pid, generation, adoption, fds),
            _ => {
                let why = "the pool is starting: it is adopting the generations that outlived \
                           the pool before it; try again in a few seconds";
                let _ = conn.send(&refuse(why.into()), &[]).await;
                continue;
            }
        };
        if let Err(reason) = same_pid(pid, peer_pid) {
            tracing::error!(generation, %reason, "adoption refused");
            let _ = conn.send(&refuse(reason), &[]).await;
            continue;
        }
        waiting.retain(|g| g.master_pid != pid);
        let checked = check(expected, &adoption, &fds).and_then(|()| match &held {
            Some(h) => check_same(
                &all_fds(&h.listeners, &h.queues, &h.records),
                &expected.listeners,
                &fds,
            ),
            None => Ok(()),
        });
        if let Err(reason) = checked {
            if held.is_none() {
                keep_matching(expected, &adoption, fds, &mut kept);
            }
            tracing::error!(generation, pid, %reason, "adoption refused");
            let why = format!("the pool cannot adopt this generation: {reason}");
            let _ = conn.send(&refuse(why), &[]).await;
            continue;
        }
        if held.is_none() {
            tracing::info!(
                generation,
                pid,
                "the pool's sockets and queues come back from this generation"
            );
            held = Some(Held::split(expected, fds));
        }
        tracing::info!(generation, pid, state = ?adoption.state, "generation came back");
        adopted.push(Adopter {
            conn,
            pid,
            generation,
            adoption,
        });
    }
    if let Some(why) = stop {
        tracing::info!(
            signal = why.name(),
            "adoption window ended by a stop signal"
        );
        for g in waiting.iter().filter(|g| running(g.master_pid)) {
            tracing::warn!(
                generation = g.generation,
                pid = g.master_pid,
                "stopping: this generation has not come back yet; SIGTERM to its master"
            );
            crate::pool::signal_pid(g.master_pid, nix::sys::signal::Signal::SIGTERM, "zergling");
        }
    } else if !waiting.is_empty() {
        tracing::warn!(
            generations = ?waiting.iter().map(|g| g.generation).collect::<Vec<_>>(),
            "adoption window closed before these generations came back"
        );
    }
    if held.is_some() {
        // Another generation brought every socket back: these are dups of the same ones.
        kept.clear();
    }
    Collected {
        adopters: adopted,
        held,
        kept,
        stop,
    }
}

/// Keeps the listeners of a refused generation that are what the config names (same address
/// and protocol, a listening stream socket bound there), under the config's name: the refused
/// generation drains but holds them meanwhile, so the pool could not bind them again.
fn keep_matching(expected: &Expected, a: &Adoption, fds: Vec<OwnedFd>, kept: &mut Vec<Listener>) {
    for (info, fd) in a.listeners.iter().zip(fds) {
        let Some(want) = expected
            .listeners
            .iter()
            .find(|w| w.addr == info.addr && w.protocol == info.protocol)
        else {
            continue;
        };
        if kept.iter().any(|k| k.info.addr == want.addr) {
            continue;
        }
        if check_listener(want, fd.as_fd()).is_ok() {
            kept.push(Listener::adopted(want.clone(), fd));
        }
    }
}

/// What the adoption window brought back, and whether a signal asked the pool to stop.
pub struct Collected {
    pub adopters: Vec<Adopter>,
    pub held: Option<Held>,
    /// Listeners of refused generations that the config names: see `keep_matching`.
    pub kept: Vec<Listener>,
    pub stop: Option<StopSignal>,
}

/// A stop signal that came while the pool was not running its main loop yet.
#[derive(Debug, Clone, Copy)]
pub enum StopSignal {
    Graceful(&'static str),
    Immediate(&'static str),
}

impl StopSignal {
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Graceful(n) | StopSignal::Immediate(n) => n,
        }
    }
}

/// The signals the pool handles, registered before the adoption window so that none of them
/// kills the pool outright while it waits (their default action would, leaving the
/// generations unsupervised).
pub struct Signals {
    pub term: Signal,
    pub int: Signal,
    pub quit: Signal,
    pub hup: Signal,
    pub usr1: Signal,
    pub usr2: Signal,
}

impl Signals {
    pub fn register() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }
}
