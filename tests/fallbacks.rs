//! `ZERG_FORCE_FALLBACKS=1` takes effect: a worker started with it reuses nothing that only
//! CPython's internals say it may (see zergling's `python::fast_paths`), so CI runs on 3.11
//! the paths 3.14 and free-threaded builds take. The suite runs a second time with the switch
//! on (`.ci/run`); this test pins both settings itself, whatever the suite's environment.

mod common;

use common::{Client, Server};
use serde_json::Value;

const SWITCH: &str = "ZERG_FORCE_FALLBACKS";

/// What tests/apps/echo_environ.py saw of a request sent on `c`.
fn seen(c: &mut Client, headers: &str) -> Value {
    c.send(&format!("GET /echo HTTP/1.1\r\nHost: x\r\n{headers}\r\n"));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_str(&r.text()).unwrap()
}

fn start(switch: &str) -> Server {
    let app = std::fs::read_to_string(common::apps_dir().join("echo_environ.py")).unwrap();
    Server::start_with_app_source_env(&app, "processes: 1\n", &[(SWITCH, switch.to_owned())])
}

#[test]
fn forced_fallbacks_reuse_no_environ_and_no_start_response() {
    for (switch, fast) in [("0", true), ("1", false)] {
        let server = start(switch);
        let mut c = Client::connect(server.http);
        let first = seen(&mut c, "X-A: 1\r\nX-B: 2\r\n");
        // The same headers in the other order: a new environ has them in this order, a
        // reused one keeps the first request's.
        let second = seen(&mut c, "X-B: 2\r\nX-A: 1\r\n");
        assert_eq!(
            first["headers"],
            serde_json::json!(["HTTP_HOST", "HTTP_X_A", "HTTP_X_B"])
        );
        assert_eq!(first["environ"]["HTTP_X_A"], "1");
        assert_eq!(second["environ"]["HTTP_X_A"], "1");
        assert_eq!(second["environ"]["HTTP_X_B"], "2");
        let reused_order = serde_json::json!(["HTTP_HOST", "HTTP_X_A", "HTTP_X_B"]);
        let own_order = serde_json::json!(["HTTP_HOST", "HTTP_X_B", "HTTP_X_A"]);
        if fast {
            assert_eq!(second["headers"], reused_order, "the environ made over");
            assert_eq!(second["id"], first["id"], "the same environ");
            assert_eq!(
                second["start_response"], first["start_response"],
                "the same start_response"
            );
        } else {
            // (An id may still repeat: CPython reuses a freed dict's memory for the next.)
            assert_eq!(second["headers"], own_order, "a new environ");
        }
        let said = server
            .log_text()
            .contains("ZERG_FORCE_FALLBACKS: CPython fast paths off");
        assert_eq!(said, !fast, "{SWITCH}={switch}: the worker says so once");
    }
}
