//! What the app puts in its status and headers never splits the response: a status, header
//! name or header value with CR, LF or NUL is refused, the client gets a 500 in which none of
//! those bytes appear, and the log names what was refused.

mod common;

use common::{Client, Server};

/// The paths of tests/apps/bad_headers.py, each with what the log must name.
const BAD: &[(&str, &str)] = &[
    ("/value-crlf", "bad value for header X-Evil"),
    ("/value-lf", "bad value for header X-Evil"),
    ("/value-cr", "bad value for header X-Evil"),
    ("/value-nul", "bad value for header X-Evil"),
    (
        "/name-crlf",
        r#"bad header name "X-Evil\r\nSet-Cookie: pwned=1""#,
    ),
    ("/name-lf", r#"bad header name "X-Evil\npwned""#),
    ("/name-nul", r#"bad header name "X-Evil\0pwned""#),
    ("/content-type-crlf", "bad value for header Content-Type"),
    ("/cache-control-nul", "bad value for header Cache-Control"),
    (
        "/content-length-crlf",
        "bad value for header Content-Length",
    ),
    ("/location-lf", "bad value for header Location"),
    ("/set-cookie-cr", "bad value for header Set-Cookie"),
    (
        "/status-crlf",
        r#"bad status line "200 OK\r\nSet-Cookie: pwned=1""#,
    ),
    ("/status-lf", r#"bad status line "200 OK\npwned""#),
    ("/status-nul", r#"bad status line "200 O\0Kpwned""#),
    ("/status-trailing-crlf", r#"bad status line "200 OK\r\n""#),
    ("/status-code-crlf", r#"bad status line "200\r\npwned""#),
    ("/exc-info-crlf", "bad value for header X-Evil"),
    ("/write-crlf", "bad value for header X-Evil"),
];

/// The log's entries: each starts with its timestamp line, and holds the lines up to the next
/// (an app's traceback spans several).
fn events(log: &str) -> Vec<String> {
    let mut events: Vec<String> = Vec::new();
    for line in log.lines() {
        let starts = line.len() > 20 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b'T';
        match events.last_mut() {
            Some(event) if !starts => {
                event.push('\n');
                event.push_str(line);
            }
            _ => events.push(line.to_owned()),
        }
    }
    events
}

#[test]
fn headers_with_cr_lf_or_nul_give_500_and_are_never_sent() {
    for config in ["processes: 1\n", "processes: 1\nthreads: 2\n"] {
        let server = Server::start("bad_headers.py", config);
        let worker = server.worker_pids();
        for (path, named) in BAD {
            // Raw bytes up to the close, so nothing the server sent escapes the check.
            let mut c = Client::connect(server.http);
            c.send(&format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ));
            let raw = c.read_to_close();
            let text = String::from_utf8_lossy(&raw);
            assert!(
                text.starts_with("HTTP/1.1 500 "),
                "{config:?} {path}: {text:?}"
            );
            assert!(
                !text.contains("pwned") && !raw.contains(&0),
                "{config:?} {path}: {text:?}"
            );
            let head_lines = text.split("\r\n\r\n").next().unwrap_or_default();
            assert!(
                head_lines.split("\r\n").all(|l| !l.contains(['\r', '\n'])),
                "{config:?} {path}: a bare CR or LF in the head: {text:?}"
            );
            // The same connection serves on after a refused head.
            let mut c = Client::connect(server.http);
            c.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(c.response().status, 500, "{config:?} {path}");
            c.send("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
            let ok = c.response();
            assert_eq!((ok.status, ok.text().as_str()), (200, "ok"), "{path}");
            // The log says which request and which header, escaped (no raw CR, LF or NUL).
            let path_field = format!("path=\"{path}\"");
            common::wait_for(&format!("the log entry for {path}"), || {
                events(&server.log_text())
                    .iter()
                    .any(|e| {
                        e.contains("app raised") && e.contains(&path_field) && e.contains(named)
                    })
                    .then_some(())
            });
        }
        assert_eq!(server.worker_pids(), worker, "{config:?}: a worker died");
        assert!(!server.log_text().contains("panicked"), "{config:?}");
    }
}
