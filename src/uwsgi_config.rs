//! uWSGI's own config files, read the way uWSGI reads them, so that a Galaxy site's `uwsgi:`
//! section (`uwsgi --yaml config/galaxy.yml`) or `[uwsgi]` ini runs under zerg unchanged.
//!
//! uWSGI does not read YAML as YAML (uWSGI: `core/yaml.c`, its built-in reader, and
//! `core/ini.c`), and Galaxy's docs rely on the difference, so neither may serde here:
//!
//! - Only the first top-level `uwsgi:` section is read; everything else (Galaxy's `galaxy:`
//!   section beside it) is skipped. The section ends at the first line that is not indented.
//! - Each indented line is `key: value`: the key is what comes before the first `": "`, the
//!   value everything after it, trimmed. Keys may repeat; every occurrence is kept in order
//!   (`static-map`, `mule`, `hook-master-start`), and an option read once takes its last value.
//! - Values are strings: quotes are part of the value, `#` starts a comment anywhere on a line
//!   (even inside a value), `true`/`false` and numbers are text until an option reads them
//!   (a flag is off for `false`, `off`, `no` or `0`, on for anything else).
//! - A line uWSGI's reader cannot read (`key` with no `": "`, a `[...]`/`{...}` collection)
//!   silently ends the section there in uWSGI; zerg names the file and the line instead. A
//!   `key:` followed by `- value` lines gives one value per item, as uWSGI built with libyaml
//!   reads it (the built-in reader stops at the first item).
//! - Before any of that, the whole file goes through uWSGI's magic substitution: `%d` (the
//!   file's directory, with a trailing `/`), `%p` (its path), `%s` (its name), `%n` (the name
//!   without extension), `%e` (the extension), `%c` (the directory's own name), `%0`..`%9` (the
//!   directory's components), `%o` (the path as given), `%x` (the section asked for: empty),
//!   `%i` (inode), `%j` (hash of the path), `%v` (working directory), `%h` (host name), `%k`
//!   (CPUs), `%u`/`%U` (uid, user name), `%g`/`%G` (gid, group name), `%t`/`%T` (unix time in
//!   seconds, microseconds), `%b` (the binary), `%V` (version), `%[` (ESC), `%%` (a `%`); any
//!   other `%X` is deleted, and a `%` that ends a line joins the next line to it, as in uWSGI.
//!   Paths are the file's canonical path, so a symlinked config sees its target's directory.
//! - After the whole section is read, values are expanded in uWSGI's three passes: `$(NAME)`
//!   from the environment (`$(NAME:-default)`, `$(NAME-default)`), `@(path)` from a file's
//!   contents, then `%(key)` from the first value of another option or placeholder
//!   (`set: name=value` defines one, and also sets the option `name`; `set-placeholder` only
//!   defines it), with uWSGI's arithmetic (`%(processes + 1)`). A reference to nothing stays
//!   as written.
//! - INI: lines in `[uwsgi]` sections (all of them, in order) are `key = value`; a line without
//!   `=` gives an empty value; lines starting with `;` or `#` are comments.
//!
//! Then each entry meets zerg's [`Config`]: an option zerg has under the same name (or one of
//! uWSGI's aliases for it) is that option; one zerg has no use for, or does anyway, is named
//! in one warning; one whose absence would change what the site gets, and which zerg cannot
//! honour yet, is an error naming the key and the line. Every entry also goes into `uwsgi.opt`
//! as uWSGI shows it ([`Source::opt`]).
//!
//! The control socket: uWSGI has no such option. A `zerg-server:` key in the section names it;
//! without one it is `<config dir>/<stem>.zerg.sock` (`/srv/galaxy/config/galaxy.zerg.sock` for
//! `/srv/galaxy/config/galaxy.yml`), so `zergctl --yaml config/galaxy.yml` finds it too.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::config::{closest_option, Config, ConfigError, OPTIONS};

/// The two uWSGI file formats zerg reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `uwsgi --yaml FILE`: the `uwsgi:` section of a YAML file.
    Yaml,
    /// `uwsgi --ini FILE`: the `[uwsgi]` sections of an ini file.
    Ini,
}

impl Dialect {
    /// The uWSGI option that loads such a file; also its key in `uwsgi.opt`.
    pub fn option(self) -> &'static str {
        match self {
            Dialect::Yaml => "yaml",
            Dialect::Ini => "ini",
        }
    }
}

/// One `key: value` of the section, after placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    /// 1-based line of the file it was read from.
    pub line: usize,
    /// Defined by `set-placeholder`: a name for `%(...)` and `uwsgi.opt`, never an option.
    pub placeholder_only: bool,
}

/// A warning or an error about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub line: usize,
    /// The option it is about; empty for a line that has none.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "line {}: `{}`: {}", self.line, self.key, self.message)
        }
    }
}

/// A `shared-socket`: an address bound once, named by `=N` in `http`, `https` or `socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSocket {
    pub address: String,
    /// Anything after the address, comma separated.
    pub extra: Vec<String>,
    pub line: usize,
}

/// What a listener option serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// `http`, `http-socket`.
    Http,
    /// `https`: address, certificate, key (and uWSGI's optional ciphers, CA).
    Https,
    /// `socket`, `uwsgi-socket`: the uwsgi binary protocol.
    Uwsgi,
    /// `http-to-https`: answers every request with a redirect to HTTPS.
    HttpToHttps,
}

/// Where a listener binds: an address of its own, or a shared socket's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerAddress {
    Direct(String),
    /// `=N`: the N-th `shared-socket` (from 0), whose address is copied here.
    Shared {
        index: usize,
        address: String,
    },
}

impl ListenerAddress {
    pub fn address(&self) -> &str {
        match self {
            ListenerAddress::Direct(a) => a,
            ListenerAddress::Shared { address, .. } => address,
        }
    }
}

/// A listener option of the section, with its `=N` reference resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub kind: ListenerKind,
    pub address: ListenerAddress,
    /// The comma-separated fields after the address (`https`: certificate, key, ...).
    pub extra: Vec<String>,
    pub line: usize,
}

/// What a uWSGI file gave beyond zerg's typed options, kept on [`Config::uwsgi`]: the entries
/// for `uwsgi.opt`, the warnings for the pool's log, and the typed form of the options zerg
/// reads but does not honour yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file, canonical.
    pub path: PathBuf,
    pub dialect: Dialect,
    /// Every entry of the section in file order, placeholders expanded.
    pub entries: Vec<Entry>,
    /// Options zerg ignores, one each, and other things worth an operator's look.
    pub warnings: Vec<Notice>,
    pub shared_sockets: Vec<SharedSocket>,
    pub listeners: Vec<Listener>,
}

impl Source {
    /// `uwsgi.opt` as uWSGI builds it: the option that loaded the file (`yaml` or `ini`) with
    /// its path, then every entry in file order (the Python side turns the values into bytes
    /// and repeated keys into lists).
    pub fn opt(&self) -> Vec<(String, String)> {
        let mut out = vec![(
            self.dialect.option().to_owned(),
            self.path.display().to_string(),
        )];
        out.extend(
            self.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone())),
        );
        out
    }
}

/// Everything read from a uWSGI file: the [`Source`], the values each zerg option gets, and
/// the errors that keep it from loading.
#[derive(Debug, Clone)]
pub struct Translation {
    pub source: Source,
    /// zerg option name -> its values with their lines, in the order first seen.
    pub options: Vec<(&'static str, Vec<(String, usize)>)>,
    /// Malformed lines and options zerg cannot honour: each keeps the file from loading.
    pub errors: Vec<Notice>,
}

/// Which dialect `path` is written in, if it is a uWSGI file: an `.ini` file, a file whose
/// first meaningful line is an ini `[section]`, or a YAML file with a top-level `uwsgi:`.
pub fn detect(text: &str, path: &Path) -> Option<Dialect> {
    if path.extension().is_some_and(|e| e == "ini") {
        return Some(Dialect::Ini);
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut first = None;
    for line in text.lines() {
        if line
            .split_once(':')
            .is_some_and(|(key, _)| key == UWSGI_SECTION)
        {
            return Some(Dialect::Yaml);
        }
        let t = line.trim();
        if first.is_none() && !t.is_empty() && !t.starts_with(['#', ';']) {
            first = Some(t);
        }
    }
    let section = first?.strip_prefix('[')?.strip_suffix(']')?;
    (!section.contains([',', '[', ']', '{', '}'])).then_some(Dialect::Ini)
}

/// The section uWSGI reads unless told otherwise (`--yaml file:section`, which zerg does not
/// take).
const UWSGI_SECTION: &str = "uwsgi";

/// Loads `path` as a uWSGI file of the given dialect: what `--yaml`/`--ini` mean. A file that
/// is not one (zerg's own YAML) is refused with a hint.
pub fn load(path: &Path, dialect: Dialect) -> Result<Config, ConfigError> {
    let config = Config::load(path)?;
    match &config.uwsgi {
        Some(source) if source.dialect == dialect => Ok(config),
        _ => Err(ConfigError::Syntax {
            path: path.to_owned(),
            message: match dialect {
                Dialect::Yaml => {
                    "no top-level `uwsgi:` section (zerg's own config goes with --config)"
                }
                Dialect::Ini => "no `[uwsgi]` section (zerg's own config goes with --config)",
            }
            .into(),
        }),
    }
}

/// Reads a uWSGI file and maps it, without building the [`Config`]: the warnings and errors
/// are all there, even for a file that would not load.
pub fn read_file(path: &Path) -> Result<Translation, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let dialect = detect(&text, path).unwrap_or(Dialect::Yaml);
    Ok(translate(&text, path, dialect))
}

/// Reads `text` (the contents of `path`) as uWSGI would and maps it onto zerg's options.
pub fn translate(text: &str, path: &Path, dialect: Dialect) -> Translation {
    let file = canonical(path);
    let magic = Magic {
        given: path.to_owned(),
        path: file.clone(),
    };
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let lines = magic_lines(text, &magic, &mut warnings);
    let read = match dialect {
        Dialect::Yaml => read_yaml(&lines),
        Dialect::Ini => read_ini(&lines),
    };
    errors.extend(read.errors);
    warnings.extend(read.warnings);
    let (mut entries, mut placeholders) = define_placeholders(read.entries, &mut errors);
    let loader = Entry {
        key: dialect.option().to_owned(),
        value: file.display().to_string(),
        line: 0,
        placeholder_only: true,
    };
    entries.insert(0, loader);
    placeholders.extend(expand(&mut entries, &mut errors));
    entries.remove(0);
    let mut translation = map_entries(entries, file, dialect, &placeholders, warnings, errors);
    if !translation.options.iter().any(|(k, _)| *k == "zerg-server") {
        let socket = default_control_socket(&translation.source.path);
        translation
            .options
            .push(("zerg-server", vec![(socket.display().to_string(), 0)]));
    }
    translation
}

/// Builds the [`Config`] from a uWSGI file's text: [`translate`], then serde and the checks
/// every config gets. All errors are reported together.
pub(crate) fn parse(text: &str, path: &Path, dialect: Dialect) -> Result<Config, ConfigError> {
    let translation = translate(text, path, dialect);
    let mut problems: Vec<String> = translation.errors.iter().map(|e| e.to_string()).collect();
    let fields = translation.options;
    match Config::deserialize(OptionsDeserializer { fields }) {
        Ok(mut config) => {
            config.uwsgi = Some(translation.source);
            config.validated(path, problems)
        }
        Err(e) => {
            problems.push(e.0);
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }
}

/// `<dir>/<stem>.zerg.sock` beside the config file.
pub fn default_control_socket(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "uwsgi".into());
    config
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{stem}.zerg.sock"))
}

/// The file's canonical path, or its absolute one if it cannot be resolved (a name in a test).
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Magic `%x` substitution (uWSGI: `magic_sub`, `config_magic_table_fill`).

/// The file a config was read from, for its `%x` values.
struct Magic {
    /// The path as given (`%o`).
    given: PathBuf,
    /// Canonical (`%p`).
    path: PathBuf,
}

impl Magic {
    /// What `%c` stands for (every character has a value; most are empty, as in uWSGI).
    fn value(&self, c: char) -> String {
        let path = self.path.display().to_string();
        let (dir, name) = match path.rfind('/') {
            Some(i) => (&path[..=i], &path[i + 1..]),
            None => ("", path.as_str()),
        };
        let dir_trimmed = dir.strip_suffix('/').unwrap_or(dir);
        let (stem, ext) = match name.rfind('.') {
            Some(i) => (&name[..i], &name[i + 1..]),
            None => (name, ""),
        };
        match c {
            '%' => "%".into(),
            '(' => "%(".into(),
            'o' | 'O' => self.given.display().to_string(),
            'p' | 'P' => path.clone(),
            'd' | 'D' => dir.into(),
            's' | 'S' => name.into(),
            'n' | 'N' => stem.into(),
            'e' | 'E' => ext.into(),
            'c' | 'C' => dir_trimmed.rsplit('/').next().unwrap_or("").into(),
            'x' | 'X' => String::new(),
            '0'..='9' => {
                let n = c as usize - '0' as usize;
                dir_trimmed
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .nth(n)
                    .unwrap_or("")
                    .into()
            }
            'i' | 'I' => {
                use std::os::unix::fs::MetadataExt;
                std::fs::symlink_metadata(&self.path)
                    .map(|m| m.ino().to_string())
                    .unwrap_or_default()
            }
            'j' | 'J' => {
                // uWSGI: djb33x over the path's bytes (C `char`, signed), its 4 bytes in
                // memory order as upper-case hex.
                let hash = path.bytes().fold(5381u32, |h, b| {
                    (h << 5).wrapping_add(h) ^ (b as i8 as i32 as u32)
                });
                hash.to_le_bytes()
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect()
            }
            'b' => std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            'v' => std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            'h' => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            'k' => std::thread::available_parallelism()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "1".into()),
            't' | 'T' => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                if c == 't' {
                    now.as_secs().to_string()
                } else {
                    now.as_micros().to_string()
                }
            }
            'V' => concat!("zerg-", env!("CARGO_PKG_VERSION")).into(),
            '[' => "\x1b".into(),
            'u' => nix::unistd::getuid().to_string(),
            'U' => {
                let uid = nix::unistd::getuid();
                nix::unistd::User::from_uid(uid)
                    .ok()
                    .flatten()
                    .map_or_else(|| uid.to_string(), |u| u.name)
            }
            'g' => nix::unistd::getgid().to_string(),
            'G' => {
                let gid = nix::unistd::getgid();
                nix::unistd::Group::from_gid(gid)
                    .ok()
                    .flatten()
                    .map_or_else(|| gid.to_string(), |g| g.name)
            }
            _ => String::new(),
        }
    }

    /// One raw line with every `%x` replaced; true if it ends in a lone `%`, which in uWSGI
    /// takes the newline as its `x` (and deletes it).
    fn substitute(&self, line: &str) -> (String, bool) {
        let mut out = String::with_capacity(line.len());
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some(x) => out.push_str(&self.value(x)),
                None => return (out, true),
            }
        }
        (out, false)
    }
}

/// The file's lines after magic substitution, each with the number of the line it starts on.
fn magic_lines(text: &str, magic: &Magic, warnings: &mut Vec<Notice>) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut joining = false;
    for (i, raw) in text.split('\n').enumerate() {
        let (line, joins) = magic.substitute(raw);
        match out.last_mut() {
            Some((_, last)) if joining => last.push_str(&line),
            _ => out.push((i + 1, line)),
        }
        if joins {
            let start = out.last().map_or(i + 1, |(n, _)| *n);
            warnings.push(Notice {
                line: i + 1,
                key: String::new(),
                message: format!(
                    "ends in `%`, which uWSGI reads as joining the next line to it (read as line {start} continued); write `%%` for a percent sign"
                ),
            });
        }
        joining = joins;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The two readers.

#[derive(Default)]
struct Read {
    entries: Vec<Entry>,
    errors: Vec<Notice>,
    warnings: Vec<Notice>,
}

impl Read {
    fn entry(&mut self, key: &str, value: &str, line: usize) {
        let quoted = value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')));
        if quoted {
            self.warnings.push(Notice {
                line,
                key: key.to_owned(),
                message: "the quotes are part of the value, as uWSGI reads it".into(),
            });
        }
        self.entries.push(Entry {
            key: key.to_owned(),
            value: value.to_owned(),
            line,
            placeholder_only: false,
        });
    }

    fn error(&mut self, line: usize, message: String) {
        self.errors.push(Notice {
            line,
            key: String::new(),
            message,
        });
    }
}

const BLANK: [char; 3] = [' ', '\t', '\r'];

/// uWSGI's built-in YAML reader (`core/yaml.c`), with `- item` lists as libyaml gives them.
fn read_yaml(lines: &[(usize, String)]) -> Read {
    let mut read = Read::default();
    let mut inside = false;
    let mut found = false;
    // A `key:` with nothing after it: its `- value` lines follow. (key, line, items so far)
    let mut list: Option<(String, usize, usize)> = None;
    let finish_list = |list: &mut Option<(String, usize, usize)>, read: &mut Read| {
        if let Some((key, line, 0)) = list.take() {
            read.error(
                line,
                format!("`{key}:` has no value (uWSGI's reader ends the section here)"),
            );
        }
    };
    for (n, line) in lines {
        let n = *n;
        let line = match line.find('#') {
            Some(i) => &line[..i],
            None => line.as_str(),
        };
        if line.is_empty() {
            continue;
        }
        let indented = line.starts_with(BLANK);
        if !inside {
            if indented || line.starts_with(['-', '[', '{']) {
                continue;
            }
            if line
                .split_once(':')
                .is_some_and(|(key, _)| key == UWSGI_SECTION)
            {
                inside = true;
                found = true;
            }
            continue;
        }
        if !indented {
            // uWSGI reads no further than the end of the first section.
            break;
        }
        let content = line.trim_start_matches(BLANK);
        if content.trim_end_matches(BLANK).is_empty() {
            continue;
        }
        if let Some(item) = content.strip_prefix('-') {
            if item.is_empty() || item.starts_with(BLANK) {
                match &mut list {
                    Some((key, _, items)) => {
                        *items += 1;
                        let key = key.clone();
                        read.entry(&key, item.trim_matches(BLANK), n);
                    }
                    None => read.error(
                        n,
                        "a `- value` item with no `key:` line above it (uWSGI's reader ends the section here)".into(),
                    ),
                }
                continue;
            }
        }
        finish_list(&mut list, &mut read);
        if content.starts_with(['-', '[', '{']) {
            read.error(
                n,
                format!(
                    "`{}` is not `key: value` (uWSGI's reader ends the section here)",
                    content.trim_end_matches(BLANK)
                ),
            );
            continue;
        }
        let split = content.find(": ").or_else(|| content.find(":\t"));
        match split {
            Some(i) => {
                let key = content[..i].trim_end_matches(BLANK);
                let value = content[i + 2..].trim_matches(BLANK);
                if key.is_empty() {
                    read.error(n, "a value with no key".into());
                } else {
                    read.entry(key, value, n);
                }
            }
            None => {
                let bare = content.trim_end_matches(BLANK);
                match bare.strip_suffix(':') {
                    Some(key) if !key.is_empty() && !key.contains(": ") => {
                        list = Some((key.to_owned(), n, 0))
                    }
                    _ => read.error(
                        n,
                        format!("`{bare}` is not `key: value` (uWSGI's reader ends the section here; a value needs a space after the colon)"),
                    ),
                }
            }
        }
    }
    finish_list(&mut list, &mut read);
    if !found {
        read.error(1, "no top-level `uwsgi:` section".into());
    }
    read
}

/// uWSGI's ini reader (`core/ini.c`): every `[uwsgi]` section, `key = value` lines.
fn read_ini(lines: &[(usize, String)]) -> Read {
    let mut read = Read::default();
    let mut section = String::new();
    let mut found = false;
    for (n, line) in lines {
        let line = line.trim_matches(BLANK);
        if line.is_empty() || line.starts_with([';', '#']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            // uWSGI drops the last character, whatever it is.
            let mut name = name.to_owned();
            name.pop();
            section = name;
            found |= section == UWSGI_SECTION;
            continue;
        }
        if section != UWSGI_SECTION {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = key.trim_end_matches(BLANK);
        if key.is_empty() {
            read.error(*n, "a value with no key before its `=`".into());
            continue;
        }
        read.entry(key, value.trim_matches(BLANK), *n);
    }
    if !found {
        read.error(1, "no `[uwsgi]` section".into());
    }
    read
}

// ---------------------------------------------------------------------------------------------
// Placeholders (uWSGI: `uwsgi_opt_set_placeholder`, `uwsgi_apply_config_pass`,
// `uwsgi_manage_placeholder`).

const SET_KEYS: [&str; 3] = ["set", "set-placeholder", "set-ph"];

/// Adds, after each `set: name=value`, the entry `name` it defines; gives the names too.
fn define_placeholders(
    entries: Vec<Entry>,
    errors: &mut Vec<Notice>,
) -> (Vec<Entry>, HashSet<String>) {
    let mut out = Vec::with_capacity(entries.len());
    let mut names = HashSet::new();
    for entry in entries {
        let defined =
            SET_KEYS
                .contains(&entry.key.as_str())
                .then(|| match entry.value.split_once('=') {
                    Some((name, value)) if !name.is_empty() => Some(Entry {
                        key: name.to_owned(),
                        value: value.to_owned(),
                        line: entry.line,
                        placeholder_only: entry.key != "set",
                    }),
                    _ => {
                        errors.push(Notice {
                            line: entry.line,
                            key: entry.key.clone(),
                            message: format!("`{}` is not NAME=VALUE", entry.value),
                        });
                        None
                    }
                });
        out.push(entry);
        if let Some(defined) = defined.flatten() {
            names.insert(defined.key.clone());
            out.push(defined);
        }
    }
    (out, names)
}

/// Most expansions one value may take, so that `set: a=%(a)` is an error, not a hang.
const MAX_EXPANSIONS: usize = 100;
/// Longest value expansions may build.
const MAX_VALUE: usize = 1 << 20;

/// uWSGI's three passes over every value: `$(ENV)`, `@(file)`, `%(option)`. Gives the names
/// `%(...)` found.
fn expand(entries: &mut [Entry], errors: &mut Vec<Notice>) -> HashSet<String> {
    let mut referenced = HashSet::new();
    let expandable = |e: &Entry| !e.placeholder_only && !SET_KEYS.contains(&e.key.as_str());
    for symbol in ['$', '@', '%'] {
        for i in 0..entries.len() {
            if !expandable(&entries[i]) {
                continue;
            }
            let result = expand_value(&entries[i].value, symbol, |name| match symbol {
                '$' => Ok(env_value(name)),
                '@' => file_value(name).map(Some),
                _ => Ok(reference(entries, name, &mut referenced)),
            });
            match result {
                Ok(value) => entries[i].value = value,
                Err(message) => errors.push(Notice {
                    line: entries[i].line,
                    key: entries[i].key.clone(),
                    message,
                }),
            }
        }
    }
    referenced
}

/// Replaces each `S(name)` (parentheses may nest inside) by what `lookup` gives; one it gives
/// nothing for stays. After a replacement the scan starts over, as uWSGI's does.
fn expand_value(
    value: &str,
    symbol: char,
    mut lookup: impl FnMut(&str) -> Result<Option<String>, String>,
) -> Result<String, String> {
    let mut value = value.to_owned();
    let mut from = 0;
    let mut expansions = 0;
    let open: String = [symbol, '('].iter().collect();
    while let Some(start) = value[from..].find(&open).map(|i| i + from) {
        let body = start + 2;
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in value[body..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = Some(body + i);
                    break;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        let Some(end) = end else { break };
        match lookup(&value[body..end])? {
            Some(found) => {
                expansions += 1;
                if expansions > MAX_EXPANSIONS || value.len() + found.len() > MAX_VALUE {
                    return Err(format!(
                        "`{symbol}(...)` placeholders expand without end (one refers to itself?)"
                    ));
                }
                value.replace_range(start..=end, &found);
                from = 0;
            }
            None => from = body,
        }
    }
    Ok(value)
}

/// `$(NAME)`, `$(NAME:-default)` (unset or empty), `$(NAME-default)` (unset).
fn env_value(name: &str) -> Option<String> {
    if let Some((var, default)) = name.split_once(":-") {
        return Some(
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned()),
        );
    }
    if let Some((var, default)) = name.split_once('-') {
        return Some(std::env::var(var).unwrap_or_else(|_| default.to_owned()));
    }
    std::env::var(name).ok()
}

/// `@(path)`: the file's contents without one trailing newline.
fn file_value(path: &str) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read `@({path})`: {e}");
    let mut bytes = Vec::new();
    // Bounded: `@(/dev/zero)` is an error, not a pool that fills its memory.
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_VALUE as u64 + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() > MAX_VALUE {
        return Err(format!("`@({path})` is larger than {MAX_VALUE} bytes"));
    }
    let mut text = String::from_utf8(bytes).map_err(|_| format!("`@({path})` is not UTF-8"))?;
    if text.ends_with(['\n', '\r']) {
        text.pop();
    }
    Ok(text)
}

/// `%(name)`: the first value of `name`; with spaces, uWSGI's little arithmetic: numbers and
/// names joined, or combined by `+ - * /` (integers), `++`/`--` on what came before.
fn reference(entries: &[Entry], expr: &str, found: &mut HashSet<String>) -> Option<String> {
    let mut lookup = |name: &str| {
        let value = entries
            .iter()
            .find(|e| e.key == name)
            .map(|e| e.value.clone());
        if value.is_some() {
            found.insert(name.to_owned());
        }
        value
    };
    if !expr.contains(' ') {
        return lookup(expr);
    }
    #[derive(Clone, Copy)]
    enum Op {
        Concat,
        Sum,
        Sub,
        Mul,
        Div,
    }
    let number = |s: &str| leading_integer(s);
    let mut op = Op::Concat;
    let mut current: Option<String> = None;
    for token in expr.split(' ').filter(|t| !t.is_empty()) {
        let value = match token {
            "+" => {
                op = Op::Sum;
                continue;
            }
            "-" => {
                op = Op::Sub;
                continue;
            }
            "*" => {
                op = Op::Mul;
                continue;
            }
            "/" => {
                op = Op::Div;
                continue;
            }
            "++" | "--" => {
                if let Some(c) = &current {
                    let step = if token == "++" { 1 } else { -1 };
                    current = Some(number(c).wrapping_add(step).to_string());
                }
                op = Op::Concat;
                continue;
            }
            t if t.bytes().all(|b| b.is_ascii_digit()) => t.to_owned(),
            t => lookup(t).unwrap_or_default(),
        };
        let a = current.as_deref().unwrap_or("");
        let (x, y) = (number(a), number(&value));
        current = Some(match op {
            Op::Concat => format!("{a}{value}"),
            Op::Sum => x.wrapping_add(y).to_string(),
            Op::Sub => x.wrapping_sub(y).to_string(),
            Op::Mul => x.wrapping_mul(y).to_string(),
            Op::Div => x.checked_div(y).unwrap_or(0).to_string(),
        });
    }
    Some(current.unwrap_or_default())
}

/// C's `strtoll(s, NULL, 10)`: the leading integer, 0 if none.
fn leading_integer(s: &str) -> i64 {
    let s = s.trim_start();
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<i64>().map(|n| sign * n).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// From uWSGI's options to zerg's.

/// uWSGI's other names for options zerg has.
const ALIASES: &[(&str, &str)] = &[
    ("home", "virtualenv"),
    ("venv", "virtualenv"),
    ("pyhome", "virtualenv"),
    ("workers", "processes"),
    ("wsgi", "module"),
    ("file", "wsgi-file"),
    ("python-path", "pythonpath"),
    ("pp", "pythonpath"),
    // uWSGI's `http` starts a router in front of the workers, `http-socket` makes the workers
    // speak HTTP themselves; zerg's workers always do.
    ("http-socket", "http"),
    ("uwsgi-socket", "socket"),
    // uWSGI's older name: apps load in the workers (it also reloads them on SIGHUP, which
    // zerg's generations do anyway).
    ("lazy", "lazy-apps"),
];

/// Options zerg has no use for, or does anyway: each is named in one warning, with why.
const IGNORED: &[(&str, &str)] = &[
    (
        "master",
        "zerg always runs a master (the zergling) under its pool",
    ),
    (
        "enable-threads",
        "Python threads are always enabled in zerg",
    ),
    ("thunder-lock", "zerg's workers need no accept lock"),
    (
        "offload-threads",
        "zerg's workers send responses and static files without holding an app thread already",
    ),
    (
        "die-on-term",
        "zerg-pool stops gracefully on SIGTERM (and reloads on SIGHUP) already",
    ),
    (
        "py-call-osafterfork",
        "zerg calls PyOS_AfterFork_Child in every process it forks already",
    ),
    ("memory-report", "zerg has no use for it"),
    (
        "vacuum",
        "zerg-pool removes its socket files at exit already",
    ),
    (
        "single-interpreter",
        "zerg runs one interpreter per process already",
    ),
    (
        "need-app",
        "a generation whose app does not import never serves already",
    ),
    (
        "no-orphans",
        "zerg's processes die with their master already",
    ),
    ("auto-procname", "zerg does not rename its processes"),
    ("procname", "zerg does not rename its processes"),
    ("procname-prefix", "zerg does not rename its processes"),
    (
        "procname-prefix-spaced",
        "zerg does not rename its processes",
    ),
    ("procname-append", "zerg does not rename its processes"),
    ("procname-master", "zerg does not rename its processes"),
    ("plugin", "zerg embeds Python; it has no plugins to load"),
    ("plugins", "zerg embeds Python; it has no plugins to load"),
    (
        "plugins-dir",
        "zerg embeds Python; it has no plugins to load",
    ),
    (
        "http-keepalive",
        "zerg's workers keep HTTP/1.1 connections alive already",
    ),
    (
        "http-auto-chunked",
        "zerg chunks a response that has no Content-Length already",
    ),
    (
        "strict",
        "zerg names every option it does not honour already",
    ),
    (
        "chmod-socket",
        "it applies to `socket`, which zerg does not serve yet",
    ),
    (
        "static-safe",
        "zerg's static-map follows no symlink out of its directory; such a file is left to the app",
    ),
    ("log-master", "zerg's processes write their own log lines"),
    ("log-date", "zerg's log lines carry a timestamp already"),
    ("logdate", "zerg's log lines carry a timestamp already"),
    ("cpu-affinity", "zerg does not pin workers to CPUs"),
];

/// Options whose absence would change what the site gets, and which zerg cannot honour yet:
/// each is an error, so the site does not start without them unnoticed.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("socket", "not supported yet: zerg does not serve the uwsgi protocol yet; serve `http` and point nginx's proxy_pass at it"),
    ("evil-reload-on-rss", "not supported yet: zerg does not recycle workers by memory"),
    ("reload-on-as", "not supported yet: zerg does not recycle workers by memory"),
    ("limit-as", "not supported yet: zerg does not limit a worker's memory"),
    ("mule-reload-mercy", "not supported yet: mules get `worker-reload-mercy`; set that instead"),
    ("touch-reload", "not supported yet: reload with `zergctl reload` or SIGHUP to zerg-pool"),
    ("touch-chain-reload", "not supported yet: chain-reload with `zergctl chain-reload`"),
    ("fs-reload", "not supported yet: reload with `zergctl reload` or SIGHUP to zerg-pool"),
    ("py-autoreload", "not supported yet: reload with `zergctl reload` or SIGHUP to zerg-pool"),
    ("daemonize", "zerg does not daemonize: run it under systemd or supervisord, with `logto` for its log"),
    ("daemonize2", "zerg does not daemonize: run it under systemd or supervisord, with `logto` for its log"),
    ("pidfile2", "not supported: use `pidfile` (zerg-pool writes it before it becomes `uid`)"),
    ("logto2", "not supported: use `logto` (zerg-pool opens it before it becomes `uid`, and hands it down)"),
    ("mount", "not supported yet: zerg serves one app at the root; mount it under a prefix in nginx"),
    ("manage-script-name", "not supported yet: zerg serves one app at the root; mount it under a prefix in nginx"),
    ("check-static", "not supported yet: map the directory with `static-map`"),
    ("static-index", "not supported yet: zerg's static-map serves files, not directory indexes"),
    ("pyargv", "not supported yet: the app's sys.argv cannot be set"),
    ("logger", "not supported yet: zerg logs to stderr or `logto`"),
    ("req-logger", "not supported yet: zerg logs to stderr or `logto`"),
    ("chroot", "not supported yet"),
    ("cron", "not supported yet: run it from cron or a systemd timer"),
    ("unique-cron", "not supported yet: run it from cron or a systemd timer"),
    ("declare-option", "not supported: zerg has no custom options"),
    ("ini", "not supported yet: loading another config from this one; copy its options into this section"),
    ("yaml", "not supported yet: loading another config from this one; copy its options into this section"),
    ("json", "not supported yet: loading another config from this one; copy its options into this section"),
    ("xml", "not supported yet: loading another config from this one; copy its options into this section"),
    ("include", "not supported yet: loading another config from this one; copy its options into this section"),
    ("inherit", "not supported yet: loading another config from this one; copy its options into this section"),
    ("emperor", "not supported: zerg has no emperor; run one zerg-pool per site"),
];

/// Families of uWSGI options, by prefix, that are errors for the same reason.
const UNSUPPORTED_PREFIXES: &[(&str, &str)] = &[
    ("hook-", "not supported yet: zerg runs no hooks"),
    (
        "route",
        "not supported yet: zerg has no internal routing; route in nginx",
    ),
    (
        "response-route",
        "not supported yet: zerg has no internal routing; route in nginx",
    ),
    (
        "final-route",
        "not supported yet: zerg has no internal routing; route in nginx",
    ),
    (
        "error-route",
        "not supported yet: zerg has no internal routing; route in nginx",
    ),
    (
        "cheaper",
        "not supported yet: zerg runs a fixed number of `processes`",
    ),
    (
        "attach-",
        "not supported yet: run the daemon under systemd or supervisord",
    ),
    (
        "smart-attach-",
        "not supported yet: run the daemon under systemd or supervisord",
    ),
    (
        "spooler",
        "not supported yet: zerg has no spooler; use a mule farm",
    ),
    (
        "static-expires",
        "not supported yet: set expiry headers in nginx",
    ),
    (
        "static-gzip",
        "not supported yet: compress static files in nginx",
    ),
    (
        "if",
        "not supported yet: uWSGI's config logic (`if-*`); write the options it would give",
    ),
    (
        "for",
        "not supported yet: uWSGI's config logic (`for`); write the options it would give",
    ),
    (
        "end",
        "not supported yet: uWSGI's config logic; write the options it would give",
    ),
    (
        "else",
        "not supported yet: uWSGI's config logic; write the options it would give",
    ),
    (
        "emperor-",
        "not supported: zerg has no emperor; run one zerg-pool per site",
    ),
    ("legion", "not supported: zerg has no legions"),
    (
        "fastrouter",
        "not supported: zerg has no fastrouter; use nginx",
    ),
    (
        "subscribe",
        "not supported: zerg has no subscription server",
    ),
    ("cache", "not supported yet: zerg has no shared cache"),
];

/// Logic options are whole words, so `for` does not catch `force-cwd`.
fn prefix_matches(key: &str, prefix: &str) -> bool {
    match prefix {
        "if" => key.starts_with("if-") || matches!(key, "ifenv" | "ifexists" | "ifdir"),
        "for" => key == "for" || key.starts_with("for-"),
        "end" => matches!(key, "end" | "endif" | "end-if" | "endfor" | "end-for"),
        "else" => key == "else",
        _ => key.starts_with(prefix),
    }
}

/// What zerg does with one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    /// zerg's option of that name.
    Map(&'static str),
    Ignore(&'static str),
    Unsupported(&'static str),
    Unknown,
}

fn treatment(key: &str, value: &str) -> Treatment {
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, name)| name);
    if let Some(option) = OPTIONS.iter().find(|o| **o == name) {
        return Treatment::Map(option);
    }
    if name == "hook-master-start" {
        // Galaxy's pair: graceful stop on SIGINT and SIGTERM, which is what zerg does.
        let graceful = [
            "unix_signal:2 gracefully_kill_them_all",
            "unix_signal:15 gracefully_kill_them_all",
        ];
        if graceful.contains(
            &value
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .as_str(),
        ) {
            return Treatment::Ignore("zerg-pool stops gracefully on SIGINT and SIGTERM already");
        }
    }
    if let Some((_, why)) = IGNORED.iter().find(|(k, _)| *k == name) {
        return Treatment::Ignore(why);
    }
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == name) {
        return Treatment::Unsupported(why);
    }
    if let Some((_, why)) = UNSUPPORTED_PREFIXES
        .iter()
        .find(|(prefix, _)| prefix_matches(name, prefix))
    {
        return Treatment::Unsupported(why);
    }
    Treatment::Unknown
}

/// The listener options and what they serve.
fn listener_kind(name: &str) -> Option<ListenerKind> {
    match name {
        "http" => Some(ListenerKind::Http),
        "https" => Some(ListenerKind::Https),
        "socket" => Some(ListenerKind::Uwsgi),
        "http-to-https" => Some(ListenerKind::HttpToHttps),
        _ => None,
    }
}

fn canonical_name(key: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, name)| name)
}

/// `address[,extra...]`.
fn split_address(value: &str) -> (String, Vec<String>) {
    let mut parts = value.split(',');
    let address = parts.next().unwrap_or("").trim().to_owned();
    (address, parts.map(|p| p.trim().to_owned()).collect())
}

/// Sorts the entries into zerg's options, warnings and errors.
fn map_entries(
    entries: Vec<Entry>,
    path: PathBuf,
    dialect: Dialect,
    placeholders: &HashSet<String>,
    mut warnings: Vec<Notice>,
    mut errors: Vec<Notice>,
) -> Translation {
    let mut options: Vec<(&'static str, Vec<(String, usize)>)> = Vec::new();
    let mut add = |name: &'static str, value: String, line: usize| match options
        .iter_mut()
        .find(|(k, _)| *k == name)
    {
        Some((_, values)) => values.push((value, line)),
        None => options.push((name, vec![(value, line)])),
    };
    let shared_sockets: Vec<SharedSocket> = entries
        .iter()
        .filter(|e| !e.placeholder_only && e.key == "shared-socket")
        .map(|e| {
            let (address, extra) = split_address(&e.value);
            SharedSocket {
                address,
                extra,
                line: e.line,
            }
        })
        .collect();
    let mut listeners = Vec::new();
    for entry in &entries {
        if entry.placeholder_only || SET_KEYS.contains(&entry.key.as_str()) {
            continue;
        }
        let name = canonical_name(&entry.key);
        let mut value = entry.value.clone();
        if let Some(kind) = listener_kind(name) {
            let (address, extra) = split_address(&entry.value);
            let address = match address.strip_prefix('=') {
                Some(n) => match n
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| shared_sockets.get(i).map(|s| (i, s.address.clone())))
                {
                    Some((index, address)) => ListenerAddress::Shared { index, address },
                    None => {
                        errors.push(Notice {
                            line: entry.line,
                            key: entry.key.clone(),
                            message: format!(
                                "`{address}` names no shared socket (there are {}: `=0` is the first)",
                                shared_sockets.len()
                            ),
                        });
                        continue;
                    }
                },
                None => ListenerAddress::Direct(address),
            };
            // `=N` goes on to the config, which resolves it as zerg's own YAML does.
            if kind == ListenerKind::Https && extra.len() > 2 {
                // uWSGI's `ADDR,CERT,KEY[,CIPHERS[,CLIENT_CA]]`.
                let notice = |message: String| Notice {
                    line: entry.line,
                    key: entry.key.clone(),
                    message,
                };
                if let Some(ciphers) = extra.get(2).filter(|c| !c.is_empty()) {
                    warnings.push(notice(format!(
                        "ignored: the ciphers `{ciphers}`: rustls offers its own (TLS 1.3, and \
                         TLS 1.2 suites with forward secrecy)"
                    )));
                }
                if let Some(ca) = extra.get(3).filter(|c| !c.is_empty()) {
                    errors.push(notice(format!(
                        "not supported yet: client certificates (the CA `{ca}`): zerg asks \
                         clients for none; check them in nginx in front of `http`"
                    )));
                }
                let (written, _) = entry.value.split_once(',').unwrap_or((&entry.value, ""));
                value = format!("{},{},{}", written.trim(), extra[0], extra[1]);
            }
            listeners.push(Listener {
                kind,
                address,
                extra,
                line: entry.line,
            });
        }
        let notice = |message: String| Notice {
            line: entry.line,
            key: entry.key.clone(),
            message,
        };
        if name == "log-format" && !matches!(value.as_str(), "uwsgi" | "json") {
            // uWSGI's value is a format of its own (`%(addr) ... %(status)`).
            warnings.push(notice(
                "zerg writes uWSGI's default request line (or `json`); this format is not followed"
                    .into(),
            ));
            value = "uwsgi".into();
        }
        if name == "disable-logging" {
            continue; // honoured below: it keeps the request log off
        }
        match treatment(&entry.key, &entry.value) {
            Treatment::Map(option) => add(option, value, entry.line),
            Treatment::Ignore(why) => warnings.push(notice(format!("ignored: {why}"))),
            Treatment::Unsupported(why) => errors.push(notice(why.to_owned())),
            // A name `set` defined or `%(...)` used is a placeholder, uWSGI's other use for
            // keys it does not know.
            Treatment::Unknown if placeholders.contains(&entry.key) => {}
            Treatment::Unknown => {
                let hint = closest_option(&entry.key)
                    .map(|o| format!(" (did you mean `{o}`?)"))
                    .unwrap_or_default();
                warnings.push(notice(format!(
                    "ignored: not an option zerg knows{hint}; uWSGI ignores unknown options too, and it stays in uwsgi.opt"
                )));
            }
        }
    }
    // uWSGI logs every request unless `disable-logging` says not to; so does a site read from
    // its file (zerg's own config logs none unless `log-format` asks).
    let logging_disabled = entries.iter().any(|e| {
        !e.placeholder_only
            && canonical_name(&e.key) == "disable-logging"
            && !matches!(e.value.trim(), "false" | "0" | "no" | "off")
    });
    if !logging_disabled && !options.iter().any(|(k, _)| *k == "log-format") {
        options.push(("log-format", vec![("uwsgi".to_owned(), 0)]));
    }
    Translation {
        source: Source {
            path,
            dialect,
            entries,
            warnings,
            shared_sockets,
            listeners,
        },
        options,
        errors,
    }
}

// ---------------------------------------------------------------------------------------------
// serde: zerg's options from uWSGI's strings, so `Config`'s structs stay the one schema.

/// Why the options did not fit [`Config`]; the message names the key and the line.
#[derive(Debug)]
struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}

/// The section as a map from zerg option to its values.
struct OptionsDeserializer {
    fields: Vec<(&'static str, Vec<(String, usize)>)>,
}

impl<'de> de::Deserializer<'de> for OptionsDeserializer {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(Fields {
            fields: self.fields.into_iter(),
            pending: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

struct Fields {
    fields: std::vec::IntoIter<(&'static str, Vec<(String, usize)>)>,
    pending: Option<(&'static str, Vec<(String, usize)>)>,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, values)) = self.fields.next() else {
            return Ok(None);
        };
        self.pending = Some((key, values));
        seed.deserialize(IntoDeserializer::<DeError>::into_deserializer(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, values) = self
            .pending
            .take()
            .ok_or_else(|| DeError("a value with no key".into()))?;
        let line = values.last().map_or(0, |(_, line)| *line);
        seed.deserialize(Values(values)).map_err(|e| {
            if line == 0 {
                DeError(format!("`{key}`: {e}"))
            } else {
                DeError(format!("line {line}: `{key}`: {e}"))
            }
        })
    }
}

/// One option's values: a scalar takes the last (as uWSGI's options do), a list takes all.
struct Values(Vec<(String, usize)>);

impl Values {
    fn last(&self) -> &str {
        self.0.last().map_or("", |(v, _)| v.as_str())
    }

    fn integer<T: std::str::FromStr>(&self) -> Result<T, DeError> {
        let v = self.last();
        v.trim()
            .parse()
            .map_err(|_| DeError(format!("`{v}` is not a whole number in range")))
    }
}

macro_rules! integers {
    ($($method:ident $t:ty => $visit:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            visitor.$visit(self.integer::<$t>()?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Values {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.0.len() == 1 {
            visitor.visit_str(self.last())
        } else {
            self.deserialize_seq(visitor)
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // uWSGI: `uwsgi_opt_true`.
        let v = self.last().trim();
        let off = ["false", "off", "no"]
            .iter()
            .any(|f| v.eq_ignore_ascii_case(f))
            || v == "0";
        visitor.visit_bool(!off)
    }

    integers! {
        deserialize_u8 u8 => visit_u8,
        deserialize_u16 u16 => visit_u16,
        deserialize_u32 u32 => visit_u32,
        deserialize_u64 u64 => visit_u64,
        deserialize_i8 i8 => visit_i8,
        deserialize_i16 i16 => visit_i16,
        deserialize_i32 i32 => visit_i32,
        deserialize_i64 i64 => visit_i64,
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let v = self.last();
        let n: f64 = v
            .trim()
            .parse()
            .map_err(|_| DeError(format!("`{v}` is not a number")))?;
        visitor.visit_f64(n)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items = self.0.into_iter().map(|(v, _)| v);
        let mut seq = de::value::SeqDeserializer::<_, DeError>::new(items);
        let value = visitor.visit_seq(&mut seq)?;
        seq.end()?;
        Ok(value)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(self.last())
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(self.last())
    }

    /// A unit variant named by the value (`log-format: json`).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        use de::IntoDeserializer;
        visitor.visit_enum(self.last().trim().to_owned().into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct tuple tuple_struct map struct
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Translation {
        translate(
            text,
            Path::new("/srv/site/config/galaxy.yml"),
            Dialect::Yaml,
        )
    }

    fn pairs(t: &Translation) -> Vec<(&str, &str)> {
        t.source
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }

    fn option<'a>(t: &'a Translation, name: &str) -> Vec<&'a str> {
        t.options
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.iter().map(|(s, _)| s.as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn repeated_keys_accumulate_in_order_with_their_lines() {
        let t = yaml("uwsgi:\n  static-map: /a=a\n  mule: m.py\n  static-map: /b=b\n");
        assert_eq!(
            pairs(&t),
            vec![
                ("static-map", "/a=a"),
                ("mule", "m.py"),
                ("static-map", "/b=b")
            ]
        );
        assert_eq!(
            t.source.entries.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(option(&t, "static-map"), vec!["/a=a", "/b=b"]);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
    }

    #[test]
    fn values_are_strings_as_uwsgi_reads_them() {
        let t = yaml(concat!(
            "uwsgi:\n",
            "  module: 'pkg.app:make()'\n",
            "  hook-master-start: unix_signal:15 gracefully_kill_them_all\n",
            "  stats: 127.0.0.1:9191      # read by uwsgitop\n",
            "  callable: app#not a comment in YAML, one in uWSGI\n",
            "  env: A=b c \t\n",
            "  env: \n",
            "  master:\ttrue\n",
        ));
        assert_eq!(
            pairs(&t),
            vec![
                ("module", "'pkg.app:make()'"),
                (
                    "hook-master-start",
                    "unix_signal:15 gracefully_kill_them_all"
                ),
                ("stats", "127.0.0.1:9191"),
                ("callable", "app"),
                ("env", "A=b c"),
                ("env", ""),
                ("master", "true"),
            ]
        );
        let quoted: Vec<String> = t.source.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            quoted.contains(
                &"line 2: `module`: the quotes are part of the value, as uWSGI reads it".to_owned()
            ),
            "{quoted:?}"
        );
    }

    #[test]
    fn other_sections_and_comments_are_skipped() {
        let t = yaml(concat!(
            "# a Galaxy config\n",
            "galaxy:\n",
            "  processes: 99\n",
            "  uwsgi: not this\n",
            "uwsgi:\n",
            "  # a comment line\n",
            "\n",
            "  processes: 2\n",
            "    \n",
            "# a comment at column 0 does not end the section\n",
            "  threads: 4\n",
            "galaxy_more:\n",
            "  processes: 7\n",
            "uwsgi:\n",
            "  processes: 8\n",
        ));
        assert_eq!(pairs(&t), vec![("processes", "2"), ("threads", "4")]);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
    }

    #[test]
    fn list_items_give_one_value_each() {
        let t = yaml("uwsgi:\n  mule:\n    - a.py\n    - b.py # two\n  farm: f:1,2\n");
        assert_eq!(
            pairs(&t),
            vec![("mule", "a.py"), ("mule", "b.py"), ("farm", "f:1,2")]
        );
        assert_eq!(t.source.entries[1].line, 4);
        assert!(t.errors.is_empty(), "{:?}", t.errors);
    }

    #[test]
    fn unreadable_lines_name_their_line() {
        let t =
            yaml("uwsgi:\n  master\n  processes:4\n  empty:\n  - \n  [a, b]\n  ok: 1\n  none:\n");
        let errors: Vec<String> = t.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].starts_with("line 2: `master` is not `key: value`"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("line 3: `processes:4` is not"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("line 6: `[a, b]` is not"),
            "{errors:?}"
        );
        assert!(
            errors[3].starts_with("line 8: `none:` has no value"),
            "{errors:?}"
        );
        // `empty:` got one (empty) item, and reading went on past every bad line.
        assert_eq!(pairs(&t), vec![("empty", ""), ("ok", "1")]);
    }

    #[test]
    fn a_file_without_the_section_says_so() {
        let t = yaml("galaxy:\n  a: b\n");
        assert_eq!(
            t.errors[0].to_string(),
            "line 1: no top-level `uwsgi:` section"
        );
    }

    #[test]
    fn magic_placeholders_are_the_files() {
        let t = yaml("uwsgi:\n  a: %d|%p|%s|%n|%e|%c|%x|%%|%0|%1|%Z|%(x)\n");
        assert_eq!(
            t.source.entries[0].value,
            "/srv/site/config/|/srv/site/config/galaxy.yml|galaxy.yml|galaxy|yml|config||%|srv|site||%(x)"
        );
    }

    #[test]
    fn a_trailing_percent_joins_the_next_line() {
        let t = yaml("uwsgi:\n  a: 5%\n  b: c\n  d: e\n");
        assert_eq!(pairs(&t), vec![("a", "5  b: c"), ("d", "e")]);
        assert_eq!(t.source.warnings[0].line, 2);
    }

    #[test]
    fn set_defines_placeholders_and_references_expand() {
        let t = yaml(concat!(
            "uwsgi:\n",
            "  set: root=/srv/galaxy\n",
            "  set-placeholder: n=2\n",
            "  chdir: %(root)/server\n",
            "  processes: %(n + 1)\n",
            "  threads: %(n)%(n)\n",
            "  pythonpath: %(missing)\n",
            "  env: CONF=%(yaml)\n",
        ));
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        assert_eq!(option(&t, "chdir"), vec!["/srv/galaxy/server"]);
        assert_eq!(option(&t, "processes"), vec!["3"]);
        assert_eq!(option(&t, "threads"), vec!["22"]);
        assert_eq!(option(&t, "pythonpath"), vec!["%(missing)"]);
        assert_eq!(option(&t, "env"), vec!["CONF=/srv/site/config/galaxy.yml"]);
        // `set` defines an entry (in uwsgi.opt too); `root` is no option, and no warning.
        assert!(pairs(&t).contains(&("root", "/srv/galaxy")));
        assert!(
            t.source
                .warnings
                .iter()
                .all(|w| w.key != "root" && w.key != "n"),
            "{:?}",
            t.source.warnings
        );
    }

    #[test]
    fn a_key_used_as_a_placeholder_is_not_warned_about() {
        let t = yaml(
            "uwsgi:\n  galaxy_root: /srv/galaxy\n  chdir: %(galaxy_root)/server\n  other: x\n",
        );
        assert_eq!(option(&t, "chdir"), vec!["/srv/galaxy/server"]);
        let keys: Vec<&str> = t.source.warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, vec!["other"]);
    }

    #[test]
    fn zergs_own_yaml_takes_pidfile_logto_and_umask_too() {
        let c = Config::parse(
            "zerg-server: z\nhttp: :1\nmodule: a\npidfile: p.pid\nlogto: l.log\numask: 027\n",
            Path::new("z.yml"),
        )
        .unwrap();
        assert_eq!(c.umask.map(|u| u.0), Some(0o027));
        assert_eq!(c.pidfile, Some(PathBuf::from("p.pid")));
        assert_eq!(c.logto, Some(PathBuf::from("l.log")));
        assert!(c.uwsgi.is_none());
        let err = Config::parse(
            "zerg-server: z\nhttp: :1\nmodule: a\numask: 099\n",
            Path::new("z.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a umask"), "{err}");
    }

    #[test]
    fn set_can_set_an_option() {
        let t = yaml("uwsgi:\n  set: processes=5\n");
        assert_eq!(option(&t, "processes"), vec!["5"]);
    }

    #[test]
    fn self_reference_is_an_error_not_a_hang() {
        let t = yaml("uwsgi:\n  set: a=x%(a)\n  callable: %(a)\n");
        assert!(
            t.errors
                .iter()
                .any(|e| e.line == 3 && e.message.contains("without end")),
            "{:?}",
            t.errors
        );
    }

    #[test]
    fn environment_references_expand() {
        let t = yaml(concat!(
            "uwsgi:\n",
            "  a: $(ZERG_UWSGI_TEST_UNSET_VAR:-fallback)\n",
            "  b: $(ZERG_UWSGI_TEST_UNSET_VAR)\n",
            "  c: $(ZERG_UWSGI_TEST_UNSET_VAR-other)\n",
            "  d: $(PATH)\n",
        ));
        let p = pairs(&t);
        assert_eq!(p[0].1, "fallback");
        assert_eq!(p[1].1, "$(ZERG_UWSGI_TEST_UNSET_VAR)");
        assert_eq!(p[2].1, "other");
        assert_eq!(p[3].1, std::env::var("PATH").unwrap());
    }

    #[test]
    fn ini_sections_accumulate() {
        let t = translate(
            concat!(
                "; comment\n",
                "[uwsgi]\n",
                "http = :8080\n",
                "static-map=/a=a\n",
                "# comment\n",
                "master\n",
                "[other]\n",
                "processes = 9\n",
                "[uwsgi]\n",
                "static-map = /b=b ; not a comment\n",
                "module = %n:app\n",
            ),
            Path::new("/etc/site.ini"),
            Dialect::Ini,
        );
        assert_eq!(
            pairs(&t),
            vec![
                ("http", ":8080"),
                ("static-map", "/a=a"),
                ("master", ""),
                ("static-map", "/b=b ; not a comment"),
                ("module", "site:app"),
            ]
        );
        assert_eq!(t.source.entries[3].line, 10);
    }

    #[test]
    fn detection() {
        let yml = Path::new("galaxy.yml");
        assert_eq!(
            detect("galaxy:\n  a: 1\nuwsgi:\n  b: 2\n", yml),
            Some(Dialect::Yaml)
        );
        assert_eq!(detect("zerg-server: z\nhttp: :1\n", yml), None);
        assert_eq!(
            detect("; c\n\n[uwsgi]\nhttp = :1\n", Path::new("x.cfg")),
            Some(Dialect::Ini)
        );
        assert_eq!(detect("[a, b]\n", yml), None);
        assert_eq!(detect("", Path::new("site.ini")), Some(Dialect::Ini));
    }

    #[test]
    fn options_are_warned_refused_or_mapped() {
        let t = yaml(concat!(
            "uwsgi:\n",
            "  master: true\n",
            "  home: /venv\n",
            "  hook-master-start: unix_signal:2 gracefully_kill_them_all\n",
            "  hook-master-start: exec:/bin/true\n",
            "  touch-reload: /srv/app.ini\n",
            "  procesess: 3\n",
            "  route-host: ^x$ last:\n",
            "  force-cwd: /x\n",
        ));
        let warnings: Vec<String> = t.source.warnings.iter().map(|w| w.to_string()).collect();
        let errors: Vec<String> = t.errors.iter().map(|w| w.to_string()).collect();
        assert_eq!(option(&t, "virtualenv"), vec!["/venv"]);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].starts_with("line 2: `master`: ignored: zerg always runs a master"));
        assert!(warnings[1].starts_with("line 4: `hook-master-start`: ignored:"));
        assert!(
            warnings[2].contains("did you mean `processes`?"),
            "{warnings:?}"
        );
        assert!(warnings[3].starts_with("line 9: `force-cwd`: ignored: not an option"));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("line 5: `hook-master-start`: not supported yet"));
        assert!(errors[1].starts_with("line 6: `touch-reload`: not supported yet"));
        assert!(errors[2].starts_with("line 8: `route-host`: not supported yet"));
    }

    #[test]
    fn shared_socket_references_resolve() {
        let t = yaml(concat!(
            "uwsgi:\n",
            "  shared-socket: 127.0.0.1:8080\n",
            "  shared-socket: :443,c.crt,c.key\n",
            "  http: =0\n",
            "  https: =1,s.crt,s.key\n",
            "  socket: =2\n",
        ));
        assert_eq!(t.source.shared_sockets.len(), 2);
        assert_eq!(t.source.shared_sockets[1].extra, vec!["c.crt", "c.key"]);
        // The config resolves `=N` itself, as in zerg's own YAML.
        assert_eq!(option(&t, "http"), vec!["=0"]);
        assert_eq!(option(&t, "https"), vec!["=1,s.crt,s.key"]);
        assert_eq!(option(&t, "shared-socket").len(), 2);
        let https = &t.source.listeners[1];
        assert_eq!(https.kind, ListenerKind::Https);
        assert_eq!(
            https.address,
            ListenerAddress::Shared {
                index: 1,
                address: ":443".into()
            }
        );
        assert_eq!(https.extra, vec!["s.crt", "s.key"]);
        let errors: Vec<String> = t.errors.iter().map(|w| w.to_string()).collect();
        assert!(
            errors.contains(
                &"line 6: `socket`: `=2` names no shared socket (there are 2: `=0` is the first)"
                    .to_owned()
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn galaxys_https_layout_loads_with_the_shared_sockets_certificate() {
        use crate::config::{ListenAddr, Protocol, TlsFiles};
        let text = concat!(
            "uwsgi:\n",
            "  shared-socket: 127.0.0.1:8080\n",
            "  shared-socket: 127.0.0.1:8443,server.crt,server.key\n",
            "  http: =0\n",
            "  https: =1\n",
            "  module: a\n",
        );
        let c = parse(text, Path::new("/srv/x/site.yml"), Dialect::Yaml).unwrap();
        let https: ListenAddr = ListenAddr::parse("127.0.0.1:8443").unwrap();
        assert_eq!(
            c.listeners(),
            vec![
                (Protocol::Http, ListenAddr::parse("127.0.0.1:8080").unwrap()),
                (Protocol::Https, https.clone()),
            ]
        );
        assert_eq!(
            c.tls_files(&https),
            Some(TlsFiles {
                cert: "server.crt".into(),
                key: "server.key".into()
            })
        );
    }

    #[test]
    fn https_ciphers_are_warned_about_and_a_client_ca_refused() {
        let t = yaml(concat!(
            "uwsgi:\n",
            "  https: :8443,s.crt,s.key,HIGH:!aNULL\n",
            "  https: :9443,s.crt,s.key,,ca.crt\n",
        ));
        assert_eq!(
            option(&t, "https"),
            vec![":8443,s.crt,s.key", ":9443,s.crt,s.key"]
        );
        let warnings: Vec<String> = t.source.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("line 2: `https`: ignored: the ciphers `HIGH:!aNULL`"),
            "{warnings:?}"
        );
        let errors: Vec<String> = t.errors.iter().map(|w| w.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "line 3: `https`: not supported yet: client certificates (the CA `ca.crt`)"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn config_gets_typed_values_and_defaults() {
        let text = concat!(
            "uwsgi:\n",
            "  http: 127.0.0.1:8080\n",
            "  http-socket: 127.0.0.1:8081\n",
            "  wsgi-file: app.py\n",
            "  processes: 2\n",
            "  processes: 3\n",
            "  static-map: /a=a\n",
            "  umask: 027\n",
        );
        let c = parse(text, Path::new("/srv/x/site.yml"), Dialect::Yaml).unwrap();
        assert_eq!(c.processes, 3);
        assert_eq!(c.threads, 1);
        assert_eq!(c.listen_addrs().len(), 2);
        assert_eq!(c.static_map.0, vec!["/a=a"]);
        assert_eq!(c.umask.map(|u| u.0), Some(0o027));
        assert_eq!(c.zerg_server, PathBuf::from("/srv/x/site.zerg.sock"));
        let source = c.uwsgi.unwrap();
        assert_eq!(source.opt()[0], ("yaml".into(), "/srv/x/site.yml".into()));
        assert_eq!(source.opt().len(), 8);
    }

    #[test]
    fn lazy_apps_and_its_old_name_import_in_each_worker() {
        for key in ["lazy-apps", "lazy"] {
            let text = format!("uwsgi:\n  http: :1\n  module: a\n  {key}: true\n");
            let c = parse(&text, Path::new("/srv/x/site.yml"), Dialect::Yaml).unwrap();
            assert!(c.lazy_apps, "{key}");
        }
        let text = "uwsgi:\n  http: :1\n  module: a\n  lazy-apps: false\n";
        let c = parse(text, Path::new("/srv/x/site.yml"), Dialect::Yaml).unwrap();
        assert!(!c.lazy_apps);
    }

    #[test]
    fn zerg_server_in_the_section_names_the_socket() {
        let text = "uwsgi:\n  zerg-server: /run/z.sock\n  http: :1\n  module: a\n";
        let c = parse(text, Path::new("/srv/x/site.yml"), Dialect::Yaml).unwrap();
        assert_eq!(c.zerg_server, PathBuf::from("/run/z.sock"));
    }

    #[test]
    fn uwsgitops_stats_options_are_honoured_and_a_bad_address_names_its_line() {
        let text = "uwsgi:\n  http: :1\n  module: a\n  stats: 127.0.0.1:9191\n  stats-http: true\n";
        let c = parse(text, Path::new("s.yml"), Dialect::Yaml).unwrap();
        assert_eq!(
            c.stats.map(|s| s.0.to_string()),
            Some("127.0.0.1:9191".to_owned())
        );
        assert!(c.stats_http);
        let text = "uwsgi:\n  http: :1\n  module: a\n  stats: nowhere\n";
        let err = parse(text, Path::new("s.yml"), Dialect::Yaml)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 4: `stats`: `nowhere` is neither"),
            "{err}"
        );
    }

    #[test]
    fn bad_numbers_and_problems_are_reported_together() {
        let text = "uwsgi:\n  http: :1\n  module: a\n  touch-reload: /x\n  processes: many\n";
        let err = parse(text, Path::new("/srv/x/site.yml"), Dialect::Yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/srv/x/site.yml"), "{err}");
        assert!(
            err.contains("line 4: `touch-reload`: not supported yet"),
            "{err}"
        );
        assert!(
            err.contains("line 5: `processes`: `many` is not a whole number"),
            "{err}"
        );
        let text = "uwsgi:\n  http: nonsense\n  module: a\n  threads: 0\n";
        let err = parse(text, Path::new("s.yml"), Dialect::Yaml)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nonsense`"), "{err}");
        assert!(err.contains("`threads` must be at least 1"), "{err}");
    }

    #[test]
    fn the_limits_are_read_from_a_uwsgi_file() {
        let text = concat!(
            "uwsgi:\n  http: :1\n  module: a\n  harakiri: 60\n  harakiri-verbose: true\n",
            "  mule-harakiri: 600\n  max-requests: 1000\n  max-requests-delta: 10\n",
            "  reload-on-rss: 512\n  max-worker-lifetime: 3600\n",
        );
        let c = parse(text, Path::new("/srv/x/site.yml"), Dialect::Yaml).unwrap();
        assert_eq!(c.harakiri(), Some(std::time::Duration::from_secs(60)));
        assert!(c.harakiri_verbose);
        assert_eq!(c.mule_harakiri(), Some(std::time::Duration::from_secs(600)));
        assert_eq!(
            (c.max_requests_of(1), c.max_requests_of(3)),
            (Some(1000), Some(1020))
        );
        assert_eq!(c.reload_on_rss_bytes(), Some(512 << 20));
        assert_eq!(
            c.max_worker_lifetime(),
            Some(std::time::Duration::from_secs(3600))
        );
        assert!(c.uwsgi.unwrap().warnings.is_empty());
        for (key, bad) in [
            ("harakiri", "-1"),
            ("mule-harakiri", "soon"),
            ("max-requests", "1k"),
            ("max-requests-delta", "x"),
            ("reload-on-rss", "512M"),
            ("max-worker-lifetime", "1h"),
        ] {
            let text =
                format!("uwsgi:\n  http: :1\n  module: a\n  max-requests: 5\n  {key}: {bad}\n");
            let err = parse(&text, Path::new("s.yml"), Dialect::Yaml)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("line 5: `{key}`")), "{key}: {err}");
        }
    }

    #[test]
    fn a_uwsgi_file_logs_every_request_unless_logging_is_disabled() {
        let translated_config =
            |text: &str| parse(text, Path::new("s.yml"), Dialect::Yaml).unwrap();
        let c = translated_config("uwsgi:\n  http: :1\n  module: a\n");
        assert_eq!(c.log_format, Some(crate::config::LogFormat::Uwsgi));
        for off in ["true", "1"] {
            let text = format!("uwsgi:\n  http: :1\n  module: a\n  disable-logging: {off}\n");
            assert_eq!(translated_config(&text).log_format, None, "{off:?}");
        }
        let text = "uwsgi:\n  http: :1\n  module: a\n  disable-logging: false\n";
        assert_eq!(
            translated_config(text).log_format,
            Some(crate::config::LogFormat::Uwsgi)
        );
    }

    #[test]
    fn a_custom_log_format_becomes_uwsgis_line_with_a_warning() {
        let text = "uwsgi:\n  http: :1\n  module: a\n  log-format: %(addr) %(status)\n";
        let c = parse(text, Path::new("s.yml"), Dialect::Yaml).unwrap();
        assert_eq!(c.log_format, Some(crate::config::LogFormat::Uwsgi));
        let warnings = c.uwsgi.unwrap().warnings;
        assert!(
            warnings[0]
                .to_string()
                .starts_with("line 4: `log-format`: zerg writes uWSGI's"),
            "{warnings:?}"
        );
        let text = "uwsgi:\n  http: :1\n  module: a\n  log-format: json\n";
        let c = parse(text, Path::new("s.yml"), Dialect::Yaml).unwrap();
        assert_eq!(c.log_format, Some(crate::config::LogFormat::Json));
    }

    #[test]
    fn uid_and_gid_name_entries_that_exist() {
        let text = "uwsgi:\n  http: :1\n  module: a\n  uid: 0\n  gid: root\n";
        let c = parse(text, Path::new("/srv/x/site.yml"), Dialect::Yaml).unwrap();
        assert_eq!(c.uid.map(|u| (u.name, u.uid)), Some(("root".into(), 0)));
        assert_eq!(c.gid.map(|g| g.gid), Some(0));
        let text = "uwsgi:\n  http: :1\n  module: a\n  gid: zerg-no-such-group\n";
        let err = parse(text, Path::new("/srv/x/site.yml"), Dialect::Yaml)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 4: `gid`: no group `zerg-no-such-group` on this system"),
            "{err}"
        );
    }

    #[test]
    fn flags_read_as_uwsgi_reads_them() {
        #[derive(Deserialize)]
        struct Flags {
            a: bool,
            b: bool,
            c: bool,
            d: bool,
        }
        let value = |v: &str| vec![(v.to_owned(), 1)];
        let fields = vec![
            ("a", value("true")),
            ("b", value("Off")),
            ("c", value("0")),
            ("d", value("")),
        ];
        let f = Flags::deserialize(OptionsDeserializer { fields }).unwrap();
        assert_eq!((f.a, f.b, f.c, f.d), (true, false, false, true));
    }
}
