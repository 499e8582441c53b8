//! The uwsgi protocol on `socket` listeners, behind a real nginx (`uwsgi_pass` with nginx's own
//! `uwsgi_params`), compared with what the same app sees over zerg's HTTP; and malformed
//! packets sent straight to zerg.
//!
//! nginx runs as a child with its own prefix, config, logs and temp paths in a temp dir, on a
//! free 127.0.0.1 port. Without an `nginx` binary these tests say so and pass, except in CI
//! (`CI` or `ZERG_REQUIRE_NGINX` set), where `.ci/run` installs it and its absence fails them.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::load::{keep_alive, Load};
use common::{free_port, wait_for, Client, Server, DEADLINE};

/// nginx's own list of CGI variables for uWSGI, as distributions install it.
const UWSGI_PARAMS: &str = "/etc/nginx/uwsgi_params";

/// The nginx binary, if there is one.
fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

/// A running nginx, its whole process group killed on drop.
struct Nginx {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Child,
}

impl Nginx {
    /// Starts nginx with `server` as the body of its one `server` block (a `listen` on a free
    /// port is added). `None` if nginx is not installed and this is not CI.
    fn start(server: &str) -> Option<Nginx> {
        let Some(binary) = nginx_binary().filter(|_| Path::new(UWSGI_PARAMS).is_file()) else {
            assert!(
                std::env::var_os("CI").is_none()
                    && std::env::var_os("ZERG_REQUIRE_NGINX").is_none(),
                "nginx (and {UWSGI_PARAMS}) must be installed in CI: .ci/run installs nginx-light"
            );
            eprintln!("skipped: no nginx or {UWSGI_PARAMS} here (apt-get install nginx-light)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = free_port();
        // As root, nginx's workers would otherwise run as `nobody` and could not reach a
        // socket inside this test's private temp dir.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            "{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        server_name zerg.test;
{server}
    }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so that the drop kills its workers with it.
            .process_group(0)
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            dir,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            child,
        };
        wait_for("nginx to listen", || {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", nginx.error_log());
            }
            TcpStream::connect(nginx.addr).ok().map(drop)
        });
        Some(nginx)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> common::Response {
        let mut c = Client::connect(self.addr);
        c.send(&format!("GET {path} HTTP/1.1\r\nHost: zerg.test\r\n\r\n"));
        c.response()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signals the process group of the nginx this test started (its pid is the
        // group's id, see `process_group(0)`), which has not been reaped yet.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- nginx error log ----\n{}", self.error_log());
        }
    }
}

/// A location of nginx's handing its requests to `upstream`. With `mount`, the location is
/// `/mount/`, told as SCRIPT_NAME and taken off PATH_INFO (`uwsgi_modifier1 30`), so the app
/// sees the same paths under it; `extra` adds directives.
fn location(mount: Option<&str>, upstream: &str, extra: &str) -> String {
    let (path, mounted) = match mount {
        Some(m) => (
            format!("/{m}/"),
            format!("uwsgi_param SCRIPT_NAME /{m}; uwsgi_modifier1 30;"),
        ),
        None => ("/".to_owned(), String::new()),
    };
    format!(
        "        location {path} {{ include {UWSGI_PARAMS}; {mounted} {extra} uwsgi_pass {upstream}; }}\n"
    )
}

fn conformance_app() -> String {
    common::apps_dir()
        .join("conformance.py")
        .display()
        .to_string()
}

/// zerg with an HTTP listener and a uwsgi one on `uwsgi` (a port or a unix path), and `rest`.
fn zerg_with_socket(dir: tempfile::TempDir, uwsgi: &str, rest: &str) -> Server {
    let rest = format!(
        "socket: {uwsgi}\nwsgi-file: {}\nreload-mercy: 10\nworker-reload-mercy: 10\n{rest}",
        conformance_app()
    );
    Server::start_in(dir, &[], &rest)
}

fn environ_of(r: &common::Response) -> serde_json::Map<String, serde_json::Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("the environ as JSON")
}

#[test]
fn the_environ_over_nginx_is_what_nginx_sent_and_matches_http() {
    let uwsgi = format!("127.0.0.1:{}", free_port());
    let server = zerg_with_socket(tempfile::tempdir().unwrap(), &uwsgi, "");
    let locations = [
        location(None, &uwsgi, ""),
        location(Some("mount"), &uwsgi, ""),
        location(Some("tls"), &uwsgi, "uwsgi_param HTTPS on;"),
    ]
    .concat();
    let Some(nginx) = Nginx::start(&locations) else {
        return;
    };
    let request = "GET /environ/a%20b?x=1&y=%C3%A9 HTTP/1.1\r\nHost: zerg.test\r\n\
                   User-Agent: tester\r\nX-Test: yes\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n";
    let mut direct = Client::connect(server.http);
    direct.send(request);
    let direct = environ_of(&direct.response());
    let mut proxied = Client::connect(nginx.addr);
    proxied.send(request);
    let client_port = proxied.stream().local_addr().unwrap().port();
    let proxied = environ_of(&proxied.response());

    let same = [
        "REQUEST_METHOD",
        "PATH_INFO",
        "QUERY_STRING",
        "REQUEST_URI",
        "SCRIPT_NAME",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "HTTP_HOST",
        "HTTP_USER_AGENT",
        "HTTP_X_TEST",
        "HTTP_COOKIE",
        "SERVER_SOFTWARE",
        "wsgi.url_scheme",
        "wsgi.multithread",
        "wsgi.multiprocess",
        "wsgi.run_once",
        "wsgi.input_terminated",
    ];
    for key in same {
        assert_eq!(proxied.get(key), direct.get(key), "{key}");
    }
    assert_eq!(proxied["PATH_INFO"], "/environ/a b");
    assert_eq!(proxied["HTTP_COOKIE"], "a=1; b=2");
    // What nginx knows and a socket peer cannot: the client's port, nginx's virtual server.
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    assert_eq!(text(&proxied["REMOTE_PORT"]), client_port.to_string());
    assert_eq!(text(&proxied["SERVER_NAME"]), "zerg.test");
    assert_eq!(text(&proxied["SERVER_PORT"]), nginx.addr.port().to_string());
    assert_eq!(text(&direct["SERVER_PORT"]), server.http.port().to_string());
    // nginx's own keys, as uWSGI passes them on; empty CONTENT_* for a body-less request.
    assert_eq!(text(&proxied["REQUEST_SCHEME"]), "http");
    assert!(proxied.contains_key("DOCUMENT_ROOT"));
    assert_eq!(text(&proxied["CONTENT_LENGTH"]), "");
    assert!(!direct.contains_key("CONTENT_LENGTH"));

    // Mounted with `uwsgi_modifier1 30`, and behind TLS that nginx ended (HTTPS on).
    let mounted = environ_of(&nginx.get("/mount/environ/x"));
    assert_eq!(
        (text(&mounted["SCRIPT_NAME"]), text(&mounted["PATH_INFO"])),
        ("/mount".into(), "/environ/x".into())
    );
    assert_eq!(text(&mounted["wsgi.url_scheme"]), "http");
    let tls = environ_of(&nginx.get("/tls/environ/x"));
    assert_eq!(text(&tls["wsgi.url_scheme"]), "https");
    assert_eq!(text(&tls["HTTPS"]), "on");
}

#[test]
fn static_map_serves_files_on_a_uwsgi_socket_too() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("a.txt"), "static bytes").unwrap();
    let uwsgi = format!("127.0.0.1:{}", free_port());
    let rest = format!("static-map: /static={}\n", files.display());
    let _server = zerg_with_socket(dir, &uwsgi, &rest);
    let Some(nginx) = Nginx::start(&location(None, &uwsgi, "")) else {
        return;
    };
    let r = nginx.get("/static/a.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "static bytes"));
    assert_eq!(nginx.get("/static/missing.txt").status, 404);
}

/// Sends a `size`-byte body with chunked framing to `path`, block by block; returns the answer
/// and the body's CRC-32.
fn chunked_upload(addr: SocketAddr, path: &str, size: usize) -> (common::Response, u32) {
    let block: Vec<u8> = (0..=255u8).cycle().take(64 << 10).collect();
    let mut crc = crc32fast::Hasher::new();
    let mut c = Client::connect(addr);
    c.send(&format!(
        "POST {path} HTTP/1.1\r\nHost: zerg.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    ));
    let mut sent = 0;
    while sent < size {
        let chunk = &block[..block.len().min(size - sent)];
        c.send(&format!("{:x}\r\n", chunk.len()));
        c.send_bytes(chunk);
        c.send("\r\n");
        crc.update(chunk);
        sent += chunk.len();
    }
    c.send("0\r\n\r\n");
    (c.response(), crc.finalize())
}

#[test]
fn uploads_through_nginx_arrive_whole_and_streamed() {
    let uwsgi = format!("127.0.0.1:{}", free_port());
    let server = zerg_with_socket(tempfile::tempdir().unwrap(), &uwsgi, "processes: 1\n");
    let locations = [
        location(None, &uwsgi, ""),
        location(Some("unbuffered"), &uwsgi, "uwsgi_request_buffering off;"),
    ]
    .concat();
    let Some(nginx) = Nginx::start(&locations) else {
        return;
    };
    let worker = server.worker_pids()[0];
    let before = common::proc_kib(worker, "VmRSS");

    // Chunked: nginx reads it whole and sends it with CONTENT_LENGTH.
    let size = 50 << 20;
    let (r, crc) = chunked_upload(nginx.addr, "/echo", size);
    assert_eq!((r.status, r.text()), (200, format!("{size} {crc}")));
    let grew_mib = common::proc_kib(worker, "VmHWM").saturating_sub(before) / 1024;
    assert!(
        grew_mib < 20,
        "worker peak RSS grew by {grew_mib} MiB for a 50 MiB upload"
    );

    // Unbuffered, a Content-Length body streams through as it comes; a chunked one is still
    // read whole by nginx first.
    let size = 8 << 20;
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut c = Client::connect(nginx.addr);
    c.send(&format!(
        "POST /unbuffered/echo HTTP/1.1\r\nHost: zerg.test\r\nContent-Length: {size}\r\n\r\n"
    ));
    c.send_bytes(&body);
    let r = c.response();
    assert_eq!(
        (r.status, r.text()),
        (200, format!("{size} {}", crc32fast::hash(&body)))
    );
    let (r, crc) = chunked_upload(nginx.addr, "/unbuffered/echo", 1 << 20);
    assert_eq!((r.status, r.text()), (200, format!("{} {crc}", 1 << 20)));
}

#[test]
fn a_unix_socket_gets_chmod_socket_and_serves_nginx() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let server = zerg_with_socket(dir, &path.display().to_string(), "chmod-socket: 660\n");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "{mode:o}");
    let Some(nginx) = Nginx::start(&location(None, &format!("unix:{}", path.display()), "")) else {
        return;
    };
    let r = nginx.get("/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    let status = server.wait_serving();
    let listener = status
        .listeners
        .iter()
        .find(|l| l.name == "uwsgi:0")
        .expect("the uwsgi listener in the status");
    assert_eq!(listener.protocol, zerg::config::Protocol::Uwsgi);
}

#[test]
fn a_keep_alive_client_of_nginx_gets_every_answer() {
    let uwsgi = format!("127.0.0.1:{}", free_port());
    let _server = zerg_with_socket(tempfile::tempdir().unwrap(), &uwsgi, "processes: 2\n");
    let Some(nginx) = Nginx::start(&location(None, &uwsgi, "")) else {
        return;
    };
    let mut c = Client::connect(nginx.addr);
    for i in 0..40 {
        let (r, expect) = if i % 2 == 0 {
            c.send("GET /hello HTTP/1.1\r\nHost: zerg.test\r\n\r\n");
            (c.response(), "Hello, World!".to_owned())
        } else {
            let body = format!("body {i}");
            c.send(&format!(
                "POST /echo HTTP/1.1\r\nHost: zerg.test\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
            let crc = crc32fast::hash(body.as_bytes());
            (c.response(), format!("{} {crc}", body.len()))
        };
        assert_eq!((r.status, r.text()), (200, expect));
        assert_ne!(r.header("connection"), Some("close"), "request {i}");
    }
    // A streamed response (no Content-Length) ends with zerg's connection: nginx re-frames
    // it for its client, which keeps its connection.
    c.send("GET /stream?mib=2 HTTP/1.1\r\nHost: zerg.test\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.len()), (200, 2 << 20));
    c.send("GET /hello HTTP/1.1\r\nHost: zerg.test\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn twenty_reloads_under_load_through_nginx_fail_no_request() {
    let uwsgi = format!("127.0.0.1:{}", free_port());
    let server = zerg_with_socket(
        tempfile::tempdir().unwrap(),
        &uwsgi,
        "processes: 2\nthreads: 2\n",
    );
    let Some(nginx) = Nginx::start(&location(None, &uwsgi, "")) else {
        return;
    };
    let load = {
        let addr = nginx.addr;
        Load::start(8, move |conn: &mut Option<Client>| {
            let raw = "GET /hello HTTP/1.1\r\nHost: zerg.test\r\n\r\n";
            let r = keep_alive(conn, || Client::try_connect(addr), raw)?;
            match r.status {
                200 => Ok(()),
                status => Err(format!("status {status}")),
            }
        })
    };
    load.wait_for_more("load to flow", 50);
    // A request in the app while the first reload drains its worker is answered by it.
    let slow = {
        let addr = nginx.addr;
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            c.send("GET /slow?s=2 HTTP/1.1\r\nHost: zerg.test\r\n\r\n");
            c.response()
        })
    };
    for i in 0..20 {
        let out = server.zergctl(&["reload"]);
        assert!(
            out.status.success(),
            "reload {i} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        load.wait_for_more("traffic after the reload", 20);
    }
    let (answered, failures) = load.finish();
    let slow = slow.join().unwrap();
    assert_eq!((slow.status, slow.text().as_str()), (200, "slow done"));
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        answered.len() + failures.len(),
        &failures[..failures.len().min(5)]
    );
    let status = server.wait_serving();
    assert_eq!(status.generations.len(), 1, "{status:?}");
    assert_eq!(status.generations[0].generation, 21);
}

/// A packet of `vars` as a uwsgi client writes one.
fn packet(modifier1: u8, vars: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in vars {
        data.extend_from_slice(&(k.len() as u16).to_le_bytes());
        data.extend_from_slice(k.as_bytes());
        data.extend_from_slice(&(v.len() as u16).to_le_bytes());
        data.extend_from_slice(v.as_bytes());
    }
    let mut p = vec![modifier1];
    p.extend_from_slice(&(data.len() as u16).to_le_bytes());
    p.push(0);
    p.extend_from_slice(&data);
    p
}

/// Sends `bytes` (then ends the sending side if `end`) and reads all zerg answers until it
/// closes the connection.
fn exchange(addr: SocketAddr, bytes: &[u8], end: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(bytes).unwrap();
    if end {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        Err(e) => panic!("zerg neither answered nor closed: {e}"),
    }
}

#[test]
fn malformed_packets_close_their_connection_and_the_worker_serves_on() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = zerg_with_socket(
        tempfile::tempdir().unwrap(),
        &addr.to_string(),
        "processes: 1\nbuffer-size: 1024\n",
    );
    let worker = server.worker_pids();
    let get = |path: &str| {
        packet(
            0,
            &[
                ("REQUEST_METHOD", "GET"),
                ("PATH_INFO", path),
                ("REQUEST_URI", path),
                ("QUERY_STRING", ""),
                ("SERVER_PROTOCOL", "HTTP/1.1"),
                ("REMOTE_ADDR", "192.0.2.1"),
            ],
        )
    };

    // Its header says 2049 bytes of variables follow.
    let mut oversized = vec![0, 0x01, 0x08, 0];
    oversized.extend_from_slice(&[b'x'; 100]);
    let bad_length = packet(0, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "-1")]);
    let refused: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "a key past the end",
            vec![0, 6, 0, 0, 200, 0, b'A', b'B', b'C', b'D'],
            false,
        ),
        ("over buffer-size", oversized, false),
        ("truncated", get("/hello")[..20].to_vec(), true),
        (
            "HTTP",
            b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            false,
        ),
        (
            "modifier1 99",
            packet(99, &[("REQUEST_METHOD", "GET")]),
            false,
        ),
        ("CONTENT_LENGTH -1", bad_length, false),
        ("no method", packet(0, &[("PATH_INFO", "/hello")]), false),
    ];
    for (what, bytes, end) in &refused {
        let answer = exchange(addr, bytes, *end);
        assert!(
            answer.is_empty(),
            "{what}: answered {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    let log = server.log_text();
    for expect in [
        "runs past the packet",
        "over buffer-size (1024)",
        "the connection ended 20 bytes into a packet",
        "an HTTP request, not a uwsgi packet",
        "modifier1 99 is not served",
        "CONTENT_LENGTH \"-1\" is not a length",
        "REQUEST_METHOD is missing",
    ] {
        assert!(log.contains(expect), "no log line with {expect:?}:\n{log}");
    }

    // The same worker answers a good packet: HTTP/1.0, never chunked, closed after it.
    let answer = String::from_utf8(exchange(addr, &get("/pid"), false)).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with(&format!("\r\n\r\n{}", worker[0])),
        "{answer}"
    );
    assert_eq!(server.worker_pids(), worker);
    let streamed = exchange(addr, &get("/stream"), false);
    let head_end = streamed.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&streamed[..head_end]).to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(streamed.len() - head_end - 4, 1 << 20);
}
