//! A throw-away `redis-server` for the benchmarks (one copy, included by each bench with
//! `#[path = "support/redis.rs"] mod redis_server;`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` on a free port of 127.0.0.1, without persistence; killed on drop.
pub(crate) struct Redis(Child, u16);

impl Redis {
    /// Starts one and waits until it accepts connections.
    pub(crate) fn start() -> Result<Self, String> {
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server is needed (scripts/deps/10-redis.sh installs it): {e}"))?;
        let redis = Self(child, port);
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(redis);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not start".into())
    }

    /// Its URL for the `redis` crate.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.1)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
