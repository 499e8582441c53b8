//! The pool's side of the control socket: one task per connection.
//!
//! A task checks the peer's credentials (same user as the pool, or root), reads its hello, then
//! relays frames to the supervisor as [`Event`]s and writes the supervisor's messages back. A
//! peer that misbehaves (bad frame, wrong version, unexpected message) loses its own connection
//! and nothing else.
//!
//! The credentials are the kernel's (`SO_PEERCRED`, taken at connect), not the socket file's
//! mode: a socket left world-writable by a `chmod`, or reached through a descriptor passed
//! along, still lets only root and the pool's own user hand out listeners or stop the pool.
//!
//! With `uid` set, the pool's own user is that user: a pool started as root becomes it before
//! it accepts its first connection (see `startup`), and one started otherwise must already be
//! it. So root, and the configured user (its zerglings, its `zergctl`), are let in; no one else.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::sys::socket::{getsockopt, sockopt};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use zerg::control::{
    self, Adoption, ControlError, FrameDecoder, Message, PoolStatus, ReloadOutcome, Role,
    UpgradeOutcome, PROTOCOL_VERSION,
};
use zerg::fdpass;

use crate::generation::ConnId;
use crate::listeners::Listener;
use crate::queues::Queue;

/// How long a refused peer's connection stays open for its hello to arrive.
const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// What connection tasks tell the supervisor.
#[derive(Debug)]
pub enum Event {
    /// A zergling said hello; the supervisor answers through `tx` (a `Welcome` gets the
    /// listener fds attached by the task).
    ZerglingHello {
        conn: ConnId,
        pid: u32,
        generation: Option<u64>,
        tx: mpsc::UnboundedSender<Message>,
    },
    /// A zergling that outlived its pool asks to be adopted; its fds were checked to be the
    /// pool's own sockets and queues. The supervisor answers `Adopted` or `Refused`.
    ZerglingAdopt(AdoptRequest),
    /// A later frame from a zergling.
    FromZergling { conn: ConnId, msg: Message },
    /// A connection closed (or was closed for misbehaving).
    Disconnected { conn: ConnId },
    /// zergctl asks for the status.
    Status { reply: oneshot::Sender<PoolStatus> },
    /// zergctl asks for a reload; the outcome comes once it is known.
    Reload {
        reply: oneshot::Sender<ReloadOutcome>,
    },
    /// zergctl asks the pool to stop.
    Stop { immediate: bool },
    /// zergctl asks for a chain reload of the serving generation.
    ChainReload {
        reply: oneshot::Sender<ReloadOutcome>,
    },
    /// A `stats` or `metrics` client asks for its document.
    Observe {
        what: crate::observe::serve::Served,
        reply: oneshot::Sender<String>,
    },
    /// zergctl asks the pool to replace itself with its binary started again. `flushed`
    /// closes once the answer is written, so that a pool that hands over exits only then.
    UpgradePool {
        reply: oneshot::Sender<UpgradeOutcome>,
        flushed: oneshot::Receiver<()>,
    },
}

/// A generation's master asking a pool to supervise it.
#[derive(Debug)]
pub struct AdoptRequest {
    pub conn: ConnId,
    pub pid: u32,
    pub generation: u64,
    pub adoption: Adoption,
    /// Where the supervisor's messages to the master go.
    pub tx: mpsc::UnboundedSender<Message>,
}

/// An async framed connection carrying fds.
pub(crate) struct AsyncConn {
    stream: UnixStream,
    decoder: FrameDecoder,
}

impl AsyncConn {
    pub(crate) fn new(stream: UnixStream) -> AsyncConn {
        AsyncConn {
            stream,
            decoder: FrameDecoder::default(),
        }
    }

    /// The peer's first message and the fds it carries, its protocol version checked first.
    pub(crate) async fn recv_hello(&mut self) -> Result<(Message, Vec<OwnedFd>), ControlError> {
        let hello = control::decode_hello(&self.recv_frame().await?)?;
        let fds = self.decoder.take_fds(control::fd_count(&hello))?;
        Ok((hello, fds))
    }

    /// The next message and the fds it carries.
    pub(crate) async fn recv(&mut self) -> Result<(Message, Vec<OwnedFd>), ControlError> {
        let msg: Message = serde_json::from_slice(&self.recv_frame().await?)?;
        let fds = self.decoder.take_fds(control::fd_count(&msg))?;
        Ok((msg, fds))
    }

    pub(crate) async fn send(&mut self, msg: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let frame = control::encode(msg);
        let mut sent = 0;
        while sent < frame.len() {
            self.stream.writable().await?;
            let attach = if sent == 0 { fds } else { &[] };
            match self.stream.try_io(Interest::WRITABLE, || {
                fdpass::send_with_fds(self.stream.as_fd(), &frame[sent..], attach)
            }) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next frame's JSON; `Closed` at end of stream.
    async fn recv_frame(&mut self) -> Result<Vec<u8>, ControlError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            self.stream.readable().await?;
            let mut buf = [0u8; 8192];
            let mut fds = Vec::new();
            let raw = self.stream.as_raw_fd();
            match self.stream.try_io(Interest::READABLE, || {
                // SAFETY: `raw` is the stream's own fd, alive for this call.
                let fd = unsafe { BorrowedFd::borrow_raw(raw) };
                fdpass::recv_with_fds(fd, &mut buf, &mut fds)
            }) {
                Ok(0) if fds.is_empty() => return Err(ControlError::Closed),
                Ok(n) => self.decoder.push(&buf[..n], fds)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A zergling's hello names the pid the pool will supervise and signal: it must be the
/// process at the other end of the socket (SO_PEERCRED), not one it names.
pub fn same_pid(claimed: u32, peer: i32) -> Result<(), String> {
    if i64::from(claimed) == i64::from(peer) {
        Ok(())
    } else {
        Err(format!(
            "the hello claims pid {claimed} but the peer's process is pid {peer}"
        ))
    }
}

/// Serves one control connection until it closes.
pub async fn serve(
    stream: UnixStream,
    conn: ConnId,
    events: mpsc::UnboundedSender<Event>,
    listeners: Arc<Vec<Listener>>,
    queues: Arc<(Vec<Queue>, Vec<OwnedFd>)>,
) {
    let peer = match getsockopt(&stream, sockopt::PeerCredentials) {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(conn, error = %e, "control connection refused: cannot read the peer's credentials");
            return;
        }
    };
    let mut c = AsyncConn::new(stream);
    let pool_uid = nix::unistd::geteuid().as_raw();
    if !may_control(peer.uid(), pool_uid) {
        tracing::warn!(
            conn,
            peer_pid = peer.pid(),
            peer_uid = peer.uid(),
            pool_uid,
            "control connection refused: the peer is neither root nor the pool's user"
        );
        // Said to the peer too, so zergctl prints why instead of a bare hang-up.
        let reason = format!(
            "uid {} may not use this control socket (only root and uid {pool_uid} may)",
            peer.uid()
        );
        let refused = Message::Refused {
            protocol: PROTOCOL_VERSION,
            reason,
        };
        let _ = c.send(&refused, &[]).await;
        // Closing before the peer's hello has arrived would fail that write with EPIPE, and
        // the peer would never read why.
        let _ = tokio::time::timeout(REFUSAL_LINGER, c.recv_frame()).await;
        return;
    }
    let (hello, fds) = match c.recv_hello().await {
        Ok(m) => m,
        Err(ControlError::Closed) => return,
        Err(e) => {
            tracing::error!(conn, error = %e, "control connection refused: bad hello");
            let _ = c
                .send(
                    &Message::Refused {
                        protocol: PROTOCOL_VERSION,
                        reason: e.to_string(),
                    },
                    &[],
                )
                .await;
            return;
        }
    };
    if let Message::Hello {
        role: Role::Zergling,
        pid,
        ..
    } = &hello
    {
        if let Err(reason) = same_pid(*pid, peer.pid()) {
            tracing::error!(conn, %reason, "zergling refused");
            let refused = Message::Refused {
                protocol: PROTOCOL_VERSION,
                reason,
            };
            let _ = c.send(&refused, &[]).await;
            return;
        }
    }
    match hello {
        Message::Hello {
            role: Role::Zergling,
            pid,
            generation,
            adopt: Some(adoption),
            ..
        } => {
            let (tx, rx) = mpsc::unbounded_channel();
            let ours = crate::adopt::all_fds(&listeners, &queues.0, &queues.1);
            let manifest: Vec<_> = listeners.iter().map(|l| l.info.clone()).collect();
            let checked = crate::adopt::check_same(&ours, &manifest, &fds).and_then(|()| {
                generation.ok_or_else(|| "an adoption hello names no generation".to_owned())
            });
            drop(fds);
            let generation = match checked {
                Ok(n) => n,
                Err(reason) => {
                    tracing::error!(conn, pid, generation, %reason, "adoption refused");
                    let refused = Message::Refused {
                        protocol: PROTOCOL_VERSION,
                        reason: format!("the pool cannot adopt this generation: {reason}"),
                    };
                    let _ = c.send(&refused, &[]).await;
                    return;
                }
            };
            let adopt = Event::ZerglingAdopt(AdoptRequest {
                conn,
                pid,
                generation,
                adoption,
                tx,
            });
            if events.send(adopt).is_ok() {
                relay(c, conn, pid, rx, events, listeners, queues).await;
            }
        }
        Message::Hello {
            role: Role::Zergling,
            pid,
            generation,
            ..
        } => serve_zergling(c, conn, pid, generation, events, listeners, queues).await,
        Message::Hello {
            role: Role::Ctl, ..
        } => serve_ctl(c, conn, events).await,
        other => {
            tracing::warn!(conn, message = ?other, "control connection closed: first frame was not a hello")
        }
    }
}

async fn serve_zergling(
    c: AsyncConn,
    conn: ConnId,
    pid: u32,
    generation: Option<u64>,
    events: mpsc::UnboundedSender<Event>,
    listeners: Arc<Vec<Listener>>,
    queues: Arc<(Vec<Queue>, Vec<OwnedFd>)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    if events
        .send(Event::ZerglingHello {
            conn,
            pid,
            generation,
            tx,
        })
        .is_err()
    {
        return;
    }
    relay(c, conn, pid, rx, events, listeners, queues).await;
}

/// Carries a zergling's frames to the supervisor and the supervisor's messages (`rx`) back,
/// until either side is done; then tells the supervisor the connection is gone.
pub(crate) async fn relay(
    mut c: AsyncConn,
    conn: ConnId,
    pid: u32,
    mut rx: mpsc::UnboundedReceiver<Message>,
    events: mpsc::UnboundedSender<Event>,
    listeners: Arc<Vec<Listener>>,
    queues: Arc<(Vec<Queue>, Vec<OwnedFd>)>,
) {
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(msg) = out else { break };
                let stderr = std::io::stderr();
                let fds: Vec<BorrowedFd> = match &msg {
                    Message::Welcome { .. } => crate::adopt::all_fds(&listeners, &queues.0, &queues.1),
                    // The pool's own stderr: the log it has just reopened.
                    Message::ReopenLog => vec![stderr.as_fd()],
                    _ => Vec::new(),
                };
                let refused = matches!(msg, Message::Refused { .. });
                if let Err(e) = c.send(&msg, &fds).await {
                    tracing::warn!(conn, pid, error = %e, "cannot write to zergling");
                    break;
                }
                if refused {
                    break;
                }
            }
            frame = c.recv_frame() => {
                match frame.and_then(|f| serde_json::from_slice::<Message>(&f).map_err(ControlError::from)) {
                    Ok(msg) => {
                        if events.send(Event::FromZergling { conn, msg }).is_err() {
                            break;
                        }
                    }
                    Err(ControlError::Closed) => break,
                    Err(e) => {
                        tracing::error!(conn, pid, error = %e, "closing zergling connection");
                        break;
                    }
                }
            }
        }
    }
    let _ = events.send(Event::Disconnected { conn });
}

async fn serve_ctl(mut c: AsyncConn, conn: ConnId, events: mpsc::UnboundedSender<Event>) {
    let hello = Message::HelloCtl {
        protocol: PROTOCOL_VERSION,
        pool_pid: std::process::id(),
    };
    if c.send(&hello, &[]).await.is_err() {
        return;
    }
    // Dropped once an upgrade's answer is written (see `Event::UpgradePool`).
    let mut written_guard: Option<oneshot::Sender<()>> = None;
    loop {
        let msg = match c
            .recv_frame()
            .await
            .and_then(|f| Ok(serde_json::from_slice::<Message>(&f)?))
        {
            Ok(m) => m,
            Err(ControlError::Closed) => return,
            Err(e) => {
                tracing::warn!(conn, error = %e, "closing zergctl connection");
                return;
            }
        };
        let answer = match msg {
            Message::StatusRequest => ask(&events, |reply| Event::Status { reply })
                .await
                .map(Message::Status),
            Message::Reload => ask(&events, |reply| Event::Reload { reply })
                .await
                .map(Message::ReloadResult),
            Message::ChainReload => ask(&events, |reply| Event::ChainReload { reply })
                .await
                .map(Message::ChainReloaded),
            Message::UpgradePool => {
                let (written, flushed) = oneshot::channel();
                written_guard = Some(written);
                ask(&events, |reply| Event::UpgradePool { reply, flushed })
                    .await
                    .map(Message::UpgradeResult)
            }
            Message::StopPool { immediate } => events
                .send(Event::Stop { immediate })
                .ok()
                .map(|_| Message::Stopping),
            other => Some(Message::Error {
                message: format!("zergctl cannot ask for {other:?}"),
            }),
        };
        // None: the supervisor is gone (the pool is exiting); just hang up.
        let Some(answer) = answer else { return };
        if c.send(&answer, &[]).await.is_err() {
            return;
        }
        drop(written_guard.take());
    }
}

/// Sends the supervisor an event carrying a reply channel and waits for the answer; `None` if
/// the supervisor is gone.
async fn ask<T>(
    events: &mpsc::UnboundedSender<Event>,
    event: impl FnOnce(oneshot::Sender<T>) -> Event,
) -> Option<T> {
    let (reply, rx) = oneshot::channel();
    events.send(event(reply)).ok()?;
    rx.await.ok()
}

/// Only root and the pool's own user (the configured `uid`, when set) may talk to it, whatever
/// the socket file's mode.
pub(crate) fn may_control(peer_uid: u32, pool_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == pool_uid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_pools_user_may_control() {
        assert!(may_control(0, 1000));
        assert!(may_control(1000, 1000));
        assert!(may_control(0, 0));
        assert!(!may_control(65534, 1000));
        assert!(!may_control(1000, 0));
    }
}
