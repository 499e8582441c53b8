//! The limits that replace a process (issue #22): `harakiri` and `mule-harakiri` kill one stuck
//! in a request or a message, with its Python stacks in the log; `max-requests`,
//! `reload-on-rss` and `max-worker-lifetime` replace a worker the way a chain reload does, so
//! no request fails.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::load::{keep_alive, Load};
use common::{alive, wait_for, Client, Server};
use zerg::control::ProcessKind;

/// The test app, with its marker files in a directory of the test's own.
fn start(extra: &str) -> (Server, tempfile::TempDir) {
    let marks = tempfile::tempdir().unwrap();
    let server = Server::start(
        "limits/app.py",
        &format!(
            "env:\n  - LIMITS_STUCK={}\n  - LIMITS_DONE={}\n{extra}",
            stuck_mark(marks.path()).display(),
            marks.path().join("done").display()
        ),
    );
    (server, marks)
}

fn stuck_mark(marks: &Path) -> PathBuf {
    marks.join("stuck")
}

/// The pids of the serving generation's processes of `kind`, by position.
fn pids(server: &Server, kind: ProcessKind) -> HashMap<u32, u32> {
    let status = server.wait_serving();
    let g = status
        .generations
        .iter()
        .find(|g| g.state == "serving")
        .expect("a serving generation");
    g.processes
        .iter()
        .filter(|p| p.kind == kind)
        .map(|p| (p.id, p.pid))
        .collect()
}

/// Keep-alive clients asking `/` (which answers the worker's pid); every error is a failure.
fn load_pids(addr: SocketAddr, conns: usize) -> Load<u32> {
    Load::start(conns, move |conn: &mut Option<Client>| {
        let raw = "GET / HTTP/1.1\r\nHost: load\r\n\r\n";
        let r = keep_alive(conn, || Client::try_connect(addr), raw)?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.text()));
        }
        r.text().parse().map_err(|e| format!("not a pid: {e}"))
    })
}

/// Waits until every worker of `first` (position to pid) has a successor and is gone.
fn wait_all_replaced(server: &Server, first: &HashMap<u32, u32>) {
    wait_for("every first worker to be replaced", || {
        let now = pids(server, ProcessKind::Worker);
        first
            .iter()
            .all(|(id, pid)| now.get(id).is_some_and(|p| p != pid) && !alive(*pid))
            .then_some(())
    });
}

fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn harakiri_replaces_a_worker_stuck_in_sleep_and_logs_its_stack() {
    let (server, marks) = start("processes: 2\nharakiri: 2\n");
    let before = pids(&server, ProcessKind::Worker);
    let addr = server.http;
    let stuck_client = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send("GET /stuck?why=test HTTP/1.1\r\nHost: test\r\n\r\n");
        c.try_response().map(|r| r.status)
    });
    let stuck_pid: u32 = wait_for("the stuck request to reach the app", || {
        std::fs::read_to_string(stuck_mark(marks.path()))
            .ok()?
            .parse()
            .ok()
    });
    // The stuck worker's loop is blocked (one thread): these all go to the other worker, and
    // to the stuck one's successor.
    let load = load_pids(server.http, 2);
    let answer = stuck_client.join().unwrap();
    assert!(
        answer.is_err(),
        "the stuck request's connection is closed unanswered, got {answer:?}"
    );
    let after = wait_for("a new worker in the stuck one's slot", || {
        let now = pids(&server, ProcessKind::Worker);
        (now.len() == 2 && !now.values().any(|&p| p == stuck_pid)).then_some(now)
    });
    assert!(!alive(stuck_pid));
    let slot = before
        .iter()
        .find(|(_, &p)| p == stuck_pid)
        .map(|(&id, _)| id);
    assert!(
        slot.is_some_and(|id| after[&id] != stuck_pid),
        "{before:?} {after:?}"
    );
    // The successor serves too.
    let successor = after[&slot.unwrap()];
    wait_for("the successor to answer", || {
        (server.get("/").text().parse::<u32>().ok()? == successor).then_some(())
    });
    let (_, failures) = load.finish();
    assert_no_failures(&failures);
    let log = server.log_text();
    let harakiri = log
        .lines()
        .find(|l| l.contains("HARAKIRI") && l.contains("GET /stuck?why=test"))
        .unwrap_or_else(|| panic!("no harakiri line naming the request in:\n{log}"));
    assert!(harakiri.contains(&format!("pid {stuck_pid}")), "{harakiri}");
    assert!(harakiri.contains("generation=1"), "{harakiri}");
    assert!(
        log.contains("in stuck_in_sleep"),
        "no Python stack naming the sleeping function in:\n{log}"
    );
}

#[test]
fn harakiri_fires_after_the_client_gave_up() {
    // On a thread (threads: 2), the call goes on after its client is gone.
    let (server, marks) = start("processes: 1\nthreads: 2\nharakiri: 2\n");
    let mut client = Client::connect(server.http);
    client.send("GET /stuck?why=gone HTTP/1.1\r\nHost: test\r\n\r\n");
    let stuck_pid: u32 = wait_for("the stuck request to reach the app", || {
        std::fs::read_to_string(stuck_mark(marks.path()))
            .ok()?
            .parse()
            .ok()
    });
    drop(client);
    wait_for("a new worker in the stuck one's place", || {
        let now = pids(&server, ProcessKind::Worker);
        (now.len() == 1 && !now.values().any(|&p| p == stuck_pid) && !alive(stuck_pid))
            .then_some(())
    });
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("HARAKIRI") && l.contains("GET /stuck?why=gone")),
        "no harakiri line naming the request in:\n{log}"
    );
    assert!(
        log.contains("in stuck_in_sleep"),
        "no Python stack naming the sleeping function in:\n{log}"
    );
}

#[test]
fn harakiri_leaves_a_slow_reader_alone() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("big"), vec![b'x'; 32 << 20]).unwrap();
    let (server, _marks) = start(&format!(
        "processes: 1\nharakiri: 1\nstatic-map: /files={}\n",
        files.path().display()
    ));
    let worker = pids(&server, ProcessKind::Worker)[&1];
    let mut stream = std::net::TcpStream::connect(server.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /files/big HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    // The slow reader is the scenario itself: it takes a little at a time for well past the
    // limit, the check's period and the stacks' grace. 32 MiB is more than the socket
    // buffers hold, so the worker is still sending meanwhile.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let slow_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < slow_until {
        let n = stream.read(&mut buf).unwrap();
        assert_ne!(n, 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        std::thread::sleep(Duration::from_millis(20));
    }
    stream.read_to_end(&mut got).unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert_eq!(got.len() - head_end, 32 << 20, "the whole body arrives");
    assert_eq!(pids(&server, ProcessKind::Worker)[&1], worker);
    assert!(alive(worker));
    let log = server.log_text();
    assert!(!log.contains("HARAKIRI"), "{log}");
}

#[test]
fn max_requests_replaces_each_worker_under_load_without_a_failure() {
    let (server, _marks) = start("processes: 2\nmax-requests: 30\nmax-requests-delta: 10\n");
    let first = pids(&server, ProcessKind::Worker);
    let load = load_pids(server.http, 4);
    wait_all_replaced(&server, &first);
    let (answers, failures) = load.finish();
    assert_no_failures(&failures);
    // Each first worker answered at least its own limit: 30, and 40 for worker 2.
    for (id, pid) in &first {
        let answered = answers.iter().filter(|&&p| p == *pid).count();
        let limit = 30 + (*id as usize - 1) * 10;
        assert!(
            answered >= limit,
            "worker {id} answered {answered} of {limit}"
        );
    }
    let log = server.log_text();
    assert!(log.contains("max-requests: 30; it answered"), "{log}");
    assert!(log.contains("max-requests: 40; it answered"), "{log}");
}

#[test]
fn reload_on_rss_replaces_a_worker_that_grew() {
    let (server, _marks) = start("processes: 2\nreload-on-rss: 100\n");
    let load = load_pids(server.http, 2);
    load.wait_for_more("load to flow", 20);
    let grown: u32 = server.get("/grow").text().parse().unwrap();
    wait_for("the grown worker to be replaced", || {
        let now = pids(&server, ProcessKind::Worker);
        (now.len() == 2 && !now.values().any(|&p| p == grown) && !alive(grown)).then_some(())
    });
    load.wait_for_more("load after the replacement", 20);
    let (_, failures) = load.finish();
    assert_no_failures(&failures);
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("reload-on-rss: 100 MiB; its RSS is"))
        .unwrap_or_else(|| panic!("no line naming the RSS in:\n{log}"));
    assert!(line.contains(&format!("old_pid={grown}")), "{line}");
}

#[test]
fn max_worker_lifetime_replaces_workers_without_a_failure() {
    let (server, _marks) = start("processes: 2\nmax-worker-lifetime: 3\n");
    let first = pids(&server, ProcessKind::Worker);
    let load = load_pids(server.http, 2);
    wait_all_replaced(&server, &first);
    load.wait_for_more("load after the replacements", 20);
    let (_, failures) = load.finish();
    assert_no_failures(&failures);
    assert!(server
        .log_text()
        .contains("max-worker-lifetime: 3s; it has lived"));
}

#[test]
fn a_successor_that_never_accepts_is_given_up_and_the_old_worker_serves_on() {
    let marks = tempfile::tempdir().unwrap();
    let hang = marks.path().join("hang");
    let source = format!(
        "import os, time\n\
         if os.path.exists({hang:?}):\n    time.sleep(3600)\n\
         def application(environ, start_response):\n\
         \x20   start_response('200 OK', [])\n\
         \x20   return [str(os.getpid()).encode()]\n",
        hang = hang.display().to_string()
    );
    let server = Server::start_with_app_source(
        &source,
        "processes: 1\nlazy-apps: true\nmax-worker-lifetime: 3\nready-timeout: 4\n",
    );
    let original = pids(&server, ProcessKind::Worker)[&1];
    // Every successor's import hangs from now on (the first is due in 3 s).
    std::fs::write(&hang, b"").unwrap();
    wait_for("a successor to be given up", || {
        server
            .log_text()
            .contains("did not accept within ready-timeout")
            .then_some(())
    });
    // Given up (again and again): the original worker is the one that answers.
    assert!(alive(original));
    assert_eq!(server.get("/").text(), original.to_string());
}

#[test]
fn mule_harakiri_replaces_a_stuck_mule_which_takes_its_message_again() {
    let mule = common::apps_dir().join("limits/mule.py");
    let (server, marks) = start(&format!(
        "processes: 1\nmule: {}\nmule-harakiri: 2\n",
        mule.display()
    ));
    let first = wait_for("the mule to start", || {
        pids(&server, ProcessKind::Mule).get(&1).copied()
    });
    assert_eq!(server.get("/mule-stuck").status, 200);
    let stuck: u32 = wait_for("the mule to take the message", || {
        std::fs::read_to_string(stuck_mark(marks.path()))
            .ok()?
            .parse()
            .ok()
    });
    assert_eq!(stuck, first);
    // Its successor takes the unfinished message again, and finishes it.
    let done: u32 = wait_for("the message to be finished", || {
        std::fs::read_to_string(marks.path().join("done"))
            .ok()?
            .parse()
            .ok()
    });
    assert_ne!(done, first);
    assert!(!alive(first));
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("HARAKIRI") && l.contains("mule-harakiri") && l.contains("stuck")),
        "{log}"
    );
    assert!(log.contains("in stuck_on_message"), "{log}");
}
