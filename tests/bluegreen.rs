//! The blue/green deploy script in ops/, end to end against a real pool.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{wait_for, Server};

fn app(version: &str) -> String {
    format!(
        "def application(environ, start_response):\n    start_response('200 OK', [('Content-Length', '{}')])\n    return [b'{version}']\n",
        version.len()
    )
}

/// A release directory holding `app.py` and a `zerg.yml` that points at the same pool.
fn release(server: &Server, name: &str, source: &str) -> PathBuf {
    let dir = server.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), source).unwrap();
    let config = dir.join("zerg.yml");
    std::fs::write(
        &config,
        format!(
            "zerg-server: {}\nhttp: {}\nwsgi-file: {}\nprocesses: 2\nready-timeout: 10\n",
            server.control.display(),
            server.http,
            dir.join("app.py").display()
        ),
    )
    .unwrap();
    config
}

/// Runs the deploy script with `zergling` as green's command; fails the test if the script
/// has not finished well past its own `--timeout`.
fn deploy(server: &Server, config: &Path, zergling: &Path) -> Output {
    let bin = common::bin_dir();
    let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/blue-green-deploy"));
    cmd.args([
        "--pool",
        &server.control.display().to_string(),
        "--config",
        &config.display().to_string(),
    ])
    .args(["--timeout", "30"])
    .env("ZERGLING", zergling)
    .env("ZERGCTL", bin.join("zergctl"));
    // Well past the script's own --timeout of 30 s.
    common::output_within(&mut cmd, Duration::from_secs(45))
}

/// A green command that takes a second before it even starts the zergling, as a cold disk or
/// a busy machine does: the script must not mistake "not attached yet" for "rolled back".
fn slow_zergling(server: &Server) -> PathBuf {
    let path = server.dir.path().join("slow-zergling");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nsleep 1\nexec {} \"$@\"\n",
            common::bin_dir().join("zergling").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn blue_green_deploy_switches_and_rolls_back() {
    let server = Server::start_with_app_source(&app("blue"), "processes: 2\n");
    assert_eq!(server.get("/").text(), "blue");

    let green = release(&server, "green", &app("green"));
    let out = deploy(&server, &green, &slow_zergling(&server));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("deployed"), "{stdout}");
    assert_eq!(server.get("/").text(), "green");
    let status = server.status().unwrap();
    assert_eq!(status.generations.len(), 1, "blue is gone: {status:?}");

    // A broken release is rolled back and green serves on.
    let broken = release(&server, "broken", "import no_such_module_in_release\n");
    let out = deploy(&server, &broken, &common::bin_dir().join("zergling"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ROLLED BACK"), "{stdout}");
    assert!(stdout.contains("No module named"), "{stdout}");
    assert_eq!(server.get("/").text(), "green");
    wait_for("only green to remain", || {
        server
            .status()
            .filter(|s| s.generations.len() == 1 && s.generations[0].state == "serving")
    });
}
