//! phi-mobile patch: values nested thousands of levels deep.
//!
//! A template can wrap a value in a list (or a namespace, a `chain`, a
//! slice) once per loop iteration, so a value's depth is bounded only by the
//! fuel. Formatting, comparing, hashing, iterating and dropping such a value
//! recursed once per level and overflowed the stack, which aborts the
//! process. Here: those operations stop at [`MAX_DEPTH`] levels (formatting
//! fails, comparisons give up, iteration yields an error), and dropping is
//! iterative.
use std::cell::{Cell, RefCell};

use crate::error::{Error, ErrorKind};
use crate::value::{Enumerator, Value};

/// Far deeper than any real data (JSON schemas nest tens of levels), and
/// shallow enough for the recursion of every operation above to fit a
/// thread's stack.
pub(crate) const MAX_DEPTH: usize = 400;

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    static EXCEEDED: Cell<bool> = const { Cell::new(false) };
    static DROPPING: Cell<bool> = const { Cell::new(false) };
    static PENDING: RefCell<Vec<(*const (), fn(*const ()))>> = const { RefCell::new(Vec::new()) };
}

/// One level of a recursive operation on a value; `None` past [`MAX_DEPTH`].
pub(crate) struct DepthGuard(());

impl DepthGuard {
    #[inline]
    pub(crate) fn enter() -> Option<DepthGuard> {
        DEPTH.with(|d| {
            let depth = d.get();
            if depth >= MAX_DEPTH {
                EXCEEDED.with(|e| e.set(true));
                None
            } else {
                d.set(depth + 1);
                Some(DepthGuard(()))
            }
        })
    }
}

impl Drop for DepthGuard {
    #[inline]
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Whether an operation on this thread met a value nested deeper than
/// [`MAX_DEPTH`] since the last call; clears the flag.
pub fn take_nesting_exceeded() -> bool {
    EXCEEDED.with(|e| e.replace(false))
}

fn too_deep() -> Value {
    Value::from(Error::new(
        ErrorKind::InvalidOperation,
        "value nested too deeply",
    ))
}

/// An enumerator of one error, for an object met too deep.
pub(crate) fn too_deep_enumerator() -> Enumerator {
    Enumerator::Values(vec![too_deep()])
}

/// An iterator whose every step counts as a level, so nested lazy views
/// (each pulling from the next) stop at [`MAX_DEPTH`] with one error item.
pub(crate) struct Guarded<I> {
    inner: I,
    failed: bool,
}

impl<I> Guarded<I> {
    pub(crate) fn new(inner: I) -> Self {
        Guarded {
            inner,
            failed: false,
        }
    }
}

impl<I: Iterator<Item = Value>> Iterator for Guarded<I> {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        if self.failed {
            return None;
        }
        match DepthGuard::enter() {
            Some(_guard) => self.inner.next(),
            None => {
                self.failed = true;
                Some(too_deep())
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// Releases one reference of a type-erased object. Dropping the last one can
/// release the references it holds: those are queued and released by the
/// outermost call in a loop, so a chain of any length is dropped without
/// recursion.
pub(crate) fn release(ptr: *const (), decref: fn(*const ())) {
    // During thread teardown the queue may be gone: release directly.
    let Ok(nested) = DROPPING.try_with(|d| d.replace(true)) else {
        return decref(ptr);
    };
    if nested {
        if PENDING.try_with(|p| p.borrow_mut().push((ptr, decref))).is_err() {
            decref(ptr);
        }
        return;
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = DROPPING.try_with(|d| d.set(false));
        }
    }
    let _reset = Reset;
    decref(ptr);
    while let Some((ptr, decref)) = PENDING.try_with(|p| p.borrow_mut().pop()).ok().flatten() {
        decref(ptr);
    }
}
