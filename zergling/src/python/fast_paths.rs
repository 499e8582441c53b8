//! Where the WSGI path reads CPython's internals instead of calling its API, and the switch
//! that turns every such read off, so that one build can run the tests both ways.
//!
//! Each fast path is compiled only where the layout it reads is known, and falls back to the
//! public API elsewhere (3.14 on, free-threaded builds, the limited API, PyPy):
//!
//! - `wsgi::fastcall::text` reads a compact ASCII str in place (3.11-3.13, little-endian);
//!   elsewhere it calls `PyUnicode_AsUTF8AndSize`.
//! - `wsgi::environ` keeps a connection's environ and makes it over into the next request's
//!   when the dict's PEP 509 version tag and its reference count say the app let go of it
//!   unchanged (GIL builds up to 3.13); elsewhere every request copies the connection's base.
//! - `wsgi::response::CallKit` reuses `start_response` and `write()` when their reference
//!   counts say nothing else holds them (GIL builds); elsewhere each call makes new ones.
//! - `wsgi::gil` has the event loop keep the GIL from one inline call to the next (GIL
//!   builds); elsewhere each call attaches on its own.
//!
//! CI's interpreter takes every fast path, so without the switch no test would run a
//! fallback. `ZERG_FORCE_FALLBACKS=1` in the environment (of the pool, whose zerglings and
//! workers inherit it, or of `cargo test`) makes each take its fallback. It is read once per
//! process, at its first use; after that a check is one load of a flag that never changes.

use std::sync::LazyLock;

/// The environment variable that forces every fallback: set, and neither empty nor `0`.
pub const FORCE_FALLBACKS: &str = "ZERG_FORCE_FALLBACKS";

static ALLOWED: LazyLock<bool> =
    LazyLock::new(|| !std::env::var_os(FORCE_FALLBACKS).is_some_and(|v| !v.is_empty() && v != "0"));

/// Whether the fast paths may be taken where they are compiled in (false under
/// `ZERG_FORCE_FALLBACKS`).
#[inline]
pub fn allowed() -> bool {
    *ALLOWED
}
