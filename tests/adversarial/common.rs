//! What both sides share: the global lock (the revert switches are process-wide), the proptest
//! runner with a fixed seed, the revert guard, and a violation type naming its invariant.

use pay402::__private::reverts::{Fix, set_reverted};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::fmt::Debug;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Every test of this binary takes this lock: the revert switches and the handler log are
/// process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Switches a fix off while alive; switches it back on when dropped (also on panic).
pub(crate) struct Reverted(Fix);

impl Reverted {
    pub(crate) fn new(fix: Fix) -> Self {
        set_reverted(fix, true);
        Self(fix)
    }
}

impl Drop for Reverted {
    fn drop(&mut self) {
        set_reverted(self.0, false);
    }
}

/// Number of generated sequences per side: `PAY402_ADVERSARIAL_CASES`, else `default`.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PAY402_ADVERSARIAL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The 32-byte seed: `PAY402_ADVERSARIAL_SEED` (any text, hashed), else a fixed one.
pub(crate) fn seed() -> (String, [u8; 32]) {
    use sha2::Digest as _;
    let text = std::env::var("PAY402_ADVERSARIAL_SEED").unwrap_or_else(|_| "pay402-adversarial-1".to_owned());
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&digest);
    (text, seed)
}

/// A broken invariant: its tag (`I1`…`I5`, `B1`…`B4`) and what was seen.
#[derive(Clone, Debug)]
pub(crate) struct Violation {
    pub(crate) invariant: &'static str,
    pub(crate) detail: String,
}

impl Violation {
    pub(crate) fn new(invariant: &'static str, detail: impl Into<String>) -> Self {
        Self { invariant, detail: detail.into() }
    }
}

pub(crate) fn render(v: &[Violation]) -> String {
    v.iter().map(|v| format!("[{}] {}", v.invariant, v.detail)).collect::<Vec<_>>().join("\n")
}

/// Runs `cases` generated sequences through `check` with the fixed seed. Returns the minimal
/// failing sequence's violations (after shrinking, at most `shrink` iterations), or `None`.
pub(crate) fn run<S>(
    label: &str,
    cases: u32,
    shrink: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Vec<Violation>,
) -> Option<(String, Vec<Violation>)>
where
    S: Strategy,
    S::Value: Debug + Clone,
{
    let (seed_text, seed) = seed();
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: shrink,
        max_global_rejects: 1_000_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let last = std::cell::RefCell::new(Vec::new());
    let survey = std::env::var_os("PAY402_ADVERSARIAL_SURVEY").is_some();
    let tally = std::cell::RefCell::new(std::collections::BTreeMap::<String, (u32, String)>::new());
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |value| {
        let shown = if survey { format!("{value:?}") } else { String::new() };
        let found = check(value);
        if survey {
            // Survey mode: count every violation by invariant and keep going.
            for v in &found {
                let key = format!("{} {}", v.invariant, shape(&v.detail));
                let example = format!("{}\n           in {shown}", v.detail);
                tally.borrow_mut().entry(key).or_insert((0, example)).0 += 1;
            }
            return Ok(());
        }
        if found.is_empty() {
            Ok(())
        } else {
            let text = render(&found);
            *last.borrow_mut() = found;
            Err(TestCaseError::fail(text))
        }
    });
    let elapsed = started.elapsed();
    if survey {
        println!("{label}: survey of {cases} sequences in {elapsed:.1?}:");
        for (key, (n, example)) in tally.borrow().iter() {
            println!("  {n:6} × {key}\n           e.g. {example}");
        }
    }
    match result {
        Ok(()) => {
            if !survey {
                println!("{label}: {cases} sequences, no violation ({elapsed:.1?}, seed {seed_text:?})");
            }
            None
        }
        Err(TestError::Fail(reason, minimal)) => {
            let text = format!("{minimal:#?}");
            println!(
                "{label}: VIOLATION after {elapsed:.1?} (seed {seed_text:?}; PAY402_ADVERSARIAL_SEED to change it)\n\
                 minimal sequence:\n{text}\nviolations:\n{reason}"
            );
            let found = last.borrow().clone();
            Some((text, found))
        }
        Err(TestError::Abort(reason)) => panic!("{label}: proptest aborted: {reason}"),
    }
}

/// A violation's text with numbers and hex blurred, to tally alike ones together.
fn shape(detail: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for word in detail.split(' ') {
        let blurred = if word.chars().any(|c| c.is_ascii_digit()) { "#" } else { word };
        if blurred == "#" && in_number {
            continue;
        }
        in_number = blurred == "#";
        out.push_str(blurred);
        out.push(' ');
    }
    out.truncate(110);
    out
}
