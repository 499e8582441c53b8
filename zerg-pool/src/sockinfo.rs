//! What the kernel says of the pool's own sockets, for `metrics` and `stats`: how many
//! connections wait in a TCP listener's accept queue, and how many bytes wait in a farm queue.
//!
//! Both are read-only queries on fds the pool owns and keeps open (the listeners, the receive
//! ends of the queues); neither takes anything off a queue nor blocks.
//!
//! Left out: the accept queue of a unix listener. Linux answers `SIOCINQ` on a listening unix
//! socket with EINVAL and has no `TCP_INFO` for it; only a `sock_diag` netlink query
//! (`UNIX_DIAG_RQLEN`) tells, which is more machinery than this figure is worth today.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `TCP_LISTEN` of the kernel's TCP states (include/net/tcp_states.h), which `tcpi_state` holds.
const TCP_LISTEN: u8 = 10;

/// A TCP listener's accept queue: connections the kernel completed and no worker has accepted
/// yet, and the most it holds (the `listen` backlog as the kernel capped it). `None` for a
/// socket that is no TCP socket.
pub fn accept_queue(fd: BorrowedFd<'_>) -> Option<(u32, u32)> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is open for this call (borrowed); `info` and `len` are valid for writes
    // and `len` says how many bytes `info` holds, so the kernel writes no further.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // On a socket in LISTEN state Linux reports the accept queue's length in `unacked` and
    // its limit in `sacked` (tcp_get_info, net/ipv4/tcp.c).
    (rc == 0 && info.tcpi_state == TCP_LISTEN).then_some((info.tcpi_unacked, info.tcpi_sacked))
}

/// Bytes waiting to be read on a socket (`SIOCINQ`). On a `SOCK_SEQPACKET` unix socket this
/// is the sum of every queued message's length, not the count of messages.
pub fn queued_bytes(fd: BorrowedFd<'_>) -> Option<u64> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: `fd` is open for this call (borrowed); SIOCINQ writes one c_int to `bytes`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut bytes) };
    (rc == 0).then(|| u64::try_from(bytes).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_tcp_listener_reports_its_accept_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (queued, limit) = accept_queue(listener.as_fd()).unwrap();
        assert_eq!(queued, 0);
        assert!(limit > 0);
        let _waiting: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        assert_eq!(accept_queue(listener.as_fd()).unwrap().0, 3);
        listener.accept().unwrap();
        assert_eq!(accept_queue(listener.as_fd()).unwrap().0, 2);
    }

    #[test]
    fn a_unix_socket_has_no_accept_queue_but_counts_its_bytes() {
        use nix::sys::socket::{send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        assert_eq!(accept_queue(b.as_fd()), None);
        assert_eq!(queued_bytes(b.as_fd()), Some(0));
        send(a.as_raw_fd(), b"hello", MsgFlags::empty()).unwrap();
        send(a.as_raw_fd(), b"world!", MsgFlags::empty()).unwrap();
        assert_eq!(queued_bytes(b.as_fd()), Some(11));
    }
}
