//! Integers cross the boundary signed: counts as `i32`, byte sizes as `i64`.
//! Kotlin's `Int`/`Long` (and Java, which has no unsigned types at all) and
//! Swift's own code count in signed integers, so unsigned records meant `16u`
//! and `.toInt()` at every call. A negative value from the caller is an
//! `InvalidParameter` naming it, never a count wrapped to billions; a value
//! of ours too large for the type (none is, in practice) saturates.

use super::{LlmError, Result};

/// A count the caller passed: 0 or more.
pub(crate) fn count(name: &str, value: i32) -> Result<usize> {
    usize::try_from(value).map_err(|_| LlmError::InvalidParameter {
        name: name.to_string(),
        reason: format!("must not be negative, got {value}"),
    })
}

/// A count of ours, for the caller.
pub(crate) fn int(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// A size in bytes of ours, for the caller.
pub(crate) fn long(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Token ids for the caller (every id is below the vocabulary's size).
pub(crate) fn ids_out(ids: Vec<u32>) -> Vec<i32> {
    ids.into_iter().map(|id| i32::try_from(id).unwrap_or(i32::MAX)).collect()
}

/// Token ids the caller passed; a negative one is outside the vocabulary, as
/// the engine says of one too large.
pub(crate) fn ids_in(ids: &[i32]) -> Result<Vec<u32>> {
    ids.iter()
        .map(|&id| {
            u32::try_from(id).map_err(|_| LlmError::InvalidParameter {
                name: "ids".to_string(),
                reason: format!("token id {id} is outside the vocabulary"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_count_names_its_parameter() {
        assert_eq!(count("max_tokens", 3).unwrap(), 3);
        match count("max_tokens", -1) {
            Err(LlmError::InvalidParameter { name, reason }) => {
                assert_eq!(name, "max_tokens");
                assert!(reason.contains("-1"), "{reason}");
            }
            other => panic!("expected InvalidParameter, got {other:?}"),
        }
    }

    #[test]
    fn values_too_large_saturate() {
        assert_eq!(int(usize::MAX), i32::MAX);
        assert_eq!(int(7), 7);
        assert_eq!(long(u64::MAX), i64::MAX);
        assert_eq!(ids_out(vec![0, 5, u32::MAX]), vec![0, 5, i32::MAX]);
    }

    #[test]
    fn a_negative_id_is_outside_the_vocabulary() {
        assert_eq!(ids_in(&[0, 9]).unwrap(), vec![0, 9]);
        assert!(matches!(ids_in(&[4, -2]), Err(LlmError::InvalidParameter { name, .. }) if name == "ids"));
    }
}
