//! The shared scoreboard of one generation: a record of counters per web worker and per mule,
//! and the requests (or mule messages) each is busy with, in one shared mapping that every
//! process of the generation writes and the master reads.
//!
//! Why: the master replaces a worker stuck in one request (`harakiri`), or past its
//! `max-requests`; the stats and metrics read the counters; and the workers spread keep-alive
//! clients evenly. The workers accept on one shared socket, and whoever wakes first takes the
//! whole burst: a worker holding clearly more connections than its least loaded sibling
//! leaves the next accept to it, for a moment ([`Scoreboard::take_turn`]); if the sibling does
//! not take it (busy in a long call, or dead), the worker accepts anyway.
//!
//! Invariants: the master maps the board (anonymous, `MAP_SHARED`) once, before it forks any
//! worker, and never unmaps it, so every process of the generation sees the same counters at
//! the same address for its whole life. Everything in it is an atomic, touched only with
//! atomic operations (relaxed on the request path). Slot `i < workers` belongs to web worker
//! `i + 1`, slot `workers + k - 1` to mule `k`; during a chain reload the old and new process
//! of a slot both count into it, which keeps the sums right. A running request occupies one
//! [`Cell`] of its slot, owned by the process that claimed it (its pid is in the cell); the
//! text of the request is written under a sequence lock, so a reader never takes half of one
//! request's text for another's.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

/// A worker may hold this many connections more than the least loaded one before it defers.
const SLACK: u32 = 1;
/// How long a worker leaves a waiting connection to a less loaded sibling, in steps.
const DEFER_STEP: Duration = Duration::from_millis(1);
const DEFER_STEPS: u32 = 3;

/// Upper bounds, in seconds, of the request-duration histogram's buckets (Prometheus' default
/// buckets, with 30 s added for the slow requests of a big app). A reader adds the counts up
/// for cumulative buckets; a last, implicit bucket counts what is slower than the last bound.
pub const DURATION_BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets in a record: one per bound, and one past the last.
pub const DURATION_BUCKETS: usize = DURATION_BOUNDS.len() + 1;

/// The most bytes of a running request's description (method and target) a cell keeps.
pub const TEXT_MAX: usize = 120;
const TEXT_WORDS: usize = TEXT_MAX / 8;

/// Cells per slot at least: an ASGI worker runs many requests on one thread.
const MIN_CELLS: usize = 16;

/// Cells a slot needs for a worker with `threads` WSGI threads: one per thread of its
/// process and of its successor during a chain reload, and at least [`MIN_CELLS`].
pub fn cells_per_slot(threads: u32) -> usize {
    (2 * threads as usize).max(MIN_CELLS)
}

/// The counters of one slot. Cache-line aligned: neighbouring workers count into neighbouring
/// records, and sharing a line would make each one's writes slow the other's.
#[repr(C, align(64))]
struct Record {
    /// Open connections.
    open: AtomicU32,
    /// Requests begun and not yet answered.
    in_flight: AtomicU32,
    /// Requests answered (a mule: messages finished).
    requests: AtomicU64,
    /// Requests answered by status class, 1xx to 5xx.
    classes: [AtomicU64; 5],
    /// Requests answered per duration bucket (see [`DURATION_BOUNDS`]).
    durations: [AtomicU64; DURATION_BUCKETS],
    /// Sum of the durations, in microseconds.
    duration_sum_us: AtomicU64,
    /// Bytes written to clients.
    bytes_sent: AtomicU64,
}

/// One running request (or a mule's message in hand). Cache-line aligned, as [`Record`].
#[repr(C, align(64))]
struct Cell {
    /// The process that claimed the cell; 0 when free.
    pid: AtomicU32,
    /// Sequence lock over `started_us`, `len` and `text`: odd while they are written.
    seq: AtomicU32,
    /// When the request began ([`now_us`]); 0 when none runs.
    started_us: AtomicU64,
    len: AtomicU64,
    text: [AtomicU64; TEXT_WORDS],
}

// The cells follow the records in one mapping: they must agree on alignment.
const _: () = assert!(std::mem::align_of::<Record>() == std::mem::align_of::<Cell>());

/// The board of one generation: [`Record`]s for every slot, then each slot's [`Cell`]s.
#[derive(Clone, Copy)]
pub struct Scoreboard {
    records: NonNull<Record>,
    cells: NonNull<Cell>,
    /// Web worker slots (the first ones).
    workers: usize,
    /// Every slot: web workers, then mules.
    slots: usize,
    /// Cells per slot: the requests of one slot that can be followed at once.
    per_slot: usize,
}

// SAFETY: the pointers are to a shared mapping that is never unmapped (module invariants),
// and it is only used through atomics, which are safe to share between threads.
unsafe impl Send for Scoreboard {}
// SAFETY: as above.
unsafe impl Sync for Scoreboard {}

/// What a reader sees of one slot at one moment (each counter read on its own, relaxed: the
/// counters of a busy slot may be a request apart from each other).
// Read by the stats and metrics (the next step of #22); until then only the tests read it.
#[allow(dead_code)]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerSnapshot {
    /// Open connections.
    pub open: u32,
    /// Requests begun and not answered yet.
    pub in_flight: u32,
    /// Requests answered, over the slot's life (every process that held it).
    pub requests: u64,
    /// Requests answered with a 1xx, 2xx, 3xx, 4xx, 5xx status.
    pub status_classes: [u64; 5],
    /// Requests answered per duration bucket: `duration_buckets[i]` counts the requests that
    /// took more than `DURATION_BOUNDS[i - 1]` and at most `DURATION_BOUNDS[i]` seconds; the
    /// last, those slower than every bound. Not cumulative.
    pub duration_buckets: [u64; DURATION_BUCKETS],
    /// The durations summed, in microseconds.
    pub duration_sum_us: u64,
    /// Bytes written to clients.
    pub bytes_sent: u64,
    /// How long the oldest request running in the slot has run; `None` when idle.
    pub busy_for: Option<Duration>,
    /// The oldest request running in the slot.
    pub oldest: Option<Running>,
}

/// A request running in a slot (or a mule's message in hand).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// The process answering it.
    pub pid: u32,
    /// Method and target (`GET /path?query`), or what a mule holds; cut at [`TEXT_MAX`] bytes.
    pub what: String,
    pub running_for: Duration,
}

impl Scoreboard {
    /// Maps a board for `workers` web workers and `mules` mules, able to follow
    /// `cells_per_slot` running requests per slot at once. Call in the master before the first
    /// fork.
    pub fn new(workers: usize, mules: usize, cells_per_slot: usize) -> nix::Result<Scoreboard> {
        let workers = workers.max(1);
        let slots = workers + mules;
        let per_slot = cells_per_slot.max(1);
        let records_bytes = slots * std::mem::size_of::<Record>();
        let bytes = records_bytes + slots * per_slot * std::mem::size_of::<Cell>();
        let bytes = NonZeroUsize::new(bytes).expect("a board has at least one slot");
        // SAFETY: a fresh anonymous mapping at an address the kernel picks aliases nothing; it
        // is zero-filled, and zero is a valid value of every atomic in it. It is page aligned,
        // and `Record`'s size is a multiple of its alignment (64, that of `Cell` too), so the
        // cells after the records are aligned too. It is never unmapped (the board lives as long as the process), so the pointers
        // stay valid.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?
        };
        // SAFETY: `records_bytes` is within the mapping just made.
        let cells = unsafe { ptr.byte_add(records_bytes) };
        Ok(Scoreboard {
            records: ptr.cast(),
            cells: cells.cast(),
            workers,
            slots,
            per_slot,
        })
    }

    /// The slot of mule `id` (1-based).
    pub fn mule_slot(&self, id: u32) -> usize {
        self.workers + id as usize - 1
    }

    fn record(&self, slot: usize) -> &Record {
        assert!(
            slot < self.slots,
            "scoreboard slot {slot} of {}",
            self.slots
        );
        // SAFETY: `slot` is in bounds (checked), the mapping is live and holds `slots`
        // initialized records (module invariants).
        unsafe { &*self.records.as_ptr().add(slot) }
    }

    fn cells(&self, slot: usize) -> &[Cell] {
        assert!(
            slot < self.slots,
            "scoreboard slot {slot} of {}",
            self.slots
        );
        // SAFETY: as for `record`: slot `slot`'s `per_slot` cells are in the mapping, which
        // lives as long as the process.
        unsafe {
            std::slice::from_raw_parts(self.cells.as_ptr().add(slot * self.per_slot), self.per_slot)
        }
    }

    /// Connections counted for `slot`.
    pub fn open(&self, slot: usize) -> u32 {
        self.record(slot).open.load(Ordering::Relaxed)
    }

    pub fn opened(&self, slot: usize) {
        self.record(slot).open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self, slot: usize) {
        let _ = self
            .record(slot)
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Forgets the connections and requests of a worker that died without closing them
    /// (master only), and frees the cells it held.
    pub fn reset(&self, slot: usize, pid: u32) {
        let record = self.record(slot);
        record.open.store(0, Ordering::Relaxed);
        record.in_flight.store(0, Ordering::Relaxed);
        self.forget(slot, pid);
    }

    /// Frees the cells `pid` held in `slot` (the master, once `pid` is reaped: nobody else
    /// writes them any more).
    pub fn forget(&self, slot: usize, pid: u32) {
        for cell in self.cells(slot) {
            if pid != 0 && cell.pid.load(Ordering::Acquire) == pid {
                cell.write(0, b"");
                cell.pid.store(0, Ordering::Release);
            }
        }
    }

    /// Requests answered in `slot` over its life.
    pub fn requests(&self, slot: usize) -> u64 {
        self.record(slot).requests.load(Ordering::Relaxed)
    }

    /// True when `slot` holds more than [`SLACK`] connections above the least loaded slot.
    pub fn ahead(&self, slot: usize) -> bool {
        let mine = self.open(slot);
        let least = (0..self.workers)
            .filter(|&s| s != slot)
            .map(|s| self.open(s))
            .min();
        least.is_some_and(|least| mine > least + SLACK)
    }

    /// Waits, briefly, while this worker is ahead of a sibling, so the sibling accepts the
    /// next connection.
    pub async fn take_turn(&self, slot: usize) {
        for _ in 0..DEFER_STEPS {
            if !self.ahead(slot) {
                return;
            }
            tokio::time::sleep(DEFER_STEP).await;
        }
    }

    /// This process's view of `slot`, for the request path.
    pub fn lane(&self, slot: usize, pid: u32) -> Lane {
        assert!(
            slot < self.slots,
            "scoreboard slot {slot} of {}",
            self.slots
        );
        Lane {
            board: *self,
            slot,
            pid,
        }
    }

    /// The requests running in `slot` now, as far as its cells follow them (a slot running
    /// more requests at once than it has cells follows only the first ones to begin).
    pub fn running(&self, slot: usize) -> Vec<Running> {
        let now = now_us();
        self.cells(slot)
            .iter()
            .filter_map(|cell| cell.read())
            .map(|(pid, started, what)| Running {
                pid,
                what,
                running_for: Duration::from_micros(now.saturating_sub(started)),
            })
            .collect()
    }

    /// Everything the board holds of `slot`.
    #[allow(dead_code)] // as `WorkerSnapshot`
    pub fn snapshot(&self, slot: usize) -> WorkerSnapshot {
        let r = self.record(slot);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let oldest = self.running(slot).into_iter().max_by_key(|r| r.running_for);
        WorkerSnapshot {
            open: r.open.load(Ordering::Relaxed),
            in_flight: r.in_flight.load(Ordering::Relaxed),
            requests: load(&r.requests),
            status_classes: std::array::from_fn(|i| load(&r.classes[i])),
            duration_buckets: std::array::from_fn(|i| load(&r.durations[i])),
            duration_sum_us: load(&r.duration_sum_us),
            bytes_sent: load(&r.bytes_sent),
            busy_for: oldest.as_ref().map(|o| o.running_for),
            oldest,
        }
    }
}

/// One process's place on the board: where its requests are counted.
#[derive(Clone, Copy)]
pub struct Lane {
    board: Scoreboard,
    slot: usize,
    pid: u32,
}

impl Lane {
    /// A request (or a mule's message) begins: the ticket counts it as answered when
    /// dropped. It follows nothing for harakiri: see [`Lane::claim`].
    pub fn begin(&self) -> Ticket {
        let record = self.board.record(self.slot);
        record.in_flight.fetch_add(1, Ordering::Relaxed);
        Ticket {
            lane: *self,
            started_us: now_us(),
            status: 0,
        }
    }

    /// App code starts working on a request (or a mule on a message): harakiri follows it
    /// in a cell until the claim is dropped, when that work ends (not when the client is
    /// answered, or gone); `what` describes it for the log of a harakiri.
    pub fn claim(&self, what: &[&[u8]]) -> Claim {
        let started_us = now_us();
        let cell = self.board.cells(self.slot).iter().position(|cell| {
            // A read first: a busy cell is passed over without taking its cache line.
            cell.pid.load(Ordering::Relaxed) == 0
                && cell
                    .pid
                    .compare_exchange(0, self.pid, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        });
        if let Some(i) = cell {
            self.board.cells(self.slot)[i].write_parts(started_us, what);
        }
        Claim { lane: *self, cell }
    }

    /// `n` bytes went out to a client.
    pub fn sent(&self, n: usize) {
        self.board
            .record(self.slot)
            .bytes_sent
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// App code at work on a request: its cell on the board, freed when dropped.
pub struct Claim {
    lane: Lane,
    cell: Option<usize>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(i) = self.cell {
            let cell = &self.lane.board.cells(self.lane.slot)[i];
            cell.write(0, b"");
            cell.pid.store(0, Ordering::Release);
        }
    }
}

/// A request being answered: counted when dropped, with the status set on it.
pub struct Ticket {
    lane: Lane,
    started_us: u64,
    /// The response's status, once known; 0 counts in no status class.
    pub status: u16,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let took = now_us().saturating_sub(self.started_us);
        let board = &self.lane.board;
        let r = board.record(self.lane.slot);
        let _ = r
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        r.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(class) = (self.status as usize / 100)
            .checked_sub(1)
            .filter(|&c| c < 5)
        {
            r.classes[class].fetch_add(1, Ordering::Relaxed);
        }
        let secs = took as f64 / 1e6;
        let bucket = DURATION_BOUNDS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(DURATION_BOUNDS.len());
        r.durations[bucket].fetch_add(1, Ordering::Relaxed);
        r.duration_sum_us.fetch_add(took, Ordering::Relaxed);
    }
}

impl Cell {
    /// Writes what the cell holds (only its owner, or the master once the owner is dead).
    fn write(&self, started_us: u64, text: &[u8]) {
        self.write_parts(started_us, &[text]);
    }

    fn write_parts(&self, started_us: u64, parts: &[&[u8]]) {
        // Forced odd from whatever the cell holds: a writer killed between its two stores
        // (SIGKILL by harakiri) leaves it odd, and counting on from there would invert the
        // parity for good, so readers would take the cell as always being written.
        let odd = self.seq.load(Ordering::Relaxed) | 1;
        self.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        self.started_us.store(started_us, Ordering::Relaxed);
        let mut word = [0u8; 8];
        let (mut at, mut w) = (0usize, 0usize);
        for &byte in parts.iter().flat_map(|p| p.iter()).take(TEXT_MAX) {
            word[at % 8] = byte;
            at += 1;
            if at % 8 == 0 {
                self.text[w].store(u64::from_le_bytes(word), Ordering::Relaxed);
                w += 1;
                word = [0u8; 8];
            }
        }
        if at % 8 != 0 {
            self.text[w].store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        self.len.store(at as u64, Ordering::Relaxed);
        self.seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    /// The cell's owner, start and text, read consistently; `None` when it holds nothing.
    fn read(&self) -> Option<(u32, u64, String)> {
        let pid = self.pid.load(Ordering::Acquire);
        if pid == 0 {
            return None;
        }
        // A writer holds the lock for a few dozen instructions; a reader that keeps meeting
        // one gives up rather than spin (the request is then simply not seen this time).
        for _ in 0..100 {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let started = self.started_us.load(Ordering::Relaxed);
            let len = (self.len.load(Ordering::Relaxed) as usize).min(TEXT_MAX);
            let mut bytes = Vec::with_capacity(TEXT_WORDS * 8);
            for word in &self.text {
                bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
            let pid = self.pid.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            if started == 0 || pid == 0 {
                return None;
            }
            bytes.truncate(len);
            return Some((pid, started, String::from_utf8_lossy(&bytes).into_owned()));
        }
        None
    }
}

/// The monotonic clock, in microseconds: the same in every process of the machine, so one
/// process can tell how long another's request has run. (Read from the vDSO: no syscall.)
pub fn now_us() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| u64::try_from(Duration::from(t).as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_ahead_of_its_least_loaded_sibling_defers() {
        let board = Scoreboard::new(3, 1, 4).unwrap();
        assert!(!board.ahead(0), "all at zero");
        board.opened(0);
        assert!(!board.ahead(0), "one ahead is within the slack");
        board.opened(0);
        assert!(board.ahead(0));
        board.opened(1);
        assert!(
            board.ahead(0),
            "slot 2 is still at zero (the mule's slot does not count)"
        );
        board.opened(2);
        assert!(!board.ahead(0));
        board.closed(1);
        board.closed(1); // never below zero
        assert_eq!(board.open(1), 0);
        board.reset(0, 0);
        assert_eq!(board.open(0), 0);
    }

    #[test]
    fn a_lone_worker_never_defers() {
        let board = Scoreboard::new(1, 0, 1).unwrap();
        for _ in 0..10 {
            board.opened(0);
        }
        assert!(!board.ahead(0));
    }

    #[test]
    fn a_ticket_counts_its_request_by_status_and_duration() {
        let board = Scoreboard::new(2, 0, 2).unwrap();
        let lane = board.lane(1, 42);
        let mut ticket = lane.begin();
        let claim = lane.claim(&[b"GET ", b"/slow?x=1"]);
        let snap = board.snapshot(1);
        assert_eq!(snap.in_flight, 1);
        let oldest = snap.oldest.expect("the request runs");
        assert_eq!((oldest.pid, oldest.what.as_str()), (42, "GET /slow?x=1"));
        assert!(snap.busy_for.is_some());
        drop(claim);
        assert_eq!(board.snapshot(1).oldest, None, "the app's work is over");
        assert_eq!(
            board.snapshot(1).in_flight,
            1,
            "the client is not answered yet"
        );
        ticket.status = 503;
        lane.sent(100);
        drop(ticket);
        let mut ok = lane.begin();
        ok.status = 200;
        drop(ok);
        let snap = board.snapshot(1);
        assert_eq!(snap.in_flight, 0);
        assert_eq!(snap.requests, 2);
        assert_eq!(snap.status_classes, [0, 1, 0, 0, 1]);
        assert_eq!(snap.duration_buckets.iter().sum::<u64>(), 2);
        assert_eq!(snap.duration_buckets[0], 2, "both well under 5 ms");
        assert_eq!(snap.bytes_sent, 100);
        assert_eq!((snap.busy_for, snap.oldest), (None, None));
        assert_eq!(board.snapshot(0), WorkerSnapshot::default());
    }

    #[test]
    fn a_slot_follows_as_many_requests_as_it_has_cells_and_cuts_long_text() {
        let board = Scoreboard::new(1, 0, 2).unwrap();
        let lane = board.lane(0, 7);
        let long = vec![b'a'; 500];
        let tickets: Vec<(Ticket, Claim)> = (0..3)
            .map(|_| (lane.begin(), lane.claim(&[b"POST ", &long])))
            .collect();
        let running = board.running(0);
        assert_eq!(running.len(), 2);
        assert_eq!(running[0].what.len(), TEXT_MAX);
        assert!(running[0].what.starts_with("POST aaa"));
        assert_eq!(board.snapshot(0).in_flight, 3);
        drop(tickets);
        assert!(board.running(0).is_empty());
        assert_eq!(board.requests(0), 3);
    }

    #[test]
    fn a_cell_left_mid_write_by_a_killed_worker_is_readable_again() {
        let board = Scoreboard::new(1, 0, 1).unwrap();
        std::mem::forget(board.lane(0, 5).claim(&[b"GET /killed"]));
        // Killed between the two stores of the sequence lock: left odd.
        let cell = &board.cells(0)[0];
        cell.seq.fetch_add(1, Ordering::Relaxed);
        assert!(
            board.running(0).is_empty(),
            "a cell being written is not read"
        );
        board.forget(0, 5);
        let _next = board.lane(0, 6).claim(&[b"GET /next"]);
        let running = board.running(0);
        assert_eq!(running.len(), 1, "the next request in that cell is seen");
        assert_eq!((running[0].pid, running[0].what.as_str()), (6, "GET /next"));
    }

    #[test]
    fn a_mule_has_a_slot_after_the_workers() {
        let board = Scoreboard::new(2, 2, 1).unwrap();
        assert_eq!(board.mule_slot(2), 3);
        let _held = board.lane(3, 9).claim(&[b"farm jobs: {\"job\": 1}"]);
        assert_eq!(board.running(3)[0].what, "farm jobs: {\"job\": 1}");
        assert!(board.running(2).is_empty());
    }

    #[test]
    fn counts_and_running_requests_cross_fork() {
        let board = Scoreboard::new(2, 0, 2).unwrap();
        // SAFETY: the test's child only touches the board (atomics) and exits at once.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                board.opened(1);
                board.opened(1);
                let lane = board.lane(1, std::process::id());
                drop((lane.begin(), lane.claim(&[b"GET /done"])));
                // Still running when the child dies: as a worker killed by harakiri.
                std::mem::forget((lane.begin(), lane.claim(&[b"GET /stuck"])));
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(board.open(1), 2);
                let snap = board.snapshot(1);
                assert_eq!((snap.requests, snap.in_flight), (1, 1));
                let oldest = snap.oldest.expect("the stuck request");
                assert_eq!(oldest.pid, child.as_raw() as u32);
                assert_eq!(oldest.what, "GET /stuck");
                board.reset(1, child.as_raw() as u32);
                let snap = board.snapshot(1);
                assert_eq!((snap.open, snap.in_flight, snap.oldest), (0, 0, None));
            }
        }
    }
}
