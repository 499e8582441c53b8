//! Mule farms through the real binaries: every queued job handled exactly once, across reloads.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{wait_for, Server};

/// A server with two job-handler mules in farm `jobs`; `env` adds NAME=VALUE entries.
fn farm_server(env: &[String]) -> (Server, std::path::PathBuf) {
    let record = tempfile::NamedTempFile::new()
        .unwrap()
        .into_temp_path()
        .keep()
        .unwrap();
    let apps = common::apps_dir().join("farm");
    let handler = apps.join("handler.py");
    let server = Server::start(
        "farm/app.py",
        &format!(
            "processes: 2\nthreads: 2\nmule: [{h}, {h}]\nfarm: jobs:1,2\nenv:\n  - FARM_RECORD={}\n{}",
            record.display(),
            env.iter().map(|e| format!("  - {e}\n")).collect::<String>(),
            h = handler.display()
        ),
    );
    (server, record)
}

fn recorded(record: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.split(' ');
            let mule = p.next()?.to_owned();
            let _pid = p.next()?;
            Some((mule, p.next()?.to_owned()))
        })
        .collect()
}

#[test]
fn every_job_is_handled_once_across_reloads() {
    let (server, record) = farm_server(&[]);
    // Mules start once the pool grants their positions to the serving generation.
    wait_for("both mules to run", || {
        let g = server.status()?.generations.into_iter().next()?;
        let mules = g
            .processes
            .iter()
            .filter(|p| p.kind == zerg::control::ProcessKind::Mule)
            .count();
        (mules == 2).then_some(())
    });
    let ids = server.get("/ids").text();
    assert!(
        ["worker=1", "worker=2"]
            .iter()
            .any(|w| ids == format!("{w} mule=0 numproc=2 farm=None")),
        "{ids}"
    );

    let total = 2000;
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let next = next.clone();
            let addr = server.http;
            std::thread::spawn(move || loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= total {
                    return;
                }
                let mut c = common::Client::connect(addr);
                c.send(&format!(
                    "GET /job/{job} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                ));
                assert_eq!(c.response().status, 200, "job {job}");
            })
        })
        .collect();
    for i in 0..10 {
        wait_for("the burst to progress", || {
            (next.load(Ordering::Relaxed) >= (i + 1) * total / 12).then_some(())
        });
        let out = server.zergctl(&["reload"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for s in senders {
        s.join().unwrap();
    }
    let jobs = wait_for("every job to be recorded", || {
        let r = recorded(&record);
        (r.len() >= total).then_some(r)
    });
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, job) in &jobs {
        *seen.entry(job.clone()).or_default() += 1;
    }
    // zergctl status shows each mule with its farm and how many messages it took.
    let out = server.zergctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let taken: u64 = text
        .lines()
        .filter(|l| l.trim_start().starts_with("mule ") && l.contains("farms jobs"))
        .filter_map(|l| l.rsplit("messages ").next()?.trim().parse::<u64>().ok())
        .sum();
    assert_eq!(taken, total as u64, "{text}");
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "jobs handled twice: {twice:?}");
    assert_eq!(seen.len(), total, "every job handled");
    assert!(
        jobs.iter().any(|(m, _)| m == "1") && jobs.iter().any(|(m, _)| m == "2"),
        "both mules worked"
    );
}

#[test]
fn undeliverable_messages_raise() {
    let (server, _record) = farm_server(&[]);
    assert!(server
        .get("/too-large")
        .text()
        .contains("larger than the 65536-byte limit"));
    assert_eq!(server.get("/unknown-farm").text(), "unknown farm \"nope\"");
    let typed = server.get("/zerg-typed").text();
    assert!(
        typed.starts_with("TypeError; worker ") && typed.ends_with(" of 2"),
        "{typed}"
    );
    let opt = server.get("/opt").text();
    assert!(opt.contains("('processes', b'2')"), "{opt}");
    assert!(
        opt.contains("('mule', [b'"),
        "repeated values form a list: {opt}"
    );
}

#[test]
fn a_mule_position_is_held_by_one_process_at_a_time_across_reloads() {
    let lives = tempfile::NamedTempFile::new()
        .unwrap()
        .into_temp_path()
        .keep()
        .unwrap();
    let (server, _record) = farm_server(&[format!("FARM_LIVES={}", lives.display())]);
    let read_lives = || std::fs::read_to_string(&lives).unwrap_or_default();
    wait_for("both mules to start", || {
        (read_lives().matches("start").count() == 2).then_some(())
    });
    for i in 0..10 {
        server.get(&format!("/job/r{i}"));
        let out = server.zergctl(&["reload"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for("the last generation's mules to start", || {
        (read_lives().matches("start").count() == 22).then_some(())
    });
    // Per position: each life starts after the previous one stopped.
    let text = read_lives();
    for mule in ["1", "2"] {
        let mut events: Vec<(u64, &str)> = text
            .lines()
            .filter_map(|l| {
                let p: Vec<&str> = l.split(' ').collect();
                (p[1] == mule).then(|| (p[3].parse().unwrap(), p[0]))
            })
            .collect();
        events.sort();
        let kinds: Vec<&str> = events.iter().map(|(_, k)| *k).collect();
        let expected: Vec<&str> = ["start", "stop"].iter().copied().cycle().take(21).collect();
        assert_eq!(
            kinds, expected,
            "mule {mule}: lives overlap or are missing:\n{text}"
        );
    }
}

#[test]
fn message_of_a_killed_mule_is_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    let (server, record) = farm_server(&[format!("FARM_HOLD={}", hold.display())]);
    wait_for("both mules to run", || {
        let g = server.status()?.generations.into_iter().next()?;
        (g.processes
            .iter()
            .filter(|p| p.kind == zerg::control::ProcessKind::Mule)
            .count()
            == 2)
            .then_some(())
    });
    assert_eq!(server.get("/job/hold").status, 200);
    let holder: i32 = wait_for("a mule to take the job", || {
        std::fs::read_to_string(&hold).ok()?.trim().parse().ok()
    });
    // SAFETY: killing a mule of the server this test started.
    unsafe { libc::kill(holder, libc::SIGKILL) };
    let done = wait_for("the job to be handled after all", || {
        recorded(&record).into_iter().find(|(_, job)| job == "hold")
    });
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(
        !text.contains(&format!(" {holder} hold")),
        "the killed mule cannot have finished it"
    );
    assert_eq!(
        text.matches(" hold\n").count(),
        1,
        "handled once after the kill: {text}"
    );
    let _ = done;
}

#[test]
fn uwsgi_lock_excludes_every_process_and_thread() {
    let (server, _record) = farm_server(&[]);
    let counter = server.dir.path().join("counter");
    std::fs::write(&counter, "0").unwrap();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (addr, counter) = (server.http, counter.clone());
            std::thread::spawn(move || {
                let mut c = common::Client::connect(addr);
                for _ in 0..25 {
                    c.send(&format!(
                        "GET /locked-increment?{} HTTP/1.1\r\nHost: x\r\n\r\n",
                        counter.display()
                    ));
                    assert_eq!(c.response().status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        "200",
        "no update lost under the lock"
    );
    assert_eq!(
        server.get("/bad-lock").text(),
        "lock 5 does not exist (`locks: 1`)"
    );
}
