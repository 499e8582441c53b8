//! What the pool tells about the server: uWSGI's stats JSON (`stats`, for `uwsgitop`),
//! Prometheus metrics (`metrics`), and the per-worker figures of `zergctl status`.
//!
//! The pool cannot read a generation's scoreboard (shared memory between that master and its
//! workers), and must never wait on a worker. So each master reads its own board every
//! [`zerg::control::FIGURES_INTERVAL`] and sends the pool a copy ([`zerg::control::Figures`]);
//! the pool keeps the last one per generation, adds their growth to running totals
//! ([`ledger::Ledger`]), and answers every scrape from what it holds. A figure is therefore at
//! most about one interval old; a scrape costs no worker anything.
//!
//! The endpoints are the pool's, bound once at start like the listeners: a reload re-reads the
//! config but does not move them.

pub mod ledger;
pub mod metrics;
pub mod serve;
pub mod uwsgi_stats;

use std::os::fd::OwnedFd;
use std::time::Duration;

use zerg::control::{Figures, ProcessInfo, ReloadOutcome, WorkerFigures};

use crate::generation::State;
use crate::listeners::Listener;
use crate::queues::Queue;

/// What a scrape renders from: the pool's state at one instant.
pub struct View<'a> {
    pub pool_pid: u32,
    pub generations: Vec<GenerationView<'a>>,
    pub listeners: &'a [Listener],
    pub queues: &'a [Queue],
    /// The mule records, by position.
    pub records: &'a [OwnedFd],
    pub last_reload: Option<&'a ReloadOutcome>,
    pub ledger: &'a ledger::Ledger,
}

/// One live generation, as a scrape sees it.
pub struct GenerationView<'a> {
    pub number: u64,
    pub state: State,
    pub age: Duration,
    pub master_pid: Option<u32>,
    /// Its processes as `zergctl status` shows them (mules with their farms and messages).
    pub processes: Vec<ProcessInfo>,
    /// Its master's last report, if one came.
    pub figures: Option<&'a Figures>,
}

impl GenerationView<'_> {
    pub fn worker_figures(&self) -> impl Iterator<Item = &WorkerFigures> {
        self.figures.into_iter().flat_map(|f| &f.workers)
    }
}

/// Adds what `figures` says of `p` (a worker's requests, in flight, busy time; any process's
/// memory) to its status line.
pub fn describe(p: &mut ProcessInfo, figures: Option<&Figures>) {
    let Some(figures) = figures else {
        return;
    };
    let pid = Some(p.pid);
    match p.kind {
        zerg::control::ProcessKind::Worker => {
            // During a chain reload two processes share a slot: its counters are the slot's,
            // shown with the process that holds it now.
            if let Some(w) = figures
                .workers
                .iter()
                .find(|w| w.id == p.id && w.pid == pid)
            {
                p.requests = Some(w.requests);
                p.in_flight = Some(w.in_flight);
                p.busy_ms = w.busy_ms;
                p.rss_bytes = Some(w.rss_bytes);
            }
        }
        zerg::control::ProcessKind::Mule => {
            if let Some(m) = figures.mules.iter().find(|m| m.id == p.id && m.pid == pid) {
                p.rss_bytes = Some(m.rss_bytes);
            }
        }
    }
}
