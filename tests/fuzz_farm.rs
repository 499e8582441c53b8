//! Fuzzing farm and mule messages end to end: arbitrary bytes sent with `uwsgi.farm_msg` and
//! `uwsgi.mule_msg` from a web worker reach the mule whole, once each and in order, from empty
//! to the 64 KiB limit; one byte more is refused with an error the app sees, never cut or
//! split. (The queues are SOCK_SEQPACKET: the kernel keeps each message's bounds, and the
//! "message in hand" record holds it while the mule works; tests/fuzz_control.rs fuzzes the
//! record itself.)
//!
//! Deterministic: the messages come from a fixed seed. `ZERG_FUZZ_CASES` (default 200 per
//! queue) and `ZERG_FUZZ_SEED` send more or other ones.

mod common;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use common::{wait_for, Client, Server};
use zerg::mule_record::MAX_MESSAGE;

/// The seed CI uses when `ZERG_FUZZ_SEED` is not set.
const SEED: u64 = 0x6661_726d;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A message: mostly small, some large, and the sizes at the limit.
fn message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..256),
        2 => prop::collection::vec(any::<u8>(), 256..8192),
        1 => prop::sample::select(vec![0, 1, MAX_MESSAGE - 1, MAX_MESSAGE, MAX_MESSAGE + 1])
            .prop_flat_map(|n| prop::collection::vec(any::<u8>(), n..=n)),
    ]
}

/// The messages the mule recorded so far, in the order it took them.
fn recorded(path: &std::path::Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        if rest.len() < 4 + len {
            break; // still being written
        }
        out.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    out
}

/// POSTs `msg` to `path`; the status says whether it was queued.
fn post(c: &mut Client, path: &str, msg: &[u8]) -> u16 {
    // One write: a head and a body written apart wait out the peer's delayed ACK (Nagle).
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        msg.len()
    )
    .into_bytes();
    request.extend_from_slice(msg);
    c.send_bytes(&request);
    c.response().status
}

#[test]
fn farm_and_mule_messages_of_any_bytes_arrive_whole_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let apps = common::apps_dir().join("farm_echo");
    let server = Server::start(
        "farm_echo/app.py",
        &format!(
            "mule: {}\nfarm: echo:1\nenv: FARM_ECHO_RECORD={}\n",
            apps.join("mule.py").display(),
            record.display()
        ),
    );
    let cases = env_number("ZERG_FUZZ_CASES", 200);
    let seed = env_number("ZERG_FUZZ_SEED", SEED);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let strategy = message();

    let mut c = Client::connect(server.http);
    let mut expected: Vec<Vec<u8>> = Vec::new();
    // One queue after the other: the mule reads both, so only each one's order is defined.
    for path in ["/farm", "/mule"] {
        for n in 0..cases {
            let msg = strategy.new_tree(&mut runner).unwrap().current();
            loop {
                match post(&mut c, path, &msg) {
                    200 => break,
                    // Full (the kernel caps a queue's buffer): once the mule has taken all
                    // that was sent, there is room again.
                    503 => {
                        wait_for("the mule to catch up", || {
                            (recorded(&record).len() == expected.len()).then_some(())
                        });
                    }
                    413 => {
                        assert!(
                            msg.len() > MAX_MESSAGE,
                            "{path} #{n}: {} refused",
                            msg.len()
                        );
                        break;
                    }
                    other => panic!("{path} #{n} ({} bytes): status {other}", msg.len()),
                }
            }
            if msg.len() <= MAX_MESSAGE {
                expected.push(msg);
            }
        }
        wait_for(&format!("every {path} message taken"), || {
            (recorded(&record).len() >= expected.len()).then_some(())
        });
        let got = recorded(&record);
        assert_eq!(
            got.len(),
            expected.len(),
            "{path}: a message more (seed {seed})"
        );
        for (i, (got, sent)) in got.iter().zip(&expected).enumerate() {
            assert!(
                got == sent,
                "{path}: message {i} of {} bytes came as {} bytes (seed {seed})",
                sent.len(),
                got.len()
            );
        }
    }
    assert!(!server.log_text().contains("panicked"));
}
