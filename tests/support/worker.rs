//! Seller worker processes for the multi-process tests: the test binary re-executed to run one
//! `#[test]` (the worker role, selected by environment variables) that serves HTTP and prints
//! [`PORT_LINE`] + its port.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The line a worker prints once it listens.
pub(crate) const PORT_LINE: &str = "PAY402_WORKER_PORT=";

/// Announces a worker's port to its parent ([`Worker::spawn`] waits for it).
pub(crate) fn announce_port(port: u16) {
    println!("{PORT_LINE}{port}");
    std::io::stdout().flush().expect("flush");
}

/// A worker process, killed on drop.
pub(crate) struct Worker {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub(crate) base: String,
}

impl Worker {
    /// Runs the test `role_test` of this test binary with `env` set, and waits (60 s at most)
    /// for the port it announces.
    pub(crate) fn spawn(role_test: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args(["--exact", role_test, "--nocapture", "--test-threads=1"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn worker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the port line, then keeps draining stdout so the worker never blocks on it.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print `test <role> ... ` first on the same line.
                if !sent && let Some(at) = line.find(PORT_LINE) {
                    let _ = tx.send(line[at + PORT_LINE.len()..].trim().to_owned());
                    sent = true;
                }
            }
        });
        let mut worker = Self { child, base: String::new() };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => worker.base = format!("http://127.0.0.1:{port}"),
            Err(e) => panic!("worker did not print its port ({e}); status {:?}", worker.child.try_wait()),
        }
        worker
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
