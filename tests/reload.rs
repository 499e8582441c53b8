//! Transparent restarts through the real binaries: reloads under load, rollbacks, healing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::load::{keep_alive, Load};
use common::{alive, wait_for, Client, Server};

/// An app that answers its version; the test rewrites VERSION and reloads.
fn versioned_app(version: &str) -> String {
    format!(
        r#"import os, time
VERSION = "{version}"


def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(3)
    if environ["PATH_INFO"] == "/health":
        status = os.environ.get("HEALTH_STATUS", "200 OK")
        start_response(status, [("Content-Length", "2")])
        return [b"ok"]
    body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#
    )
}

/// One answer seen by the load generator.
struct Answer {
    sent: Instant,
    version: String,
}

/// `conns` connections asking GET / on `addr`; a status other than 200 is a failure.
fn load_versions(addr: SocketAddr, conns: usize) -> Load<Answer> {
    Load::start(conns, move |conn: &mut Option<Client>| {
        let sent = Instant::now();
        let raw = "GET / HTTP/1.1\r\nHost: load\r\n\r\n";
        let r = keep_alive(conn, || Client::try_connect(addr), raw)?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.text()));
        }
        Ok(Answer {
            sent,
            version: r.text(),
        })
    })
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn reload_under_load_fails_no_request_and_leaks_nothing() {
    let server = Server::start_with_app_source(&versioned_app("v1"), "processes: 2\nthreads: 2\n");
    let pool_fds_before = open_fds(server.pool_pid());
    let first = server.wait_serving().generations[0].clone();
    let mut old_pids: Vec<u32> = first
        .processes
        .iter()
        .map(|p| p.pid)
        .chain(first.master_pid)
        .collect();

    let load = load_versions(server.http, 32);
    load.wait_for_more("load to flow", 100);
    let mut reloaded_at = Vec::new();
    for i in 0..20 {
        let version = if i % 2 == 0 { "v2" } else { "v1" };
        server.write_app(&versioned_app(version));
        let asked = Instant::now();
        let out = server.zergctl(&["reload"]);
        assert!(
            out.status.success(),
            "reload {i} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        reloaded_at.push((asked, Instant::now(), version));
        // Let some traffic reach the new generation before the next reload.
        load.wait_for_more("traffic after the reload", 50);
    }
    let (answers, failures) = load.finish();

    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Between reload i returning and reload i+1 being asked, only the new code answers.
    for (i, (_, at, version)) in reloaded_at.iter().enumerate() {
        let until = reloaded_at.get(i + 1).map(|(asked, _, _)| *asked);
        let stale = answers
            .iter()
            .filter(|a| a.sent > *at && until.is_none_or(|u| a.sent < u) && a.version != *version)
            .count();
        assert_eq!(
            stale, 0,
            "after reload {i} returned, {stale} answers still came from old code"
        );
    }

    // Nothing of the 20 old generations is left: no process, no fd in the pool.
    let status = server.wait_serving();
    assert_eq!(status.generations.len(), 1, "{status:?}");
    let last = &status.generations[0];
    assert_eq!(last.generation, 21);
    old_pids.retain(|&p| alive(p));
    assert!(
        old_pids.is_empty(),
        "processes of generation 1 still alive: {old_pids:?}"
    );
    wait_for("the pool's fd count to settle", || {
        (open_fds(server.pool_pid()) <= pool_fds_before + 1).then_some(())
    });
    // A generation's master holds: stdio, the control connection, the listener, its signal
    // pipe; and per process (2 workers), the channel a reopened log is handed on.
    let master = last.master_pid.unwrap();
    assert!(
        open_fds(master) <= 10 + 2,
        "master has {} fds open",
        open_fds(master)
    );
    let reload = status.last_reload.unwrap();
    assert!(reload.ok && reload.generation == 21, "{reload:?}");
}

#[test]
fn request_in_flight_during_reload_completes_from_the_old_generation() {
    let server = Server::start_with_app_source(&versioned_app("old"), "processes: 1\n");
    let addr = server.http;
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(common::DEADLINE)).unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    // The slow request is in the worker once the worker is busy: wait for it to be accepted.
    wait_for("the slow request to be accepted", || {
        common::established_to(addr.port()).then_some(())
    });
    server.write_app(&versioned_app("new"));
    let out = server.zergctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = slow.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("old"),
        "the in-flight request is answered by the old code: {answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(server.get("/").text(), "new");
}

/// Asserts that a reload to `broken` source (with `extra_env` for the app) is rolled back.
fn assert_rolled_back(server: &Server, broken: &str, expect_reason: &str) {
    let before = server.wait_serving().generations[0].generation;
    server.write_app(broken);
    let load = load_versions(server.http, 4);
    let out = server.zergctl(&["reload"]);
    let (answers, failures) = load.finish();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "zergctl reload must fail: {stderr}"
    );
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert!(stderr.contains(expect_reason), "{stderr}");
    assert!(
        failures.is_empty(),
        "the old generation kept serving: {failures:?}"
    );
    assert!(answers.iter().all(|a| a.version == "good"));
    let status = wait_for("the failed generation to be gone", || {
        server.status().filter(|s| s.generations.len() == 1)
    });
    assert_eq!(
        status.generations[0].generation, before,
        "only the old generation remains"
    );
    assert_eq!(server.get("/").text(), "good");
    assert!(!status.last_reload.unwrap().ok);
}

#[test]
fn broken_releases_are_rolled_back_and_the_old_generation_serves_on() {
    let server = Server::start_with_app_source(
        &versioned_app("good"),
        "processes: 2\nhealth-check: /health\nready-timeout: 5\n",
    );
    // A release that cannot import.
    assert_rolled_back(
        &server,
        "import no_such_module_in_this_release\n",
        "No module named",
    );
    // A release whose health check answers 500.
    let unhealthy = versioned_app("bad").replace(
        "os.environ.get(\"HEALTH_STATUS\", \"200 OK\")",
        "\"500 Internal Server Error\"",
    );
    assert_rolled_back(&server, &unhealthy, "answered 500");
    // A release that hangs at import.
    assert_rolled_back(
        &server,
        "import time\ntime.sleep(3600)\n",
        "not ready within ready-timeout",
    );
    // And a good release still goes through afterwards.
    server.write_app(&versioned_app("good"));
    assert!(server.zergctl(&["reload"]).status.success());
}

#[test]
fn sighup_reloads_and_status_shows_the_outcome() {
    let server = Server::start_with_app_source(&versioned_app("a"), "");
    server.write_app(&versioned_app("b"));
    server.signal(libc::SIGHUP);
    wait_for("the reload by SIGHUP", || {
        (server.get("/").text() == "b").then_some(())
    });
    wait_for("the old generation to go", || {
        let s = server.status()?;
        (s.generations.len() == 1 && s.last_reload.as_ref().is_some_and(|r| r.ok)).then_some(())
    });
    let out = server.zergctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("generation 2 serving"), "{text}");
    assert!(text.contains("last reload: ok"), "{text}");
}

#[test]
fn killed_master_is_healed_and_requests_wait_in_the_backlog() {
    let server = Server::start_with_app_source(&versioned_app("v"), "processes: 2\n");
    let g = server.wait_serving().generations[0].clone();
    // SAFETY: killing the master this test's server started.
    unsafe { libc::kill(g.master_pid.unwrap() as i32, libc::SIGKILL) };
    // Requests sent during the gap wait in the kernel backlog and are answered late.
    let addr = server.http;
    let during: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                Client::try_connect(addr)
                    .and_then(|mut c| c.request("GET / HTTP/1.1\r\nHost: load\r\n\r\n"))
            })
        })
        .collect();
    for t in during {
        let r = t.join().unwrap().expect("a request during the gap fails");
        assert_eq!((r.status, r.text().as_str()), (200, "v"));
    }
    wait_for("generation 2 to serve in place of the dead one", || {
        let s = server.status()?;
        s.generations
            .iter()
            .any(|x| x.generation == 2 && x.state == "serving")
            .then_some(())
    });
    for p in &g.processes {
        wait_for("the dead master's workers to exit", || {
            (!alive(p.pid)).then_some(())
        });
    }
}

#[test]
fn zergctl_stop_drains_and_exits() {
    let mut server = Server::start_with_app_source(&versioned_app("v"), "");
    let pids = server.all_pids();
    let out = server.zergctl(&["stop"]);
    assert!(out.status.success());
    assert!(server.wait_exit(Duration::from_secs(15)).success());
    wait_for("every process to exit", || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    });
}

#[test]
fn chain_reload_replaces_workers_one_at_a_time_without_failures() {
    let server = Server::start_with_app_source(&versioned_app("v"), "processes: 3\n");
    let before = server.wait_serving().generations[0].clone();
    let old_workers: Vec<u32> = before.processes.iter().map(|p| p.pid).collect();
    let load = load_versions(server.http, 8);
    load.wait_for_more("load to flow", 50);
    let out = server.zergctl(&["chain-reload"]);
    let (_, failures) = load.finish();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(failures.is_empty(), "{failures:?}");

    let after = wait_for("the old workers to be gone", || {
        let g = server.status()?.generations.into_iter().next()?;
        (g.processes.len() == 3).then_some(g)
    });
    assert_eq!(
        (after.generation, after.master_pid),
        (before.generation, before.master_pid)
    );
    assert!(
        after
            .processes
            .iter()
            .all(|p| !old_workers.contains(&p.pid)),
        "every worker is new"
    );
    for pid in old_workers {
        wait_for("an old worker to exit", || (!alive(pid)).then_some(()));
    }
    // One at a time: successor k accepts before old k stops, and before successor k+1 starts.
    let log = server.log_text();
    let events: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("chain reload: starting a successor")
                || l.contains("chain reload: successor accepts")
        })
        .collect();
    assert_eq!(events.len(), 6, "{events:#?}");
    for (k, pair) in events.chunks(2).enumerate() {
        let id = format!("worker={}", k + 1);
        assert!(
            pair[0].contains("starting a successor") && pair[0].contains(&id),
            "{events:#?}"
        );
        assert!(
            pair[1].contains("successor accepts") && pair[1].contains(&id),
            "{events:#?}"
        );
    }
}

#[test]
fn reloads_asked_together_are_queued_never_interleaved() {
    let server = Server::start_with_app_source(&versioned_app("q"), "processes: 1\n");
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let control = server.control.clone();
            std::thread::spawn(move || {
                common::output_within(
                    std::process::Command::new(common::bin_dir().join("zergctl"))
                        .arg("--pool")
                        .arg(control)
                        .arg("reload"),
                    common::DEADLINE,
                )
            })
        })
        .collect();
    for r in runs {
        let out = r.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Never two candidates at once: each generation starts after the previous one serves.
    let log = server.log_text();
    let steps: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("generation starting") || l.contains("generation serving"))
        .collect();
    assert!(steps.len() >= 4, "{steps:#?}");
    for pair in steps.chunks(2) {
        assert!(pair[0].contains("generation starting"), "{steps:#?}");
        assert!(
            pair.len() == 2 && pair[1].contains("generation serving"),
            "{steps:#?}"
        );
    }
    assert_eq!(server.get("/").text(), "q");
}

#[test]
fn systemd_hears_ready_and_reloading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let server = Server::start_with_app_source_env(
        &versioned_app("n"),
        "",
        &[("NOTIFY_SOCKET", path.display().to_string())],
    );
    let recv = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(recv().starts_with("READY=1"));
    assert!(server.zergctl(&["reload"]).status.success());
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let usec: u64 = reloading.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
        .parse()
        .unwrap();
    assert!(usec > 0);
    assert!(recv().starts_with("READY=1"));
}
