//! The pool's supervisor: owns the listeners and the control socket, starts generations,
//! reloads them, heals them, and stops everything on request.
//!
//! One task runs [`Pool::run`]; connection tasks and child watchers only send it [`Event`]s, so
//! all state changes happen in one place, in the order they were observed.
//!
//! A reload (SIGHUP, `zergctl reload`, or a zergling attaching on its own) re-reads the config
//! and starts a candidate generation. The candidate serves beside the old one only once its
//! master says READY (every worker accepts, health check passed against its own workers); then
//! every older serving generation drains. A candidate that fails, exits or misses
//! `ready-timeout` is killed and the old generation serves on: a rollback. One candidate starts
//! at a time; reloads asked meanwhile are queued and coalesced into the next one.
//!
//! Generations that outlived the pool before this one are adopted before anything else (see
//! `adopt`): they are supervised as if this pool had started them.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use zerg::config::{Config, ListenAddr};
use zerg::control::{
    checked_pid, HandedGeneration, Handover, Message, PoolStatus, ReloadOutcome, UpgradeOutcome,
    PROTOCOL_VERSION,
};

use crate::adopt::{self, Adopter, Collected, Expected, Held, Signals, StateFile, StopSignal};
use crate::control_server::{self, AdoptRequest, Event};
use crate::generation::{ConnId, Generation, State};
use crate::listeners::{self, Listener};
use crate::notify;
use crate::observe::{self, ledger::Ledger, metrics::Metrics, serve};
use crate::queues::{self, Queue};
use crate::upgrade::{self, Exe};

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

type Waiter = oneshot::Sender<ReloadOutcome>;

/// A reload whose candidate generation is starting.
struct Reload {
    candidate: u64,
    requested: Instant,
    waiters: Vec<Waiter>,
}

/// A reload whose candidate serves, waiting for the generations it replaced to exit.
struct Retiring {
    candidate: u64,
    old: Vec<u64>,
    requested: Instant,
    waiters: Vec<Waiter>,
}

/// A zergctl waiting for an upgrade's outcome, and the signal that its answer was written.
type UpgradeWaiter = (oneshot::Sender<UpgradeOutcome>, oneshot::Receiver<()>);

/// Where the pool is with replacing its own binary (see `upgrade`).
enum Upgrade {
    /// This pool is in charge, and accepts on the control socket.
    InCharge,
    /// A new pool binary is starting; the control socket waits for whoever ends in charge.
    Underway { waiters: Vec<UpgradeWaiter> },
    /// The new pool took over: this one exits once the waiters have their answer.
    HandedOver { flushed: Vec<oneshot::Receiver<()>> },
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
    /// The farm and mule queues, and the mules' "message in hand" records.
    queues: Arc<(Vec<Queue>, Vec<std::os::fd::OwnedFd>)>,
    generations: BTreeMap<u64, Generation>,
    conns: BTreeMap<ConnId, u64>,
    last_generation: u64,
    ever_served: bool,
    stopping: Option<Stopping>,
    backoff: Duration,
    respawn_at: Option<Instant>,
    reload: Option<Reload>,
    /// Reloads asked while a candidate was starting: served by one more reload after it.
    queued: Option<Vec<Waiter>>,
    retiring: Vec<Retiring>,
    last_reload: Option<ReloadOutcome>,
    /// Which generation holds each mule position (index k-1): at most one at any instant.
    mule_holders: Vec<Option<u64>>,
    /// zergctl clients waiting for a chain reload, by generation.
    chain_waiters: Vec<(u64, Waiter)>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    exit_code: i32,
    /// Where the live generations are written down for a pool started after this one's death.
    state_file: StateFile,
    /// Generations that came back during the adoption window, taken in as `run` starts.
    adopters: Vec<Adopter>,
    /// The binary an upgrade starts again.
    exe: Result<Exe, String>,
    upgrade: Upgrade,
    upgrade_tx: mpsc::UnboundedSender<upgrade::Outcome>,
    upgrade_rx: mpsc::UnboundedReceiver<upgrade::Outcome>,
    /// The `stats` and `metrics` endpoints, bound and not yet served.
    endpoints: Vec<serve::Endpoint>,
    /// Their unix socket files, removed at exit.
    endpoint_files: Vec<PathBuf>,
    /// A second fd of each endpoint's socket, for an upgrade to hand over.
    endpoint_socks: Vec<(ListenAddr, OwnedFd)>,
    /// Running totals of what the masters report.
    ledger: Ledger,
    metrics: Metrics,
    signals: Signals,
    /// A stop signal that came during the adoption window: acted on as `run` starts.
    stop_signal: Option<StopSignal>,
}

impl Pool {
    /// Opens the control socket, takes back the generations that outlived the pool before this
    /// one (see `adopt`), and binds every socket of the config that none of them brought back.
    /// Nothing is started yet.
    ///
    /// With `upgrade_channel` (this pool was started by `zergctl upgrade-pool`), the control
    /// socket and every other fd come from the old pool instead, and nothing is bound.
    pub async fn bind(
        config_path: &Path,
        exe: Result<Exe, String>,
        upgrade_channel: Option<std::os::fd::OwnedFd>,
    ) -> anyhow::Result<(Pool, UnixListener)> {
        // First of all: a signal from here on is the pool's to handle, not a kill.
        let mut signals = Signals::register()?;
        let config_path = std::fs::canonicalize(config_path)
            .with_context(|| format!("cannot find config {}", config_path.display()))?;
        let config = Config::load(&config_path)?;
        let control_path = std::path::absolute(&config.zerg_server)?;
        let run_as = zerg::privileges::RunAs::from_config(&config);
        let owner = (
            run_as.as_ref().and_then(|r| r.uid()),
            run_as.as_ref().and_then(|r| r.gid()),
        );
        let mut state_file = StateFile::open(&control_path, owner);
        let mut saved = state_file.read().unwrap_or_default();
        let mut expected = Expected {
            listeners: listeners::manifest(&config.listeners()),
            queues: queues::names(&config),
            mule_records: config.mule.0.len(),
        };
        let mut held = None;
        let mut handed_endpoints = Vec::new();
        let control_fd = match upgrade_channel {
            None => {
                let fd = listeners::bind_one(&ListenAddr::Unix(control_path.clone()), 64, 0o600)?;
                std::fs::set_permissions(&control_path, std::fs::Permissions::from_mode(0o600))?;
                if nix::unistd::geteuid().is_root() && run_as.is_some() {
                    // Now, not once root is dropped: the generations that outlived the pool
                    // before run as `uid`, and knock during the adoption window.
                    std::os::unix::fs::lchown(&control_path, owner.0, owner.1)?;
                }
                fd
            }
            Some(channel) => {
                let (mut old, handover, fds) = upgrade::receive(channel)?;
                tracing::info!(generations = ?handover.generations, "upgrade: the old pool handed over its sockets");
                expected = Expected {
                    listeners: handover.listeners.clone(),
                    queues: handover.queues.clone(),
                    mule_records: handover.mule_records,
                };
                if expected.listeners != listeners::manifest(&config.listeners()) {
                    tracing::warn!("the listeners in the config changed; an upgrade keeps the pool's sockets (restart the site to rebind)");
                }
                let mut fds = fds.into_iter();
                let control = fds
                    .next()
                    .context("the handover carries no control socket")?;
                let mut rest: Vec<OwnedFd> = fds.collect();
                let endpoint_fds =
                    rest.split_off(rest.len().saturating_sub(handover.endpoints.len()));
                handed_endpoints = handover
                    .endpoints
                    .iter()
                    .cloned()
                    .zip(endpoint_fds)
                    .collect();
                held = Some(Held::split(&expected, rest));
                saved = adopt::Saved {
                    pool_pid: 0,
                    last_generation: handover.last_generation,
                    generations: handover.generations,
                    // An upgrade is refused while stopping; a stop during one is passed on to
                    // the new pool as a SIGTERM (see `on_upgrade_outcome`).
                    stopping: false,
                };
                old.send(&Message::TookOver, &[])?;
                control
            }
        };
        let std_listener = std::os::unix::net::UnixListener::from(control_fd);
        std_listener.set_nonblocking(true)?;
        let control = UnixListener::from_std(std_listener)?;
        tracing::info!(path = %control_path.display(), protocol = PROTOCOL_VERSION, "control socket ready");
        // The user the zerglings run as: this pool may still be root here.
        let zergling_uid = run_as
            .and_then(|r| r.uid())
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        // Only if a generation of that stop still runs: a pool started by hand once all of
        // them finished starts the site afresh.
        let stop_inherited = saved.stopping
            && saved
                .generations
                .iter()
                .any(|g| zerg::control::running(g.master_pid));
        let Collected {
            adopters,
            held,
            kept,
            stop,
        } = adopt::collect(
            &control,
            saved.generations,
            zergling_uid,
            &expected,
            held,
            &mut signals,
        )
        .await;
        let stop = stop.or_else(|| {
            stop_inherited.then(|| {
                tracing::info!(
                    "the pool before this one was stopping the site: this one goes on stopping it"
                );
                StopSignal::Graceful("the pool before this one was stopping")
            })
        });
        let held = match held {
            Some(held) => {
                for l in &held.listeners {
                    tracing::info!(name = %l.info.name, addr = %l.info.addr, protocol = %l.info.protocol, "listening (a socket taken over, never closed)");
                }
                held
            }
            None if stop.is_some() => {
                // Nothing to serve: the pool stops at once, and binding could only fail
                // against generations that still hold the addresses.
                tracing::info!("stopping before anything came back; nothing is bound");
                Held {
                    listeners: Vec::new(),
                    queues: Vec::new(),
                    records: Vec::new(),
                }
            }
            None => Self::bind_fresh(&config, kept).with_context(|| {
                format!(
                    "if a pool died and its generations still serve, a pool finds them through \
                     {}: start it with that file in place and it adopts them",
                    state_file.path().display()
                )
            })?,
        };
        let last_generation = adopters
            .iter()
            .map(|a| a.generation)
            .fold(saved.last_generation, u64::max);
        let config_mules = config.mule.0.len();
        let endpoints = serve::bind(&config, handed_endpoints)?;
        let endpoint_socks = endpoints
            .iter()
            .map(|e| Ok((e.addr.clone(), e.dup()?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let endpoint_files = endpoints
            .iter()
            .filter_map(|e| match &e.addr {
                ListenAddr::Unix(p) => Some(p.clone()),
                ListenAddr::Tcp(_) => None,
            })
            .collect();
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let (upgrade_tx, upgrade_rx) = mpsc::unbounded_channel();
        let pool = Pool {
            config_path,
            config,
            control_path,
            listeners: Arc::new(held.listeners),
            queues: Arc::new((held.queues, held.records)),
            generations: BTreeMap::new(),
            conns: BTreeMap::new(),
            last_generation,
            ever_served: false,
            stopping: None,
            backoff: Duration::ZERO,
            respawn_at: None,
            reload: None,
            queued: None,
            retiring: Vec::new(),
            last_reload: None,
            chain_waiters: Vec::new(),
            mule_holders: vec![None; config_mules],
            internal_tx,
            internal_rx,
            exit_code: 0,
            state_file,
            adopters,
            exe,
            upgrade: Upgrade::InCharge,
            upgrade_tx,
            upgrade_rx,
            endpoints,
            endpoint_files,
            endpoint_socks,
            ledger: Ledger::default(),
            metrics: Metrics::new(),
            signals,
            stop_signal: stop,
        };
        Ok((pool, control))
    }

    /// Binds the config's listeners and creates its queues and records: a fresh start.
    ///
    /// `kept` are listeners of refused generations that match the config: those generations
    /// drain and still hold their addresses, so binding them again would fail; the same
    /// kernel sockets serve on instead.
    fn bind_fresh(config: &Config, kept: Vec<Listener>) -> anyhow::Result<Held> {
        for l in &kept {
            tracing::info!(name = %l.info.name, addr = %l.info.addr, "listening on a refused generation's socket, which the config names too");
        }
        let listeners = listeners::bind_all(
            &config.listeners(),
            config.listen,
            config.chmod_socket.0,
            kept,
        )?;
        for l in &listeners {
            tracing::info!(name = %l.info.name, addr = %l.info.addr, protocol = %l.info.protocol, "listening");
        }
        let queues = queues::create_all(config).context("cannot create the farm queues")?;
        let records = queues::create_records(config.mule.0.len())
            .context("cannot create the mule records")?;
        Ok(Held {
            listeners,
            queues,
            records,
        })
    }

    /// Supervises the generations that came back during the adoption window, all at once, so
    /// that mule positions are granted only once every holder is known.
    fn take_in_adopters(&mut self, events: &mpsc::UnboundedSender<Event>, next_conn: &mut ConnId) {
        for a in std::mem::take(&mut self.adopters) {
            *next_conn += 1;
            let conn = *next_conn;
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(control_server::relay(
                a.conn,
                conn,
                a.pid,
                rx,
                events.clone(),
                self.listeners.clone(),
                self.queues.clone(),
            ));
            self.adopt(AdoptRequest {
                conn,
                pid: a.pid,
                generation: a.generation,
                adoption: a.adoption,
                tx,
            });
        }
        self.assign_mules();
    }

    /// Takes a generation in, as its master reported it, and tells the master so.
    fn adopt(&mut self, r: AdoptRequest) {
        let AdoptRequest {
            conn,
            pid,
            generation: number,
            adoption,
            tx,
        } = r;
        let serving = adoption.state == zerg::control::AdoptState::Serving;
        let mut g = Generation::adopted(
            number,
            pid,
            serving,
            adoption.processes,
            adoption.mules_held.clone(),
        );
        let mut conflicts = Vec::new();
        for k in adoption.mules_held {
            match mule_index(k).and_then(|i| self.mule_holders.get_mut(i)) {
                Some(holder @ None) => *holder = Some(number),
                Some(Some(h)) if *h == number => {}
                Some(Some(h)) => {
                    tracing::error!(
                        generation = number,
                        mule = k,
                        holder = *h,
                        "adopted generation runs a mule position another generation holds"
                    );
                    conflicts.push(k);
                }
                None => tracing::warn!(
                    generation = number,
                    mule = k,
                    positions = self.mule_holders.len(),
                    "adopted generation claims a mule position the config does not have; ignored"
                ),
            }
        }
        g.conn = Some((conn, tx));
        g.send(Message::Adopted { generation: number });
        self.generations.insert(number, g);
        self.conns.insert(conn, number);
        self.last_generation = self.last_generation.max(number);
        if serving {
            self.ever_served = true;
        }
        if !conflicts.is_empty() {
            // No mule position may run twice: the generation that came back later goes.
            self.drain_adopted(
                number,
                &format!("its mules {conflicts:?} run in another generation"),
            );
        }
    }

    /// Drains an adopted generation that must not serve on; if nothing serves or starts then,
    /// a new generation is started at once.
    fn drain_adopted(&mut self, number: u64, why: &str) {
        let mercy_secs = self.config.reload_mercy().as_secs();
        let Some(g) = self.generations.get_mut(&number) else {
            return;
        };
        if g.state() == State::Serving {
            g.transition(State::Draining, why);
            g.send(Message::Stop { mercy_secs });
        }
        if self.stopping.is_none() && !self.has_live_generation() {
            self.respawn_at = Some(Instant::now());
        }
    }

    /// A generation that knocks after the adoption window: adopted too. If another generation
    /// serves meanwhile, the late one drains; if one only starts, the late one serves until
    /// that one is ready (a reload).
    fn on_late_adopt(&mut self, r: AdoptRequest) {
        let (number, pid) = (r.generation, r.pid);
        let refuse = |reason: String| {
            tracing::error!(generation = number, pid, %reason, "adoption refused");
            let _ = r.tx.send(Message::Refused {
                protocol: PROTOCOL_VERSION,
                reason,
            });
        };
        if self.stopping.is_some() {
            return refuse("the pool is stopping".into());
        }
        if self.generations.contains_key(&number) {
            return refuse(format!("generation {number} is supervised already"));
        }
        let serving_elsewhere = self
            .generations
            .values()
            .any(|g| g.state() == State::Serving);
        self.adopt(r);
        if serving_elsewhere {
            self.drain_adopted(number, "came back after another generation took over");
        } else if self
            .generations
            .get(&number)
            .is_some_and(|g| g.state() == State::Serving)
        {
            // It is what serves: a generation starting meanwhile (the pool found nothing to
            // adopt and started one) replaces it the normal way, as a reload's candidate whose
            // readiness drains it, and rolls back to it if it fails.
            self.respawn_at = None;
            let starting = self
                .generations
                .values()
                .find(|g| g.state() == State::Starting)
                .map(|g| g.number);
            if let (Some(candidate), None) = (starting, &self.reload) {
                tracing::info!(
                    generation = candidate,
                    serving = number,
                    "the starting generation becomes a reload's candidate replacing the one that came back"
                );
                self.reload = Some(Reload {
                    candidate,
                    requested: Instant::now(),
                    waiters: Vec::new(),
                });
            }
        }
        self.assign_mules();
    }

    /// Writes down the serving and draining generations' masters, for a pool started after
    /// this one's death.
    fn save_state(&mut self) {
        self.state_file.write(adopt::Saved {
            pool_pid: std::process::id(),
            last_generation: self.last_generation,
            generations: self.live_masters(),
            stopping: self.stopping.is_some(),
        });
    }

    /// The serving and draining generations' masters: the ones that outlive this pool.
    fn live_masters(&self) -> Vec<HandedGeneration> {
        self.generations
            .values()
            .filter(|g| matches!(g.state(), State::Serving | State::Draining))
            .filter_map(|g| {
                Some(HandedGeneration {
                    generation: g.number,
                    master_pid: g.master_pid?,
                })
            })
            .collect()
    }

    /// `zergctl upgrade-pool` or SIGUSR2: starts this pool's binary again and hands it
    /// everything (see `upgrade`). Refused while a generation starts or the pool stops.
    fn begin_upgrade(&mut self, control: &UnixListener, waiter: Option<UpgradeWaiter>, why: &str) {
        let refuse = |waiter: Option<UpgradeWaiter>, message: String| {
            tracing::error!(reason = why, "upgrade {message}");
            if let Some((reply, _)) = waiter {
                let _ = reply.send(UpgradeOutcome {
                    ok: false,
                    new_pid: None,
                    message,
                });
            }
        };
        if let Upgrade::Underway { waiters } = &mut self.upgrade {
            waiters.extend(waiter);
            return;
        }
        if self.stopping.is_some() || !matches!(self.upgrade, Upgrade::InCharge) {
            return refuse(waiter, "refused: the pool is stopping".into());
        }
        if let Some(starting) = self
            .generations
            .values()
            .find(|g| g.state() == State::Starting)
        {
            let message = format!(
                "refused: generation {} is starting; upgrade once the reload is over",
                starting.number
            );
            return refuse(waiter, message);
        }
        // Their zergctl clients wait on this pool, which would exit without answering them.
        if !self.retiring.is_empty() || !self.chain_waiters.is_empty() {
            let message =
                "refused: a reload or chain reload is still finishing; upgrade once it is over";
            return refuse(waiter, message.into());
        }
        let exe = match &self.exe {
            Ok(exe) => exe.clone(),
            Err(why) => {
                let message = format!(
                    "failed: cannot find this pool's binary ({why}); this pool stays in charge"
                );
                return refuse(waiter, message);
            }
        };
        let handover = Handover {
            last_generation: self.last_generation,
            generations: self.live_masters(),
            listeners: self.listeners.iter().map(|l| l.info.clone()).collect(),
            queues: self.queues.0.iter().map(|q| q.name.clone()).collect(),
            mule_records: self.queues.1.len(),
            endpoints: self.endpoint_socks.iter().map(|(a, _)| a.clone()).collect(),
        };
        let fds: std::io::Result<Vec<OwnedFd>> = std::iter::once(control.as_fd())
            .chain(adopt::all_fds(
                &self.listeners,
                &self.queues.0,
                &self.queues.1,
            ))
            .chain(self.endpoint_socks.iter().map(|(_, fd)| fd.as_fd()))
            .map(|fd| fd.try_clone_to_owned())
            .collect();
        let started = fds
            .map_err(anyhow::Error::from)
            .and_then(|fds| upgrade::start(&exe, handover, fds, self.upgrade_tx.clone()));
        match started {
            Ok(()) => {
                tracing::info!(reason = why, binary = %exe.path.display(), "upgrade: handing the pool over to a new binary");
                self.upgrade = Upgrade::Underway {
                    waiters: waiter.into_iter().collect(),
                };
            }
            Err(e) => refuse(waiter, format!("failed: {e:#}; this pool stays in charge")),
        }
    }

    /// The new pool took over (this one exits), or failed (this one stays in charge).
    fn on_upgrade_outcome(&mut self, outcome: upgrade::Outcome) {
        let Upgrade::Underway { waiters } = std::mem::replace(&mut self.upgrade, Upgrade::InCharge)
        else {
            return;
        };
        let answer = match &outcome {
            Ok(pid) => {
                tracing::info!(new_pid = pid, "upgrade done: the new pool is in charge; this one exits and leaves every generation serving");
                notify::main_pid(*pid);
                if self.stopping.is_some() {
                    // The stop came after the handover was sent: the new pool must not take
                    // the draining generations for a site to restart.
                    tracing::info!(
                        new_pid = pid,
                        "a stop was asked during the upgrade: SIGTERM to the new pool"
                    );
                    signal_pid(*pid, nix::sys::signal::Signal::SIGTERM, "new pool");
                }
                UpgradeOutcome {
                    ok: true,
                    new_pid: Some(*pid),
                    message: format!("pool pid {pid} is in charge"),
                }
            }
            Err(why) => {
                tracing::error!("upgrade failed: {why}; this pool stays in charge");
                UpgradeOutcome {
                    ok: false,
                    new_pid: None,
                    message: format!("failed: {why}; the old pool stays in charge"),
                }
            }
        };
        let mut flushed = Vec::new();
        for (reply, written) in waiters {
            let _ = reply.send(answer.clone());
            flushed.push(written);
        }
        if outcome.is_ok() {
            self.upgrade = Upgrade::HandedOver { flushed };
        }
    }

    /// Runs until the pool is stopped; returns the process exit code.
    pub async fn run(mut self, control: UnixListener) -> anyhow::Result<i32> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut next_conn: ConnId = 0;
        for endpoint in std::mem::take(&mut self.endpoints) {
            tokio::spawn(serve::run(endpoint, events_tx.clone()));
        }

        self.take_in_adopters(&events_tx, &mut next_conn);
        if let Some(stop) = self.stop_signal.take() {
            match stop {
                StopSignal::Graceful(why) => self.begin_stop(why),
                StopSignal::Immediate(why) => self.stop_now(why),
            }
        } else if self.has_live_generation() {
            notify::ready();
        } else {
            self.spawn_generation()?;
        }

        loop {
            if let Upgrade::HandedOver { flushed } = &mut self.upgrade {
                // The state file, the socket files and the generations are the new pool's.
                for written in std::mem::take(flushed) {
                    let _ = tokio::time::timeout(upgrade::TAKEOVER_TIMEOUT, written).await;
                }
                return Ok(0);
            }
            self.save_state();
            self.finish_retired();
            if self.stopping.is_some() && self.generations.values().all(Generation::is_finished) {
                break;
            }
            let timer = self.next_timer();
            tokio::select! {
                _ = self.signals.term.recv() => self.begin_stop("SIGTERM"),
                _ = self.signals.int.recv() => self.begin_stop("SIGINT"),
                _ = self.signals.quit.recv() => self.stop_now("SIGQUIT"),
                _ = self.signals.hup.recv() => self.request_reload(None, "SIGHUP"),
                _ = self.signals.usr2.recv() => self.begin_upgrade(&control, None, "SIGUSR2"),
                _ = self.signals.usr1.recv() => self.reopen_log("SIGUSR1"),
                Some(outcome) = self.upgrade_rx.recv() => self.on_upgrade_outcome(outcome),
                accepted = control.accept(), if matches!(self.upgrade, Upgrade::InCharge) => match accepted {
                    Ok((stream, _)) => {
                        next_conn += 1;
                        tokio::spawn(control_server::serve(
                            stream,
                            next_conn,
                            events_tx.clone(),
                            self.listeners.clone(),
                            self.queues.clone(),
                        ));
                    }
                    Err(e) => tracing::warn!(error = %e, "control accept failed"),
                },
                Some(ev) = events.recv() => self.handle_event(ev, &control),
                Some(ev) = self.internal_rx.recv() => self.handle_internal(ev),
                _ = sleep_until(timer) => self.on_timer()?,
            }
        }
        self.fail_waiters("the pool stopped");
        tracing::info!(code = self.exit_code, "pool stopped");
        self.state_file.clear();
        listeners::remove_socket_files(self.socket_files());
        Ok(self.exit_code)
    }

    fn socket_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.control_path.clone()];
        files.extend(self.endpoint_files.iter().cloned());
        for l in self.listeners.iter() {
            if let ListenAddr::Unix(p) = &l.info.addr {
                files.push(p.clone());
            }
        }
        files
    }

    fn next_timer(&self) -> Option<Instant> {
        let ready = self
            .generations
            .values()
            .filter(|g| g.state() == State::Starting)
            .map(|g| g.ready_deadline)
            .min();
        match self.stopping {
            Some(Stopping::Graceful { deadline }) => Some(deadline),
            Some(Stopping::Immediate) => None,
            None => ready.into_iter().chain(self.respawn_at).min(),
        }
    }

    fn on_timer(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        match self.stopping {
            Some(Stopping::Graceful { deadline }) if now >= deadline => {
                tracing::warn!("stop: mercy expired, killing what is left");
                self.stop_now("mercy expired");
            }
            Some(_) => {}
            None => {
                let late: Vec<u64> = self
                    .generations
                    .values()
                    .filter(|g| g.state() == State::Starting && g.ready_deadline <= now)
                    .map(|g| g.number)
                    .collect();
                for number in late {
                    let why = format!(
                        "not ready within ready-timeout ({}s)",
                        self.config.ready_timeout
                    );
                    self.abandon(number, &why);
                }
                if self.respawn_at.is_some_and(|at| at <= now) {
                    self.respawn_at = None;
                    if !self.has_live_generation() {
                        self.spawn_generation()?;
                    }
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
    fn spawn_generation(&mut self) -> anyhow::Result<u64> {
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
        // `None` only for a child already reaped; a pid of 0 here would later be kill(0).
        let Some(pid) = child.id() else {
            bail!(
                "zergling `{}` exited before its pid could be read",
                argv.join(" ")
            );
        };
        self.last_generation = number;
        tracing::info!(generation = number, pid, command = %argv.join(" "), "generation starting");
        self.generations.insert(
            number,
            Generation::new(number, Some(pid), self.config.ready_timeout()),
        );
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
        Ok(number)
    }

    fn handle_event(&mut self, ev: Event, control: &UnixListener) {
        match ev {
            Event::ZerglingHello {
                conn,
                pid,
                generation,
                tx,
            } => self.on_hello(conn, pid, generation, tx),
            Event::ZerglingAdopt(r) => self.on_late_adopt(r),
            Event::FromZergling { conn, msg } => self.on_zergling_message(conn, msg),
            Event::Disconnected { conn } => self.on_disconnect(conn),
            Event::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Event::Reload { reply } => self.request_reload(Some(reply), "zergctl reload"),
            Event::ChainReload { reply } => self.chain_reload(reply),
            Event::UpgradePool { reply, flushed } => {
                self.begin_upgrade(control, Some((reply, flushed)), "zergctl upgrade-pool")
            }
            Event::Observe { what, reply } => {
                let _ = reply.send(self.observe(what));
            }
            Event::Stop { immediate } => {
                if immediate {
                    self.stop_now("zergctl stop --now")
                } else {
                    self.begin_stop("zergctl stop")
                }
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
        if checked_pid(pid, "zergling master in its hello").is_none() {
            return refuse(format!("{pid} is not a process id"));
        }
        let number = match generation {
            Some(n) => match self.generations.get(&n) {
                Some(g) if g.conn.is_none() && g.state() == State::Starting => n,
                _ => return refuse(format!("generation {n} is not one the pool is starting")),
            },
            None => {
                // Started by someone else (a blue/green deploy): it is the candidate of a
                // reload, through the same ready gate, drain and rollback.
                if let Some(r) = &self.reload {
                    return refuse(format!(
                        "a reload is in progress (generation {} is starting); try again when it ends",
                        r.candidate
                    ));
                }
                self.last_generation += 1;
                let n = self.last_generation;
                self.generations
                    .insert(n, Generation::new(n, None, self.config.ready_timeout()));
                tracing::info!(
                    generation = n,
                    pid,
                    "reload: a zergling attached on its own"
                );
                notify::reloading();
                self.reload = Some(Reload {
                    candidate: n,
                    requested: Instant::now(),
                    waiters: Vec::new(),
                });
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
            queues: self.queues.0.iter().map(|q| q.name.clone()).collect(),
            mule_records: self.queues.1.len(),
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
            Message::Processes {
                processes,
                mules_held,
            } => {
                g.processes = processes;
                g.mules_held = mules_held;
                self.assign_mules();
            }
            Message::Ready => self.on_ready(number),
            Message::Figures(figures) => {
                let grew = self.ledger.record(number, figures);
                self.metrics.count_requests(number, &grew);
            }
            Message::ChainReloaded(outcome) => {
                self.metrics.chain_reload_finished(&outcome);
                let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.chain_waiters)
                    .into_iter()
                    .partition(|(n, _)| *n == number);
                self.chain_waiters = waiting;
                for (_, w) in done {
                    let _ = w.send(outcome.clone());
                }
            }
            Message::Failed { reason } => {
                tracing::error!(generation = number, %reason, "generation failed to start");
                g.failure = Some(reason.clone());
                self.abandon(number, &reason);
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
            // An adopted master is no child of this pool: its own pid is the one to stop.
            let process = g.child_pid.or(g.master_pid.filter(|_| g.adopted));
            if let Some(pid) = process {
                if g.state() != State::Draining && self.stopping.is_none() {
                    // A master that hangs up is broken; make sure its process tree goes too.
                    tracing::warn!(
                        generation = number,
                        pid,
                        "zergling closed its control connection; terminating it"
                    );
                    signal_pid(pid, nix::sys::signal::Signal::SIGTERM, "zergling");
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

    /// Forgets a generation once nothing of it remains, rolls back a reload whose candidate
    /// died, and heals the pool if no generation is left to serve.
    fn reap_generation(&mut self, number: u64) {
        let Some(g) = self.generations.get_mut(&number) else {
            return;
        };
        if !g.is_finished() {
            return;
        }
        let was = g.state();
        let lived = g.started.elapsed();
        let failure = g.failure.take();
        g.transition(State::Gone, "exited");
        self.generations.remove(&number);
        self.ledger.retire(number);
        self.metrics.generation_gone(number);
        self.assign_mules();
        let (orphans, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.chain_waiters)
            .into_iter()
            .partition(|(n, _)| *n == number);
        self.chain_waiters = waiting;
        for (_, w) in orphans {
            let _ = w.send(ReloadOutcome {
                ok: false,
                generation: number,
                message: format!("interrupted: generation {number} exited during the chain reload"),
                millis: 0,
            });
        }
        if was == State::Starting && self.is_candidate(number) {
            let why = failure.unwrap_or_else(|| "it exited before it was ready".into());
            self.roll_back(number, &why);
        }
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

    fn is_candidate(&self, number: u64) -> bool {
        self.reload.as_ref().is_some_and(|r| r.candidate == number)
    }

    /// A generation's master says every worker accepts (and the health check passed).
    fn on_ready(&mut self, number: u64) {
        let Some(g) = self.generations.get_mut(&number) else {
            return;
        };
        if g.state() != State::Starting {
            return;
        }
        g.transition(State::Serving, "ready: every worker accepts");
        self.ever_served = true;
        self.respawn_at = None;
        self.backoff = Duration::ZERO;
        notify::ready();
        let Some(reload) = self.reload.take_if(|r| r.candidate == number) else {
            self.assign_mules();
            return;
        };
        let mercy = self.config.reload_mercy().as_secs();
        let mut old = Vec::new();
        for g in self.generations.values_mut() {
            if g.number != number && g.state() == State::Serving {
                g.transition(State::Draining, &format!("replaced by generation {number}"));
                g.send(Message::Stop { mercy_secs: mercy });
                old.push(g.number);
            }
        }
        tracing::info!(generation = number, retiring = ?old, "reload: new generation serves; old ones drain");
        self.assign_mules();
        self.retiring.push(Retiring {
            candidate: number,
            old,
            requested: reload.requested,
            waiters: reload.waiters,
        });
        self.start_queued_reload();
    }

    /// A generation that is still starting will not make it: kill it. If it was a reload's
    /// candidate, that reload is rolled back.
    fn abandon(&mut self, number: u64, why: &str) {
        let Some(g) = self.generations.get_mut(&number) else {
            return;
        };
        if g.state() != State::Starting {
            return;
        }
        tracing::warn!(
            generation = number,
            reason = why,
            "killing a generation that cannot start"
        );
        g.failure.get_or_insert_with(|| why.to_owned());
        g.kill();
        // Deadline passed: keep the timer from firing again while it dies.
        g.ready_deadline = Instant::now() + Duration::from_secs(3600);
        if self.is_candidate(number) {
            self.roll_back(number, why);
        }
    }

    /// Ends a reload whose candidate failed; whatever served before serves on.
    fn roll_back(&mut self, number: u64, why: &str) {
        let Some(reload) = self.reload.take_if(|r| r.candidate == number) else {
            return;
        };
        let serving: Vec<u64> = self
            .generations
            .values()
            .filter(|g| g.state() == State::Serving)
            .map(|g| g.number)
            .collect();
        let message = format!(
            "rolled back: generation {number} failed: {why}; {} serves on",
            match serving.as_slice() {
                [] => "no generation".to_owned(),
                [one] => format!("generation {one}"),
                many => format!("generations {many:?}"),
            }
        );
        tracing::error!(generation = number, "reload {message}");
        self.finish_reload(reload.waiters, false, number, message, reload.requested);
        if !serving.is_empty() {
            notify::ready();
        }
        self.start_queued_reload();
    }

    /// Answers reloads whose old generations have all exited.
    fn finish_retired(&mut self) {
        let (done, pending): (Vec<Retiring>, Vec<Retiring>) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(|r| r.old.iter().all(|n| !self.generations.contains_key(n)));
        self.retiring = pending;
        for r in done {
            let message = if r.old.is_empty() {
                format!("generation {} serves", r.candidate)
            } else {
                format!(
                    "generation {} serves; generations {:?} drained and exited",
                    r.candidate, r.old
                )
            };
            tracing::info!(generation = r.candidate, "reload done: {message}");
            self.finish_reload(r.waiters, true, r.candidate, message, r.requested);
        }
    }

    fn finish_reload(
        &mut self,
        waiters: Vec<Waiter>,
        ok: bool,
        generation: u64,
        message: String,
        requested: Instant,
    ) {
        let outcome = ReloadOutcome {
            ok,
            generation,
            message,
            millis: requested.elapsed().as_millis() as u64,
        };
        for w in waiters {
            let _ = w.send(outcome.clone());
        }
        self.metrics.reload_finished(&outcome);
        self.last_reload = Some(outcome);
    }

    /// SIGHUP, `zergctl reload`: start a candidate generation from the re-read config.
    /// Reopens `logto` (logrotate moved it away) and hands the new file to every generation,
    /// whose master hands it to each of its processes.
    fn reopen_log(&mut self, why: &str) {
        let Some(path) = self.config.logto.clone() else {
            tracing::info!("{why}: no `logto` to reopen");
            return;
        };
        if let Err(e) = crate::startup::log_to(&path) {
            tracing::error!(
                error = format!("{e:#}"),
                "{why}: the log stays where it was"
            );
            return;
        }
        tracing::info!(path = %path.display(), "{why}: log reopened; handing it to every generation");
        for g in self.generations.values() {
            g.send(Message::ReopenLog);
        }
    }

    fn request_reload(&mut self, waiter: Option<Waiter>, why: &str) {
        let requested = Instant::now();
        if !matches!(self.upgrade, Upgrade::InCharge) {
            let message = "refused: the pool binary is being upgraded; reload once that is done";
            tracing::warn!(reason = why, "reload {message}");
            self.finish_reload(
                waiter.into_iter().collect(),
                false,
                0,
                message.into(),
                requested,
            );
            return;
        }
        if self.config.log_reopen {
            self.reopen_log(why);
        }
        if self.stopping.is_some() {
            if let Some(w) = waiter {
                let _ = w.send(ReloadOutcome {
                    ok: false,
                    generation: 0,
                    message: "refused: the pool is stopping".into(),
                    millis: 0,
                });
            }
            return;
        }
        if let Some(r) = &self.reload {
            tracing::info!(
                reason = why,
                starting = r.candidate,
                "reload queued until the starting generation is ready or rolled back"
            );
            self.queued.get_or_insert_with(Vec::new).extend(waiter);
            return;
        }
        let waiters: Vec<Waiter> = waiter.into_iter().collect();
        match Config::load(&self.config_path) {
            Ok(config) => {
                if config.listeners() != self.config.listeners() {
                    tracing::warn!("the listeners in the config changed; a reload keeps the pool's sockets (restart the pool to rebind)");
                }
                let endpoints = |c: &Config| (c.stats.clone(), c.stats_http, c.metrics.clone());
                if endpoints(&config) != endpoints(&self.config) {
                    tracing::warn!("`stats`, `stats-http` or `metrics` changed in the config; a reload keeps the pool's endpoints as they are (restart the pool to move them)");
                }
                self.config = config;
            }
            Err(e) => {
                let message = format!("refused: the config is invalid, nothing was started: {e}");
                tracing::error!(reason = why, "reload {message}");
                self.finish_reload(waiters, false, 0, message, requested);
                return;
            }
        }
        tracing::info!(reason = why, "reload requested: starting a new generation");
        notify::reloading();
        match self.spawn_generation() {
            Ok(candidate) => {
                self.reload = Some(Reload {
                    candidate,
                    requested,
                    waiters,
                })
            }
            Err(e) => {
                let message = format!("failed: cannot start a zergling: {e:#}");
                tracing::error!("reload {message}");
                self.finish_reload(waiters, false, 0, message, requested);
                notify::ready();
            }
        }
    }

    fn start_queued_reload(&mut self) {
        if let Some(waiters) = self.queued.take() {
            let mut waiters = waiters.into_iter();
            self.request_reload(waiters.next(), "queued reload");
            if let Some(r) = &mut self.reload {
                r.waiters.extend(waiters);
            } else {
                // The reload was refused at once; its outcome is the last one.
                if let Some(outcome) = &self.last_reload {
                    for w in waiters {
                        let _ = w.send(outcome.clone());
                    }
                }
            }
        }
    }

    /// Hands each free mule position to the newest serving generation. A position is free once
    /// its holder is gone, or is no longer serving and says it let the position go (its mule
    /// exited). So generation N+1's mule k starts only after N's mule k has exited.
    fn assign_mules(&mut self) {
        let newest = self
            .generations
            .values()
            .filter(|g| g.state() == State::Serving)
            .map(|g| g.number)
            .max();
        let mut grants = Vec::new();
        for (i, holder) in self.mule_holders.iter_mut().enumerate() {
            let k = i as u32 + 1;
            if let Some(h) = *holder {
                let released = match self.generations.get(&h) {
                    None => true,
                    Some(g) => g.state() != State::Serving && !g.mules_held.contains(&k),
                };
                if released {
                    tracing::info!(mule = k, generation = h, "mule position released");
                    *holder = None;
                }
            }
            if let (None, Some(n)) = (*holder, newest) {
                *holder = Some(n);
                grants.push(k);
            }
        }
        if let (false, Some(n)) = (grants.is_empty(), newest) {
            tracing::info!(generation = n, mules = ?grants, "mule positions granted");
            if let Some(g) = self.generations.get(&n) {
                g.send(Message::MulesGranted { ids: grants });
            }
        }
    }

    /// Adds a mule's farms and message count to its status line.
    fn describe_mule(&self, p: &mut zerg::control::ProcessInfo) {
        if p.kind != zerg::control::ProcessKind::Mule {
            return;
        }
        p.farms = self
            .config
            .farms()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.mules.contains(&p.id))
            .map(|f| f.name)
            .collect();
        p.messages = self
            .queues
            .1
            .get(mule_index(p.id).unwrap_or(usize::MAX))
            .map(zerg::mule_record::taken);
    }

    /// `zergctl chain-reload`: the serving generation replaces its workers one by one.
    fn chain_reload(&mut self, reply: Waiter) {
        let serving = self
            .generations
            .values()
            .find(|g| g.state() == State::Serving);
        match serving {
            Some(g) if self.reload.is_none() && self.stopping.is_none() => {
                tracing::info!(generation = g.number, "chain reload requested");
                g.send(Message::ChainReload);
                self.chain_waiters.push((g.number, reply));
            }
            _ => {
                let _ = reply.send(ReloadOutcome {
                    ok: false,
                    generation: 0,
                    message:
                        "refused: no generation is serving alone (a reload or stop is under way)"
                            .into(),
                    millis: 0,
                });
            }
        }
    }

    /// Answers every pending reload with a failure (the pool is going away).
    fn fail_waiters(&mut self, why: &str) {
        let mut waiters: Vec<Waiter> = self.queued.take().unwrap_or_default();
        if let Some(r) = self.reload.take() {
            waiters.extend(r.waiters);
        }
        for r in std::mem::take(&mut self.retiring) {
            waiters.extend(r.waiters);
        }
        waiters.extend(
            std::mem::take(&mut self.chain_waiters)
                .into_iter()
                .map(|(_, w)| w),
        );
        for w in waiters {
            let _ = w.send(ReloadOutcome {
                ok: false,
                generation: 0,
                message: format!("interrupted: {why}"),
                millis: 0,
            });
        }
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
                    signal_pid(pid, nix::sys::signal::Signal::SIGTERM, "zergling");
                }
            }
        }
    }

    /// SIGQUIT or an expired mercy: kill every process of every generation.
    fn stop_now(&mut self, why: &str) {
        tracing::warn!(reason = why, "immediate stop: killing every generation");
        notify::stopping();
        self.fail_waiters("the pool is stopping");
        self.stopping = Some(Stopping::Immediate);
        for g in self.generations.values() {
            g.kill();
        }
    }

    fn status(&self) -> PoolStatus {
        PoolStatus {
            pool_pid: std::process::id(),
            listeners: self.listeners.iter().map(|l| l.info.clone()).collect(),
            generations: self
                .generations
                .values()
                .map(|g| {
                    let mut status = g.status();
                    for p in &mut status.processes {
                        self.describe_process(g.number, p);
                    }
                    status
                })
                .collect(),
            last_reload: self.last_reload.clone(),
        }
    }

    /// Adds a mule's farms and messages, and what its master last reported of any process.
    fn describe_process(&self, generation: u64, p: &mut zerg::control::ProcessInfo) {
        self.describe_mule(p);
        let figures = self.ledger.account(generation).map(|a| &a.latest);
        observe::describe(p, figures);
    }

    /// A `stats` or `metrics` document, from what the pool holds now.
    fn observe(&self, what: serve::Served) -> String {
        let view = observe::View {
            pool_pid: std::process::id(),
            generations: self
                .generations
                .values()
                .filter(|g| g.state() != State::Gone)
                .map(|g| observe::GenerationView {
                    number: g.number,
                    state: g.state(),
                    age: g.started.elapsed(),
                    master_pid: g.master_pid,
                    processes: g
                        .processes
                        .iter()
                        .cloned()
                        .map(|mut p| {
                            self.describe_process(g.number, &mut p);
                            p
                        })
                        .collect(),
                    figures: self.ledger.account(g.number).map(|a| &a.latest),
                })
                .collect(),
            listeners: &self.listeners,
            queues: &self.queues.0,
            records: &self.queues.1,
            last_reload: self.last_reload.as_ref(),
            ledger: &self.ledger,
        };
        match what {
            serve::Served::Stats { .. } => observe::uwsgi_stats::document(&view).to_string(),
            serve::Served::Metrics => self.metrics.render(&view),
        }
    }
}

/// The index in `mule_holders` and the records of mule position `k` (numbered from 1), or
/// `None` for a 0 a peer sent.
fn mule_index(k: u32) -> Option<usize> {
    (k as usize).checked_sub(1)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Sends `sig` to the one process `pid` (as the control protocol or a spawn gave it); a number
/// that is not a single process's is logged and left alone (see [`checked_pid`]).
pub(crate) fn signal_pid(pid: u32, sig: nix::sys::signal::Signal, what: &str) {
    if let Some(pid) = checked_pid(pid, what) {
        let _ = nix::sys::signal::kill(pid, sig);
    }
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
