//! `lazy-apps`: each worker imports the app after its fork, so the threads an app starts
//! while it is built (Galaxy's event loop, job manager, heartbeats) run where its requests do.

mod common;

use common::load::{self, Load};
use common::{apps_dir, wait_for, Client, Server};

fn source(app: &str) -> String {
    std::fs::read_to_string(apps_dir().join("lazy").join(app)).unwrap()
}

/// `built=PID pid=PID thread=NAME`: the app was built in the process that answers, and its
/// own thread answered.
fn assert_built_here(body: &str, thread: &str) {
    let fields: Vec<&str> = body.split(' ').collect();
    let [built, pid, name] = fields[..] else {
        panic!("not an answer from the app's thread: {body}");
    };
    assert_eq!(
        built.strip_prefix("built="),
        pid.strip_prefix("pid="),
        "{body}"
    );
    assert_eq!(name, format!("thread={thread}"), "{body}");
}

#[test]
fn threads_started_at_import_answer_in_each_worker_with_lazy_apps() {
    let server =
        Server::start_with_app_source(&source("threaded.py"), "processes: 2\nlazy-apps: true\n");
    let mut pids = std::collections::HashSet::new();
    wait_for("both workers to answer", || {
        let r = server.get("/");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_built_here(&r.text(), "answerer");
        pids.insert(r.text());
        (pids.len() == 2).then_some(())
    });
    let log = server.log_text();
    assert_eq!(
        log.matches("app imported in this worker (lazy-apps)")
            .count(),
        2,
        "{log}"
    );
    assert!(
        !log.contains("app imported ms="),
        "the master imported it: {log}"
    );
}

#[test]
fn an_asgi_apps_own_loop_thread_answers_with_lazy_apps() {
    let server = Server::start_with_app_source(
        &source("threaded_asgi.py"),
        "interface: asgi\ncallable: app\nprocesses: 2\nlazy-apps: true\n",
    );
    let r = server.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_built_here(&r.text(), "app-loop");
    assert_eq!(
        server
            .log_text()
            .matches("lifespan startup complete")
            .count(),
        2
    );
}

#[test]
fn without_lazy_apps_the_threads_are_missing_and_the_log_says_so() {
    let server = Server::start_with_app_source_env(
        &source("threaded.py"),
        "processes: 1\n",
        &[("THREADED_WAIT", "1".into())],
    );
    let r = server.get("/");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().starts_with("no thread answered"), "{}", r.text());
    let log = server.log_text();
    assert!(
        log.contains("the app started threads while it was imported")
            && log.contains("answerer")
            && log.contains("lazy-apps: true"),
        "{log}"
    );
}

#[test]
fn a_worker_whose_import_fails_rolls_the_reload_back_with_the_apps_error() {
    let server =
        Server::start_with_app_source(&source("threaded.py"), "processes: 2\nlazy-apps: true\n");
    let before = server.wait_serving().generations[0].generation;
    server.write_app(&format!(
        "raise RuntimeError('the database is down')\n{}",
        source("threaded.py")
    ));
    let out = server.zergctl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert!(stderr.contains("cannot import the app"), "{stderr}");
    assert!(
        stderr.contains("RuntimeError: the database is down"),
        "{stderr}"
    );
    let status = wait_for("the failed generation to be gone", || {
        server.status().filter(|s| s.generations.len() == 1)
    });
    assert_eq!(status.generations[0].generation, before);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn reloads_with_lazy_apps_under_load_fail_no_request() {
    let server =
        Server::start_with_app_source(&source("threaded.py"), "processes: 2\nlazy-apps: true\n");
    let addr = server.http;
    let load = Load::start(8, move |conn: &mut Option<Client>| {
        let raw = "GET / HTTP/1.1\r\nHost: load\r\n\r\n";
        let r = load::keep_alive(conn, || Client::try_connect(addr), raw)?;
        match r.status {
            200 => Ok(r.text()),
            status => Err(format!("{status}: {}", r.text())),
        }
    });
    wait_for("load to flow", || (load.answered() > 50).then_some(()));
    for i in 0..5 {
        let out = server.zergctl(&["reload"]);
        assert!(
            out.status.success(),
            "reload {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        load.wait_for_more("traffic after the reload", 50);
    }
    let (answers, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for body in &answers {
        assert_built_here(body, "answerer");
    }
    let status = server.wait_serving();
    assert_eq!(status.generations.len(), 1, "{status:?}");
}

#[test]
fn worker_env_names_each_worker_before_its_app_is_imported() {
    let server = Server::start_with_app_source(
        &source("identity.py"),
        "processes: 2\nlazy-apps: true\nworker-env: GUNICORN_WORKER_ID=%(worker)\n",
    );
    let mut seen = std::collections::HashSet::new();
    wait_for("both workers to answer", || {
        let answer = server.get("/").text();
        let (at_import, id) = answer.split_once(' ').unwrap();
        assert_eq!(at_import, id, "{answer}");
        seen.insert(answer);
        (seen.len() == 2).then_some(())
    });
}
