//! The counting forward pass: layers report their MACs and parameters while a closure runs, so
//! the analytic cost of a config can be cross-checked against what the model really computes.

use compress_core::cost::Cost;
use std::cell::RefCell;

thread_local! {
    static COUNTER: RefCell<Option<Cost>> = const { RefCell::new(None) };
}

/// Adds `c` to the running count, if a count is in progress on this thread.
pub fn record(c: Cost) {
    COUNTER.with(|k| {
        if let Some(total) = k.borrow_mut().as_mut() {
            *total += c;
        }
    });
}

/// Runs `f` and returns its result with the cost its layers recorded. Run it on a single sample
/// (batch 1) to get per-sample MACs. Nested counts are not supported: the inner one wins.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, Cost) {
    COUNTER.with(|k| *k.borrow_mut() = Some(Cost::default()));
    let r = f();
    let c = COUNTER.with(|k| k.borrow_mut().take()).unwrap_or_default();
    (r, c)
}
