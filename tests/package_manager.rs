//! The README's test command survives a busy package manager: on a fresh machine apt is often
//! still running its own updates when the test command starts, and `apt-get` then fails at once
//! on the dpkg lock. `scripts/deps-lib.sh`'s `apt_install` (what every installer uses) must wait
//! for the lock instead. The test holds the apt and dpkg locks (the `fcntl` locks apt itself
//! takes) from another process, checks that a plain `apt-get install` fails while they are held
//! (so the lock is real), then runs `apt_install` — `apt-get update` and `install` — and checks
//! that it waited for the release and succeeded. Needs root or sudo (as the installers do): it
//! fails, never skips, without them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the other "package manager" holds the locks.
const HELD: Duration = Duration::from_secs(8);

/// Holds apt's and dpkg's locks for `seconds` (as root, or through sudo); prints `locked` once
/// it has them.
const HOLDER: &str = r#"
import fcntl, os, sys, time
fds = []
for path in ["/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock", "/var/cache/apt/archives/lock"]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    fds.append(fd)
print("locked", flush=True)
time.sleep(float(sys.argv[1]))
"#;

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `cmd` run as root (directly, or through non-interactive sudo).
fn as_root(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", program]);
        c
    }
}

/// A process holding the locks for [`HELD`], started once it holds them.
fn hold_locks() -> std::process::Child {
    let mut child = as_root("python3")
        .args(["-c", HOLDER, &HELD.as_secs().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (root or sudo) to hold the apt locks");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("holder output");
    assert_eq!(line.trim(), "locked", "the lock holder could not take apt's locks (root or sudo needed)");
    child
}

#[test]
fn the_installers_wait_for_a_busy_package_manager() {
    assert!(
        is_root() || Command::new("sudo").args(["-n", "true"]).status().is_ok_and(|s| s.success()),
        "this test (like the test-dependency installers) needs root or password-less sudo"
    );
    // A package every test run has installed already (scripts/deps/10-redis.sh), so nothing
    // is downloaded: only the locks matter.
    let package = "redis-server";

    // The control: without waiting, apt-get fails at once while the locks are held.
    let mut holder = hold_locks();
    let started = Instant::now();
    let plain = as_root("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("apt-get");
    assert!(!plain.status.success(), "apt-get ran although the locks were held");
    assert!(String::from_utf8_lossy(&plain.stderr).contains("lock"), "{}", String::from_utf8_lossy(&plain.stderr));
    assert!(started.elapsed() < HELD, "apt-get without a timeout should fail at once");
    let _ = holder.wait();

    // The installers' apt_install: `apt-get update` (its lists lock ignores
    // DPkg::Lock::Timeout) and `apt-get install`, while another process holds every lock.
    let mut holder = hold_locks();
    let started = Instant::now();
    let script = format!(
        "set -u; source scripts/deps-lib.sh; unset PAY402_APT_UPDATED; apt_install {package} && echo INSTALLED"
    );
    let out =
        Command::new("bash").arg("-c").arg(script).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("bash");
    let waited = started.elapsed();
    let _ = holder.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("INSTALLED"), "apt_install failed:\n{stdout}\n{stderr}");
    assert!(
        waited >= HELD - Duration::from_secs(2),
        "apt_install finished after {waited:?}, before the locks were released ({HELD:?}):\n{stderr}"
    );
}
