//! uWSGI config files run as they are: Galaxy's `uwsgi:` section gives the warnings and errors
//! an admin should see, a real pool serves a uWSGI-style YAML (`--yaml`) and ini (`--ini`), the
//! app sees `uwsgi.opt` as uWSGI shows it, and `pidfile`, `logto` and `umask` act in the pool.

mod common;
mod fuzzing;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{apps_dir, bin_dir, free_port, output_within, wait_for, Server, DEADLINE};
use proptest::prelude::*;
use serde_json::{json, Value};
use zerg::config::{Config, OPTIONS};
use zerg::uwsgi_config::{self, Dialect};

fn galaxy_sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/uwsgi/galaxy.yml")
}

#[test]
fn galaxy_sample_gives_the_expected_warnings_and_errors() {
    let t = uwsgi_config::read_file(&galaxy_sample()).unwrap();
    let warnings: BTreeSet<String> = t.source.warnings.iter().map(|w| w.to_string()).collect();
    let expected: BTreeSet<String> = [
        "line 15: `master`: ignored: zerg always runs a master (the zergling) under its pool",
        "line 16: `enable-threads`: ignored: Python threads are always enabled in zerg",
        "line 19: `offload-threads`: ignored: zerg's workers send responses and static files without holding an app thread already",
        "line 21: `die-on-term`: ignored: zerg-pool stops gracefully on SIGTERM (and reloads on SIGHUP) already",
        "line 22: `hook-master-start`: ignored: zerg-pool stops gracefully on SIGINT and SIGTERM already",
        "line 23: `hook-master-start`: ignored: zerg-pool stops gracefully on SIGINT and SIGTERM already",
        "line 44: `py-call-osafterfork`: ignored: zerg calls PyOS_AfterFork_Child in every process it forks already",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(warnings, expected);

    // Every other option is one zerg honours or maps (`shared-socket`, `https`, `uid`...).
    let errors: BTreeSet<String> = t.errors.iter().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");

    // What zerg reads of it: `http: =0` names the first shared socket, and `https: =1` the
    // second, whose certificate and key it takes.
    let option = |name: &str| -> Vec<&str> {
        t.options
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.iter().map(|(s, _)| s.as_str()).collect())
            .unwrap_or_default()
    };
    assert_eq!((option("http"), option("https")), (vec!["=0"], vec!["=1"]));
    assert_eq!(
        option("shared-socket"),
        vec![":80", ":443,server.crt,server.key"]
    );
    assert_eq!(
        option("module"),
        vec!["galaxy.webapps.galaxy.buildapp:uwsgi_app()"]
    );
    assert_eq!(option("mule").len(), 3);
    assert_eq!(
        option("static-map"),
        vec!["/static/style=static/style/blue", "/static=static"]
    );
    assert_eq!(option("logto"), vec!["/srv/galaxy/var/uwsgi.log"]);
    assert_eq!(t.source.shared_sockets.len(), 2);
    assert_eq!(
        (option("uid"), option("gid")),
        (vec!["galaxy"], vec!["galaxy"])
    );

    // Loading it fails naming the file and every error, nothing else. `uid` and `gid` name
    // the user and group Galaxy runs as; where they do not exist, that is one more error
    // (the first of the two: the config stops reading there).
    let mut errors = errors;
    if nix::unistd::User::from_name("galaxy").unwrap().is_none() {
        errors.insert("line 33: `uid`: no user `galaxy` on this system".into());
    } else if nix::unistd::Group::from_name("galaxy").unwrap().is_none() {
        errors.insert("line 34: `gid`: no group `galaxy` on this system".into());
    }
    let err = Config::load(&galaxy_sample()).unwrap_err().to_string();
    assert!(err.contains("galaxy.yml"), "{err}");
    for e in &errors {
        assert!(err.contains(e.as_str()), "{err}");
    }
    assert_eq!(err.lines().count(), 1 + errors.len(), "{err}");
}

#[test]
fn galaxy_sample_loads_once_the_unsupported_lines_go() {
    // The admin's way out today: drop what zerg names, keep everything else.
    let text = std::fs::read_to_string(galaxy_sample()).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| {
            !["uid:", "gid:"]
                .iter()
                .any(|k| l.trim_start().starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("galaxy.yml");
    std::fs::write(&path, &kept).unwrap();
    let c = uwsgi_config::load(&path, Dialect::Yaml).unwrap();
    let https = zerg::config::ListenAddr::parse(":443").unwrap();
    assert_eq!(
        c.listeners(),
        vec![
            (
                zerg::config::Protocol::Http,
                zerg::config::ListenAddr::parse(":80").unwrap()
            ),
            (zerg::config::Protocol::Https, https.clone()),
        ]
    );
    assert_eq!(
        c.tls_files(&https).map(|f| (f.cert, f.key)),
        Some(("server.crt".into(), "server.key".into()))
    );
    assert_eq!((c.processes, c.threads), (2, 4));
    assert_eq!(c.farms().unwrap()[0].mules, vec![1, 2, 3]);
    assert_eq!(c.chdir, Some(PathBuf::from("/srv/galaxy/server")));
    assert_eq!(c.virtualenv, Some(PathBuf::from(".venv")));
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(c.zerg_server, dir.join("galaxy.zerg.sock"));
    // And --yaml refuses zerg's own YAML with a hint.
    std::fs::write(&path, "zerg-server: z\nhttp: :1\nmodule: a\n").unwrap();
    let err = uwsgi_config::load(&path, Dialect::Yaml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no top-level `uwsgi:` section"), "{err}");
}

/// A uWSGI-style file in a temp dir; `rest` is more of the section. Returns the dir, the
/// file, its control socket (the default beside it) and its HTTP address.
fn uwsgi_site(
    name: &str,
    rest: &str,
    dialect: Dialect,
) -> (tempfile::TempDir, PathBuf, PathBuf, std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    for sub in ["static", "media"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    std::fs::write(dir.path().join("static/hello.txt"), "hello from static").unwrap();
    let port = free_port();
    let app = apps_dir().join("uwsgi_opt.py");
    let text = match dialect {
        Dialect::Yaml => format!(
            "# Galaxy's settings sit beside the uwsgi section\n\
             galaxy:\n  processes: 9\n\
             uwsgi:\n  http: 127.0.0.1:{port}\n  wsgi-file: {}\n  master: true\n  processes: 2\n\
             \x20 static-map: /static=%dstatic\n  static-map: /media=%dmedia\n\
             \x20 reload-mercy: 10\n  worker-reload-mercy: 10\n{rest}",
            app.display()
        ),
        Dialect::Ini => format!(
            "[uwsgi]\nhttp = 127.0.0.1:{port}\nwsgi-file = {}\nmaster = true\n\
             reload-mercy = 10\nworker-reload-mercy = 10\n{rest}",
            app.display()
        ),
    };
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let stem = Path::new(name).file_stem().unwrap().to_str().unwrap();
    let control = canonical.join(format!("{stem}.zerg.sock"));
    let http = format!("127.0.0.1:{port}").parse().unwrap();
    (dir, path, control, http)
}

fn opt_seen_by_app(server: &Server) -> Value {
    let r = server.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn pool_serves_a_uwsgi_yaml_and_the_app_sees_uwsgi_opt_as_uwsgi_shows_it() {
    let (dir, path, control, http) = uwsgi_site("site.yml", "", Dialect::Yaml);
    let server = Server::spawn_with_args(
        dir,
        &[OsStr::new("--yaml"), path.as_os_str()],
        path.clone(),
        control,
        http,
    );
    let status = server.wait_serving();
    let serving = status
        .generations
        .iter()
        .find(|g| g.state == "serving")
        .unwrap();
    assert_eq!(serving.processes.len(), 2, "processes: 2");

    let r = server.get("/static/hello.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "hello from static"));

    let opt = opt_seen_by_app(&server);
    let file = std::fs::canonicalize(&path).unwrap();
    let dir = format!("{}/", file.parent().unwrap().display());
    assert_eq!(opt["yaml"], json!({"bytes": file.display().to_string()}));
    assert_eq!(opt["processes"], json!({"bytes": "2"}));
    assert_eq!(opt["master"], json!({"bytes": "true"}));
    assert_eq!(
        opt["static-map"],
        json!([
            {"bytes": format!("/static={dir}static")},
            {"bytes": format!("/media={dir}media")},
        ])
    );
    assert!(opt.get("galaxy").is_none(), "{opt}");

    // The ignored option is named once, with its line, in the pool's log.
    let log = server.log_text();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("`master`")).collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains("line=7"), "{log}");

    // zergctl finds the pool from the same file.
    let out = output_within(
        Command::new(bin_dir().join("zergctl"))
            .arg("--yaml")
            .arg(&path)
            .arg("status"),
        DEADLINE,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("serving"), "{stdout}");
}

#[test]
fn pidfile_logto_and_umask_act_in_the_pool() {
    let (dir, path, control, http) = uwsgi_site(
        "site.ini",
        "pidfile = %dpool.pid\nlogto = %dsite.log\numask = 027\nstatic-map = /static=%dstatic\n",
        Dialect::Ini,
    );
    let log = dir.path().join("site.log");
    let pidfile = dir.path().join("pool.pid");
    std::fs::write(&log, "a line from before\n").unwrap();
    let mut server = Server::spawn_with_args(
        dir,
        &[OsStr::new("--ini"), path.as_os_str()],
        path.clone(),
        control,
        http,
    );
    server.wait_serving();
    let opt = opt_seen_by_app(&server);
    let file = std::fs::canonicalize(&path).unwrap();
    assert_eq!(opt["ini"], json!({"bytes": file.display().to_string()}));

    let pid: u32 = wait_for("the pidfile", || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    assert_eq!(pid, server.pool_pid());
    let mode = std::fs::metadata(&pidfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "0666 under umask 027");

    // The pool's lines and the app's output go to the logto file, after what it held.
    let text = wait_for("the app's output in the logto file", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("uwsgi_opt app imported").then_some(text)
    });
    assert!(text.starts_with("a line from before\n"), "{text}");
    assert!(text.contains("listening"), "{text}");
    assert!(
        !server.log_text().contains("listening"),
        "{}",
        server.log_text()
    );

    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(Duration::from_secs(20)).success());
    assert!(!pidfile.exists(), "the pidfile is removed at exit");
}

#[test]
fn a_uwsgi_file_with_an_unsupported_option_is_refused_with_its_line() {
    let (dir, path, ..) = uwsgi_site("site.yml", "  touch-reload: /srv/app.ini\n", Dialect::Yaml);
    let out = output_within(
        Command::new(bin_dir().join("zerg-pool"))
            .arg("--yaml")
            .arg(&path)
            .current_dir(dir.path()),
        DEADLINE,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("site.yml"), "{err}");
    assert!(
        err.contains("line 13: `touch-reload`: not supported yet"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The reader never panics, whatever the file holds.

/// Text a uWSGI file might hold: its keys, punctuation and placeholders in any order.
fn uwsgiish() -> impl Strategy<Value = String> {
    let keys: Vec<String> = OPTIONS
        .iter()
        .chain(&[
            "master",
            "set",
            "set-placeholder",
            "shared-socket",
            "https",
            "uid",
            "harakiri",
            "hook-master-start",
            "route",
            "for",
            "endfor",
            "if-env",
        ])
        .map(|k| k.to_string())
        .collect();
    let piece = prop_oneof![
        4 => prop::sample::select(keys).prop_map(|k| format!("\n  {k}: ")),
        4 => prop::sample::select(vec![
            "uwsgi:\n", "[uwsgi]\n", "galaxy:\n", "\n", "\n  ", "\n  - ", ": ", ":", "=", " = ",
            "- ", "[", "]", "{", "}", ",", "'", "\"", "#", ";", "%", "%d", "%(", "%%", "$(", "@(",
            "(", ")", " + ", " ++", "=0", "=1", "\t", "\r\n", "\u{feff}", "\0", "é",
        ]).prop_map(str::to_owned),
        3 => "[a-z0-9./:_=-]{0,12}",
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(fuzzing::config("tests/fuzz-regressions/uwsgi_config.txt", 512))]

    #[test]
    fn any_uwsgi_text_reads_or_fails_cleanly(text in uwsgiish(), ini in any::<bool>()) {
        let (name, dialect) = if ini { ("fuzz.ini", Dialect::Ini) } else { ("fuzz.yml", Dialect::Yaml) };
        let t = uwsgi_config::translate(&text, Path::new(name), dialect);
        let lines = text.split('\n').count();
        for n in t.errors.iter().chain(&t.source.warnings) {
            prop_assert!(n.line >= 1 && n.line <= lines, "{n} of {lines} lines");
        }
        for e in &t.source.entries {
            prop_assert!(e.line >= 1 && e.line <= lines);
        }
        let _ = t.source.opt();
        match Config::parse(&text, Path::new(name)) {
            Err(e) => prop_assert!(e.to_string().contains(name), "{e}"),
            Ok(c) => {
                prop_assert!(!c.listen_addrs().is_empty());
                prop_assert!(c.processes >= 1 && c.threads >= 1);
            }
        }
    }
}
