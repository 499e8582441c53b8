//! Sending and receiving bytes with file descriptors attached (SCM_RIGHTS) over a unix stream
//! socket.
//!
//! Invariants this module keeps:
//! - every received fd is created close-on-exec (`MSG_CMSG_CLOEXEC`), atomically, so no fd
//!   reaches a child the pool or a zergling spawns unless it is passed on purpose;
//! - a receive whose control buffer was too small (`MSG_CTRUNC`, the kernel then drops fds) is
//!   an error, never a silent loss;
//! - fds are handed out as `OwnedFd`, so each has exactly one owner that closes it.
//!
//! The `sendfd` crate covers the send side but its receive side cannot ask for
//! `MSG_CMSG_CLOEXEC` or report truncation, hence nix here.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The most fds one message may carry: the kernel's own limit (`SCM_MAX_FD`); the receive
/// buffer is sized for this many. Config::load refuses a config whose handover needs more.
pub const MAX_FDS: usize = 253;

/// Sends `data` with `fds` attached to its first byte. Returns how many bytes were written
/// (the fds go with the first write only; the caller writes the rest without fds).
pub fn send_with_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let iov = [IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}

/// Receives bytes into `buf` and any fds that came with them. `Ok((0, _))` is end of stream.
pub fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let bytes = msg.bytes;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            for fd in received {
                // SAFETY: the kernel just installed `fd` in our table for this message; nothing
                // else knows it, so taking ownership here is the only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer sent more than {MAX_FDS} fds in one message; the kernel dropped some"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn fds_cross_and_arrive_cloexec() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut p1, p2) = UnixStream::pair().unwrap();
        send_with_fds(a.as_fd(), b"hi", &[p2.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        let n = recv_with_fds(b.as_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(fds.len(), 1);
        let flags = nix::fcntl::fcntl(&fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(flags & libc::FD_CLOEXEC != 0, "received fd must be CLOEXEC");
        // The received fd is the same socket: writing through it reaches p1.
        let mut received = UnixStream::from(fds.pop().unwrap());
        received.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        p1.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
    }
}
