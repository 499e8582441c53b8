//! Binding as root, serving as a user (`uid`, `gid`): a pool started as root binds a port
//! below 1024 and a unix socket in a directory only root may write to, opens its log and pid
//! file there, then the pool, its zerglings, their workers and mules all run as a real
//! unprivileged user with its groups, through a reload too; root and that user may use the
//! control socket, nobody else.
//!
//! Needs root (CI runs as root): skipped with a message otherwise. The test creates a system
//! user and groups of its own and deletes them at the end.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{apps_dir, bin_dir, free_port, output_within, wait_for, Server, DEADLINE};
use serde_json::{json, Value};
use zerg::control::{PoolStatus, ProcessKind};

/// A system user made for this test, with a group of its own and one more: deleted on drop.
struct TestUser {
    name: String,
    /// A supplementary group, which `initgroups` must give the zerglings.
    extra: String,
    uid: u32,
    gid: u32,
    extra_gid: u32,
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    output_within(Command::new(program).args(args), DEADLINE)
}

impl TestUser {
    fn create() -> TestUser {
        let name = format!("zergtest{}", std::process::id());
        let extra = format!("{name}x");
        // Whatever an earlier run with the same pid left.
        TestUser::remove(&name, &extra);
        let made = run("groupadd", &["--system", &extra]);
        assert!(made.status.success(), "groupadd: {made:?}");
        let made = run(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                "--groups",
                &extra,
                &name,
            ],
        );
        assert!(made.status.success(), "useradd: {made:?}");
        let user = nix::unistd::User::from_name(&name).unwrap().unwrap();
        let extra_gid = nix::unistd::Group::from_name(&extra)
            .unwrap()
            .unwrap()
            .gid
            .as_raw();
        TestUser {
            name,
            extra,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            extra_gid,
        }
    }

    fn remove(name: &str, extra: &str) {
        // --force: a process of the user that is still being reaped does not keep it.
        let _ = run("userdel", &["--force", name]);
        let _ = run("groupdel", &[name]);
        let _ = run("groupdel", &[extra]);
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        TestUser::remove(&self.name, &self.extra);
    }
}

/// Directories given search permission for others (`o+x`) so that the user can reach the
/// binaries and the Python they load (CI's CPython lives under /root, mode 0700); their modes
/// are put back on drop.
struct Searchable(Vec<(PathBuf, u32)>);

impl Searchable {
    /// Makes sure `user` can start a zergling, granting `o+x` on the directories in the way of
    /// the binaries and the libraries the zergling loads, if it cannot.
    fn for_user(user: &TestUser) -> Searchable {
        let mut granted = Searchable(Vec::new());
        if zergling_starts_as(user).is_ok() {
            return granted;
        }
        let zergling = bin_dir().join("zergling");
        let ldd = run("ldd", &[zergling.to_str().unwrap()]);
        let libraries = String::from_utf8_lossy(&ldd.stdout).into_owned();
        let paths = libraries
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(PathBuf::from)
            .chain([zergling]);
        for path in paths {
            for dir in path.ancestors().skip(1) {
                let Ok(meta) = std::fs::metadata(dir) else {
                    continue;
                };
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o001 == 0 && !granted.0.iter().any(|(d, _)| d == dir) {
                    eprintln!(
                        "note: {} is {mode:o}: granting o+x (search only) for the test user, put back at the end",
                        dir.display()
                    );
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
                        .unwrap();
                    granted.0.push((dir.to_owned(), mode));
                }
            }
        }
        if let Err(e) = zergling_starts_as(user) {
            panic!("the test user cannot start a zergling even so: {e}");
        }
        granted
    }
}

impl Drop for Searchable {
    fn drop(&mut self) {
        for (dir, mode) in self.0.iter().rev() {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode));
        }
    }
}

/// Whether `zergling --version` runs as `user` (it loads libpython as it starts).
fn zergling_starts_as(user: &TestUser) -> Result<(), String> {
    let out = output_within(
        Command::new(bin_dir().join("zergling"))
            .arg("--version")
            .uid(user.uid)
            .gid(user.gid),
        DEADLINE,
    );
    out.status
        .success()
        .then_some(())
        .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A free port of 127.0.0.1 below 1024, if one is found.
fn privileged_port() -> Option<u16> {
    let start = 600 + (std::process::id() % 300) as u16;
    (start..1000)
        .chain(600..start)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// The first port an unprivileged process may bind (Linux's default is 1024).
fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// One `/proc/PID/status` line's fields (`Uid:` gives real, effective, saved, filesystem).
fn proc_status(path: &Path, field: &str) -> Vec<String> {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|rest| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Asserts that process `pid`, every thread of it, runs as the user with its groups and holds
/// no capability.
fn assert_unprivileged(pid: u32, what: &str, user: &TestUser) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("{what} (pid {pid}) is gone: {e}"));
    let uid = user.uid.to_string();
    let gid = user.gid.to_string();
    let mut groups = vec![user.gid, user.extra_gid];
    groups.sort_unstable();
    for task in tasks {
        let status = task.unwrap().path().join("status");
        assert_eq!(
            proc_status(&status, "Uid:"),
            vec![uid.as_str(); 4],
            "{what} {status:?}"
        );
        assert_eq!(
            proc_status(&status, "Gid:"),
            vec![gid.as_str(); 4],
            "{what} {status:?}"
        );
        let mut seen: Vec<u32> = proc_status(&status, "Groups:")
            .iter()
            .map(|g| g.parse().unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, groups, "{what} {status:?}: supplementary groups");
        for caps in ["CapEff:", "CapPrm:"] {
            assert_eq!(
                proc_status(&status, caps),
                vec!["0000000000000000"],
                "{what} {status:?}: {caps}"
            );
        }
    }
}

/// Every process of the serving generation: (what, pid), the master first.
fn serving_processes(status: &PoolStatus) -> (u64, Vec<(String, u32)>) {
    let g = status
        .generations
        .iter()
        .find(|g| g.state == "serving")
        .expect("a serving generation");
    let mut out = vec![("master".to_owned(), g.master_pid.expect("master pid"))];
    out.extend(
        g.processes
            .iter()
            .map(|p| (format!("{} {}", p.kind, p.id), p.pid)),
    );
    (g.generation, out)
}

/// Waits until one generation serves alone with its two workers and its mule; past the
/// deadline, fails with the pool's log (`logto`).
fn wait_settled(server: &Server, log: &Path) -> PoolStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = server.status() {
            if let [g] = &s.generations[..] {
                let mules = g.processes.iter().filter(|p| p.kind == ProcessKind::Mule);
                if g.state == "serving" && g.processes.len() == 3 && mules.count() == 1 {
                    return s;
                }
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no generation settled; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// GET / over a unix socket, on a connection of its own.
fn get_unix(path: &Path) -> String {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `zergctl --pool CONTROL ARGS` as `uid`/`gid`.
fn zergctl_as(control: &Path, uid: u32, gid: u32, args: &[&str]) -> std::process::Output {
    output_within(
        Command::new(bin_dir().join("zergctl"))
            .arg("--pool")
            .arg(control)
            .args(args)
            .uid(uid)
            .gid(gid),
        DEADLINE * 2,
    )
}

/// The app's own view of its ids, and its pid.
fn ids_seen_by_app(server: &Server) -> Value {
    let r = server.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn a_pool_started_as_root_binds_then_everything_runs_as_the_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: binding as root and serving as a user needs root (CI runs as root)");
        return;
    }
    let user = TestUser::create();
    let _searchable = Searchable::for_user(&user);

    // Everything the user must read is readable; `rootonly` is root's: the user can create
    // nothing there, so what the pool makes in it was made before it dropped root.
    let dir = tempfile::tempdir().unwrap();
    let open = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(dir.path(), 0o755);
    for file in ["app.py", "mule.py"] {
        let to = dir.path().join(file);
        std::fs::copy(apps_dir().join("privileges").join(file), &to).unwrap();
        open(&to, 0o644);
    }
    let rootonly = dir.path().join("rootonly");
    std::fs::create_dir(&rootonly).unwrap();
    open(&rootonly, 0o755);

    let (port, below_1024) = match privileged_port() {
        Some(port) => (port, port < unprivileged_port_start()),
        None => (free_port(), false),
    };
    if !below_1024 {
        eprintln!(
            "note: no port an unprivileged process could not bind; the unix socket in a \
             directory of root's shows the binding happened as root"
        );
    }
    let control = dir.path().join("zerg.sock");
    let unix_listener = rootonly.join("app.sock");
    let log = rootonly.join("site.log");
    let pidfile = rootonly.join("pool.pid");
    let config = dir.path().join("zerg.yml");
    let d = dir.path().display();
    std::fs::write(
        &config,
        format!(
            "zerg-server: {}\nhttp:\n  - 127.0.0.1:{port}\n  - {}\nchmod-socket: 666\n\
             wsgi-file: {d}/app.py\nprocesses: 2\nmule: {d}/mule.py\n\
             uid: {}\ngid: {}\nlogto: {}\npidfile: {}\n\
             reload-mercy: 10\nworker-reload-mercy: 10\n",
            control.display(),
            unix_listener.display(),
            user.name,
            user.gid,
            log.display(),
            pidfile.display(),
        ),
    )
    .unwrap();
    open(&config, 0o644);
    let mut server = Server::spawn_with_config(
        dir,
        config,
        control.clone(),
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let status = wait_settled(&server, &log);

    // Bound as root: the port (below what an unprivileged process may bind) and the unix
    // socket in root's directory both serve.
    let seen = ids_seen_by_app(&server);
    let mut groups = vec![user.gid, user.extra_gid];
    groups.sort_unstable();
    assert_eq!(seen["uid"], user.uid, "{seen}");
    assert_eq!(seen["euid"], user.uid, "{seen}");
    assert_eq!(seen["gid"], user.gid, "{seen}");
    assert_eq!(seen["egid"], user.gid, "{seen}");
    assert_eq!(seen["groups"], json!(groups), "{seen}");
    let over_unix = get_unix(&unix_listener);
    assert!(over_unix.starts_with("HTTP/1.1 200"), "{over_unix}");
    assert_eq!(std::fs::metadata(&unix_listener).unwrap().uid(), 0);

    // The log and the pid file, in root's directory, were opened before the drop; the app's
    // output reaches the log through the descriptor handed down.
    wait_for("the app's output in the logto file", || {
        log_text().contains("privileges app imported").then_some(())
    });
    assert!(log_text().contains("now running as user"), "{}", log_text());
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, server.pool_pid());

    // The control socket is the user's, 0600; root and the user may use it, nobody else.
    let meta = std::fs::metadata(&control).unwrap();
    assert_eq!(
        (meta.uid(), meta.permissions().mode() & 0o777),
        (user.uid, 0o600)
    );
    let root = server.zergctl(&["status"]);
    assert!(root.status.success(), "{root:?}");
    let own = zergctl_as(&control, user.uid, user.gid, &["status"]);
    assert!(own.status.success(), "the user's zergctl: {own:?}");
    let nobody = zergctl_as(&control, 65534, 65534, &["status"]);
    assert!(!nobody.status.success(), "nobody was answered: {nobody:?}");

    // The pool and every process of the generation: the user, its groups, no capability.
    assert_unprivileged(server.pool_pid(), "pool", &user);
    let (first, processes) = serving_processes(&status);
    for (what, pid) in &processes {
        assert_unprivileged(*pid, what, &user);
    }

    // A reload, asked by the user itself: the new generation is the user's too.
    let reload = zergctl_as(&control, user.uid, user.gid, &["reload"]);
    assert!(
        reload.status.success(),
        "reload: {reload:?}\n{}",
        log_text()
    );
    let status = wait_settled(&server, &log);
    let (second, processes) = serving_processes(&status);
    assert!(second > first, "generation {second} after {first}");
    for (what, pid) in &processes {
        assert_unprivileged(*pid, what, &user);
    }
    assert_unprivileged(server.pool_pid(), "pool", &user);
    let seen = ids_seen_by_app(&server);
    assert_eq!(
        (&seen["uid"], &seen["gid"]),
        (&json!(user.uid), &json!(user.gid))
    );
    assert!(get_unix(&unix_listener).starts_with("HTTP/1.1 200"));

    // The pool binary replaced in place, asked by root: the new pool is started by the old
    // one, so it is the user too; it inherits the log and cannot rewrite root's pid file.
    let upgrade = server.zergctl(&["upgrade-pool"]);
    assert!(
        upgrade.status.success(),
        "upgrade: {upgrade:?}\n{}",
        log_text()
    );
    assert!(server.wait_exit(DEADLINE).success(), "{}", log_text());
    let upgraded = wait_for("the upgraded pool to adopt the generation", || {
        let s = server.status()?;
        let g = s.generations.first()?;
        (s.pool_pid != pid && g.generation == second && g.state == "serving").then_some(s.pool_pid)
    });
    assert_unprivileged(upgraded, "upgraded pool", &user);
    assert!(
        log_text().contains("it still names the old pool"),
        "{}",
        log_text()
    );

    // That pool killed, one started again as root adopts the generation (its unix listener in
    // root's directory too), then becomes the user.
    // SAFETY: killing the pool this test started (through the upgrade).
    unsafe { libc::kill(upgraded as i32, libc::SIGKILL) };
    wait_for("the upgraded pool to die", || {
        (!common::alive(upgraded)).then_some(())
    });
    server.start_pool_again();
    let status = wait_settled(&server, &log);
    assert_eq!(serving_processes(&status).0, second, "the same generation");
    assert_unprivileged(server.pool_pid(), "restarted pool", &user);
    assert!(get_unix(&unix_listener).starts_with("HTTP/1.1 200"));

    // A pool that is the user stops its generations; root's pid file stays (the next start
    // overwrites it).
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        log_text()
    );
    assert!(
        log_text().contains("pidfile left in place"),
        "{}",
        log_text()
    );
}

#[test]
fn a_pool_that_is_not_root_may_only_be_its_own_uid() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: starting the pool as another user needs root (CI runs as root)");
        return;
    }
    // As nobody, a config that says root: refused before anything is bound.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = dir.path().join("zerg.yml");
    std::fs::write(
        &config,
        format!(
            "zerg-server: {}/zerg.sock\nhttp: 127.0.0.1:{}\nmodule: a\nuid: root\n",
            dir.path().display(),
            free_port()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = output_within(
        Command::new(bin_dir().join("zerg-pool"))
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .uid(65534)
            .gid(65534),
        DEADLINE,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`uid` is user root (uid 0), but this process runs as uid 65534, not root"),
        "{err}"
    );
    assert!(!dir.path().join("zerg.sock").exists(), "nothing was bound");
}
