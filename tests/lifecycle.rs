//! Process lifecycle through the real binaries: graceful stop, worker respawn, config errors,
//! and a control socket that survives a misbehaving peer.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::{alive, wait_for, Client, Server};

#[test]
fn sigterm_finishes_the_request_in_flight_then_every_process_exits() {
    let mut server = Server::start("conformance.py", "processes: 2\n");
    let pids = server.all_pids();
    assert_eq!(pids.len(), 4, "pool, master and two workers: {pids:?}");

    let started = server.dir.path().join("slow-started");
    let mut slow = Client::connect(server.http);
    slow.send(&format!(
        "GET /slow?s=2&started={} HTTP/1.1\r\nHost: x\r\n\r\n",
        started.display()
    ));
    wait_for("the slow request to be in the app", || {
        started.exists().then_some(())
    });
    server.signal(libc::SIGTERM);

    let r = slow.response();
    assert_eq!((r.status, r.text().as_str()), (200, "slow done"));
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "a draining worker closes keep-alive"
    );

    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "pool exit status {status:?}");
    wait_for("every server process to be gone", || {
        pids.iter().all(|&p| !alive(p)).then_some(())
    });
    assert!(
        !server.control.exists(),
        "the control socket file is removed"
    );
}

#[test]
fn killed_worker_is_respawned_and_the_server_keeps_answering() {
    let server = Server::start("conformance.py", "processes: 2\n");
    let before = server.worker_pids();
    let victim = before[0];
    // SAFETY: killing a worker of the server this test started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let after = wait_for("a replacement worker", || {
        let now = server.worker_pids();
        (now.len() == 2 && !now.contains(&victim)).then_some(now)
    });
    assert!(
        after.contains(&before[1]),
        "the other worker was left alone"
    );
    for _ in 0..20 {
        assert_eq!(server.get("/hello").status, 200);
    }
}

#[test]
fn misspelt_key_fails_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zerg.yml");
    std::fs::write(
        &config,
        "zerg-server: z.sock\nhttp: 127.0.0.1:1\nwsgi-file: app.py\nprocesess: 4\n",
    )
    .unwrap();
    let out = common::output_within(
        Command::new(common::bin_dir().join("zerg-pool"))
            .arg("--config")
            .arg(&config),
        common::DEADLINE,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key `procesess`"), "{err}");
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("did you mean `processes`"), "{err}");
}

#[test]
fn app_that_fails_to_import_stops_the_pool_with_the_reason() {
    let mut server = Server::spawn("broken_import.py", "");
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let log = server.log_text();
    assert!(
        log.contains("No module named 'module_that_does_not_exist'"),
        "{log}"
    );
}

#[test]
fn bad_peers_on_the_control_socket_lose_only_their_connection() {
    let server = Server::start("conformance.py", "");
    // Garbage instead of a hello.
    let mut junk = UnixStream::connect(&server.control).unwrap();
    junk.set_read_timeout(Some(common::DEADLINE)).unwrap();
    junk.write_all(b"\x00\x00\x00\x05hello").unwrap();
    let mut buf = Vec::new();
    junk.read_to_end(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf).contains("refused"), "{buf:?}");

    // A zergling speaking another protocol version is refused with both versions named.
    let mut old = zerg::control::Connection::connect(&server.control).unwrap();
    let hello = br#"{"type":"hello","protocol":99,"role":"zergling","pid":1,"generation":null}"#;
    let mut frame = (hello.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(hello);
    old.stream().try_clone().unwrap().write_all(&frame).unwrap();
    match old.recv() {
        Ok((zerg::control::Message::Refused { reason, .. }, _)) => {
            assert!(
                reason.contains(&format!(
                    "we speak {}, the peer speaks 99",
                    zerg::control::PROTOCOL_VERSION
                )),
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    wait_for("the refusal in the log", || {
        server
            .log_text()
            .contains("protocol version mismatch")
            .then_some(())
    });

    // The pool still serves and still answers status.
    assert_eq!(server.get("/hello").status, 200);
    assert!(server.status().is_some());
}

#[test]
fn zergctl_status_lists_generation_master_and_workers() {
    let server = Server::start("conformance.py", "processes: 2\n");
    let workers = server.worker_pids();
    let out = server.zergctl(&["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("generation 1 serving"), "{text}");
    for pid in workers {
        assert!(text.contains(&format!("pid {pid}")), "{text}");
    }
}
