//! The zergling master: attaches to the pool, imports the app once (or, under `lazy-apps`,
//! leaves that to each worker), forks the web workers and mules and supervises them in one single-threaded loop (gunicorn's arbiter shape: signals and pool
//! messages wake a poll(2); `reap`, `spawn` and `murder` are separate steps).
//!
//! The loop runs no tokio runtime and starts no thread, because it forks (see `process`).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use zerg::config::Config;
use zerg::control::{
    self, AdoptState, Adoption, Connection, Figures, ListenerInfo, Message, MuleFigures,
    ProcessInfo, ProcessKind, ReloadOutcome, Role, WorkerFigures, FIGURES_INTERVAL,
    PROTOCOL_VERSION,
};

use crate::pool_link::PoolLink;
use crate::scoreboard::{self, Scoreboard};
use crate::signals::SelfPipe;
use crate::{health, locks, mule, process, python, uwsgi_api, worker};

/// A worker that dies sooner than this after its start counts as a crash-loop step.
const MIN_HEALTHY_LIFE: Duration = Duration::from_secs(2);
const MAX_RESPAWN_DELAY: Duration = Duration::from_secs(10);
/// How long before the pool's `ready-timeout` a starting generation fails itself.
const READY_MARGIN: Duration = Duration::from_secs(1);
/// How often the master looks at the scoreboard and the workers' memory for `harakiri`,
/// `max-requests`, `reload-on-rss` and `max-worker-lifetime` (uWSGI's master looks every
/// second too).
const LIMITS_CHECK: Duration = Duration::from_secs(1);
/// How long a process condemned by `harakiri` gets to write its Python stacks before SIGKILL.
/// Generous: the kill comes after a hang of `harakiri` seconds anyway, and on a loaded machine
/// faulthandler may need a while to be scheduled and write every thread's stack.
const STACKS_GRACE: Duration = Duration::from_secs(2);
/// While a generation stops, how often its mules that still run are sent SIGHUP again. A
/// program mule (Galaxy's `galaxy-main`) installs its own handler only after its imports: a
/// SIGHUP that came before found zerg's, which only wakes `farm_get_msg`, and such a program
/// never calls it, so without another SIGHUP it would run on until the mercy killed it.
const MULE_STOP_AGAIN: Duration = Duration::from_secs(2);

/// What the zergling was started with.
pub struct Options {
    pub pool: PathBuf,
    pub config: PathBuf,
    pub generation: Option<u64>,
}

/// One web worker position (uWSGI's `worker_id()`), filled by successive processes.
struct Slot {
    kind: ProcessKind,
    id: u32,
    pid: Option<Pid>,
    started: Instant,
    /// When `pid` was forked, in seconds since the Unix epoch (uWSGI's `last_spawn`).
    spawned_unix: u64,
    /// Processes forked into this slot after its first (uWSGI's `respawn_count`).
    respawns: u32,
    /// Processes of this slot killed by `harakiri` (uWSGI's `harakiri_count`).
    harakiris: u32,
    /// Read end of the pipe on which the worker writes one byte once it accepts.
    ready_pipe: Option<OwnedFd>,
    ready: bool,
    /// Consecutive quick deaths, for the respawn backoff.
    crashes: u32,
    respawn_at: Option<Instant>,
    /// During a chain reload: the previous process of this slot, draining.
    retiring: Option<Pid>,
    /// A web worker may always run; a mule only once the pool granted its position (so no
    /// two generations run mule k at once).
    granted: bool,
    /// A mule's: the write end of its stop pipe (see `mule`).
    stop_pipe: Option<OwnedFd>,
    /// A web worker's private listener for the health check (see `health`), when one is set.
    private: Option<health::PrivateListener>,
    /// The health check in flight against this slot's process.
    probe: Option<health::Probe>,
    /// This slot's process answered the health check (or there is none to answer).
    answered: bool,
    /// The slot's requests answered on the scoreboard when its process started: what it has
    /// answered itself is the count past this (`max-requests`).
    baseline: u64,
    /// A process of this slot condemned by `harakiri`.
    harakiri: Option<Harakiri>,
    /// The master's end of the socket on which it hands the slot's process a reopened log.
    log_channel: Option<OwnedFd>,
}

/// A process stuck in one request (or one mule message) past `harakiri`: told to write its
/// stacks, and killed at `kill_at`.
struct Harakiri {
    pid: Pid,
    kill_at: Instant,
    killed: bool,
}

/// A web worker being replaced for a limit (`max-requests`, `reload-on-rss`,
/// `max-worker-lifetime`), one slot at a time, as one step of a chain reload: its successor
/// is forked, and the old process is stopped once the successor accepts.
struct Recycle {
    slot: usize,
    /// A chain reload asked for meanwhile, started once this replacement is done (or given
    /// up), so that it gets its answer.
    chain_asked: bool,
    /// Past this (the config's `ready-timeout` after the fork) the successor is given up.
    deadline: Instant,
    /// The old process's start and request count, given back to it if its successor is
    /// given up.
    started: Instant,
    baseline: u64,
}

impl Slot {
    /// One step of a chain reload: the current process goes on serving as `retiring` (it is
    /// stopped once its successor accepts), and the successor is forked now.
    fn start_successor(&mut self) {
        self.retiring = self.pid.take();
        self.ready = false;
        self.ready_pipe = None;
        self.crashes = 0;
        self.respawn_at = Some(Instant::now());
    }
}

/// A chain reload in progress: the slots before `next` have been replaced.
struct Chain {
    next: usize,
    started: Instant,
}

/// Where this generation is in its life. It only moves forward (starting, serving,
/// stopping), in [`Master::enter`], which logs each move once.
#[derive(Clone, Copy)]
enum Phase {
    /// Workers are starting and being checked; the pool has not been told READY. Past
    /// `deadline` (just within the pool's `ready-timeout`) the generation fails itself, saying
    /// which worker it still waits for.
    Starting { deadline: Instant },
    /// READY was sent: the generation serves.
    Serving,
    /// Draining: the workers finish what they hold by `deadline`, then are killed; the mules
    /// still running are asked again at `ask_mules_again` (see [`MULE_STOP_AGAIN`]).
    Stopping {
        deadline: Instant,
        ask_mules_again: Instant,
    },
    /// Killing every process; the master exits once they are reaped.
    Killing,
}

struct Master {
    config: Config,
    generation: u64,
    pool: PoolLink,
    /// The control socket, knocked on again when the pool goes away.
    pool_path: PathBuf,
    signals: SelfPipe,
    listeners: Vec<OwnedFd>,
    manifest: Vec<ListenerInfo>,
    /// The `https` listeners' certificates, read as the generation started.
    certs: worker::tls::Certs,
    /// The app, imported here once; `None` under `lazy-apps`, where each worker imports it.
    app: Option<python::App>,
    slots: Vec<Slot>,
    phase: Phase,
    /// The path whose 2xx answer from each worker gates READY, if configured.
    health: Option<String>,
    chain: Option<Chain>,
    /// Open connections, requests and running requests per web worker and mule, shared with
    /// them (see `scoreboard`).
    scoreboard: Scoreboard,
    /// When the pool gets this generation's next [`Figures`].
    figures_due: Instant,
    /// The web worker being replaced for a limit, if one is.
    recycle: Option<Recycle>,
    /// When the limits are next checked.
    next_check: Instant,
}

/// Runs a zergling to the end; returns its exit code.
pub fn run(opts: Options) -> anyhow::Result<i32> {
    // The pool's ready-timeout runs from about now (it started this process).
    let born = Instant::now();
    let config = Config::load(&opts.config)?;
    if let Some(run_as) = zerg::privileges::RunAs::from_config(&config) {
        // A zergling the pool started is this user already (the pool dropped root before it
        // started any); one started as root by someone else (a blue/green deploy run by root)
        // becomes it here, before `chdir`, the virtualenv and the app.
        if let zerg::privileges::Outcome::Dropped { groups } = run_as.become_it()? {
            tracing::info!(?groups, "started as root; now running as {run_as}");
        }
    }
    for kv in config.env.iter() {
        if let Some((k, v)) = kv.split_once('=') {
            // Single-threaded here, and before Python snapshots os.environ.
            std::env::set_var(k, v);
        }
    }
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir).with_context(|| format!("chdir {}", dir.display()))?;
    }
    let signals = SelfPipe::install().context("cannot install signal handlers")?;
    crate::signals::reopen_log_on_signal().context("cannot install the log reopening")?;
    let mut conn = Connection::connect(&opts.pool)
        .with_context(|| format!("cannot connect to the pool at {}", opts.pool.display()))?;
    conn.send(
        &Message::Hello {
            protocol: PROTOCOL_VERSION,
            role: Role::Zergling,
            pid: std::process::id(),
            generation: opts.generation,
            adopt: None,
        },
        &[],
    )?;
    let (generation, manifest, listeners, queues) = match conn.recv_hello() {
        Ok((
            Message::Welcome {
                generation,
                listeners: manifest,
                queues,
                mule_records,
                ..
            },
            mut fds,
        )) => {
            let mut queue_fds = fds.split_off(manifest.len());
            let records = queue_fds.split_off(queue_fds.len().saturating_sub(mule_records));
            (
                generation,
                manifest,
                fds,
                (pair_queues(queues, queue_fds), records),
            )
        }
        Ok((Message::Refused { reason, protocol }, _)) => {
            bail!("the pool (protocol {protocol}) refused this zergling: {reason}")
        }
        Ok((other, _)) => bail!("the pool answered the hello with {other:?}"),
        Err(e) => bail!("no welcome from the pool at {}: {e}", opts.pool.display()),
    };
    let _span = tracing::info_span!("generation", n = generation).entered();
    tracing::info!(
        listeners = %manifest.iter().map(|l| format!("{}={}", l.name, l.addr)).collect::<Vec<_>>().join(" "),
        "received listeners; importing the app"
    );
    // Read by each generation as it starts, never by the pool: a renewed certificate is served
    // from the next reload on, and one that cannot be used fails this generation, not the
    // serving one (see worker::tls).
    let certs = match worker::tls::load(&config, &manifest) {
        Ok(certs) => certs,
        Err(reason) => {
            tracing::error!("cannot serve https: {reason}");
            let _ = conn.send(&Message::Failed { reason }, &[]);
            return Ok(1);
        }
    };
    locks::create(config.locks).context("cannot create the user locks")?;
    uwsgi_api::install(uwsgi_api::Setup {
        numproc: config.processes,
        opt: raw_options(&config, &opts.config),
        queues: queues.0,
        records: queues.1,
        farms: config.farms().unwrap_or_default(),
    });
    let started = Instant::now();
    let app = if config.lazy_apps {
        python::start(&config).map(|()| None)
    } else {
        python::load(&config).map(Some)
    };
    let app = match app {
        Ok(app) => app,
        Err(reason) => {
            tracing::error!("cannot import the app: {reason}");
            let _ = conn.send(&Message::Failed { reason }, &[]);
            return Ok(1);
        }
    };
    match app {
        Some(_) => {
            tracing::info!(ms = started.elapsed().as_millis() as u64, "app imported");
            warn_of_threads();
        }
        None => tracing::info!("lazy-apps: each worker imports the app after its fork"),
    }
    let workers = (1..=config.processes).map(|id| (ProcessKind::Worker, id));
    let mules = (1..=config.mule.0.len() as u32).map(|id| (ProcessKind::Mule, id));
    let slots = workers
        .chain(mules)
        .map(|(kind, id)| {
            let private = match (kind, &config.health_check) {
                (ProcessKind::Worker, Some(_)) => Some(
                    health::private_listener(id)
                        .context("cannot bind a private listener for the health check")?,
                ),
                _ => None,
            };
            Ok(Slot {
                kind,
                id,
                pid: None,
                started: Instant::now(),
                spawned_unix: 0,
                respawns: 0,
                harakiris: 0,
                ready_pipe: None,
                ready: false,
                crashes: 0,
                // Mules wait for the pool's grant.
                respawn_at: (kind == ProcessKind::Worker).then(Instant::now),
                retiring: None,
                granted: kind == ProcessKind::Worker,
                stop_pipe: None,
                answered: private.is_none(),
                private,
                probe: None,
                baseline: 0,
                harakiri: None,
                log_channel: None,
            })
        })
        .collect::<anyhow::Result<Vec<Slot>>>()?;
    let scoreboard = Scoreboard::new(
        config.processes as usize,
        config.mule.0.len(),
        scoreboard::cells_per_slot(config.threads),
    )?;
    let deadline = ready_deadline(born, config.ready_timeout());
    let health = config.health_check.clone();
    let mut master = Master {
        scoreboard,
        config,
        generation,
        pool: PoolLink::Attached(conn),
        pool_path: opts.pool,
        signals,
        listeners,
        manifest,
        certs,
        app,
        slots,
        phase: Phase::Starting { deadline },
        health,
        chain: None,
        figures_due: Instant::now(),
        recycle: None,
        next_check: Instant::now() + LIMITS_CHECK,
    };
    master.run()
}

impl Master {
    fn run(&mut self) -> anyhow::Result<i32> {
        loop {
            self.spawn_due();
            if self.stopping()
                && self
                    .slots
                    .iter()
                    .all(|s| s.pid.is_none() && s.retiring.is_none())
            {
                // The last requests' figures, so the pool's totals miss none of them.
                self.send(Message::Figures(self.figures()));
                tracing::info!("every worker exited; master exits");
                return Ok(0);
            }
            self.wait_for_events()?;
            for sig in self.signals.drain() {
                self.handle_signal(sig);
            }
            self.reap();
            self.check_deadline();
            self.check_limits();
            self.knock_if_due();
            self.report_figures_when_due();
        }
    }

    /// Every [`FIGURES_INTERVAL`]: the pool gets the generation's figures. The pool cannot read
    /// the scoreboard itself (it is this generation's memory), and must never wait on a worker
    /// for it, so the master reads it and sends a copy.
    fn report_figures_when_due(&mut self) {
        let now = Instant::now();
        if now < self.figures_due {
            return;
        }
        self.figures_due = now + FIGURES_INTERVAL;
        let figures = self.figures();
        self.send(Message::Figures(figures));
    }

    /// What each web worker's scoreboard slot and each process's memory say now.
    fn figures(&self) -> Figures {
        let pid_of = |s: &Slot| s.pid.map(|p| p.as_raw() as u32);
        // A process that just exited has no memory to read: 0, as uWSGI shows a dead worker.
        let rss = |pid: Option<u32>| pid.and_then(|p| zerg::rss::of(p).ok()).unwrap_or(0);
        let workers = self
            .slots
            .iter()
            .filter(|s| s.kind == ProcessKind::Worker)
            .map(|s| {
                let board = self.scoreboard.snapshot(s.id as usize - 1);
                WorkerFigures {
                    id: s.id,
                    pid: pid_of(s),
                    requests: board.requests,
                    in_flight: board.in_flight,
                    connections: board.open,
                    by_class: board.status_classes,
                    duration_buckets: board.duration_buckets.to_vec(),
                    duration_sum_us: board.duration_sum_us,
                    sent_bytes: board.bytes_sent,
                    busy_ms: board.busy_for.map(|d| d.as_millis() as u64),
                    rss_bytes: rss(pid_of(s)),
                    respawns: s.respawns,
                    harakiris: s.harakiris,
                    spawned_unix: s.spawned_unix,
                }
            })
            .collect();
        let mules = self
            .slots
            .iter()
            .filter(|s| s.kind == ProcessKind::Mule)
            .map(|s| MuleFigures {
                id: s.id,
                pid: pid_of(s),
                rss_bytes: rss(pid_of(s)),
                respawns: s.respawns,
                harakiris: s.harakiris,
            })
            .collect();
        Figures {
            duration_bounds: scoreboard::DURATION_BOUNDS.to_vec(),
            workers,
            mules,
        }
    }

    /// Sleeps in poll(2) until a signal, a pool message, a worker's readiness or health
    /// answer, or a timer.
    fn wait_for_events(&mut self) -> anyhow::Result<()> {
        let timeout = self
            .next_deadline()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .map(|d| {
                PollTimeout::try_from(d.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX)
            })
            .unwrap_or(PollTimeout::NONE);
        let (control_ready, ready_fds, answers) = {
            let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN)];
            // A lost pool is not polled: its socket is closed.
            let pool_at = self.pool.conn().map(|conn| {
                fds.push(PollFd::new(conn.stream().as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let first_pipe = fds.len();
            let watched: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].ready_pipe.is_some())
                .collect();
            for &i in &watched {
                let pipe = self.slots[i]
                    .ready_pipe
                    .as_ref()
                    .expect("filtered on is_some");
                fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
            }
            let first_probe = fds.len();
            let probed: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].probe.is_some())
                .collect();
            for &i in &probed {
                let probe = self.slots[i].probe.as_ref().expect("filtered on is_some");
                fds.push(PollFd::new(probe.fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            let has = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let control_ready = pool_at.is_some_and(|i| has(&fds[i]));
            let ready_fds: Vec<usize> = watched
                .iter()
                .zip(&fds[first_pipe..first_probe])
                .filter(|(_, fd)| has(fd))
                .map(|(&i, _)| i)
                .collect();
            let answers: Vec<usize> = probed
                .iter()
                .zip(&fds[first_probe..])
                .filter(|(_, fd)| has(fd))
                .map(|(&i, _)| i)
                .collect();
            (control_ready, ready_fds, answers)
        };
        for i in ready_fds {
            self.on_worker_pipe(i);
        }
        for i in answers {
            self.on_health_answer(i);
        }
        if control_ready {
            self.on_pool_readable();
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let respawn = self.slots.iter().filter_map(|s| s.respawn_at).min();
        let stop = match self.phase {
            Phase::Starting { deadline } => Some(deadline),
            Phase::Stopping {
                deadline,
                ask_mules_again,
            } => Some(deadline.min(ask_mules_again)),
            _ => None,
        };
        let kill = self
            .slots
            .iter()
            .filter_map(|s| s.harakiri.as_ref())
            .filter(|h| !h.killed)
            .map(|h| h.kill_at)
            .min();
        let check = self.limits_set().then_some(self.next_check);
        respawn
            .into_iter()
            .chain(stop)
            .chain(kill)
            .chain(check)
            .chain(self.pool.retry_at())
            .chain(self.pool.conn().map(|_| self.figures_due))
            .min()
    }

    fn handle_signal(&mut self, sig: Signal) {
        match sig {
            Signal::SIGCHLD => {} // reap() runs after every wake-up
            Signal::SIGTERM | Signal::SIGINT => {
                self.begin_stop(self.config.worker_reload_mercy(), sig.as_str())
            }
            Signal::SIGQUIT => self.stop_now(sig.as_str()),
            Signal::SIGHUP => tracing::info!(
                "SIGHUP ignored by the master: reload through the pool (SIGHUP to zerg-pool)"
            ),
            _ => {}
        }
    }

    fn on_pool_readable(&mut self) {
        let (PoolLink::Attached(conn) | PoolLink::Asking(conn)) = &mut self.pool else {
            return;
        };
        if let Err(e) = conn.fill() {
            self.lose_pool(&e);
            return;
        }
        if let PoolLink::Asking(conn) = &mut self.pool {
            match conn.try_next() {
                Ok(None) => return,
                Ok(Some((answer, _))) => self.on_adoption_answer(answer),
                Err(e) => {
                    self.lose_pool(&e);
                    return;
                }
            }
        }
        loop {
            let PoolLink::Attached(conn) = &mut self.pool else {
                return;
            };
            match conn.try_next() {
                Ok(Some((Message::Stop { mercy_secs }, _))) => {
                    self.begin_stop(Duration::from_secs(mercy_secs), "asked by the pool")
                }
                Ok(Some((Message::ChainReload, _))) => self.begin_chain(),
                Ok(Some((Message::MulesGranted { ids }, _))) => self.grant_mules(&ids),
                Ok(Some((Message::ReopenLog, fds))) => self.reopen_log(fds),
                Ok(Some((other, _))) => {
                    tracing::warn!(message = ?other, "unexpected message from the pool; ignored")
                }
                Ok(None) => break,
                Err(e) => {
                    // The stream is out of step past a bad frame: nothing after it can be read.
                    self.lose_pool(&e);
                    break;
                }
            }
        }
    }

    /// The control connection broke (the pool died, or was replaced by an upgrade). Logs
    /// once and closes the socket. A starting generation gives up (no pool will ever tell it
    /// to serve); a serving one serves on and a draining one finishes its drain, both knocking
    /// on the control socket again until a pool adopts them (see `pool_link`).
    fn lose_pool(&mut self, error: &control::ControlError) {
        if self.pool.conn().is_none() {
            return;
        }
        match error {
            control::ControlError::Closed => {
                tracing::warn!("the pool closed the control connection")
            }
            e => tracing::error!(error = %e, "the control connection to the pool failed"),
        }
        match self.phase {
            Phase::Starting { .. } => {
                self.pool = PoolLink::Closed;
                self.begin_stop(Duration::ZERO, "pool connection lost while starting");
            }
            Phase::Serving => {
                tracing::warn!(
                    "no pool: this generation serves on and waits for a pool to adopt it"
                );
                self.pool = PoolLink::lost();
            }
            Phase::Stopping { .. } | Phase::Killing => {
                tracing::warn!("no pool: this generation finishes its drain");
                self.pool = PoolLink::lost();
            }
        }
    }

    /// Knocks on the control socket again, if the pool is gone and the pause is over: the
    /// hello hands back every fd this generation holds.
    fn knock_if_due(&mut self) {
        if self.pool.retry_at().is_none_or(|at| at > Instant::now()) {
            return;
        }
        let (queues, queue_fds, mule_records) = uwsgi_api::held();
        let (processes, mules_held) = self.processes();
        let adoption = Adoption {
            state: if self.stopping() {
                AdoptState::Draining
            } else {
                AdoptState::Serving
            },
            listeners: self.manifest.clone(),
            queues,
            mule_records,
            mules_held,
            processes,
        };
        let fds: Vec<_> = self
            .listeners
            .iter()
            .map(|l| l.as_fd())
            .chain(queue_fds)
            .collect();
        let hope = self
            .pool
            .ask_adoption(&self.pool_path, self.generation, adoption, &fds);
        if !hope && !self.stopping() {
            self.begin_stop(self.config.worker_reload_mercy(), "control socket gone");
        }
    }

    /// The pool's answer to an adoption hello.
    fn on_adoption_answer(&mut self, answer: Message) {
        let PoolLink::Asking(conn) = std::mem::replace(&mut self.pool, PoolLink::Closed) else {
            return;
        };
        match answer {
            Message::Adopted { generation } if generation == self.generation => {
                tracing::info!("adopted by the pool: supervised again");
                self.pool = PoolLink::Attached(conn);
                self.report_processes();
            }
            Message::Refused { reason, .. } => {
                // A pool whose config names other sockets cannot supervise this generation,
                // and its sockets would keep that pool from binding them: drain and leave.
                tracing::error!(%reason, "the pool refused to adopt this generation; draining it");
                self.begin_stop(self.config.worker_reload_mercy(), "refused by the pool");
            }
            other => {
                tracing::error!(answer = ?other, "unexpected answer to the adoption hello; knocking again");
                self.pool = PoolLink::lost();
            }
        }
    }

    /// A worker wrote to (or closed) its readiness pipe.
    fn on_worker_pipe(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(pipe) = slot.ready_pipe.take() else {
            return;
        };
        // One byte says ready; `F` and a reason say the worker cannot serve (an ASGI app's
        // lifespan startup failed), in one write of less than PIPE_BUF.
        let mut said = [0u8; 4096];
        let read = nix::unistd::read(&pipe, &mut said);
        if let Ok(n @ 1..) = read {
            if said[0] == b'F' {
                let reason = String::from_utf8_lossy(&said[1..n]).into_owned();
                self.worker_failed(i, reason);
                return;
            }
        }
        let slot = &mut self.slots[i];
        if matches!(read, Ok(1..)) {
            slot.ready = true;
            tracing::info!(
                worker = slot.id,
                pid = slot.pid.map(|p| p.as_raw()),
                "worker accepting"
            );
            if self.chain.as_ref().is_some_and(|c| c.next == i) {
                self.chain_advance(i);
            }
            if self.recycle.as_ref().is_some_and(|r| r.slot == i) {
                self.recycle_done(i);
            }
            if matches!(self.phase, Phase::Starting { .. }) {
                self.check_health(i);
            }
        }
        // Either way the pipe has served its purpose: death is seen through SIGCHLD.
        self.ready_if_proven();
    }

    /// Worker `i` of a starting generation accepts: the health check, if one is set, goes to
    /// it alone, on its private listener.
    fn check_health(&mut self, i: usize) {
        let (Some(path), Some(private)) = (&self.health, &self.slots[i].private) else {
            return;
        };
        match health::Probe::start(&private.name, path) {
            Ok(probe) => self.slots[i].probe = Some(probe),
            Err(reason) => {
                let id = self.slots[i].id;
                self.fail_starting(format!("worker {id}: {reason}"), "health check failed");
            }
        }
    }

    /// The health check of worker `i` has something to read.
    fn on_health_answer(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(probe) = &mut slot.probe else {
            return;
        };
        let (id, pid) = (slot.id, slot.pid.map(|p| p.as_raw()));
        match probe.advance() {
            health::Verdict::Waiting => {}
            health::Verdict::Passed => {
                tracing::info!(
                    worker = id,
                    pid,
                    ms = probe.sent.elapsed().as_millis() as u64,
                    "{} passed against this worker",
                    probe.what()
                );
                slot.probe = None;
                slot.answered = true;
                self.ready_if_proven();
            }
            health::Verdict::Failed(reason) => {
                slot.probe = None;
                self.fail_starting(format!("worker {id}: {reason}"), "health check failed");
            }
        }
    }

    /// A starting generation is ready once every web worker accepts and has answered the
    /// health check (if one is set).
    fn ready_if_proven(&mut self) {
        let proven = self
            .slots
            .iter()
            .filter(|s| s.kind == ProcessKind::Worker)
            .all(|s| s.ready && s.answered);
        if matches!(self.phase, Phase::Starting { .. }) && proven {
            let why = match &self.health {
                Some(_) => "every worker accepts and answered the health check: generation ready",
                None => "every worker accepts: generation ready",
            };
            self.enter(Phase::Serving, why);
            self.send(Message::Ready);
        }
    }

    /// Fails a generation that is not ready yet: the pool rolls the reload back (and
    /// `zergctl reload` prints `reason`); this generation stops at once.
    fn fail_starting(&mut self, reason: String, why: &str) {
        if !matches!(self.phase, Phase::Starting { .. }) {
            return;
        }
        tracing::error!(%reason, "this generation will not serve");
        self.send(Message::Failed { reason });
        self.begin_stop(Duration::ZERO, why);
    }

    /// What a starting generation still waits for, worker by worker.
    fn waiting_for(&self) -> String {
        let lazy = self.config.lazy_apps;
        self.slots
            .iter()
            .filter(|s| s.kind == ProcessKind::Worker && !(s.ready && s.answered))
            .map(|s| {
                let id = s.id;
                match (s.pid, &s.probe) {
                    (None, _) => format!("worker {id} is not running (it died; see the log)"),
                    (Some(pid), Some(probe)) => format!(
                        "worker {id} (pid {pid}) accepts, but its app did not answer {} \
                         (sent {:.1}s ago)",
                        probe.what(),
                        probe.sent.elapsed().as_secs_f64()
                    ),
                    (Some(pid), None) if lazy => format!(
                        "worker {id} (pid {pid}) does not accept yet (still importing the app, \
                         lazy-apps, or in its ASGI lifespan startup)"
                    ),
                    (Some(pid), None) => format!(
                        "worker {id} (pid {pid}) does not accept yet (in its ASGI lifespan \
                         startup, or starting)"
                    ),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Worker `i` says it cannot serve, and exits. Before the generation is ready, that
    /// fails the generation with the worker's reason (a reload rolls back and `zergctl`
    /// prints it); after, the worker is respawned as any that dies.
    fn worker_failed(&mut self, i: usize, reason: String) {
        let id = self.slots[i].id;
        tracing::error!(worker = id, "worker cannot serve: {reason}");
        self.fail_starting(format!("worker {id}: {reason}"), "a worker cannot serve");
    }

    /// Collects every exited child and schedules respawns.
    fn reap(&mut self) {
        let mut reaped = false;
        let stopping = self.stopping();
        loop {
            let status = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) => s,
            };
            let Some(pid) = status.pid() else { continue };
            if let Some(slot) = self.slots.iter_mut().find(|s| s.retiring == Some(pid)) {
                slot.retiring = None;
                reaped = true;
                if slot.harakiri.as_ref().is_some_and(|h| h.pid == pid) {
                    slot.harakiri = None;
                }
                let board_slot = board_slot(&self.scoreboard, slot);
                self.scoreboard.forget(board_slot, pid.as_raw() as u32);
                tracing::info!(
                    worker = slot.id,
                    pid = pid.as_raw(),
                    how = describe_exit(&status),
                    "replaced worker exited"
                );
                continue;
            }
            let Some(slot) = self.slots.iter_mut().find(|s| s.pid == Some(pid)) else {
                continue;
            };
            reaped = true;
            let board_slot = board_slot(&self.scoreboard, slot);
            if slot.retiring.is_none() {
                self.scoreboard.reset(board_slot, pid.as_raw() as u32);
            } else {
                // Its predecessor, draining, still counts into the slot.
                self.scoreboard.forget(board_slot, pid.as_raw() as u32);
            }
            let harakiri = slot.harakiri.take_if(|h| h.pid == pid).is_some();
            slot.harakiris += u32::from(harakiri);
            slot.pid = None;
            slot.ready = false;
            slot.ready_pipe = None;
            slot.stop_pipe = None;
            slot.probe = None;
            slot.answered = slot.private.is_none();
            let (kind, id) = (slot.kind, slot.id);
            let how = describe_exit(&status);
            if stopping {
                tracing::info!(kind = %kind, id, pid = pid.as_raw(), how, "{kind} exited");
                continue;
            }
            let lived = slot.started.elapsed();
            slot.crashes = if harakiri {
                // Killed on purpose, not a crash: its successor starts at once.
                0
            } else if lived < MIN_HEALTHY_LIFE {
                slot.crashes + 1
            } else {
                0
            };
            let delay = if slot.crashes == 0 {
                Duration::ZERO
            } else {
                (Duration::from_millis(100) * 2u32.saturating_pow(slot.crashes.min(10)))
                    .min(MAX_RESPAWN_DELAY)
            };
            if harakiri {
                tracing::info!(
                    kind = %kind,
                    id,
                    pid = pid.as_raw(),
                    how,
                    "{kind} killed by harakiri; its successor starts now"
                );
            } else {
                tracing::warn!(
                    kind = %kind,
                    id,
                    pid = pid.as_raw(),
                    how,
                    lived_ms = lived.as_millis() as u64,
                    respawn_in_ms = delay.as_millis() as u64,
                    "{kind} died; respawning"
                );
            }
            slot.respawn_at = Some(Instant::now() + delay);
        }
        if reaped {
            self.report_processes();
        }
    }

    /// Forks every worker whose respawn time has come.
    fn spawn_due(&mut self) {
        if self.stopping() {
            return;
        }
        let now = Instant::now();
        let mut changed = false;
        for i in 0..self.slots.len() {
            if self.slots[i].respawn_at.is_some_and(|at| at <= now) {
                self.slots[i].respawn_at = None;
                match self.spawn_worker(i) {
                    Ok(()) => changed = true,
                    Err(e) => {
                        let (kind, id) = (self.slots[i].kind, self.slots[i].id);
                        tracing::error!(kind = %kind, id, error = %e, "fork of a {kind} failed; retrying");
                        self.slots[i].respawn_at = Some(now + Duration::from_secs(1));
                    }
                }
            }
        }
        if changed {
            self.report_processes();
        }
    }

    fn spawn_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (log_channel, child_log) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Datagram,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )?;
        let mut close: Vec<RawFd> = self.signals.raw_fds().to_vec();
        close.extend(self.pool.conn().map(|c| c.stream().as_raw_fd()));
        close.push(ready_read.as_raw_fd());
        close.push(log_channel.as_raw_fd());
        close.extend(
            self.slots
                .iter()
                .flat_map(|s| {
                    s.ready_pipe
                        .iter()
                        .chain(&s.stop_pipe)
                        .chain(&s.log_channel)
                })
                .map(|p| p.as_raw_fd()),
        );
        // Each private health listener is its own worker's only.
        close.extend(
            self.slots
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .filter_map(|(_, s)| s.private.as_ref())
                .map(|p| p.fd.as_raw_fd()),
        );
        close.extend(
            self.slots
                .iter()
                .filter_map(|s| s.probe.as_ref())
                .map(|p| p.fd().as_raw_fd()),
        );
        let spec = worker::Spec {
            id: self.slots[i].id,
            generation: self.generation,
            config: &self.config,
            listeners: &self.listeners,
            manifest: &self.manifest,
            certs: &self.certs,
            app: self.app.as_ref(),
            private: self.slots[i].private.as_ref(),
            ready: ready_write,
            scoreboard: self.scoreboard,
        };
        let (kind, id) = (self.slots[i].kind, self.slots[i].id);
        let (pid, stop_pipe) = match kind {
            ProcessKind::Worker => {
                // The child's end of the log channel is moved into the child's code: the
                // parent closes its copy as it drops the closure after the fork.
                let run = move || {
                    crate::signals::set_log_channel(child_log);
                    worker::run(spec)
                };
                (process::fork_child(&close, run)?, None)
            }
            ProcessKind::Mule => {
                let entry = self.config.mule.0[id as usize - 1].clone();
                let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK;
                let (read, write) = nix::unistd::pipe2(flags)?;
                let stop = mule::StopPipe {
                    read,
                    write: write.try_clone()?,
                };
                let board = self.scoreboard;
                let run = move || {
                    crate::signals::set_log_channel(child_log);
                    mule::run(id, &entry, stop, board)
                };
                let pid = process::fork_child(&close, run)?;
                (pid, Some(write))
            }
        };
        let baseline = self
            .scoreboard
            .requests(board_slot(&self.scoreboard, &self.slots[i]));
        let slot = &mut self.slots[i];
        if slot.spawned_unix != 0 {
            slot.respawns += 1;
        }
        slot.spawned_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        slot.pid = Some(pid);
        slot.baseline = baseline;
        // The child's end went with it (a retiring predecessor keeps the log it has).
        slot.log_channel = Some(log_channel);
        slot.started = Instant::now();
        slot.ready = false;
        slot.ready_pipe = Some(ready_read);
        slot.stop_pipe = stop_pipe;
        tracing::info!(kind = %kind, id, pid = pid.as_raw(), "{kind} forked");
        Ok(())
    }

    /// A chain reload: each worker in turn is replaced by a fresh fork; the old one is stopped
    /// only once the new one accepts, so no moment has fewer accepting workers than `processes`.
    fn begin_chain(&mut self) {
        let stopping = self.stopping();
        if let Some(recycle) = self.recycle.as_mut().filter(|_| !stopping) {
            tracing::info!(
                "chain reload asked while a worker is replaced for a limit: it starts next"
            );
            recycle.chain_asked = true;
            return;
        }
        if self.stopping() || self.chain.is_some() {
            let message =
                "refused: this generation is stopping or already chain-reloading".to_owned();
            self.send(Message::ChainReloaded(ReloadOutcome {
                ok: false,
                generation: self.generation,
                message,
                millis: 0,
            }));
            return;
        }
        tracing::info!(
            workers = self.slots.len(),
            "chain reload: replacing workers one at a time"
        );
        self.chain = Some(Chain {
            next: 0,
            started: Instant::now(),
        });
        self.chain_start(0);
    }

    /// Forks the successor of slot `i`, keeping the current process running until it accepts.
    fn chain_start(&mut self, i: usize) {
        // Web workers come first in `slots`; mules are not part of a chain reload.
        if i == self.config.processes as usize {
            let Some(chain) = self.chain.take() else {
                return;
            };
            let millis = chain.started.elapsed().as_millis() as u64;
            tracing::info!(ms = millis, "chain reload done: every worker replaced");
            let message = format!(
                "{} workers of generation {} replaced one at a time",
                self.config.processes, self.generation
            );
            self.send(Message::ChainReloaded(ReloadOutcome {
                ok: true,
                generation: self.generation,
                message,
                millis,
            }));
            return;
        }
        let slot = &mut self.slots[i];
        slot.start_successor();
        tracing::info!(
            worker = slot.id,
            old_pid = slot.retiring.map(|p| p.as_raw()),
            "chain reload: starting a successor"
        );
    }

    /// Slot `i`'s successor accepts: stop its predecessor, go on with the next slot.
    fn chain_advance(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if let Some(old) = slot.retiring {
            tracing::info!(
                worker = slot.id,
                old_pid = old.as_raw(),
                "chain reload: successor accepts; stopping the old worker"
            );
            signal(old, Signal::SIGTERM, "replaced worker");
        }
        if let Some(chain) = &mut self.chain {
            chain.next = i + 1;
        }
        self.chain_start(i + 1);
    }

    /// The pool reopened `logto` (`fds`: the new file): this master, then each of its
    /// processes, write there from now on. A process gets the file on its channel and is told
    /// with [`crate::signals::REOPEN_LOG`]; a draining predecessor in a chain reload keeps the
    /// old file for the little it has left to say.
    fn reopen_log(&mut self, fds: Vec<OwnedFd>) {
        let Some(log) = fds.into_iter().next() else {
            tracing::warn!("the pool reopened the log but sent no file; ignored");
            return;
        };
        if let Err(e) = nix::unistd::dup2_stdout(&log).and_then(|()| nix::unistd::dup2_stderr(&log))
        {
            tracing::error!(error = %e, "cannot move to the reopened log");
            return;
        }
        let mut told = 0;
        for slot in &self.slots {
            let (Some(pid), Some(channel)) = (slot.pid, &slot.log_channel) else {
                continue;
            };
            match zerg::fdpass::send_with_fds(channel.as_fd(), b"l", &[log.as_fd()]) {
                Ok(_) => {
                    signal(pid, crate::signals::REOPEN_LOG, "log reopening");
                    told += 1;
                }
                Err(e) => {
                    tracing::warn!(pid = pid.as_raw(), error = %e, "cannot hand the reopened log")
                }
            }
        }
        tracing::info!(processes = told, "log reopened");
    }

    /// Whether any limit is set, so the master wakes to check them.
    fn limits_set(&self) -> bool {
        let c = &self.config;
        c.harakiri().is_some()
            || (c.mule_harakiri().is_some() && !c.mule.0.is_empty())
            || c.max_requests > 0
            || c.reload_on_rss > 0
            || c.max_worker_lifetime > 0
    }

    /// Every [`LIMITS_CHECK`]: kills what `harakiri` condemned past its grace, condemns what
    /// is stuck, and starts replacing a worker past a limit (one at a time).
    fn check_limits(&mut self) {
        let now = Instant::now();
        if self.recycle.as_ref().is_some_and(|r| r.deadline <= now) {
            self.recycle_give_up();
        }
        for slot in &mut self.slots {
            if let Some(h) = slot
                .harakiri
                .as_mut()
                .filter(|h| !h.killed && h.kill_at <= now)
            {
                h.killed = true;
                signal(h.pid, Signal::SIGKILL, "harakiri");
            }
        }
        if now < self.next_check || !self.limits_set() {
            return;
        }
        self.next_check = now + LIMITS_CHECK;
        if matches!(self.phase, Phase::Killing) {
            return;
        }
        self.check_harakiri();
        if matches!(self.phase, Phase::Serving) && self.chain.is_none() && self.recycle.is_none() {
            if let Some((i, why)) =
                (0..self.slots.len()).find_map(|i| self.past_limit(i).map(|w| (i, w)))
            {
                self.recycle_start(i, &why);
            }
        }
    }

    /// Condemns each process whose oldest request (a mule: message in hand) has run past
    /// `harakiri` (`mule-harakiri`): logs the request, has Python write the process's stacks
    /// to the log, and kills it [`STACKS_GRACE`] later. The slot's successor starts as soon
    /// as it is reaped; the rest of the generation serves on meanwhile.
    fn check_harakiri(&mut self) {
        let verbose = self.config.harakiri_verbose;
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let limit = match slot.kind {
                ProcessKind::Worker => self.config.harakiri(),
                ProcessKind::Mule => self.config.mule_harakiri(),
            };
            let Some(limit) = limit else { continue };
            if slot.harakiri.is_some() {
                continue;
            }
            let ours = |pid: u32| {
                slot.pid
                    .into_iter()
                    .chain(slot.retiring)
                    .find(|p| p.as_raw() as u32 == pid)
            };
            let stuck = self
                .scoreboard
                .running(board_slot(&self.scoreboard, slot))
                .into_iter()
                .filter(|r| r.running_for >= limit)
                .find_map(|r| ours(r.pid).map(|pid| (pid, r)));
            let Some((pid, stuck)) = stuck else { continue };
            let (kind, id) = (slot.kind, slot.id);
            let option = match kind {
                ProcessKind::Worker => "harakiri",
                ProcessKind::Mule => "mule-harakiri",
            };
            tracing::error!(
                kind = %kind,
                id,
                pid = pid.as_raw(),
                generation = self.generation,
                request = %stuck.what,
                seconds = stuck.running_for.as_secs(),
                limit_secs = limit.as_secs(),
                "HARAKIRI: {kind} {id} (pid {pid}) has been on `{}` for {}s, past `{option}` \
                 ({}s): its Python stacks follow; then it is killed and replaced",
                stuck.what,
                stuck.running_for.as_secs(),
                limit.as_secs(),
            );
            if verbose {
                let proc_file = |name: &str| {
                    std::fs::read_to_string(format!("/proc/{pid}/{name}"))
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_else(|e| format!("unreadable: {e}"))
                };
                tracing::error!(
                    pid = pid.as_raw(),
                    wchan = proc_file("wchan"),
                    syscall = proc_file("syscall"),
                    "HARAKIRI: what the stuck process waits on in the kernel"
                );
            }
            signal(pid, crate::signals::DUMP_STACKS, "harakiri");
            self.slots[i].harakiri = Some(Harakiri {
                pid,
                kill_at: Instant::now() + STACKS_GRACE,
                killed: false,
            });
        }
    }

    /// Why web worker `i` must be replaced, if it is past `max-requests`, `reload-on-rss` or
    /// `max-worker-lifetime`: the limit, its value and the worker's.
    fn past_limit(&self, i: usize) -> Option<String> {
        let slot = &self.slots[i];
        let pid = slot.pid?;
        if slot.kind != ProcessKind::Worker || !slot.ready || slot.retiring.is_some() {
            return None;
        }
        let c = &self.config;
        if let Some(limit) = c.max_requests_of(slot.id) {
            let answered = self
                .scoreboard
                .requests(board_slot(&self.scoreboard, slot))
                .saturating_sub(slot.baseline);
            if answered >= limit {
                return Some(format!("max-requests: {limit}; it answered {answered}"));
            }
        }
        if let Some(limit) = c.reload_on_rss_bytes() {
            match zerg::rss::of(pid.as_raw() as u32) {
                Ok(rss) if rss >= limit => {
                    return Some(format!(
                        "reload-on-rss: {} MiB; its RSS is {} MiB",
                        c.reload_on_rss,
                        rss >> 20
                    ))
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(pid = pid.as_raw(), error = %e, "cannot read the RSS"),
            }
        }
        if let Some(limit) = c.max_worker_lifetime() {
            let lived = slot.started.elapsed();
            if lived >= limit {
                return Some(format!(
                    "max-worker-lifetime: {}s; it has lived {}s",
                    limit.as_secs(),
                    lived.as_secs()
                ));
            }
        }
        None
    }

    /// Replaces web worker `i`, past a limit, as one step of a chain reload: its successor is
    /// forked now; the old process serves until the successor accepts, then drains.
    fn recycle_start(&mut self, i: usize, why: &str) {
        let slot = &mut self.slots[i];
        let (started, baseline) = (slot.started, slot.baseline);
        slot.start_successor();
        tracing::info!(
            worker = slot.id,
            old_pid = slot.retiring.map(|p| p.as_raw()),
            "worker past its limit ({why}): starting its successor"
        );
        self.recycle = Some(Recycle {
            slot: i,
            chain_asked: false,
            deadline: Instant::now() + self.config.ready_timeout(),
            started,
            baseline,
        });
    }

    /// The successor of a worker past its limit did not accept within `ready-timeout`: it is
    /// killed and the old worker, which never stopped serving, keeps its place (the limit is
    /// tried again at a later check). A chain reload asked meanwhile starts now.
    fn recycle_give_up(&mut self) {
        let Some(recycle) = self.recycle.take() else {
            return;
        };
        let slot = &mut self.slots[recycle.slot];
        if let Some(old) = slot.retiring.take() {
            let successor = slot.pid.replace(old);
            tracing::warn!(
                worker = slot.id,
                pid = old.as_raw(),
                successor = successor.map(|p| p.as_raw()),
                ready_timeout_secs = self.config.ready_timeout,
                "the successor of a worker past its limit did not accept within \
                 ready-timeout: killing it, the old worker serves on"
            );
            if let Some(successor) = successor {
                signal(successor, Signal::SIGKILL, "successor never ready");
            }
            slot.ready = true;
            slot.ready_pipe = None;
            slot.respawn_at = None;
            slot.started = recycle.started;
            slot.baseline = recycle.baseline;
        }
        if recycle.chain_asked {
            self.begin_chain();
        }
    }

    /// The successor of the worker replaced for a limit accepts: the old one stops.
    fn recycle_done(&mut self, i: usize) {
        let Some(recycle) = self.recycle.take() else {
            return;
        };
        let slot = &self.slots[i];
        if let Some(old) = slot.retiring {
            tracing::info!(
                worker = slot.id,
                old_pid = old.as_raw(),
                pid = slot.pid.map(|p| p.as_raw()),
                "successor accepts; stopping the worker past its limit"
            );
            signal(old, Signal::SIGTERM, "replaced worker");
        }
        if recycle.chain_asked {
            self.begin_chain();
        }
    }

    /// The pool hands over mule positions: their mules may start now.
    fn grant_mules(&mut self, ids: &[u32]) {
        tracing::info!(mules = ?ids, "mule positions granted by the pool");
        let stopping = self.stopping();
        for slot in &mut self.slots {
            if slot.kind == ProcessKind::Mule && ids.contains(&slot.id) && !slot.granted {
                slot.granted = true;
                if !stopping {
                    slot.respawn_at = Some(Instant::now());
                }
            }
        }
        self.report_processes();
    }

    /// The one place the phase changes: each move is logged once, with why.
    fn enter(&mut self, next: Phase, why: &str) {
        match next {
            Phase::Starting { .. } => {}
            Phase::Serving => tracing::info!(workers = self.config.processes, "{why}"),
            Phase::Stopping { deadline, .. } => tracing::info!(
                reason = why,
                mercy_secs = deadline.saturating_duration_since(Instant::now()).as_secs(),
                "stopping workers gracefully"
            ),
            Phase::Killing => tracing::warn!(reason = why, "killing workers"),
        }
        self.phase = next;
    }

    /// Whether this generation is on its way out (draining or killing).
    fn stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. } | Phase::Killing)
    }

    /// Stop accepting everywhere; workers finish in-flight requests within `mercy`.
    fn begin_stop(&mut self, mercy: Duration, why: &str) {
        if self.stopping() {
            return;
        }
        let now = Instant::now();
        let stopping = Phase::Stopping {
            deadline: now + mercy,
            ask_mules_again: now + MULE_STOP_AGAIN,
        };
        self.enter(stopping, why);
        if self
            .recycle
            .as_mut()
            .is_some_and(|r| std::mem::take(&mut r.chain_asked))
        {
            // Asked during a limit's replacement: it gets its refusal now, not never.
            self.begin_chain();
        }
        for slot in &mut self.slots {
            slot.respawn_at = None;
        }
        self.ask_to_stop();
        self.report_processes();
    }

    fn stop_now(&mut self, why: &str) {
        self.enter(Phase::Killing, why);
        self.signal_workers(Signal::SIGKILL);
    }

    fn check_deadline(&mut self) {
        match self.phase {
            Phase::Starting { deadline } if Instant::now() >= deadline => {
                let reason = format!(
                    "not ready within ready-timeout ({}s): {}",
                    self.config.ready_timeout,
                    self.waiting_for()
                );
                self.fail_starting(reason, "ready-timeout");
            }
            Phase::Stopping { deadline, .. } if Instant::now() >= deadline => {
                self.stop_now("mercy expired")
            }
            Phase::Stopping {
                deadline,
                ask_mules_again,
            } if Instant::now() >= ask_mules_again => {
                self.ask_mules_again();
                // The same phase, a later nudge: no move to log.
                self.phase = Phase::Stopping {
                    deadline,
                    ask_mules_again: Instant::now() + MULE_STOP_AGAIN,
                };
            }
            _ => {}
        }
    }

    /// Asks every process to stop gracefully, as uWSGI does: SIGTERM to a web worker; to a
    /// mule, a byte on its stop pipe (which its `farm_get_msg` sees whatever its Python code
    /// does with signals), then SIGHUP (which Galaxy's mule waits for). The byte goes first, so
    /// that what the mule's handler sends is already kept for itself.
    fn ask_to_stop(&self) {
        for slot in &self.slots {
            if let Some(pipe) = &slot.stop_pipe {
                let _ = nix::unistd::write(pipe, b"s");
            }
            let sig = match slot.kind {
                ProcessKind::Worker => Signal::SIGTERM,
                ProcessKind::Mule => Signal::SIGHUP,
            };
            for pid in slot.pid.into_iter().chain(slot.retiring) {
                signal(pid, sig, "process");
            }
        }
    }

    /// SIGHUP again to each mule that still runs (see [`MULE_STOP_AGAIN`]). A mule stopping
    /// its own way gets one more; Galaxy's handler only sets the flag it already set.
    fn ask_mules_again(&self) {
        for slot in self.slots.iter().filter(|s| s.kind == ProcessKind::Mule) {
            if let Some(pid) = slot.pid {
                tracing::debug!(
                    mule = slot.id,
                    pid = pid.as_raw(),
                    "mule still running: SIGHUP again"
                );
                signal(pid, Signal::SIGHUP, "mule");
            }
        }
    }

    fn signal_workers(&self, sig: Signal) {
        for pid in self
            .slots
            .iter()
            .flat_map(|s| s.pid.into_iter().chain(s.retiring))
        {
            signal(pid, sig, "worker");
        }
    }

    fn report_processes(&mut self) {
        let (processes, mules_held) = self.processes();
        self.send(Message::Processes {
            processes,
            mules_held,
        });
    }

    /// The processes of this generation, and the mule positions it holds.
    fn processes(&self) -> (Vec<ProcessInfo>, Vec<u32>) {
        let processes = self
            .slots
            .iter()
            .flat_map(|s| {
                s.pid.into_iter().chain(s.retiring).map(|pid| ProcessInfo {
                    kind: s.kind,
                    id: s.id,
                    pid: pid.as_raw() as u32,
                    ..ProcessInfo::default()
                })
            })
            .collect();
        // While stopping, a mule position is given back once its mule has exited.
        let stopping = self.stopping();
        let mules_held = self
            .slots
            .iter()
            .filter(|s| s.kind == ProcessKind::Mule && s.granted && !(stopping && s.pid.is_none()))
            .map(|s| s.id)
            .collect();
        (processes, mules_held)
    }

    /// Tells the pool `msg`; a write that fails means the pool is gone.
    fn send(&mut self, msg: Message) {
        let PoolLink::Attached(conn) = &mut self.pool else {
            return;
        };
        if let Err(e) = conn.send(&msg, &[]) {
            self.lose_pool(&e);
        }
    }
}

/// The threads an app starts while it is built (an event loop, a job manager, heartbeats)
/// stay in the master: a fork copies only the thread that forks. Requests that wait on them
/// hang, silently; this says so once, as the generation starts.
fn warn_of_threads() {
    let threads = python::other_threads();
    if !threads.is_empty() {
        tracing::warn!(
            threads = %threads.join(", "),
            "the app started threads while it was imported; the workers and mules forked \
             from this master will not have them: set `lazy-apps: true` to import the app in \
             each worker"
        );
    }
}

/// When a starting generation gives up on itself: a little before the pool would, so that the
/// operator reads what it waited for rather than only that the time was up.
fn ready_deadline(born: Instant, ready_timeout: Duration) -> Instant {
    born + ready_timeout - (ready_timeout / 4).min(READY_MARGIN)
}

/// Sends `sig` to the child `pid`. Forked pids are positive, but the check is cheap next to
/// what `kill(0)` or `kill(-1)` would do.
fn signal(pid: Pid, sig: Signal, what: &str) {
    if let Some(pid) = control::checked_pid(pid.as_raw(), what) {
        let _ = kill(pid, sig);
    }
}

/// Where `slot`'s process counts on the scoreboard.
fn board_slot(board: &Scoreboard, slot: &Slot) -> usize {
    match slot.kind {
        ProcessKind::Worker => slot.id as usize - 1,
        ProcessKind::Mule => board.mule_slot(slot.id),
    }
}

fn describe_exit(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit code {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {}", sig.as_str()),
        other => format!("{other:?}"),
    }
}

/// Matches the queue names of the welcome with their fds (send end, receive end each).
fn pair_queues(names: Vec<String>, fds: Vec<OwnedFd>) -> Vec<uwsgi_api::Queue> {
    let mut fds = fds.into_iter();
    names
        .into_iter()
        .filter_map(|name| {
            let send = fds.next()?;
            let recv = fds.next()?;
            Some(uwsgi_api::Queue { name, send, recv })
        })
        .collect()
}

/// The config's top-level options as uWSGI's `opt` sees them: every value as a string, a list
/// giving one pair per item. A uWSGI file gives what uWSGI would: the `yaml` (or `ini`) option
/// with the file's path first (Galaxy's processes find their config that way), then every entry
/// of its section as written, placeholders expanded.
fn raw_options(config: &Config, path: &std::path::Path) -> Vec<(String, String)> {
    if let Some(source) = &config.uwsgi {
        return source.opt();
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Ok(serde_yaml::Value::Mapping(map)) = serde_yaml::from_str::<serde_yaml::Value>(&text)
    else {
        return Vec::new();
    };
    let scalar = |v: &serde_yaml::Value| match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    for (k, v) in &map {
        let Some(key) = k.as_str() else { continue };
        match v {
            serde_yaml::Value::Sequence(items) => {
                out.extend(items.iter().filter_map(scalar).map(|s| (key.to_owned(), s)))
            }
            other => out.extend(scalar(other).map(|s| (key.to_owned(), s))),
        }
    }
    out
}
