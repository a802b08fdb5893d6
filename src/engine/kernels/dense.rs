//! Matrix × vector / matrix for float weights (F32, F16, BF16).
//!
//! Why our own: candle's dense matmul goes through `gemm`, whose summation
//! order depends on how many rows the batch has, so a prompt's logits
//! differed from the same tokens fed one by one. Here each output is one
//! [`dot`] of its weight row (widened to f32 once per work item) and its
//! activation row, in eight fixed lanes that the compiler vectorizes: no
//! `unsafe` SIMD, so there is no variant to check against a scalar twin.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::parallel::Output;

/// `Σ a·b` in eight lanes `i % 8`, reduced in a fixed tree.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    for (l, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[l] = x.mul_add(*y, acc[l]);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// A float weight element: widened to f32 a row at a time.
pub trait Float: Copy + Sync + 'static {
    fn widen(row: &[Self], out: &mut [f32]);

    /// `row` as f32: widened into `buf` (its length), or `row` itself.
    fn as_f32<'a>(row: &'a [Self], buf: &'a mut [f32]) -> &'a [f32] {
        Self::widen(row, buf);
        buf
    }
}

impl Float for f32 {
    fn widen(row: &[f32], out: &mut [f32]) {
        out.copy_from_slice(row)
    }

    fn as_f32<'a>(row: &'a [f32], _: &'a mut [f32]) -> &'a [f32] {
        row
    }
}

impl Float for f16 {
    fn widen(row: &[f16], out: &mut [f32]) {
        // half converts slices with F16C/NEON where the CPU has them.
        row.convert_to_f32_slice(out)
    }
}

impl Float for bf16 {
    fn widen(row: &[bf16], out: &mut [f32]) {
        row.convert_to_f32_slice(out)
    }
}

/// `f` on `N` zeroed slices of the lengths `lens`, cut from this thread's
/// scratch: reused from call to call, so that a decoded token allocates
/// nothing per layer (attention's per-chunk buffers were 810 of SmolLM2's
/// 831 allocations per token). Not re-entrant: a nested call panics (the
/// kernels that use it call no other).
pub(super) fn with_scratch<const N: usize, T>(lens: [usize; N], f: impl FnOnce([&mut [f32]; N]) -> T) -> T {
    thread_local!(static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) });
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        buf.resize(lens.iter().sum(), 0.0);
        let mut rest = &mut buf[..];
        f(lens.map(|n| {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            part
        }))
    })
}

/// Weight columns per work item: each is widened once for every activation row.
const COLUMNS_PER_ITEM: usize = 8;

/// `dst[i, j] = Σ_k lhs[i, k] · w[j, k]`, split among the worker pool by
/// weight rows. `None` if the slices do not match the shape.
pub fn matmul<T: Float>((m, k, n): (usize, usize, usize), lhs: &[f32], w: &[T], dst: &mut [f32]) -> Option<()> {
    if lhs.len() != m.checked_mul(k)? || w.len() != n.checked_mul(k)? || dst.len() != m.checked_mul(n)? {
        return None;
    }
    let out = Output { ptr: dst.as_mut_ptr(), len: dst.len() };
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(COLUMNS_PER_ITEM), |items| {
        with_scratch([k], |[row]| {
            for item in items {
                for j in item * COLUMNS_PER_ITEM..((item + 1) * COLUMNS_PER_ITEM).min(n) {
                    T::widen(&w[j * k..(j + 1) * k], row);
                    for (i, x) in lhs.chunks_exact(k).enumerate() {
                        // SAFETY: column j belongs to this work item alone.
                        unsafe { out.set(i * n + j, dot(x, row)) };
                    }
                }
            }
        })
    });
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn each_type_matches_the_f64_definition_and_a_batch_equals_its_rows() {
        let mut rng = StdRng::seed_from_u64(3);
        let (m, k, n) = (5, 37, 19);
        let lhs: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let w32: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        fn check<T: Float>(lhs: &[f32], w: &[T], (m, k, n): (usize, usize, usize)) {
            let mut wide = vec![0f32; w.len()];
            T::widen(w, &mut wide);
            let mut batched = vec![0f32; m * n];
            matmul((m, k, n), lhs, w, &mut batched).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|e| lhs[i * k + e] as f64 * wide[j * k + e] as f64).sum();
                    let got = batched[i * n + j];
                    assert!((got as f64 - want).abs() < 1e-5, "({i}, {j}): {got} vs {want}");
                }
                let mut one = vec![0f32; n];
                matmul((1, k, n), &lhs[i * k..(i + 1) * k], w, &mut one).unwrap();
                assert_eq!(one, batched[i * n..(i + 1) * n], "row {i}");
            }
        }
        check(&lhs, &w32, (m, k, n));
        check(&lhs, &w32.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(), (m, k, n));
        check(&lhs, &w32.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>(), (m, k, n));
        assert!(matmul((m, k, n), &lhs, &w32[1..], &mut vec![0f32; m * n]).is_none(), "short weights");
    }
}
