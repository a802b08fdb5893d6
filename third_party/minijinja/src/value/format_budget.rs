//! phi-mobile patch: a per-thread budget for formatting values.
//!
//! Containers in this engine share their items (`l + l` is a lazy view of
//! `l` twice, a list literal holds references), so a value's formatted size
//! can be exponential in the work the fuel counted to build it: formatting
//! it (`~`, a filter that takes a string, `join`) wrote gigabytes without a
//! charge. Inside [`with_format_budget`] every value formatted with
//! `Display` or `Debug` is charged to the budget first (strings by their
//! length, every other value a small constant), and past the budget the
//! formatting fails with `fmt::Error` and [`format_budget_exhausted`] says
//! so. Outside it (the default), nothing changes.
use std::cell::Cell;
use std::fmt;

thread_local! {
    static REMAINING: Cell<Option<u64>> = const { Cell::new(None) };
    static EXHAUSTED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with at most `bytes` of values formatted on this thread
/// (approximately: escapes and separators can add up to 4×).
pub fn with_format_budget<R>(bytes: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<u64>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            REMAINING.with(|r| r.set(self.0));
            EXHAUSTED.with(|e| e.set(self.1));
        }
    }
    let _restore = Restore(
        REMAINING.with(|r| r.replace(Some(bytes))),
        EXHAUSTED.with(|e| e.replace(false)),
    );
    f()
}

/// Whether the innermost [`with_format_budget`] on this thread ran out.
pub fn format_budget_exhausted() -> bool {
    EXHAUSTED.with(Cell::get)
}

/// Charges `n` bytes; fails once the budget cannot pay for them.
#[inline]
pub(crate) fn charge(n: usize) -> fmt::Result {
    REMAINING.with(|r| match r.get() {
        None => Ok(()),
        Some(left) => match left.checked_sub(n as u64) {
            Some(rest) => {
                r.set(Some(rest));
                Ok(())
            }
            None => {
                r.set(Some(0));
                EXHAUSTED.with(|e| e.set(true));
                Err(fmt::Error)
            }
        },
    })
}

/// What formatting `repr` costs at most before its items: its text for a
/// string, a constant for anything else (numbers, brackets, separators).
#[inline]
pub(crate) fn cost(repr: &super::ValueRepr) -> usize {
    const OTHER: usize = 8;
    match repr {
        super::ValueRepr::String(s, _) => s.len() + OTHER,
        super::ValueRepr::SmallStr(s) => s.as_str().len() + OTHER,
        super::ValueRepr::Bytes(b) => b.len() + OTHER,
        _ => OTHER,
    }
}

/// Charges the slots of a sequence about to be copied (16 bytes each),
/// as a template error past the budget.
pub(crate) fn charge_slots(n: usize) -> Result<(), crate::Error> {
    charge(n.saturating_mul(16)).map_err(|_| {
        crate::Error::new(
            crate::ErrorKind::InvalidOperation,
            "the template builds a sequence larger than its budget",
        )
    })
}
