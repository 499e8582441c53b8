//! `static-map`: files under a mount point served by the worker itself, never entering Python
//! (uWSGI's `static-map`). A GET or HEAD under a mount whose file exists is answered here; any
//! other request, or a missing file, goes to the app.
//!
//! Safety: the path is percent-decoded once, and then may not contain a `..` segment, a NUL or a
//! backslash, so `%2e%2e`, `%2f`, `%00` and `%5c` are caught after decoding (a backslash names
//! no file a site needs and is a separator to Windows tools, so it is refused outright); the
//! file's canonical path must stay inside the mount's canonical directory, so no symlink leads
//! out of it (one to another file inside is served); and the file is opened `O_NOFOLLOW`, so
//! a symlink put in its place after the check is not followed. A refused path goes to the app
//! like a missing file, which answers it as it answers any unknown path.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use std::io::Read;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::wsgi::reply::{Chunks, Reply, ResponseBody, STREAM_DEPTH};

/// Files up to this size are read whole; larger ones are streamed in [`CHUNK`]s.
const WHOLE_FILE_MAX: u64 = 256 * 1024;
const CHUNK: usize = 64 * 1024;

/// The mounts, with canonical directories.
pub struct StaticMap {
    mounts: Vec<(String, PathBuf)>,
}

impl StaticMap {
    pub fn new(maps: Vec<(String, PathBuf)>) -> StaticMap {
        let mounts = maps
            .into_iter()
            .filter_map(|(mount, dir)| match std::fs::canonicalize(&dir) {
                Ok(dir) => Some((mount, dir)),
                Err(e) => {
                    tracing::warn!(mount, dir = %dir.display(), error = %e, "static-map directory unusable; ignored");
                    None
                }
            })
            .collect();
        StaticMap { mounts }
    }

    /// The file a GET/HEAD for `path` maps to, if it exists inside its mount.
    pub fn resolve(&self, method: &Method, path: &str) -> Option<PathBuf> {
        if self.mounts.is_empty() || (method != Method::GET && method != Method::HEAD) {
            return None;
        }
        let (mount, dir) = self.mounts.iter().find(|(mount, _)| {
            path.strip_prefix(mount.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        })?;
        let decoded = percent_encoding::percent_decode_str(&path[mount.len()..])
            .decode_utf8()
            .ok()?;
        if !is_plain(&decoded) {
            tracing::debug!(path, "static-map: path refused (.., NUL or backslash)");
            return None;
        }
        // Relative, so `join` cannot replace the directory with an absolute path.
        let file = std::fs::canonicalize(dir.join(decoded.trim_start_matches('/'))).ok()?;
        if !file.starts_with(dir) {
            tracing::debug!(path, "static-map: path refused (leads out of the mount)");
            return None;
        }
        file.is_file().then_some(file)
    }
}

/// True for a decoded path with no `..` segment, NUL or backslash.
fn is_plain(decoded: &str) -> bool {
    !decoded.contains(['\0', '\\']) && !decoded.split('/').any(|seg| seg == "..")
}

/// Answers a request with `file`: Content-Type from its extension, Last-Modified, and a 304 for
/// a matching If-Modified-Since.
///
/// A file up to [`WHOLE_FILE_MAX`] is opened and read right here on the event loop, as nginx
/// does without `aio threads`: from the page cache that is a few microseconds, where each hop
/// to tokio's blocking pool costs more than the read. Larger files stream from that pool.
pub fn serve(file: &Path, method: &Method, headers: &http::HeaderMap) -> Reply {
    match serve_file(file, method, headers) {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "static file unreadable");
            Reply::error(StatusCode::FORBIDDEN)
        }
    }
}

fn serve_file(path: &Path, method: &Method, headers: &http::HeaderMap) -> std::io::Result<Reply> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    let len = meta.len();
    let modified = meta.modified().ok();
    let mut out = vec![
        (header::CONTENT_LENGTH, HeaderValue::from(len)),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_str(
                mime_guess::from_path(path)
                    .first_or_octet_stream()
                    .essence_str(),
            )
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        ),
    ];
    if let Some(m) = modified {
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(m)) {
            out.push((header::LAST_MODIFIED, v));
        }
        if not_modified_since(headers, m) {
            out.retain(|(n, _)| n != header::CONTENT_LENGTH);
            return Ok(Reply {
                status: StatusCode::NOT_MODIFIED,
                reason: None,
                headers: out,
                body: ResponseBody::Full(None),
            });
        }
    }
    let body = if method == Method::HEAD {
        ResponseBody::Full(None)
    } else if len <= WHOLE_FILE_MAX {
        let mut data = vec![0u8; len as usize];
        let mut got = 0;
        while got < data.len() {
            match file.read(&mut data[got..])? {
                0 => break, // truncated meanwhile: send what is there
                n => got += n,
            }
        }
        data.truncate(got);
        out[0].1 = HeaderValue::from(got);
        ResponseBody::Full(Some(Bytes::from(data)))
    } else {
        let mut file = tokio::fs::File::from_std(file);
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        ResponseBody::Stream(Chunks::bounded(rx, Some(len)))
    };
    Ok(Reply {
        status: StatusCode::OK,
        reason: None,
        headers: out,
        body,
    })
}

fn not_modified_since(headers: &http::HeaderMap, modified: SystemTime) -> bool {
    let Some(since) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    // HTTP dates have whole seconds.
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    secs(modified) <= secs(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed on drop (this crate has no tempfile).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("zerg-static-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mapped(name: &str) -> (Scratch, StaticMap) {
        let top = Scratch::new(name);
        let root = top.path().join("public");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("hello.txt"), "hello").unwrap();
        std::fs::write(root.join("back\\slash.txt"), "refused though inside").unwrap();
        std::fs::write(top.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(top.path().join("secret.txt"), root.join("out.txt")).unwrap();
        std::os::unix::fs::symlink("../hello.txt", root.join("sub/in.txt")).unwrap();
        let map = StaticMap::new(vec![("/static".into(), root)]);
        (top, map)
    }

    #[test]
    fn traversal_and_escaping_symlinks_resolve_to_nothing() {
        let (top, map) = mapped("escape");
        let secret = format!("/static/%2f{}", top.path().join("secret.txt").display());
        for path in [
            "/static/../secret.txt",
            "/static/%2e%2e/secret.txt",
            "/static/%2E%2E%2Fsecret.txt",
            "/static/sub/..%2f..%2fsecret.txt",
            "/static/..%5csecret.txt",
            "/static/back%5cslash.txt",
            "/static/hello.txt%00.png",
            "/static/out.txt",
            "/static/sub",
            "/static/",
            secret.as_str(),
        ] {
            assert_eq!(map.resolve(&Method::GET, path), None, "{path}");
        }
    }

    #[test]
    fn files_and_symlinks_inside_resolve() {
        let (_top, map) = mapped("inside");
        for path in [
            "/static/hello.txt",
            "/static/sub/in.txt",
            "/static//hello.txt",
        ] {
            let file = map.resolve(&Method::GET, path).expect(path);
            assert!(
                file.ends_with("public/hello.txt"),
                "{path}: {}",
                file.display()
            );
        }
        assert_eq!(map.resolve(&Method::POST, "/static/hello.txt"), None);
    }
}
