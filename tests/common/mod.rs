//! The integration-test harness: starts the real `zerg-pool` (which starts the real
//! `zergling`) in a temp dir on free ports, polls for readiness with a deadline, speaks HTTP
//! over real sockets, and kills the whole process tree on drop.
//!
//! The binaries are the ones `cargo build --workspace` put next to the test executable.

#![allow(dead_code)]

pub mod load;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use zerg::control::{Connection, Message, PoolStatus};

/// How long anything may take to become true before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/test-xxxx -> target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for bin in ["zerg-pool", "zergling", "zergctl"] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: run `cargo build --workspace` before the tests",
            dir.join(bin).display()
        );
    }
    dir
}

pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cmd` to completion with its output captured; kills it and fails the test if it has not
/// finished `within`, so a stuck command cannot hang the suite.
pub fn output_within(cmd: &mut Command, within: Duration) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(within) {
        Ok(out) => out.expect("wait for command"),
        Err(_) => {
            // SAFETY: killing the child this function started; it has not been reaped, since
            // the waiting thread has not returned.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let out = rx.recv().unwrap().expect("wait for killed command");
            panic!(
                "{cmd:?} still running after {within:?}; killed. stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Polls `cond` until it returns `Some`, or panics with `what` after the deadline.
pub fn wait_for<T>(what: &str, cond: impl FnMut() -> Option<T>) -> T {
    wait_for_within(what, DEADLINE, cond)
}

/// Like [`wait_for`], for a state the code under test reaches only after a bound of its own
/// (`within` is that bound plus the usual DEADLINE).
pub fn wait_for_within<T>(what: &str, within: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running pool and everything it started.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub control: PathBuf,
    pub http: SocketAddr,
    pub log: PathBuf,
    /// The zerg-pool binary this server runs.
    pub binary: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Writes a config for `app` (a file in tests/apps) plus `extra` YAML, starts the pool, and
    /// waits until a generation serves.
    pub fn start(app: &str, extra: &str) -> Server {
        let server = Server::spawn(app, extra);
        server.wait_serving();
        server
    }

    /// Like `start` but does not wait.
    pub fn spawn(app: &str, extra: &str) -> Server {
        Server::spawn_app_path(
            tempfile::tempdir().unwrap(),
            &apps_dir().join(app),
            extra,
            &[],
        )
    }

    /// Starts a server whose app is `app.py` in the temp dir, written from `source`; the test
    /// may rewrite it (with [`Server::write_app`]) before a reload.
    pub fn start_with_app_source(source: &str, extra: &str) -> Server {
        Server::start_with_app_source_env(source, extra, &[])
    }

    /// Like `start_with_app_source`, with extra environment for the pool.
    pub fn start_with_app_source_env(source: &str, extra: &str, env: &[(&str, String)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.py");
        std::fs::write(&app, source).unwrap();
        let server = Server::spawn_app_path(dir, &app, extra, env);
        server.wait_serving();
        server
    }

    /// Like `start_with_app_source`, with the pool binary `install` puts in the temp dir it is
    /// given (a copy the test may replace before `zergctl upgrade-pool`). The config names the
    /// zergling beside the test's own binaries.
    pub fn start_with_pool_binary(
        install: impl FnOnce(&Path) -> PathBuf,
        source: &str,
        extra: &str,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let binary = install(dir.path());
        let app = dir.path().join("app.py");
        std::fs::write(&app, source).unwrap();
        let zergling = format!("zergling: {}\n", bin_dir().join("zergling").display());
        let (config, control, http) = app_config(dir.path(), &app, &format!("{zergling}{extra}"));
        let args = [std::ffi::OsStr::new("--config"), config.as_os_str()];
        let server = Server::launch(dir, &binary, &args, &[], config.clone(), control, http);
        server.wait_serving();
        server
    }

    pub fn write_app(&self, source: &str) {
        std::fs::write(self.dir.path().join("app.py"), source).unwrap();
    }

    /// Runs `zergctl --pool <control> ARGS`.
    pub fn zergctl(&self, args: &[&str]) -> std::process::Output {
        output_within(
            Command::new(bin_dir().join("zergctl"))
                .arg("--pool")
                .arg(&self.control)
                .args(args),
            DEADLINE * 2,
        )
    }

    fn spawn_app_path(
        dir: tempfile::TempDir,
        app: &Path,
        extra: &str,
        env: &[(&str, String)],
    ) -> Server {
        let (config, control, http) = app_config(dir.path(), app, extra);
        Server::spawn_with_config_env(dir, config, control, http, env)
    }

    /// Starts a pool in `dir` with its own control socket, a TCP listener on a free port
    /// (plus `more_listeners`), and the rest of the config from `rest`; waits until it serves.
    pub fn start_in(dir: tempfile::TempDir, more_listeners: &[String], rest: &str) -> Server {
        let port = free_port();
        let control = dir.path().join("zerg.sock");
        let config = dir.path().join("zerg.yml");
        let listeners: String = more_listeners
            .iter()
            .map(|l| format!("  - {l}\n"))
            .collect();
        std::fs::write(
            &config,
            format!(
                "zerg-server: {}\nhttp:\n  - 127.0.0.1:{port}\n{listeners}{rest}",
                control.display()
            ),
        )
        .unwrap();
        let server = Server::spawn_with_config(
            dir,
            config,
            control,
            format!("127.0.0.1:{port}").parse().unwrap(),
        );
        server.wait_serving();
        server
    }

    pub fn spawn_with_config(
        dir: tempfile::TempDir,
        config: PathBuf,
        control: PathBuf,
        http: SocketAddr,
    ) -> Server {
        Server::spawn_with_config_env(dir, config, control, http, &[])
    }

    fn spawn_with_config_env(
        dir: tempfile::TempDir,
        config: PathBuf,
        control: PathBuf,
        http: SocketAddr,
        env: &[(&str, String)],
    ) -> Server {
        let args = [std::ffi::OsStr::new("--config"), config.as_os_str()];
        Server::launch(
            dir,
            &bin_dir().join("zerg-pool"),
            &args,
            env,
            config.clone(),
            control,
            http,
        )
    }

    /// Starts zerg-pool with `args` naming its config, logging to `server.log` in `dir`; the
    /// caller says where that config has it listen. `ZERG_CONFIG` is removed, so that the
    /// test's own environment cannot name a second config.
    fn launch(
        dir: tempfile::TempDir,
        binary: &Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, String)],
        config: PathBuf,
        control: PathBuf,
        http: SocketAddr,
    ) -> Server {
        let log = dir.path().join("server.log");
        std::fs::File::create(&log).unwrap();
        // Appending: the zerglings share this file, and may outlive this pool and write beside
        // the next one (see `start_pool_again`).
        let logfile = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let child = Command::new(binary)
            .args(args)
            .current_dir(dir.path())
            .env_remove("ZERG_CONFIG")
            .env(
                "ZERG_LOG",
                std::env::var("ZERG_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .expect("start zerg-pool");
        Server {
            dir,
            config,
            control,
            http,
            log,
            binary: binary.to_owned(),
            child: Some(child),
        }
    }

    /// Starts zerg-pool again with the same config, its log appended to the same file, once
    /// the previous one has exited (e.g. after a SIGKILL and [`Server::wait_exit`]).
    pub fn start_pool_again(&mut self) {
        if let Some(mut old) = self.child.take() {
            let _ = old.wait();
        }
        let logfile = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env_remove("ZERG_CONFIG")
            .env(
                "ZERG_LOG",
                std::env::var("ZERG_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .expect("start zerg-pool again");
        self.child = Some(child);
    }

    pub fn pool_pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks the pool for its status over the control socket.
    pub fn status(&self) -> Option<PoolStatus> {
        let mut conn = Connection::connect_ctl(&self.control, Some(DEADLINE)).ok()?;
        conn.send(&Message::StatusRequest, &[]).ok()?;
        match conn.recv().ok()?.0 {
            Message::Status(s) => Some(s),
            _ => None,
        }
    }

    /// Waits until some generation is serving with all its workers up; returns the status.
    pub fn wait_serving(&self) -> PoolStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status() {
                if s.generations.iter().any(|g| g.state == "serving") {
                    return s;
                }
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "no generation became ready; server log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Worker pids of the serving generation.
    pub fn worker_pids(&self) -> Vec<u32> {
        let s = self.wait_serving();
        let g = s.generations.iter().find(|g| g.state == "serving").unwrap();
        g.processes.iter().map(|p| p.pid).collect()
    }

    /// Every pid of the server: the pool and each generation's master and processes.
    pub fn all_pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pool_pid()];
        if let Some(s) = self.status() {
            // Another pool than the one started here, after an upgrade.
            if s.pool_pid != self.pool_pid() {
                pids.push(s.pool_pid);
            }
            for g in s.generations {
                pids.extend(g.master_pid);
                pids.extend(g.processes.iter().map(|p| p.pid));
            }
        }
        pids
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child's pid.
        unsafe { libc::kill(self.pool_pid() as i32, sig) };
    }

    /// Waits for the pool to exit; returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("pool child");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > within {
                panic!(
                    "zerg-pool did not exit within {within:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks conformance.py's `/slow` (answered after `secs` seconds) on a new connection and
    /// waits until the app is in it; the caller reads the response.
    pub fn slow_request(&self, secs: u32) -> Client {
        let started = self.dir.path().join("slow-started");
        let _ = std::fs::remove_file(&started);
        let mut slow = Client::connect(self.http);
        slow.send(&format!(
            "GET /slow?s={secs}&started={} HTTP/1.1\r\nHost: x\r\n\r\n",
            started.display()
        ));
        wait_for("the slow request to be in the app", || {
            started.exists().then_some(())
        });
        slow
    }

    pub fn get(&self, path: &str) -> Response {
        let mut c = Client::connect(self.http);
        c.send(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"));
        c.response()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pids = self.all_pids();
        for pid in pids {
            // A test may stand in for a master itself (hardening.rs): never kill the test.
            if pid > 0 && pid != std::process::id() {
                // SAFETY: killing processes this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log_text());
        }
    }
}

/// Writes the config for `app` (+ `extra` YAML) in `dir`: control socket, a free port.
fn app_config(dir: &Path, app: &Path, extra: &str) -> (PathBuf, PathBuf, SocketAddr) {
    let port = free_port();
    let control = dir.join("zerg.sock");
    let yaml = format!(
        "zerg-server: {}\nhttp: 127.0.0.1:{port}\nwsgi-file: {}\nreload-mercy: 10\nworker-reload-mercy: 10\n{extra}",
        control.display(),
        app.display()
    );
    let config = dir.join("zerg.yml");
    std::fs::write(&config, yaml).unwrap();
    (
        config,
        control,
        format!("127.0.0.1:{port}").parse().unwrap(),
    )
}

/// True when some TCP connection to local port `port` is established (read from /proc/net, so
/// the tests need no `ss`).
pub fn established_to(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                // local_address is "HEXIP:HEXPORT"; state 01 is ESTABLISHED.
                cols.len() > 3
                    && cols[3] == "01"
                    && cols[1]
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
    })
}

/// True while `pid` exists (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    zerg::control::running(pid)
}

/// How many fds `pid` has open (0 once it is gone).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// SIGKILLs the pids it holds when dropped: once the pool is dead, `Server`'s own cleanup can
/// no longer ask it for the pids of its generations.
pub struct KillOnDrop(pub Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if pid > 0 && pid <= i32::MAX as u32 && alive(pid) {
                // SAFETY: killing processes this test started (checked positive above).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM...).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw HTTP/1.1 client on one connection: what it sends is exactly what the test wrote. The
/// connection is a TCP socket, or any stream over one (a TLS session).
///
/// Its methods panic on what the test did not expect, except the `try_` ones and
/// [`Client::request`], which return the error for a caller that counts failures (`load`).
pub struct Client<S = TcpStream> {
    reader: BufReader<S>,
    /// Set for responses to HEAD, which have no body whatever their headers say.
    pub head: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).expect("connect")
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        Ok(Client::over(stream))
    }
}

impl<S: Read + Write> Client<S> {
    /// A client on a stream that is already open (and whose read timeout is set).
    pub fn over(stream: S) -> Client<S> {
        Client {
            reader: BufReader::new(stream),
            head: false,
        }
    }

    pub fn send(&mut self, raw: &str) {
        self.send_bytes(raw.as_bytes());
    }

    /// The connection's stream, e.g. to clone a socket for a writer thread.
    pub fn stream(&self) -> &S {
        self.reader.get_ref()
    }

    pub fn send_bytes(&mut self, raw: &[u8]) {
        self.try_send(raw).expect("write request");
    }

    fn try_send(&mut self, raw: &[u8]) -> std::io::Result<()> {
        let stream = self.reader.get_mut();
        stream.write_all(raw)?;
        stream.flush()
    }

    /// Sends `raw` and reads one whole response.
    pub fn request(&mut self, raw: &str) -> std::io::Result<Response> {
        self.try_send(raw.as_bytes())?;
        self.try_response()
    }

    /// Reads a status line and headers (used alone for `100 Continue`).
    pub fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        self.try_read_head()
            .unwrap_or_else(|e| panic!("reading a response head: {e}"))
    }

    pub fn try_read_head(&mut self) -> std::io::Result<(u16, Vec<(String, String)>)> {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            if self.reader.read_until(b'\n', &mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the connection closed before a response",
                ));
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&head).map_err(std::io::Error::other)?;
        let status = resp
            .code
            .ok_or_else(|| std::io::Error::other("no status code"))?;
        let headers = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        Ok((status, headers))
    }

    /// Reads one whole response (Content-Length, chunked, or until close).
    pub fn response(&mut self) -> Response {
        self.try_response()
            .unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    pub fn try_response(&mut self) -> std::io::Result<Response> {
        let (status, headers) = self.try_read_head()?;
        let mut r = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if self.head || status == 204 || status == 304 {
            return Ok(r);
        }
        if let Some(len) = r.header("content-length") {
            let len: usize = len.parse().map_err(std::io::Error::other)?;
            r.body.resize(len, 0);
            self.reader.read_exact(&mut r.body)?;
        } else if r
            .header("transfer-encoding")
            .is_some_and(|te| te.contains("chunked"))
        {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size)?;
                let size = size.trim().split(';').next().unwrap_or_default();
                let size = usize::from_str_radix(size, 16).map_err(std::io::Error::other)?;
                let start = r.body.len();
                r.body.resize(start + size, 0);
                self.reader.read_exact(&mut r.body[start..])?;
                let mut crlf = String::new();
                self.reader.read_line(&mut crlf)?;
                if size == 0 {
                    break;
                }
            }
        } else {
            self.reader.read_to_end(&mut r.body)?;
        }
        Ok(r)
    }

    /// Exactly `n` bytes of what the server sends next.
    pub fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).expect("read bytes");
        buf
    }

    /// Everything the server sends until it closes the connection.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("read to close");
        rest
    }

    /// How many bytes the server sends until it closes the connection (EOF or a reset).
    pub fn read_until_closed(&mut self) -> usize {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return total,
                Err(e) => panic!("reading until the server closes: {e}"),
            }
        }
    }

    /// True if the server closes the connection (EOF or a reset) within the read timeout;
    /// false if it sends more, or nothing until then.
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.reader.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

impl Server {
    /// Starts a pool in `dir` with `args` naming its config (`--yaml FILE`, `--ini FILE`)
    /// instead of `--config`; `control` and `http` are where that config has it listen. Does not
    /// wait.
    pub fn spawn_with_args(
        dir: tempfile::TempDir,
        args: &[&std::ffi::OsStr],
        config: PathBuf,
        control: PathBuf,
        http: SocketAddr,
    ) -> Server {
        Server::launch(
            dir,
            &bin_dir().join("zerg-pool"),
            args,
            &[],
            config,
            control,
            http,
        )
    }
}
