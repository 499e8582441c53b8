//! The access log (`log-format`): off by default; one line per request in uWSGI's format or as
//! JSON, naming the worker and the generation. And `logto` reopened on SIGUSR1, for logrotate.

mod common;

use std::path::Path;

use common::{wait_for, Server};
use zerg::control::ProcessKind;

/// The log line of the request for `path`, once it is written.
fn line_for(server: &Server, path: &str) -> String {
    wait_for("the request's access log line", || {
        server
            .log_text()
            .lines()
            .find(|l| l.contains(path) && (l.contains("=> generated") || l.contains("\"uri\"")))
            .map(str::to_owned)
    })
}

#[test]
fn the_uwsgi_format_writes_one_line_per_request() {
    let server = Server::start("limits/app.py", "log-format: uwsgi\n");
    let r = server.get("/?uwsgi=1");
    assert_eq!(r.status, 200);
    let pid = r.text();
    let line = line_for(&server, "/?uwsgi=1");
    let expected = format!("[pid: {pid}|worker: 1|gen: 1] 127.0.0.1 () [",);
    assert!(line.contains(&expected), "{line}");
    let expected = format!("GET /?uwsgi=1 => generated {} bytes in ", pid.len());
    assert!(line.contains(&expected), "{line}");
    assert!(line.ends_with("msecs (HTTP/1.1 200)"), "{line}");
}

#[test]
fn the_json_format_writes_one_object_per_request() {
    let server = Server::start("limits/app.py", "log-format: json\n");
    let pid = server.get("/?json=1").text();
    let line = line_for(&server, "/?json=1");
    let object: serde_json::Value =
        serde_json::from_str(&line[line.find("{\"").expect("a JSON object")..]).unwrap();
    assert_eq!(object["pid"].to_string(), pid);
    assert_eq!(object["worker"], 1);
    assert_eq!(object["generation"], 1);
    assert_eq!(object["method"], "GET");
    assert_eq!(object["uri"], "/?json=1");
    assert_eq!(object["status"], 200);
    assert_eq!(object["size"], pid.len());
}

#[test]
fn no_request_is_logged_by_default() {
    let server = Server::start("limits/app.py", "");
    assert_eq!(server.get("/?quiet=1").status, 200);
    // The next request's worker wrote nothing for the first one: one answered after it.
    assert_eq!(server.get("/?after=1").status, 200);
    assert!(
        !server.log_text().contains("/?quiet=1"),
        "{}",
        server.log_text()
    );
}

/// Where `pid`'s stderr goes.
fn stderr_of(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap_or_default()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn sigusr1_moves_every_process_to_the_reopened_logto() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("zerg.log");
    let rotated = logs.path().join("zerg.log.1");
    let mule = common::apps_dir().join("limits/mule.py");
    let server = Server::start(
        "limits/app.py",
        &format!(
            "processes: 2\nmule: {}\nlog-format: uwsgi\nlogto: {}\n",
            mule.display(),
            log.display()
        ),
    );
    let status = server.wait_serving();
    let g = &status.generations[0];
    let mut pids: Vec<u32> = g.processes.iter().map(|p| p.pid).collect();
    pids.extend(g.master_pid);
    pids.push(server.pool_pid());
    let workers: Vec<u32> = g
        .processes
        .iter()
        .filter(|p| p.kind == ProcessKind::Worker)
        .map(|p| p.pid)
        .collect();
    assert!(
        pids.iter().all(|&p| stderr_of(p) == log),
        "every process logs to logto"
    );

    // logrotate: move the file away, then tell the pool.
    std::fs::rename(&log, &rotated).unwrap();
    server.signal(libc::SIGUSR1);
    wait_for("every process to write to the new file", || {
        pids.iter().all(|&p| stderr_of(p) == log).then_some(())
    });
    // Each worker's next request is logged in the new file, none in the old one.
    wait_for("a request of each worker logged in the new file", || {
        assert_eq!(server.get("/?after-rotation=1").status, 200);
        let new = read(&log);
        workers
            .iter()
            .all(|w| new.contains(&format!("[pid: {w}|")))
            .then_some(())
    });
    assert!(!read(&rotated).contains("after-rotation"));
    assert!(
        read(&log).contains("SIGUSR1: log reopened"),
        "{}",
        read(&log)
    );
}
