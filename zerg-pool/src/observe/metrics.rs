//! The `metrics` endpoint's content: Prometheus text exposition, built with the `prometheus`
//! crate from what the pool knows (its generations, listeners, queues, mule records) and what
//! the masters last reported (the [`Ledger`]).
//!
//! Counters never reset while the pool runs: request counters grow by the ledger's growth,
//! reload counters as reloads end, mule message counters from the pool-owned mule records.
//! Series labelled with a `generation` exist while that generation does; the unlabelled
//! totals (`zerg_requests_total`, `zerg_request_duration_seconds`) carry every generation's
//! requests, the ones gone included.

use std::cell::RefCell;

use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use zerg::control::{ProcessKind, ReloadOutcome};

use super::ledger::Counts;
use super::View;
use crate::sockinfo;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// How a reload ends: the new generation serves, it failed and was rolled back, or none could
/// be started (an invalid config, the pool stopping).
const RELOAD_OUTCOMES: [&str; 3] = ["done", "rolled_back", "refused"];
/// Reloads take from a second (a small app) to minutes (Galaxy imports for over one).
const RELOAD_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The pool's metrics: the registry and a handle on each metric.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    generation_requests: IntCounterVec,
    sent_bytes: IntCounter,
    harakiris: IntCounter,
    reloads: IntCounterVec,
    chain_reloads: IntCounterVec,
    reload_seconds: HistogramVec,
    in_flight: IntGaugeVec,
    workers: IntGaugeVec,
    mules: IntGaugeVec,
    generations: IntGaugeVec,
    generation_age: GaugeVec,
    accept_queue: IntGaugeVec,
    accept_queue_limit: IntGaugeVec,
    farm_queue_bytes: IntGaugeVec,
    mule_queue_bytes: IntGaugeVec,
    mule_taken: IntCounterVec,
    mule_redelivered: IntCounterVec,
    worker_rss: IntGaugeVec,
    mule_rss: IntGaugeVec,
    /// What the mule records said at the last scrape, per position, for the counters' growth.
    records_seen: RefCell<Vec<(u64, u64)>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
            r.register(Box::new(m.clone()))
                .expect("each metric is registered once, under its own name");
            m
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let metrics = Metrics {
            requests: counter(
                "zerg_requests_total",
                "Requests completed, by status class, over every generation",
                &["class"],
            ),
            generation_requests: counter(
                "zerg_generation_requests_total",
                "Requests completed by a live generation, by status class",
                &["generation", "class"],
            ),
            sent_bytes: reg(
                &registry,
                IntCounter::new(
                    "zerg_response_bytes_total",
                    "Response bytes sent, over every generation",
                )
                .expect("valid metric"),
            ),
            harakiris: reg(
                &registry,
                IntCounter::new(
                    "zerg_harakiri_kills_total",
                    "Web workers and mules killed by harakiri or mule-harakiri, over every generation",
                )
                .expect("valid metric"),
            ),
            reloads: counter(
                "zerg_reloads_total",
                "Reloads by outcome: done, rolled_back (the new generation failed), refused (nothing started)",
                &["outcome"],
            ),
            chain_reloads: counter(
                "zerg_chain_reloads_total",
                "Chain reloads by outcome: done, failed",
                &["outcome"],
            ),
            reload_seconds: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "zerg_reload_duration_seconds",
                        "From a reload's request to its outcome",
                    )
                    .buckets(RELOAD_BUCKETS.to_vec()),
                    &["outcome"],
                )
                .expect("valid metric"),
            ),
            in_flight: gauge(
                "zerg_requests_in_flight",
                "Requests a web worker is answering now",
                &["generation", "worker"],
            ),
            workers: gauge(
                "zerg_workers",
                "Web workers by state: busy (answering a request), idle, down (being respawned)",
                &["generation", "state"],
            ),
            mules: gauge(
                "zerg_mules",
                "Mules by state: running, down (not started or being respawned)",
                &["generation", "state"],
            ),
            generations: gauge(
                "zerg_generations",
                "Generations by state: starting, serving, draining",
                &["state"],
            ),
            generation_age: reg(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "zerg_generation_age_seconds",
                        "Time since the generation was started or attached",
                    ),
                    &["generation", "state"],
                )
                .expect("valid metric"),
            ),
            accept_queue: gauge(
                "zerg_accept_queue_connections",
                "Connections waiting in a TCP listener's accept queue",
                &["listener"],
            ),
            accept_queue_limit: gauge(
                "zerg_accept_queue_limit_connections",
                "Most connections a TCP listener's accept queue holds",
                &["listener"],
            ),
            farm_queue_bytes: gauge(
                "zerg_farm_queue_bytes",
                "Bytes of messages waiting in a farm's queue (SIOCINQ: the sum of their lengths; the kernel gives no count)",
                &["farm"],
            ),
            mule_queue_bytes: gauge(
                "zerg_mule_queue_bytes",
                "Bytes of messages waiting in one mule's own queue (uwsgi.mule_msg to its id)",
                &["mule"],
            ),
            mule_taken: counter(
                "zerg_mule_messages_delivered_total",
                "Messages taken from a queue by the mules of a position, redeliveries included",
                &["mule"],
            ),
            mule_redelivered: counter(
                "zerg_mule_messages_redelivered_total",
                "Messages a mule died holding, put back on their queue by its successor",
                &["mule"],
            ),
            worker_rss: gauge(
                "zerg_worker_resident_memory_bytes",
                "Resident memory of a web worker",
                &["generation", "worker"],
            ),
            mule_rss: gauge(
                "zerg_mule_resident_memory_bytes",
                "Resident memory of a mule",
                &["generation", "mule"],
            ),
            records_seen: RefCell::default(),
            registry,
        };
        // Every outcome and class shows from the first scrape, at zero: a series that appears
        // only when it first moves hides that first move from rate() and increase().
        for class in CLASSES {
            metrics.requests.with_label_values(&[class]);
        }
        for outcome in RELOAD_OUTCOMES {
            metrics.reloads.with_label_values(&[outcome]);
            metrics.reload_seconds.with_label_values(&[outcome]);
        }
        for outcome in ["done", "failed"] {
            metrics.chain_reloads.with_label_values(&[outcome]);
        }
        metrics
    }

    /// A master's report added `grew` to `generation`'s counts.
    pub fn count_requests(&self, generation: u64, grew: &Counts) {
        let g = generation.to_string();
        for (class, n) in CLASSES.iter().zip(grew.by_class) {
            if n > 0 {
                self.requests.with_label_values(&[*class]).inc_by(n);
                self.generation_requests
                    .with_label_values(&[g.as_str(), class])
                    .inc_by(n);
            }
        }
        self.sent_bytes.inc_by(grew.sent_bytes);
        self.harakiris.inc_by(grew.harakiris);
    }

    /// A generation is gone: its own series go (its counts stay in the totals).
    pub fn generation_gone(&self, generation: u64) {
        let g = generation.to_string();
        for class in CLASSES {
            let _ = self
                .generation_requests
                .remove_label_values(&[g.as_str(), class]);
        }
    }

    /// A reload ended: done, rolled back (a generation was started and failed) or refused
    /// (none could be started).
    pub fn reload_finished(&self, outcome: &ReloadOutcome) {
        let label = match (outcome.ok, outcome.generation) {
            (true, _) => RELOAD_OUTCOMES[0],
            (false, 0) => RELOAD_OUTCOMES[2],
            (false, _) => RELOAD_OUTCOMES[1],
        };
        self.reloads.with_label_values(&[label]).inc();
        self.reload_seconds
            .with_label_values(&[label])
            .observe(outcome.millis as f64 / 1000.0);
    }

    pub fn chain_reload_finished(&self, outcome: &ReloadOutcome) {
        let label = if outcome.ok { "done" } else { "failed" };
        self.chain_reloads.with_label_values(&[label]).inc();
    }

    /// The text exposition of every metric, as of now.
    pub fn render(&self, view: &View<'_>) -> String {
        self.refresh(view);
        let mut families = self.registry.gather();
        // The encoder refuses a family without a series (no live generation reported yet).
        families.extend(
            duration_families(view)
                .into_iter()
                .filter(|f| !f.get_metric().is_empty()),
        );
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Sets every gauge from `view`, and the mule counters from their records.
    fn refresh(&self, view: &View<'_>) {
        for g in [
            &self.in_flight,
            &self.workers,
            &self.mules,
            &self.generations,
            &self.worker_rss,
            &self.mule_rss,
            &self.accept_queue,
            &self.accept_queue_limit,
            &self.farm_queue_bytes,
            &self.mule_queue_bytes,
        ] {
            g.reset();
        }
        self.generation_age.reset();
        for g in &view.generations {
            let n = g.number.to_string();
            let state = g.state.to_string();
            self.generations.with_label_values(&[state.as_str()]).inc();
            self.generation_age
                .with_label_values(&[n.as_str(), state.as_str()])
                .set(g.age.as_secs_f64());
            let (mut busy, mut idle, mut down) = (0, 0, 0);
            let (mut running, mut stopped) = (0, 0);
            if let Some(figures) = g.figures {
                for w in &figures.workers {
                    let id = w.id.to_string();
                    match (w.pid, w.in_flight) {
                        (None, _) => down += 1,
                        (Some(_), 0) => idle += 1,
                        (Some(_), _) => busy += 1,
                    }
                    self.in_flight
                        .with_label_values(&[n.as_str(), id.as_str()])
                        .set(w.in_flight.into());
                    if w.pid.is_some() {
                        self.worker_rss
                            .with_label_values(&[n.as_str(), id.as_str()])
                            .set(clamp(w.rss_bytes));
                    }
                }
                for m in &figures.mules {
                    match m.pid {
                        Some(_) => {
                            running += 1;
                            self.mule_rss
                                .with_label_values(&[n.as_str(), &m.id.to_string()])
                                .set(clamp(m.rss_bytes));
                        }
                        None => stopped += 1,
                    }
                }
            } else {
                // No report yet: the master's process list says which run.
                for p in &g.processes {
                    match p.kind {
                        ProcessKind::Worker => idle += 1,
                        ProcessKind::Mule => running += 1,
                    }
                }
            }
            for (state, count) in [("busy", busy), ("idle", idle), ("down", down)] {
                self.workers
                    .with_label_values(&[n.as_str(), state])
                    .set(count);
            }
            for (state, count) in [("running", running), ("down", stopped)] {
                self.mules
                    .with_label_values(&[n.as_str(), state])
                    .set(count);
            }
        }
        for l in view.listeners {
            if let Some((queued, limit)) = sockinfo::accept_queue(l.fd()) {
                let name = l.info.name.as_str();
                self.accept_queue
                    .with_label_values(&[name])
                    .set(queued.into());
                self.accept_queue_limit
                    .with_label_values(&[name])
                    .set(limit.into());
            }
        }
        for q in view.queues {
            // Named `farm:NAME` or `mule:K` by the pool (see `queues`).
            let (gauge, label) = match q.name.split_once(':') {
                Some(("farm", name)) => (&self.farm_queue_bytes, name),
                Some((_, k)) => (&self.mule_queue_bytes, k),
                None => continue,
            };
            if let Some(bytes) = sockinfo::queued_bytes(q.fds()[1]) {
                gauge.with_label_values(&[label]).set(clamp(bytes));
            }
        }
        let mut seen = self.records_seen.borrow_mut();
        seen.resize(view.records.len(), (0, 0));
        for (i, record) in view.records.iter().enumerate() {
            let mule = (i + 1).to_string();
            let now = (
                zerg::mule_record::taken(record),
                zerg::mule_record::redelivered(record),
            );
            let before = seen[i];
            // Touch both series so they show from the first scrape, at zero.
            self.mule_taken
                .with_label_values(&[mule.as_str()])
                .inc_by(now.0.saturating_sub(before.0));
            self.mule_redelivered
                .with_label_values(&[mule.as_str()])
                .inc_by(now.1.saturating_sub(before.1));
            seen[i] = now;
        }
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The request-duration histograms: over every generation, and per live generation. Built
/// here because the workers bucket their durations themselves (in the scoreboard), and the
/// crate's `Histogram` can only observe one value at a time.
fn duration_families(view: &View<'_>) -> Vec<MetricFamily> {
    let bounds = view.ledger.bounds();
    let total = histogram(bounds, view.ledger.lifetime(), &[]);
    let per_generation: Vec<Metric> = view
        .generations
        .iter()
        .filter_map(|g| {
            let account = view.ledger.account(g.number)?;
            Some(histogram(
                bounds,
                &account.counts,
                &[("generation", g.number.to_string())],
            ))
        })
        .collect();
    vec![
        family(
            "zerg_request_duration_seconds",
            "Time from a request's head to its response's end, over every generation",
            vec![total],
        ),
        family(
            "zerg_generation_request_duration_seconds",
            "Time from a request's head to its response's end, per live generation",
            per_generation,
        ),
    ]
}

fn family(name: &str, help: &str, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(MetricType::HISTOGRAM);
    f.set_metric(metrics);
    f
}

fn histogram(bounds: &[f64], counts: &Counts, labels: &[(&str, String)]) -> Metric {
    let mut cumulative = 0u64;
    let buckets = bounds
        .iter()
        .enumerate()
        .map(|(i, &upper)| {
            cumulative = cumulative.saturating_add(counts.buckets.get(i).copied().unwrap_or(0));
            let mut b = Bucket::default();
            b.set_upper_bound(upper);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut h = Histogram::default();
    // Every duration falls in one bucket, the one past the last bound included.
    h.set_sample_count(
        counts
            .buckets
            .iter()
            .fold(0u64, |a, b| a.saturating_add(*b)),
    );
    h.set_sample_sum(counts.duration_sum_us as f64 / 1e6);
    h.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name((*k).to_owned());
                l.set_value(v.clone());
                l
            })
            .collect(),
    );
    m.set_histogram(h);
    m
}
