//! What zerg refuses, one raw request at a time: each case is the bytes a client sends and the
//! status it must get, and whether the connection must close after it. docs/refusals.md is the
//! same list in words. Refused requests never reach the app, and the worker
//! that refused them serves on.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Client, Server};

/// A request whose answer is the app's (200), the connection staying open.
const APP: (u16, bool) = (200, false);
/// Refused with `status`; the connection closes after it.
const fn refused(status: u16) -> (u16, bool) {
    (status, true)
}

fn chunked(path: &str, body: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
}

fn with_fields(n: usize) -> String {
    let fields: String = (0..n).map(|i| format!("X-F{i}: v\r\n")).collect();
    format!("GET / HTTP/1.1\r\n{fields}\r\n")
}

/// A request line of exactly `len` bytes: "GET /aaa... HTTP/1.1".
fn line_of(len: usize) -> String {
    let target = format!("/{}", "a".repeat(len - "GET / HTTP/1.1".len()));
    format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// A request with one field of exactly `len` bytes ("X-Big: vvv...").
fn field_of(len: usize) -> String {
    let value = "v".repeat(len - "X-Big: ".len());
    format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {value}\r\n\r\n")
}

fn cases() -> Vec<(&'static str, String, (u16, bool))> {
    let smuggle_cl_te = "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\
        Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    vec![
        // Framing (RFC 9112 §6): hyper refuses these itself.
        (
            "differing Content-Lengths",
            "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
                .into(),
            refused(400),
        ),
        (
            "Transfer-Encoding not ending in chunked",
            "POST /read HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            refused(400),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            "POST /read HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            refused(400),
        ),
        // Content-Length and Transfer-Encoding both: read by Transfer-Encoding alone, and the
        // connection closes after the answer (RFC 9112 §6.1); see the smuggling test below.
        ("Content-Length with chunked", smuggle_cl_te.into(), (200, true)),
        // Fields.
        (
            "two Host fields",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
            refused(400),
        ),
        (
            "two Content-Type fields",
            "POST /read HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nContent-Type: b\r\n\
             Content-Length: 0\r\n\r\n"
                .into(),
            refused(400),
        ),
        (
            "a field folded over two lines",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".into(),
            refused(400),
        ),
        (
            "white space before the colon",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n".into(),
            refused(400),
        ),
        (
            "NUL in a field value",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".into(),
            refused(400),
        ),
        // Request-target forms (RFC 9112 §3.2).
        ("* with GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n".into(), refused(400)),
        ("* with OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".into(), APP),
        (
            "an authority with GET",
            "GET example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            refused(400),
        ),
        (
            "CONNECT",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".into(),
            refused(405),
        ),
        (
            "the absolute form",
            "GET http://x/a?b HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            APP,
        ),
        // Bytes in the target: what RFC 3986 allows, plus what real clients send unencoded
        // and frames nothing; white space, controls, < > and ` are refused.
        ("quotes", "GET /with_\"quotes\" HTTP/1.1\r\nHost: x\r\n\r\n".into(), APP),
        ("{|}^\\", "GET /a{b}|c^d\\e HTTP/1.1\r\nHost: x\r\n\r\n".into(), APP),
        ("raw UTF-8", "GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n".into(), APP),
        ("a raw space in HTTP/1.0", "GET /a b HTTP/1.0\r\n\r\n".into(), refused(400)),
        ("a raw space in HTTP/1.1", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".into(), refused(400)),
        ("a control byte", "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n".into(), refused(400)),
        ("< and >", "GET /a<b> HTTP/1.1\r\nHost: x\r\n\r\n".into(), refused(400)),
        ("HTTP/0.9", "GET /\r\n\r\n".into(), refused(400)),
        ("HTTP/2.0 in HTTP/1 framing", "GET / HTTP/2.0\r\nHost: x\r\n\r\n".into(), refused(400)),
        // Malformed chunked bodies: the app's read raises, the client gets 400.
        ("a chunk size that is no number", chunked("/read", "zz\r\nhello\r\n0\r\n\r\n"), refused(400)),
        ("a chunk size with a sign", chunked("/read", "+5\r\nhello\r\n0\r\n\r\n"), refused(400)),
        ("a chunk without its CRLF", chunked("/read", "5\r\nhelloXX0\r\n\r\n"), refused(400)),
        (
            "a chunk size past 64 bits",
            chunked("/read", "fffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            refused(400),
        ),
        (
            "a malformed body the app swallows",
            chunked("/read-swallow", "zz\r\nhello\r\n0\r\n\r\n"),
            refused(400),
        ),
        ("a chunk extension", chunked("/read", "5;a=b\r\nhello\r\n0\r\n\r\n"), APP),
        // Trailers: never in the environ; framing and routing fields refused (RFC 9110 §6.5.1).
        (
            "Content-Length in a trailer",
            chunked("/read", "5\r\nhello\r\n0\r\nContent-Length: 7\r\n\r\n"),
            refused(400),
        ),
        (
            "Host in a trailer",
            chunked("/read", "5\r\nhello\r\n0\r\nHost: evil\r\n\r\n"),
            refused(400),
        ),
        (
            "Transfer-Encoding in a trailer",
            chunked("/read", "5\r\nhello\r\n0\r\nTransfer-Encoding: gzip\r\n\r\n"),
            refused(400),
        ),
        (
            "an ordinary trailer",
            chunked("/read", "5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n"),
            APP,
        ),
        // Limits (the defaults: limit-request-line 4094, limit-request-fields 100,
        // limit-request-field-size 8190, buffer-size 65536).
        ("a request line at the limit", line_of(4094), APP),
        ("a request line over the limit", line_of(4095), refused(414)),
        ("100 fields", with_fields(100), APP),
        ("101 fields", with_fields(101), refused(431)),
        ("a field at the limit", field_of(8190), APP),
        ("a field over the limit", field_of(8191), refused(431)),
        (
            "a head over buffer-size",
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..9)
                    .map(|i| format!("X-{i}: {}\r\n", "v".repeat(8000)))
                    .collect::<String>()
            ),
            refused(431),
        ),
    ]
}

#[test]
fn every_request_http_says_to_refuse_gets_its_4xx_and_the_worker_lives_on() {
    let server = Server::start("refusals.py", "processes: 1\nthreads: 2\n");
    let pid = server.get("/pid").text();
    let mut wrong = Vec::new();
    for (name, raw, (status, closes)) in cases() {
        let mut client = Client::connect(server.http);
        client.send(&raw);
        let response = client.response();
        if response.status != status {
            wrong.push(format!(
                "{name}: got {} ({}), expected {status}",
                response.status,
                response.text()
            ));
            continue;
        }
        if closes {
            if response.header("connection") != Some("close") || !client.is_closed() {
                wrong.push(format!("{name}: the connection stayed open"));
            }
        } else {
            // The connection serves on.
            client.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
            if client.response().text() != pid {
                wrong.push(format!("{name}: the next request was not answered"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(server.get("/pid").text(), pid, "the worker was replaced");
    let log = server.log_text();
    assert!(
        !log.contains("app raised"),
        "a client's fault blamed the app:\n{log}"
    );
    assert!(
        log.contains("the client sent a malformed request body"),
        "the log says whose fault a bad body is:\n{log}"
    );
}

#[test]
fn a_request_smuggled_behind_content_length_and_chunked_is_never_answered() {
    let server = Server::start("refusals.py", "processes: 1\n");
    let mut client = Client::connect(server.http);
    // Read by Content-Length, the body would be "5\r\n" and the rest a second request.
    client.send(
        "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let response = client.response();
    assert_eq!(response.status, 200);
    let seen = response.text();
    assert!(seen.contains("\"length\": 5"), "read by its chunks: {seen}");
    assert!(
        !seen.contains("CONTENT_LENGTH\": \"3"),
        "the Content-Length reached the app: {seen}"
    );
    assert_eq!(response.header("connection"), Some("close"));
    let rest = client.read_to_close();
    assert!(
        rest.is_empty(),
        "answered after the close: {}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn repeated_fields_reach_the_environ_joined_with_comma_space() {
    let server = Server::start("refusals.py", "processes: 1\n");
    let mut client = Client::connect(server.http);
    client.send("GET /x HTTP/1.1\r\nHost: x\r\nAccept: a\r\nAccept: b\r\nCookie: c=1\r\nCookie: d=2\r\n\r\n");
    let seen = client.response().text();
    assert!(seen.contains("\"HTTP_ACCEPT\": \"a, b\""), "{seen}");
    assert!(seen.contains("\"HTTP_COOKIE\": \"c=1; d=2\""), "{seen}");
}

#[test]
fn trailer_fields_never_reach_the_environ() {
    let server = Server::start("refusals.py", "processes: 1\n");
    let mut client = Client::connect(server.http);
    client.send(&chunked(
        "/read",
        "5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n",
    ));
    let seen = client.response().text();
    assert!(seen.contains("\"length\": 5"), "{seen}");
    assert!(!seen.contains("CHECKSUM"), "{seen}");
}

#[test]
fn the_request_limits_follow_the_config() {
    let server = Server::start(
        "refusals.py",
        "processes: 1\nlimit-request-line: 100\nlimit-request-fields: 3\n\
         limit-request-field-size: 64\nbuffer-size: 1024\n",
    );
    let status = |raw: &str| {
        let mut client = Client::connect(server.http);
        client.send(raw);
        client.response().status
    };
    assert_eq!(status(&line_of(100)), 200);
    assert_eq!(status(&line_of(101)), 414);
    assert_eq!(status(&with_fields(3)), 200);
    assert_eq!(status(&with_fields(4)), 431);
    assert_eq!(status(&field_of(64)), 200);
    assert_eq!(status(&field_of(65)), 431);
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: {v}\r\nX-B: {v}\r\n\r\n",
        v = "v".repeat(60 - 5)
    );
    assert_eq!(status(&big_head), 200);
    let server2 = Server::start("refusals.py", "processes: 1\nbuffer-size: 600\n");
    let mut client = Client::connect(server2.http);
    client.send(&format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..3)
            .map(|i| format!("X-{i}: {}\r\n", "v".repeat(200)))
            .collect::<String>()
    ));
    assert_eq!(client.response().status, 431);
}

/// An app answered without reading its body and kept `wsgi.input` alive (httpbin's 501 for a
/// chunked body under Flask): the connection's next request must still be answered. The
/// server used to hold the unread body, and with it the connection, until the client gave up.
#[test]
fn a_keep_alive_connection_serves_on_after_an_app_left_its_body_unread() {
    let server = Server::start("refusals.py", "processes: 1\nthreads: 4\n");
    let mut client = Client::connect(server.http);
    client.send(&chunked("/unread", "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"));
    assert_eq!(client.response().status, 501);
    // 5 MiB: streamed to the app, not read before the call.
    let body = vec![b'x'; 5 << 20];
    let head = format!(
        "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut writer = client_writer(&client);
    let sender = std::thread::spawn(move || {
        writer.write_all(head.as_bytes())?;
        writer.write_all(&body)
    });
    let response = client.response();
    assert_eq!(response.status, 200);
    assert!(
        response.text().contains("\"length\": 5242880"),
        "{}",
        response.text()
    );
    sender.join().unwrap().expect("the body was taken");
}

/// When more of an unread body is still to come, the connection closes after its response
/// instead of waiting for it.
#[test]
fn a_connection_whose_unread_body_is_still_coming_closes_after_its_response() {
    let server = Server::start("refusals.py", "processes: 1\nthreads: 4\n");
    let mut client = Client::connect(server.http);
    // Announces 5 MiB and sends only a part: the rest would take the client's time.
    client.send("POST /unread HTTP/1.1\r\nHost: x\r\nContent-Length: 5242880\r\n\r\n");
    client.send_bytes(&vec![b'x'; 100_000]);
    assert_eq!(client.response().status, 501);
    let started = Instant::now();
    assert!(
        client.is_closed(),
        "the connection waits for the rest of the body"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A graceful stop does not wait on a connection whose request is answered but whose body the
/// app left unread: it used to hold the worker until the client gave up.
#[test]
fn a_graceful_stop_does_not_wait_on_a_body_the_app_left_unread() {
    let mut server = Server::start("refusals.py", "processes: 2\nthreads: 4\n");
    let mut client = Client::connect(server.http);
    client.send(&chunked("/unread", "5\r\nhello\r\n0\r\n\r\n"));
    assert_eq!(client.response().status, 501);
    let started = Instant::now();
    server.signal(libc::SIGINT);
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stop took {:?}",
        started.elapsed()
    );
}

/// A second handle on the client's socket, for sending while the test reads.
fn client_writer(client: &Client) -> std::net::TcpStream {
    client.stream().try_clone().expect("clone the socket")
}

/// A client that goes away halfway through its chunked body must never look, to the app, like
/// one that sent a shorter body: the read raises.
#[test]
fn an_upload_cut_short_raises_in_the_app_instead_of_ending() {
    let server = Server::start("refusals.py", "processes: 1\nthreads: 2\n");
    // Read at once (the cut comes while the app waits for the next chunk), and read only
    // once the connection is gone.
    for path in ["/read-record", "/read-record?late"] {
        let mut client = Client::connect(server.http);
        client.send(&chunked(path, "5\r\nhello\r\n"));
        drop(client);
        let verdict = common::wait_for("the app's read to end", || {
            let last = server.get("/last").text();
            (last != "nothing yet").then_some(last)
        });
        server.get("/reset");
        assert!(verdict.ends_with("Error"), "{path}: the app read {verdict}");
    }
}
