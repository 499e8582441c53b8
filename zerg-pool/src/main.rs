//! `zerg-pool`: owns the listening sockets and hands them to generations of zerglings.

mod control_server;
mod generation;
mod listeners;
mod notify;
mod pool;
mod queues;

use std::path::PathBuf;

use clap::Parser;

/// The long-lived zerg process: binds the sockets, starts zerglings, reloads and stops them.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The YAML config file (shared with the zerglings).
    #[arg(short, long, env = "ZERG_CONFIG")]
    config: PathBuf,
}

fn main() {
    zerg::logging::init();
    let args = Args::parse();
    let code = match run(args) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("zerg-pool: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn run(args: Args) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (pool, control) = pool::Pool::bind(&args.config)?;
        pool.run(control).await
    })
}
