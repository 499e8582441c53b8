//! Running totals of what the generations report, that never go down.
//!
//! A master reports its slots' counters every second ([`Figures`]); they are counts since the
//! generation started, and a slot may be reset (its worker died). The ledger keeps what it
//! last saw of each slot and adds only the growth: a counter that went backwards was reset and
//! counts from zero, so all of its new value is growth. Totals over the pool's life therefore
//! only grow, across worker deaths and across generations: a generation that is gone has had
//! every report added already (its master sends a last one as it exits).

use std::collections::BTreeMap;
use std::time::Instant;

use zerg::control::{Figures, MuleFigures, WorkerFigures};

/// Counters of completed requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    /// By status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub by_class: [u64; 5],
    /// Per duration bucket (the ledger's bounds, then one past the last), not cumulative.
    pub buckets: Vec<u64>,
    pub duration_sum_us: u64,
    pub sent_bytes: u64,
    /// Processes killed by `harakiri` or `mule-harakiri`.
    pub harakiris: u64,
}

impl Counts {
    fn of(w: &WorkerFigures) -> Counts {
        Counts {
            requests: w.requests,
            by_class: w.by_class,
            buckets: w.duration_buckets.clone(),
            duration_sum_us: w.duration_sum_us,
            sent_bytes: w.sent_bytes,
            harakiris: w.harakiris.into(),
        }
    }

    fn of_mule(m: &MuleFigures) -> Counts {
        Counts {
            harakiris: m.harakiris.into(),
            ..Counts::default()
        }
    }

    /// What `now` adds to `before`, counter by counter: a counter that went backwards was
    /// reset, and all of its new value is new.
    fn growth(before: &Counts, now: &Counts) -> Counts {
        let grew = |b: u64, n: u64| if n >= b { n - b } else { n };
        let mut by_class = [0; 5];
        for (i, c) in by_class.iter_mut().enumerate() {
            *c = grew(before.by_class[i], now.by_class[i]);
        }
        Counts {
            requests: grew(before.requests, now.requests),
            by_class,
            buckets: now
                .buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| grew(before.buckets.get(i).copied().unwrap_or(0), n))
                .collect(),
            duration_sum_us: grew(before.duration_sum_us, now.duration_sum_us),
            sent_bytes: grew(before.sent_bytes, now.sent_bytes),
            harakiris: grew(before.harakiris, now.harakiris),
        }
    }

    fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        for (c, o) in self.by_class.iter_mut().zip(other.by_class) {
            *c = c.saturating_add(o);
        }
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (c, o) in self.buckets.iter_mut().zip(&other.buckets) {
            *c = c.saturating_add(*o);
        }
        self.duration_sum_us = self.duration_sum_us.saturating_add(other.duration_sum_us);
        self.sent_bytes = self.sent_bytes.saturating_add(other.sent_bytes);
        self.harakiris = self.harakiris.saturating_add(other.harakiris);
    }
}

/// Where a master's counters come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Worker(u32),
    Mule(u32),
}

/// One live generation's account.
#[derive(Debug)]
pub struct Account {
    /// Totals of this generation's slots.
    pub counts: Counts,
    /// Its master's last report, and when it came.
    pub latest: Figures,
    pub received: Instant,
    /// What was last seen of each web worker slot and each mule position.
    seen: BTreeMap<Slot, Counts>,
}

/// Totals over the pool's life, and each live generation's.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The request-duration bucket bounds, as the first report gave them.
    bounds: Vec<f64>,
    lifetime: Counts,
    generations: BTreeMap<u64, Account>,
}

impl Ledger {
    /// Adds what `generation`'s new report adds; returns that growth.
    pub fn record(&mut self, generation: u64, figures: Figures) -> Counts {
        if self.bounds.is_empty() {
            self.bounds = figures.duration_bounds.clone();
        }
        // Another zergling binary may bucket differently: its durations cannot be added to
        // these buckets (its counts and sums still are).
        let same_buckets = figures.duration_bounds == self.bounds;
        let account = self
            .generations
            .entry(generation)
            .or_insert_with(|| Account {
                counts: Counts::default(),
                latest: Figures::default(),
                received: Instant::now(),
                seen: BTreeMap::new(),
            });
        let mut total = Counts::default();
        let slots = figures
            .workers
            .iter()
            .map(|w| (Slot::Worker(w.id), Counts::of(w)));
        let mules = figures
            .mules
            .iter()
            .map(|m| (Slot::Mule(m.id), Counts::of_mule(m)));
        for (slot, now) in slots.chain(mules) {
            let before = account.seen.get(&slot).cloned().unwrap_or_default();
            let mut grew = Counts::growth(&before, &now);
            if !same_buckets {
                grew.buckets.clear();
            }
            total.add(&grew);
            account.seen.insert(slot, now);
        }
        account.counts.add(&total);
        account.latest = figures;
        account.received = Instant::now();
        self.lifetime.add(&total);
        total
    }

    /// Forgets a generation that is gone; its counts stay in the lifetime totals.
    pub fn retire(&mut self, generation: u64) {
        self.generations.remove(&generation);
    }

    pub fn lifetime(&self) -> &Counts {
        &self.lifetime
    }

    pub fn account(&self, generation: u64) -> Option<&Account> {
        self.generations.get(&generation)
    }

    /// Upper bounds of the duration buckets, in seconds.
    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(slots: &[(u32, u64)]) -> Figures {
        Figures {
            duration_bounds: vec![0.1, 1.0],
            workers: slots
                .iter()
                .map(|&(id, requests)| WorkerFigures {
                    id,
                    requests,
                    by_class: [0, requests, 0, 0, 0],
                    duration_buckets: vec![requests, 0, 0],
                    duration_sum_us: requests * 1000,
                    ..WorkerFigures::default()
                })
                .collect(),
            mules: Vec::new(),
        }
    }

    #[test]
    fn totals_grow_by_what_each_report_adds() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.record(1, report(&[(1, 5), (2, 3)])).requests, 8);
        assert_eq!(ledger.record(1, report(&[(1, 7), (2, 3)])).requests, 2);
        assert_eq!(ledger.lifetime().requests, 10);
        assert_eq!(ledger.lifetime().by_class[1], 10);
        assert_eq!(ledger.lifetime().buckets, vec![10, 0, 0]);
        assert_eq!(ledger.lifetime().duration_sum_us, 10_000);
        assert_eq!(ledger.account(1).unwrap().counts.requests, 10);
    }

    #[test]
    fn a_reset_slot_counts_from_zero_and_totals_never_go_down() {
        let mut ledger = Ledger::default();
        ledger.record(1, report(&[(1, 50)]));
        // The slot was reset (its worker died) and served 4 more since.
        assert_eq!(ledger.record(1, report(&[(1, 4)])).requests, 4);
        assert_eq!(ledger.lifetime().requests, 54);
        ledger.record(1, report(&[(1, 6)]));
        assert_eq!(ledger.lifetime().requests, 56);
    }

    #[test]
    fn a_retired_generation_stays_in_the_lifetime_totals() {
        let mut ledger = Ledger::default();
        ledger.record(1, report(&[(1, 10)]));
        ledger.record(2, report(&[(1, 1)]));
        ledger.retire(1);
        assert!(ledger.account(1).is_none());
        assert_eq!(ledger.lifetime().requests, 11);
        assert_eq!(ledger.account(2).unwrap().counts.requests, 1);
    }

    #[test]
    fn harakiri_kills_of_workers_and_mules_add_up() {
        let mut ledger = Ledger::default();
        let mut figures = report(&[(1, 0)]);
        figures.workers[0].harakiris = 1;
        figures.mules = vec![MuleFigures {
            id: 1,
            harakiris: 2,
            ..MuleFigures::default()
        }];
        assert_eq!(ledger.record(1, figures.clone()).harakiris, 3);
        assert_eq!(
            ledger.record(1, figures).harakiris,
            0,
            "the same report adds nothing"
        );
        assert_eq!(ledger.lifetime().harakiris, 3);
    }

    #[test]
    fn other_buckets_are_not_added_to_these() {
        let mut ledger = Ledger::default();
        ledger.record(1, report(&[(1, 2)]));
        let mut other = report(&[(1, 3)]);
        other.duration_bounds = vec![0.5];
        ledger.record(2, other);
        assert_eq!(ledger.lifetime().requests, 5);
        assert_eq!(ledger.lifetime().buckets, vec![2, 0, 0]);
    }
}
