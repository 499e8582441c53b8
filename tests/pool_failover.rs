//! The pool is no single point of failure, through the real binaries: a generation serves on
//! when its pool is killed, a pool started again adopts it (same kernel sockets, same queues),
//! and `zergctl upgrade-pool` replaces the pool binary under load. Every request of the load
//! counts; none may fail.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;

use common::load::{keep_alive, Load};
use common::{alive, open_fds, Client, KillOnDrop, Server};

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

/// The (device, inode) of the listening socket `fd` of process `pid`, if it has it open.
fn socket_inode(pid: u32, fd: &str) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// The inodes of every socket `pid` has open.
fn socket_inodes(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pool_killed_under_load_fails_no_request() {
    let mut server = Server::start_with_app_source(&app("v1"), "processes: 2\n");
    let pids = generation_pids(&server);
    let _cleanup = KillOnDrop(pids.clone());
    let load = load(server.http, 8);
    load.wait_for_more("answers before the pool dies", 50);

    server.signal(libc::SIGKILL);
    server.wait_exit(common::DEADLINE);
    load.wait_for_more("answers after the pool died", 500);
    assert!(
        pids.iter().all(|&p| alive(p)),
        "every process of the generation serves on"
    );
    let (answers, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(answers.iter().all(|a| a == "v1"));
    let log = server.log_text();
    assert_eq!(
        log.matches("no pool: this generation serves on").count(),
        1,
        "the master says once that it serves on"
    );
    let _ = socket_inode;
    let _ = socket_inodes;
    let _ = open_fds;
}
