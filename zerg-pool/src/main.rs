//! `zerg-pool`: owns the listening sockets and hands them to generations of zerglings.

mod adopt;
mod control_server;
mod generation;
mod listeners;
mod notify;
mod observe;
mod pool;
mod queues;
mod sockinfo;
mod startup;
mod upgrade;

use std::path::PathBuf;

use clap::Parser;
use startup::FileKind;
use zerg::uwsgi_config::Dialect;

/// The long-lived zerg process: binds the sockets, starts zerglings, reloads and stops them.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The config file (shared with the zerglings): zerg's YAML, or a uWSGI file.
    #[arg(short, long, env = "ZERG_CONFIG", required_unless_present_any = ["yaml", "ini"])]
    config: Option<PathBuf>,
    /// A uWSGI YAML file (Galaxy's galaxy.yml): its `uwsgi:` section is the config, read as
    /// `uwsgi --yaml` reads it. Takes the place of --config.
    #[arg(long, value_name = "FILE", conflicts_with = "ini")]
    yaml: Option<PathBuf>,
    /// A uWSGI ini file: its `[uwsgi]` sections are the config. Takes the place of --config.
    #[arg(long, value_name = "FILE")]
    ini: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    // Before any thread: the upgrade channel's variable leaves the environment here.
    let channel = match upgrade::channel_from_env() {
        Ok(channel) => channel,
        Err(e) => {
            eprintln!("zerg-pool: {e:#}");
            std::process::exit(2);
        }
    };
    // Only an upgrade needs it: a pool whose binary cannot be found serves all the same.
    let upgrade = (
        channel,
        upgrade::Exe::current().map_err(|e| format!("{e:#}")),
    );
    let (path, kind) = match (args.yaml, args.ini, args.config) {
        (Some(yaml), _, _) => (yaml, FileKind::Uwsgi(Dialect::Yaml)),
        (None, Some(ini), _) => (ini, FileKind::Uwsgi(Dialect::Ini)),
        (None, None, Some(config)) => (config, FileKind::Any),
        (None, None, None) => {
            eprintln!("zerg-pool: name the config with --config, --yaml or --ini");
            std::process::exit(2);
        }
    };
    // Before logging starts: `logto` decides where the log goes.
    let mut startup = match startup::prepare(&path, kind, upgrade.0.is_some()) {
        Ok(startup) => startup,
        Err(e) => {
            eprintln!("zerg-pool: {e:#}");
            std::process::exit(2);
        }
    };
    zerg::logging::init();
    startup.log_warnings();
    if let Some(pidfile) = startup.pidfile() {
        tracing::info!(path = %pidfile.display(), "pid written");
    }
    let code = match run(path, &mut startup, upgrade) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("zerg-pool: {e:#}");
            2
        }
    };
    drop(startup);
    std::process::exit(code);
}

fn run(
    config: PathBuf,
    startup: &mut startup::Startup,
    (channel, exe): (Option<std::os::fd::OwnedFd>, Result<upgrade::Exe, String>),
) -> anyhow::Result<i32> {
    if let Err(why) = &exe {
        tracing::warn!(
            "cannot find this pool's binary ({why}): `zergctl upgrade-pool` will be refused"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (pool, control) = pool::Pool::bind(&config, exe, channel).await?;
        startup.write_pidfile();
        // Every socket is bound and no zergling started yet: from here on, `uid`/`gid`.
        startup.serve_as_user()?;
        pool.run(control).await
    })
}
