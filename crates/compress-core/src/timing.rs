//! Wall-clock timing for benchmarks and the speed checks of reproductions (never in tests).

use std::time::Instant;

/// Median seconds of `f` over at least `min_reps` runs and at least `min_seconds` in total,
/// after `warmup` untimed runs. The median resists the noise of a shared machine.
pub fn median_seconds<E>(
    warmup: usize,
    min_reps: usize,
    min_seconds: f64,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<f64, E> {
    for _ in 0..warmup {
        f()?;
    }
    let (mut v, start) = (Vec::new(), Instant::now());
    while v.len() < min_reps.max(1) || start.elapsed().as_secs_f64() < min_seconds {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}
