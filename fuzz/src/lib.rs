//! # mq-fuzz
//!
//! Fuzzing on stable Rust for every decoder of bytes mq did not write
//! itself in this run: records and state files on disk, replies and
//! deliveries from brokers, URLs from users. A target is a decoder plus
//! its property (any input decodes or is refused with the crate's typed
//! error, never a panic and never a hang); the harness feeds it its
//! corpus in `fuzz/corpus/<target>/` as is, then mutations of the corpus
//! and of valid encodings from the real encoder, for a time budget.
//!
//! The budget is `MQ_FUZZ_SECS` seconds per target (2 by default, so the
//! targets run in every `cargo test`; offline runs set it to 600). Runs
//! are repeatable: `MQ_FUZZ_SEED` fixes the random seed, which a failure
//! prints. A case that runs longer than `MQ_FUZZ_HANG_SECS` (10) counts
//! as a hang: its input is saved and the process aborts. A failing input
//! is shrunk and saved under the temp directory's `mq-fuzz/`, to be added
//! to the target's corpus as a regression seed once fixed.

mod corpus;
mod mutate;
mod watchdog;

use std::fmt::Debug;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

pub use proptest;

/// What a decoder did with an input that did not break its property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It decoded.
    Decoded,
    /// It was refused with the decoder's typed error.
    Rejected,
}

/// What a run did.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Cases executed (mutated or generated inputs, not counting the corpus).
    pub cases: u64,
    /// Time spent.
    pub elapsed: Duration,
}

/// Cases per proptest run: the deadline is checked between runs.
const BATCH: u32 = 32;

/// How long each target runs: `MQ_FUZZ_SECS`, else 2 s.
pub fn budget() -> Duration {
    seconds("MQ_FUZZ_SECS").unwrap_or(Duration::from_secs(2))
}

fn seconds(var: &str) -> Option<Duration> {
    let text = std::env::var(var).ok()?;
    let secs: f64 = text
        .parse()
        .unwrap_or_else(|_| panic!("{var}={text:?} is not a number of seconds"));
    Some(Duration::from_secs_f64(secs))
}

fn hang_limit() -> Duration {
    seconds("MQ_FUZZ_HANG_SECS").unwrap_or(Duration::from_secs(10))
}

fn seed() -> u64 {
    match std::env::var("MQ_FUZZ_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("MQ_FUZZ_SEED={text:?} is not a number")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// A byte decoder's target: its corpus plus valid seeds from the real encoder.
pub struct Target {
    name: String,
    seeds: Vec<(String, Vec<u8>)>,
}

impl Target {
    /// The target whose corpus is `fuzz/corpus/<name>/`.
    pub fn new(name: &str) -> Self {
        Target {
            name: name.to_owned(),
            seeds: Vec::new(),
        }
    }

    /// Adds a valid encoding made by the real encoder: it must decode, it
    /// is mutated like the corpus, and `MQ_FUZZ_BLESS=1` writes it to the
    /// corpus as `valid-<name>`.
    pub fn seed(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.seeds.push((name.to_owned(), bytes.into()));
        self
    }

    /// Checks every corpus file and seed as is (`valid-*` files and seeds
    /// must decode), then mutations of them for the budget. `check` returns
    /// an error for a broken property; a panic is one too.
    pub fn run(self, check: impl Fn(&[u8]) -> Result<Outcome, String>) -> Stats {
        corpus::bless(&self.name, &self.seeds);
        let files = corpus::load(&self.name);
        let named = files.iter().chain(&self.seeds);
        for (file, bytes) in named {
            let must_decode = file.starts_with("valid-");
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(bytes)))
                .unwrap_or_else(|_| Err("panicked".to_owned()));
            match outcome {
                Ok(Outcome::Decoded) => {}
                Ok(Outcome::Rejected) if !must_decode => {}
                Ok(Outcome::Rejected) => {
                    panic!("fuzz {}: valid input {file} was refused", self.name)
                }
                Err(why) => panic!("fuzz {}: input {file}: {why}", self.name),
            }
        }
        let pool: Vec<Vec<u8>> = files
            .into_iter()
            .chain(self.seeds)
            .map(|(_, bytes)| bytes)
            .collect();
        explore(
            &self.name,
            mutate::inputs(pool),
            |bytes: &Vec<u8>| bytes.clone(),
            |bytes| check(&bytes).map(|_| ()),
        )
    }
}

/// Inputs made by mutating `pool`, plus some random bytes: for a harness
/// whose input is made of several parts, each mutated on its own (the
/// files of a data directory).
pub fn mutated(pool: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    mutate::inputs(pool)
}

/// Runs `test` on values of `strategy` for the budget; `describe` gives
/// the bytes saved for a failing or hanging input (the input itself for a
/// byte target). Panics, with the shrunk input, when a case fails.
pub fn explore<S>(
    target: &str,
    strategy: S,
    describe: impl Fn(&S::Value) -> Vec<u8>,
    test: impl Fn(S::Value) -> Result<(), String>,
) -> Stats
where
    S: Strategy,
    S::Value: Debug,
{
    let seed = seed();
    let start = Instant::now();
    let deadline = start + budget();
    let watch = watchdog::Watchdog::start(target, hang_limit());
    let mut cases = 0u64;
    for batch in 0u64.. {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&batch.to_le_bytes());
        let config = Config {
            cases: BATCH,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
        let result = runner.run(&strategy, |value| {
            let _case = watch.enter(describe(&value));
            test(value).map_err(TestCaseError::fail)
        });
        match result {
            Ok(()) => cases += u64::from(BATCH),
            Err(TestError::Fail(why, value)) => {
                drop(watch);
                let saved = corpus::save_crash(target, &describe(&value));
                panic!(
                    "fuzz {target}: {why}\ninput (shrunk), saved to {}: {value:?}\n\
                     repeat with MQ_FUZZ_SEED={seed}",
                    saved.display()
                );
            }
            Err(TestError::Abort(why)) => panic!("fuzz {target}: aborted: {why}"),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let stats = Stats {
        cases,
        elapsed: start.elapsed(),
    };
    eprintln!(
        "fuzz {target}: {} cases in {:.1} s (seed {seed})",
        stats.cases,
        stats.elapsed.as_secs_f64()
    );
    stats
}
