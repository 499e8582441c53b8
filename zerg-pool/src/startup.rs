//! What the pool does once, around binding its sockets, for the options uWSGI applies as it
//! starts: `umask`, `logto`, `pidfile`, then `uid` and `gid`; and the warnings a uWSGI file
//! gave, logged once here rather than by every process that reads the file.
//!
//! The order is uWSGI's: the umask first (it applies to the log and pid files and to the unix
//! sockets bound next), then the log (every later line, and every process started later,
//! writes there: the zerglings inherit stdout and stderr), then the pid file. Then the pool
//! binds every socket, and only then becomes `uid`/`gid` ([`Startup::serve_as_user`]): the log
//! and pid files were opened as root and the log reaches every process by inheritance, so
//! nothing started later needs root or opens them again.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sys::stat::{umask, Mode};
use nix::unistd::AccessFlags;
use zerg::config::Config;
use zerg::privileges::{Outcome, RunAs};
use zerg::uwsgi_config::{self, Dialect, Notice};

/// How the config file was named on the command line.
#[derive(Debug, Clone, Copy)]
pub enum FileKind {
    /// `--config`: zerg's YAML, or a uWSGI file told apart by its contents.
    Any,
    /// `--yaml` or `--ini`: must be uWSGI's.
    Uwsgi(Dialect),
}

/// The pool's process-wide setup; dropping it removes the pid file.
pub struct Startup {
    path: PathBuf,
    warnings: Vec<Notice>,
    pidfile: Option<PidFile>,
    /// `uid` and `gid`, to become once every socket is bound.
    run_as: Option<RunAs>,
    /// The control socket, absolute, as the pool binds it: handed to `uid`.
    control: PathBuf,
}

/// Loads the config at `path`, checks that the pool can become its `uid`/`gid`, then applies
/// its `umask`, `logto` and `pidfile`.
pub fn prepare(path: &Path, kind: FileKind) -> anyhow::Result<Startup> {
    let config = match kind {
        FileKind::Any => Config::load(path)?,
        FileKind::Uwsgi(dialect) => uwsgi_config::load(path, dialect)?,
    };
    let run_as = RunAs::from_config(&config);
    // Before anything is bound or written: a pool that could not drop never starts.
    if let Some(run_as) = &run_as {
        run_as.check()?;
    }
    let control = std::path::absolute(&config.zerg_server)
        .with_context(|| format!("zerg-server {}", config.zerg_server.display()))?;
    if let Some(mask) = config.umask {
        umask(Mode::from_bits_truncate(mask.0));
    }
    if let Some(log) = &config.logto {
        log_to(log)?;
    }
    let pidfile = config.pidfile.as_deref().map(PidFile::write).transpose()?;
    Ok(Startup {
        path: path.to_owned(),
        warnings: config.uwsgi.map(|u| u.warnings).unwrap_or_default(),
        pidfile,
        run_as,
        control,
    })
}

impl Startup {
    /// One line for each option of a uWSGI file that zerg ignores (once logging is set up).
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(
                config = %self.path.display(),
                line = w.line,
                "`{}`: {}",
                w.key,
                w.message
            );
        }
    }

    /// Whether a pid file is held (for the log line that says where).
    pub fn pidfile(&self) -> Option<&Path> {
        self.pidfile.as_ref().map(|p| p.path.as_path())
    }

    /// Becomes `uid`/`gid`, once every socket is bound and before any zergling starts; every
    /// process the pool starts then inherits the user. The control socket (mode 0600) is handed
    /// to the user first, so that its zerglings and its `zergctl` reach the pool, and root
    /// still does. Nothing the pool does later needs root: a reload re-reads the config but
    /// never binds (the listeners stay the ones bound at start), and signals only processes of
    /// the same user.
    pub fn serve_as_user(&self) -> anyhow::Result<()> {
        let Some(run_as) = &self.run_as else {
            return Ok(());
        };
        if nix::unistd::geteuid().is_root() {
            // lchown: a symlink put in the socket's place is not followed.
            std::os::unix::fs::lchown(&self.control, run_as.uid(), run_as.gid())
                .with_context(|| format!("cannot hand {} to {run_as}", self.control.display()))?;
        }
        let groups = match run_as.become_it()? {
            Outcome::Dropped { groups } => groups,
            Outcome::Already => {
                tracing::info!(%run_as, "running as the configured user already");
                return Ok(());
            }
        };
        tracing::info!(
            uid = %nix::unistd::getuid(),
            gid = %nix::unistd::getgid(),
            ?groups,
            "sockets bound; now running as {run_as}"
        );
        // Every zergling reads the config as this user, and so does every reload.
        std::fs::File::open(&self.path).with_context(|| {
            format!(
                "config {} cannot be read as {run_as}: the zerglings and every reload read it \
                 as that user; make it readable by them",
                self.path.display()
            )
        })?;
        if nix::unistd::access(".", AccessFlags::X_OK).is_err() {
            let cwd = std::env::current_dir().unwrap_or_default();
            tracing::warn!(
                cwd = %cwd.display(),
                "{run_as} cannot enter the directory the pool was started in, which its zerglings \
                 inherit: set `chdir`, or start the pool elsewhere"
            );
        }
        Ok(())
    }
}

/// Points stdout and stderr at `path`, appending (uWSGI's `logto`: mode 0640 before umask).
/// A symlink is not followed: the pool may be root here, and the directory the app's user's.
pub fn log_to(path: &Path) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open logto {}", path.display()))?;
    nix::unistd::dup2_stdout(&file)
        .and_then(|()| nix::unistd::dup2_stderr(&file))
        .with_context(|| format!("cannot log to {}", path.display()))?;
    Ok(())
}

/// The pool's pid in a file, removed at exit unless someone else's pid has replaced it.
struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    fn write(path: &Path) -> anyhow::Result<PidFile> {
        // Absolute now, so the file is found at exit whatever the working directory is then.
        let path =
            std::path::absolute(path).with_context(|| format!("pidfile {}", path.display()))?;
        let pid = std::process::id();
        // Neither through a symlink nor into anything but a plain file, and truncated only once
        // it is known to be one: the pool may be root here, and the directory the app's user's.
        OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut f| {
                if !f.metadata()?.is_file() {
                    return Err(std::io::Error::other("not a regular file"));
                }
                f.set_len(0)?;
                writeln!(f, "{pid}")
            })
            .with_context(|| format!("cannot write pidfile {}", path.display()))?;
        Ok(PidFile { path, pid })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == self.pid.to_string());
        if ours {
            match std::fs::remove_file(&self.path) {
                Ok(()) => {}
                // Written as root, in a directory only root may change, before the pool
                // became `uid` (uWSGI's pidfile stays too); the next start overwrites it.
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => tracing::info!(
                    path = %self.path.display(),
                    "pidfile left in place: its directory is root's and the pool is not"
                ),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove pidfile")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory of this test's own under the system temp dir.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zerg-startup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_pidfile_and_the_log_are_never_written_through_a_symlink() {
        let dir = scratch("symlink");
        let target = dir.join("precious");
        std::fs::write(&target, "keep me\n").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(PidFile::write(&link).is_err());
        assert!(log_to(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
        let plain = dir.join("zerg.pid");
        std::fs::write(&plain, "a much longer old content\n").unwrap();
        let pidfile = PidFile::write(&plain).unwrap();
        assert_eq!(
            std::fs::read_to_string(&plain).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(pidfile);
        assert!(!plain.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
