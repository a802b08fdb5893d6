//! Causal attention over the KV cache in place, one query row at a time.
//!
//! Why our own: candle's path (`repeat_kv` copies, a masked `matmul`,
//! softmax, `matmul`) runs its products through `gemm`, whose summation
//! order depends on the number of query rows, and it sums over every cached
//! position with the masked ones as zeros. So a prompt's batch gave different
//! logits from the same tokens fed one by one, and a chat turn served from
//! the cache could answer differently from a fresh run (seen on SmolLM2).
//! Here each output depends only on its own query row and the keys and
//! values up to its position, in a fixed order: batched equals token by
//! token, bit for bit. Grouped-query heads read their shared KV head
//! directly (no copies). Sums use eight fixed lanes so they vectorize
//! (`dense::dot`). An f16 cache is widened a row at a time as it is read.

use super::dense::{dot, with_scratch, Float};
use super::parallel::Output;

/// The shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Query rows, at positions `start..start + seq`.
    pub seq: usize,
    pub start: usize,
    /// Positions the cache buffers hold room for (their row stride per head).
    pub capacity: usize,
}

/// `softmax(q·kᵀ / √d) · v` for every head and query row, written to `out`
/// as `[seq, n_head · head_dim]`. `q` is `[seq, n_head · head_dim]` too; `k` and
/// `v` are the cache buffers `[n_kv_head, capacity, head_dim]`, filled up to
/// `start + seq`. Returns `None` if the slices do not match the shape.
pub fn causal<T: Float>(s: Shape, q: &[f32], k: &[T], v: &[T], out: &mut [f32]) -> Option<()> {
    let Shape { n_head, n_kv_head, head_dim: hd, seq, start, capacity } = s;
    if n_kv_head == 0
        || !n_head.is_multiple_of(n_kv_head)
        || start + seq > capacity
        || q.len() != n_head * seq * hd
        || k.len() != n_kv_head * capacity * hd
        || v.len() != k.len()
        || out.len() != seq * n_head * hd
    {
        return None;
    }
    let group = n_head / n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let dst = Output { ptr: out.as_mut_ptr(), len: out.len() };
    candle_core::utils::barrier_pool().execute_chunked(n_head * seq, |items| {
        with_scratch([start + seq, hd, hd], |[scores, row, wide]| {
            for item in items {
                let (h, i) = (item / seq, item % seq);
                let kv = h / group;
                let keys = &k[kv * capacity * hd..];
                let values = &v[kv * capacity * hd..];
                let qi = &q[(i * n_head + h) * hd..(i * n_head + h + 1) * hd];
                let scores = &mut scores[..start + i + 1];
                for (j, score) in scores.iter_mut().enumerate() {
                    *score = dot(qi, T::as_f32(&keys[j * hd..(j + 1) * hd], wide)) * scale;
                }
                let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0f32;
                for x in scores.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                row.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    let p = p / sum;
                    for (o, &x) in row.iter_mut().zip(T::as_f32(&values[j * hd..(j + 1) * hd], wide)) {
                        *o = p.mul_add(x, *o);
                    }
                }
                let base = (i * n_head + h) * hd;
                for (d, &x) in row.iter().enumerate() {
                    // SAFETY: element (i, h, d) belongs to this work item alone.
                    unsafe { dst.set(base + d, x) };
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

    /// The plain definition, in f64.
    fn reference(s: Shape, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let hd = s.head_dim;
        let mut out = vec![0f32; s.seq * s.n_head * hd];
        for h in 0..s.n_head {
            let kv = h / (s.n_head / s.n_kv_head);
            for i in 0..s.seq {
                let qi = &q[(i * s.n_head + h) * hd..][..hd];
                let scores: Vec<f64> = (0..=s.start + i)
                    .map(|j| {
                        let kj = &k[(kv * s.capacity + j) * hd..][..hd];
                        qi.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                for d in 0..hd {
                    let y: f64 = scores
                        .iter()
                        .enumerate()
                        .map(|(j, x)| (x - max).exp() / sum * v[(kv * s.capacity + j) * hd + d] as f64)
                        .sum();
                    out[(i * s.n_head + h) * hd + d] = y as f32;
                }
            }
        }
        out
    }

    fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    /// Runs `causal` on `k`, `v` as stored in `T` against the definition on
    /// the stored values, and each row alone against the batch.
    fn check<T: Float>(s: Shape, q: &[f32], k: &[T], v: &[T]) {
        let widen = |x: &[T]| {
            let mut out = vec![0f32; x.len()];
            T::widen(x, &mut out);
            out
        };
        let (n_head, head_dim, seq, start) = (s.n_head, s.head_dim, s.seq, s.start);
        let mut batched = vec![0f32; seq * n_head * head_dim];
        causal(s, q, k, v, &mut batched).unwrap();
        for (a, b) in batched.iter().zip(reference(s, q, &widen(k), &widen(v))) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // Each row alone, at its own position.
        for i in 0..seq {
            let qi = &q[i * n_head * head_dim..][..n_head * head_dim];
            let mut one = vec![0f32; n_head * head_dim];
            causal(Shape { seq: 1, start: start + i, ..s }, qi, k, v, &mut one).unwrap();
            assert_eq!(one, batched[i * n_head * head_dim..][..n_head * head_dim], "row {i}");
        }
    }

    #[test]
    fn matches_the_definition_and_a_batch_equals_its_rows_in_f32_and_f16() {
        let mut rng = StdRng::seed_from_u64(7);
        // Grouped-query (6 heads on 2) and plain heads; head sizes off the lanes.
        for (n_head, n_kv_head, head_dim) in [(6, 2, 20), (3, 3, 64)] {
            let (capacity, start, seq) = (40, 5, 9);
            let s = Shape { n_head, n_kv_head, head_dim, seq, start, capacity };
            let k = random(&mut rng, n_kv_head * capacity * head_dim);
            let v = random(&mut rng, n_kv_head * capacity * head_dim);
            let q = random(&mut rng, n_head * seq * head_dim);
            check(s, &q, &k, &v);
            let half = |x: &[f32]| x.iter().map(|&x| half::f16::from_f32(x)).collect::<Vec<_>>();
            check(s, &q, &half(&k), &half(&v));
        }
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let s = Shape { n_head: 4, n_kv_head: 3, head_dim: 8, seq: 1, start: 0, capacity: 4 };
        let (q, kv, mut out) = (vec![0f32; 32], vec![0f32; 96], vec![0f32; 32]);
        assert!(causal(s, &q, &kv, &kv, &mut out).is_none(), "heads not a multiple of KV heads");
        let s = Shape { n_kv_head: 4, start: 4, ..s };
        assert!(causal(s, &q, &vec![0f32; 128], &vec![0f32; 128], &mut out).is_none(), "past the capacity");
    }
}
