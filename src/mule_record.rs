//! The "message in hand" record of one mule position: a memfd the pool creates and owns, which
//! the position's current mule writes and the pool reads (for `zergctl status`).
//!
//! Layout: `[len: u32][queue: u32][taken: u64][message: len bytes]`, little-endian, then at
//! [`REDELIVERED_AT`] a `u64`: messages put back on their queue by the position's next mule.
//! `len == 0` means nothing is in hand. Only one process holds a position at a time (the pool grants
//! positions), so there is a single writer.

use std::os::fd::AsFd;

/// Largest message a record holds (uWSGI's default mule message size).
pub const MAX_MESSAGE: usize = 65536;
const HEADER: usize = 16;
/// Where the count of messages put back on their queue lives, past the largest message.
const REDELIVERED_AT: i64 = (HEADER + MAX_MESSAGE) as i64;
/// Bytes a record needs.
pub const SIZE: i64 = REDELIVERED_AT + 8;

/// Records a message just taken from queue `queue`, counting it: the body first, then the
/// header that makes it count, so a crash between the two never records half a message.
pub fn remember(fd: impl AsFd + Copy, queue: u32, msg: &[u8]) -> nix::Result<()> {
    nix::sys::uio::pwrite(fd, msg, HEADER as i64)?;
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&(msg.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&queue.to_le_bytes());
    // Saturating: a count is only ever shown, and a record of any bytes must not panic.
    header[8..].copy_from_slice(&taken(fd).saturating_add(1).to_le_bytes());
    nix::sys::uio::pwrite(fd, &header, 0)?;
    Ok(())
}

/// The message in hand is finished.
pub fn clear(fd: impl AsFd) -> nix::Result<()> {
    nix::sys::uio::pwrite(fd, &[0u8; 8], 0).map(drop)
}

/// The unfinished message, if any, with the index of the queue it came from.
pub fn in_hand(fd: impl AsFd + Copy) -> Option<(u32, Vec<u8>)> {
    let mut header = [0u8; HEADER];
    if nix::sys::uio::pread(fd, &mut header, 0).ok()? != HEADER {
        return None;
    }
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let queue = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len == 0 || len > MAX_MESSAGE {
        return None;
    }
    let mut msg = vec![0u8; len];
    (nix::sys::uio::pread(fd, &mut msg, HEADER as i64).ok()? == len).then_some((queue, msg))
}

/// How many messages mules in this position have taken, over the pool's life.
pub fn taken(fd: impl AsFd) -> u64 {
    read_count(fd, 8)
}

/// How many messages left unfinished in this position were put back on their queue, over the
/// pool's life (each is taken, and counted in [`taken`], once more).
pub fn redelivered(fd: impl AsFd) -> u64 {
    read_count(fd, REDELIVERED_AT)
}

/// Counts one message put back on its queue.
pub fn count_redelivery(fd: impl AsFd + Copy) -> nix::Result<()> {
    let n = redelivered(fd).saturating_add(1);
    nix::sys::uio::pwrite(fd, &n.to_le_bytes(), REDELIVERED_AT).map(drop)
}

fn read_count(fd: impl AsFd, at: i64) -> u64 {
    let mut count = [0u8; 8];
    match nix::sys::uio::pread(fd, &mut count, at) {
        Ok(8) => u64::from_le_bytes(count),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_count() {
        let fd =
            nix::sys::memfd::memfd_create("t", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, SIZE).unwrap();
        assert_eq!(in_hand(&fd), None);
        remember(&fd, 3, b"job 1").unwrap();
        assert_eq!(in_hand(&fd), Some((3, b"job 1".to_vec())));
        clear(&fd).unwrap();
        assert_eq!(in_hand(&fd), None);
        remember(&fd, 0, b"job 2").unwrap();
        assert_eq!(taken(&fd), 2);
        assert_eq!(redelivered(&fd), 0);
        count_redelivery(&fd).unwrap();
        count_redelivery(&fd).unwrap();
        assert_eq!(redelivered(&fd), 2);
        assert_eq!(
            in_hand(&fd),
            Some((0, b"job 2".to_vec())),
            "the message is untouched"
        );
    }
}
