//! What the pool tells about the server, read by the tools operators use: the real `uwsgitop`
//! reads the `stats` endpoint (TCP, unix, and `stats-http`), `prometheus_client`'s parser reads
//! `metrics` and its counters move with requests and reloads, and `zergctl status` shows each
//! worker's figures.
//!
//! uwsgitop and prometheus_client come from `target/asgi-venv` (`.ci/run` installs them).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{apps_dir, free_port, output_within, wait_for, Client, Server, DEADLINE};

/// The venv with uwsgitop and prometheus_client; `None` (and a skip line) without them, except
/// under CI, where their absence fails the test.
fn tools() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/asgi-venv");
    let has = Command::new(venv.join("bin/python"))
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success())
        && venv.join("bin/uwsgitop").exists();
    if has {
        return Some(venv);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} lacks uwsgitop or prometheus_client: .ci/run installs them",
        venv.display()
    );
    eprintln!(
        "skipped: no uwsgitop/prometheus_client in {} (install them as .ci/run does)",
        venv.display()
    );
    None
}

fn tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tools")
        .join(name)
}

/// What the stats endpoint at `addr` writes, read to its end (uWSGI's way: it closes).
fn read_stats(addr: &str) -> Option<serde_json::Value> {
    let mut text = Vec::new();
    if addr.starts_with('/') {
        std::os::unix::net::UnixStream::connect(addr)
            .ok()?
            .read_to_end(&mut text)
            .ok()?;
    } else {
        std::net::TcpStream::connect(addr)
            .ok()?
            .read_to_end(&mut text)
            .ok()?;
    }
    serde_json::from_slice(&text).ok()
}

/// The body of `GET path` on `addr` over HTTP.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut c = Client::try_connect(addr.parse().ok()?).ok()?;
    c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let r = c.try_response().ok()?;
    Some((r.status, r.text()))
}

/// Waits until the stats at `addr` (read by `read`) list `server`'s current workers, each
/// having served at least one request; returns their pids.
fn wait_for_workers_in_stats(
    server: &Server,
    read: impl Fn() -> Option<serde_json::Value>,
) -> Vec<u32> {
    let mut pids = server.worker_pids();
    pids.sort_unstable();
    wait_for("the stats to list every worker with its requests", || {
        let stats = read()?;
        let workers = stats["workers"].as_array()?;
        let mut listed: Vec<u32> = workers
            .iter()
            .filter(|w| w["requests"].as_u64() > Some(0))
            .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
            .collect();
        listed.sort_unstable();
        (listed == pids
            && stats["zerg"]["generations"][0]["state"] == "serving"
            && stats["pid"].as_u64() == Some(u64::from(server.pool_pid())))
        .then_some(pids.clone())
    })
}

/// Runs the real uwsgitop against `address` until its screen shows every pid of `pids`.
fn uwsgitop_shows(venv: &Path, address: &str, pids: &[u32]) {
    let out = output_within(
        Command::new("python3")
            .arg(tool("uwsgitop_once.py"))
            .arg(venv.join("bin/uwsgitop"))
            .arg(address)
            .args(pids.iter().map(u32::to_string)),
        DEADLINE * 2,
    );
    assert!(
        out.status.success(),
        "uwsgitop {address}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn uwsgitop_reads_the_stats_over_tcp_unix_and_http() {
    let Some(venv) = tools() else { return };
    for (kind, http) in [("tcp", false), ("unix", false), ("tcp", true)] {
        let dir = tempfile::tempdir().unwrap();
        let addr = match kind {
            "unix" => dir.path().join("stats.sock").display().to_string(),
            _ => format!("127.0.0.1:{}", free_port()),
        };
        let server = Server::start_in(
            dir,
            &[],
            &format!(
                "wsgi-file: {}\nprocesses: 2\nstats: {addr}\nstats-http: {http}\n",
                apps_dir().join("conformance.py").display()
            ),
        );
        // Both workers serve: connections spread over them (see `scoreboard`).
        let mut clients: Vec<Client> = (0..8).map(|_| Client::connect(server.http)).collect();
        for c in &mut clients {
            c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(c.response().status, 200);
        }
        let (pids, uwsgitop_address) = if http {
            let read = || {
                let (status, body) = http_get(&addr, "/")?;
                (status == 200).then(|| serde_json::from_str(&body).ok())?
            };
            (
                wait_for_workers_in_stats(&server, read),
                format!("http://{addr}"),
            )
        } else {
            (
                wait_for_workers_in_stats(&server, || read_stats(&addr)),
                addr.clone(),
            )
        };
        uwsgitop_shows(&venv, &uwsgitop_address, &pids);
    }
}

/// Every sample of a metrics text, as prometheus_client's parser reads it: name and labels
/// (`name{k="v",...}`, labels sorted) to value. Panics if the parser refuses the text.
fn parse_metrics(venv: &Path, text: &str) -> BTreeMap<String, f64> {
    let mut child = Command::new(venv.join("bin/python"))
        .arg(tool("parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    samples
        .into_iter()
        .map(|(name, labels, value)| {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            (format!("{name}{{{}}}", labels.join(",")), value)
        })
        .collect()
}

/// One sample's value in a metrics text, read the simple way (for polling; the assertions
/// go through the real parser).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_parse_and_count_requests_and_reloads_across_generations() {
    let Some(venv) = tools() else { return };
    let metrics = format!("127.0.0.1:{}", free_port());
    let app = std::fs::read_to_string(apps_dir().join("conformance.py")).unwrap();
    let server =
        Server::start_with_app_source(&app, &format!("processes: 2\nmetrics: {metrics}\n"));
    let scrape = || -> String {
        let (status, body) = http_get(&metrics, "/metrics").expect("the metrics answer");
        assert_eq!(status, 200, "{body}");
        body
    };
    let ok = "zerg_requests_total{class=\"2xx\"}";
    let missing = "zerg_requests_total{class=\"4xx\"}";
    let failed = "zerg_requests_total{class=\"5xx\"}";
    // Waits until the totals are exactly these, then reads them with the real parser.
    let settle = |want: [f64; 3]| -> BTreeMap<String, f64> {
        let text = wait_for("the request counters to settle", || {
            let text = scrape();
            let got = [ok, missing, failed].map(|s| sample(&text, s).unwrap_or(-1.0));
            (got == want).then_some(text)
        });
        let parsed = parse_metrics(&venv, &text);
        for (series, value) in [ok, missing, failed].into_iter().zip(want) {
            assert_eq!(parsed.get(series), Some(&value), "{series} in {parsed:?}");
        }
        parsed
    };
    let send = |path: &str, n: usize, status: u16| {
        for _ in 0..n {
            assert_eq!(server.get(path).status, status, "{path}");
        }
    };

    let before = parse_metrics(&venv, &scrape());
    assert_eq!(
        before.get(ok),
        Some(&0.0),
        "every class shows from the start"
    );
    assert_eq!(
        before.get("zerg_reloads_total{outcome=\"done\"}"),
        Some(&0.0)
    );
    send("/hello", 7, 200);
    send("/no-such-page", 3, 404);
    send("/error", 2, 500);
    let first = settle([7.0, 3.0, 2.0]);
    assert_eq!(
        first.get("zerg_generation_requests_total{class=\"2xx\",generation=\"1\"}"),
        Some(&7.0)
    );
    assert_eq!(
        first.get("zerg_request_duration_seconds_count{}"),
        Some(&12.0)
    );
    assert!(first.contains_key("zerg_worker_resident_memory_bytes{generation=\"1\",worker=\"1\"}"));
    assert!(first.contains_key("zerg_accept_queue_connections{listener=\"http:0\"}"));

    // A reload: generation 1's counts stay in the totals, and 2's add to them. The endpoint
    // is the pool's: a reload that names another address leaves it where it is, and says so.
    let config = std::fs::read_to_string(&server.config).unwrap();
    let elsewhere = format!("127.0.0.1:{}", free_port());
    std::fs::write(&server.config, config.replace(&metrics, &elsewhere)).unwrap();
    let out = server.zergctl(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        server
            .log_text()
            .contains("a reload keeps the pool's endpoints as they are"),
        "{}",
        server.log_text()
    );
    assert!(http_get(&elsewhere, "/metrics").is_none(), "nothing moved");
    let after = parse_metrics(&venv, &scrape());
    assert_eq!(after.get(ok), Some(&7.0), "the totals did not go down");
    assert_eq!(
        after.get("zerg_reloads_total{outcome=\"done\"}"),
        Some(&1.0)
    );
    assert_eq!(
        after.get("zerg_reload_duration_seconds_count{outcome=\"done\"}"),
        Some(&1.0)
    );
    assert!(
        !after.contains_key("zerg_generation_requests_total{class=\"2xx\",generation=\"1\"}"),
        "a gone generation's own series go"
    );
    send("/hello", 5, 200);
    let second = settle([12.0, 3.0, 2.0]);
    assert_eq!(
        second.get("zerg_generation_requests_total{class=\"2xx\",generation=\"2\"}"),
        Some(&5.0)
    );

    // A reload whose new generation cannot import its app is rolled back, and counted so.
    server.write_app(&std::fs::read_to_string(apps_dir().join("broken_import.py")).unwrap());
    let out = server.zergctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let rolled = parse_metrics(&venv, &scrape());
    assert_eq!(
        rolled.get("zerg_reloads_total{outcome=\"rolled_back\"}"),
        Some(&1.0)
    );
    assert_eq!(
        rolled.get("zerg_reloads_total{outcome=\"done\"}"),
        Some(&1.0)
    );
    assert_eq!(rolled.get(ok), Some(&12.0), "the totals did not go down");
    send("/hello", 1, 200);
    settle([13.0, 3.0, 2.0]);

    let (status, _) = http_get(&metrics, "/").unwrap();
    assert_eq!(status, 404, "the metrics are at /metrics only");
}

#[test]
fn zergctl_status_shows_each_workers_requests_in_flight_memory_and_busy_time() {
    let server = Server::start("conformance.py", "processes: 1\nthreads: 2\n");
    for _ in 0..3 {
        assert_eq!(server.get("/hello").status, 200);
    }
    let started = server.dir.path().join("started");
    let mut slow = Client::connect(server.http);
    slow.send(&format!(
        "GET /slow?s=30&started={} HTTP/1.1\r\nHost: x\r\n\r\n",
        started.display()
    ));
    wait_for("the slow request to be in the app", || {
        started.exists().then_some(())
    });
    let pid = server.worker_pids()[0];
    let line = wait_for("zergctl status to show the worker busy", || {
        let out = server.zergctl(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("worker 1 pid {pid} ")))?
            .to_owned();
        (line.contains(" requests 3 ") && line.contains(" in-flight 1 ") && line.contains(" busy "))
            .then_some(line)
    });
    let rss: f64 = line
        .split(" rss ")
        .nth(1)
        .and_then(|r| r.split("MiB").next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rss in {line}"));
    assert!(rss > 1.0, "{line}");
    let json = server.zergctl(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let worker = &status["generations"][0]["processes"][0];
    assert_eq!(worker["in_flight"], 1, "{status}");
    assert!(worker["busy_ms"].as_u64().is_some(), "{status}");
}

#[test]
fn stats_and_metrics_follow_a_mule_message_and_its_redelivery() {
    let Some(venv) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (hold, record) = (dir.path().join("hold"), dir.path().join("record"));
    let (stats, metrics) = (
        dir.path().join("stats.sock").display().to_string(),
        format!("127.0.0.1:{}", free_port()),
    );
    let server = Server::start(
        "farm/app.py",
        &format!(
            "processes: 1\nmule: [{h}, {h}]\nfarm: jobs:1,2\nstats: {stats}\nmetrics: {metrics}\n\
             env:\n  - FARM_RECORD={}\n  - FARM_HOLD={}\n",
            record.display(),
            hold.display(),
            h = apps_dir().join("farm/handler.py").display()
        ),
    );
    let scrape = || {
        http_get(&metrics, "/metrics")
            .expect("the metrics answer")
            .1
    };
    let sum = |text: &str, name: &str| -> f64 {
        ["1", "2"]
            .iter()
            .filter_map(|m| sample(text, &format!("{name}{{mule=\"{m}\"}}")))
            .sum()
    };
    wait_for("both mules in the stats", || {
        let mules = read_stats(&stats)?["zerg"]["mules"].as_array()?.len();
        (mules == 2).then_some(())
    });
    // A mule takes the job and holds it: the stats show it in hand.
    assert_eq!(server.get("/job/hold").status, 200);
    let holder: u64 = wait_for("a mule to take the job", || {
        std::fs::read_to_string(&hold).ok()?.trim().parse().ok()
    });
    let mule = wait_for("the stats to show the message in hand", || {
        let s = read_stats(&stats)?;
        s["zerg"]["mules"]
            .as_array()?
            .iter()
            .find(|m| m["pid"].as_u64() == Some(holder) && !m["in_hand"].is_null())
            .cloned()
    });
    assert_eq!(mule["in_hand"]["queue"], "farm:jobs", "{mule}");
    assert_eq!(mule["in_hand"]["bytes"], 4, "{mule}");
    assert_eq!(mule["farms"], serde_json::json!(["jobs"]), "{mule}");
    wait_for("one delivery counted", || {
        (sum(&scrape(), "zerg_mule_messages_delivered_total") == 1.0).then_some(())
    });
    // Killed with it in hand: the next mule in that position puts it back, and it is taken
    // (and handled) once more.
    // SAFETY: killing a mule of the server this test started.
    unsafe { libc::kill(holder as i32, libc::SIGKILL) };
    let text = wait_for("the redelivery to be counted", || {
        let text = scrape();
        let running = sample(&text, "zerg_mules{generation=\"1\",state=\"running\"}");
        (sum(&text, "zerg_mule_messages_redelivered_total") == 1.0
            && sum(&text, "zerg_mule_messages_delivered_total") == 2.0
            && running == Some(2.0))
        .then_some(text)
    });
    let parsed = parse_metrics(&venv, &text);
    assert_eq!(
        parsed.get("zerg_farm_queue_bytes{farm=\"jobs\"}"),
        Some(&0.0),
        "nothing waits in the queue"
    );
    let redelivered: f64 = ["1", "2"]
        .iter()
        .filter_map(|m| {
            parsed.get(&format!(
                "zerg_mule_messages_redelivered_total{{mule=\"{m}\"}}"
            ))
        })
        .sum();
    assert_eq!(redelivered, 1.0, "as the real parser reads it");
}

#[test]
fn a_harakiri_kill_shows_in_the_stats_and_the_metrics() {
    let Some(venv) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.sock").display().to_string();
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = Server::start_in(
        dir,
        &[],
        &format!(
            "wsgi-file: {}\nprocesses: 1\nthreads: 2\nharakiri: 1\nstats: {stats}\nmetrics: {metrics}\n",
            apps_dir().join("conformance.py").display()
        ),
    );
    let stuck = server.worker_pids();
    let mut slow = Client::connect(server.http);
    slow.send("GET /slow?s=60 HTTP/1.1\r\nHost: x\r\n\r\n");
    let worker = wait_for("the stats to count the harakiri", || {
        let s = read_stats(&stats)?;
        let w = s["workers"].as_array()?.first()?.clone();
        // A report may come between the kill and the successor's fork: pid 0 then.
        (w["harakiri_count"] == 1
            && w["pid"]
                .as_u64()
                .is_some_and(|p| p != 0 && !stuck.contains(&(p as u32))))
        .then_some(w)
    });
    assert_eq!(worker["respawn_count"], 1, "{worker}");
    let text = wait_for("the metrics to count the harakiri", || {
        let text = http_get(&metrics, "/metrics")?.1;
        (sample(&text, "zerg_harakiri_kills_total") == Some(1.0)).then_some(text)
    });
    assert_eq!(
        parse_metrics(&venv, &text).get("zerg_harakiri_kills_total{}"),
        Some(&1.0)
    );
}

/// An upgraded pool serves `stats` and `metrics` on the very sockets the old one bound: it
/// could not bind them again while the old pool holds them.
#[test]
fn stats_and_metrics_live_through_an_upgrade_of_the_pool() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut server = Server::start_with_pool_binary(
        |dir| {
            let copy = dir.join("zerg-pool-copy");
            std::fs::copy(common::bin_dir().join("zerg-pool"), &copy).unwrap();
            copy
        },
        include_str!("apps/versioned.py"),
        &format!("metrics: {metrics}\nstats: ./stats.sock\n"),
    );
    let stats = server.dir.path().join("stats.sock");
    let stats = stats.to_str().unwrap();
    assert_eq!(server.get("/").status, 200);
    let old_pool = server.pool_pid();
    let out = server.zergctl(&["upgrade-pool"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.wait_exit(DEADLINE).success(), "the old pool exits");
    // The new pool answers, and once the adopted master reports, it lists the workers.
    wait_for("the new pool's stats to list the workers", || {
        read_stats(stats).filter(|d| {
            d["pid"].as_u64() != Some(old_pool.into())
                && d["workers"].as_array().is_some_and(|w| !w.is_empty())
        })
    });
    let (status, text) = http_get(&metrics, "/metrics").expect("metrics answer");
    assert_eq!(status, 200);
    assert!(text.contains("zerg_requests_total"), "{text}");
}
