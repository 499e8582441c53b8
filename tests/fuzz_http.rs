//! Fuzzing the request -> environ path through the real server: generated requests with
//! arbitrary header name and value bytes, sent raw over TCP to a worker whose app echoes its
//! environ (tests/apps/echo_environ.py).
//!
//! Every request gets a well-formed response, 2xx or 4xx and never 5xx, before the connection
//! closes; the worker is the same process throughout (a panic or crash would answer with
//! nothing or from another pid). Requests made only of valid syntax are also checked field by
//! field: the environ holds each header as PEP 3333 says (latin-1 text, repeats joined, `_`
//! names dropped) and nothing of the connection's earlier requests, which the reuse of a
//! connection's environ could leak.
//!
//! Deterministic: the cases come from a fixed seed. `ZERG_FUZZ_CASES` (default 1000 per
//! worker setting) and `ZERG_FUZZ_SEED` run more or other ones; a failure prints the seed,
//! the case and its bytes, to be added to [`REGRESSIONS`].

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;

use common::Server;

/// Requests that once found a fault, or that probe a known edge; each is sent on its own
/// connection before the generated ones.
const REGRESSIONS: &[&[u8]] = &[
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Del: a\x7fb\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Space : a\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX-\xff: high byte in a name\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: \xe9\xff\x80\r\nX-Obs: \x80\xff\xe9t\xe9\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nX_Under: dropped\r\nX-Under: kept\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n",
    b"GET /echo HTTP/1.1\nHost: x\nX-Lf: only\n\n",
    b"GET /echo%00%0d%0a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-nonsense\r\n\r\n",
    b"GET /echo HTTP/2.0\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
];

/// The seed CI uses when `ZERG_FUZZ_SEED` is not set.
const SEED: u64 = 0x6865_6164;

/// How long one response may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One header line as generated: its name and value bytes, and how the line ends.
#[derive(Debug, Clone)]
struct Field {
    name: Vec<u8>,
    value: Vec<u8>,
    bare_lf: bool,
}

/// One request: valid syntax (checked field by field) or anything.
#[derive(Debug, Clone)]
struct Request {
    valid: bool,
    line: Vec<u8>,
    /// For a valid request: the path as sent and the query.
    target: Option<(String, String)>,
    fields: Vec<Field>,
}

/// Names hyper or the worker act on (framing, the connection): a valid request leaves them
/// out, so that what it tests is the environ.
const SPECIAL: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "expect",
    "upgrade",
    "te",
    "trailer",
    "content-type",
];

/// A field name of valid syntax: a token, sometimes a common one, sometimes with `_`.
fn token_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[-!#$%&'*+.^`|~0-9A-Za-z]{1,16}",
        1 => "[xX]-[a-zA-Z]{1,4}_[a-zA-Z]{1,4}",
        2 => prop::sample::select(vec![
            "Accept", "accept", "ACCEPT", "User-Agent", "Cookie", "cookie", "Referer",
            "X-Forwarded-For", "X-Forwarded-Proto", "Authorization", "Cache-Control",
            "If-None-Match", "Origin", "X-Real-IP", "X-A", "x-a", "X-B", "X_A",
        ]).prop_map(str::to_owned),
    ]
    .prop_map(|name| {
        if SPECIAL.contains(&name.to_ascii_lowercase().as_str()) {
            format!("X-{name}").into_bytes()
        } else {
            name.into_bytes()
        }
    })
}

/// A field value of valid syntax: visible ASCII, obs-text (0x80-0xFF) and inner blanks.
fn token_value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        6 => 0x21u8..0x7f,
        2 => 0x80u8..=0xff,
        1 => Just(b' '),
        1 => Just(b'\t'),
    ];
    prop_oneof![
        1 => Just(Vec::new()),
        8 => prop::collection::vec(byte, 1..40),
        1 => prop::collection::vec(0x21u8..0x7f, 200..2000),
    ]
}

/// Bytes of anything, weighted toward those HTTP gives meaning to.
fn any_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => any::<u8>(),
        4 => prop::sample::select(vec![
            b'\0', b'\r', b'\n', b' ', b'\t', b':', b'_', b'-', b'"', b'\\', b'%', 0x7f, 0x80,
            0xff, b'a', b'Z',
        ]),
    ];
    prop::collection::vec(byte, 0..max)
}

fn valid_request() -> impl Strategy<Value = Request> {
    let path = prop::collection::vec(
        prop_oneof![
            4 => "[a-zA-Z0-9._~!$&'()*+,;=:@-]{1,6}",
            1 => "%[0-9A-Fa-f]{2}",
        ],
        0..4,
    )
    .prop_map(|segments| format!("/echo/{}", segments.concat()));
    let query = prop_oneof![
        2 => Just(String::new()),
        1 => "[a-z0-9=&%+.-]{0,12}",
    ];
    let field = (token_name(), token_value(), prop::bool::weighted(0.1)).prop_map(
        |(name, value, bare_lf)| Field {
            name,
            value,
            bare_lf,
        },
    );
    (
        path,
        query,
        "[a-zA-Z0-9.:-]{0,12}",
        prop::collection::vec(field, 0..10),
    )
        .prop_map(|(path, query, host, mut fields)| {
            let target = if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{query}")
            };
            fields.insert(
                0,
                Field {
                    name: b"Host".to_vec(),
                    value: host.into_bytes(),
                    bare_lf: false,
                },
            );
            Request {
                valid: true,
                line: format!("GET {target} HTTP/1.1").into_bytes(),
                target: Some((path, query)),
                fields,
            }
        })
}

fn any_request() -> impl Strategy<Value = Request> {
    let method = prop_oneof![
        6 => Just("GET".to_owned()),
        1 => Just("POST".to_owned()),
        1 => "[A-Z]{4,8}",
        1 => "[!-~]{1,6}",
    ];
    let target = prop_oneof![
        6 => Just(b"/echo".to_vec()),
        2 => any_bytes(16).prop_map(|b| {
            let mut t = b"/echo/".to_vec();
            t.extend(b.into_iter().filter(|c| !b"\r\n ".contains(c)));
            t
        }),
        1 => prop::sample::select(vec!["*", "http://h/echo", "h:80", "//echo", "/echo?%", "/%zz"])
            .prop_map(|s| s.as_bytes().to_vec()),
    ];
    let version = prop_oneof![
        8 => Just("HTTP/1.1"),
        2 => Just("HTTP/1.0"),
        1 => prop::sample::select(vec!["HTTP/1.2", "HTTP/0.9", "http/1.1", "HTTP/1.1 ", "HTTP/11"]),
    ];
    let field = prop_oneof![
        // A valid name with any value, any name with a valid value, or both anything.
        2 => (token_name(), any_bytes(48)),
        1 => (any_bytes(16), token_value()),
        1 => (any_bytes(16), any_bytes(48)),
    ];
    let field = (field, prop::bool::weighted(0.1)).prop_map(|((name, value), bare_lf)| Field {
        name,
        value,
        bare_lf,
    });
    (method, target, version, prop::collection::vec(field, 0..12)).prop_map(
        |(method, target, version, fields)| {
            let mut line = method.into_bytes();
            line.push(b' ');
            line.extend(target);
            line.push(b' ');
            line.extend(version.as_bytes());
            Request {
                valid: false,
                line,
                target: None,
                fields,
            }
        },
    )
}

/// One connection: some valid requests, then (usually) one of anything; sent one at a time
/// or pipelined.
#[derive(Debug, Clone)]
struct Case {
    requests: Vec<Request>,
    pipelined: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(valid_request(), 0..4),
        prop::option::weighted(0.8, any_request()),
        any::<bool>(),
    )
        .prop_map(|(mut requests, last, pipelined)| {
            requests.extend(last);
            if requests.is_empty() {
                requests.push(Request {
                    valid: true,
                    line: b"GET /echo HTTP/1.1".to_vec(),
                    target: Some(("/echo".into(), String::new())),
                    fields: vec![Field {
                        name: b"Host".to_vec(),
                        value: b"x".to_vec(),
                        bare_lf: false,
                    }],
                });
            }
            Case {
                requests,
                pipelined,
            }
        })
}

impl Request {
    /// The bytes sent; `last` asks the server to close after it (the field goes right after
    /// the request line, so that whatever follows cannot keep the connection open).
    fn bytes(&self, last: bool) -> Vec<u8> {
        let mut out = self.line.clone();
        out.extend_from_slice(b"\r\n");
        if last {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        for f in &self.fields {
            out.extend_from_slice(&f.name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(&f.value);
            out.extend_from_slice(if f.bare_lf { b"\n" } else { b"\r\n" });
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The HTTP_* (and CONTENT_*) keys a valid request's environ must hold, and nothing else.
    fn expected_headers(&self, last: bool) -> BTreeMap<String, String> {
        let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
        let fields = self
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.value.clone()));
        let close = last.then(|| (b"Connection".to_vec(), b"close".to_vec()));
        for (name, value) in close.into_iter().chain(fields) {
            let name = String::from_utf8(name).unwrap().to_ascii_lowercase();
            // Leading and trailing blanks are not part of a value (RFC 9112 5.1).
            let value: String = value.trim_ascii().iter().map(|&b| char::from(b)).collect();
            match grouped.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => grouped.push((name, vec![value])),
            }
        }
        grouped
            .into_iter()
            .filter(|(name, _)| !name.contains('_'))
            .map(|(name, values)| {
                let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
                let sep = if name == "cookie" { "; " } else { ", " };
                (key, values.join(sep))
            })
            .collect()
    }
}

/// A response as read: its status and body.
#[derive(Debug)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// Reads whole responses from a connection.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl Reader {
    /// The next whole response; `None` if the server closed the connection with nothing
    /// more buffered.
    fn next(&mut self) -> Result<Option<Response>, String> {
        loop {
            if let Some((response, used)) = parse(&self.buf, self.closed)? {
                self.buf.drain(..used);
                return Ok(Some(response));
            }
            if self.closed {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(format!("closed mid-response: {}", show(&self.buf))),
                };
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => self.closed = true,
                Err(e) => return Err(format!("no response within {READ_TIMEOUT:?}: {e}")),
            }
        }
    }
}

/// One response from the front of `buf`, with how many bytes it took; `None` while more is
/// needed. `closed`: nothing more will come (a body without a length ends there).
fn parse(buf: &[u8], closed: bool) -> Result<Option<(Response, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response ({e}): {}", show(buf))),
    };
    let status = head.code.ok_or("no status")?;
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    if header("transfer-encoding").is_some() {
        return Err(format!("a chunked answer to a fuzz request: {}", show(buf)));
    }
    let body_len = match header("content-length") {
        Some(len) => len
            .trim()
            .parse::<usize>()
            .map_err(|e| format!("{e}: {len:?}"))?,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None if closed => buf.len() - head_len,
        None => return Ok(None),
    };
    if buf.len() < head_len + body_len {
        return Ok(None);
    }
    let body = buf[head_len..head_len + body_len].to_vec();
    Ok(Some((Response { status, body }, head_len + body_len)))
}

/// Bytes as a Rust byte-string literal, to paste into [`REGRESSIONS`].
fn show(bytes: &[u8]) -> String {
    format!("b\"{}\"", bytes.escape_ascii())
}

/// What a fuzz run counted.
#[derive(Default, Debug)]
struct Tally {
    by_status: BTreeMap<u16, usize>,
    valid: usize,
    valid_ok: usize,
}

/// Sends `raw` requests on one connection (all at once if `pipelined`) and checks every
/// response. `checks` holds, per request, what a valid request's environ must hold.
fn exchange(
    addr: SocketAddr,
    worker: u32,
    raw: &[Vec<u8>],
    checks: &[Option<Check>],
    pipelined: bool,
    tally: &mut Tally,
) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = Reader {
        stream,
        buf: Vec::new(),
        closed: false,
    };
    if pipelined {
        // The server may close before it has read it all: a refused request ends it.
        let _ = writer.write_all(&raw.concat());
    }
    for (i, request) in raw.iter().enumerate() {
        if !pipelined && writer.write_all(request).is_err() {
            return Err(format!(
                "request {i}: the connection closed before it was sent"
            ));
        }
        // Only a 4xx may close a connection before the last request (below); any other
        // request is answered.
        let Some(response) = reader.next().map_err(|e| format!("request {i}: {e}"))? else {
            return Err(format!("request {i}: the connection closed unanswered"));
        };
        *tally.by_status.entry(response.status).or_default() += 1;
        if !(200..300).contains(&response.status) && !(400..500).contains(&response.status) {
            return Err(format!(
                "request {i}: status {} ({})",
                response.status,
                String::from_utf8_lossy(&response.body)
            ));
        }
        if (200..300).contains(&response.status) {
            let seen: Value = serde_json::from_slice(&response.body)
                .map_err(|e| format!("request {i}: the app's answer is not JSON: {e}"))?;
            if seen["pid"] != worker {
                return Err(format!(
                    "request {i}: answered by {}, not {worker}",
                    seen["pid"]
                ));
            }
            if let Some(check) = &checks[i] {
                tally.valid_ok += 1;
                check
                    .holds(&seen["environ"])
                    .map_err(|e| format!("request {i}: {e}"))?;
            }
        }
        if checks[i].is_some() {
            tally.valid += 1;
        }
        if (400..500).contains(&response.status) {
            // A refused request may close the connection; what follows is not read.
            return Ok(());
        }
    }
    Ok(())
}

/// What a valid request's environ must hold.
struct Check {
    headers: BTreeMap<String, String>,
    path_info: String,
    query: String,
}

impl Check {
    fn holds(&self, env: &Value) -> Result<(), String> {
        let env = env.as_object().ok_or("no environ")?;
        let seen: BTreeMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("HTTP_"))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        if seen != self.headers {
            return Err(format!(
                "environ headers {seen:?}, expected {:?}",
                self.headers
            ));
        }
        let path_info = env.get("PATH_INFO").and_then(Value::as_str);
        if path_info != Some(self.path_info.as_str()) {
            return Err(format!(
                "PATH_INFO {path_info:?}, expected {:?}",
                self.path_info
            ));
        }
        let query = env.get("QUERY_STRING").and_then(Value::as_str);
        if query != Some(self.query.as_str()) {
            return Err(format!("QUERY_STRING {query:?}, expected {:?}", self.query));
        }
        if env.contains_key("CONTENT_TYPE") || env.contains_key("CONTENT_LENGTH") {
            return Err("CONTENT_* keys for a request that sent none".into());
        }
        Ok(())
    }
}

/// `%XX` decoded, as latin-1 text.
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(char::from(b));
                i += 3;
            }
            (b, _) => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    out
}

fn fuzz(config: &str) {
    let cases = env_number("ZERG_FUZZ_CASES", 1000);
    let seed = env_number("ZERG_FUZZ_SEED", SEED);
    let server = Server::start("echo_environ.py", config);
    let workers = server.worker_pids();
    let worker = workers[0];
    let mut tally = Tally::default();
    let started = Instant::now();

    for (n, raw) in REGRESSIONS.iter().enumerate() {
        if let Err(e) = exchange(
            server.http,
            worker,
            &[raw.to_vec()],
            &[None],
            false,
            &mut tally,
        ) {
            panic!("{config:?}: regression {n} {}: {e}", show(raw));
        }
    }

    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = case();
    for n in 0..cases {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let last = case.requests.len() - 1;
        let raw: Vec<Vec<u8>> = (case.requests.iter().enumerate())
            .map(|(i, r)| r.bytes(i == last))
            .collect();
        let checks: Vec<Option<Check>> = (case.requests.iter().enumerate())
            .map(|(i, r)| {
                let (path, query) = r.target.clone()?;
                r.valid.then(|| Check {
                    headers: r.expected_headers(i == last),
                    path_info: percent_decoded(&path),
                    query,
                })
            })
            .collect();
        if let Err(e) = exchange(
            server.http,
            worker,
            &raw,
            &checks,
            case.pipelined,
            &mut tally,
        ) {
            let bytes: Vec<String> = raw.iter().map(|r| show(r)).collect();
            panic!(
                "{config:?}, ZERG_FUZZ_SEED={seed}, case {n} of {cases}: {e}\n\
                 pipelined: {}\nrequests:\n{}",
                case.pipelined,
                bytes.join("\n")
            );
        }
    }

    // The worker never died, and never panicked (a panic on a tokio task leaves it alive).
    assert_eq!(
        server.worker_pids(),
        workers,
        "{config:?}: the worker changed"
    );
    let log = server.log_text();
    assert!(!log.contains("panicked"), "{config:?}: a panic in the log");
    // Valid requests are answered: a few may be refused by a rule, not most.
    assert!(
        tally.valid_ok * 10 >= tally.valid * 8,
        "{config:?}: of {} valid requests only {} answered 2xx: {tally:?}",
        tally.valid,
        tally.valid_ok
    );
    eprintln!(
        "{config:?}: {cases} cases in {:?} (seed {seed}): {tally:?}",
        started.elapsed()
    );
}

#[test]
fn arbitrary_header_bytes_get_a_2xx_or_4xx_and_never_crash_an_inline_worker() {
    fuzz("processes: 1\n");
}

#[test]
fn arbitrary_header_bytes_get_a_2xx_or_4xx_and_never_crash_a_threaded_worker() {
    fuzz("processes: 1\nthreads: 2\n");
}
