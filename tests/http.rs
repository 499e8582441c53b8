//! HTTP/1.1 and PEP 3333 conformance of a worker, through the real pool and zergling.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{proc_kib, Client, Server};

#[test]
fn hello_world_on_tcp_and_unix_listeners_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("http.sock");
    let rest = format!(
        "wsgi-file: {}\nprocesses: 2\n",
        common::apps_dir().join("conformance.py").display()
    );
    let server = Server::start_in(dir, &[unix.display().to_string()], &rest);

    let r = server.get("/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));

    let mut s = UnixStream::connect(&unix).unwrap();
    s.set_read_timeout(Some(common::DEADLINE)).unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.ends_with("Hello, World!"), "{out}");
}

#[test]
fn upload_of_50_mib_is_streamed_not_buffered() {
    let server = Server::start("conformance.py", "processes: 1\n");
    let worker = server.worker_pids()[0];
    let before = proc_kib(worker, "VmRSS");

    let size = 50 << 20;
    let block: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let mut crc = crc32fast::Hasher::new();
    let mut c = Client::connect(server.http);
    c.send(&format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n"
    ));
    for _ in 0..50 {
        c.send_bytes(&block);
        crc.update(&block);
    }
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("{size} {}", crc.finalize()));

    let peak = proc_kib(worker, "VmHWM");
    let grew_mib = peak.saturating_sub(before) / 1024;
    assert!(
        grew_mib < 20,
        "worker peak RSS grew by {grew_mib} MiB for a 50 MiB upload"
    );
}

#[test]
fn chunked_request_body_reaches_the_app() {
    let server = Server::start("conformance.py", "");
    let mut c = Client::connect(server.http);
    c.send(
        "POST /lines HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         6\r\none\ntw\r\n4\r\no\nth\r\n5\r\nree\n!\r\n0\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"["one\n", "two\n", "three\n", "!"]"#);
}

#[test]
fn response_of_50_mib_is_streamed_chunked() {
    let server = Server::start("conformance.py", "");
    let mut c = Client::connect(server.http);
    c.send("GET /stream?mib=50 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body.len(), 50 << 20);
    assert!(r
        .body
        .chunks(256)
        .all(|c| c.iter().enumerate().all(|(i, &b)| b == i as u8)));
}

#[test]
fn keep_alive_and_pipelining_reuse_one_connection() {
    let server = Server::start("conformance.py", "processes: 2\n");
    let mut c = Client::connect(server.http);
    c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = c.response().text();
    c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        c.response().text(),
        first,
        "a keep-alive connection stays with its worker"
    );
    // Two requests in one write: two responses, in order.
    c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().text(), "Hello, World!");
    assert_eq!(c.response().text(), first);
}

#[test]
fn head_has_headers_and_no_body() {
    let server = Server::start("conformance.py", "");
    let mut c = Client::connect(server.http);
    c.head = true;
    c.send("HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("13"));
    c.head = false;
    // The connection is still in sync: no body bytes were sent for the HEAD.
    c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().text(), "Hello, World!");
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let server = Server::start("conformance.py", "");
    let mut c = Client::connect(server.http);
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let (status, _) = c.read_head();
    assert_eq!(status, 100);
    c.send("hello");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("5 {}", crc32fast::hash(b"hello")));
}

#[test]
fn app_exception_gives_500_and_the_worker_lives_on() {
    let server = Server::start("conformance.py", "processes: 1\n");
    let pid_before = server.get("/pid").text();
    let r = server.get("/error");
    assert_eq!(r.status, 500);
    assert_eq!(
        server.get("/pid").text(),
        pid_before,
        "the same worker still serves"
    );
    common::wait_for("the traceback in the log", || {
        server
            .log_text()
            .contains("boom from the test app")
            .then_some(())
    });
}

#[test]
fn write_callable_file_wrapper_exc_info_and_close() {
    let marker = tempfile::NamedTempFile::new().unwrap();
    let server = Server::start(
        "conformance.py",
        &format!("env: ZERG_TEST_CLOSE_MARKER={}\n", marker.path().display()),
    );
    assert_eq!(server.get("/write").text(), "written and returned");
    let f = server.get("/file");
    assert_eq!((f.status, f.body.len()), (200, 100000));
    let e = server.get("/exc-info");
    assert_eq!((e.status, e.text().as_str()), (503, "recovered"));
    assert_eq!(server.get("/close").text(), "closing");
    // start_response and write kept by the app stay bound to their own, finished request.
    assert_eq!(server.get("/keep").text(), "kept");
    for _ in 0..3 {
        let r = server.get("/use-kept");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "OSError AssertionError")
        );
    }
    // Nor one it kept a weak reference to (which its reference count does not show).
    assert_eq!(server.get("/keep-weakly").text(), "kept weakly");
    for _ in 0..3 {
        assert_eq!(server.get("/use-weak").text(), "other");
    }
    common::wait_for("close() to run", || {
        std::fs::read_to_string(marker.path())
            .ok()
            .filter(|s| s.contains("closed"))
    });
}

/// The app's own Python threads keep running while the worker waits for requests and while
/// it is busy answering inline calls (the event loop keeps the GIL between calls, and lets
/// it go before it waits and regularly while it works).
#[test]
fn app_threads_run_while_the_worker_is_idle_or_busy() {
    let server = Server::start("conformance.py", "processes: 1\n");
    let ticks = || server.get("/ticker").text().parse::<u64>().unwrap();
    // Idle: the thread runs about once a millisecond; with a GIL kept by a waiting event
    // loop, not at all.
    let before = ticks();
    std::thread::sleep(Duration::from_millis(300));
    let idle = ticks() - before;
    assert!(idle >= 50, "the app's thread ran {idle} times in 300 ms");
    let before = ticks();
    let addr = server.http;
    let load_until = std::time::Instant::now() + Duration::from_secs(2);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut n = 0u32;
                while std::time::Instant::now() < load_until && n < 100_000 {
                    assert_eq!(c_get(&mut c, "/hello"), "Hello, World!");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let answered: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let ran = ticks() - before;
    // Unhindered ~1000 times in 2 s, less on a loaded machine; starved, hardly at all.
    assert!(
        ran >= 100,
        "the app's thread ran {ran} times while {answered} requests were answered"
    );
}

/// start_response refuses what a Python function of its signature would refuse, and takes
/// its parameters by name too.
#[test]
fn start_response_takes_arguments_as_a_python_function_would() {
    let server = Server::start("conformance.py", "");
    let r = server.get("/signatures");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text().lines().collect::<Vec<_>>(),
        [
            "start_response() missing 2 required positional arguments: 'status' and 'headers'",
            "start_response() missing 1 required positional argument: 'headers'",
            "start_response() takes from 2 to 3 positional arguments but 4 were given",
            "start_response() got an unexpected keyword argument 'colour'",
            "start_response() got multiple values for argument 'status'",
            "start_response: status must be a str such as \"200 OK\", not int",
        ]
    );
}

#[test]
fn environ_follows_pep_3333() {
    let server = Server::start("conformance.py", "processes: 2\nthreads: 2\n");
    let mut c = Client::connect(server.http);
    c.send(
        "POST /environ/caf%C3%A9?a=1&b=%20 HTTP/1.1\r\nHost: example.org\r\nContent-Type: text/plain\r\n\
         Content-Length: 0\r\nX-Forwarded-For: 1.2.3.4\r\nX_Forwarded_For: evil\r\nAccept: a\r\nAccept: b\r\n\
         Cookie: a=1\r\nX-Custom: c\r\nCookie: b=2\r\nUser-Agent: t\r\n\r\n",
    );
    let r = c.response();
    let body = r.text();
    for expected in [
        r#""REQUEST_METHOD": "POST""#,
        r#""PATH_INFO": "/environ/caf\u00c3\u00a9""#,
        r#""QUERY_STRING": "a=1&b=%20""#,
        r#""SCRIPT_NAME": """#,
        r#""SERVER_PROTOCOL": "HTTP/1.1""#,
        r#""SERVER_NAME": "127.0.0.1""#,
        r#""REMOTE_ADDR": "127.0.0.1""#,
        r#""CONTENT_TYPE": "text/plain""#,
        r#""CONTENT_LENGTH": "0""#,
        r#""HTTP_HOST": "example.org""#,
        r#""HTTP_X_FORWARDED_FOR": "1.2.3.4""#,
        r#""HTTP_ACCEPT": "a, b""#,
        r#""HTTP_COOKIE": "a=1; b=2""#,
        r#""HTTP_X_CUSTOM": "c""#,
        r#""HTTP_USER_AGENT": "t""#,
        r#""wsgi.url_scheme": "http""#,
        r#""wsgi.multithread": true"#,
        r#""wsgi.multiprocess": true"#,
        r#""wsgi.run_once": false"#,
    ] {
        assert!(body.contains(expected), "missing {expected} in {body}");
    }
    assert_eq!(r.status, 200, "{body}");
}

#[test]
fn validator_wrapped_app_sees_no_pep_3333_breach() {
    let server = Server::start("validated.py", "threads: 2\n");
    for path in [
        "/hello",
        "/write",
        "/file",
        "/stream?mib=2",
        "/close",
        "/environ",
        "/nothing-here",
    ] {
        let r = server.get(path);
        assert!(
            r.status == 200 || (path == "/nothing-here" && r.status == 404),
            "{path} gave {}: {}",
            r.status,
            r.text()
        );
    }
    let mut c = Client::connect(server.http);
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(c.response().status, 200);
    let log = server.log_text();
    assert!(
        !log.contains("AssertionError") && !log.contains("WSGIWarning"),
        "{log}"
    );
}

#[test]
fn static_map_serves_files_without_python_and_never_escapes() {
    let files = tempfile::tempdir().unwrap();
    let root = files.path().join("public");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("hello.txt"), "static hello").unwrap();
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(files.path().join("secret.txt"), "do not serve").unwrap();
    std::os::unix::fs::symlink(files.path().join("secret.txt"), root.join("link.txt")).unwrap();
    let server = Server::start(
        "conformance.py",
        &format!("static-map: /static={}\n", root.display()),
    );

    let r = server.get("/static/hello.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "static hello"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let modified = r.header("last-modified").expect("Last-Modified").to_owned();

    let mut c = Client::connect(server.http);
    c.send(&format!(
        "GET /static/hello.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: {modified}\r\n\r\n"
    ));
    assert_eq!(c.response().status, 304);
    c.head = true;
    c.send("HEAD /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let h = c.response();
    assert_eq!(
        (h.status, h.header("content-length")),
        (200, Some("1048576"))
    );
    c.head = false;
    c.send("GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let b = c.response();
    assert_eq!(b.status, 200);
    assert!(b.body == big, "the 1 MiB file arrives intact");

    // Missing files and escapes fall through to the app, which answers its own 404.
    for path in [
        "/static/missing.txt",
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/link.txt",
    ] {
        let r = server.get(path);
        assert_eq!((r.status, r.text().as_str()), (404, "not found"), "{path}");
    }
}

/// With `threads: 1` calls run inline on the worker's event loop (a generator's iteration and
/// streamed uploads move to the Python thread); with more threads every call runs on one. Both
/// must answer the same, whether a body is streamed to the app or read before the call (with
/// a post-buffering above 1 MiB, the 1 MiB upload is read first and handed out in 64 KiB reads).
#[test]
fn inline_and_threaded_calls_answer_alike() {
    for (threads, post_buffering) in [(1, 65536), (3, 65536), (1, 2 << 20), (3, 2 << 20)] {
        let server = Server::start(
            "conformance.py",
            &format!("threads: {threads}\npost-buffering: {post_buffering}\n"),
        );
        let ctx = format!("threads: {threads}, post-buffering: {post_buffering}");
        assert_eq!(server.get("/write").text(), "written and returned", "{ctx}");
        let f = server.get("/file");
        assert_eq!((f.status, f.body.len()), (200, 100000), "{ctx}");
        let s = server.get("/stream?mib=3");
        assert_eq!((s.status, s.body.len()), (200, 3 << 20), "{ctx}");
        assert_eq!(server.get("/error").status, 500, "{ctx}");

        let mut c = Client::connect(server.http);
        // A small body with Content-Length (read before an inline call), a 1 MiB one (streamed
        // to the app), a chunked one, then one more on the same connection.
        c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
        let r = c.response();
        assert_eq!(
            r.text(),
            format!("11 {}", crc32fast::hash(b"hello world")),
            "{ctx}"
        );
        let big = vec![b'z'; 1 << 20];
        c.send(&format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            big.len()
        ));
        c.send_bytes(&big);
        assert_eq!(
            c.response().text(),
            format!("{} {}", big.len(), crc32fast::hash(&big)),
            "{ctx}"
        );
        c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            c.response().text(),
            format!("5 {}", crc32fast::hash(b"hello")),
            "{ctx}"
        );
        let env = c_get(&mut c, "/environ");
        let multithread = format!(r#""wsgi.multithread": {}"#, threads > 1);
        assert!(env.contains(&multithread), "{ctx}: {env}");
    }
}

#[test]
fn environ_of_one_request_never_leaks_into_the_next() {
    let server = Server::start("conformance.py", "");
    let mut c = Client::connect(server.http);
    c.send("GET /environ/first?q=1 HTTP/1.1\r\nHost: x\r\nX-Only-First: yes\r\n\r\n");
    let first = c.response().text();
    assert!(first.contains(r#""HTTP_X_ONLY_FIRST": "yes""#), "{first}");
    let second = c_get(&mut c, "/environ/second");
    assert!(!second.contains("HTTP_X_ONLY_FIRST"), "{second}");
    assert!(second.contains(r#""QUERY_STRING": """#), "{second}");
    assert!(
        second.contains(r#""PATH_INFO": "/environ/second""#),
        "{second}"
    );
    assert!(second.contains(r#""REMOTE_ADDR": "127.0.0.1""#), "{second}");
}

#[test]
fn method_protocol_query_and_host_follow_each_request_of_a_connection() {
    // The connection's base environ keeps the last common method, protocol, empty query and
    // Host: each request must still see its own, inline and on threads, one at a time and
    // pipelined.
    let requests = [
        ("PURGE /environ HTTP/1.0", "", "PURGE", "", "HTTP/1.0"),
        (
            "GET /environ?q=1 HTTP/1.1",
            "Host: a",
            "GET",
            "q=1",
            "HTTP/1.1",
        ),
        ("POST /environ HTTP/1.1", "Host: a", "POST", "", "HTTP/1.1"),
        (
            "PURGE /environ HTTP/1.1",
            "Host: b",
            "PURGE",
            "",
            "HTTP/1.1",
        ),
        ("POST /environ HTTP/1.1", "Host: b", "POST", "", "HTTP/1.1"),
        ("GET /environ HTTP/1.0", "", "GET", "", "HTTP/1.0"),
        (
            "DELETE /environ?z=2 HTTP/1.1",
            "Host: b",
            "DELETE",
            "z=2",
            "HTTP/1.1",
        ),
        (
            "GET /environ HTTP/1.1",
            // (Two Host fields are refused: tests/http_refusals.rs.)
            "Host: c",
            "GET",
            "",
            "HTTP/1.1",
        ),
        ("GET /environ? HTTP/1.1", "Host: b", "GET", "", "HTTP/1.1"),
    ];
    let raw = |(request, host, ..): &(&str, &str, &str, &str, &str)| {
        let host_line = if host.is_empty() {
            String::new()
        } else {
            format!("{host}\r\n")
        };
        format!("{request}\r\n{host_line}Connection: keep-alive\r\nContent-Length: 0\r\n\r\n")
    };
    for config in ["", "threads: 2\n"] {
        let server = Server::start("conformance.py", config);
        for pipelined in [false, true] {
            let mut c = Client::connect(server.http);
            if pipelined {
                c.send(&requests.iter().map(raw).collect::<String>());
            }
            for r in &requests {
                if !pipelined {
                    c.send(&raw(r));
                }
                let (request, host, method, query, protocol) = *r;
                let env: serde_json::Value = serde_json::from_str(&c.response().text()).unwrap();
                let seen = [
                    "REQUEST_METHOD",
                    "QUERY_STRING",
                    "SERVER_PROTOCOL",
                    "HTTP_HOST",
                ]
                .map(|k| env[k].clone());
                let host = match host {
                    "" => serde_json::Value::Null,
                    h => h.replace("\r\nHost: ", ", ").replace("Host: ", "").into(),
                };
                assert_eq!(
                    seen,
                    [method.into(), query.into(), protocol.into(), host],
                    "{config:?} pipelined {pipelined}: {request}"
                );
            }
        }
    }
}

/// The environ a request sees on its connection, without REMOTE_PORT (the one key that
/// differs between connections).
fn environ_seen(c: &mut Client, raw: &str) -> serde_json::Value {
    c.send(raw);
    let r = c.response();
    assert_eq!(r.status, 200, "{raw}");
    environ_of(&r)
}

/// The environ an `/environ` response shows, without REMOTE_PORT.
fn environ_of(r: &common::Response) -> serde_json::Value {
    let mut env: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    env.as_object_mut().unwrap().remove("REMOTE_PORT");
    env
}

#[test]
fn each_request_of_a_connection_sees_the_environ_a_first_request_would() {
    // A connection's environ, let go of unchanged by the app, is made over for its next
    // request: whatever came before, a request must see what it would see first on a new
    // connection. An environ the app changed or kept must not be touched again.
    let requests = [
        "GET /environ/a?x=1 HTTP/1.1\r\nHost: h1\r\nX-One: 1\r\nX-Two: 2\r\n\r\n",
        "GET /environ/b HTTP/1.1\r\nHost: h1\r\nX-Two: 2b\r\n\r\n",
        // The same path again, then with a query, percent-encoded, and not ASCII.
        "GET /environ/b HTTP/1.1\r\nHost: h1\r\n\r\n",
        "GET /environ/b?y=2 HTTP/1.1\r\nHost: h1\r\n\r\n",
        "GET /environ/b HTTP/1.1\r\nHost: h1\r\n\r\n",
        "GET /environ/%62 HTTP/1.1\r\nHost: h1\r\n\r\n",
        "GET /environ/b HTTP/1.1\r\nHost: h1\r\n\r\n",
        "GET /environ/caf\u{e9} HTTP/1.1\r\nHost: h1\r\n\r\n",
        // Sent as UTF-8, é is c3 a9; decoded as latin-1, that is "Ã©", whose UTF-8 is what
        // this one sends: a path equal to the last one's text as UTF-8, not as latin-1.
        "GET /environ/caf\u{c3}\u{a9} HTTP/1.1\r\nHost: h1\r\n\r\n",
        "GET /environ/b HTTP/1.1\r\nHost: h1\r\n\r\n",
        // An app that moves PATH_INFO into SCRIPT_NAME, twice.
        "GET /environ/shift/b HTTP/1.1\r\nHost: h1\r\n\r\n",
        "GET /environ/shift/b HTTP/1.1\r\nHost: h1\r\n\r\n",
        "PROPFIND /environ/c HTTP/1.1\r\nHost: h2\r\nAccept: a\r\nAccept: b\r\n\r\n",
        "GET /environ/d HTTP/1.0\r\nConnection: keep-alive\r\nX-Three: 3\r\n\r\n",
        // A body the app never reads: its environ must not be the next one's.
        "POST /environ/e HTTP/1.1\r\nHost: h1\r\nContent-Length: 3\r\n\r\nabc",
        "GET /environ/input HTTP/1.1\r\nHost: h1\r\n\r\n",
        "POST /environ/input HTTP/1.1\r\nHost: h1\r\nContent-Length: 3\r\n\r\nabc",
        "GET /environ/mark?m=1 HTTP/1.1\r\nHost: h1\r\nX-Two: 2\r\n\r\n",
        "GET /environ/f HTTP/1.1\r\nHost: h1\r\nX-Two: 2\r\n\r\n",
        "GET /environ/scheme HTTP/1.1\r\nHost: h1\r\nX-Two: 2\r\n\r\n",
        "GET /environ/g HTTP/1.1\r\nHost: h1\r\nX-Two: 2\r\n\r\n",
        "GET /environ/pop HTTP/1.1\r\nHost: h1\r\nX-Two: 2\r\n\r\n",
        "GET /environ/h HTTP/1.1\r\nHost: h1\r\nX-Two: 2\r\n\r\n",
        "GET /environ/setdel HTTP/1.1\r\nHost: h1\r\nX-Two: 2\r\n\r\n",
        "GET /environ/gen HTTP/1.1\r\nHost: h1\r\nX-Two: 2\r\n\r\n",
        "GET /environ/i HTTP/1.1\r\nHost: h3\r\n\r\n",
        "GET /environ/j? HTTP/1.1\r\nHost: h3\r\nX-One: 1\r\n\r\n",
        "DELETE /environ/k HTTP/1.1\r\nHost: h3\r\nX-One: 1\r\n\r\n",
        &format!(
            "GET /environ/l HTTP/1.1\r\nHost: h3\r\nCookie: {}\r\n\r\n",
            "c".repeat(5000)
        ),
        "GET /environ/m HTTP/1.1\r\nHost: h3\r\n\r\n",
    ];
    // Each request as it is, every one changed by the app (each then starts from the base,
    // which keeps what the last one had in common), and every other one.
    let marked = |raw: &str| raw.replacen("/environ/", "/environ/mark/", 1);
    let passes: [Vec<String>; 3] = [
        requests.iter().map(|r| r.to_string()).collect(),
        requests.iter().map(|r| marked(r)).collect(),
        (requests.iter().enumerate())
            .map(|(i, r)| if i % 2 == 0 { marked(r) } else { r.to_string() })
            .collect(),
    ];
    for config in ["processes: 1\n", "processes: 1\nthreads: 2\n"] {
        let server = Server::start("conformance.py", config);
        for pass in &passes {
            let mut c = Client::connect(server.http);
            for raw in pass.iter().chain(pass) {
                let seen = environ_seen(&mut c, raw);
                let first = environ_seen(&mut Client::connect(server.http), raw);
                assert_eq!(seen, first, "{config:?}: {raw}");
            }
            // Pipelined: each request is read while the last response goes out.
            let mut c = Client::connect(server.http);
            c.send(&pass.concat());
            for raw in pass {
                let first = environ_seen(&mut Client::connect(server.http), raw);
                let seen = environ_of(&c.response());
                assert_eq!(seen, first, "{config:?} pipelined: {raw}");
            }
        }
        if config.contains("threads") {
            // An app still running after its response (a write() of its whole length) while
            // the connection's next request is made and called, and the one after.
            let mut c = Client::connect(server.http);
            let hold = "GET /environ/hold HTTP/1.1\r\nHost: h1\r\nX-Hold: 1\r\n\r\n";
            let held = environ_seen(&mut c, hold);
            assert_eq!(held["HTTP_X_HOLD"], "1");
            for raw in [
                "GET /environ/release HTTP/1.1\r\nHost: h2\r\n\r\n",
                "GET /environ/o HTTP/1.1\r\nHost: h1\r\nX-Two: 2\r\n\r\n",
            ] {
                let seen = environ_seen(&mut c, raw);
                assert_eq!(seen, environ_seen(&mut Client::connect(server.http), raw));
            }
            let held: Vec<bool> =
                serde_json::from_str(&server.get("/environ/held").text()).unwrap();
            assert_eq!(
                held,
                [true],
                "the hold ran on until the next request was called"
            );
        }
        let mut c = Client::connect(server.http);
        // The app fails with its environ in its frame; the next request is whole.
        c.send("GET /environ/raise HTTP/1.1\r\nHost: h1\r\nX-R: 1\r\n\r\n");
        assert_eq!(c.response().status, 500);
        let raw = "GET /environ/n HTTP/1.1\r\nHost: h2\r\n\r\n";
        let after = environ_seen(&mut c, raw);
        assert_eq!(after, environ_seen(&mut Client::connect(server.http), raw));
        // Kept by the app: what it holds is the request's own for good.
        let stash = "GET /environ/stash HTTP/1.1\r\nHost: h1\r\nX-S: 1\r\n\r\n";
        let stashed = environ_seen(&mut c, stash);
        environ_seen(&mut c, "GET /environ/z?q=2 HTTP/1.1\r\nHost: h9\r\n\r\n");
        let later = environ_seen(&mut c, "GET /environ/stashed HTTP/1.1\r\nHost: h1\r\n\r\n");
        assert_eq!(
            later, stashed,
            "{config:?}: the app's kept environ was changed"
        );
    }
}

#[test]
fn a_header_named_after_the_key_cache_is_full_comes_and_goes_with_its_requests() {
    // Past 256 distinct names (HEADER_KEYS_MAX, below the 320 sent here) a worker makes a
    // header's key per request: the environ made over from the last request's must still
    // tell which of its headers this one has.
    let server = Server::start("conformance.py", "processes: 1\n");
    for batch in 0..4 {
        let headers: String = (0..80)
            .map(|i| format!("X-Fill-{batch}-{i}: v\r\n"))
            .collect();
        let env = environ_seen(
            &mut Client::connect(server.http),
            &format!("GET /environ HTTP/1.1\r\nHost: x\r\n{headers}\r\n"),
        );
        assert_eq!(env[format!("HTTP_X_FILL_{batch}_79")], "v");
    }
    let mut c = Client::connect(server.http);
    for (header, expected) in [
        ("X-Late: 1\r\n", "1".into()),
        ("X-Late: 2\r\n", "2".into()),
        ("", serde_json::Value::Null),
        ("X-Late: 3\r\n", "3".into()),
    ] {
        let env = environ_seen(
            &mut c,
            &format!("GET /environ HTTP/1.1\r\nHost: x\r\n{header}\r\n"),
        );
        assert_eq!(env["HTTP_X_LATE"], expected, "after {header:?}");
    }
}

#[test]
fn connections_silent_past_the_header_timeout_are_closed_busy_ones_never() {
    // Calls on threads, so a slow app leaves the event loop (and its watchdogs) free.
    let server = Server::start("conformance.py", "threads: 4\nheader-timeout: 1\n");
    // A head that never ends (slowloris), and a kept-alive connection left idle.
    let mut slowloris = Client::connect(server.http);
    slowloris.send("GET /hello HTTP/1.1\r\nHost: x\r\n");
    let mut idle = Client::connect(server.http);
    assert_eq!(c_get(&mut idle, "/hello"), "Hello, World!");
    // Busy past the timeout: an app that takes 2.5 s, a stream that takes 2.4 s.
    let mut slow_app = Client::connect(server.http);
    slow_app.send("GET /slow?s=2.5 HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut slow_stream = Client::connect(server.http);
    slow_stream.send("GET /drip?n=4&s=0.8 HTTP/1.1\r\nHost: x\r\n\r\n");

    assert!(slowloris.is_closed(), "an unfinished head is cut off");
    assert!(idle.is_closed(), "an idle keep-alive connection is closed");
    let answered = slow_app.response();
    assert_eq!(answered.text(), "slow done", "a slow app is answered whole");
    let streamed = slow_stream.response();
    assert_eq!(streamed.text(), "....", "a slow stream is sent whole");
    // Once answered they wait for a head like any other, and are closed in turn.
    assert!(slow_app.is_closed() && slow_stream.is_closed());
    assert_eq!(
        server.get("/hello").text(),
        "Hello, World!",
        "the worker lives on"
    );
}

/// A stream goes out as fast as its client takes it. One that stops reading holds the app's
/// iterator back a few chunks ahead (the worker never buffers the whole body), and is closed
/// once its socket has taken nothing for a header-timeout, which ends the iterator and frees
/// its thread; one that reads slowly gets all of it, however long that takes. (The kernel
/// reports a full socket writable again only once about a third of its send buffer, up to
/// 4 MiB on loopback, has drained: the slow reader takes 5 MiB/s, the timeout is 2 s.)
#[test]
fn streams_wait_for_slow_readers_and_let_go_of_stalled_ones() {
    const MIB: usize = 1 << 20;
    let server = Server::start(
        "conformance.py",
        "processes: 1\nthreads: 2\nheader-timeout: 2\n",
    );
    let streams = || -> (usize, usize) {
        let v: serde_json::Value = serde_json::from_str(&server.get("/streams").text()).unwrap();
        (
            v["chunks"].as_u64().unwrap() as usize,
            v["closed"].as_u64().unwrap() as usize,
        )
    };
    let mut stalled = Client::connect(server.http);
    stalled.send("GET /stream?mib=64 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(stalled.read_head().0, 200);
    // The iterator gets as far as the socket buffers and the body channel let it (about a
    // dozen MiB on loopback), not through all 64.
    let mut last = None;
    let ahead = common::wait_for("the stalled stream to stop producing", || {
        let now = streams().0;
        std::thread::sleep(Duration::from_millis(200));
        let same = last == Some(now);
        last = Some(now);
        same.then_some(now)
    });
    assert!(
        ahead < 40,
        "{ahead} of 64 chunks produced for a client that reads nothing"
    );
    // Let go of at the timeout: the iterator is closed (its thread free again), and the
    // client gets what was already on its way, then the end.
    common::wait_for("the stalled stream's iterator to be closed", || {
        (streams().1 >= 1).then_some(())
    });
    let got = stalled.read_until_closed();
    assert!(
        got < 64 * MIB,
        "the stalled client got {got} bytes: not cut off"
    );
    assert!(
        streams().0 < 64,
        "the iterator stopped when its client went"
    );
    common::wait_for("the client's leaving in the log", || {
        let log = server.log_text();
        log.contains("the client went away before the end of its response")
            .then_some(log)
    });
    assert!(
        !server.log_text().contains("app raised"),
        "a client that leaves is no error of the app's"
    );

    // A reader slower than the app, but never a whole timeout without taking something.
    let mut slow = Client::connect(server.http);
    slow.send("GET /stream?mib=32 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(slow.read_head().0, 200);
    let mut body = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        body.extend(slow.read_bytes(512 * 1024));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The rest at full speed: every chunk "100000\r\n" + 1 MiB + "\r\n", then "0\r\n\r\n".
    let total = 32 * (8 + MIB + 2) + 5;
    body.extend(slow.read_bytes(total - body.len()));
    assert!(body.ends_with(b"\r\n0\r\n\r\n"));
    assert_eq!(&body[..8], b"100000\r\n");
    assert_eq!(
        c_get(&mut slow, "/hello"),
        "Hello, World!",
        "and the connection lives on"
    );
}

fn c_get(c: &mut Client, path: &str) -> String {
    c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let r = c.response();
    assert_eq!(r.status, 200);
    r.text()
}

#[test]
fn clients_slow_to_send_their_bodies_hold_no_app_thread() {
    // post-buffering (64 KiB by default) reads small bodies before a thread is taken.
    for threads in [1, 2] {
        let server = Server::start(
            "conformance.py",
            &format!("processes: 1\nthreads: {threads}\n"),
        );
        let mut slow: Vec<Client> = (0..threads)
            .map(|_| {
                let mut c = Client::connect(server.http);
                c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello");
                c
            })
            .collect();
        // As many incomplete bodies as the worker has app threads, and it still answers.
        assert_eq!(
            server.get("/hello").text(),
            "Hello, World!",
            "threads: {threads}"
        );
        for c in &mut slow {
            c.send("world");
            assert_eq!(
                c.response().text(),
                format!("10 {}", crc32fast::hash(b"helloworld"))
            );
        }
    }
}

#[test]
fn keep_alive_connections_are_spread_over_the_workers() {
    let server = Server::start("conformance.py", "processes: 2\n");
    // Opened at once, as a load balancer's pool does: whichever worker wakes first would
    // otherwise take the whole burst and keep it for the connections' lives.
    let mut clients: Vec<Client> = (0..16).map(|_| Client::connect(server.http)).collect();
    let mut per_worker = std::collections::HashMap::<String, usize>::new();
    for c in &mut clients {
        *per_worker.entry(c_get(c, "/pid")).or_default() += 1;
    }
    assert_eq!(
        per_worker.len(),
        2,
        "both workers hold connections: {per_worker:?}"
    );
    assert!(
        per_worker.values().all(|&n| n >= 3),
        "spread, not piled on one worker: {per_worker:?}"
    );
}

/// PEP 3333 on Content-Length: the app's value rules. A longer body is cut to it; after a
/// shorter one (logged) the connection closes; a malformed or contradictory value is the app's
/// error (500). Header names are taken in any case, and
/// sequences other than lists too.
#[test]
fn the_apps_content_length_is_kept_to() {
    let app = r#"
def application(environ, start_response):
    path = environ["PATH_INFO"]
    cl = {"/exact": "5", "/cut": "3", "/short": "9", "/bad": "5x", "/two": "5"}.get(path)
    headers = [("CONTENT-type", "text/plain")]
    if cl:
        headers.append(("content-LENGTH", cl))
    if path == "/two":
        headers.append(("Content-Length", "6"))
    if path == "/same-twice":
        headers += [("Content-Length", "5"), ("content-length", "5")]
    if path == "/tuple":
        headers = (("Content-Type", "text/x-tuple"), ("Content-Length", "5"))
    if path == "/short-stream":
        start_response("200 OK", [("Content-Length", "9")])
        return iter([b"hel", b"lo"])
    if path == "/short-write":
        write = start_response("200 OK", [("Content-Length", "9")])
        write(b"hel")
        write(b"lo")
        return []
    start_response("200 OK", headers)
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"hello"]
"#;
    for threads in [1, 2] {
        let server = Server::start_with_app_source(app, &format!("threads: {threads}\n"));
        let ctx = format!("threads: {threads}");
        let mut c = Client::connect(server.http);
        for (path, body, content_type) in [
            ("/exact", "hello", "text/plain"),
            ("/cut", "hel", "text/plain"),
            ("/same-twice", "hello", "text/plain"),
            ("/tuple", "hello", "text/x-tuple"),
            ("/none", "hello", "text/plain"),
        ] {
            c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            let r = c.response();
            let lengths: Vec<_> = r
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(lengths, [body.len().to_string()], "{ctx} {path}");
            assert_eq!(r.header("content-type"), Some(content_type), "{ctx} {path}");
            assert_eq!(r.text(), body, "{ctx} {path}: the connection stays in sync");
        }
        // HEAD answered with no body keeps the length a GET would have.
        c.head = true;
        c.send("HEAD /exact HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.response();
        assert_eq!(r.header("content-length"), Some("5"), "{ctx}");
        assert_eq!(r.header("connection"), None, "{ctx}");
        c.head = false;
        for path in ["/bad", "/two"] {
            c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(c.response().status, 500, "{ctx} {path}");
        }
        // Promised 9 bytes, gave 5: those 5, then the connection closes.
        c.send("GET /short HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.response();
        assert_eq!((r.status, r.text()), (200, "hello".to_owned()), "{ctx}");
        assert_eq!(r.header("connection"), Some("close"), "{ctx}");
        assert!(c.read_to_close().is_empty(), "{ctx}");
        assert!(
            server
                .log_text()
                .contains("body is shorter than its Content-Length"),
            "{ctx}: the cut is logged"
        );
        // Streamed (an iterator; write(), which inline queues the whole body before the head
        // goes out), the head with its 9 went out before the body fell short: the client gets
        // what there was, then the connection closes; that is logged too.
        for path in ["/short-stream", "/short-write"] {
            let mut c = Client::connect(server.http);
            c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            let (status, headers) = c.read_head();
            assert_eq!(status, 200, "{ctx} {path}");
            assert!(
                headers.contains(&("content-length".to_owned(), "9".to_owned())),
                "{ctx} {path}: {headers:?}"
            );
            assert_eq!(c.read_to_close(), b"hello", "{ctx} {path}: a cut body");
        }
        common::wait_for("both streamed cuts in the log", || {
            let cuts = server
                .log_text()
                .matches("streamed body ended short of its Content-Length")
                .count();
            (cuts == 2).then_some(())
        });
        assert_eq!(
            server.get("/exact").text(),
            "hello",
            "{ctx}: the worker lives on"
        );
    }
}

/// Requests without a body share one empty `wsgi.input`; it must read as empty in every way,
/// also from several threads at once.
#[test]
fn a_request_without_a_body_reads_an_empty_input() {
    let app = r#"
import threading
barrier = threading.Barrier(2, timeout=5)

def application(environ, start_response):
    stream = environ["wsgi.input"]
    if environ["QUERY_STRING"] == "together":
        barrier.wait()
    seen = [stream.read(), stream.read(10), stream.readline(), stream.readlines(), list(stream)]
    body = repr(seen).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;
    let empty = "[b'', b'', b'', [], []]";
    let server = Server::start_with_app_source(app, "threads: 2\n");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| server.get("/?together"));
        let b = s.spawn(|| server.get("/?together"));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((a.text(), b.text()), (empty.to_owned(), empty.to_owned()));
    let mut c = Client::connect(server.http);
    c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(c.response().text(), empty);
    // A request with a body, then one without, on the same connection.
    c.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(c.response().text(), "[b'abc', b'', b'', [], []]");
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response().text(), empty);
}

/// Frameworks answer with an iterable that has a `close()` and the whole body in its first
/// chunk, under a Content-Length: that goes out whole, answered inline with `threads: 1`. Any
/// other iterable still streams (a chunk reaches the client while the app works on the next),
/// and `close()` runs exactly once whatever happens, in both modes.
#[test]
fn response_iterables_are_answered_whole_or_streamed_and_always_closed() {
    let app = r#"
import os, time

closed = []

class Body:
    """An iterable with close(), as Flask and Django answer."""
    def __init__(self, name, chunks, fail):
        self.name, self.chunks, self.fail = name, chunks, fail
    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail:
                raise RuntimeError(f"boom before chunk {i}")
            yield chunk
        if self.fail == len(self.chunks):
            raise RuntimeError("boom at the end")
    def close(self):
        closed.append(self.name)

CASES = {
    "/whole": ([b"hello"], None, "5"),
    "/empty": ([], None, "0"),
    "/two": ([b"hel", b"lo"], None, "5"),
    "/longer": ([b"hello", b" and more"], None, "5"),
    "/no-length": ([b"hello"], None, None),
    "/fail-first": ([b"hello"], 0, "5"),
    "/fail-end": ([b"hello"], 1, "5"),
}

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/closed":
        body = " ".join(sorted(closed)).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/generator":
        def gen():
            start_response("200 OK", [("Content-Length", "5")])
            yield b"hello"
        return gen()
    if path == "/trickle":
        marker = environ["QUERY_STRING"]
        def gen():
            yield b"first"
            deadline = time.monotonic() + 120
            while not os.path.exists(marker) and time.monotonic() < deadline:
                time.sleep(0.01)
            yield b"second"
        start_response("200 OK", [("Content-Length", "11")])
        return gen()
    chunks, fail, length = CASES[path]
    headers = [("Content-Type", "text/plain")]
    if length:
        headers.append(("Content-Length", length))
    start_response("200 OK", headers)
    return Body(path, chunks, fail)
"#;
    for threads in [1, 2] {
        let server =
            Server::start_with_app_source(app, &format!("processes: 1\nthreads: {threads}\n"));
        let ctx = format!("threads: {threads}");
        let mut c = Client::connect(server.http);
        for (path, status, body) in [
            ("/whole", 200, "hello"),
            ("/empty", 200, ""),
            ("/two", 200, "hello"),
            // PEP 3333: iterating stops once the declared length is sent.
            ("/longer", 200, "hello"),
            ("/no-length", 200, "hello"),
            ("/generator", 200, "hello"),
            ("/fail-first", 500, "500 Internal Server Error\n"),
            // The app failed before its iterator ended: no answer had gone out yet.
            ("/fail-end", 500, "500 Internal Server Error\n"),
            ("/whole", 200, "hello"),
        ] {
            c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            let r = c.response();
            assert_eq!(
                (r.status, r.text().as_str()),
                (status, body),
                "{ctx} {path}"
            );
        }
        c.head = true;
        c.send("HEAD /whole HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.response().header("content-length"), Some("5"), "{ctx}");
        c.head = false;

        // A chunk short of the declared length streams: the client has it while the app is
        // still working on the next.
        let marker = server.dir.path().join(format!("go-{threads}"));
        let mut t = Client::connect(server.http);
        t.send(&format!(
            "GET /trickle?{} HTTP/1.1\r\nHost: x\r\n\r\n",
            marker.display()
        ));
        let (status, headers) = t.read_head();
        assert_eq!(status, 200, "{ctx}");
        assert!(
            headers.contains(&("content-length".to_owned(), "11".to_owned())),
            "{ctx}"
        );
        assert_eq!(t.read_bytes(5), b"first", "{ctx}");
        std::fs::write(&marker, "").unwrap();
        assert_eq!(t.read_bytes(6), b"second", "{ctx}");

        let expected = "/empty /fail-end /fail-first /longer /no-length /two /whole /whole /whole";
        common::wait_for("every iterable closed", || {
            let closed = server.get("/closed").text();
            (closed == expected).then_some(())
        });
        let log = server.log_text();
        assert!(
            log.contains("boom at the end"),
            "{ctx}: the failure is logged"
        );
        assert!(
            log.contains("goes on past its Content-Length"),
            "{ctx}: so is the body too long"
        );
    }
}
