//! The ready gate proves the app answers: with `health-check` set, each new worker is asked
//! on its own private socket, and a generation whose workers accept but whose app does not
//! answer is rolled back at `ready-timeout`, saying which worker it waited for.

mod common;

use common::{wait_for, Server};

/// A server of `ready/answers.py` with `processes: 2`, `extra` config and its `env:` line.
fn start(extra: &str) -> Server {
    let server = Server::start(
        "ready/answers.py",
        &format!("processes: 2\n{extra}env: [VERSION=old]\n"),
    );
    assert_eq!(server.get("/").text(), "old");
    server
}

/// Rewrites the config's `env:` line and adds `more` options, for the next reload.
fn reconfigure(server: &Server, env: &str, more: &str) {
    let config = std::fs::read_to_string(&server.config).unwrap();
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("env:") {
                format!("env: [{env}]\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&server.config, config + more).unwrap();
}

/// `zergctl reload` fails with what it printed; the old generation still serves alone.
fn assert_rolled_back(server: &Server) -> String {
    let before = server.wait_serving().generations[0].generation;
    let out = server.zergctl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    let status = wait_for("the failed generation to be gone", || {
        server.status().filter(|s| s.generations.len() == 1)
    });
    assert_eq!(status.generations[0].generation, before);
    assert_eq!(server.get("/").text(), "old");
    stderr
}

#[test]
fn workers_that_accept_but_never_answer_are_rolled_back_at_ready_timeout() {
    let server = start("health-check: /up\n");
    reconfigure(
        &server,
        "VERSION=new, 'HANG_WORKERS=1,2'",
        "ready-timeout: 4\n",
    );
    let stderr = assert_rolled_back(&server);
    assert!(
        stderr.contains("not ready within ready-timeout (4s)"),
        "{stderr}"
    );
    let silent = "accepts, but its app did not answer health check GET /up";
    assert_eq!(stderr.matches(silent).count(), 2, "{stderr}");
    assert!(
        stderr.contains("worker 1 (pid") && stderr.contains("worker 2 (pid"),
        "{stderr}"
    );
}

#[test]
fn each_worker_is_checked_not_only_the_first_to_accept() {
    let server = start("health-check: /up\n");
    reconfigure(&server, "VERSION=new, HANG_WORKERS=2", "ready-timeout: 4\n");
    let stderr = assert_rolled_back(&server);
    assert!(
        stderr.contains("worker 2 (pid") && stderr.contains("did not answer"),
        "{stderr}"
    );
    assert!(!stderr.contains("worker 1"), "worker 1 answered: {stderr}");
    // The same release with both workers answering passes the gate.
    reconfigure(&server, "VERSION=new", "");
    let out = server.zergctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.get("/").text(), "new");
    let log = server.log_text();
    assert!(
        log.contains("health check GET /up passed against this worker")
            && log.contains("every worker accepts and answered the health check"),
        "{log}"
    );
}

#[test]
fn a_lazy_import_that_never_ends_is_named_at_ready_timeout() {
    let server = start("lazy-apps: true\n");
    reconfigure(&server, "VERSION=new, HANG_IMPORT=1", "ready-timeout: 4\n");
    let stderr = assert_rolled_back(&server);
    assert!(
        stderr.contains("does not accept yet (still importing the app, lazy-apps"),
        "{stderr}"
    );
}

#[test]
fn an_error_answer_fails_the_gate_without_waiting_for_the_timeout() {
    let server = start("health-check: /up\n");
    reconfigure(&server, "VERSION=new, FAIL_PATH=/up", "");
    let stderr = assert_rolled_back(&server);
    assert!(
        stderr.contains("health check GET /up answered 503"),
        "{stderr}"
    );
}
