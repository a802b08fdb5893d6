//! Portable kernels: the oracle. Each block's integer sums are exact; the
//! float arithmetic per block (and its order) is what every SIMD variant
//! repeats, so they agree bit for bit.

use super::blocks::{f16_to_f32, q4k_scale_min, BlockQ4K, BlockQ6K, BlockQ8K};

/// The float step every variant shares, given one Q4_K block's exact sums.
#[inline]
pub fn q4k_block(w: &BlockQ4K, x: &BlockQ8K, sumi: i32, summ: i32) -> f32 {
    let d = x.d * f16_to_f32(w.d);
    let dmin = x.d * f16_to_f32(w.dmin);
    d * sumi as f32 - dmin * summ as f32
}

/// `Σ_j min_j · (sum of x over sub-block j)`, exact.
#[inline]
pub fn q4k_mins(w: &BlockQ4K, x: &BlockQ8K) -> i32 {
    (0..8).map(|j| q4k_scale_min(j, &w.scales).1 as i32 * (x.bsums[2 * j] as i32 + x.bsums[2 * j + 1] as i32)).sum()
}

pub fn dot_q4k(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let mut sumi = 0i32;
        for j in 0..4 {
            let (lo_scale, _) = q4k_scale_min(2 * j, &w.scales);
            let (hi_scale, _) = q4k_scale_min(2 * j + 1, &w.scales);
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let q = w.qs[32 * j + l];
                lo += (q & 0xF) as i32 * x.qs[64 * j + l] as i32;
                hi += (q >> 4) as i32 * x.qs[64 * j + 32 + l] as i32;
            }
            sumi += lo_scale as i32 * lo + hi_scale as i32 * hi;
        }
        sum += q4k_block(w, x, sumi, q4k_mins(w, x));
    }
    sum
}

/// The float step every variant shares, given one Q6_K block's exact sum.
#[inline]
pub fn q6k_block(w: &BlockQ6K, x: &BlockQ8K, sumi: i32) -> f32 {
    x.d * f16_to_f32(w.d) * sumi as f32
}

/// `32 · Σ_g scale_g · (sum of x over group g)`: the offset of the quants'
/// unsigned storage, exact.
#[inline]
pub fn q6k_offset(w: &BlockQ6K, x: &BlockQ8K) -> i32 {
    32 * (0..16).map(|g| w.scales[g] as i32 * x.bsums[g] as i32).sum::<i32>()
}

pub fn dot_q6k(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let mut sumi = 0i32;
        for half in 0..2 {
            let ql = &w.ql[64 * half..];
            let qh = &w.qh[32 * half..];
            let y = &x.qs[128 * half..];
            let sc = &w.scales[8 * half..];
            for l in 0..32 {
                let g = l / 16;
                let h = qh[l];
                let q = [
                    (ql[l] & 0xF) | ((h & 3) << 4),
                    (ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((h >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((h >> 6) & 3) << 4),
                ];
                for (part, &q) in q.iter().enumerate() {
                    sumi += sc[g + 2 * part] as i32 * q as i32 * y[32 * part + l] as i32;
                }
            }
        }
        sum += q6k_block(w, x, sumi - q6k_offset(w, x));
    }
    sum
}
