//! Galaxy's job-handler mules, as Galaxy 22.01 writes them (tests/apps/galaxy_farm/mule.py):
//! str messages, a dispatcher thread blocked in `farm_get_msg()` under `uwsgi.lock(0)`, and a
//! main thread that waits for SIGHUP/SIGTERM/SIGINT and then sends `__SHUTDOWN__` to wake its
//! dispatcher. They must stop when a reload asks them to (uWSGI sends SIGHUP), and the
//! `__SHUTDOWN__` they send while stopping must never reach, and stop, the next generation's.

mod common;

use std::collections::HashMap;

use common::{wait_for, Server};
use zerg::control::ProcessKind;

fn galaxy_farm(extra: &str) -> (Server, std::path::PathBuf) {
    let record = tempfile::NamedTempFile::new()
        .unwrap()
        .into_temp_path()
        .keep()
        .unwrap();
    let mule = common::apps_dir().join("galaxy_farm/mule.py");
    let server = Server::start(
        "galaxy_farm/app.py",
        &format!(
            "processes: 1\nthreads: 2\nmule: [{m}, {m}]\nfarm: jobs:1,2\n\
             env: FARM_RECORD={}\n{extra}",
            record.display(),
            m = mule.display()
        ),
    );
    (server, record)
}

/// The jobs recorded so far: name -> how many times it ran.
fn jobs(record: &std::path::Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for line in std::fs::read_to_string(record).unwrap_or_default().lines() {
        if let Some(["job", _mule, _pid, name]) = line.split(' ').collect::<Vec<_>>().get(..4) {
            *seen.entry(name.to_string()).or_default() += 1;
        }
    }
    seen
}

fn mules_running(server: &Server) -> usize {
    server.status().map_or(0, |s| {
        s.generations
            .iter()
            .filter(|g| g.state == "serving")
            .flat_map(|g| &g.processes)
            .filter(|p| p.kind == ProcessKind::Mule)
            .count()
    })
}

#[test]
fn galaxy_mules_survive_ten_reloads_and_dispatch_after_each() {
    // A mule that is not told to stop is killed only at the mercy (10 s here), which the
    // checks at the end see.
    let (server, record) = galaxy_farm("");
    wait_for("both mules to run", || {
        (mules_running(&server) == 2).then_some(())
    });
    for round in 0..=10 {
        let name = format!("round{round}");
        assert_eq!(server.get(&format!("/job?{name}")).status, 200);
        wait_for(&format!("job {name} to be dispatched"), || {
            jobs(&record).contains_key(&name).then_some(())
        });
        if round == 10 {
            break;
        }
        let out = server.zergctl(&["reload"]);
        assert!(out.status.success(), "reload {round}: {out:?}");
        wait_for("the old generation's mules to stop", || {
            let status = server.status()?;
            (status.generations.len() == 1 && mules_running(&server) == 2).then_some(())
        });
    }
    let seen = jobs(&record);
    assert!(seen.values().all(|&n| n == 1), "a job ran twice: {seen:?}");
    let log = server.log_text();
    assert!(
        !log.contains("killed by SIGKILL"),
        "a mule had to be killed:\n{log}"
    );
    let text = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("stop ")).count(),
        20,
        "every old mule left through its own signal handler:\n{text}"
    );
}

#[test]
fn messages_may_be_str_or_bytes_like() {
    let (server, record) = galaxy_farm("");
    wait_for("both mules to run", || {
        (mules_running(&server) == 2).then_some(())
    });
    for path in ["/job?as-str", "/mule-job?to-farm", "/bytes-like?buffer"] {
        assert_eq!(server.get(path).status, 200, "{path}");
    }
    for name in ["as-str", "to-farm", "buffer", "buffer-view"] {
        wait_for(&format!("job {name}"), || {
            jobs(&record).contains_key(name).then_some(())
        });
    }
}

#[test]
fn thirty_mules_start() {
    let mule = common::apps_dir().join("galaxy_farm/mule.py");
    let record = tempfile::NamedTempFile::new()
        .unwrap()
        .into_temp_path()
        .keep()
        .unwrap();
    let mules: Vec<String> = (0..30).map(|_| mule.display().to_string()).collect();
    let positions: Vec<String> = (1..=30).map(|k| k.to_string()).collect();
    let server = Server::start(
        "galaxy_farm/app.py",
        &format!(
            "processes: 1\nmule: [{}]\nfarm: jobs:{}\nenv: FARM_RECORD={}\n",
            mules.join(", "),
            positions.join(","),
            record.display()
        ),
    );
    wait_for("thirty mules to run", || {
        (mules_running(&server) == 30).then_some(())
    });
    assert_eq!(server.get("/job?among-thirty").status, 200);
    wait_for("the job", || {
        jobs(&record).contains_key("among-thirty").then_some(())
    });
}
