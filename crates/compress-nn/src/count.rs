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
/// (batch 1) to get per-sample MACs. A nested count records its own layers (the outer one
/// resumes after it); a panic in `f` leaves no count running.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, Cost) {
    let (r, c) = crate::scope::scoped(&COUNTER, Cost::default(), f);
    (r, c.unwrap_or_default())
}
