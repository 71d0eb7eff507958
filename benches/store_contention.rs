//! Contention on one MPP channel: many concurrent deductions against the same channel state,
//! through each channel store's compare-and-swap `update` (run with `scripts/bench.sh`).
//!
//! A deduction is what a paid session request does to the channel: reserve the price when the
//! voucher is accepted, then commit it after the handler (two read-modify-write updates). Every
//! worker loops on deductions for a fixed time; at the end the channel's `spent` must equal the
//! number of deductions that reported success times the price, and nothing may stay reserved —
//! zero lost and zero double deductions — or the run fails. Reports deductions per second and
//! the compare-and-swap retries observed. The file and Redis stores also run as two store
//! instances sharing one directory / Redis (two processes' worth: their updates race through
//! the compare-and-swap, not the in-process turns).
//!
//! Arguments: `--smoke` (short, CI), `--secs S`, `--workers N`, `--instances I` (of the shared
//! rows, default 2), `--out FILE`.

use pay402::mpp::RedisChannelStore;
use pay402::mpp::{ChannelState, ChannelStore, FileStore, InMemoryChannelStore, UpdateOutcome};
use pay402::mpp::{StoreError, UpdateError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KEY: &str = "0x00000000000000000000000000000000000000000000000000000000000000c1";
const PRICE: u128 = 1000;

#[path = "support/redis.rs"]
mod redis_server;
use redis_server::Redis;

#[derive(Debug)]
struct Outcome {
    deductions: u64,
    per_sec: f64,
    conflicts: u64,
    refused: u64,
}

/// `stores`: one instance per simulated process, all on the same backing store; the workers are
/// spread over them round-robin.
async fn run(stores: &[Arc<dyn ChannelStore>], workers: usize, secs: f64) -> Result<Outcome, String> {
    let store = stores.first().ok_or("no store")?;
    let mut state = ChannelState::new(KEY, 196, "0xe", "0xp", "0xq");
    state.deposit = u128::MAX / 4;
    state.highest_voucher_amount = u128::MAX / 4;
    let _ = store.delete(KEY).await;
    if !store.put_if_absent(KEY, &state).await.map_err(|e| e.to_string())? {
        return Err("channel exists".into());
    }
    let done = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stuck = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..workers {
        let (store, done, attempts, refused, stuck) = (
            Arc::clone(&stores[i % stores.len()]),
            Arc::clone(&done),
            Arc::clone(&attempts),
            Arc::clone(&refused),
            Arc::clone(&stuck),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let reserve = store
                    .update(KEY, |s| {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let mut next = s.clone();
                        if next.reserve(PRICE) { Ok(Some(next)) } else { Err("no balance") }
                    })
                    .await;
                match reserve {
                    Ok(UpdateOutcome::Updated(_)) => {}
                    // Too contended: refused, nothing written (the request would get a 503).
                    Err(UpdateError::Store(StoreError::ConflictExhausted { .. })) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    other => return Err(format!("reserve failed: {other:?}")),
                }
                let commit = store
                    .update(KEY, |s| {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let mut next = s.clone();
                        if next.commit(PRICE) { Ok(Some(next)) } else { Err("nothing reserved") }
                    })
                    .await;
                match commit {
                    Ok(UpdateOutcome::Updated(_)) => {}
                    // Too contended: the reservation stays (released by the session's expiry
                    // handling in real use); accounted for below, never charged.
                    Err(UpdateError::Store(StoreError::ConflictExhausted { .. })) => {
                        stuck.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    other => return Err(format!("commit failed: {other:?}")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let deductions = done.load(Ordering::Relaxed);
    let final_state = store.get(KEY).await.map_err(|e| e.to_string())?.ok_or("channel vanished")?.value;
    let stuck = stuck.load(Ordering::Relaxed);
    if final_state.spent != u128::from(deductions) * PRICE || final_state.reserved != u128::from(stuck) * PRICE {
        return Err(format!(
            "LOST OR DOUBLE DEDUCTIONS: {deductions} succeeded but spent = {} (price {PRICE}), reserved = {} \
             ({stuck} commits refused)",
            final_state.spent, final_state.reserved
        ));
    }
    if final_state.units != deductions {
        return Err(format!("units {} != deductions {deductions}", final_state.units));
    }
    let refused = refused.load(Ordering::Relaxed);
    let conflicts = attempts.load(Ordering::Relaxed).saturating_sub(2 * deductions);
    #[allow(clippy::cast_precision_loss)] // a measurement
    let per_sec = deductions as f64 / elapsed;
    Ok(Outcome { deductions, per_sec, conflicts, refused: refused + stuck })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut smoke = false;
    let mut secs = 5.0;
    let mut workers = 16usize;
    let mut instances = 2usize;
    let mut out = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => smoke = true,
            "--secs" => secs = it.next().ok_or("--secs needs a value")?.parse()?,
            "--workers" => workers = it.next().ok_or("--workers needs a value")?.parse()?,
            "--instances" => instances = it.next().ok_or("--instances needs a value")?.parse::<usize>()?.max(1),
            "--out" => out = Some(it.next().ok_or("--out needs a value")?),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if smoke {
        secs = 0.3;
        workers = 4;
    }
    // One runtime thread: the figures are per core (the store's server runs beside it).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let redis = Redis::start()?;
    let dir = std::env::temp_dir().join(format!("pay402-contention-{}", std::process::id()));
    let url = redis.url();
    let redis_store = rt.block_on(RedisChannelStore::connect(&url, "bench:"))?;
    // Independent instances (each its own connection and coordinator): processes sharing the
    // channel, so their updates do race through the compare-and-swap.
    let mut redis_shared: Vec<Arc<dyn ChannelStore>> = Vec::new();
    let mut file_shared: Vec<Arc<dyn ChannelStore>> = Vec::new();
    for _ in 0..instances {
        redis_shared.push(Arc::new(rt.block_on(RedisChannelStore::connect(&url, "bench-shared:"))?));
        file_shared.push(Arc::new(FileStore::new(dir.join("shared"))?));
    }
    let shared = format!("{instances} instances");
    let stores: Vec<(String, Vec<Arc<dyn ChannelStore>>)> = vec![
        ("in-memory".into(), vec![Arc::new(InMemoryChannelStore::new())]),
        ("file".into(), vec![Arc::new(FileStore::new(&dir)?)]),
        (format!("file, {shared}"), file_shared),
        ("redis".into(), vec![Arc::new(redis_store)]),
        (format!("redis, {shared}"), redis_shared),
    ];
    let mut report = format!(
        "one channel, {workers} concurrent workers on one runtime thread, {secs} s per store{}\n\n\
         \"{shared}\": the workers are split over {instances} store instances on the same backing \
         store (as {instances} processes would be)\n\n\
         | store | deductions/s (reserve + commit) | deductions | refused (CAS retries exhausted) | CAS attempts lost | lost/double |\n|---|---:|---:|---:|---:|---:|\n",
        if smoke { " (SMOKE MODE)" } else { "" }
    );
    for (name, instances) in stores {
        let o = rt.block_on(run(&instances, workers, secs))?;
        report.push_str(&format!(
            "| {name} | {:.0} | {} | {} | {} | 0 |\n",
            o.per_sec, o.deductions, o.refused, o.conflicts
        ));
    }
    print!("{report}");
    if let Some(out) = out {
        std::fs::write(out, &report)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
