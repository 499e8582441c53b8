//! Mules that run a program with a command line and an environment of their own, the way
//! Galaxy 26's job handlers run (`galaxy-main -c galaxy.yml --server-name handler_1
//! --attach-to-pool job-handlers`), stopped by the signal they wait for.

mod common;

use common::{apps_dir, wait_for, Server};
use serde_json::Value;

/// The records `handlers/job_handler.py` appended, one JSON object each.
fn records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of<'a>(records: &'a [Value], event: &str, mule: u64) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["event"] == event && r["mule"] == mule)
        .collect()
}

#[test]
fn a_mule_runs_a_module_or_console_script_with_arguments_and_its_own_environment() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let server = Server::start(
        "ready/answers.py",
        &format!(
            "lazy-apps: true\n\
             pythonpath: {handlers}\n\
             env: [IS_WEBAPP=1, HANDLER_ROLE=web, HANDLER_RECORD={record}]\n\
             mule:\n\
             \x20 - module: job_handler\n\
             \x20   args: -c site.yml --server-name handler_%(position) --attach-to-pool job-handlers\n\
             \x20   env:\n\
             \x20     HANDLER_ROLE: jobs-%(position)\n\
             \x20     IS_WEBAPP: ~\n\
             \x20 - script: zerg-test-handler\n\
             \x20   args: [--server-name, 'handler_%(position)', --attach-to-pool, 'workflow schedulers']\n",
            handlers = apps_dir().join("handlers").display(),
            record = record.display(),
        ),
    );
    let started = wait_for("both handlers to start", || {
        let r = records(&record);
        (of(&r, "start", 1).len() == 1 && of(&r, "start", 2).len() == 1).then_some(r)
    });
    let first = of(&started, "start", 1)[0];
    assert!(
        first["argv"][0]
            .as_str()
            .unwrap()
            .ends_with("handlers/job_handler.py"),
        "run as `python -m job_handler`: {first}"
    );
    assert_eq!(first["args"]["config_file"], "site.yml", "{first}");
    assert_eq!(first["args"]["server_name"], "handler_1", "{first}");
    assert_eq!(
        first["args"]["attach_to_pool"],
        serde_json::json!(["job-handlers"])
    );
    // Its own env, in os.environ and the process environment alike; IS_WEBAPP removed.
    for view in ["environ", "process"] {
        assert_eq!(first[view]["HANDLER_ROLE"], "jobs-1", "{view}: {first}");
        assert_eq!(first[view]["IS_WEBAPP"], Value::Null, "{view}: {first}");
    }
    assert_eq!(first["main_thread"], true, "{first}");
    assert_eq!(first["web_app_loaded"], false, "lazy-apps: {first}");

    let second = of(&started, "start", 2)[0];
    assert_eq!(second["argv"][0], "zerg-test-handler", "{second}");
    assert_eq!(second["args"]["server_name"], "handler_2", "{second}");
    assert_eq!(
        second["args"]["attach_to_pool"],
        serde_json::json!(["workflow schedulers"])
    );
    assert_eq!(second["process"]["HANDLER_ROLE"], "web", "{second}");
    assert_eq!(second["environ"]["IS_WEBAPP"], "1", "{second}");

    // A reload stops each handler with the SIGHUP it waits for, before its successor starts.
    let out = server.zergctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = wait_for("the handlers of the new generation to start", || {
        let r = records(&record);
        (of(&r, "start", 1).len() == 2 && of(&r, "start", 2).len() == 2).then_some(r)
    });
    for mule in [1, 2] {
        let old_pid = &of(&after, "start", mule)[0]["pid"];
        let signals: Vec<_> = of(&after, "signal", mule)
            .into_iter()
            .filter(|r| &r["pid"] == old_pid)
            .collect();
        // The first is SIGHUP; one that is slow to go may be asked again (MULE_STOP_AGAIN).
        assert!(!signals.is_empty(), "mule {mule}: {after:?}");
        assert_eq!(signals[0]["signal"], "SIGHUP");
        let stopped = of(&after, "stop", mule)
            .iter()
            .any(|r| &r["pid"] == old_pid);
        assert!(stopped, "mule {mule} stopped its own way: {after:?}");
        let new = of(&after, "start", mule)[1];
        assert_eq!(
            new["args"]["server_name"],
            format!("handler_{mule}"),
            "{new}"
        );
    }
}

/// Galaxy's handler installs its signal handlers only after importing Galaxy: a stop that
/// comes during the import must still reach it, not wait for the mercy's SIGKILL.
#[test]
fn a_mule_stopped_before_it_installed_its_handlers_stops_its_own_way() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let mut server = Server::start(
        "ready/answers.py",
        &format!(
            "pythonpath: {handlers}\n\
             env: [HANDLER_RECORD={record}, HANDLER_IMPORT_SECS=4]\n\
             mule:\n\
             \x20 - module: job_handler\n",
            handlers = apps_dir().join("handlers").display(),
            record = record.display(),
        ),
    );
    let pid = wait_for("the handler to begin its import", || {
        let r = records(&record);
        of(&r, "importing", 1).first().map(|r| r["pid"].clone())
    });
    // SIGTERM to the pool: the generation stops, its mule gets SIGHUP while still importing.
    // Were that SIGHUP all it got, it would run on until the mercy (10 s) killed it, and never
    // record its stop.
    server.signal(libc::SIGTERM);
    let r = wait_for("the handler to stop its own way", || {
        let r = records(&record);
        of(&r, "stop", 1)
            .iter()
            .any(|s| s["pid"] == pid)
            .then_some(r)
    });
    let signals = of(&r, "signal", 1);
    assert_eq!(
        signals.first().map(|s| &s["signal"]),
        Some(&Value::from("SIGHUP")),
        "{r:?}"
    );
    assert!(server.wait_exit(common::DEADLINE).success());
}

#[test]
fn a_mule_entry_that_names_two_programs_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zerg.yml");
    std::fs::write(
        &config,
        format!(
            "zerg-server: {}\nhttp: 127.0.0.1:{}\nmodule: app\n\
             mule:\n  - module: job_handler\n    script: zerg-test-handler\n",
            dir.path().join("zerg.sock").display(),
            common::free_port()
        ),
    )
    .unwrap();
    let out = common::output_within(
        std::process::Command::new(common::bin_dir().join("zerg-pool"))
            .arg("--config")
            .arg(&config),
        common::DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("exactly one of `module`, `script` or `file`") && stderr.contains("line 5"),
        "{stderr}"
    );
}
