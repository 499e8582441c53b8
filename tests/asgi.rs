//! ASGI workers through the real binaries: the scope and messages a raw ASGI app sees, held
//! against asgiref's "HTTP & WebSocket" (2.4) and "Lifespan" specs; streams both ways,
//! disconnects, lifespan startup and shutdown; reloads; mules beside ASGI workers; and
//! FastAPI and Starlette apps when `target/asgi-venv` has them (`.ci/run` makes it).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::load::{keep_alive, Load};
use common::{apps_dir, wait_for, Client, Server};
use serde_json::Value;

/// A server running `tests/apps/asgi_conformance.py` (or `app`) as an ASGI app; its events
/// file is in the returned directory.
fn start(app: &str, extra: &str) -> (Server, tempfile::TempDir) {
    let events = tempfile::tempdir().unwrap();
    let server = Server::start(
        app,
        &format!(
            "interface: asgi\nenv: ASGI_EVENTS={}\n{extra}",
            events.path().join("events").display()
        ),
    );
    (server, events)
}

fn noted(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("events")).unwrap_or_default()
}

/// What `/echo` saw of the request `raw`.
fn echo(c: &mut Client, raw: &str) -> Value {
    c.send(raw);
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn the_scope_is_what_the_asgi_spec_says() {
    let (server, _events) = start("asgi_conformance.py", "");
    let mut c = Client::connect(server.http);
    let port = c.stream().local_addr().unwrap().port();
    let seen = echo(
        &mut c,
        "GET /echo/caf%C3%A9%20x?q=1&r=%20 HTTP/1.1\r\nHost: test\r\nX-Custom: A b\r\n\r\n",
    );
    assert_eq!(seen["type"], "http");
    assert_eq!(seen["asgi"]["version"], "3.0");
    assert_eq!(seen["asgi"]["spec_version"], "2.4");
    assert_eq!(seen["http_version"], "1.1");
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["scheme"], "http");
    assert_eq!(seen["path"], "/echo/café x", "decoded, as UTF-8");
    assert_eq!(seen["raw_path"], "/echo/caf%C3%A9%20x", "as sent");
    assert_eq!(seen["query_string"], "q=1&r=%20");
    assert_eq!(seen["root_path"], "");
    assert_eq!(seen["headers_are_bytes"], true);
    let headers = seen["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["host", "test"])),
        "{headers:?}"
    );
    assert!(
        headers.contains(&serde_json::json!(["x-custom", "A b"])),
        "names in lower case, values as sent: {headers:?}"
    );
    assert_eq!(seen["client"], serde_json::json!(["127.0.0.1", port]));
    assert_eq!(
        seen["server"],
        serde_json::json!(["127.0.0.1", server.http.port()])
    );
    assert_eq!(seen["state"]["greeting"], "hello from lifespan");
    assert_eq!(seen["messages"], serde_json::json!([[0, false]]));

    let mut c = Client::connect(server.http);
    let seen = echo(&mut c, "DELETE /echo HTTP/1.0\r\n\r\n");
    assert_eq!(
        (&seen["http_version"], &seen["method"]),
        (&"1.0".into(), &"DELETE".into())
    );
}

#[test]
fn request_bodies_come_whole_streamed_or_chunked() {
    let (server, _events) = start("asgi_conformance.py", "");
    let mut c = Client::connect(server.http);
    let seen = echo(
        &mut c,
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(seen["body"], "hello");
    assert_eq!(
        seen["messages"],
        serde_json::json!([[5, false]]),
        "read first: one message"
    );

    // Past post-buffering: streamed as the app asks, more_body on all but the last.
    let big: String = (0..1 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let seen = echo(
        &mut c,
        &format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        ),
    );
    assert!(seen["body"] == big.as_str(), "the 1 MiB body arrives whole");
    let messages = seen["messages"].as_array().unwrap();
    assert!(messages.len() > 1, "{messages:?}");
    let (last, rest) = messages.split_last().unwrap();
    assert_eq!(last[1], false);
    assert!(rest.iter().all(|m| m[1] == true), "{messages:?}");

    let seen = echo(
        &mut c,
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         3\r\nhel\r\n3\r\nlo \r\n5\r\nworld\r\n0\r\n\r\n",
    );
    assert_eq!(seen["body"], "hello world");
    let messages = seen["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap()[1], false, "{messages:?}");

    // 100-continue is sent when the app first asks for the body.
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.read_head().0, 100);
    c.send("ping");
    let r = c.response();
    let seen: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(seen["body"], "ping");
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let (server, _events) = start("asgi_conformance.py", "processes: 2\n");
    let mut c = Client::connect(server.http);
    c.send(
        "GET /echo/1 HTTP/1.1\r\nHost: t\r\n\r\n\
         POST /echo/2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc\
         GET /echo/3 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    for (path, body) in [("/echo/1", ""), ("/echo/2", "abc"), ("/echo/3", "")] {
        let r = c.response();
        assert_eq!(r.status, 200);
        assert!(r.header("connection").is_none(), "kept alive");
        let seen: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (seen["path"].as_str(), seen["body"].as_str()),
            (Some(path), Some(body))
        );
    }
    let seen = echo(&mut c, "GET /echo/4 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(seen["path"], "/echo/4", "the same connection serves on");
}

#[test]
fn a_streamed_response_goes_out_chunk_by_chunk() {
    let (server, events) = start("asgi_conformance.py", "");
    let gate = events.path().join("gate");
    std::fs::write(&gate, "").unwrap();
    let mut c = Client::connect(server.http);
    c.send(&format!(
        "GET /stream?n=3&gate={} HTTP/1.1\r\nHost: t\r\n\r\n",
        gate.display()
    ));
    let (status, headers) = c.read_head();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked"));
    for i in 1..=3 {
        // Each chunk arrives before the app may send the next (the gate holds it back).
        assert_eq!(
            String::from_utf8(c.read_bytes(13)).unwrap(),
            format!("8\r\nchunk {i}\n\r\n")
        );
        let mut lines = std::fs::read_to_string(&gate).unwrap();
        lines.push_str("go\n");
        std::fs::write(&gate, lines).unwrap();
    }
    assert_eq!(c.read_bytes(5), b"0\r\n\r\n");
}

#[test]
fn a_stream_to_a_client_that_reads_nothing_holds_the_apps_send_back() {
    let (server, events) = start("asgi_conformance.py", "");
    let mut c = Client::connect(server.http);
    c.send("GET /backpressure HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_head().0, 200);
    let seen = wait_for("a send() to wait for the client", || {
        let seen = noted(&events);
        seen.contains("backpressure:").then_some(seen)
    });
    let sent: usize = seen
        .split("send waited after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the app never waited: {seen}"));
    // Socket buffers on both sides, hyper's and a few chunks in the channel: megabytes, not
    // the 64 MiB the app would send.
    assert!(
        sent < 300,
        "{sent} chunks of 64 KiB went out to a client reading nothing"
    );
}

#[test]
fn an_asgi_app_under_lazy_apps_starts_in_each_worker() {
    let (server, events) = start("asgi_conformance.py", "lazy-apps: true\nprocesses: 2\n");
    assert_eq!(
        server.get("/state").text(),
        r#"{"greeting": "hello from lifespan"}"#
    );
    let seen = noted(&events);
    let mut pids: Vec<&str> = seen
        .lines()
        .filter(|l| l.ends_with(" startup"))
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 2, "one startup per worker: {seen}");
}

#[test]
fn the_health_check_reaches_the_asgi_app_of_each_new_worker() {
    let (server, _events) = start(
        "asgi_conformance.py",
        "processes: 2\nhealth-check: /version\nready-timeout: 10\n",
    );
    assert!(server.zergctl(&["reload"]).status.success());
    // An app whose health path fails keeps the generation from serving.
    let (server, _events) = start("asgi_conformance.py", "processes: 2\n");
    let config = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(
        &server.config,
        config + "health-check: /raise\nready-timeout: 10\n",
    )
    .unwrap();
    let out = server.zergctl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("500"), "{stderr}");
}

#[test]
fn a_factory_names_the_asgi_app() {
    let server = Server::start_in(
        tempfile::tempdir().unwrap(),
        &[],
        &format!(
            "module: \"asgi_conformance:make_app()\"\npythonpath: {}\ninterface: asgi\n",
            apps_dir().display()
        ),
    );
    assert_eq!(server.get("/version").status, 200);
}

#[test]
fn a_client_gone_mid_stream_ends_the_apps_sse_loop() {
    let (server, events) = start("asgi_conformance.py", "");
    let mut c = Client::connect(server.http);
    c.send("GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_head().0, 200);
    let first = String::from_utf8(c.read_bytes(19)).unwrap();
    assert!(first.ends_with("data: tick 1\n\n\r\n"), "{first:?}");
    drop(c);
    wait_for("the app to see http.disconnect", || {
        noted(&events).contains("sse: disconnect").then_some(())
    });
}

#[test]
fn a_client_gone_mid_body_is_a_disconnect_for_the_app() {
    let (server, events) = start("asgi_conformance.py", "");
    let mut c = Client::connect(server.http);
    c.send("POST /read-slowly HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n");
    c.send_bytes(&vec![b'x'; 200 << 10]);
    drop(c);
    wait_for("the app to see http.disconnect", || {
        noted(&events)
            .contains("body: disconnect after")
            .then_some(())
    });
    assert_eq!(server.get("/version").status, 200, "the worker serves on");
}

#[test]
fn app_failures_answer_500_and_the_worker_serves_on() {
    let (server, _events) = start("asgi_conformance.py", "");
    assert_eq!(server.get("/raise").status, 500);
    assert_eq!(server.get("/return").status, 500);
    assert_eq!(server.get("/version").status, 200);
    wait_for("the failures in the log", || {
        let log = server.log_text();
        (log.contains("app raised: RuntimeError: the app failed on purpose")
            && log.contains("the ASGI app returned without sending a response"))
        .then_some(())
    });
}

#[test]
fn a_worker_whose_loop_stopped_is_replaced() {
    let (server, _events) = start("asgi_conformance.py", "");
    let before = server.worker_pids();
    let mut c = Client::connect(server.http);
    c.send("GET /stop-loop HTTP/1.1\r\nHost: t\r\n\r\n");
    // Its answer may or may not go out before the worker ends; the connection closes.
    c.read_until_closed();
    wait_for("a new worker that serves", || {
        let now = server.worker_pids();
        (now != before && server.get("/version").status == 200).then_some(())
    });
    assert!(server.log_text().contains("the ASGI event loop ended"));
}

#[test]
fn a_websocket_upgrade_is_refused_at_once() {
    let (server, _events) = start("asgi_conformance.py", "");
    let mut c = Client::connect(server.http);
    c.send(
        "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 501);
    assert!(r.text().contains("WebSockets"), "{}", r.text());
    assert!(c.is_closed());
}

#[test]
fn the_http_refusals_apply_to_asgi_requests() {
    let (server, _events) = start("asgi_conformance.py", "");
    for (raw, status) in [
        ("GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org\r\n\r\n",
            405,
        ),
        ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ] {
        let mut c = Client::connect(server.http);
        c.send(raw);
        assert_eq!(c.response().status, status, "{raw:?}");
        assert!(c.is_closed());
    }
}

#[test]
fn an_app_without_lifespan_is_served() {
    let (server, _events) = start("asgi_no_lifespan.py", "");
    assert_eq!(server.get("/").text(), "served without lifespan");
    assert!(server
        .log_text()
        .contains("does not take part in the ASGI lifespan protocol"));
}

#[test]
fn lifespan_shutdown_runs_once_the_workers_drained() {
    let (mut server, events) = start("asgi_conformance.py", "processes: 2\n");
    assert_eq!(
        server.get("/state").text(),
        r#"{"greeting": "hello from lifespan"}"#
    );
    let out = server.zergctl(&["stop"]);
    assert!(out.status.success());
    assert!(server.wait_exit(common::DEADLINE).success());
    let seen = noted(&events);
    assert_eq!(seen.matches(" startup").count(), 2, "{seen}");
    assert_eq!(seen.matches(" shutdown").count(), 2, "{seen}");
}

#[test]
fn a_stream_past_the_mercy_gets_http_disconnect_then_shutdown_runs() {
    let events = tempfile::tempdir().unwrap();
    // The harness's config gives 10 s of mercy; this one gives the old worker 2.
    let server = Server::start_in(
        tempfile::tempdir().unwrap(),
        &[],
        &format!(
            "wsgi-file: {}\ninterface: asgi\nworker-reload-mercy: 2\nreload-mercy: 4\n\
             env: ASGI_EVENTS={}\n",
            apps_dir().join("asgi_conformance.py").display(),
            events.path().join("events").display()
        ),
    );
    let mut c = Client::connect(server.http);
    c.send("GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_head().0, 200);
    let out = server.zergctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The stream flows on through the reload, until the old worker's mercy is over.
    c.read_until_closed();
    let seen = wait_for("the old worker's lifespan shutdown", || {
        let seen = noted(&events);
        seen.contains(" shutdown").then_some(seen)
    });
    let disconnect = seen.find("sse: disconnect").expect(&seen);
    assert!(disconnect < seen.find(" shutdown").unwrap(), "{seen}");
}

/// Rewrites the server's config with `env` in place of its `env:` line.
fn set_env(server: &Server, env: &str) {
    let config = std::fs::read_to_string(&server.config).unwrap();
    let config: String = config
        .lines()
        .map(|l| if l.starts_with("env:") { env } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&server.config, config + "\n").unwrap();
}

#[test]
fn a_failed_lifespan_startup_rolls_the_reload_back_with_the_apps_message() {
    let (server, events) = start("asgi_conformance.py", "processes: 2\n");
    let before = server.wait_serving().generations[0].generation;
    set_env(
        &server,
        &format!(
            "env: [ASGI_EVENTS={}, 'ASGI_FAIL_STARTUP=the database is down']",
            events.path().join("events").display()
        ),
    );
    let out = server.zergctl(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert!(stderr.contains("the database is down"), "{stderr}");
    let status = wait_for("the failed generation to be gone", || {
        server.status().filter(|s| s.generations.len() == 1)
    });
    assert_eq!(status.generations[0].generation, before);
    assert_eq!(server.get("/version").status, 200);
}

/// Keeps `conns` keep-alive connections asking `/version` until finished; every error is a
/// failure (no retries). Each answer is kept with when it was asked.
fn load(addr: SocketAddr, conns: usize) -> Load<(Instant, String)> {
    Load::start(conns, move |conn: &mut Option<Client>| {
        let asked = Instant::now();
        let raw = "GET /version HTTP/1.1\r\nHost: load\r\n\r\n";
        let r = keep_alive(conn, || Client::try_connect(addr), raw)?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.text()));
        }
        Ok((asked, r.text()))
    })
}

/// A server running the conformance app from a copy in its temp dir, whose `version` file
/// the test rewrites before each reload.
fn start_versioned(extra: &str) -> Server {
    let source = std::fs::read_to_string(apps_dir().join("asgi_conformance.py")).unwrap();
    Server::start_with_app_source(&source, &format!("interface: asgi\n{extra}"))
}

fn set_version(server: &Server, version: &str) {
    std::fs::write(server.dir.path().join("version"), version).unwrap();
}

#[test]
fn reloads_under_load_fail_no_request_of_an_asgi_app() {
    let server = start_versioned("processes: 2\n");
    let load = load(server.http, 16);
    wait_for("load to flow", || (load.answered() > 100).then_some(()));
    let mut reloaded = Vec::new();
    for i in 0..20 {
        let version = format!("v{i}");
        set_version(&server, &version);
        let asked = Instant::now();
        let out = server.zergctl(&["reload"]);
        assert!(
            out.status.success(),
            "reload {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reloaded.push((asked, Instant::now(), version));
        load.wait_for_more("traffic after the reload", 50);
    }
    let (answers, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    for (i, (_, done, version)) in reloaded.iter().enumerate() {
        let until = reloaded.get(i + 1).map(|(asked, _, _)| *asked);
        let stale = answers
            .iter()
            .filter(|(at, body)| at > done && until.is_none_or(|u| *at < u) && body != version)
            .count();
        assert_eq!(
            stale, 0,
            "after reload {i} returned, old code answered {stale} times"
        );
    }
    let status = server.wait_serving();
    assert_eq!(status.generations.len(), 1, "{status:?}");
}

#[test]
fn a_broken_asgi_release_is_rolled_back() {
    let server = start_versioned("processes: 2\n");
    set_version(&server, "good");
    assert!(server.zergctl(&["reload"]).status.success());
    server.write_app("import no_such_module_in_this_release\n");
    let load = load(server.http, 4);
    let out = server.zergctl(&["reload"]);
    let (answers, failures) = load.finish();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No module named"), "{stderr}");
    assert!(failures.is_empty(), "{failures:?}");
    assert!(answers.iter().all(|(_, body)| body == "good"));
    assert_eq!(server.get("/version").text(), "good");
}

#[test]
fn mules_run_beside_asgi_workers() {
    let record = tempfile::tempdir().unwrap();
    let record = record.path().join("record");
    let server = Server::start(
        "asgi_conformance.py",
        &format!(
            "interface: asgi\nmule: {}\nenv: FARM_ECHO_RECORD={}\n",
            apps_dir().join("farm_echo/mule.py").display(),
            record.display()
        ),
    );
    let mut c = Client::connect(server.http);
    c.send("POST /mule HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(c.response().text(), "sent");
    wait_for("the mule to take the message", || {
        let got = std::fs::read(&record).unwrap_or_default();
        got.ends_with(b"hello").then_some(())
    });
}

/// `target/asgi-venv` with FastAPI, Starlette and uvloop (`.ci/run` makes it); `None` (and a
/// skip line) without it, except under CI, where its absence fails the test.
fn venv() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/asgi-venv");
    let has = |module: &str| {
        std::process::Command::new(venv.join("bin/python"))
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has("fastapi") && has("starlette") && has("uvloop") {
        return Some(venv);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} lacks FastAPI, Starlette or uvloop: .ci/run installs them",
        venv.display()
    );
    eprintln!(
        "skipped: no FastAPI/Starlette/uvloop in {} (make it as .ci/run does)",
        venv.display()
    );
    None
}

#[test]
fn a_fastapi_app_answers_json_streams_and_sees_its_lifespan() {
    let Some(venv) = venv() else { return };
    let (server, events) = start(
        "asgi_fastapi.py",
        &format!(
            "virtualenv: {}\ncallable: app\nprocesses: 2\n",
            venv.display()
        ),
    );
    let r = server.get("/items/5?q=x");
    assert_eq!(r.status, 200, "{}", r.text());
    let item: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(item, serde_json::json!({"item_id": 5, "q": "x"}));
    assert_eq!(
        server.get("/items/five").status,
        422,
        "FastAPI's own validation"
    );
    let mut c = Client::connect(server.http);
    c.send(
        "POST /items HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: 23\r\n\r\n{\"name\": \"x\", \"n\": 1.5}",
    );
    let created: Value = serde_json::from_slice(&c.response().body).unwrap();
    assert_eq!(created, serde_json::json!({"name": "x", "n": 1.5}));
    assert_eq!(
        server.get("/state").text(),
        r#"{"greeting":"hello from fastapi"}"#
    );
    assert!(
        server.get("/sync").text().contains("thread"),
        "sync endpoints run on threads"
    );
    assert!(
        server.log_text().contains("event_loop=\"uvloop\""),
        "loop: auto found uvloop"
    );

    // Server-sent events until the client goes away.
    let mut c = Client::connect(server.http);
    c.send("GET /events HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, headers) = c.read_head();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-type")
                && v.starts_with("text/event-stream"))
    );
    let chunk = String::from_utf8(c.read_bytes(14)).unwrap();
    assert!(chunk.ends_with("data: 1\n\n\r\n"), "{chunk:?}");
    drop(c);
    wait_for("the SSE loop to end", || {
        noted(&events)
            .contains("fastapi sse: disconnect")
            .then_some(())
    });
}

#[test]
fn the_fastapi_example_answers() {
    let Some(venv) = venv() else { return };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fastapi/app.py");
    let server = Server::start(
        example.to_str().unwrap(),
        &format!(
            "interface: asgi\ncallable: app\nvirtualenv: {}\n",
            venv.display()
        ),
    );
    assert_eq!(
        server.get("/items/5?q=x").text(),
        r#"{"item_id":5,"q":"x"}"#
    );
    assert!(server.get("/whoami").text().contains("worker_pid"));
}

#[test]
fn an_app_that_imports_nothing_runs_on_uvloop() {
    // asyncio and threading are first imported by zerg: in the master's main thread, or
    // uvloop would take a worker's loop thread for the main one.
    let Some(venv) = venv() else { return };
    let (server, _events) = start(
        "asgi_no_lifespan.py",
        &format!("virtualenv: {}\nloop: uvloop\n", venv.display()),
    );
    assert_eq!(server.get("/").text(), "served without lifespan");
}

#[test]
fn a_starlette_app_answers_on_asyncio_or_uvloop() {
    let Some(venv) = venv() else { return };
    for event_loop in ["asyncio", "uvloop"] {
        let (server, _events) = start(
            "asgi_starlette.py",
            &format!(
                "virtualenv: {}\ncallable: app\nloop: {event_loop}\n",
                venv.display()
            ),
        );
        assert_eq!(server.get("/").text(), "Hello, world!");
        assert_eq!(server.get("/state").text(), "hello from starlette");
        let big = server.get("/big");
        assert_eq!(big.body.len(), 1 << 20);
        let mut c = Client::connect(server.http);
        c.send(&format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            1 << 20
        ));
        c.send_bytes(&vec![b'u'; 1 << 20]);
        assert_eq!(c.response().text(), (1 << 20).to_string());
        assert!(server
            .log_text()
            .contains(&format!("event_loop=\"{event_loop}\"")));
    }
}
