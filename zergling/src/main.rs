//! `zergling`: one generation's master. Attaches to a zerg-pool, imports the WSGI app once,
//! forks the web workers and supervises them.

mod asgi;
mod health;
mod locks;
mod master;
mod mule;
mod pool_link;
mod process;
mod python;
mod scoreboard;
mod signals;
mod uwsgi_api;
mod worker;
mod wsgi;

use std::path::PathBuf;

use clap::Parser;

/// A zerg generation: gets the listeners from the pool, imports the app, forks workers.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The pool's control socket.
    #[arg(long, env = "ZERG_POOL")]
    pool: Option<PathBuf>,
    /// The YAML config file.
    #[arg(short, long, env = "ZERG_CONFIG")]
    config: PathBuf,
    /// Generation number given by the pool that spawned this zergling.
    #[arg(long, env = "ZERG_GENERATION", hide = true)]
    generation: Option<u64>,
}

fn main() {
    zerg::logging::init();
    let args = Args::parse();
    let pool = match args.pool {
        Some(p) => p,
        None => match zerg::config::Config::load(&args.config) {
            Ok(c) => c.zerg_server,
            Err(e) => {
                tracing::error!("zergling: {e}");
                std::process::exit(2);
            }
        },
    };
    let code = match master::run(master::Options {
        pool,
        config: args.config,
        generation: args.generation,
    }) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("zergling: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
