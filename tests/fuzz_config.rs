//! Fuzzing the config loader: whatever text or bytes an operator's file holds, `Config::load`
//! gives a config or one clean error naming the file; it never panics, hangs or blows up.

mod fuzzing;

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use zerg::config::{Config, ConfigError, OPTIONS};

/// A config that sets every option (each to a value that passes validation).
const FULL: &str = "\
zerg-server: /run/zerg/zerg.sock
http:
  - 127.0.0.1:8080
  - :8081
  - '[::1]:8082'
  - /run/zerg/http.sock
module: galaxy.webapps.galaxy.buildapp:uwsgi_app()
callable: application
lazy-apps: true
pythonpath: [lib, /srv/galaxy/lib]
virtualenv: /srv/galaxy/venv
chdir: /srv/galaxy
processes: 4
threads: 8
post-buffering: 65536
busy-yield-us: 200
header-timeout: 30
listen: 1024
mule:
  - lib/galaxy/main.py
  - lib/galaxy/main.py
  - module: galaxy.main
    args: -c config/galaxy.yml --server-name handler_%(position) --attach-to-pool job-handlers
    env: {GALAXY_CONFIG_FILE: config/galaxy.yml, IS_WEBAPP: ~}
farm: job-handlers:1,2
locks: 2
static-map:
  - /static=static
  - /favicon.ico=static/favicon.ico
env:
  - GALAXY_CONFIG_FILE=config/galaxy.yml
  - PYTHONHASHSEED=0
worker-env: GUNICORN_WORKER_ID=%(worker)
zergling: /opt/zerg/bin/zergling --verbose
reload-mercy: 60
worker-reload-mercy: 30
ready-timeout: 120
health-check: /api/version
";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("fuzz.yml"))
}

/// What must hold of any outcome: an error names the file and says something; a config that
/// loads passes its own checks, and every accessor answers.
fn check(outcome: Result<Config, ConfigError>) -> Result<(), TestCaseError> {
    match outcome {
        Err(e) => {
            let message = e.to_string();
            prop_assert!(message.contains("fuzz.yml"), "{message}");
            prop_assert!(message.len() > "config fuzz.yml: ".len(), "{message}");
        }
        Ok(c) => {
            prop_assert!(!c.listen_addrs().is_empty());
            prop_assert!(c.processes >= 1 && c.threads >= 1);
            let farms = c.farms();
            prop_assert!(farms.is_ok(), "{farms:?}");
            let _ = (c.static_maps(), c.zergling_command(), c.header_timeout());
            let _ = (c.reload_mercy(), c.worker_reload_mercy(), c.ready_timeout());
        }
    }
    Ok(())
}

/// Text a YAML file might hold: its punctuation, keys, numbers and plain words, in any order.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(OPTIONS).prop_map(|o| format!("{o}: ")),
        4 => prop::sample::select(vec![
            "\n", "\n  ", "\n  - ", ": ", "- ", "[", "]", "{", "}", ",", "'", "\"", "&a ", "*a",
            "!!str ", "!!binary ", "|\n  ", ">\n  ", "# ", "---\n", "...\n", "? ", "<<: ", "~",
            "\t", "%YAML 1.2\n", "\\", "\u{feff}", "\0", "\r\n",
        ]).prop_map(str::to_owned),
        3 => "[a-z0-9./:_=-]{0,12}",
        2 => any::<u64>().prop_map(|n| n.to_string()),
        1 => "-?[0-9]{1,30}(\\.[0-9]*)?(e[0-9]+)?",
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// One change to a text: cut a stretch, insert something, or repeat a line.
#[derive(Debug, Clone)]
enum Mutation {
    Cut { at: usize, len: usize },
    Insert { at: usize, text: String },
    RepeatLine { line: usize },
    SwapLines { a: usize, b: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(at, len)| Mutation::Cut { at, len }),
        (any::<usize>(), yamlish()).prop_map(|(at, text)| Mutation::Insert { at, text }),
        any::<usize>().prop_map(|line| Mutation::RepeatLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

/// The nearest char boundary at or before `at % (len + 1)`.
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, m: &Mutation) {
    match m {
        Mutation::Cut { at, len } => {
            let start = boundary(text, *at);
            let end = boundary(text, start + len);
            if end > start {
                text.replace_range(start..end, "");
            }
        }
        Mutation::Insert { at, text: t } => {
            let at = boundary(text, *at);
            text.insert_str(at, t);
        }
        Mutation::RepeatLine { line } => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let i = line % lines.len();
                lines.insert(i, lines[i]);
                *text = lines.join("\n");
            }
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let n = lines.len();
                lines.swap(a % n, b % n);
                *text = lines.join("\n");
            }
        }
    }
}

proptest! {
    #![proptest_config(fuzzing::config("tests/fuzz-regressions/fuzz_config.txt", 1024))]

    #[test]
    fn any_text_loads_or_fails_cleanly(text in any::<String>()) {
        check(parse(&text))?;
    }

    #[test]
    fn yaml_shaped_text_loads_or_fails_cleanly(text in yamlish()) {
        check(parse(&text))?;
    }

    #[test]
    fn a_valid_config_mutated_loads_or_fails_cleanly(
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut text = FULL.to_owned();
        for m in &mutations {
            apply(&mut text, m);
        }
        check(parse(&text))?;
    }

    #[test]
    fn any_option_with_any_value_loads_or_fails_cleanly(
        values in prop::collection::vec((prop::sample::select(OPTIONS), yamlish()), 1..8),
    ) {
        // The options every config needs first, so validation runs on the rest.
        let mut text = String::from("zerg-server: z.sock\nhttp: :8000\n");
        for (key, value) in &values {
            text.push_str(&format!("{key}: {value}\n"));
        }
        check(parse(&text))?;
    }

    #[test]
    fn any_bytes_in_the_file_load_or_fail_cleanly(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.yml");
        std::fs::write(&path, &bytes).unwrap();
        check(Config::load(&path))?;
    }
}

#[test]
fn the_full_config_is_valid() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.listen_addrs().len(), 4);
    assert_eq!(c.farms().unwrap()[0].mules, vec![1, 2]);
}

#[test]
fn alias_bombs_are_refused_quickly() {
    // "Billion laughs": each alias repeats the last line's list ten times over.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    text.push_str("zerg-server: z\nhttp: :1\nmodule: a\nenv: *a11\n");
    let start = Instant::now();
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.contains("fuzz.yml"), "{err}");
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    // The YAML scanner takes time quadratic in the depth of flow collections (10k levels:
    // ~0.2 s in a debug build, 100k: ~40 s), so this stays at a depth no real file has.
    for open in ["[", "{a: ", "- "] {
        let text = format!("env: {}", open.repeat(10_000));
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("fuzz.yml"), "{err}");
    }
}
