//! Locating and running the third-party peers of the interop tests (included by
//! `tests/interop_python.rs` and `tests/interop_node.rs` with `#[path]`).
//!
//! The peers are installed by `scripts/install-test-deps.sh` under `PAY402_DEPS_DIR` (default
//! `<repo>/.test-deps`): OKX's Python SDK in `venv/` (scripts/deps/40-python-peers.sh) and the
//! official Node x402 client in `node-peers/node_modules/` (scripts/deps/41-node-peers.sh). A
//! missing peer fails the test with the install command; it is never skipped.
#![allow(dead_code)] // each test file uses a subset

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The repository root (the root crate's manifest directory).
pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `PAY402_DEPS_DIR`, or `<repo>/.test-deps`.
pub(crate) fn deps_dir() -> PathBuf {
    std::env::var_os("PAY402_DEPS_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| repo().join(".test-deps"), PathBuf::from)
}

/// A peer script in `tests/interop/<dir>/<name>`.
pub(crate) fn script(dir: &str, name: &str) -> PathBuf {
    let path = repo().join("tests/interop").join(dir).join(name);
    assert!(path.is_file(), "peer script {} is missing", path.display());
    path
}

/// The venv's Python with OKX's packages; panics (test failure) naming the install script when
/// the venv is missing.
pub(crate) fn venv_python() -> PathBuf {
    let python = deps_dir().join("venv/bin/python");
    assert!(
        python.is_file(),
        "the Python peers are not installed: {} is missing. Install them with \
         `bash scripts/install-test-deps.sh` (scripts/deps/40-python-peers.sh; PAY402_DEPS_DIR={})",
        python.display(),
        deps_dir().display()
    );
    python
}

/// `node` on PATH and the Node peers' `node_modules`; panics (test failure) naming the install
/// script when either is missing.
pub(crate) fn node_and_modules() -> (PathBuf, PathBuf) {
    let modules = deps_dir().join("node-peers/node_modules");
    assert!(
        modules.join("@x402/fetch/package.json").is_file(),
        "the Node peers are not installed: {} has no @x402/fetch. Install them with \
         `bash scripts/install-test-deps.sh` (scripts/deps/41-node-peers.sh; PAY402_DEPS_DIR={})",
        modules.display(),
        deps_dir().display()
    );
    let node = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("node"))
        .find(|n| n.is_file())
        .unwrap_or_else(|| {
            panic!("`node` is not on PATH: install Node.js (scripts/deps/41-node-peers.sh needs it too)")
        });
    (node, modules)
}

/// How long a peer process may run before the test fails.
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// The output of a finished peer process.
pub(crate) struct PeerOutput {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl PeerOutput {
    /// The last stdout line as JSON; panics with both streams when the process failed or did
    /// not print JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        assert!(self.success, "peer failed\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        let last = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!("peer printed no JSON ({e})\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
        })
    }
}

/// Runs `program args…` with `env` added, without blocking the async runtime (the in-test
/// servers run on it), killing it after [`PEER_TIMEOUT`].
pub(crate) async fn run(program: &Path, args: &[&str], env: &[(&str, &Path)]) -> PeerOutput {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).current_dir(repo()).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(PEER_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish within {PEER_TIMEOUT:?}", program.display()))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    PeerOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a Python peer script from `tests/interop/python/` in the venv.
pub(crate) async fn python(name: &str, args: &[&str]) -> PeerOutput {
    let python = venv_python();
    let script = script("python", name);
    let script = script.to_str().expect("UTF-8 path");
    let mut all = vec![script];
    all.extend_from_slice(args);
    run(&python, &all, &[]).await
}

/// Runs a Node peer script from `tests/interop/node/` against the installed `node_modules`.
pub(crate) async fn node(name: &str, args: &[&str]) -> PeerOutput {
    let (node, modules) = node_and_modules();
    let script = script("node", name);
    let script = script.to_str().expect("UTF-8 path");
    let mut all = vec![script];
    all.extend_from_slice(args);
    run(&node, &all, &[("NODE_PATH", &modules)]).await
}
