//! examples/galaxy-like end to end: jobs queued by web requests during reloads all run, each
//! assigned to exactly one handler.

mod common;

use std::path::Path;

use common::{wait_for, Client, Server};

#[test]
fn galaxy_like_jobs_all_run_once_across_reloads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/galaxy-like");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.sqlite");
    let rest = format!(
        "wsgi-file: {e}/app.py\npythonpath: {e}\nprocesses: 2\nthreads: 2\n\
         mule: [{e}/handler.py, {e}/handler.py]\nfarm: job-handlers:1,2\nenv: GALAXY_LIKE_DB={}\n",
        db.display(),
        e = example.display()
    );
    let server = Server::start_in(dir, &[], &rest);

    let total = 120;
    let addr = server.http;
    let poster = std::thread::spawn(move || {
        for i in 0..total {
            let mut c = Client::connect(addr);
            c.send(&format!(
                "POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nConnection: close\r\n\r\ntool{:02}",
                i % 100
            ));
            assert_eq!(c.response().status, 201, "job {i}");
        }
    });
    for _ in 0..5 {
        let out = server.zergctl(&["reload"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    poster.join().unwrap();

    let jobs = wait_for("every job to have run", || {
        let text = server.get("/api/jobs").text();
        (text.matches("\"state\": \"ok\"").count() == total).then_some(text)
    });
    assert_eq!(jobs.matches("\"id\":").count(), total);
    let by_1 = jobs.matches("main.job-handlers.1").count();
    let by_2 = jobs.matches("main.job-handlers.2").count();
    assert_eq!(
        by_1 + by_2,
        total,
        "each job has exactly one handler: {jobs}"
    );
}
