//! The one YAML configuration file shared by `zerg-pool` and `zergling`.
//!
//! The structs below are the schema: each field's doc comment is the option's documentation,
//! defaults live in the `default_*` functions, and [`Config::load`] runs every check serde
//! cannot express once, reporting all problems at once. Option names follow uWSGI's where the
//! meaning is the same (`processes`, `threads`, `http`, `socket`, `chmod-socket`, `module`,
//! `wsgi-file`, `pythonpath`, `virtualenv`, `chdir`, `reload-mercy`, `listen`, `env`).
//!
//! Relative paths are resolved like uWSGI does: against the working directory after `chdir`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// A parsed and validated configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Path of the pool's control socket (unix, mode 0600). zerglings and `zergctl` connect here.
    /// uWSGI has no such option: in a uWSGI file it may be given as `zerg-server:` in the
    /// `uwsgi:` section; without it, it is `<config dir>/<stem>.zerg.sock` beside the file.
    pub zerg_server: PathBuf,

    /// HTTP listeners: `host:port`, `:port` (all IPv4 addresses), `[::1]:port`, or a unix socket
    /// path (anything containing a `/`). One value or a list.
    #[serde(default)]
    pub http: StringList,

    /// uwsgi-protocol listeners, for nginx's `uwsgi_pass` (uWSGI's `socket`): `host:port`,
    /// `:port`, `[::1]:port`, or a unix socket path (anything containing a `/`). One value or a
    /// list.
    #[serde(default, alias = "uwsgi-socket")]
    pub socket: StringList,

    /// HTTPS listeners, in uWSGI's syntax: `ADDRESS,CERT,KEY`, the address written as for
    /// `http` and two PEM files: the certificate chain (the server's certificate first) and its
    /// private key. Each generation reads them as it starts, so a renewed certificate is served
    /// from the next reload on; a generation that cannot read them, or whose key does not match
    /// the certificate, fails to start and the serving one serves on. Connections speak
    /// HTTP/1.1 over TLS 1.2 or 1.3; the app sees `wsgi.url_scheme` `https` and `HTTPS` `on`.
    /// One value or a list.
    #[serde(default)]
    pub https: StringList,

    /// Listeners that answer every request with a redirect to the same URL over HTTPS, never
    /// calling the app (uWSGI's `http-to-https`): `ADDRESS[,PORT]`. 301 for GET and HEAD, 308
    /// (which keeps the method and body) otherwise. The URL's port is PORT, or else the first
    /// `https` listener's; 443 is left out. One value or a list.
    #[serde(default)]
    pub http_to_https: StringList,

    /// Addresses named by position from `http`, `socket`, `https` and `http-to-https` (uWSGI's
    /// `shared-socket`): `http: =0` listens on the first. Like every listener, the pool binds
    /// it once, before it gives up root if it runs as root (ports below 1024). An `https: =N`
    /// with no certificate and key takes them from the shared socket's own fields
    /// (`shared-socket: :443,server.crt,server.key`). One value or a list.
    #[serde(default)]
    pub shared_socket: StringList,

    /// Permissions of the unix sockets the pool binds for `http` and `socket`, in octal as
    /// uWSGI takes them: `660` lets only the owner and its group (nginx's, say) connect. Given
    /// with no value, or left out, `666`: anyone on the machine may connect.
    #[serde(default)]
    pub chmod_socket: SocketMode,

    /// A WSGI file to load, like uWSGI's `wsgi-file`; its `callable` is the app.
    #[serde(default)]
    pub wsgi_file: Option<PathBuf>,

    /// The app as `package.module:callable` (or `package.module`, then `callable` is used).
    /// A trailing `()` calls the named factory once at import: `pkg.app:make_app()`.
    #[serde(default)]
    pub module: Option<String>,

    /// Name of the WSGI callable when `module` or `wsgi-file` does not name one.
    #[serde(default = "default_callable")]
    pub callable: String,

    /// What the app is: `wsgi` (PEP 3333, the default) or `asgi` (ASGI 3: an `async def
    /// app(scope, receive, send)`, as FastAPI and Starlette make). An ASGI app runs on one
    /// asyncio event loop per worker; its lifespan `startup` runs in each worker before the
    /// worker counts as accepting, and `shutdown` once the worker has drained.
    #[serde(default)]
    pub interface: Interface,

    /// The asyncio event loop of an ASGI worker: `auto` (uvloop if the app's Python can import
    /// it, else asyncio's own), `asyncio` or `uvloop` (which must then be installed).
    #[serde(default, rename = "loop")]
    pub event_loop: EventLoop,

    /// Import the app in each web worker, after its fork, instead of once in the master
    /// (uWSGI's `lazy-apps`). Threads the app starts while it is built (an event loop, a job
    /// manager, heartbeats: Galaxy's) then run in the process that serves its requests; a
    /// master that imported the app would fork workers without them. The master imports
    /// nothing of the app and mules import only their own entry. The ready gate waits for
    /// every worker's import; the cost is memory (no copy-on-write sharing of the app) and
    /// the import time in each worker, in parallel.
    #[serde(default)]
    pub lazy_apps: bool,

    /// Directories prepended to `sys.path`. One value or a list.
    #[serde(default)]
    pub pythonpath: StringList,

    /// A virtualenv whose interpreter settings and site-packages the app uses.
    #[serde(default, alias = "venv", alias = "home")]
    pub virtualenv: Option<PathBuf>,

    /// Directory the zergling changes to before it imports the app.
    #[serde(default)]
    pub chdir: Option<PathBuf>,

    /// Number of web worker processes.
    #[serde(default = "default_processes", alias = "workers")]
    pub processes: u32,

    /// Concurrent WSGI calls per worker, each on an OS thread holding the GIL while it runs
    /// (with 1, on the worker's event loop when the request body is complete).
    #[serde(default = "default_threads")]
    pub threads: u32,

    /// Request bodies announced (Content-Length) at up to this many bytes are read whole before
    /// the app is called, so a slow client holds a connection, not an app thread (uWSGI's
    /// `post-buffering`, here in memory). Larger bodies, chunked ones and those sent after
    /// `Expect: 100-continue` stream into `wsgi.input`. 0 streams every body.
    #[serde(default = "default_post_buffering")]
    pub post_buffering: u64,

    /// Microseconds of CPU time a worker's event loop may run without waiting before it yields
    /// the CPU between two requests, so the processes sharing its cores (the proxy in front,
    /// the sibling workers) are not kept waiting for a whole scheduler slice. 0 never yields.
    #[serde(default = "default_busy_yield_us")]
    pub busy_yield_us: u64,

    /// Seconds a connection may take to send its next request head: from when it opens, or
    /// its last response is done, until the head is complete. Idle keep-alive connections and
    /// clients that send their headers slowly (slowloris) are closed past it, and so is one
    /// whose socket accepts nothing of its response for that long. A request being answered
    /// never is, however long the app takes. 0 never closes them.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: u64,

    /// Longest request line (method, target and version) a worker accepts, in bytes; a longer
    /// one is answered 414 without calling the app (gunicorn's `limit-request-line`).
    #[serde(default = "default_limit_request_line")]
    pub limit_request_line: u32,

    /// Most header fields a request may carry; more are answered 431 (gunicorn's
    /// `limit-request-fields`).
    #[serde(default = "default_limit_request_fields")]
    pub limit_request_fields: u32,

    /// Longest header field (name, colon, value) a request may carry, in bytes; a longer one is
    /// answered 431 (gunicorn's `limit-request-field_size`).
    #[serde(default = "default_limit_request_field_size")]
    pub limit_request_field_size: u32,

    /// Most bytes a request head (request line and every header field) may take; a bigger one
    /// is answered 431. uWSGI's `buffer-size`, which bounds the same thing there (its default
    /// of 4096 is often too small for cookies; Galaxy's sample sets 16384).
    #[serde(default = "default_buffer_size")]
    pub buffer_size: u32,

    /// Listen backlog of every socket the pool binds.
    #[serde(default = "default_listen")]
    pub listen: u32,

    /// Mules: processes with no web stack that run Python code, one per entry. A string is a
    /// `.py` file run as `__main__`, `pkg.mod:callable` (called), or `pkg.mod` (run as
    /// `python -m pkg.mod`). A mapping runs a program with a command line and an environment
    /// of its own: one of `module`, `script` (a console script of the app's environment) or
    /// `file`, then `args` (a list, or a string split like a shell's words) and `env` (a
    /// mapping; `~` removes a variable); `%(position)` in them is the mule's position (see
    /// [`crate::mule_entry`]). One entry or a list.
    #[serde(default)]
    pub mule: crate::mule_entry::MuleList,

    /// Farms group mules by position (from 1, in `mule` order): `NAME:1,2`. Web workers send
    /// with `uwsgi.farm_msg(NAME, msg)`; each message is taken by exactly one mule of the farm.
    /// One value or a list.
    #[serde(default)]
    pub farm: StringList,

    /// Number of user locks for `uwsgi.lock(i)` / `uwsgi.unlock(i)`, shared by the processes of
    /// a generation.
    #[serde(default = "default_locks")]
    pub locks: u32,

    /// Static files served by the workers without entering Python, uWSGI style:
    /// `/static=/srv/app/static` maps URLs under `/static/` to files under that directory. A
    /// file that does not exist falls through to the app. One value or a list.
    #[serde(default)]
    pub static_map: StringList,

    /// Environment variables for the app, each `NAME=VALUE`. One value or a list.
    #[serde(default)]
    pub env: StringList,

    /// Environment variables of each web worker, set after its fork and before its app is
    /// imported (under `lazy-apps`; otherwise the master built the app already): `NAME=VALUE`,
    /// with `%(worker)` replaced by the worker's id (from 1, uWSGI's `worker_id()`). Galaxy
    /// names each web process from `GUNICORN_WORKER_ID`: `GUNICORN_WORKER_ID=%(worker)` makes
    /// them `main.1`, `main.2`. One value or a list.
    #[serde(default)]
    pub worker_env: StringList,

    /// Command that starts a zergling (a string split on white space, or a list). The default is
    /// the `zergling` binary beside `zerg-pool`. It gets `ZERG_POOL`, `ZERG_CONFIG` and
    /// `ZERG_GENERATION` in its environment.
    #[serde(default)]
    pub zergling: Option<StringList>,

    /// Seconds a stopping generation gets to finish in-flight requests before stragglers are
    /// killed.
    #[serde(default = "default_mercy")]
    pub reload_mercy: u64,

    /// Seconds a single worker gets to finish in-flight requests when it is stopped.
    #[serde(default = "default_mercy")]
    pub worker_reload_mercy: u64,

    /// Seconds a web worker may spend on one request (uWSGI's `harakiri`): past it the master
    /// logs the request (method, target, worker, pid, generation, seconds) and the Python stack
    /// of every thread of the worker, kills the worker and forks its successor at once. Its
    /// other requests end with it (their clients see the connection closed). 0 never kills.
    #[serde(default)]
    pub harakiri: u64,

    /// With `harakiri`, also log what the stuck worker waits on in the kernel (its `wchan` and
    /// system call), as uWSGI's `harakiri-verbose` does on Linux.
    #[serde(default)]
    pub harakiri_verbose: bool,

    /// Seconds a mule may hold one message (uWSGI's `mule-harakiri`): past it the master logs
    /// the message and the mule's Python stacks, kills the mule and starts a successor, which
    /// takes the unfinished message again (zerg delivers a mule's messages at least once).
    /// 0 never kills.
    #[serde(default)]
    pub mule_harakiri: u64,

    /// Replace a web worker once it has answered this many requests (uWSGI's `max-requests`),
    /// the way a chain reload replaces it: its successor is forked and accepts before it stops
    /// and drains, so no request fails and capacity never dips. 0 never replaces.
    #[serde(default)]
    pub max_requests: u64,

    /// Spreads `max-requests` so the workers are not all replaced at once: worker N's limit is
    /// `max-requests + (N - 1) * max-requests-delta`, as uWSGI's `max-requests-delta`.
    #[serde(default)]
    pub max_requests_delta: u64,

    /// Replace a web worker whose resident memory (RSS) reaches this many MiB (uWSGI's
    /// `reload-on-rss`), as `max-requests` does. The master reads it every few seconds from
    /// `/proc`. 0 never replaces.
    #[serde(default)]
    pub reload_on_rss: u64,

    /// Replace a web worker this many seconds after its start (uWSGI's
    /// `max-worker-lifetime`), as `max-requests` does. 0 never replaces.
    #[serde(default)]
    pub max_worker_lifetime: u64,

    /// Seconds a new generation gets to import the app, start every worker and pass the health
    /// check; past it the pool kills it and the serving generation stays (a rollback).
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: u64,

    /// A path that must answer 2xx from each new worker before its generation counts as
    /// ready. Each worker is asked on a private socket of its own as soon as it accepts, so
    /// neither an older generation nor a sibling can answer for it. An error status fails the
    /// generation at once; no answer fails it at `ready-timeout`, naming the workers that did
    /// not answer. Without it, a generation is ready once every worker accepts (its app
    /// imported and, for ASGI, its lifespan started): zerg sends no request of its own.
    #[serde(default)]
    pub health_check: Option<String>,

    /// uWSGI's stats server: `host:port`, `:port` or a unix socket path. Each connection gets
    /// the JSON uWSGI writes (so `uwsgitop ADDR` works), with zerg's own figures under `zerg`,
    /// and is closed. Like the listeners, the pool binds it once, at start: a reload does not
    /// move it. Figures are up to a second old (each master reports once a second).
    #[serde(default)]
    pub stats: Option<ServeAddr>,

    /// Serve `stats` over HTTP instead (uWSGI's `stats-http`): any request gets the JSON.
    #[serde(default)]
    pub stats_http: bool,

    /// Prometheus metrics over HTTP at `/metrics`: `host:port`, `:port` or a unix socket path.
    /// Bound by the pool once, at start, as `stats`. Figures are up to a second old.
    #[serde(default)]
    pub metrics: Option<ServeAddr>,

    /// A file the pool writes its pid to when it starts (uWSGI's `pidfile`) and removes when it
    /// exits. Relative to the directory the pool was started in.
    #[serde(default)]
    pub pidfile: Option<PathBuf>,

    /// A file the pool, and everything it starts (zerglings, workers, mules, what the app
    /// prints), log to instead of stderr, appending (uWSGI's `logto`). The pool opens it at
    /// start, relative to the directory it was started in, and again on SIGUSR1 (logrotate's
    /// `postrotate`: `kill -USR1 $(cat PIDFILE)`), handing the new file to every process; it
    /// then runs as `uid`, which must be able to create the file in its directory.
    #[serde(default)]
    pub logto: Option<PathBuf>,

    /// Reopen `logto` at each reload too (uWSGI's `log-reopen`), not only on SIGUSR1 to the
    /// pool. Either way every process of every generation moves to the file reopened.
    #[serde(default)]
    pub log_reopen: bool,

    /// One log line per request, off by default: `uwsgi` writes uWSGI's default request line
    /// (`[pid: P|worker: W|gen: G] ADDR () [DATE] METHOD URI => generated N bytes in M msecs
    /// (PROTO STATUS)`), `json` one JSON object with the same fields. The lines go where the
    /// log goes (stderr or `logto`), at `info`, under the target `access`.
    #[serde(default)]
    pub log_format: Option<LogFormat>,

    /// The umask the pool sets before it binds its sockets and creates its files; every process
    /// it starts inherits it. Octal digits, as uWSGI and umask(1) take them: `027`.
    #[serde(default)]
    pub umask: Option<Umask>,

    /// The user to serve as (uWSGI's `uid`): a name or a number. A pool started as root binds
    /// every listener (ports below 1024 too), creates the control socket, `logto` and
    /// `pidfile`, then becomes this user, with its supplementary groups, before it starts a
    /// zergling: the zerglings, their workers and mules never hold root. A pool started as
    /// anyone else must already be this user. Without `gid`, the user's own group.
    #[serde(default)]
    pub uid: Option<crate::privileges::User>,

    /// The group to serve as (uWSGI's `gid`): a name or a number. With `uid`, the user's
    /// supplementary groups are set too; alone, it is the only group and the uid stays.
    #[serde(default)]
    pub gid: Option<crate::privileges::Group>,

    /// Set when the file is uWSGI's (a `uwsgi:` section, or ini): its entries for `uwsgi.opt`
    /// and the warnings for the pool's log. Not an option.
    #[serde(skip)]
    pub uwsgi: Option<crate::uwsgi_config::Source>,
}

fn default_locks() -> u32 {
    1
}

fn default_ready_timeout() -> u64 {
    60
}

fn default_callable() -> String {
    "application".to_owned()
}
fn default_processes() -> u32 {
    1
}
fn default_threads() -> u32 {
    1
}
fn default_post_buffering() -> u64 {
    64 * 1024
}
fn default_busy_yield_us() -> u64 {
    200
}
fn default_header_timeout() -> u64 {
    30
}
fn default_limit_request_line() -> u32 {
    4094
}
fn default_limit_request_fields() -> u32 {
    100
}
fn default_limit_request_field_size() -> u32 {
    8190
}
fn default_buffer_size() -> u32 {
    64 * 1024
}
fn default_listen() -> u32 {
    1024
}
fn default_mercy() -> u64 {
    60
}

/// The most header fields `limit-request-fields` may allow: the parser sets aside room for
/// every one of them on each request head it reads.
pub const MAX_REQUEST_FIELDS: u32 = 10_000;

/// One string or a list of strings, as uWSGI options accept both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

impl StringList {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_owned()]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_unit<E: de::Error>(self) -> Result<StringList, E> {
                Ok(StringList::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<ScalarString>()? {
                    out.push(item.0);
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list element: a string, or a number written without quotes (`- 8080`).
struct ScalarString(String);

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `umask`: a file mode creation mask in octal digits (`027`, `0022`, `"077"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Umask(pub u32);

impl Umask {
    fn parse(digits: &str) -> Option<Umask> {
        let digits = digits.trim();
        let octal = !digits.is_empty()
            && digits.len() <= 4
            && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        octal
            .then(|| u32::from_str_radix(digits, 8).ok())
            .flatten()
            .filter(|&m| m <= 0o777)
            .map(Umask)
    }
}

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Umask;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a umask in octal digits, e.g. 027")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Umask, E> {
                Umask::parse(v).ok_or_else(|| {
                    E::custom(format!("`{v}` is not a umask in octal digits, e.g. 027"))
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Umask, E> {
                // YAML reads `027` as the number twenty-seven: its digits are the mask.
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Umask, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// A farm: a named group of mules sharing one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Farm {
    pub name: String,
    /// Mule positions, from 1.
    pub mules: Vec<u32>,
}

/// `log-format`: how the access log writes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// uWSGI's default request line.
    Uwsgi,
    /// One JSON object per request.
    Json,
}

/// `interface`: the calling convention of the app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// PEP 3333.
    #[default]
    Wsgi,
    /// ASGI 3 (HTTP and lifespan).
    Asgi,
}

/// `loop`: which asyncio event loop an ASGI worker runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLoop {
    /// uvloop when it can be imported, else asyncio's.
    #[default]
    Auto,
    Asyncio,
    Uvloop,
}

impl EventLoop {
    /// The option's value, as the config spells it.
    pub fn name(self) -> &'static str {
        match self {
            EventLoop::Auto => "auto",
            EventLoop::Asyncio => "asyncio",
            EventLoop::Uvloop => "uvloop",
        }
    }
}

/// What a listener's connections speak.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (`http`).
    #[default]
    Http,
    /// The uwsgi protocol nginx's `uwsgi_pass` speaks (`socket`).
    Uwsgi,
    /// HTTP/1.1 over TLS (`https`).
    Https,
    /// HTTP/1.1, every request answered with a redirect to HTTPS (`http-to-https`).
    #[serde(rename = "http-to-https")]
    HttpToHttps,
}

impl Protocol {
    /// The option that makes listeners of this protocol.
    pub fn option(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Uwsgi => "socket",
            Protocol::Https => "https",
            Protocol::HttpToHttps => "http-to-https",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "http",
            Protocol::Uwsgi => "uwsgi",
            Protocol::Https => "https",
            Protocol::HttpToHttps => "http-to-https",
        })
    }
}

/// The certificate chain and private key of an `https` listener, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A listener option's value with its `=N` resolved: what the config says of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerOption {
    pub protocol: Protocol,
    /// The address as written, or for `=N` the shared socket's.
    pub address: String,
    /// For `=N`: N.
    pub shared: Option<usize>,
    /// The comma-separated fields after the address (`https` and `http-to-https` only); for
    /// `=N` with none, the shared socket's.
    pub fields: Vec<String>,
}

/// `chmod-socket`: file permissions for unix sockets, written in octal digits as uWSGI takes
/// them (`660`, `0660`, `"660"`); no value means `666`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl Default for SocketMode {
    fn default() -> SocketMode {
        SocketMode(0o666)
    }
}

impl SocketMode {
    fn parse(digits: &str) -> Option<SocketMode> {
        let digits = digits.trim();
        if digits.is_empty() {
            // uWSGI's `chmod-socket` given with no value.
            return Some(SocketMode::default());
        }
        if digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return None;
        }
        u32::from_str_radix(digits, 8).ok().map(SocketMode)
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SocketMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mode in octal digits, e.g. 660")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketMode, E> {
                SocketMode::parse(v).ok_or_else(|| {
                    E::custom(format!("`{v}` is not a mode in octal digits, e.g. 660"))
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SocketMode, E> {
                // YAML reads `660` as the number six hundred and sixty: its digits are the mode.
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SocketMode, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_unit<E: de::Error>(self) -> Result<SocketMode, E> {
                Ok(SocketMode::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "address", rename_all = "lowercase")]
pub enum ListenAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl ListenAddr {
    /// Parses `host:port`, `:port`, `[v6]:port`, `localhost:port` or a unix path.
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if s.contains('/') {
            return Ok(ListenAddr::Unix(PathBuf::from(s)));
        }
        let with_host = if s.starts_with(':') {
            format!("0.0.0.0{s}")
        } else if let Some(port) = s.strip_prefix("localhost:") {
            format!("127.0.0.1:{port}")
        } else {
            s.to_owned()
        };
        with_host
            .parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("`{s}` is neither host:port nor a unix socket path"))
    }
}

/// An address the pool serves something of its own on (`stats`, `metrics`): written as a
/// listener's address, checked as it is read, so a bad one names its key and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeAddr(pub ListenAddr);

impl<'de> Deserialize<'de> for ServeAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ServeAddr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("host:port, :port or a unix socket path")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ServeAddr, E> {
                ListenAddr::parse(v).map(ServeAddr).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ServeAddr, E> {
                Err(E::custom(format!(
                    "`{v}` is neither host:port nor a unix socket path (`:{v}` is that port)"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a configuration could not be used. The message names the file, the key and the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config {path}:\n  {}", problems.join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates the text of the file at `path`: zerg's YAML, or uWSGI's (a file
    /// with a top-level `uwsgi:` section, or an ini file: see [`crate::uwsgi_config`]), told
    /// apart by [`crate::uwsgi_config::detect`]. A uWSGI file's `%d`-style placeholders and its
    /// default control socket come from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        if let Some(dialect) = crate::uwsgi_config::detect(text, path) {
            return crate::uwsgi_config::parse(text, path, dialect);
        }
        let config: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: describe_yaml_error(&e),
        })?;
        config.validated(path, Vec::new())
    }

    /// Runs the checks serde cannot express and reports them with `problems` found before
    /// (a uWSGI file's unsupported options), all together.
    pub(crate) fn validated(
        self,
        path: &Path,
        mut problems: Vec<String>,
    ) -> Result<Config, ConfigError> {
        problems.extend(self.problems());
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Every check serde cannot express, all reported together.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.http.is_empty()
            && self.socket.is_empty()
            && self.https.is_empty()
            && self.http_to_https.is_empty()
        {
            problems.push(
                "`http` or `socket` (or `https`): at least one listener is needed, e.g. \
                 `http: 127.0.0.1:8080` or `socket: 127.0.0.1:3031` for nginx's uwsgi_pass"
                    .into(),
            );
        }
        problems.extend(self.listener_problems());
        let mut addrs = self.listen_addrs();
        addrs.sort_by_key(ToString::to_string);
        if let Some(w) = addrs.windows(2).find(|w| w[0] == w[1]) {
            problems.push(format!(
                "`http`/`socket`: {} is given twice; a listener speaks one protocol",
                w[0]
            ));
        }
        match (&self.wsgi_file, &self.module) {
            (None, None) => {
                problems.push("one of `wsgi-file` or `module` must name the app".into())
            }
            (Some(_), Some(_)) => {
                problems.push("`wsgi-file` and `module` both name an app: keep one".into())
            }
            _ => {}
        }
        if self.processes == 0 {
            problems.push("`processes` must be at least 1".into());
        }
        if self.max_requests_delta > 0 && self.max_requests == 0 {
            problems.push("`max-requests-delta` spreads `max-requests`, which is not set".into());
        }
        if self.harakiri_verbose && self.harakiri == 0 {
            problems.push("`harakiri-verbose` applies to `harakiri`, which is not set".into());
        }
        if self.threads == 0 {
            problems.push("`threads` must be at least 1".into());
        }
        for (key, value, least) in [
            ("limit-request-line", self.limit_request_line, 16),
            ("limit-request-fields", self.limit_request_fields, 1),
            (
                "limit-request-field-size",
                self.limit_request_field_size,
                16,
            ),
            ("buffer-size", self.buffer_size, 512),
        ] {
            if value < least {
                problems.push(format!("`{key}` must be at least {least}"));
            }
        }
        if self.limit_request_fields > MAX_REQUEST_FIELDS {
            problems.push(format!(
                "`limit-request-fields` must be at most {MAX_REQUEST_FIELDS}"
            ));
        }
        match self.farms() {
            Ok(farms) => {
                for f in &farms {
                    if let Some(bad) = f
                        .mules
                        .iter()
                        .find(|&&k| k == 0 || k as usize > self.mule.0.len())
                    {
                        problems.push(format!(
                            "`farm`: {} names mule {bad}, but there are {} mules",
                            f.name,
                            self.mule.0.len()
                        ));
                    }
                }
                let mut names: Vec<&str> = farms.iter().map(|f| f.name.as_str()).collect();
                names.sort_unstable();
                if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                    problems.push(format!("`farm`: {} is defined twice", w[0]));
                }
            }
            Err(e) => problems.push(e),
        }
        if let Ok(farms) = self.farms() {
            // The welcome carries every listener, both ends of each farm's and each mule's
            // queue, and each mule's record, in one message.
            let mules = self.mule.0.len();
            let fds = self.listen_addrs().len() + 2 * (farms.len() + mules) + mules;
            if fds > crate::fdpass::MAX_FDS {
                problems.push(format!(
                    "`mule`: {mules} mules, {} farms and {} listeners need {fds} fds in the \
                     handover to a generation; the kernel passes at most {} in one message",
                    farms.len(),
                    self.listen_addrs().len(),
                    crate::fdpass::MAX_FDS
                ));
            }
        }
        for m in self.static_map.iter() {
            match m.split_once('=') {
                Some((mount, dir)) if mount.starts_with('/') && !dir.is_empty() => {}
                _ => problems.push(format!("`static-map`: `{m}` is not /MOUNT=DIRECTORY")),
            }
        }
        for kv in self.env.iter() {
            if !kv.contains('=') || kv.starts_with('=') {
                problems.push(format!("`env`: `{kv}` is not NAME=VALUE"));
            }
        }
        for mule in &self.mule.0 {
            problems.extend(mule.problems());
        }
        for kv in self.worker_env.iter() {
            if !kv.contains('=') || kv.starts_with('=') {
                problems.push(format!("`worker-env`: `{kv}` is not NAME=VALUE"));
            }
        }
        if let Some(path) = &self.health_check {
            if !path.starts_with('/') {
                problems.push(format!(
                    "`health-check`: `{path}` must be a path starting with /"
                ));
            }
        }
        let listeners = self.listen_addrs();
        for (key, addr) in [("stats", &self.stats), ("metrics", &self.metrics)] {
            if let Some(ServeAddr(a)) = addr {
                if listeners.contains(a) {
                    problems.push(format!("`{key}`: {a} is a listener's address already"));
                }
            }
        }
        if let (Some(s), Some(m)) = (&self.stats, &self.metrics) {
            if s == m {
                problems.push(format!(
                    "`metrics`: {} is `stats`'s address already; give each its own",
                    m.0
                ));
            }
        }
        if self.stats_http && self.stats.is_none() {
            problems.push("`stats-http`: there is no `stats` address to serve over HTTP".into());
        }
        if let Some(cmd) = &self.zergling {
            if cmd.iter().all(|s| s.trim().is_empty()) {
                problems.push("`zergling`: the command is empty".into());
            }
        }
        problems
    }

    /// The addresses of every listener to bind: `http`'s, then `socket`'s, in config order.
    pub fn listen_addrs(&self) -> Vec<ListenAddr> {
        self.listeners().into_iter().map(|(_, addr)| addr).collect()
    }

    /// The listeners to bind with the protocol each speaks: `http`'s, `socket`'s, `https`'s,
    /// then `http-to-https`'s, in config order, `=N` resolved to its shared socket's address.
    pub fn listeners(&self) -> Vec<(Protocol, ListenAddr)> {
        self.listener_options()
            .into_iter()
            .filter_map(|l| Some((l.protocol, ListenAddr::parse(&l.address).ok()?)))
            .collect()
    }

    /// Every listener option's value, in the order of [`Config::listeners`], `=N` resolved; one
    /// naming no shared socket is left out (a problem at load).
    pub fn listener_options(&self) -> Vec<ListenerOption> {
        self.resolve_listeners().0
    }

    /// The certificate and key of the `https` listener at `addr`, if the config has one.
    pub fn tls_files(&self, addr: &ListenAddr) -> Option<TlsFiles> {
        let l = self.listener_options().into_iter().find(|l| {
            l.protocol == Protocol::Https
                && ListenAddr::parse(&l.address).ok().as_ref() == Some(addr)
        })?;
        match &l.fields[..] {
            [cert, key] => Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            _ => None,
        }
    }

    /// The port the `http-to-https` listener at `addr` redirects to: its own `,PORT`, else the
    /// first TCP `https` listener's; `None` for neither (the URL then names no port: 443).
    pub fn https_redirect_port(&self, addr: &ListenAddr) -> Option<u16> {
        let options = self.listener_options();
        let own = options.iter().find(|l| {
            l.protocol == Protocol::HttpToHttps
                && ListenAddr::parse(&l.address).ok().as_ref() == Some(addr)
        });
        if let Some(port) = own.and_then(|l| l.fields.first()) {
            return port.parse().ok();
        }
        options
            .iter()
            .filter(|l| l.protocol == Protocol::Https)
            .find_map(|l| match ListenAddr::parse(&l.address) {
                Ok(ListenAddr::Tcp(a)) => Some(a.port()),
                _ => None,
            })
    }

    /// The listener options resolved, and what is wrong with `=N` references.
    fn resolve_listeners(&self) -> (Vec<ListenerOption>, Vec<String>) {
        let shared: Vec<(String, Vec<String>)> =
            self.shared_socket.iter().map(split_fields).collect();
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (protocol, list) in [
            (Protocol::Http, &self.http),
            (Protocol::Uwsgi, &self.socket),
            (Protocol::Https, &self.https),
            (Protocol::HttpToHttps, &self.http_to_https),
        ] {
            // Only these take comma fields (uWSGI's syntax): a unix socket path may hold one.
            let with_fields = matches!(protocol, Protocol::Https | Protocol::HttpToHttps);
            for value in list.iter() {
                let (address, fields) = if with_fields {
                    split_fields(value)
                } else {
                    (value.trim().to_owned(), Vec::new())
                };
                let Some(n) = address.strip_prefix('=') else {
                    out.push(ListenerOption {
                        protocol,
                        address,
                        shared: None,
                        fields,
                    });
                    continue;
                };
                match n.parse::<usize>().ok().and_then(|i| Some((i, shared.get(i)?))) {
                    Some((i, (shared_address, shared_fields))) => out.push(ListenerOption {
                        protocol,
                        address: shared_address.clone(),
                        shared: Some(i),
                        fields: if fields.is_empty() && with_fields {
                            shared_fields.clone()
                        } else {
                            fields
                        },
                    }),
                    None => problems.push(format!(
                        "`{}`: `{address}` names no shared socket (there are {}: `=0` is the first)",
                        protocol.option(),
                        shared.len()
                    )),
                }
            }
        }
        (out, problems)
    }

    /// What is wrong with the listener options and the shared sockets.
    fn listener_problems(&self) -> Vec<String> {
        let (options, mut problems) = self.resolve_listeners();
        for l in &options {
            let key = l.protocol.option();
            if let Err(e) = ListenAddr::parse(&l.address) {
                problems.push(format!("`{key}`: {e}"));
            }
            let written = || {
                std::iter::once(l.address.as_str())
                    .chain(l.fields.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            match l.protocol {
                Protocol::Https => match &l.fields[..] {
                    [cert, key] if !cert.is_empty() && !key.is_empty() => {}
                    [_, _, _, ..] => problems.push(format!(
                        "`https`: `{}` has fields past ADDRESS,CERT,KEY: rustls chooses the \
                         cipher suites itself (uWSGI's fourth field), and client certificates \
                         (its fifth) are not supported",
                        written()
                    )),
                    _ => problems.push(format!(
                        "`https`: `{}` is not ADDRESS,CERT,KEY (a certificate chain and its \
                         private key, PEM files)",
                        written()
                    )),
                },
                Protocol::HttpToHttps => match &l.fields[..] {
                    [] => {}
                    [port] if port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                    _ => problems.push(format!(
                        "`http-to-https`: `{}` is not ADDRESS[,PORT]",
                        written()
                    )),
                },
                Protocol::Http | Protocol::Uwsgi => {}
            }
        }
        for (i, value) in self.shared_socket.iter().enumerate() {
            let (address, _) = split_fields(value);
            if let Err(e) = ListenAddr::parse(&address) {
                problems.push(format!("`shared-socket`: {e}"));
            } else if !options.iter().any(|l| l.shared == Some(i)) {
                problems.push(format!(
                    "`shared-socket`: `{address}` (`={i}`) is named by no listener: nothing \
                     would answer on it; name it (`http: ={i}`, `https: ={i},CERT,KEY`) or \
                     remove it"
                ));
            }
        }
        problems
    }

    /// The command that starts a zergling, if the config names one.
    pub fn zergling_command(&self) -> Option<Vec<String>> {
        let cmd = self.zergling.as_ref()?;
        let argv: Vec<String> = if cmd.0.len() == 1 {
            cmd.0[0].split_whitespace().map(str::to_owned).collect()
        } else {
            cmd.0.clone()
        };
        Some(argv)
    }

    pub fn reload_mercy(&self) -> Duration {
        Duration::from_secs(self.reload_mercy)
    }

    pub fn worker_reload_mercy(&self) -> Duration {
        Duration::from_secs(self.worker_reload_mercy)
    }

    /// `header-timeout`, or `None` when connections may wait for ever.
    pub fn header_timeout(&self) -> Option<Duration> {
        (self.header_timeout > 0).then(|| Duration::from_secs(self.header_timeout))
    }

    /// The farms, parsed from `NAME:1,2` entries.
    pub fn farms(&self) -> Result<Vec<Farm>, String> {
        self.farm
            .iter()
            .map(|f| {
                let bad = || format!("`farm`: `{f}` is not NAME:POSITION,POSITION...");
                let (name, list) = f.split_once(':').ok_or_else(bad)?;
                let mules = list
                    .split(',')
                    .map(|n| n.trim().parse::<u32>().map_err(|_| bad()))
                    .collect::<Result<Vec<u32>, String>>()?;
                if name.trim().is_empty() || mules.is_empty() {
                    return Err(bad());
                }
                Ok(Farm {
                    name: name.trim().to_owned(),
                    mules,
                })
            })
            .collect()
    }

    /// `static-map` entries as (URL prefix without trailing slash, directory).
    pub fn static_maps(&self) -> Vec<(String, PathBuf)> {
        self.static_map
            .iter()
            .filter_map(|m| m.split_once('='))
            .map(|(mount, dir)| (mount.trim_end_matches('/').to_owned(), PathBuf::from(dir)))
            .collect()
    }

    /// `worker-env` for worker `id`: each variable with `%(worker)` replaced.
    pub fn worker_env_for(&self, id: u32) -> Vec<(String, Option<String>)> {
        self.worker_env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), Some(v.replace("%(worker)", &id.to_string()))))
            .collect()
    }

    pub fn ready_timeout(&self) -> Duration {
        Duration::from_secs(self.ready_timeout)
    }

    /// `harakiri`, when set.
    pub fn harakiri(&self) -> Option<Duration> {
        (self.harakiri > 0).then(|| Duration::from_secs(self.harakiri))
    }

    /// `mule-harakiri`, when set.
    pub fn mule_harakiri(&self) -> Option<Duration> {
        (self.mule_harakiri > 0).then(|| Duration::from_secs(self.mule_harakiri))
    }

    /// Web worker `id`'s own `max-requests` (with `max-requests-delta`), when set.
    pub fn max_requests_of(&self, id: u32) -> Option<u64> {
        (self.max_requests > 0).then(|| {
            self.max_requests.saturating_add(
                u64::from(id.saturating_sub(1)).saturating_mul(self.max_requests_delta),
            )
        })
    }

    /// `reload-on-rss` in bytes, when set.
    pub fn reload_on_rss_bytes(&self) -> Option<u64> {
        (self.reload_on_rss > 0).then(|| self.reload_on_rss.saturating_mul(1 << 20))
    }

    /// `max-worker-lifetime`, when set.
    pub fn max_worker_lifetime(&self) -> Option<Duration> {
        (self.max_worker_lifetime > 0).then(|| Duration::from_secs(self.max_worker_lifetime))
    }
}

/// `ADDRESS[,FIELD...]`, each part trimmed.
fn split_fields(value: &str) -> (String, Vec<String>) {
    let mut parts = value.split(',').map(|p| p.trim().to_owned());
    let address = parts.next().unwrap_or_default();
    (address, parts.collect())
}

/// Turns serde_yaml's message into one an operator can act on: the key, the line, and for an
/// unknown key the closest valid one.
fn describe_yaml_error(e: &serde_yaml::Error) -> String {
    let raw = e.to_string();
    // serde_yaml appends " at line L column C"; we say the line ourselves.
    let body = match raw.rfind(" at line ") {
        Some(i) => &raw[..i],
        None => raw.as_str(),
    };
    let line = e
        .location()
        .map(|l| format!("line {}: ", l.line()))
        .unwrap_or_default();
    if let Some(unknown) = unknown_field(body) {
        let hint = closest_option(unknown)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        return format!("{line}unknown key `{unknown}`{hint}");
    }
    format!("{line}{body}")
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = &message[message.find("unknown field `")? + "unknown field `".len()..];
    Some(&rest[..rest.find('`')?])
}

/// The valid option closest to `key` by edit distance, if any is close enough to be a typo.
pub fn closest_option(key: &str) -> Option<&'static str> {
    OPTIONS
        .iter()
        .map(|o| (strsim::damerau_levenshtein(key, o), *o))
        .filter(|(d, o)| *d <= 2.max(o.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

/// Every option name, in the order of [`Config`] (aliases included).
pub const OPTIONS: &[&str] = &[
    "zerg-server",
    "http",
    "socket",
    "uwsgi-socket",
    "https",
    "http-to-https",
    "shared-socket",
    "chmod-socket",
    "wsgi-file",
    "module",
    "callable",
    "interface",
    "loop",
    "lazy-apps",
    "pythonpath",
    "virtualenv",
    "venv",
    "home",
    "chdir",
    "processes",
    "workers",
    "threads",
    "listen",
    "mule",
    "farm",
    "locks",
    "static-map",
    "post-buffering",
    "busy-yield-us",
    "header-timeout",
    "limit-request-line",
    "limit-request-fields",
    "limit-request-field-size",
    "buffer-size",
    "env",
    "worker-env",
    "zergling",
    "reload-mercy",
    "worker-reload-mercy",
    "harakiri",
    "harakiri-verbose",
    "mule-harakiri",
    "max-requests",
    "max-requests-delta",
    "reload-on-rss",
    "max-worker-lifetime",
    "ready-timeout",
    "health-check",
    "stats",
    "stats-http",
    "metrics",
    "pidfile",
    "logto",
    "log-reopen",
    "log-format",
    "umask",
    "uid",
    "gid",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c =
            parse("zerg-server: /tmp/z.sock\nhttp: 127.0.0.1:8080\nwsgi-file: app.py\n").unwrap();
        assert_eq!(c.processes, 1);
        assert_eq!(c.threads, 1);
        assert_eq!(c.post_buffering, 64 * 1024);
        assert_eq!(c.busy_yield_us, 200);
        assert_eq!(c.header_timeout(), Some(Duration::from_secs(30)));
        assert_eq!(c.callable, "application");
        assert_eq!(
            (
                c.limit_request_line,
                c.limit_request_fields,
                c.limit_request_field_size,
                c.buffer_size
            ),
            (4094, 100, 8190, 65536)
        );
        assert_eq!(
            c.listen_addrs(),
            vec![ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap())]
        );
    }

    #[test]
    fn the_limits_default_to_off_and_read_as_uwsgi_means_them() {
        let base = "zerg-server: z.sock\nhttp: :8000\nwsgi-file: a.py\n";
        let c = parse(base).unwrap();
        assert_eq!(
            (c.harakiri(), c.mule_harakiri(), c.max_requests_of(1)),
            (None, None, None)
        );
        assert_eq!(
            (c.reload_on_rss_bytes(), c.max_worker_lifetime()),
            (None, None)
        );
        let c = parse(&format!(
            "{base}harakiri: 30\nmax-requests: 100\nmax-requests-delta: 7\nreload-on-rss: 64\n"
        ))
        .unwrap();
        assert_eq!(c.harakiri(), Some(Duration::from_secs(30)));
        // uWSGI's: `max-requests + (worker_id - 1) * max-requests-delta`.
        assert_eq!(
            [1, 2, 4].map(|id| c.max_requests_of(id)),
            [Some(100), Some(107), Some(121)]
        );
        assert_eq!(c.reload_on_rss_bytes(), Some(64 << 20));
    }

    #[test]
    fn a_bad_limit_names_its_key_and_line() {
        let base = "zerg-server: z.sock\nhttp: :8000\nwsgi-file: a.py\n";
        for (key, bad) in [
            ("harakiri", "-1"),
            ("harakiri-verbose", "loud"),
            ("mule-harakiri", "soon"),
            ("max-requests", "1k"),
            ("max-requests-delta", "-3"),
            ("reload-on-rss", "512M"),
            ("max-worker-lifetime", "1h"),
        ] {
            let err = parse(&format!("{base}{key}: {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("line 4: {key}")), "{key}: {err}");
        }
        let err = parse(&format!(
            "{base}max-requests-delta: 5\nharakiri-verbose: true\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`max-requests-delta` spreads `max-requests`"),
            "{err}"
        );
        assert!(
            err.contains("`harakiri-verbose` applies to `harakiri`"),
            "{err}"
        );
    }

    #[test]
    fn the_access_log_is_off_unless_a_format_is_given() {
        let base = "zerg-server: z.sock\nhttp: :8000\nwsgi-file: a.py\n";
        assert_eq!(parse(base).unwrap().log_format, None);
        let c = parse(&format!("{base}log-format: json\nlog-reopen: true\n")).unwrap();
        assert_eq!(c.log_format, Some(LogFormat::Json));
        assert!(c.log_reopen);
        let err = parse(&format!("{base}log-format: apache\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 4: log-format: unknown variant `apache`"),
            "{err}"
        );
    }

    #[test]
    fn lists_and_scalars_both_work() {
        let c = parse(
            "zerg-server: z.sock\nhttp:\n  - :8000\n  - /run/app.sock\n  - '[::1]:9000'\nmodule: app:app\npythonpath: lib\n",
        )
        .unwrap();
        assert_eq!(
            c.listen_addrs(),
            vec![
                ListenAddr::Tcp("0.0.0.0:8000".parse().unwrap()),
                ListenAddr::Unix("/run/app.sock".into()),
                ListenAddr::Tcp("[::1]:9000".parse().unwrap()),
            ]
        );
        assert_eq!(c.pythonpath.0, vec!["lib"]);
    }

    #[test]
    fn misspelt_key_names_key_line_and_suggestion() {
        let err = parse("zerg-server: z.sock\nhttp: :8000\nwsgi-file: a.py\nprocesess: 4\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `procesess`"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("did you mean `processes`"), "{err}");
    }

    #[test]
    fn interface_and_loop_take_their_words_and_name_a_bad_one() {
        let c = parse("zerg-server: z\nhttp: :1\nmodule: a:app\n").unwrap();
        assert_eq!(
            (c.interface, c.event_loop),
            (Interface::Wsgi, EventLoop::Auto)
        );
        let c = parse("zerg-server: z\nhttp: :1\nmodule: a:app\ninterface: asgi\nloop: uvloop\n")
            .unwrap();
        assert_eq!(
            (c.interface, c.event_loop),
            (Interface::Asgi, EventLoop::Uvloop)
        );
        let err = parse("zerg-server: z\nhttp: :1\nmodule: a:app\ninterface: rsgi\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4") && err.contains("`rsgi`"), "{err}");
        assert!(err.contains("`wsgi`") && err.contains("`asgi`"), "{err}");
        let err = parse("zerg-server: z\nhttp: :1\nmodule: a:app\nloop: tokio\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4") && err.contains("`uvloop`"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = parse("zerg-server: z.sock\nhttp: :8000\nwsgi-file: a.py\nprocesses: many\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("processes"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn every_semantic_problem_is_reported() {
        let err = parse("zerg-server: z.sock\nhttp: nonsense\nprocesses: 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nonsense`"), "{err}");
        assert!(err.contains("wsgi-file"), "{err}");
        assert!(err.contains("processes"), "{err}");
    }

    #[test]
    fn a_handover_past_the_kernels_fd_limit_is_refused() {
        let config = |mules: usize| {
            let list = vec!["m.py"; mules].join(", ");
            format!("zerg-server: z\nhttp: :1\nmodule: a\nmule: [{list}]\nfarm: jobs:1\n")
        };
        assert!(parse(&config(80)).is_ok());
        let err = parse(&config(90)).unwrap_err().to_string();
        assert!(
            err.contains("90 mules, 1 farms and 1 listeners need 273 fds"),
            "{err}"
        );
    }

    #[test]
    fn request_limits_are_checked_together() {
        let err = parse(
            "zerg-server: z\nhttp: :1\nmodule: a\nlimit-request-fields: 0\nbuffer-size: 100\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`limit-request-fields` must be at least 1"),
            "{err}"
        );
        assert!(err.contains("`buffer-size` must be at least 512"), "{err}");
        let err = parse("zerg-server: z\nhttp: :1\nmodule: a\nlimit-request-fields: 20000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 10000"), "{err}");
    }

    #[test]
    fn farms_name_existing_mules() {
        let c = parse("zerg-server: z\nhttp: :1\nmodule: a\nmule: [h.py, h.py]\nfarm: jobs:1,2\n")
            .unwrap();
        assert_eq!(
            c.farms().unwrap(),
            vec![Farm {
                name: "jobs".into(),
                mules: vec![1, 2]
            }]
        );
        let err =
            parse("zerg-server: z\nhttp: :1\nmodule: a\nmule: h.py\nfarm:\n  - jobs:1\n  - x\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("`x` is not NAME:POSITION"), "{err}");
        let err = parse("zerg-server: z\nhttp: :1\nmodule: a\nmule: h.py\nfarm: jobs:1,3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("jobs names mule 3, but there are 1 mules"),
            "{err}"
        );
    }

    #[test]
    fn socket_listeners_speak_uwsgi() {
        let c = parse(
            "zerg-server: z\nhttp: :8000\nsocket:\n  - 127.0.0.1:3031\n  - /run/app.sock\nmodule: a\n",
        )
        .unwrap();
        assert_eq!(
            c.listeners(),
            vec![
                (
                    Protocol::Http,
                    ListenAddr::Tcp("0.0.0.0:8000".parse().unwrap())
                ),
                (
                    Protocol::Uwsgi,
                    ListenAddr::Tcp("127.0.0.1:3031".parse().unwrap())
                ),
                (Protocol::Uwsgi, ListenAddr::Unix("/run/app.sock".into())),
            ]
        );
        assert_eq!(c.listen_addrs().len(), 3);
        // uWSGI's other name for it, and a socket alone is listener enough.
        let c = parse("zerg-server: z\nuwsgi-socket: :3031\nmodule: a\n").unwrap();
        assert_eq!(c.listeners()[0].0, Protocol::Uwsgi);
        let err = parse("zerg-server: z\nmodule: a\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`http` or `socket`"), "{err}");
        let err = parse("zerg-server: z\nsocket: nowhere\nmodule: a\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`socket`: `nowhere`"), "{err}");
        let err = parse("zerg-server: z\nhttp: :3031\nsocket: 0.0.0.0:3031\nmodule: a\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.0.0.0:3031 is given twice"), "{err}");
    }

    #[test]
    fn https_redirects_and_shared_sockets_resolve() {
        let c = parse(concat!(
            "zerg-server: z\nmodule: a\n",
            "shared-socket:\n  - 127.0.0.1:8080\n  - ':8443,shared.crt,shared.key'\n",
            "http: =0\n",
            "https:\n  - =1\n  - '[::1]:9443, own.crt, own.key'\n",
            "http-to-https:\n  - 127.0.0.1:8081\n  - 127.0.0.1:8082,4443\n",
        ))
        .unwrap();
        let addr = |s: &str| ListenAddr::parse(s).unwrap();
        assert_eq!(
            c.listeners(),
            vec![
                (Protocol::Http, addr("127.0.0.1:8080")),
                (Protocol::Https, addr(":8443")),
                (Protocol::Https, addr("[::1]:9443")),
                (Protocol::HttpToHttps, addr("127.0.0.1:8081")),
                (Protocol::HttpToHttps, addr("127.0.0.1:8082")),
            ]
        );
        let files = |cert: &str, key: &str| TlsFiles {
            cert: cert.into(),
            key: key.into(),
        };
        assert_eq!(
            c.tls_files(&addr("0.0.0.0:8443")),
            Some(files("shared.crt", "shared.key"))
        );
        assert_eq!(
            c.tls_files(&addr("[::1]:9443")),
            Some(files("own.crt", "own.key"))
        );
        assert_eq!(c.tls_files(&addr("127.0.0.1:8080")), None);
        // The first https listener's port, unless the redirect names its own.
        assert_eq!(c.https_redirect_port(&addr("127.0.0.1:8081")), Some(8443));
        assert_eq!(c.https_redirect_port(&addr("127.0.0.1:8082")), Some(4443));
        assert_eq!(Protocol::HttpToHttps.to_string(), "http-to-https");
    }

    #[test]
    fn https_and_shared_socket_mistakes_are_reported_together() {
        let err = parse(concat!(
            "zerg-server: z\nmodule: a\n",
            "shared-socket: [':80', ':81', nowhere]\n",
            "http: =0\n",
            "socket: =3\n",
            "https: [':443,only.crt', ':444,c,k,HIGH', '=2,c,k']\n",
            "http-to-https: ':8080,https'\n",
        ))
        .unwrap_err()
        .to_string();
        for expected in [
            "`socket`: `=3` names no shared socket (there are 3: `=0` is the first)",
            "`https`: `:443,only.crt` is not ADDRESS,CERT,KEY",
            "`https`: `:444,c,k,HIGH` has fields past ADDRESS,CERT,KEY",
            "`https`: `nowhere` is neither host:port",
            "`http-to-https`: `:8080,https` is not ADDRESS[,PORT]",
            "`shared-socket`: `:81` (`=1`) is named by no listener",
            "`shared-socket`: `nowhere` is neither host:port",
        ] {
            assert!(err.contains(expected), "{expected}\n{err}");
        }
        // A shared socket named twice is one address given twice.
        let err = parse("zerg-server: z\nmodule: a\nshared-socket: ':80'\nhttp: =0\nsocket: =0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.0.0.0:80 is given twice"), "{err}");
        // An https listener alone is listener enough.
        assert!(parse("zerg-server: z\nmodule: a\nhttps: ':443,c,k'\n").is_ok());
    }

    #[test]
    fn chmod_socket_is_octal_digits_as_uwsgi_takes_them() {
        let mode = |value: &str| {
            parse(&format!(
                "zerg-server: z\nsocket: /s.sock\nmodule: a\n{value}"
            ))
            .map(|c| c.chmod_socket.0)
            .map_err(|e| e.to_string())
        };
        assert_eq!(mode(""), Ok(0o666));
        assert_eq!(mode("chmod-socket:\n"), Ok(0o666));
        assert_eq!(mode("chmod-socket: 660\n"), Ok(0o660));
        assert_eq!(mode("chmod-socket: 0660\n"), Ok(0o660));
        assert_eq!(mode("chmod-socket: '600'\n"), Ok(0o600));
        assert_eq!(mode("chmod-socket: ''\n"), Ok(0o666));
        let err = mode("chmod-socket: 690\n").unwrap_err();
        assert!(
            err.contains("chmod-socket") || err.contains("octal"),
            "{err}"
        );
        assert!(err.contains("line 4"), "{err}");
        assert!(mode("chmod-socket: rw\n").is_err());
    }

    #[test]
    fn no_suggestion_for_something_unrelated() {
        assert_eq!(closest_option("zzzzzzzzzzzz"), None);
        assert_eq!(closest_option("proceses"), Some("processes"));
    }

    #[test]
    fn uid_and_gid_name_entries_that_exist() {
        let c = parse("zerg-server: z\nhttp: :1\nmodule: a\nuid: root\ngid: 0\n").unwrap();
        assert_eq!(c.uid.map(|u| (u.name, u.uid)), Some(("root".into(), 0)));
        assert_eq!(c.gid.map(|g| g.gid), Some(0));
        let err = parse("zerg-server: z\nhttp: :1\nmodule: a\nuid: zerg-no-such-user\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4: "), "{err}");
        assert!(
            err.contains("uid: no user `zerg-no-such-user` on this system"),
            "{err}"
        );
    }

    #[test]
    fn stats_and_metrics_take_addresses_and_name_key_and_line() {
        let base = "zerg-server: z\nhttp: :1\nmodule: a\n";
        let c = parse(&format!(
            "{base}stats: 127.0.0.1:9191\nstats-http: true\nmetrics: /run/m.sock\n"
        ))
        .unwrap();
        assert_eq!(
            c.stats,
            Some(ServeAddr(ListenAddr::Tcp(
                "127.0.0.1:9191".parse().unwrap()
            )))
        );
        assert!(c.stats_http);
        assert_eq!(
            c.metrics,
            Some(ServeAddr(ListenAddr::Unix("/run/m.sock".into())))
        );
        let err = parse(&format!("{base}metrics: nowhere\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4: ") && err.contains("metrics"), "{err}");
        assert!(err.contains("`nowhere` is neither"), "{err}");
        let err = parse(&format!("{base}stats: 9191\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4: ") && err.contains("`:9191`"), "{err}");
        let err = parse(&format!("{base}stats-http: true\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`stats-http`: there is no `stats`"), "{err}");
        let err = parse(&format!("{base}stats: :7\nmetrics: ':7'\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`metrics`"), "{err}");
        let err = parse(&format!("{base}metrics: :1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a listener's address already"), "{err}");
    }

    #[test]
    fn zergling_command_string_is_split() {
        let c =
            parse("zerg-server: z\nhttp: :1\nmodule: a\nzergling: /opt/r2/zergling --verbose\n")
                .unwrap();
        assert_eq!(
            c.zergling_command().unwrap(),
            vec!["/opt/r2/zergling", "--verbose"]
        );
    }
}
