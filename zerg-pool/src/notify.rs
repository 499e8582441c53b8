//! systemd's notify protocol (`sd_notify`), for `Type=notify` and `Type=notify-reload` units:
//! `READY=1` once a generation serves, `RELOADING=1` with `MONOTONIC_USEC` when a reload starts
//! (systemd waits forever for a reload without it), `STOPPING=1` on stop. Without
//! `NOTIFY_SOCKET` in the environment every call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    if let Err(e) = sent {
        tracing::warn!(socket = %path, error = %e, "cannot notify systemd");
    }
}

pub fn ready() {
    send("READY=1\nSTATUS=serving");
}

pub fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"
    ));
}

/// After an upgrade: the new pool is the service's main process now (the old one, still the
/// main process, says so; `NotifyAccess=all` then lets the new one notify too).
pub fn main_pid(pid: u32) {
    send(&format!(
        "MAINPID={pid}\nREADY=1\nSTATUS=serving (upgraded)"
    ));
}

pub fn stopping() {
    send("STOPPING=1");
}
