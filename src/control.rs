//! The control protocol spoken on the pool's unix socket by zerglings and `zergctl`.
//!
//! Wire format: each frame is a 4-byte big-endian length, then that many bytes of JSON (one
//! [`Message`]). File descriptors travel as SCM_RIGHTS attached to the frame that announces
//! them (`Welcome` carries one fd per listener, in manifest order).
//!
//! The first frame each side sends is a hello that carries `protocol`; a peer with another
//! version is refused with a message saying both versions, before anything else is decoded. A
//! frame that does not parse closes that connection and nothing else.
//!
//! Versions: a pool, its zerglings and zergctl speak exactly one version. Version 2 added
//! adoption (a zergling's hello may hand its fds back to a restarted pool) and the pool
//! upgrade. An upgrade whose new binary speaks another version is refused up front (the new
//! pool could not adopt the running zerglings), and the old pool stays in charge: moving to
//! another protocol takes a restart of the site.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ListenAddr, Protocol};
use crate::fdpass;

/// Bumped whenever a message changes shape.
pub const PROTOCOL_VERSION: u32 = 2;

/// Frames larger than this are a protocol error.
pub const MAX_FRAME: usize = 1 << 20;

/// How long a pool started after another's death waits for that pool's generations to knock
/// and hand their fds back (the pool's `adopt`); their masters size their patience by it.
pub const ADOPT_WINDOW: Duration = Duration::from_secs(10);

/// Who is on the other end of a control connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A generation's master, asking for the listeners.
    Zergling,
    /// The operator's client.
    Ctl,
}

/// One listening socket in the manifest; its fd follows in the same position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// Stable name, e.g. `http:0`, `uwsgi:0`.
    pub name: String,
    /// What the pool bound.
    pub addr: ListenAddr,
    /// What its connections speak; HTTP if a peer from before uwsgi listeners leaves it out.
    #[serde(default)]
    pub protocol: Protocol,
}

/// The processes of one generation, as its master reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub kind: ProcessKind,
    /// Position among processes of its kind, from 1 (uWSGI's `worker_id()`).
    pub id: u32,
    pub pid: u32,
    /// For a mule: the farms it belongs to (filled in by the pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub farms: Vec<String>,
    /// For a mule: messages taken in its position over the pool's life (filled in by the pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// For a web worker: requests its slot completed in this generation (filled in by the pool
    /// from the master's last [`Figures`], so up to [`FIGURES_INTERVAL`] old).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// For a web worker: requests it is answering now (as `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u32>,
    /// For a web worker: how long its oldest request in flight has run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_ms: Option<u64>,
    /// Resident memory of the process, in bytes (as `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
}

/// How often a master reports its [`Figures`]: the staleness of every figure the pool shows.
pub const FIGURES_INTERVAL: Duration = Duration::from_secs(1);

/// One web-worker slot as its master read it from the generation's scoreboard. Counters count
/// every process that held the slot in this generation; a reader that sees one go backwards
/// (a slot reset) counts from zero again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerFigures {
    /// The slot: uWSGI's `worker_id()`.
    pub id: u32,
    /// The process holding the slot now, if one does.
    pub pid: Option<u32>,
    /// Requests completed.
    pub requests: u64,
    /// Requests being answered now.
    pub in_flight: u32,
    /// Connections open now.
    pub connections: u32,
    /// Completed requests by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub by_class: [u64; 5],
    /// Completed requests per duration bucket (bounds in [`Figures::duration_bounds`], then
    /// one past the last bound), not cumulative.
    pub duration_buckets: Vec<u64>,
    /// Sum of the completed requests' durations, in microseconds.
    pub duration_sum_us: u64,
    /// Response bytes sent.
    pub sent_bytes: u64,
    /// How long the oldest request in flight has run, in milliseconds.
    pub busy_ms: Option<u64>,
    /// Resident memory of the process, in bytes.
    pub rss_bytes: u64,
    /// Times the slot's process was replaced in this generation (died, or was recycled).
    pub respawns: u32,
    /// Processes of the slot killed by `harakiri` in this generation.
    #[serde(default)]
    pub harakiris: u32,
    /// When the slot's process was forked, in seconds since the Unix epoch.
    pub spawned_unix: u64,
}

/// One mule as its master sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MuleFigures {
    /// The mule's position.
    pub id: u32,
    pub pid: Option<u32>,
    pub rss_bytes: u64,
    pub respawns: u32,
    /// Processes of the position killed by `mule-harakiri` in this generation.
    #[serde(default)]
    pub harakiris: u32,
}

/// What a master reports every [`FIGURES_INTERVAL`], and once more as it exits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Upper bounds, in seconds, of the request-duration buckets.
    pub duration_bounds: Vec<f64>,
    pub workers: Vec<WorkerFigures>,
    pub mules: Vec<MuleFigures>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessKind {
    #[default]
    Worker,
    Mule,
}

impl std::fmt::Display for ProcessKind {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            ProcessKind::Worker => "worker",
            ProcessKind::Mule => "mule",
        })
    }
}

/// A generation's phase as its master reports it when it asks to be adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdoptState {
    Serving,
    Draining,
}

/// What a zergling that outlived its pool hands back to a pool started again: the sockets
/// and queues it holds (their fds follow the hello, in the order of [`Message::Welcome`]) and
/// what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    pub state: AdoptState,
    pub listeners: Vec<ListenerInfo>,
    pub queues: Vec<String>,
    pub mule_records: usize,
    pub mules_held: Vec<u32>,
    pub processes: Vec<ProcessInfo>,
}

impl Adoption {
    /// How many fds follow the hello: one per listener, two per queue, one per record.
    pub fn fd_count(&self) -> usize {
        held_fds(&self.listeners, &self.queues, self.mule_records)
    }
}

/// One per listener, two per queue, one per mule record, in a sum that saturates: the counts
/// are the peer's word, and a sum past `usize` says "more than ever came".
fn held_fds(listeners: &[ListenerInfo], queues: &[String], records: usize) -> usize {
    listeners
        .len()
        .saturating_add(queues.len().saturating_mul(2))
        .saturating_add(records)
}

/// A live generation as an old pool hands it to the new one in an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedGeneration {
    pub generation: u64,
    pub master_pid: u32,
}

/// Everything an old pool hands its successor besides the fds: the control socket, then the
/// listeners, queues and mule records in the order of [`Message::Welcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub last_generation: u64,
    pub generations: Vec<HandedGeneration>,
    pub listeners: Vec<ListenerInfo>,
    pub queues: Vec<String>,
    pub mule_records: usize,
    /// The `stats` and `metrics` endpoints' addresses; their fds come last, in this order.
    #[serde(default)]
    pub endpoints: Vec<ListenAddr>,
}

/// How `zergctl upgrade-pool` ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOutcome {
    /// True when the new pool is in charge and the old one exits.
    pub ok: bool,
    pub new_pid: Option<u32>,
    pub message: String,
}

/// One generation as `zergctl status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationStatus {
    pub generation: u64,
    pub state: String,
    pub master_pid: Option<u32>,
    /// Seconds since the generation was started or attached.
    pub age_secs: u64,
    pub processes: Vec<ProcessInfo>,
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// True when the new generation serves and the old ones are gone.
    pub ok: bool,
    /// The generation that was started (0 if none could be).
    pub generation: u64,
    /// What happened, for the operator: the rollback reason, or the steps taken.
    pub message: String,
    /// Milliseconds from the request to this outcome.
    pub millis: u64,
}

/// What the pool answers to `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub pool_pid: u32,
    pub listeners: Vec<ListenerInfo>,
    pub generations: Vec<GenerationStatus>,
    /// The last reload that finished, if any.
    pub last_reload: Option<ReloadOutcome>,
}

/// Every frame on the control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Message {
    /// First frame of a client (zergling or zergctl).
    Hello {
        protocol: u32,
        role: Role,
        pid: u32,
        /// The generation number the pool gave a zergling it spawned (`ZERG_GENERATION`);
        /// `None` for one started by someone else.
        generation: Option<u64>,
        /// Set by a zergling that outlived its pool and asks a new one to supervise it; its
        /// fds follow (see [`Adoption`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adopt: Option<Adoption>,
    },
    /// The pool's answer to a zergling's hello. Fds follow: one per listener, in order, then
    /// two per queue (the end messages are sent on, then the end they are taken from), then one
    /// "message in hand" record per mule position.
    Welcome {
        protocol: u32,
        generation: u64,
        listeners: Vec<ListenerInfo>,
        #[serde(default)]
        queues: Vec<String>,
        #[serde(default)]
        mule_records: usize,
    },
    /// The pool's answer to a ctl hello.
    HelloCtl { protocol: u32, pool_pid: u32 },
    /// The pool's answer to a zergling's hello with `adopt`: it supervises this generation.
    Adopted { generation: u64 },
    /// The pool will not talk to this peer; `reason` says why.
    Refused { protocol: u32, reason: String },
    /// zergling -> pool: the current set of processes (sent whenever it changes), and the mule
    /// positions it holds: granted, and not yet given back by a mule exiting during a stop.
    Processes {
        processes: Vec<ProcessInfo>,
        #[serde(default)]
        mules_held: Vec<u32>,
    },
    /// pool -> zergling: these mule positions are yours; start their mules.
    MulesGranted { ids: Vec<u32> },
    /// zergling -> pool: every worker accepts; the generation can serve.
    Ready,
    /// zergling -> pool: the generation's per-worker figures, every [`FIGURES_INTERVAL`]
    /// (the pool serves them as `stats`, `metrics` and in `status`).
    Figures(Figures),
    /// zergling -> pool: the app could not be started; the zergling exits after this.
    Failed { reason: String },
    /// pool -> zergling: stop accepting, finish in-flight work within `mercy_secs`, exit.
    Stop { mercy_secs: u64 },
    /// ctl -> pool.
    StatusRequest,
    /// pool -> ctl.
    Status(PoolStatus),
    /// ctl -> pool: start a new generation and retire the old ones; answered with
    /// `ReloadResult` once the old generations are gone, or the new one was rolled back.
    Reload,
    /// pool -> ctl.
    ReloadResult(ReloadOutcome),
    /// ctl -> pool: stop everything (`immediate`: kill rather than drain).
    StopPool { immediate: bool },
    /// pool -> ctl: the stop has begun.
    Stopping,
    /// ctl -> pool, then pool -> zergling: replace the serving generation's workers one at a
    /// time, each new one accepting before the next old one stops.
    ChainReload,
    /// zergling -> pool, then pool -> ctl: how the chain reload ended.
    ChainReloaded(ReloadOutcome),
    /// pool -> zergling: `logto` was reopened (SIGUSR1 to the pool, or a reload with
    /// `log-reopen`); its fd follows. Every process of the generation points its stdout and
    /// stderr at it.
    ReopenLog,
    /// ctl -> pool: start the pool binary again and hand it everything; answered with
    /// `UpgradeResult` once the new pool is in charge, or failed.
    UpgradePool,
    /// pool -> ctl.
    UpgradeResult(UpgradeOutcome),
    /// new pool -> old pool, first frame on the upgrade channel.
    Takeover { protocol: u32, pid: u32 },
    /// old pool -> new pool; fds follow (see [`Handover`]).
    Handover(Handover),
    /// new pool -> old pool: the new pool accepts on the control socket; the old one exits.
    TookOver,
    /// Either way: the previous frame could not be acted on.
    Error { message: String },
}

/// What went wrong on a control connection.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket I/O: {0}")]
    Io(#[from] io::Error),
    #[error("peer closed the control connection")]
    Closed,
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("bad control message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    Version { ours: u32, theirs: u32 },
    #[error("the pool refused: {0}")]
    Refused(String),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    #[error("expected {expected} fds with this message, got {got}")]
    MissingFds { expected: usize, got: usize },
    #[error("{0} fds held for no message, more than one message may carry")]
    TooManyFds(usize),
}

/// Encodes a message as a frame (length prefix + JSON).
pub fn encode(msg: &Message) -> Vec<u8> {
    let json = serde_json::to_vec(msg).expect("control messages always serialize");
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(&json);
    frame
}

/// Reassembles frames and the fds that came with them from a byte stream.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl FrameDecoder {
    /// Buffers what a read brought. A peer may attach fds to any bytes, and they are held until
    /// a message that carries them is decoded; more than one message can carry is refused, so
    /// that a peer cannot fill the reader's fd table with fds no message claims.
    pub fn push(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<(), ControlError> {
        if self.fds.len() + fds.len() > fdpass::MAX_FDS {
            return Err(ControlError::TooManyFds(self.fds.len() + fds.len()));
        }
        self.buf.extend_from_slice(bytes);
        self.fds.extend(fds);
        Ok(())
    }

    /// The next complete frame's JSON, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, ControlError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(ControlError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }

    /// Takes `n` fds received so far, in order.
    pub fn take_fds(&mut self, n: usize) -> Result<Vec<OwnedFd>, ControlError> {
        if self.fds.len() < n {
            return Err(ControlError::MissingFds {
                expected: n,
                got: self.fds.len(),
            });
        }
        Ok(self.fds.drain(..n).collect())
    }
}

/// Decodes a first frame: the protocol version is checked before the rest is trusted.
pub fn decode_hello(frame: &[u8]) -> Result<Message, ControlError> {
    #[derive(Deserialize)]
    struct Versioned {
        protocol: u32,
    }
    let v: Versioned = serde_json::from_slice(frame)?;
    if v.protocol != PROTOCOL_VERSION {
        return Err(ControlError::Version {
            ours: PROTOCOL_VERSION,
            theirs: v.protocol,
        });
    }
    Ok(serde_json::from_slice(frame)?)
}

/// How many fds travel with a message. The counts are the peer's word: a sum past `usize`
/// says "more than ever came", which taking them then reports.
pub fn fd_count(msg: &Message) -> usize {
    match msg {
        Message::Welcome {
            listeners,
            queues,
            mule_records,
            ..
        } => held_fds(listeners, queues, *mule_records),
        Message::Hello { adopt: Some(a), .. } => a.fd_count(),
        // The control socket first.
        Message::Handover(h) => held_fds(&h.listeners, &h.queues, h.mule_records)
            .saturating_add(1)
            .saturating_add(h.endpoints.len()),
        Message::ReopenLog => 1,
        _ => 0,
    }
}

/// The one door from a pid number to a [`nix::unistd::Pid`] that may be handed to `kill(2)`.
///
/// Pids cross the protocol as `u32` and come back from `fork`/`spawn` as `i32` or `Option<u32>`.
/// `kill` reads 0 as "the caller's process group", -1 as "every process it may signal" and
/// any other negative value as a process group, and a `u32` past `i32::MAX` wraps to one of
/// those; so only a positive pid names a single process. Anything else is logged (with `what`,
/// the process it was meant to be) and refused with `None`.
pub fn checked_pid(raw: impl Into<i64>, what: &str) -> Option<nix::unistd::Pid> {
    let raw = raw.into();
    match i32::try_from(raw) {
        Ok(pid) if pid > 0 => Some(nix::unistd::Pid::from_raw(pid)),
        _ => {
            tracing::error!(
                pid = raw,
                process = what,
                "not the pid of a single process; it will not be signalled"
            );
            None
        }
    }
}

/// True while `pid` runs; a zombie does not (an adopted master's dead parent pool cannot reap
/// it, and whoever inherits it may not have yet).
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// A peer gone is [`ControlError::Closed`], however the kernel says it: a unix socket whose
/// peer closed with frames unread (a master's periodic report, say) reads as reset, not as
/// end of stream, and writing to one fails with a broken pipe.
fn closed(e: io::Error) -> ControlError {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => ControlError::Closed,
        _ => ControlError::Io(e),
    }
}

/// A blocking control connection, for zerglings and zergctl (single-threaded callers).
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    decoder: FrameDecoder,
}

impl Connection {
    pub fn connect(path: &Path) -> io::Result<Connection> {
        let stream = UnixStream::connect(path)?;
        Ok(Connection::new(stream))
    }

    /// Connects as an operator's client (zergctl) and completes the hello. With `timeout`, every
    /// later read and write on the connection fails with `TimedOut`/`WouldBlock` past it.
    pub fn connect_ctl(path: &Path, timeout: Option<Duration>) -> Result<Connection, ControlError> {
        let mut conn = Connection::connect(path)?;
        conn.stream.set_read_timeout(timeout)?;
        conn.stream.set_write_timeout(timeout)?;
        conn.send(
            &Message::Hello {
                protocol: PROTOCOL_VERSION,
                role: Role::Ctl,
                pid: std::process::id(),
                generation: None,
                adopt: None,
            },
            &[],
        )?;
        match conn.recv_hello()?.0 {
            Message::HelloCtl { .. } => Ok(conn),
            Message::Refused { reason, .. } => Err(ControlError::Refused(reason)),
            other => Err(ControlError::Unexpected(format!("{other:?}"))),
        }
    }

    pub fn new(stream: UnixStream) -> Connection {
        Connection {
            stream,
            decoder: FrameDecoder::default(),
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one message with `fds` attached.
    pub fn send(&mut self, msg: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), ControlError> {
        let frame = encode(msg);
        let mut sent = fdpass::send_with_fds(self.stream.as_fd(), &frame, fds).map_err(closed)?;
        while sent < frame.len() {
            sent +=
                fdpass::send_with_fds(self.stream.as_fd(), &frame[sent..], &[]).map_err(closed)?;
        }
        Ok(())
    }

    /// Reads the next frame, blocking; returns its JSON.
    fn recv_frame(&mut self) -> Result<Vec<u8>, ControlError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            self.fill()?;
        }
    }

    /// Reads once from the socket into the decoder. Errors with `Closed` at end of stream.
    pub fn fill(&mut self) -> Result<(), ControlError> {
        let mut buf = [0u8; 8192];
        let mut fds = Vec::new();
        let n = loop {
            match fdpass::recv_with_fds(self.stream.as_fd(), &mut buf, &mut fds) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other.map_err(closed)?,
            }
        };
        if n == 0 && fds.is_empty() {
            return Err(ControlError::Closed);
        }
        self.decoder.push(&buf[..n], fds)
    }

    /// The next message, if a whole one is already buffered (never blocks).
    pub fn try_next(&mut self) -> Result<Option<(Message, Vec<OwnedFd>)>, ControlError> {
        match self.decoder.next_frame()? {
            Some(frame) => self.finish(&frame, false).map(Some),
            None => Ok(None),
        }
    }

    /// Receives the next message and its fds, blocking.
    pub fn recv(&mut self) -> Result<(Message, Vec<OwnedFd>), ControlError> {
        let frame = self.recv_frame()?;
        self.finish(&frame, false)
    }

    /// Receives the peer's first message, checking the protocol version.
    pub fn recv_hello(&mut self) -> Result<(Message, Vec<OwnedFd>), ControlError> {
        let frame = self.recv_frame()?;
        self.finish(&frame, true)
    }

    fn finish(
        &mut self,
        frame: &[u8],
        hello: bool,
    ) -> Result<(Message, Vec<OwnedFd>), ControlError> {
        let msg = if hello {
            decode_hello(frame)?
        } else {
            serde_json::from_slice(frame)?
        };
        let fds = self.decoder.take_fds(fd_count(&msg))?;
        Ok((msg, fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_without_a_protocol_is_http() {
        let old: ListenerInfo = serde_json::from_str(
            r#"{"name":"http:0","addr":{"kind":"tcp","address":"127.0.0.1:80"}}"#,
        )
        .unwrap();
        assert_eq!(old.protocol, Protocol::Http);
        let uwsgi = ListenerInfo {
            name: "uwsgi:0".into(),
            addr: ListenAddr::Unix("/run/app.sock".into()),
            protocol: Protocol::Uwsgi,
        };
        let json = serde_json::to_string(&uwsgi).unwrap();
        assert!(json.contains(r#""protocol":"uwsgi""#), "{json}");
        assert_eq!(serde_json::from_str::<ListenerInfo>(&json).unwrap(), uwsgi);
    }

    #[test]
    fn frames_split_anywhere_reassemble() {
        let a = encode(&Message::Ready);
        let b = encode(&Message::Stop { mercy_secs: 5 });
        let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for split in 0..all.len() {
            let mut d = FrameDecoder::default();
            d.push(&all[..split], vec![]).unwrap();
            let mut got = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            d.push(&all[split..], vec![]).unwrap();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            let msgs: Vec<Message> = got
                .iter()
                .map(|f| serde_json::from_slice(f).unwrap())
                .collect();
            assert_eq!(msgs, vec![Message::Ready, Message::Stop { mercy_secs: 5 }]);
        }
    }

    #[test]
    fn oversized_frame_is_rejected() {
        let mut d = FrameDecoder::default();
        d.push(&(MAX_FRAME as u32 + 1).to_be_bytes(), vec![])
            .unwrap();
        assert!(matches!(d.next_frame(), Err(ControlError::TooLarge(_))));
    }

    #[test]
    fn other_protocol_version_is_named() {
        let frame =
            br#"{"type":"hello","protocol":99,"role":"zergling","pid":1,"generation":null}"#;
        let err = decode_hello(frame).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("protocol version mismatch: we speak {PROTOCOL_VERSION}, the peer speaks 99")
        );
    }

    #[test]
    fn only_positive_pids_can_be_signalled() {
        assert_eq!(checked_pid(42u32, "worker").map(|p| p.as_raw()), Some(42));
        assert_eq!(
            checked_pid(i32::MAX, "worker").map(|p| p.as_raw()),
            Some(i32::MAX)
        );
        // 0 is the caller's process group, -1 every process, other negatives a group; a u32
        // past i32::MAX would wrap to one of them.
        for raw in [
            0i64,
            -1,
            -1234,
            i64::from(u32::MAX),
            i64::from(i32::MAX) + 1,
        ] {
            assert_eq!(checked_pid(raw, "worker"), None, "{raw}");
        }
        assert_eq!(checked_pid(0u32, "worker"), None);
        assert_eq!(checked_pid(u32::MAX, "worker"), None);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(
            decode_hello(b"not json"),
            Err(ControlError::Decode(_))
        ));
    }

    #[test]
    fn fds_no_message_claims_are_bounded() {
        let mut decoder = FrameDecoder::default();
        let fd = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let some: Vec<OwnedFd> = (0..fdpass::MAX_FDS).map(|_| fd()).collect();
        decoder.push(b"", some).unwrap();
        assert!(matches!(
            decoder.push(b"x", vec![fd()]),
            Err(ControlError::TooManyFds(n)) if n == fdpass::MAX_FDS + 1
        ));
    }

    #[test]
    fn an_adoption_hello_carries_its_fds_and_a_plain_one_none() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut tx, mut rx) = (Connection::new(a), Connection::new(b));
        let (held, _keep) = UnixStream::pair().unwrap();
        let adoption = Adoption {
            state: AdoptState::Serving,
            listeners: vec![ListenerInfo {
                name: "http:0".into(),
                addr: ListenAddr::Tcp("127.0.0.1:1".parse().unwrap()),
                protocol: Protocol::Http,
            }],
            queues: vec!["farm:jobs".into()],
            mule_records: 1,
            mules_held: vec![1],
            processes: vec![],
        };
        let hello = |adopt| Message::Hello {
            protocol: PROTOCOL_VERSION,
            role: Role::Zergling,
            pid: 7,
            generation: Some(3),
            adopt,
        };
        // One listener, two queue ends, one record.
        let fds = [held.as_fd(); 4];
        tx.send(&hello(Some(adoption.clone())), &fds).unwrap();
        tx.send(&hello(None), &[]).unwrap();
        let (msg, got) = rx.recv_hello().unwrap();
        assert_eq!((msg, got.len()), (hello(Some(adoption)), 4));
        let (msg, got) = rx.recv_hello().unwrap();
        assert_eq!((msg, got.len()), (hello(None), 0));
        // A peer from before adoption sends no `adopt` key at all.
        let old = format!(
            r#"{{"type":"hello","protocol":{PROTOCOL_VERSION},"role":"zergling","pid":1,"generation":null}}"#
        );
        assert!(matches!(
            decode_hello(old.as_bytes()).unwrap(),
            Message::Hello { adopt: None, .. }
        ));
    }

    #[test]
    fn a_handover_counts_the_control_socket_first() {
        let handover = Handover {
            last_generation: 9,
            generations: vec![HandedGeneration {
                generation: 9,
                master_pid: 42,
            }],
            listeners: vec![],
            queues: vec!["mule:1".into()],
            mule_records: 1,
            endpoints: vec![ListenAddr::Unix("stats.sock".into())],
        };
        // The control socket, a queue's two ends, a record, an endpoint.
        assert_eq!(fd_count(&Message::Handover(handover)), 1 + 2 + 1 + 1);
    }

    #[test]
    fn welcome_carries_listener_fds_over_a_real_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (l1, _keep) = UnixStream::pair().unwrap();
        let mut tx = Connection::new(a);
        let mut rx = Connection::new(b);
        let welcome = Message::Welcome {
            protocol: PROTOCOL_VERSION,
            generation: 3,
            listeners: vec![ListenerInfo {
                name: "http:0".into(),
                addr: ListenAddr::Tcp("127.0.0.1:1".parse().unwrap()),
                protocol: Protocol::Http,
            }],
            queues: vec![],
            mule_records: 0,
        };
        tx.send(&welcome, &[l1.as_fd()]).unwrap();
        tx.send(&Message::Ready, &[]).unwrap();
        let (msg, fds) = rx.recv_hello().unwrap();
        assert_eq!(msg, welcome);
        assert_eq!(fds.len(), 1);
        assert_eq!(rx.recv().unwrap().0, Message::Ready);
        drop(tx);
        assert!(matches!(rx.recv(), Err(ControlError::Closed)));
    }

    #[test]
    fn a_peer_that_closed_with_frames_unread_is_closed_not_failed() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut ours = Connection::new(a);
        let theirs = Connection::new(b);
        ours.send(&Message::Ready, &[]).unwrap();
        // The peer goes without reading it: the kernel resets the connection.
        drop(theirs);
        assert!(matches!(ours.recv(), Err(ControlError::Closed)));
        assert!(matches!(
            ours.send(&Message::Ready, &[]),
            Err(ControlError::Closed)
        ));
    }
}
