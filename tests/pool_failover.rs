//! The pool is no single point of failure, through the real binaries: a generation serves on
//! when its pool is killed, a pool started again adopts it (same kernel sockets, same queues),
//! and `zergctl upgrade-pool` replaces the pool binary under load. Every request of the load
//! counts; none may fail.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use common::load::{keep_alive, Load};
use common::{alive, bin_dir, open_fds, wait_for, Client, KillOnDrop, Server};

/// The versioned app, as `version`.
fn app(version: &str) -> String {
    include_str!("apps/versioned.py").replace("\"v1\"", &format!("\"{version}\""))
}

/// Every pid of every generation the pool reports.
fn generation_pids(server: &Server) -> Vec<u32> {
    let status = server.wait_serving();
    status
        .generations
        .iter()
        .flat_map(|g| {
            g.master_pid
                .into_iter()
                .chain(g.processes.iter().map(|p| p.pid))
        })
        .collect()
}

/// `conns` threads asking GET / on `addr`, each request on a new connection (so a listener
/// that stopped accepting shows at once); anything but a 200 is a failure.
fn load(addr: SocketAddr, conns: usize) -> Load<String> {
    Load::start(conns, move |conn: &mut Option<Client>| {
        let raw = "GET / HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n";
        let r = keep_alive(conn, || Client::try_connect(addr), raw)?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.text()));
        }
        Ok(r.text())
    })
}

fn no_failure(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} requests failed, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// The inodes of the sockets listening on 127.0.0.1:`port`, from /proc/net/tcp: one kernel
/// socket, the same before and after the pool's death, is the claim.
fn listening_inodes(port: u16) -> Vec<u64> {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address "HEXIP:HEXPORT", state 0A is LISTEN, column 9 the inode.
            let local_port = u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *cols.get(3)? == "0A").then(|| cols.get(9)?.parse().ok())?
        })
        .collect()
}

/// Kills the pool, waits for it to exit, and starts it again with the same config; waits until
/// the new one answers `status`.
fn kill_and_restart_pool(server: &mut Server) -> zerg::control::PoolStatus {
    let old = server.pool_pid();
    server.signal(libc::SIGKILL);
    server.wait_exit(common::DEADLINE);
    server.start_pool_again();
    let status = server.wait_serving();
    assert_ne!(status.pool_pid, old);
    status
}

#[test]
fn pool_killed_under_load_fails_no_request() {
    let mut server = Server::start_with_app_source(&app("v1"), "processes: 2\n");
    let pids = generation_pids(&server);
    let _cleanup = KillOnDrop(pids.clone());
    // The scenario: 32 busy connections.
    let load = load(server.http, 32);
    load.wait_for_more("answers before the pool dies", 50);

    server.signal(libc::SIGKILL);
    server.wait_exit(common::DEADLINE);
    load.wait_for_more("answers after the pool died", 500);
    assert!(
        pids.iter().all(|&p| alive(p)),
        "every process of the generation serves on"
    );
    let (answers, failures) = load.finish();
    no_failure(&failures);
    assert!(answers.iter().all(|a| a == "v1"));
    let log = server.log_text();
    assert_eq!(
        log.matches("no pool: this generation serves on").count(),
        1,
        "the master says once that it serves on"
    );
}

#[test]
fn a_pool_started_again_adopts_the_generation_then_reloads_it() {
    // A unix listener too: its path must not be unlinked while a generation accepts on it.
    let sockets_dir = tempfile::tempdir().unwrap();
    let uwsgi = sockets_dir.path().join("uwsgi.sock");
    let mut server = Server::start_with_app_source(
        &app("v1"),
        &format!("processes: 2\nsocket: {}\n", uwsgi.display()),
    );
    let uwsgi_inode = std::fs::metadata(&uwsgi).unwrap().ino();
    let before = server.wait_serving();
    let first = before.generations[0].clone();
    let port = server.http.port();
    let sockets = listening_inodes(port);
    assert_eq!(sockets.len(), 1, "one listening socket");
    let _cleanup = KillOnDrop(generation_pids(&server));
    let load = load(server.http, 8);
    load.wait_for_more("answers before the pool dies", 50);

    let status = kill_and_restart_pool(&mut server);
    assert_eq!(status.generations.len(), 1, "{status:?}");
    let adopted = &status.generations[0];
    assert_eq!(
        (
            adopted.generation,
            adopted.state.as_str(),
            adopted.master_pid
        ),
        (first.generation, "serving", first.master_pid),
        "the new pool supervises the generation it found"
    );
    assert_eq!(adopted.processes.len(), first.processes.len());
    assert_eq!(
        listening_inodes(port),
        sockets,
        "the same kernel socket listens"
    );
    assert_eq!(
        std::fs::metadata(&uwsgi).unwrap().ino(),
        uwsgi_inode,
        "the unix listener's path is the same file"
    );
    UnixStream::connect(&uwsgi).expect("the unix listener accepts");
    load.wait_for_more("answers after the adoption", 100);

    server.write_app(&app("v2"));
    let out = server.zergctl(&["reload"]);
    assert!(
        out.status.success(),
        "reload after adoption: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = server.wait_serving();
    assert!(
        after
            .generations
            .iter()
            .all(|g| g.generation > first.generation),
        "a new number, never reused: {after:?}"
    );
    wait_for("the adopted master to exit after its drain", || {
        (!alive(first.master_pid.unwrap())).then_some(())
    });
    load.wait_for_more("answers from the new code", 100);
    let (answers, failures) = load.finish();
    no_failure(&failures);
    assert_eq!(answers.last().map(String::as_str), Some("v2"));
    assert_eq!(
        listening_inodes(port),
        sockets,
        "still the same kernel socket"
    );
}

#[test]
fn farm_messages_queued_before_the_pools_death_are_handled_once_after_adoption() {
    let record = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let hold = record.with_extension("hold");
    let handler = common::apps_dir().join("farm/handler.py");
    let mut server = Server::start(
        "farm/app.py",
        &format!(
            "processes: 1\nmule: [{}]\nfarm: jobs:1\nenv:\n  - FARM_RECORD={}\n  - FARM_HOLD={}\n",
            handler.display(),
            record.display(),
            hold.display()
        ),
    );
    wait_for("the mule to run", || {
        let g = server.status()?.generations.into_iter().next()?;
        g.processes
            .iter()
            .any(|p| p.kind == zerg::control::ProcessKind::Mule)
            .then_some(())
    });
    let _cleanup = KillOnDrop(generation_pids(&server));
    // The only mule takes `hold` and hangs: every job after it waits in the farm's queue.
    assert_eq!(server.get("/job/hold").status, 200);
    let held = wait_for("the mule to hold a job", || {
        std::fs::read_to_string(&hold)
            .ok()?
            .trim()
            .parse::<i32>()
            .ok()
    });
    let jobs = 200;
    for job in 0..jobs {
        assert_eq!(server.get(&format!("/job/{job}")).text(), "queued");
    }

    let status = kill_and_restart_pool(&mut server);
    assert_eq!(status.generations[0].state, "serving");
    assert!(
        std::fs::read_to_string(&record)
            .unwrap_or_default()
            .is_empty(),
        "no job was handled while the mule held one"
    );
    // SAFETY: killing the hung mule this test started.
    unsafe { libc::kill(held, libc::SIGKILL) };

    let lines = wait_for("every job to be recorded", || {
        let text = std::fs::read_to_string(&record).ok()?;
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| Some(l.rsplit(' ').next()?.to_owned()))
            .collect();
        (lines.len() > jobs).then_some(lines)
    });
    let mut seen = std::collections::HashMap::new();
    for job in &lines {
        *seen.entry(job.clone()).or_insert(0) += 1;
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "a job handled twice: {seen:?}"
    );
    assert_eq!(seen.len(), jobs + 1, "every job, and the held one again");

    // The adopted generation is the pool's own to stop, too.
    let master = status.generations[0].master_pid.unwrap();
    assert!(server.zergctl(&["stop"]).status.success());
    assert!(server.wait_exit(common::DEADLINE).success());
    wait_for("the adopted master to exit", || {
        (!alive(master)).then_some(())
    });
    assert!(
        !server.dir.path().join("zerg.sock.state").exists(),
        "a clean stop leaves no state file: nothing outlives the pool"
    );
}

/// Copies the built zerg-pool into `dir/bin`, where the test replaces it before an upgrade.
fn install_pool(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let path = bin.join("zerg-pool");
    std::fs::copy(bin_dir().join("zerg-pool"), &path).unwrap();
    path
}

/// The pid in the pool's pid file (`pidfile: zerg.pid`).
fn pidfile(server: &Server) -> Option<u32> {
    let text = std::fs::read_to_string(server.dir.path().join("zerg.pid")).ok()?;
    text.trim().parse().ok()
}

/// Replaces the binary at `path` as a package manager does: a new file renamed over it.
fn replace_binary(path: &Path, contents: &[u8]) {
    let new = path.with_extension("new");
    std::fs::write(&new, contents).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[test]
fn upgrade_pool_under_load_hands_everything_to_the_new_binary() {
    let mut server = Server::start_with_pool_binary(
        install_pool,
        &app("v1"),
        "processes: 2\npidfile: zerg.pid\n",
    );
    let old_pool = server.pool_pid();
    let first = server.wait_serving().generations[0].clone();
    let port = server.http.port();
    let sockets = listening_inodes(port);
    let _cleanup = KillOnDrop(generation_pids(&server));
    let load = load(server.http, 8);
    load.wait_for_more("answers before the upgrade", 50);

    let build = std::fs::read(bin_dir().join("zerg-pool")).unwrap();
    replace_binary(&server.binary, &build);
    let out = server.zergctl(&["upgrade-pool"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server.wait_exit(common::DEADLINE).success(),
        "the old pool exits cleanly"
    );
    assert!(!alive(old_pool));
    let status = wait_for("the new pool to supervise the generation", || {
        let s = server.status()?;
        let g = s.generations.first()?;
        (g.master_pid == first.master_pid && g.state == "serving").then_some(s)
    });
    assert_ne!(status.pool_pid, old_pool);
    assert!(
        said.contains(&format!("pool pid {} is in charge", status.pool_pid)),
        "{said}"
    );
    assert_eq!(pidfile(&server), Some(status.pool_pid));
    assert_eq!(
        listening_inodes(port),
        sockets,
        "the same kernel socket listens"
    );
    load.wait_for_more("answers after the upgrade", 100);

    server.write_app(&app("v2"));
    let out = server.zergctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    load.wait_for_more("answers from the new code", 100);
    let (answers, failures) = load.finish();
    no_failure(&failures);
    assert_eq!(answers.last().map(String::as_str), Some("v2"));
}

#[test]
fn a_broken_new_pool_binary_leaves_the_old_pool_in_charge() {
    let server = Server::start_with_pool_binary(
        install_pool,
        &app("v1"),
        "processes: 1\npidfile: zerg.pid\n",
    );
    let old_pool = server.pool_pid();
    let _cleanup = KillOnDrop(generation_pids(&server));
    let load = load(server.http, 4);
    load.wait_for_more("answers before the upgrade", 20);

    replace_binary(
        &server.binary,
        b"#!/bin/sh\necho 'a broken build' >&2\nexit 1\n",
    );
    let out = server.zergctl(&["upgrade-pool"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("exited") && said.contains("the old pool stays in charge"),
        "{said}"
    );
    // SIGUSR2 asks for the same upgrade; it fails the same way.
    server.signal(libc::SIGUSR2);
    wait_for("the failed SIGUSR2 upgrade in the log", || {
        (server
            .log_text()
            .matches("this pool stays in charge")
            .count()
            >= 2)
            .then_some(())
    });
    let status = server.wait_serving();
    assert_eq!(status.pool_pid, old_pool, "the old pool answers");
    assert_eq!(
        pidfile(&server),
        Some(old_pool),
        "and the pid file names it"
    );
    load.wait_for_more("answers after the failed upgrades", 50);
    let out = server.zergctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, failures) = load.finish();
    no_failure(&failures);
}

/// Every process, zombies aside, whose working directory is `dir`: the pool, the masters,
/// their workers and mules (none of them changes directory here).
fn processes_in(dir: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir) && alive(pid)
        })
        .collect()
}

/// What a round of pool death and adoption must leave as it was: each serving process's
/// open fds, how many processes run, and the master's resident memory.
#[derive(Debug)]
struct Footprint {
    fds: Vec<(u32, usize)>,
    pool_fds: usize,
    processes: usize,
    master_rss_kib: u64,
}

fn footprint(server: &Server) -> Footprint {
    let status = server.wait_serving();
    let g = &status.generations[0];
    let master = g.master_pid.unwrap();
    let mut fds: Vec<(u32, usize)> = std::iter::once(master)
        .chain(g.processes.iter().map(|p| p.pid))
        .map(|pid| (pid, open_fds(pid)))
        .collect();
    fds.sort_unstable();
    Footprint {
        fds,
        pool_fds: open_fds(status.pool_pid),
        processes: processes_in(server.dir.path()).len(),
        master_rss_kib: common::proc_kib(master, "VmRSS"),
    }
}

#[test]
fn twenty_pool_deaths_and_adoptions_leave_nothing_behind() {
    let record = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let handler = common::apps_dir().join("farm/handler.py");
    let mut server = Server::start_with_app_source(
        &app("v1"),
        &format!(
            "processes: 2\nmule: [{}]\nfarm: jobs:1\nenv:\n  - FARM_RECORD={}\n",
            handler.display(),
            record.display()
        ),
    );
    wait_for("the mule to run", || {
        let g = server.status()?.generations.into_iter().next()?;
        (g.processes.len() == 3).then_some(())
    });
    let _cleanup = KillOnDrop(generation_pids(&server));
    // Measured with no load: a worker's fds include its clients' connections.
    kill_and_restart_pool(&mut server);
    let first = footprint(&server);
    let load = load(server.http, 4);
    for round in 2..=20 {
        kill_and_restart_pool(&mut server);
        load.wait_for_more(&format!("answers after adoption {round}"), 20);
    }
    let (_, failures) = load.finish();
    no_failure(&failures);
    // The last clients' connections close a moment after their answers.
    let started = std::time::Instant::now();
    let last = loop {
        let now = footprint(&server);
        let settled = now.fds == first.fds && now.pool_fds <= first.pool_fds;
        if settled || started.elapsed() > common::DEADLINE {
            break now;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        last.fds, first.fds,
        "the same processes, the same fds: {first:?} then {last:?}"
    );
    assert!(last.pool_fds <= first.pool_fds, "{first:?} then {last:?}");
    assert_eq!(last.processes, first.processes, "{first:?} then {last:?}");
    assert!(
        last.master_rss_kib <= first.master_rss_kib + 1024,
        "the master's RSS grew: {first:?} then {last:?}"
    );
    eprintln!("footprint after the first adoption: {first:?}; after the 20th: {last:?}");
}

#[test]
fn an_upgrade_to_another_protocol_version_is_refused_up_front() {
    let server = Server::start_with_pool_binary(install_pool, &app("v1"), "processes: 1\n");
    let old_pool = server.pool_pid();
    let fake = std::fs::read(common::apps_dir().join("upgrade/other_protocol.py")).unwrap();
    replace_binary(&server.binary, &fake);
    let out = server.zergctl(&["upgrade-pool"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "the new pool speaks control protocol 99, this one and its zerglings {}",
            zerg::control::PROTOCOL_VERSION
        )),
        "{said}"
    );
    assert_eq!(server.wait_serving().pool_pid, old_pool);
    assert_eq!(server.get("/").text(), "v1");
}

#[test]
fn a_generation_whose_sockets_the_config_no_longer_names_is_refused_and_drains() {
    let mut server = Server::start_with_app_source(&app("v1"), "processes: 1\n");
    let first = server.wait_serving().generations[0].clone();
    let _cleanup = KillOnDrop(generation_pids(&server));
    server.signal(libc::SIGKILL);
    server.wait_exit(common::DEADLINE);
    let old = server.http;
    let moved: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let config = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(
        &server.config,
        config.replace(&old.to_string(), &moved.to_string()),
    )
    .unwrap();
    server.http = moved;

    server.start_pool_again();
    let status = server.wait_serving();
    assert!(
        status
            .generations
            .iter()
            .all(|g| g.generation > first.generation),
        "a new generation serves on the new address: {status:?}"
    );
    assert_eq!(server.get("/").text(), "v1");
    let refusal = wait_for("the refusal in the log", || {
        server
            .log_text()
            .lines()
            .find(|l| l.contains("adoption refused"))
            .map(str::to_owned)
    });
    assert!(
        refusal.contains(&old.to_string()) && refusal.contains(&moved.to_string()),
        "the refusal names both addresses: {refusal}"
    );
    wait_for("the refused generation to drain and exit", || {
        (!alive(first.master_pid.unwrap())).then_some(())
    });
}

#[test]
fn a_stop_interrupted_by_the_pools_death_goes_on_after_adoption() {
    let mut server = Server::start("conformance.py", "processes: 1\n");
    let first = server.wait_serving().generations[0].clone();
    let pids = generation_pids(&server);
    let _cleanup = KillOnDrop(pids.clone());
    // Long enough that the drain outlasts the pool's death and restart on a loaded machine.
    let mut slow = server.slow_request(6);
    // A stop begins (the generation drains), then the pool dies.
    server.signal(libc::SIGTERM);
    wait_for("the generation to drain", || {
        server
            .log_text()
            .contains("stopping workers gracefully")
            .then_some(())
    });
    server.signal(libc::SIGKILL);
    server.wait_exit(common::DEADLINE);

    // The pool started again adopts the draining generation (unless it already finished)
    // and goes on stopping: the site stays stopped, nothing new is started.
    server.start_pool_again();
    let code = server.wait_exit(common::DEADLINE * 2);
    assert!(code.success(), "the stop completes: {code:?}");
    let r = slow.response();
    assert_eq!((r.status, r.text().as_str()), (200, "slow done"));
    wait_for("every process of the generation to exit", || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    });
    let log = server.log_text();
    assert!(
        !log.contains(&format!(
            "generation starting generation={}",
            first.generation + 1
        )),
        "no new generation was started: {log}"
    );
    assert!(
        log.contains("this one goes on stopping it"),
        "it says it goes on stopping"
    );
    assert!(server.status().is_none(), "nothing answers any more");
}

#[test]
fn a_stop_signal_during_the_adoption_window_stops_the_site() {
    let mut server = Server::start_with_app_source(&app("v1"), "processes: 1\n");
    let pids = generation_pids(&server);
    let _cleanup = KillOnDrop(pids.clone());
    let master = server.wait_serving().generations[0].master_pid.unwrap();
    server.signal(libc::SIGKILL);
    server.wait_exit(common::DEADLINE);
    // A stopped master cannot knock: the new pool waits for it, observably.
    // SAFETY: kill has no memory preconditions; `master` is this test's own process.
    unsafe { libc::kill(master as i32, libc::SIGSTOP) };
    server.start_pool_again();
    wait_for("the new pool to wait for the generation", || {
        server
            .log_text()
            .contains("waiting for them to come back")
            .then_some(())
    });
    server.signal(libc::SIGTERM);
    let code = server.wait_exit(common::DEADLINE);
    // SAFETY: as above.
    unsafe { libc::kill(master as i32, libc::SIGCONT) };
    assert!(code.success(), "the pool stops cleanly: {code:?}");
    wait_for("every process of the generation to exit", || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    });
    assert!(
        server
            .log_text()
            .contains("adoption window ended by a stop signal"),
        "it says why"
    );
}

#[test]
fn a_generation_whose_control_socket_is_gone_stops_on_its_own() {
    let mut server = Server::start_with_app_source(&app("v1"), "processes: 1\n");
    let pids = generation_pids(&server);
    let _cleanup = KillOnDrop(pids.clone());
    server.signal(libc::SIGKILL);
    server.wait_exit(common::DEADLINE);
    // No pool will come back: the path it would bind is gone (a stopped site, a removed
    // directory).
    std::fs::remove_file(&server.control).unwrap();
    // The masters' bound (zergling's CONTROL_GONE_FOR, 25 s), then the drain.
    common::wait_for_within(
        "the generation to stop on its own",
        std::time::Duration::from_secs(25) + common::DEADLINE * 2,
        || pids.iter().all(|&p| !alive(p)).then_some(()),
    );
    let log = server.log_text();
    assert!(
        log.contains("no pool answers on the control socket"),
        "it warned"
    );
    assert!(log.contains("control socket gone"), "it says why it stops");
}

#[test]
fn a_refused_generation_leaves_its_matching_sockets_to_the_new_pool() {
    let mut server = Server::start_with_app_source(&app("v1"), "processes: 1\n");
    let first = server.wait_serving().generations[0].clone();
    let _cleanup = KillOnDrop(generation_pids(&server));
    let inodes = listening_inodes(server.http.port());
    server.signal(libc::SIGKILL);
    server.wait_exit(common::DEADLINE);
    // The config gains a listener: the generation's sockets no longer match and it is
    // refused, but it still holds the first address while it drains.
    let added: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let config = std::fs::read_to_string(&server.config).unwrap();
    let old = format!("http: {}\n", server.http);
    assert!(config.contains(&old), "{config}");
    std::fs::write(
        &server.config,
        config.replace(&old, &format!("http:\n  - {}\n  - {added}\n", server.http)),
    )
    .unwrap();

    server.start_pool_again();
    let status = server.wait_serving();
    let _more = KillOnDrop(generation_pids(&server));
    assert!(
        status
            .generations
            .iter()
            .any(|g| g.state == "serving" && g.generation > first.generation),
        "a new generation serves: {status:?}"
    );
    assert_eq!(status.listeners.len(), 2, "{status:?}");
    assert_eq!(server.get("/").text(), "v1");
    assert_eq!(
        listening_inodes(server.http.port()),
        inodes,
        "the same kernel socket serves the kept address"
    );
    let mut on_added = Client::connect(added);
    assert_eq!(
        on_added
            .request("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap()
            .text(),
        "v1"
    );
    wait_for("the refused generation to drain and exit", || {
        (!alive(first.master_pid.unwrap())).then_some(())
    });
}

/// The zergctl clients waiting on a reload get their answer from the pool that runs it: a pool
/// that handed over and exited would leave them without one, so an upgrade waits for the
/// reload to be over.
#[test]
fn an_upgrade_is_refused_while_a_reload_finishes() {
    let source = std::fs::read_to_string(common::apps_dir().join("conformance.py")).unwrap();
    let server = Server::start_with_pool_binary(install_pool, &source, "processes: 1\n");
    let _cleanup = KillOnDrop(generation_pids(&server));
    // The old generation drains this request for a while after the switch.
    let _slow = server.slow_request(8);
    std::thread::scope(|s| {
        let reload = s.spawn(|| server.zergctl(&["reload"]));
        wait_for("the old generation to drain beside the new one", || {
            let states: Vec<String> = server
                .status()?
                .generations
                .into_iter()
                .map(|g| g.state)
                .collect();
            (states.iter().any(|s| s == "draining") && states.iter().any(|s| s == "serving"))
                .then_some(())
        });
        let out = server.zergctl(&["upgrade-pool"]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(said.contains("still finishing"), "{said}");
        let reloaded = reload.join().unwrap();
        assert!(
            reloaded.status.success(),
            "{}",
            String::from_utf8_lossy(&reloaded.stderr)
        );
    });
    // Once it is over, the same upgrade goes through.
    let out = server.zergctl(&["upgrade-pool"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
