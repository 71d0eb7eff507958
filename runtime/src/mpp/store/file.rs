//! [`FileStore`]: one JSON file per channel, byte-compatible with Python's `mpp_evm.FileStore`
//! (wire facts §9.10) and safe across the processes of one host.

use super::{
    CasOutcome, ChannelState, ChannelStore, StoreError, UpdateCoordinator, Versioned, check_key_basic, random_u64,
};
use async_trait::async_trait;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const STRIPES: usize = 64;

/// A directory of channel states: key `k` ⇒ `{dir}/k.json`, written exactly as Python's
/// `json.dump(state.to_dict(), f, indent=2)` (2-space indent, `": "`, ASCII-escaped, no
/// trailing newline), so Python, Go, TypeScript and Rust servers can share the directory.
///
/// * **Atomic writes.** A write goes to `{dir}/k.json.tmp.<pid>.<random>`, is fsynced, then
///   renamed over `k.json` (and the directory fsynced): a crash leaves the old or the new file,
///   never a partial one. Stray `*.tmp.*` files from a crash are never read; they can be deleted
///   whenever no writer is running.
/// * **Atomic across processes.** [`put_if_absent`](ChannelStore::put_if_absent),
///   [`compare_and_swap`](ChannelStore::compare_and_swap) and
///   [`delete`](ChannelStore::delete) hold an exclusive advisory lock (`flock`) on the key's
///   lock file `{dir}/.k.lock` while they read, compare and write; within one process the
///   tasks of one key also queue on an async mutex instead of blocking threads. Lock files are
///   left in place (removing them would race). Reads take no lock: a rename is atomic.
///   Python's `FileStore` does not take these locks: a Python writer sharing the directory
///   is not serialised against Rust writers.
/// * **Versions** are the first 8 bytes of the SHA-256 of the file, so a file Python rewrote is
///   a new version, and a stale writer's compare-and-swap fails.
/// * **Path guard.** Keys are single file names: empty keys, `.`/`..`, `/`, `\`, NUL and keys
///   over 200 bytes are rejected, as is a key whose file (or lock file) is a symlink that
///   resolves outside the directory ⇒ [`StoreError::InvalidKey`] ("invalid store key").
///
/// [`update`](ChannelStore::update) goes through an [`UpdateCoordinator`] (shared by clones): the
/// updates of one channel take turns within this process and compare-and-swap against the
/// channel's last known state, so they only lose races to other processes (or Python).
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    stripes: Arc<[tokio::sync::Mutex<()>]>,
    coordinator: Arc<UpdateCoordinator>,
}

struct KeyPaths {
    file: PathBuf,
    lock: PathBuf,
}

impl FileStore {
    /// Opens (creating it recursively if needed) the store directory.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|source| StoreError::Io { op: "create store directory", source })?;
        let dir = fs::canonicalize(dir).map_err(|source| StoreError::Io { op: "resolve store directory", source })?;
        let stripes = (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Ok(Self { dir, stripes, coordinator: Arc::new(UpdateCoordinator::default()) })
    }

    /// The store directory (canonical path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `key` (`{dir}/{key}.json`), after the syntactic key checks.
    pub fn path_for(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_file_key(key)?;
        Ok(self.dir.join(format!("{key}.json")))
    }

    fn stripe(&self, key: &str) -> &tokio::sync::Mutex<()> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let n = u64::try_from(self.stripes.len()).unwrap_or(1);
        let i = usize::try_from(h.finish() % n).unwrap_or(0);
        &self.stripes[i]
    }

    /// Runs blocking file work off the async threads (inline when there is no Tokio runtime).
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, StoreError> + Send + 'static,
    {
        let dir = self.dir.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle
                .spawn_blocking(move || f(&dir))
                .await
                .map_err(|e| StoreError::Backend(format!("file store task failed: {e}")))?,
            Err(_) => f(&dir),
        }
    }
}

/// Syntactic key check: one plain file name.
fn check_file_key(key: &str) -> Result<(), StoreError> {
    check_key_basic(key)?;
    if key == "." || key == ".." || key.contains(['/', '\\']) {
        return Err(StoreError::invalid_key(key));
    }
    Ok(())
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

/// The key's paths, refusing symlinks that leave the directory (the data file may be a symlink
/// to a file inside it, as Python allows; the lock file may not be a symlink at all).
fn resolve(dir: &Path, key: &str) -> Result<KeyPaths, StoreError> {
    check_file_key(key)?;
    let file = dir.join(format!("{key}.json"));
    let lock = dir.join(format!(".{key}.lock"));
    if file.parent() != Some(dir) || lock.parent() != Some(dir) {
        return Err(StoreError::invalid_key(key));
    }
    match fs::symlink_metadata(&file) {
        Ok(m) if m.file_type().is_symlink() => match fs::canonicalize(&file) {
            Ok(real) if real.starts_with(dir) && real != dir => {}
            _ => return Err(StoreError::invalid_key(key)),
        },
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect state file")(e)),
    }
    match fs::symlink_metadata(&lock) {
        Ok(m) if m.file_type().is_symlink() => return Err(StoreError::invalid_key(key)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("inspect lock file")(e)),
    }
    Ok(KeyPaths { file, lock })
}

/// Takes the key's exclusive cross-process lock; released when the returned file is dropped.
fn lock_key(paths: &KeyPaths) -> Result<File, StoreError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&paths.lock)
        .map_err(io_err("open lock file"))?;
    f.lock().map_err(io_err("lock key"))?;
    Ok(f)
}

fn version_of(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn read_bytes(file: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(file) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read state file")(e)),
    }
}

fn parse(key: &str, bytes: &[u8]) -> Result<Versioned<ChannelState>, StoreError> {
    let value = ChannelState::from_json(bytes).map_err(|e| StoreError::corrupt(key, e))?;
    Ok(Versioned { version: version_of(bytes), value })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Temp file + fsync + rename + directory fsync.
fn write_atomic(dir: &Path, file: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".tmp.{}.{:016x}", std::process::id(), random_u64()));
    let tmp = PathBuf::from(name);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, file)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err("write state file"))
}

fn encode(key: &str, state: &ChannelState) -> Result<Vec<u8>, StoreError> {
    state.to_json_bytes().map_err(|e| StoreError::corrupt(key, e))
}

#[async_trait]
impl ChannelStore for FileStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned<ChannelState>>, StoreError> {
        check_file_key(key)?;
        let key = key.to_owned();
        self.blocking(move |dir| {
            let paths = resolve(dir, &key)?;
            read_bytes(&paths.file)?.map(|b| parse(&key, &b)).transpose()
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, state: &ChannelState) -> Result<bool, StoreError> {
        check_file_key(key)?;
        let bytes = encode(key, state)?;
        let _in_process = self.stripe(key).lock().await;
        let key = key.to_owned();
        self.blocking(move |dir| {
            let paths = resolve(dir, &key)?;
            let _lock = lock_key(&paths)?;
            match fs::symlink_metadata(&paths.file) {
                Ok(_) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("inspect state file")(e)),
            }
            write_atomic(dir, &paths.file, &bytes)?;
            Ok(true)
        })
        .await
    }

    fn update_coordinator(&self) -> Option<&UpdateCoordinator> {
        Some(&self.coordinator)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        new_state: &ChannelState,
    ) -> Result<CasOutcome, StoreError> {
        check_file_key(key)?;
        let bytes = encode(key, new_state)?;
        let _in_process = self.stripe(key).lock().await;
        let key = key.to_owned();
        self.blocking(move |dir| {
            let paths = resolve(dir, &key)?;
            let _lock = lock_key(&paths)?;
            let Some(current) = read_bytes(&paths.file)? else { return Ok(CasOutcome::Missing) };
            if version_of(&current) != expected_version {
                return Ok(CasOutcome::Conflict(Box::new(parse(&key, &current)?)));
            }
            write_atomic(dir, &paths.file, &bytes)?;
            Ok(CasOutcome::Swapped(version_of(&bytes)))
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_file_key(key)?;
        self.coordinator.forget(key);
        let _in_process = self.stripe(key).lock().await;
        let key = key.to_owned();
        self.blocking(move |dir| {
            let paths = resolve(dir, &key)?;
            let _lock = lock_key(&paths)?;
            match fs::remove_file(&paths.file) {
                Ok(()) => {
                    sync_dir(dir).map_err(io_err("sync store directory"))?;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_err("remove state file")(e)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pay402-filestore-unit-{name}-{}-{:x}",
            std::process::id(),
            random_u64()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn basic_cas_and_layout() {
        let dir = tmpdir("basic");
        let s = FileStore::new(dir.join("nested/deeper")).unwrap();
        let st = ChannelState::new("0xc", 196, "0xe", "0xp", "0xq");
        assert!(s.put_if_absent("0xc", &st).await.unwrap());
        assert!(!s.put_if_absent("0xc", &st).await.unwrap());
        assert!(s.dir().join("0xc.json").is_file());
        assert!(s.dir().join(".0xc.lock").is_file());
        let v = s.get("0xc").await.unwrap().unwrap();
        assert_eq!(v.value, st);
        let next = ChannelState { spent: 1, ..st.clone() };
        let CasOutcome::Swapped(v2) = s.compare_and_swap("0xc", v.version, &next).await.unwrap() else {
            panic!("expected a swap")
        };
        assert_ne!(v2, v.version);
        let CasOutcome::Conflict(cur) = s.compare_and_swap("0xc", v.version, &st).await.unwrap() else {
            panic!("expected a conflict")
        };
        assert_eq!(*cur, Versioned { version: v2, value: next });
        assert!(s.delete("0xc").await.unwrap());
        assert!(!s.delete("0xc").await.unwrap());
        assert_eq!(s.compare_and_swap("0xc", v2, &st).await.unwrap(), CasOutcome::Missing);
        assert!(s.get("0xc").await.unwrap().is_none());
        fs::write(s.dir().join("bad.json"), b"{not json").unwrap();
        assert!(matches!(s.get("bad").await, Err(StoreError::Corrupt { .. })));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn file_keys() {
        for bad in ["", ".", "..", "../x", "/abs", "a/b", "a\\b", "a\0b"] {
            assert!(matches!(check_file_key(bad), Err(StoreError::InvalidKey { .. })), "{bad:?}");
        }
        for good in ["0xabab", "a..b", "..x", "k.lock"] {
            assert!(check_file_key(good).is_ok(), "{good:?}");
        }
    }
}
