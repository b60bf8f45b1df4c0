//! Thread-local scopes (the counting pass, the probe, fake quantization, layer replacement) set
//! a value for the length of a closure and restore the previous one through a drop guard, so a
//! panic inside the closure or a nested scope never leaves a scope set.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread-local slot a scope sets.
pub(crate) type Slot<T> = LocalKey<RefCell<Option<T>>>;

/// Puts the slot's previous value back when dropped (also while unwinding).
struct Restore<T: 'static> {
    slot: &'static Slot<T>,
    previous: Option<Option<T>>,
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            // The slot is gone only while the thread itself is being torn down.
            let _ = self.slot.try_with(|s| *s.borrow_mut() = previous);
        }
    }
}

/// Runs `f` with `slot` set to `value`; returns its result and the slot's value when `f` ended
/// (what the scope accumulated). The previous value is restored afterwards, whether `f` returns
/// or panics: nested scopes see the innermost value, and the outer one resumes after it.
pub(crate) fn scoped<T: 'static, R>(slot: &'static Slot<T>, value: T, f: impl FnOnce() -> R) -> (R, Option<T>) {
    let previous = slot.with(|s| s.borrow_mut().replace(value));
    let guard = Restore { slot, previous: Some(previous) };
    let r = f();
    let mine = slot.with(|s| s.borrow_mut().take());
    drop(guard);
    (r, mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: RefCell<Option<u32>> = const { RefCell::new(None) };
    }

    fn get() -> Option<u32> {
        SLOT.with(|s| *s.borrow())
    }

    #[test]
    fn nested_scopes_restore_the_outer_value_and_a_panic_restores_none() {
        let (inner, outer) = scoped(&SLOT, 1, || {
            let (seen, mine) = scoped(&SLOT, 2, get);
            assert_eq!((seen, mine), (Some(2), Some(2)));
            get()
        });
        assert_eq!((inner, outer), (Some(1), Some(1)));
        assert_eq!(get(), None);
        let caught = std::panic::catch_unwind(|| scoped(&SLOT, 3, || panic!("inside the scope")));
        assert!(caught.is_err());
        assert_eq!(get(), None, "the panic left the scope set");
    }
}
