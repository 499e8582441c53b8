//! One generation of zerglings as the pool sees it, and its life as a state machine.
//!
//! ```text
//! Starting --ready--> Serving --stop--> Draining --exit--> Gone
//!     \________________________\__________exit/failure_____^
//! ```
//!
//! A generation adopted from a pool that died (or was upgraded) starts its life here in the
//! state its master reports, serving or draining.
//!
//! Every transition goes through [`Generation::transition`], which logs one line with the
//! generation number, so a person can follow a generation's life in the log alone.

use std::fmt;
use std::time::Instant;

use tokio::sync::mpsc;
use zerg::control::{GenerationStatus, Message, ProcessInfo};

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Spawned or attached; importing the app and forking workers.
    Starting,
    /// Every worker accepts; this generation takes traffic.
    Serving,
    /// Told to stop: finishing in-flight requests, accepting nothing new.
    Draining,
    /// Its master exited and its connection closed.
    Gone,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            State::Starting => "starting",
            State::Serving => "serving",
            State::Draining => "draining",
            State::Gone => "gone",
        })
    }
}

/// Identifies one control connection inside the pool.
pub type ConnId = u64;

/// What the pool knows of one generation.
#[derive(Debug)]
pub struct Generation {
    pub number: u64,
    state: State,
    pub started: Instant,
    /// The master's pid, from its hello.
    pub master_pid: Option<u32>,
    /// The process the pool spawned for it (may differ from the master if the command is a
    /// wrapper); `None` once reaped or for a zergling started by someone else.
    pub child_pid: Option<u32>,
    /// Workers and mules as the master last reported them.
    pub processes: Vec<ProcessInfo>,
    /// Mule positions the master says it holds.
    pub mules_held: Vec<u32>,
    /// The live control connection, if any.
    pub conn: Option<(ConnId, mpsc::UnboundedSender<Message>)>,
    /// Past this instant a generation still starting is killed.
    pub ready_deadline: Instant,
    /// Why it failed to start, as its master reported.
    pub failure: Option<String>,
    /// Started by another pool (that died, or was upgraded) and adopted by this one: no child
    /// of this pool, so its master's exit shows only as its connection closing.
    pub adopted: bool,
}

impl Generation {
    pub fn new(
        number: u64,
        child_pid: Option<u32>,
        ready_timeout: std::time::Duration,
    ) -> Generation {
        Generation {
            number,
            state: State::Starting,
            started: Instant::now(),
            master_pid: None,
            child_pid,
            processes: Vec::new(),
            mules_held: Vec::new(),
            conn: None,
            ready_deadline: Instant::now() + ready_timeout,
            failure: None,
            adopted: false,
        }
    }

    /// A generation that outlived its pool and asked this one to adopt it.
    pub fn adopted(
        number: u64,
        master_pid: u32,
        serving: bool,
        processes: Vec<ProcessInfo>,
        mules_held: Vec<u32>,
    ) -> Generation {
        let state = if serving {
            State::Serving
        } else {
            State::Draining
        };
        tracing::info!(
            generation = number,
            master_pid,
            state = %state,
            "generation adopted: supervised by this pool from now on"
        );
        Generation {
            number,
            state,
            started: Instant::now(),
            master_pid: Some(master_pid),
            child_pid: None,
            processes,
            mules_held,
            conn: None,
            ready_deadline: Instant::now(),
            failure: None,
            adopted: true,
        }
    }

    /// SIGKILLs every process of this generation.
    pub fn kill(&self) {
        for pid in self.pids() {
            crate::pool::signal_pid(pid, nix::sys::signal::Signal::SIGKILL, "generation process");
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Moves to `to`, logging the step. Moving to the same state is a no-op.
    pub fn transition(&mut self, to: State, why: &str) {
        if self.state == to {
            return;
        }
        tracing::info!(
            generation = self.number,
            from = %self.state,
            to = %to,
            master_pid = self.master_pid,
            "generation {}: {why}",
            to
        );
        self.state = to;
    }

    /// Sends a message to the master, if it is connected.
    pub fn send(&self, msg: Message) -> bool {
        match &self.conn {
            Some((_, tx)) => tx.send(msg).is_ok(),
            None => false,
        }
    }

    /// True once neither a connection nor a spawned process remains.
    pub fn is_finished(&self) -> bool {
        self.conn.is_none() && self.child_pid.is_none()
    }

    /// Every pid that belongs to this generation, for a forced stop.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.processes.iter().map(|p| p.pid).collect();
        pids.extend(self.master_pid);
        pids.extend(self.child_pid);
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    pub fn status(&self) -> GenerationStatus {
        GenerationStatus {
            generation: self.number,
            state: self.state.to_string(),
            master_pid: self.master_pid,
            age_secs: self.started.elapsed().as_secs(),
            processes: self.processes.clone(),
        }
    }
}
