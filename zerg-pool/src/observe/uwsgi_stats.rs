//! The `stats` document: the JSON uWSGI's stats server writes (uWSGI
//! `core/master_utils.c`, `uwsgi_master_generate_stats`), so `uwsgitop` and the collectors
//! written for uWSGI (telegraf, netdata, metricbeat) read zerg unchanged.
//!
//! uWSGI's keys carry what zerg has under the same name and unit (`rss` in bytes,
//! `running_time` and `avg_rt` in microseconds, `last_spawn` in seconds since the epoch);
//! what zerg does not have (exceptions, signals, harakiri counts) is 0. `workers` lists the
//! serving generation's web workers, as uWSGI's master lists its own; everything else zerg
//! knows goes under the `zerg` key: every generation with its state and age, the mules with
//! their farms and the message in hand, the queues' depths, the last reload's outcome.

use serde_json::{json, Value};
use zerg::control::{ProcessKind, WorkerFigures, FIGURES_INTERVAL};

use super::{GenerationView, View};
use crate::generation::State;
use crate::sockinfo;

/// The whole document.
pub fn document(view: &View<'_>) -> Value {
    let sockets: Vec<Value> = view
        .listeners
        .iter()
        .map(|l| {
            let (queue, max_queue) = sockinfo::accept_queue(l.fd()).unwrap_or((0, 0));
            json!({
                "name": l.info.addr.to_string(),
                "proto": l.info.protocol.to_string(),
                "queue": queue,
                "max_queue": max_queue,
                "shared": 0,
                "can_offload": 0,
            })
        })
        .collect();
    let listen_queue: u64 = sockets.iter().filter_map(|s| s["queue"].as_u64()).sum();
    let serving: Vec<&GenerationView<'_>> = view
        .generations
        .iter()
        .filter(|g| g.state == State::Serving)
        .collect();
    let workers: Vec<Value> = serving
        .iter()
        .flat_map(|g| g.worker_figures().map(move |w| worker(g.number, w)))
        .collect();
    let load: u64 = view
        .generations
        .iter()
        .flat_map(GenerationView::worker_figures)
        .map(|w| u64::from(w.in_flight))
        .sum();
    json!({
        "version": concat!("zerg-", env!("CARGO_PKG_VERSION")),
        "listen_queue": listen_queue,
        "listen_queue_errors": 0,
        "signal_queue": 0,
        "load": load,
        "pid": view.pool_pid,
        "uid": nix::unistd::getuid().as_raw(),
        "gid": nix::unistd::getgid().as_raw(),
        "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "locks": [],
        "sockets": sockets,
        "workers": workers,
        "zerg": zerg(view),
    })
}

/// One web worker as uWSGI describes one, plus zerg's figures.
fn worker(generation: u64, w: &WorkerFigures) -> Value {
    let avg_rt = w.duration_sum_us.checked_div(w.requests).unwrap_or(0);
    let busy = w.in_flight > 0;
    json!({
        "id": w.id,
        "pid": w.pid.unwrap_or(0),
        "accepting": u8::from(w.pid.is_some()),
        "requests": w.requests,
        "delta_requests": 0,
        "exceptions": 0,
        "harakiri_count": w.harakiris,
        "signals": 0,
        "signal_queue": 0,
        "status": if busy { "busy" } else { "idle" },
        "rss": w.rss_bytes,
        "vsz": 0,
        "uss": 0,
        "pss": 0,
        "running_time": w.duration_sum_us,
        "last_spawn": w.spawned_unix,
        "respawn_count": w.respawns,
        "tx": w.sent_bytes,
        "avg_rt": avg_rt,
        "apps": [{
            "id": 0,
            "modifier1": 0,
            "mountpoint": "",
            "startup_time": 0,
            "requests": w.requests,
            "exceptions": 0,
            "chdir": "",
        }],
        // zerg's workers run every request of a worker on one event loop: one "core".
        "cores": [{
            "id": 0,
            "requests": w.requests,
            "static_requests": 0,
            "routed_requests": 0,
            "offloaded_requests": 0,
            "write_errors": 0,
            "read_errors": 0,
            "in_request": u8::from(busy),
            "vars": [],
            "req_info": {},
        }],
        "generation": generation,
        "in_flight": w.in_flight,
        "connections": w.connections,
        "busy_ms": w.busy_ms,
        "requests_by_class": classes(&w.by_class),
    })
}

/// A web worker of any generation, in zerg's terms.
fn zerg_worker(w: &WorkerFigures) -> Value {
    json!({
        "id": w.id,
        "pid": w.pid,
        "requests": w.requests,
        "requests_by_class": classes(&w.by_class),
        "in_flight": w.in_flight,
        "busy_ms": w.busy_ms,
        "connections": w.connections,
        "rss": w.rss_bytes,
        "tx": w.sent_bytes,
        "respawns": w.respawns,
        "harakiris": w.harakiris,
    })
}

fn classes(by_class: &[u64; 5]) -> Value {
    json!({
        "1xx": by_class[0], "2xx": by_class[1], "3xx": by_class[2],
        "4xx": by_class[3], "5xx": by_class[4],
    })
}

/// zerg's own part.
fn zerg(view: &View<'_>) -> Value {
    let generations: Vec<Value> = view
        .generations
        .iter()
        .map(|g| {
            let account = view.ledger.account(g.number);
            json!({
                "generation": g.number,
                "state": g.state.to_string(),
                "age_secs": g.age.as_secs(),
                "master_pid": g.master_pid,
                "requests": account.map_or(0, |a| a.counts.requests),
                "figures_age_ms": account.map(|a| a.received.elapsed().as_millis() as u64),
                "workers": g.worker_figures().map(zerg_worker).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mules: Vec<Value> = view
        .generations
        .iter()
        .flat_map(|g| {
            g.processes
                .iter()
                .filter(|p| p.kind == ProcessKind::Mule)
                .map(move |p| (g, p))
        })
        .map(|(g, p)| {
            let record = view.records.get(p.id as usize - 1);
            let in_hand = record.and_then(zerg::mule_record::in_hand).map(|(q, msg)| {
                json!({
                    "queue": view.queues.get(q as usize).map(|q| q.name.clone()),
                    "bytes": msg.len(),
                })
            });
            json!({
                "id": p.id,
                "pid": p.pid,
                "generation": g.number,
                "farms": p.farms,
                "messages": p.messages.unwrap_or(0),
                "redelivered": record.map_or(0, zerg::mule_record::redelivered),
                "in_hand": in_hand,
                "rss": p.rss_bytes,
            })
        })
        .collect();
    let queues: Vec<Value> = view
        .queues
        .iter()
        .map(|q| {
            json!({
                "name": q.name,
                "bytes": sockinfo::queued_bytes(q.fds()[1]),
            })
        })
        .collect();
    let totals = view.ledger.lifetime();
    json!({
        "generations": generations,
        "mules": mules,
        "queues": queues,
        "last_reload": view.last_reload,
        "requests": totals.requests,
        "requests_by_class": classes(&totals.by_class),
        "tx": totals.sent_bytes,
        "figures_interval_ms": FIGURES_INTERVAL.as_millis() as u64,
    })
}
