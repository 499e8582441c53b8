//! Log setup shared by every binary: `tracing` to stderr, filtered by `ZERG_LOG` (or `RUST_LOG`),
//! `info` by default. Each line names the process (`pool`, `master`, `worker 3`) so a reload can
//! be followed in one merged log.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call once per process (later calls are ignored, as
/// in a forked child that inherits its parent's subscriber).
pub fn init() {
    let filter = std::env::var("ZERG_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
