//! Upgrading the pool binary in place (`zergctl upgrade-pool`, or SIGUSR2 as in nginx and
//! gunicorn), without a dropped connection.
//!
//! ```text
//! old pool                                   new pool (the binary at the old one's path)
//!   stops accepting on the control socket
//!   spawns the new binary, one end of a
//!   socketpair as ZERG_UPGRADE_FD      ---->  sends Takeover { protocol, pid }
//!   checks the protocol; sends Handover
//!   (generations, names) + every fd   ---->  builds itself from the fds (binds nothing)
//!                                     <----  sends TookOver; then adopts the masters
//!   answers zergctl, tells systemd the new
//!   MAINPID, exits (its zergling
//!   connections close)                       the masters knock again and are adopted
//! ```
//!
//! Until TookOver, the old pool is in charge: a new binary that cannot start, exits, speaks
//! another protocol version or misses [`TAKEOVER_TIMEOUT`] is killed, the old pool accepts on
//! the control socket again, and `zergctl upgrade-pool` exits non-zero. After TookOver, a new
//! pool that dies is a pool death like any other: the generations serve on, and a pool
//! started again adopts them.
//!
//! Only the channel's fd crosses the exec by inheritance: the socket is made close-on-exec and
//! that flag is cleared in the child alone, between fork and exec; everything else goes over
//! SCM_RIGHTS.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::mpsc;
use zerg::control::{Connection, ControlError, Handover, Message, PROTOCOL_VERSION};

use crate::control_server::AsyncConn;

/// The variable naming, in the new pool, its end of the channel to the old one.
pub const FD_ENV: &str = "ZERG_UPGRADE_FD";
/// How long the new pool has to say hello, and then to take over.
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a new pool that hung up on the handshake has to exit, before it is killed.
const EXIT_WITHIN: Duration = Duration::from_secs(2);

/// The binary and arguments this pool was started with, read at its start: the binary at that
/// path may be replaced (that is the point), after which `/proc/self/exe` names a deleted file.
/// The path is the one the pool was started by (argv[0], as nginx does), not `/proc/self/exe`:
/// a release switched by moving a symlink is found through the symlink.
#[derive(Debug, Clone)]
pub struct Exe {
    pub path: PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

impl Exe {
    pub fn current() -> anyhow::Result<Exe> {
        let mut args = std::env::args_os();
        let path = match args.next().map(PathBuf::from) {
            // Named with a directory: resolved against the directory the pool started in.
            Some(argv0) if argv0.components().count() > 1 => std::path::absolute(argv0)?,
            // Found on PATH: the kernel's word for which file that was.
            _ => std::env::current_exe().context("cannot locate the zerg-pool binary")?,
        };
        Ok(Exe {
            path,
            args: args.collect(),
        })
    }
}

/// What the old pool's handshake task reports: the new pool's pid once it took over.
pub type Outcome = Result<u32, String>;

/// Old side: starts `exe`, hands it `handover` and `fds` (the control socket first, then the
/// listeners, queues and records), and reports on `done` once the new pool took over or failed.
pub fn start(
    exe: &Exe,
    handover: Handover,
    fds: Vec<OwnedFd>,
    done: mpsc::UnboundedSender<Outcome>,
) -> anyhow::Result<()> {
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().context("cannot make the upgrade channel")?;
    let inherited: RawFd = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&exe.path);
    cmd.args(&exe.args)
        .env(FD_ENV, inherited.to_string())
        .kill_on_drop(false);
    // SAFETY: runs in the child between fork and exec, and only calls fcntl(2), which is
    // async-signal-safe; `inherited` is open in the child (fork copied it) and is the one fd
    // meant to cross the exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = BorrowedFd::borrow_raw(inherited);
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .map(drop)
            .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", exe.path.display()))?;
    drop(theirs);
    // Told to systemd as the next MAINPID: never a made-up 0.
    let pid = child
        .id()
        .context("the new pool exited as soon as it started")?;
    tracing::info!(pid, binary = %exe.path.display(), "upgrade: new pool started");
    ours.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(ours)?;
    tokio::spawn(async move {
        let exited = |status: std::io::Result<std::process::ExitStatus>| match status {
            Ok(status) => format!(
                "the new pool exited ({status}) before it took over; see its lines in the log"
            ),
            Err(e) => format!("cannot wait for the new pool: {e}"),
        };
        let said = tokio::time::timeout(TAKEOVER_TIMEOUT, handshake(stream, handover, fds));
        let outcome = tokio::select! {
            said = said => match said {
                Ok(Ok(())) => Ok(pid),
                Ok(Err(Failed::Said(e))) => Err(e),
                // A channel closed early is most often a new pool exiting: say how it did.
                Ok(Err(Failed::HungUp(e))) => {
                    match tokio::time::timeout(EXIT_WITHIN, child.wait()).await {
                        Ok(status) => Err(exited(status)),
                        Err(_) => Err(e),
                    }
                }
                Err(_) => Err(format!("the new pool did not take over within {}s", TAKEOVER_TIMEOUT.as_secs())),
            },
            status = child.wait() => Err(exited(status)),
        };
        if outcome.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        let _ = done.send(outcome);
    });
    Ok(())
}

/// Why a handshake failed.
enum Failed {
    /// The new pool said something this one refuses.
    Said(String),
    /// The channel broke: the new pool is likely exiting.
    HungUp(String),
}

async fn handshake(
    stream: tokio::net::UnixStream,
    handover: Handover,
    fds: Vec<OwnedFd>,
) -> Result<(), Failed> {
    let mut conn = AsyncConn::new(stream);
    match conn.recv_hello().await {
        Ok((Message::Takeover { .. }, _)) => {}
        Ok((other, _)) => {
            let said = format!("the new pool said {other:?} instead of hello");
            return Err(Failed::Said(said));
        }
        Err(ControlError::Version { ours, theirs }) => {
            return Err(Failed::Said(format!(
                "refused: the new pool speaks control protocol {theirs}, this one and its \
                 zerglings {ours}; it could not adopt them. Move to it with a restart of the site"
            )))
        }
        Err(e) => return Err(Failed::HungUp(format!("no hello from the new pool: {e}"))),
    }
    let borrowed: Vec<BorrowedFd> = fds.iter().map(|fd| std::os::fd::AsFd::as_fd(fd)).collect();
    conn.send(&Message::Handover(handover), &borrowed)
        .await
        .map_err(|e| Failed::HungUp(format!("cannot hand the fds over: {e}")))?;
    match conn.recv().await {
        Ok((Message::TookOver, _)) => Ok(()),
        Ok((other, _)) => {
            let said = format!("the new pool said {other:?} instead of taking over");
            Err(Failed::Said(said))
        }
        Err(e) => Err(Failed::HungUp(format!(
            "the new pool did not take over: {e}"
        ))),
    }
}

/// New side: the channel to the old pool, if this pool was started by an upgrade. Takes the
/// variable out of the environment, so that no zergling inherits it.
pub fn channel_from_env() -> anyhow::Result<Option<OwnedFd>> {
    let Some(raw) = std::env::var_os(FD_ENV) else {
        return Ok(None);
    };
    // Single-threaded here: main calls this before the runtime or any thread starts.
    std::env::remove_var(FD_ENV);
    let fd: RawFd = raw
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|&fd| fd > 2)
        .with_context(|| format!("{FD_ENV}={raw:?} is not an fd number"))?;
    // SAFETY: the old pool made `fd` for this process alone and let it cross the exec (see
    // `start`); nothing else in this process knows or owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("the upgrade channel is not an open fd")?;
    Ok(Some(fd))
}

/// New side: says hello on the channel and receives what the old pool hands over: the
/// handover and its fds (the control socket first).
pub fn receive(channel: OwnedFd) -> anyhow::Result<(Connection, Handover, Vec<OwnedFd>)> {
    let stream = std::os::unix::net::UnixStream::from(channel);
    stream.set_read_timeout(Some(TAKEOVER_TIMEOUT))?;
    let mut conn = Connection::new(stream);
    conn.send(
        &Message::Takeover {
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
        },
        &[],
    )?;
    match conn.recv()? {
        (Message::Handover(handover), fds) => Ok((conn, handover, fds)),
        (Message::Refused { reason, .. }, _) => bail!("the old pool refused the upgrade: {reason}"),
        (other, _) => bail!("the old pool sent {other:?} instead of the handover"),
    }
}
