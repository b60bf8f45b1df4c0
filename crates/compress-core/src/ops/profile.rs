//! Per-op CPU time of the toolkit's kernels: while recording is on, every custom op adds its
//! wall time and call count under its name (convolutions under their shape too); `take` returns
//! the totals and clears them. Off by default: then each op pays one atomic load.
//! `cargo xtask bench train-step --ops` prints where a training step's time goes with it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<BTreeMap<String, (f64, usize)>> = Mutex::new(BTreeMap::new());

/// Turns recording on or off (the totals are kept until [`take`]).
pub fn record_ops(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// The recorded `(op, seconds, calls)`, sorted by op name, and clears them.
pub fn take() -> Vec<(String, f64, usize)> {
    let mut m = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::take(&mut *m).into_iter().map(|(k, (s, n))| (k, s, n)).collect()
}

/// Adds its lifetime to an op's total when dropped.
#[derive(Debug)]
pub(crate) struct Span {
    name: String,
    start: Instant,
}

impl Drop for Span {
    fn drop(&mut self) {
        let s = self.start.elapsed().as_secs_f64();
        let mut m = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(std::mem::take(&mut self.name)).or_insert((0.0, 0));
        e.0 += s;
        e.1 += 1;
    }
}

/// A timer for the op named `name()` when recording is on (the name is built only then).
pub(crate) fn span(name: impl FnOnce() -> String) -> Option<Span> {
    ON.load(Ordering::Relaxed).then(|| Span { name: name(), start: Instant::now() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_while_on() {
        record_ops(false);
        drop(span(|| "off".into()));
        record_ops(true);
        drop(span(|| "on".into()));
        drop(span(|| "on".into()));
        record_ops(false);
        let t = take();
        assert!(t.iter().all(|(k, _, _)| k != "off"));
        // (Other tests' ops running meanwhile may add entries of their own names.)
        assert_eq!(t.iter().find(|(k, _, _)| k == "on").map(|(_, _, n)| *n), Some(2));
        assert!(take().iter().all(|(k, _, _)| k != "on"));
    }
}
