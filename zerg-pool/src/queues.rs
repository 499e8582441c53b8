//! Farm and mule queues, created and held by the pool for its whole life.
//!
//! A queue is a `SOCK_SEQPACKET` socketpair: messages are sent on one end and taken from the
//! other, each read takes exactly one whole message, and because the pool keeps both ends open,
//! messages queued while no mule reads survive every reload and master crash (uWSGI keeps these
//! in the master and loses them). Both ends are `SOCK_CLOEXEC`; they reach generations only by
//! SCM_RIGHTS, with the listeners.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};
use zerg::config::Config;

/// Requested socket buffer per queue; the kernel caps it at `net.core.wmem_max`.
const QUEUE_BYTES: usize = 4 << 20;

/// One queue: `farm:NAME` or `mule:K`.
pub struct Queue {
    pub name: String,
    send: OwnedFd,
    recv: OwnedFd,
}

impl Queue {
    /// A queue the pool did not create: adopted, or handed over (checked by `adopt` first).
    pub fn adopted(name: String, send: OwnedFd, recv: OwnedFd) -> Queue {
        Queue { name, send, recv }
    }

    /// The two ends in the order the manifest promises: send, then receive.
    pub fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.send.as_fd(), self.recv.as_fd()]
    }
}

/// One record per mule position: the message its mule has taken and not finished, kept in a
/// memfd the pool owns so it outlives the mule and its master. A mule that starts in that
/// position puts a message left there back on its queue (at-least-once delivery).
pub fn create_records(mules: usize) -> nix::Result<Vec<OwnedFd>> {
    (1..=mules)
        .map(|k| {
            let fd = nix::sys::memfd::memfd_create(
                format!("zerg-mule-{k}").as_str(),
                nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
            )?;
            nix::unistd::ftruncate(&fd, zerg::mule_record::SIZE)?;
            Ok(fd)
        })
        .collect()
}

/// The queues' names: one per farm and one per mule position (for `uwsgi.mule_msg(msg, id)`).
pub fn names(config: &Config) -> Vec<String> {
    let farms = config.farms().unwrap_or_default();
    farms
        .iter()
        .map(|f| format!("farm:{}", f.name))
        .chain((1..=config.mule.0.len()).map(|k| format!("mule:{k}")))
        .collect()
}

/// Every queue of [`names`].
pub fn create_all(config: &Config) -> nix::Result<Vec<Queue>> {
    names(config)
        .into_iter()
        .map(|name| {
            let (send, recv) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )?;
            let _ = setsockopt(&send, sockopt::SndBuf, &QUEUE_BYTES);
            let _ = setsockopt(&recv, sockopt::RcvBuf, &QUEUE_BYTES);
            tracing::info!(queue = name, "queue ready");
            Ok(Queue { name, send, recv })
        })
        .collect()
}
