//! What the property tests (`tests/fuzz_*.rs`) share: a bounded, seeded proptest config.
//!
//! Each test runs a fixed number of cases from a fixed seed, so CI explores the same inputs
//! every run and stays within its minutes. To fuzz longer or elsewhere:
//! `PROPTEST_CASES=100000 PROPTEST_RNG_SEED=$RANDOM cargo test --test fuzz_config`. A failing
//! case is shrunk and its seed appended to `tests/fuzz-regressions/<test file>.txt`, which
//! proptest replays first on every later run: check that file in, and add the shrunk input
//! as an explicit test beside the property.

#![allow(dead_code)]

use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

/// The seed CI uses when `PROPTEST_RNG_SEED` is not set.
const SEED: u64 = 0x7a65_7267;

/// `cases` cases (unless `PROPTEST_CASES` says otherwise) from the fixed seed (unless
/// `PROPTEST_RNG_SEED` does), failures persisted for the test file `file`.
pub fn config(file: &'static str, cases: u32) -> Config {
    // Config::default() has read the PROPTEST_* variables already.
    let mut config = Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config
}
