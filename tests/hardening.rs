//! What the server refuses or survives, through the real binaries: the pool's death in the
//! middle of a drain, a control-socket peer of another user, and static-map paths that try to
//! leave their directory.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{alive, bin_dir, output_within, wait_for, Client, KillOnDrop, Server, DEADLINE};

/// CPU time (user + system) `pid` has used, in clock ticks; `None` once it is gone.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[test]
fn pool_killed_mid_drain_leaves_the_master_to_finish_quietly() {
    let mut server = Server::start("conformance.py", "processes: 1\n");
    let status = server.wait_serving();
    let generation = &status.generations[0];
    let master = generation.master_pid.expect("master pid");
    let mut pids: Vec<u32> = generation.processes.iter().map(|p| p.pid).collect();
    pids.push(master);
    let _cleanup = KillOnDrop(pids.clone());

    let mut slow = server.slow_request(8);

    server.signal(libc::SIGTERM);
    wait_for("the master to start draining", || {
        server
            .log_text()
            .contains("stopping workers gracefully")
            .then_some(())
    });
    server.signal(libc::SIGKILL);
    server.wait_exit(DEADLINE);

    let r = slow.response();
    assert_eq!((r.status, r.text().as_str()), (200, "slow done"));
    if let Some(ticks) = cpu_ticks(master) {
        // SAFETY: sysconf has no preconditions.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        assert!(
            ticks < 2 * per_sec,
            "the master used {ticks} ticks of CPU ({per_sec}/s) while it drained"
        );
    }
    wait_for("the master and its worker to exit", || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    });
    let log = server.log_text();
    let lost = log
        .matches("the pool closed the control connection")
        .count();
    assert!(
        (1..=3).contains(&lost),
        "the lost pool is logged once, not {lost} times"
    );
}

#[test]
fn pool_killed_while_a_generation_starts_makes_it_give_up() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("import-started");
    let mut server = Server::start_with_app_source_env(
        "from slow_import import application\n",
        &format!(
            "processes: 1\nlazy-apps: true\nenv:\n  - PYTHONPATH={}\n  - SLOW_IMPORT_SECS=0\n  - SLOW_IMPORT_STARTED={}\n",
            common::apps_dir().display(),
            started.display()
        ),
        &[],
    );
    // The first generation serves at once; a reload starts a second whose import outlasts any
    // load on the machine, so the pool's death surely catches it while it imports. The workers
    // import (lazy-apps), so that its master sees the death while they do.
    std::fs::remove_file(&started).unwrap();
    let config = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(
        &server.config,
        config.replace("SLOW_IMPORT_SECS=0", "SLOW_IMPORT_SECS=60"),
    )
    .unwrap();
    let serving = server.wait_serving().generations[0].clone();
    let mut pids: Vec<u32> = serving.processes.iter().map(|p| p.pid).collect();
    pids.extend(serving.master_pid);
    server.signal(libc::SIGHUP);
    let starting = wait_for("the second generation to import", || {
        let s = server.status()?;
        let g = s.generations.into_iter().find(|g| g.state == "starting")?;
        started.exists().then_some(g.master_pid?)
    });
    pids.push(starting);
    let _cleanup = KillOnDrop(pids);
    server.signal(libc::SIGKILL);
    server.wait_exit(DEADLINE);

    wait_for("the starting generation to give up and exit", || {
        (!alive(starting)).then_some(())
    });
    assert!(
        server
            .log_text()
            .contains("pool connection lost while starting"),
        "it says why"
    );
    assert!(
        alive(serving.master_pid.unwrap()),
        "the serving one serves on"
    );
    assert_eq!(server.get("/").text(), "slow");
}

/// The user and group `nobody`.
const NOBODY: u32 = 65534;

#[test]
fn control_socket_refuses_a_peer_of_another_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root can run a client as another user (nobody)");
        return;
    }
    let server = Server::start("conformance.py", "");
    // Anyone may reach and open the socket file: only the peer-credential check is left.
    let open = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    open(server.dir.path(), 0o755);
    open(&server.control, 0o777);

    let nobody = output_within(
        Command::new(bin_dir().join("zergctl"))
            .arg("--pool")
            .arg(&server.control)
            .arg("status")
            .uid(NOBODY)
            .gid(NOBODY),
        DEADLINE,
    );
    let said = String::from_utf8_lossy(&nobody.stderr);
    assert!(!nobody.status.success(), "nobody was answered: {said}");
    assert!(
        said.contains("uid 65534 may not use this control socket"),
        "zergctl says why: {said}"
    );
    let logged = wait_for("the refusal in the pool's log", || {
        server
            .log_text()
            .lines()
            .find(|l| l.contains("control connection refused"))
            .map(str::to_owned)
    });
    assert!(
        logged.contains("peer_uid=65534") && logged.contains("peer_pid="),
        "the refusal names the peer: {logged}"
    );

    let root = server.zergctl(&["status"]);
    assert!(
        root.status.success(),
        "root is still served: {}",
        String::from_utf8_lossy(&root.stderr)
    );
    assert_eq!(server.get("/hello").status, 200);
}

/// Sends `target` as the request target of a GET, byte for byte, on a new connection.
fn raw_get(server: &Server, target: &[u8]) -> common::Response {
    let mut c = Client::connect(server.http);
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    c.send_bytes(&request);
    c.response()
}

#[test]
fn static_map_never_serves_a_file_outside_its_directory() {
    const SECRET: &str = "TOP SECRET: never served";
    let files = tempfile::tempdir().unwrap();
    let root = files.path().join("public");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("hello.txt"), "static hello").unwrap();
    std::fs::write(root.join("sub/inner.txt"), "inner").unwrap();
    let secret = files.path().join("secret.txt");
    std::fs::write(&secret, SECRET).unwrap();
    symlink(&secret, root.join("out.txt")).unwrap();
    symlink("../secret.txt", root.join("rel-out.txt")).unwrap();
    symlink(files.path(), root.join("out-dir")).unwrap();
    symlink("hello.txt", root.join("in.txt")).unwrap();
    symlink("../hello.txt", root.join("sub/up-in.txt")).unwrap();
    let server = Server::start(
        "conformance.py",
        &format!("static-map: /static={}\n", root.display()),
    );

    // Inside the directory, symlinks included, files are served.
    for (target, body) in [
        "/static/hello.txt",
        "/static/sub/inner.txt",
        "/static/in.txt",
        "/static/sub/up-in.txt",
    ]
    .iter()
    .zip(["static hello", "inner", "static hello", "static hello"])
    {
        let r = raw_get(&server, target.as_bytes());
        assert_eq!((r.status, r.text().as_str()), (200, body), "{target}");
    }

    // Refused paths go to the app, which answers 404 as for any unknown path; requests that
    // are not HTTP get 400 before anything looks at a file.
    let absolute = format!("/static/%2f{}", secret.display());
    let cases: &[(&[u8], u16)] = &[
        (b"/static/../secret.txt", 404),
        (b"/static/sub/../../secret.txt", 404),
        (b"/static/%2e%2e/secret.txt", 404),
        (b"/static/%2E%2E/secret.txt", 404),
        (b"/static/.%2e/secret.txt", 404),
        (b"/static/..%2fsecret.txt", 404),
        (b"/static/%2e%2e%2fsecret.txt", 404),
        (b"/static/sub/..%2F..%2Fsecret.txt", 404),
        (b"/static/..%5csecret.txt", 404),
        (b"/static/%2e%2e%5csecret.txt", 404),
        (b"/static/..\\secret.txt", 404),
        (b"/static/secret.txt%00", 404),
        (b"/static/hello.txt%00/../../secret.txt", 404),
        (b"/static/%00", 404),
        (b"/static/hello.txt\0", 400),
        (b"/static/out.txt", 404),
        (b"/static/rel-out.txt", 404),
        (b"/static/out-dir/secret.txt", 404),
        (b"/static/out-dir/public/hello.txt", 200),
        (absolute.as_bytes(), 404),
    ];
    for &(target, status) in cases {
        let r = raw_get(&server, target);
        let shown = String::from_utf8_lossy(target);
        assert!(!r.text().contains(SECRET), "{shown} served the secret");
        assert_eq!(r.status, status, "{shown}: {}", r.text());
    }
}

#[test]
fn a_zergling_hello_claiming_another_process_pid_is_refused() {
    let server = Server::start("conformance.py", "processes: 1\n");
    let mut conn = zerg::control::Connection::connect(&server.control).unwrap();
    conn.stream().set_read_timeout(Some(DEADLINE)).unwrap();
    // pid 1 (init) is not this process: the pool would later signal it as a master's pid.
    let hello = zerg::control::Message::Hello {
        protocol: zerg::control::PROTOCOL_VERSION,
        role: zerg::control::Role::Zergling,
        pid: 1,
        generation: None,
        adopt: None,
    };
    conn.send(&hello, &[]).unwrap();
    match conn.recv_hello() {
        Ok((zerg::control::Message::Refused { reason, .. }, _)) => assert!(
            reason.contains("claims pid 1") && reason.contains(&std::process::id().to_string()),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        server.wait_serving().generations.len(),
        1,
        "no generation was made of it"
    );
}

/// Knocks on `server`'s pool as a master of generation 99 that holds `mules_held`, handing
/// back the pool's own sockets, queues and records (as a zergling attaching on its own gets
/// them). Returns the pool's answer and the connection.
fn knock_with_the_pools_fds(
    server: &Server,
    mules_held: Vec<u32>,
) -> (zerg::control::Message, zerg::control::Connection) {
    use std::os::fd::AsFd;
    use zerg::control::{AdoptState, Adoption, Connection, Message, Role, PROTOCOL_VERSION};
    let hello = |adopt: Option<Adoption>, generation: Option<u64>| Message::Hello {
        protocol: PROTOCOL_VERSION,
        role: Role::Zergling,
        pid: std::process::id(),
        generation,
        adopt,
    };
    let mut attach = Connection::connect(&server.control).unwrap();
    attach.stream().set_read_timeout(Some(DEADLINE)).unwrap();
    attach.send(&hello(None, None), &[]).unwrap();
    let (welcome, fds) = attach.recv_hello().unwrap();
    let Message::Welcome {
        listeners,
        queues,
        mule_records,
        ..
    } = welcome
    else {
        panic!("expected a welcome, got {welcome:?}");
    };
    drop(attach);
    let adoption = Adoption {
        state: AdoptState::Serving,
        listeners,
        queues,
        mule_records,
        mules_held,
        processes: Vec::new(),
    };
    let mut knock = Connection::connect(&server.control).unwrap();
    knock.stream().set_read_timeout(Some(DEADLINE)).unwrap();
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    knock
        .send(&hello(Some(adoption), Some(99)), &borrowed)
        .unwrap();
    let (answer, _) = knock.recv().unwrap();
    (answer, knock)
}

/// Hangs up generation 99's connection and waits until the pool forgets it: its "master" is
/// this test process, which `Server`'s drop would otherwise SIGKILL with the generation.
fn hang_up(server: &Server, knock: zerg::control::Connection) {
    drop(knock);
    wait_for("the pool to forget generation 99", || {
        let s = server.status()?;
        s.generations
            .iter()
            .all(|g| g.generation != 99)
            .then_some(())
    });
}

#[test]
fn an_adoption_claiming_mule_position_zero_does_not_bring_the_pool_down() {
    let server = Server::start("conformance.py", "processes: 1\n");
    // Positions count from 1.
    let (answer, knock) = knock_with_the_pools_fds(&server, vec![0]);
    assert!(
        matches!(answer, zerg::control::Message::Adopted { generation: 99 }),
        "{answer:?}"
    );
    wait_for("the pool to log the bad position", || {
        server
            .log_text()
            .contains("claims a mule position the config does not have")
            .then_some(())
    });
    assert!(server.status().is_some(), "the pool still answers");
    hang_up(&server, knock);
}

#[test]
fn a_late_adopter_running_a_mule_another_generation_holds_drains() {
    let record = tempfile::NamedTempFile::new().unwrap();
    let handler = common::apps_dir().join("farm").join("handler.py");
    let server = Server::start(
        "farm/app.py",
        &format!(
            "processes: 1\nmule: [{}]\nfarm: jobs:1\nenv:\n  - FARM_RECORD={}\n",
            handler.display(),
            record.path().display()
        ),
    );
    wait_for("mule 1 to be granted", || {
        server
            .log_text()
            .contains("mule positions granted")
            .then_some(())
    });
    let (answer, mut knock) = knock_with_the_pools_fds(&server, vec![1]);
    assert!(
        matches!(answer, zerg::control::Message::Adopted { generation: 99 }),
        "{answer:?}"
    );
    let (told, _) = knock.recv().unwrap();
    assert!(
        matches!(told, zerg::control::Message::Stop { .. }),
        "the late one is told to stop: {told:?}"
    );
    assert!(
        server
            .log_text()
            .contains("adopted generation runs a mule position another generation holds"),
        "the conflict is logged"
    );
    let status = server.wait_serving();
    let late = status.generations.iter().find(|g| g.generation == 99);
    assert_eq!(
        late.map(|g| g.state.as_str()),
        Some("draining"),
        "{status:?}"
    );
    hang_up(&server, knock);
}
