//! What the pool does once, before it binds anything, for the options uWSGI applies as it
//! starts: `umask`, `logto` and `pidfile`; and the warnings a uWSGI file gave, logged once here
//! rather than by every process that reads the file.
//!
//! The order is uWSGI's: the umask first (it applies to the log and pid files and to the unix
//! sockets bound next), then the log (every later line, and every process started later,
//! writes there: the zerglings inherit stdout and stderr), then the pid file.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sys::stat::{umask, Mode};
use zerg::config::Config;
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
}

/// Loads the config at `path`, then applies its `umask`, `logto` and `pidfile`.
pub fn prepare(path: &Path, kind: FileKind) -> anyhow::Result<Startup> {
    let config = match kind {
        FileKind::Any => Config::load(path)?,
        FileKind::Uwsgi(dialect) => uwsgi_config::load(path, dialect)?,
    };
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
}

/// Points stdout and stderr at `path`, appending (uWSGI's `logto`: mode 0640 before umask).
fn log_to(path: &Path) -> anyhow::Result<()> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
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
        std::fs::File::create(&path)
            .and_then(|mut f| writeln!(f, "{pid}"))
            .with_context(|| format!("cannot write pidfile {}", path.display()))?;
        Ok(PidFile { path, pid })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.trim() == self.pid.to_string());
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove pidfile");
            }
        }
    }
}
