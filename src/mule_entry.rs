//! What one `mule` entry runs: a Python file, a module, a callable or a console script,
//! with its arguments and its own environment.
//!
//! A string is what it always was: `handler.py` runs the file as `__main__`,
//! `pkg.mod:callable` calls it, and `pkg.mod` runs the module as `python -m pkg.mod` would.
//! A mapping says more, for a program that expects a command line, such as Galaxy's job
//! handlers (`galaxy-main -c galaxy.yml --server-name handler_1 --attach-to-pool ...`):
//!
//! ```yaml
//! mule:
//!   - module: galaxy.main            # or `script: galaxy-main`, `file: ...`, `module: pkg:func`
//!     args: -c galaxy.yml --server-name handler_%(position) --attach-to-pool job-handlers
//!     env:
//!       GALAXY_LOG: handler_%(position).log
//!       IS_WEBAPP: ~                 # removed from this mule's environment
//! ```
//!
//! `%(position)` in `args` and `env` values is the mule's position (from 1, uWSGI's
//! `mule_id()`). `args` is a list, or a string split as a shell splits words (quotes and
//! backslashes, nothing expanded).

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The placeholder for a mule's position in its `args` and `env`.
pub const POSITION: &str = "%(position)";

/// What a mule runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A Python file, run as `__main__` (`file: x.py`, or a string ending in `.py`).
    File(String),
    /// A module run as `__main__`, as `python -m` runs it.
    Module(String),
    /// `pkg.mod:callable`: the callable, called with no arguments (an entry point's form).
    Callable { module: String, callable: String },
    /// A console script of the app's environment, by name: its entry point is called.
    Script(String),
}

impl Program {
    /// A `module:` value or a string entry that is no file: `pkg.mod` or `pkg.mod:callable`.
    fn module(spec: &str) -> Program {
        match spec.split_once(':') {
            Some((module, callable)) => Program::Callable {
                module: module.to_owned(),
                callable: callable.to_owned(),
            },
            None => Program::Module(spec.to_owned()),
        }
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Program::File(path) => write!(f, "{path}"),
            Program::Module(module) => write!(f, "-m {module}"),
            Program::Callable { module, callable } => write!(f, "{module}:{callable}"),
            Program::Script(name) => write!(f, "{name}"),
        }
    }
}

/// One `mule` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuleEntry {
    pub program: Program,
    /// `sys.argv[1:]`, `%(position)` not yet replaced.
    pub args: Vec<String>,
    /// Set (or, for `None`, removed) in the mule before its code runs, `%(position)` not yet
    /// replaced; in config order.
    pub env: Vec<(String, Option<String>)>,
}

impl MuleEntry {
    /// The string form: what `mule: X` always meant.
    pub fn from_string(entry: &str) -> MuleEntry {
        let entry = entry.trim();
        let program = if entry.ends_with(".py") {
            Program::File(entry.to_owned())
        } else {
            Program::module(entry)
        };
        MuleEntry {
            program,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `args` with the mule's position in place of `%(position)`.
    pub fn args_for(&self, position: u32) -> Vec<String> {
        self.args.iter().map(|a| at(a, position)).collect()
    }

    /// `env` with the mule's position in place of `%(position)`.
    pub fn env_for(&self, position: u32) -> Vec<(String, Option<String>)> {
        self.env
            .iter()
            .map(|(k, v)| (k.clone(), v.as_deref().map(|v| at(v, position))))
            .collect()
    }

    /// What is wrong with the entry, each problem one line (checked at load).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let empty = match &self.program {
            Program::File(p) | Program::Module(p) | Program::Script(p) => p.trim().is_empty(),
            Program::Callable { module, callable } => module.is_empty() || callable.is_empty(),
        };
        if empty {
            problems.push(format!("`mule`: `{}` names nothing to run", self.program));
        }
        for (name, _) in &self.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                problems.push(format!(
                    "`mule`: `{name}` in the `env` of `{}` is not a variable name",
                    self.program
                ));
            }
        }
        problems
    }
}

fn at(text: &str, position: u32) -> String {
    text.replace(POSITION, &position.to_string())
}

/// `mule`: one entry or a list of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MuleList(pub Vec<MuleEntry>);

impl<'de> Deserialize<'de> for MuleList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MuleList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mule entry (a string or a mapping) or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MuleList, E> {
                Ok(MuleList(vec![MuleEntry::from_string(v)]))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MuleList, E> {
                Ok(MuleList::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MuleList, A::Error> {
                let entry = MuleEntry::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(MuleList(vec![entry]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MuleList, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = seq.next_element::<MuleEntry>()? {
                    out.push(entry);
                }
                Ok(MuleList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The mapping form's keys, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mapping {
    /// `pkg.mod` (run as `python -m` runs it) or `pkg.mod:callable`.
    #[serde(default)]
    module: Option<String>,
    /// A console script's name.
    #[serde(default)]
    script: Option<String>,
    /// A Python file, run as `__main__`.
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    args: Option<Args>,
    #[serde(default)]
    env: Option<Env>,
}

impl<'de> Deserialize<'de> for MuleEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MuleEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a mule entry: `handler.py`, `pkg.mod`, `pkg.mod:callable`, or a mapping \
                     with one of `module`, `script`, `file` and optional `args` and `env`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MuleEntry, E> {
                Ok(MuleEntry::from_string(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MuleEntry, A::Error> {
                let m = Mapping::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let program = match (m.module, m.script, m.file) {
                    (Some(module), None, None) => Program::module(module.trim()),
                    (None, Some(script), None) => Program::Script(script.trim().to_owned()),
                    (None, None, Some(file)) => Program::File(file.trim().to_owned()),
                    _ => {
                        return Err(de::Error::custom(
                            "a mule mapping names exactly one of `module`, `script` or `file`",
                        ))
                    }
                };
                Ok(MuleEntry {
                    program,
                    args: m.args.map(|a| a.0).unwrap_or_default(),
                    env: m.env.map(|e| e.0).unwrap_or_default(),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `args`: a list, or one string split into words as a shell would (no expansion).
struct Args(Vec<String>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Args;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("arguments: a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Args, E> {
                split_words(v).map(Args).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Args, E> {
                Ok(Args(vec![v.to_string()]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Args, E> {
                Ok(Args(vec![v.to_string()]))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Args, E> {
                Ok(Args(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut out = Vec::new();
                while let Some(word) = seq.next_element::<Word>()? {
                    out.push(word.0);
                }
                Ok(Args(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// One argument: a string, or a number or boolean written bare (`- 8080`).
struct Word(String);

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Word;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Word, E> {
                Ok(Word(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Word, E> {
                Ok(Word(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Word, E> {
                Ok(Word(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Word, E> {
                Ok(Word(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Word, E> {
                Ok(Word(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `env`: a mapping (a null value removes the variable) or a list of `NAME=VALUE`.
struct Env(Vec<(String, Option<String>)>);

impl<'de> Deserialize<'de> for Env {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Env;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of NAME: value, or a list of NAME=VALUE")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Env, E> {
                name_value(v).map(|kv| Env(vec![kv])).map_err(E::custom)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Env, E> {
                Ok(Env(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Env, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<Word>()? {
                    out.push(name_value(&item.0).map_err(de::Error::custom)?);
                }
                Ok(Env(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Env, A::Error> {
                let mut out = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Option<Word>>()? {
                    out.push((name, value.map(|w| w.0)));
                }
                Ok(Env(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn name_value(item: &str) -> Result<(String, Option<String>), String> {
    match item.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), Some(value.to_owned()))),
        _ => Err(format!("`{item}` is not NAME=VALUE")),
    }
}

/// Splits `line` into words as a POSIX shell does, without expanding anything: white space
/// separates, `'...'` is literal, `"..."` keeps `\"` and `\\` as escapes, `\` escapes the
/// next character elsewhere.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(format!("`{line}`: a ' is not closed")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(format!("`{line}`: a \" is not closed")),
                        },
                        Some(c) => w.push(c),
                        None => return Err(format!("`{line}`: a \" is not closed")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("`{line}` ends with a lone \\")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mules(yaml: &str) -> Result<Vec<MuleEntry>, String> {
        serde_yaml::from_str::<MuleList>(yaml)
            .map(|l| l.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn strings_mean_what_they_always_meant() {
        let got = mules("[lib/galaxy/main.py, jobs.handler:run, jobs.handler]").unwrap();
        let programs: Vec<Program> = got.into_iter().map(|m| m.program).collect();
        assert_eq!(
            programs,
            vec![
                Program::File("lib/galaxy/main.py".into()),
                Program::Callable {
                    module: "jobs.handler".into(),
                    callable: "run".into()
                },
                Program::Module("jobs.handler".into()),
            ]
        );
        assert_eq!(mules("handler.py").unwrap().len(), 1);
    }

    #[test]
    fn a_mapping_runs_a_program_with_arguments_and_its_own_environment() {
        let got = mules(concat!(
            "- module: galaxy.main\n",
            "  args: -c galaxy.yml --server-name handler_%(position) --attach-to-pool 'job handlers'\n",
            "  env:\n",
            "    LOG: h%(position).log\n",
            "    IS_WEBAPP: ~\n",
            "- script: galaxy-main\n",
            "  args: [--server-name, 'handler_%(position)', 8080]\n",
            "  env: [A=1, B=x=y]\n",
            "- file: handler.py\n",
        ))
        .unwrap();
        assert_eq!(got[0].program, Program::Module("galaxy.main".into()));
        assert_eq!(
            got[0].args_for(2),
            vec![
                "-c",
                "galaxy.yml",
                "--server-name",
                "handler_2",
                "--attach-to-pool",
                "job handlers"
            ]
        );
        assert_eq!(
            got[0].env_for(2),
            vec![
                ("LOG".to_owned(), Some("h2.log".to_owned())),
                ("IS_WEBAPP".to_owned(), None)
            ]
        );
        assert_eq!(got[1].program, Program::Script("galaxy-main".into()));
        assert_eq!(
            got[1].args_for(1),
            vec!["--server-name", "handler_1", "8080"]
        );
        assert_eq!(
            got[1].env,
            vec![
                ("A".to_owned(), Some("1".to_owned())),
                ("B".to_owned(), Some("x=y".to_owned()))
            ]
        );
        assert_eq!(got[2].program, Program::File("handler.py".into()));
        assert!(got.iter().all(|m| m.problems().is_empty()));
    }

    #[test]
    fn a_mapping_names_one_program_and_only_known_keys() {
        let err = mules("- module: a\n  script: b\n").unwrap_err();
        assert!(
            err.contains("exactly one of `module`, `script` or `file`"),
            "{err}"
        );
        let err = mules("- args: x\n").unwrap_err();
        assert!(err.contains("exactly one of"), "{err}");
        let err = mules("- module: a\n  argv: x\n").unwrap_err();
        assert!(err.contains("unknown field `argv`"), "{err}");
        let err = mules("- module: a\n  env: [NOPE]\n").unwrap_err();
        assert!(err.contains("`NOPE` is not NAME=VALUE"), "{err}");
        let err = mules("- module: a\n  args: \"-c 'x\"\n").unwrap_err();
        assert!(err.contains("is not closed"), "{err}");
        let m = mules("- script: ' '\n").unwrap();
        assert_eq!(m[0].problems().len(), 1, "{:?}", m[0].problems());
    }

    #[test]
    fn words_split_as_a_shell_splits_them() {
        let split = |s: &str| split_words(s).unwrap();
        assert_eq!(split("  a  b\tc "), vec!["a", "b", "c"]);
        assert_eq!(
            split(r#"'a b' "c \"d\"" e\ f"#),
            vec!["a b", r#"c "d""#, "e f"]
        );
        assert_eq!(split(r#"x'y'"z" '' "#), vec!["xyz", ""]);
        assert_eq!(split(r#""a\nb""#), vec![r"a\nb"]);
        assert!(split_words("a\\").is_err());
    }
}
