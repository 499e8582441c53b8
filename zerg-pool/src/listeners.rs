//! Binding the sockets the pool owns for its whole life: the listeners (HTTP and uwsgi) and
//! the control socket.
//!
//! Every socket is created `SOCK_CLOEXEC`: it reaches a zergling only through SCM_RIGHTS, never
//! by inheritance. A listener is bound once and never closed while the pool runs, so every
//! generation accepts on the same kernel socket and one backlog (no `SO_REUSEPORT` copies whose
//! queued connections would be reset when one closes).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrIn, SockaddrIn6, UnixAddr,
};
use nix::sys::stat::{umask, Mode};
use zerg::config::{ListenAddr, Protocol};
use zerg::control::ListenerInfo;

/// A bound, listening socket held by the pool.
#[derive(Debug)]
pub struct Listener {
    pub info: ListenerInfo,
    fd: OwnedFd,
}

impl Listener {
    /// A listener the pool did not bind: adopted from a generation, or handed over by the
    /// pool it replaces (checked by `adopt` first).
    pub fn adopted(info: ListenerInfo, fd: OwnedFd) -> Listener {
        Listener { info, fd }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("{path} is in use by a running server (it accepted a connection); stop it or pick another path")]
    InUse { path: PathBuf },
}

fn bind_err(addr: &impl std::fmt::Display) -> impl FnOnce(nix::Error) -> BindError + '_ {
    move |e| BindError::Bind {
        addr: addr.to_string(),
        source: e.into(),
    }
}

/// Binds and listens on every address, in order; unix sockets get `mode` (`chmod-socket`).
/// The `i`th listener of a protocol is named for it: `http:i`, `uwsgi:i`. A listener in
/// `kept` (already listening, named as here) is used instead of binding its address again.
pub fn bind_all(
    listeners: &[(Protocol, ListenAddr)],
    backlog: u32,
    mode: u32,
    mut kept: Vec<Listener>,
) -> Result<Vec<Listener>, BindError> {
    manifest(listeners)
        .into_iter()
        .map(|info| {
            if let Some(i) = kept.iter().position(|l| l.info == info) {
                return Ok(kept.swap_remove(i));
            }
            let fd = bind_one(&info.addr, backlog, mode)?;
            Ok(Listener { info, fd })
        })
        .collect()
}

/// What the pool's listeners are for `listeners` of the config, named as [`bind_all`] names
/// them: what adopted sockets are checked against.
pub fn manifest(listeners: &[(Protocol, ListenAddr)]) -> Vec<ListenerInfo> {
    let mut counts: HashMap<Protocol, usize> = HashMap::new();
    listeners
        .iter()
        .map(|(protocol, addr)| {
            let count = counts.entry(*protocol).or_default();
            let name = format!("{protocol}:{count}");
            *count += 1;
            ListenerInfo {
                name,
                addr: addr.clone(),
                protocol: *protocol,
            }
        })
        .collect()
}

/// Binds one listening socket. Unix sockets get `mode` as their file permissions.
pub fn bind_one(addr: &ListenAddr, backlog: u32, mode: u32) -> Result<OwnedFd, BindError> {
    let backlog = Backlog::new(backlog.min(i32::MAX as u32) as i32).unwrap_or(Backlog::MAXCONN);
    let flags = SockFlag::SOCK_CLOEXEC;
    match addr {
        ListenAddr::Tcp(sa) => {
            let family = if sa.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket(family, SockType::Stream, flags, None).map_err(bind_err(addr))?;
            setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(bind_err(addr))?;
            match sa {
                std::net::SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(*v4)),
                std::net::SocketAddr::V6(v6) => {
                    setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(bind_err(addr))?;
                    bind(fd.as_raw_fd(), &SockaddrIn6::from(*v6))
                }
            }
            .map_err(bind_err(addr))?;
            listen(&fd, backlog).map_err(bind_err(addr))?;
            Ok(fd)
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let fd = socket(AddressFamily::Unix, SockType::Stream, flags, None)
                .map_err(bind_err(addr))?;
            let ua = UnixAddr::new(path.as_path()).map_err(bind_err(addr))?;
            // The node is made with `mode` by bind itself, under a umask that leaves just that:
            // a chmod by path afterwards could be sent through a symlink swapped in meanwhile
            // (the pool may be root here). The pool has no other thread to see the umask.
            let mask = Mode::from_bits_truncate(!mode & 0o777);
            let before = umask(mask);
            let bound = bind(fd.as_raw_fd(), &ua);
            umask(before);
            bound.map_err(bind_err(addr))?;
            listen(&fd, backlog).map_err(bind_err(addr))?;
            Ok(fd)
        }
    }
}

/// Removes a socket file left by a server that is gone; refuses if something still answers.
fn remove_stale_socket(path: &Path) -> Result<(), BindError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::Bind {
            addr: path.display().to_string(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ),
        });
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BindError::InUse {
            path: path.to_owned(),
        });
    }
    std::fs::remove_file(path).map_err(|source| BindError::Bind {
        addr: path.display().to_string(),
        source,
    })
}

/// Removes the unix socket files the pool created, at exit.
pub fn remove_socket_files(paths: impl IntoIterator<Item = PathBuf>) {
    for path in paths {
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove socket file");
            }
        }
    }
}
