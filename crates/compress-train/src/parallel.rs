//! Small runs side by side on a few cores.
//!
//! candle 0.11's CPU element-wise ops run on one process-wide barrier pool that serialises its
//! callers, so two runs in two threads of one multi-threaded process are slower than one after
//! the other. With `CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1` that pool runs inline and each run
//! gets its own rayon pool: on 2 cores two single-threaded runs of a small network finish about
//! 1.8x sooner than one after the other on both threads.

use crate::error::{Result, TrainError};

/// Whether candle's CPU element-wise pool runs inline (`CANDLE_NUM_THREADS=1` and
/// `RAYON_NUM_THREADS=1`, read when the pool is first used): only then can runs share the CPU
/// side by side.
pub fn candle_single_threaded() -> bool {
    let one = |k: &str| std::env::var(k).is_ok_and(|v| v.trim() == "1");
    one("CANDLE_NUM_THREADS") && one("RAYON_NUM_THREADS")
}

/// How many runs to place side by side: `wanted`, at most `cores` and the jobs, and 1 unless
/// the device is the CPU with candle single-threaded.
pub fn workers(wanted: usize, jobs: usize, cpu: bool, cores: usize) -> usize {
    if cpu && candle_single_threaded() { wanted.clamp(1, cores).min(jobs.max(1)) } else { 1 }
}

/// Runs `f(job, threads)` for every job, `workers` at a time, each worker on its own rayon pool
/// of `threads` threads. Results come back in job order; after a failure no new job
/// starts and those not run are `None`. A panicking job is an error.
pub fn side_by_side<J, R, E, F>(
    jobs: &[J],
    workers: usize,
    threads: usize,
    f: F,
) -> Result<Vec<Option<std::result::Result<R, E>>>>
where
    J: Sync,
    R: Send,
    E: Send,
    F: Fn(&J, usize) -> std::result::Result<R, E> + Sync,
{
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (workers, threads) = (workers.max(1), threads.max(1));
    let pools = (0..workers)
        .map(|_| rayon::ThreadPoolBuilder::new().num_threads(threads).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TrainError::Config(format!("thread pool: {e}")))?;
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<std::result::Result<R, E>>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for pool in &pools {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { break };
                    let r = pool.install(|| f(job, threads));
                    let failed = r.is_err();
                    if let Ok(mut g) = slots[i].lock() {
                        *g = Some(r);
                    }
                    if failed {
                        next.store(jobs.len(), Ordering::SeqCst);
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|s| s.into_inner().map_err(|_| TrainError::Config("a side-by-side run panicked".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_job_order_and_a_failure_stops_new_jobs() {
        let jobs: Vec<u32> = (0..6).collect();
        let out = side_by_side(&jobs, 2, 1, |j, _| if *j == 100 { Err(()) } else { Ok(j * 2) }).expect("ran");
        assert_eq!(
            out.into_iter().map(|r| r.and_then(|r| r.ok())).collect::<Vec<_>>(),
            (0..6).map(|j| Some(j * 2)).collect::<Vec<_>>()
        );
        let out = side_by_side(&jobs, 1, 2, |j, _| if *j == 2 { Err(*j) } else { Ok(*j) }).expect("ran");
        assert_eq!(out[2], Some(Err(2)));
        assert!(out[3..].iter().all(Option::is_none), "nothing starts after a failure");
        assert_eq!(workers(4, 3, false, 2), 1);
    }
}
