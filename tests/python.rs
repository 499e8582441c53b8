//! How the app is found and imported: `module:` with a factory, `pythonpath`, `chdir`, `env`
//! and `virtualenv`.

mod common;

use std::process::Command;

use common::Server;

#[test]
fn module_factory_in_a_virtualenv_with_pythonpath_chdir_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(made.success());
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("site-packages");
    std::fs::write(site.join("only_in_venv.py"), "WHERE = 'venv'\n").unwrap();
    let workdir = dir.path().join("work");
    std::fs::create_dir(&workdir).unwrap();

    let rest = format!(
        "module: webapp.factory:make_app()\npythonpath: {}\nvirtualenv: {}\nchdir: {}\nenv: ZERG_TEST_ENV=from-config\n",
        common::apps_dir().join("pkgapp").display(),
        venv.display(),
        workdir.display(),
    );
    let server = Server::start_in(dir, &[], &rest);
    let r = server.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let parts: Vec<&str> = text.split('|').collect();
    assert_eq!(parts[0], "venv");
    assert_eq!(parts[1], workdir.display().to_string());
    assert_eq!(
        parts[2],
        venv.display().to_string(),
        "sys.prefix is the virtualenv"
    );
    assert_eq!(parts[3], "from-config");
}
