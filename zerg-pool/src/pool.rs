//! The pool's supervisor: owns the listeners and the control socket, starts generations,
//! watches them, and stops everything on request.
//!
//! One task runs [`Pool::run`]; connection tasks and child watchers only send it [`Event`]s, so
//! all state changes happen in one place, in the order they were observed.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use zerg::config::{Config, ListenAddr};
use zerg::control::{Message, PoolStatus, PROTOCOL_VERSION};

use crate::control_server::{self, Event};
use crate::generation::{ConnId, Generation, State};
use crate::listeners::{self, Listener};

/// Longest pause between two attempts to start a generation that keeps dying.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A generation that served at least this long resets the backoff when it dies.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Extra time past the mercy before a forced kill, for the masters to report and exit.
const KILL_SLACK: Duration = Duration::from_secs(2);

enum Internal {
    ChildExited {
        generation: u64,
        pid: u32,
        status: ExitStatus,
    },
}

/// How the pool is stopping, once it is.
#[derive(Debug, Clone, Copy)]
enum Stopping {
    Graceful { deadline: Instant },
    Immediate,
}

pub struct Pool {
    config_path: PathBuf,
    config: Config,
    control_path: PathBuf,
    listeners: Arc<Vec<Listener>>,
    generations: BTreeMap<u64, Generation>,
    conns: BTreeMap<ConnId, u64>,
    last_generation: u64,
    ever_served: bool,
    stopping: Option<Stopping>,
    backoff: Duration,
    respawn_at: Option<Instant>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    exit_code: i32,
}

impl Pool {
    /// Binds every socket named in the config. Nothing is started yet.
    pub fn bind(config_path: &Path) -> anyhow::Result<(Pool, UnixListener)> {
        let config_path = std::fs::canonicalize(config_path)
            .with_context(|| format!("cannot find config {}", config_path.display()))?;
        let config = Config::load(&config_path)?;
        let listeners = listeners::bind_all(&config.listen_addrs(), config.listen)?;
        for l in &listeners {
            tracing::info!(name = %l.info.name, addr = %l.info.addr, "listening");
        }
        let control_path = std::path::absolute(&config.zerg_server)?;
        let control_fd = listeners::bind_one(&ListenAddr::Unix(control_path.clone()), 64, 0o600)?;
        std::fs::set_permissions(&control_path, std::fs::Permissions::from_mode(0o600))?;
        let std_listener = std::os::unix::net::UnixListener::from(control_fd);
        std_listener.set_nonblocking(true)?;
        let control = UnixListener::from_std(std_listener)?;
        tracing::info!(path = %control_path.display(), protocol = PROTOCOL_VERSION, "control socket ready");
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let pool = Pool {
            config_path,
            config,
            control_path,
            listeners: Arc::new(listeners),
            generations: BTreeMap::new(),
            conns: BTreeMap::new(),
            last_generation: 0,
            ever_served: false,
            stopping: None,
            backoff: Duration::ZERO,
            respawn_at: None,
            internal_tx,
            internal_rx,
            exit_code: 0,
        };
        Ok((pool, control))
    }

    /// Runs until the pool is stopped; returns the process exit code.
    pub async fn run(mut self, control: UnixListener) -> anyhow::Result<i32> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigquit = signal(SignalKind::quit())?;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut next_conn: ConnId = 0;

        self.spawn_generation()?;

        loop {
            if self.stopping.is_some() && self.generations.values().all(Generation::is_finished) {
                break;
            }
            let timer = self.next_timer();
            tokio::select! {
                _ = sigterm.recv() => self.begin_stop("SIGTERM"),
                _ = sigint.recv() => self.begin_stop("SIGINT"),
                _ = sigquit.recv() => self.stop_now("SIGQUIT"),
                accepted = control.accept() => match accepted {
                    Ok((stream, _)) => {
                        next_conn += 1;
                        tokio::spawn(control_server::serve(stream, next_conn, events_tx.clone(), self.listeners.clone()));
                    }
                    Err(e) => tracing::warn!(error = %e, "control accept failed"),
                },
                Some(ev) = events.recv() => self.handle_event(ev),
                Some(ev) = self.internal_rx.recv() => self.handle_internal(ev),
                _ = sleep_until(timer) => self.on_timer()?,
            }
        }
        tracing::info!(code = self.exit_code, "pool stopped");
        listeners::remove_socket_files(self.socket_files());
        Ok(self.exit_code)
    }

    fn socket_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.control_path.clone()];
        for l in self.listeners.iter() {
            if let ListenAddr::Unix(p) = &l.info.addr {
                files.push(p.clone());
            }
        }
        files
    }

    fn next_timer(&self) -> Option<Instant> {
        match self.stopping {
            Some(Stopping::Graceful { deadline }) => Some(deadline),
            Some(Stopping::Immediate) => None,
            None => self.respawn_at,
        }
    }

    fn on_timer(&mut self) -> anyhow::Result<()> {
        match self.stopping {
            Some(Stopping::Graceful { .. }) => {
                tracing::warn!("stop: mercy expired, killing what is left");
                self.stop_now("mercy expired");
            }
            Some(Stopping::Immediate) => {}
            None => {
                self.respawn_at = None;
                if !self.has_live_generation() {
                    self.spawn_generation()?;
                }
            }
        }
        Ok(())
    }

    fn has_live_generation(&self) -> bool {
        self.generations
            .values()
            .any(|g| matches!(g.state(), State::Starting | State::Serving))
    }

    /// Starts the next generation with the zergling command from the (re-read) config.
    fn spawn_generation(&mut self) -> anyhow::Result<()> {
        let number = self.last_generation + 1;
        let argv = match self.config.zergling_command() {
            Some(argv) => argv,
            None => vec![default_zergling()?.display().to_string()],
        };
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("ZERG_POOL", &self.control_path)
            .env("ZERG_CONFIG", &self.config_path)
            .env("ZERG_GENERATION", number.to_string())
            // Its own process group: a terminal's ^C reaches only the pool, which then stops
            // the generations in order.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start zergling `{}`", argv.join(" ")))?;
        let pid = child.id().unwrap_or(0);
        self.last_generation = number;
        tracing::info!(generation = number, pid, command = %argv.join(" "), "generation starting");
        self.generations
            .insert(number, Generation::new(number, Some(pid)));
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = tx.send(Internal::ChildExited {
                    generation: number,
                    pid,
                    status,
                });
            }
        });
        Ok(())
    }

    fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::ZerglingHello {
                conn,
                pid,
                generation,
                tx,
            } => self.on_hello(conn, pid, generation, tx),
            Event::FromZergling { conn, msg } => self.on_zergling_message(conn, msg),
            Event::Disconnected { conn } => self.on_disconnect(conn),
            Event::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn on_hello(
        &mut self,
        conn: ConnId,
        pid: u32,
        generation: Option<u64>,
        tx: mpsc::UnboundedSender<Message>,
    ) {
        let refuse = |reason: String| {
            tracing::warn!(conn, pid, %reason, "zergling refused");
            let _ = tx.send(Message::Refused {
                protocol: PROTOCOL_VERSION,
                reason,
            });
        };
        if self.stopping.is_some() {
            return refuse("the pool is stopping".into());
        }
        let number = match generation {
            Some(n) => match self.generations.get(&n) {
                Some(g) if g.conn.is_none() && g.state() == State::Starting => n,
                _ => return refuse(format!("generation {n} is not one the pool is starting")),
            },
            None => {
                // Started by someone else (a deploy script): it becomes the next generation.
                self.last_generation += 1;
                let n = self.last_generation;
                self.generations.insert(n, Generation::new(n, None));
                n
            }
        };
        let g = self
            .generations
            .get_mut(&number)
            .expect("generation just looked up or inserted");
        g.master_pid = Some(pid);
        g.conn = Some((conn, tx));
        self.conns.insert(conn, number);
        tracing::info!(
            generation = number,
            pid,
            listeners = self.listeners.len(),
            "zergling attached; sending listeners"
        );
        g.send(Message::Welcome {
            protocol: PROTOCOL_VERSION,
            generation: number,
            listeners: self.listeners.iter().map(|l| l.info.clone()).collect(),
        });
    }

    fn on_zergling_message(&mut self, conn: ConnId, msg: Message) {
        let Some(&number) = self.conns.get(&conn) else {
            return;
        };
        let Some(g) = self.generations.get_mut(&number) else {
            return;
        };
        match msg {
            Message::Processes { processes } => g.processes = processes,
            Message::Ready => {
                if g.state() == State::Starting {
                    g.transition(State::Serving, "every worker accepts");
                    self.ever_served = true;
                    self.respawn_at = None;
                }
            }
            Message::Failed { reason } => {
                tracing::error!(generation = number, %reason, "generation failed to start");
                g.transition(State::Gone, "failed to start");
            }
            other => {
                tracing::warn!(generation = number, message = ?other, "unexpected message from zergling; closing its connection");
                g.conn = None;
            }
        }
    }

    fn on_disconnect(&mut self, conn: ConnId) {
        let Some(number) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(g) = self.generations.get_mut(&number) {
            g.conn = None;
            if let Some(pid) = g.child_pid {
                if g.state() != State::Draining && self.stopping.is_none() {
                    // A master that hangs up is broken; make sure its process tree goes too.
                    tracing::warn!(
                        generation = number,
                        pid,
                        "zergling closed its control connection; terminating it"
                    );
                    signal_pid(pid, nix::sys::signal::Signal::SIGTERM);
                }
            }
        }
        self.reap_generation(number);
    }

    fn handle_internal(&mut self, ev: Internal) {
        match ev {
            Internal::ChildExited {
                generation,
                pid,
                status,
            } => {
                tracing::info!(generation, pid, %status, "zergling exited");
                if let Some(g) = self.generations.get_mut(&generation) {
                    g.child_pid = None;
                }
                self.reap_generation(generation);
            }
        }
    }

    /// Forgets a generation once nothing of it remains, and heals the pool if it was the one
    /// serving.
    fn reap_generation(&mut self, number: u64) {
        let Some(g) = self.generations.get_mut(&number) else {
            return;
        };
        if !g.is_finished() {
            return;
        }
        let was = g.state();
        let lived = g.started.elapsed();
        g.transition(State::Gone, "exited");
        self.generations.remove(&number);
        if self.stopping.is_some() || self.has_live_generation() {
            return;
        }
        if !self.ever_served && was != State::Serving {
            tracing::error!(
                generation = number,
                "the first generation never became ready; giving up (see the zergling's log above)"
            );
            self.exit_code = 1;
            self.stopping = Some(Stopping::Immediate);
            return;
        }
        self.backoff = if was == State::Serving && lived >= STABLE_AFTER {
            Duration::ZERO
        } else {
            (self.backoff * 2).clamp(Duration::from_millis(500), MAX_BACKOFF)
        };
        tracing::warn!(
            generation = number,
            retry_in_ms = self.backoff.as_millis() as u64,
            "no generation serving; starting a new one"
        );
        self.respawn_at = Some(Instant::now() + self.backoff);
    }

    /// SIGTERM/SIGINT: every generation drains, then the pool exits.
    fn begin_stop(&mut self, why: &str) {
        if self.stopping.is_some() {
            tracing::info!(signal = why, "already stopping");
            return;
        }
        let mercy = self.config.reload_mercy();
        tracing::info!(
            reason = why,
            mercy_secs = mercy.as_secs(),
            "graceful stop: draining every generation"
        );
        self.stopping = Some(Stopping::Graceful {
            deadline: Instant::now() + mercy + KILL_SLACK,
        });
        for g in self.generations.values_mut() {
            g.transition(State::Draining, "stopping");
            if !g.send(Message::Stop {
                mercy_secs: mercy.as_secs(),
            }) {
                if let Some(pid) = g.child_pid {
                    signal_pid(pid, nix::sys::signal::Signal::SIGTERM);
                }
            }
        }
    }

    /// SIGQUIT or an expired mercy: kill every process of every generation.
    fn stop_now(&mut self, why: &str) {
        tracing::warn!(reason = why, "immediate stop: killing every generation");
        self.stopping = Some(Stopping::Immediate);
        for g in self.generations.values() {
            for pid in g.pids() {
                signal_pid(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            pool_pid: std::process::id(),
            listeners: self.listeners.iter().map(|l| l.info.clone()).collect(),
            generations: self.generations.values().map(Generation::status).collect(),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn signal_pid(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// The `zergling` binary that sits beside this `zerg-pool`.
fn default_zergling() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the zerg-pool binary")?;
    let path = exe.with_file_name("zergling");
    if !path.exists() {
        bail!(
            "no zergling binary at {}; build it (`cargo build --workspace`) or set `zergling:` in the config",
            path.display()
        );
    }
    Ok(path)
}
