//! `zergctl`: the operator's client for a running zerg-pool.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use zerg::control::{Connection, ControlError, Message, PoolStatus, ProcessInfo};

/// Talk to a running zerg-pool over its control socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The pool's control socket (`zerg-server:` in the config).
    #[arg(long, env = "ZERG_POOL")]
    pool: Option<PathBuf>,
    /// Read the control socket path from this config instead.
    #[arg(short, long, env = "ZERG_CONFIG")]
    config: Option<PathBuf>,
    /// Read it from this uWSGI YAML file (the one zerg-pool got with --yaml): `zerg-server:`
    /// in its `uwsgi:` section, or `<dir>/<stem>.zerg.sock` beside it.
    #[arg(long, value_name = "FILE", conflicts_with = "ini")]
    yaml: Option<PathBuf>,
    /// Read it from this uWSGI ini file (the one zerg-pool got with --ini).
    #[arg(long, value_name = "FILE")]
    ini: Option<PathBuf>,
    /// Seconds to wait for the pool's answer. Default: 10 for status and stop; reload and
    /// chain-reload wait for the outcome however long it takes unless this is given.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the generations, their masters and workers.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Start a new generation and retire the old one; waits for the outcome and exits non-zero
    /// if the new generation was rolled back.
    Reload {
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the serving generation's workers one at a time (no re-import; each new worker
    /// accepts before the next old one stops).
    ChainReload,
    /// Replace the running zerg-pool with the binary at its path, started again (nginx's and
    /// gunicorn's USR2 upgrade): every socket and generation is handed over, nothing stops
    /// serving. Exits non-zero, with the old pool still in charge, if the new one fails.
    UpgradePool,
    /// Stop the pool and every generation (in-flight requests finish first).
    Stop {
        /// Kill at once instead of draining.
        #[arg(long)]
        now: bool,
    },
}

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("zergctl: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Exit codes: 0 done, 1 the reload was rolled back or refused, 2 zergctl itself failed.
fn run(args: Args) -> anyhow::Result<i32> {
    use zerg::uwsgi_config::{load, Dialect};
    let socket = match (args.pool, args.yaml, args.ini, args.config) {
        (Some(p), ..) => p,
        (None, Some(yaml), ..) => load(&yaml, Dialect::Yaml)?.zerg_server,
        (None, None, Some(ini), _) => load(&ini, Dialect::Ini)?.zerg_server,
        (None, None, None, Some(c)) => zerg::config::Config::load(&c)?.zerg_server,
        (None, None, None, None) => {
            bail!("name the pool's control socket with --pool (or its config with --config, --yaml or --ini)")
        }
    };
    let timeout = match (&args.command, args.timeout) {
        (_, Some(secs)) if secs.is_finite() && secs > 0.0 => Some(Duration::from_secs_f64(secs)),
        (_, Some(secs)) => bail!("--timeout must be a positive number of seconds, not {secs}"),
        (Command::Status { .. } | Command::Stop { .. }, None) => Some(Duration::from_secs(10)),
        (Command::Reload { .. } | Command::ChainReload | Command::UpgradePool, None) => None,
    };
    let result = converse(&socket, args.command, timeout);
    if let Err(e) = &result {
        if e.chain().any(is_timeout) {
            let secs = timeout.map_or(0.0, |t| t.as_secs_f64());
            bail!(
                "the pool at {} did not answer within {secs} s; is it stuck? (see its log)",
                socket.display()
            );
        }
    }
    result
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let io = match e.downcast_ref::<ControlError>() {
        Some(ControlError::Io(io)) => io,
        _ => match e.downcast_ref::<std::io::Error>() {
            Some(io) => io,
            None => return false,
        },
    };
    matches!(
        io.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn converse(socket: &Path, command: Command, timeout: Option<Duration>) -> anyhow::Result<i32> {
    let mut conn = Connection::connect_ctl(socket, timeout).with_context(|| {
        format!(
            "cannot talk to the pool at {}; is zerg-pool running?",
            socket.display()
        )
    })?;
    match command {
        Command::Status { json } => {
            conn.send(&Message::StatusRequest, &[])?;
            let status = match conn.recv()?.0 {
                Message::Status(s) => s,
                Message::Error { message } => bail!("{message}"),
                other => bail!("unexpected answer from the pool: {other:?}"),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
        }
        Command::Reload { json } => {
            conn.send(&Message::Reload, &[])?;
            let outcome = match conn.recv()?.0 {
                Message::ReloadResult(o) | Message::ChainReloaded(o) => o,
                Message::Error { message } => bail!("{message}"),
                other => bail!("unexpected answer from the pool: {other:?}"),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&outcome)?);
            } else if outcome.ok {
                println!("reload done in {} ms: {}", outcome.millis, outcome.message);
            } else {
                eprintln!("reload {} (after {} ms)", outcome.message, outcome.millis);
            }
            return Ok(if outcome.ok { 0 } else { 1 });
        }
        Command::ChainReload => {
            conn.send(&Message::ChainReload, &[])?;
            let outcome = match conn.recv()?.0 {
                Message::ChainReloaded(o) => o,
                Message::Error { message } => bail!("{message}"),
                other => bail!("unexpected answer from the pool: {other:?}"),
            };
            if outcome.ok {
                println!(
                    "chain reload done in {} ms: {}",
                    outcome.millis, outcome.message
                );
                return Ok(0);
            }
            eprintln!("chain reload {}", outcome.message);
            return Ok(1);
        }
        Command::UpgradePool => {
            conn.send(&Message::UpgradePool, &[])?;
            let outcome = match conn.recv()?.0 {
                Message::UpgradeResult(o) => o,
                Message::Error { message } => bail!("{message}"),
                other => bail!("unexpected answer from the pool: {other:?}"),
            };
            if outcome.ok {
                println!("upgrade done: {}", outcome.message);
                return Ok(0);
            }
            eprintln!("upgrade {}", outcome.message);
            return Ok(1);
        }
        Command::Stop { now } => {
            conn.send(&Message::StopPool { immediate: now }, &[])?;
            match conn.recv()?.0 {
                Message::Stopping => println!("stopping"),
                other => bail!("unexpected answer from the pool: {other:?}"),
            }
        }
    }
    Ok(0)
}

/// A process's figures as its master last reported them (up to a second old): a worker's
/// requests served, in flight, memory, and how long its oldest request has run.
fn figures(p: &ProcessInfo) -> String {
    let mut out = String::new();
    if let Some(n) = p.requests {
        out += &format!(" requests {n}");
    }
    if let Some(n) = p.in_flight {
        out += &format!(" in-flight {n}");
    }
    if let Some(bytes) = p.rss_bytes {
        out += &format!(" rss {:.1}MiB", bytes as f64 / (1024.0 * 1024.0));
    }
    if p.in_flight.is_some() {
        match p.busy_ms {
            Some(ms) => out += &format!(" busy {:.1}s", ms as f64 / 1000.0),
            None => out += " idle",
        }
    }
    out
}

fn print_status(status: &PoolStatus) {
    println!("pool pid {}", status.pool_pid);
    for l in &status.listeners {
        println!("  listener {} {}", l.name, l.addr);
    }
    if status.generations.is_empty() {
        println!("no generation running");
    }
    if let Some(r) = &status.last_reload {
        let how = if r.ok { "ok" } else { "FAILED" };
        println!("last reload: {how} in {} ms: {}", r.millis, r.message);
    }
    for g in &status.generations {
        let master = g.master_pid.map_or("-".to_owned(), |p| p.to_string());
        println!(
            "generation {} {} master pid {} age {}s",
            g.generation, g.state, master, g.age_secs
        );
        for p in &g.processes {
            let farms = if p.farms.is_empty() {
                String::new()
            } else {
                format!(" farms {}", p.farms.join(","))
            };
            let messages = p
                .messages
                .map(|m| format!(" messages {m}"))
                .unwrap_or_default();
            println!(
                "  {} {} pid {}{}{farms}{messages}",
                p.kind,
                p.id,
                p.pid,
                figures(p)
            );
        }
    }
}
