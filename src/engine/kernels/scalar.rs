//! Portable kernels: the oracle, and the definition of the lane model every
//! SIMD variant follows (see `mod.rs`).
//!
//! A block's integer products are summed exactly into [`LANES`] lanes: the
//! product of activation element `e` goes to lane `(e % 32) / 8`, the
//! granularity every instruction set reaches cheaply: AVX2's `maddubs`+`madd`
//! give 4-byte lanes that one `hadd` pairs, aarch64's `sdot` (or its
//! `smull` emulation) the same with one `addp`, and `smmla` sums 8 bytes per
//! output. Then each lane accumulates its block with one fused multiply-add,
//! and the row ends in one fixed reduction ([`reduce4`]). Integer sums do not
//! depend on their order, so any variant that keeps this lane assignment and
//! float order is bit-equal to this one.
//!
//! The 32-element types have a block per 32 elements, so their lanes are
//! eight: block `b`'s products go to lane `4 · (b % 2) + (e % 32) / 8`
//! (two blocks fill a 512-bit register; elsewhere two accumulators give
//! independent FMA chains), reduced as `reduce4(even) + reduce4(odd)`; a
//! min's term `m · s` (rounded, then added) goes to two more sums, of the
//! even and of the odd blocks, added last: two short dependency chains
//! instead of one long one, and the products come from the same vector
//! multiply as the blocks' scales.

use super::blocks::{
    f16_to_f32, legacy_values, q3k_scales, q4k_scales_mins, BlockQ2K, BlockQ3K, BlockQ6K, BlockQ8K, BlockQ8_1,
    KQuant45, Legacy, QK_K,
};

/// Float accumulators per row.
pub const LANES: usize = 4;

/// The lane an activation element's product is summed in.
#[inline]
fn lane(e: usize) -> usize {
    (e % 32) / 8
}

/// `(a0+a2) + (a1+a3)`.
#[inline]
pub fn reduce4(a: [f32; 4]) -> f32 {
    (a[0] + a[2]) + (a[1] + a[3])
}

/// One row's accumulators for Q4_K/Q5_K: four lanes of scaled sums and four
/// of mins (`madd` of eight mins with eight pair sums of `bsums`).
fn q4k_block<W: KQuant45>(w: &W, x: &BlockQ8K, acc: &mut [f32; LANES], accm: &mut [f32; 4]) {
    let sm = q4k_scales_mins(w.scales());
    let (scales, mins) = (&sm[..8], &sm[8..]);
    let mut sumi = [0i32; LANES];
    for j in 0..4 {
        for l in 0..32 {
            let (q, h) = (w.qs()[32 * j + l], if W::FIFTH_BIT { w.qh()[l] >> (2 * j) } else { 0 });
            let (q_lo, q_hi) = ((q & 0xF) | (h & 1) << 4, (q >> 4) | (h >> 1 & 1) << 4);
            let lo = scales[2 * j] as i32 * q_lo as i32 * x.qs[64 * j + l] as i32;
            let hi = scales[2 * j + 1] as i32 * q_hi as i32 * x.qs[64 * j + 32 + l] as i32;
            sumi[lane(64 * j + l)] += lo + hi;
        }
    }
    let d = x.d * f16_to_f32(w.d());
    let dmin = -x.d * f16_to_f32(w.dmin());
    for (a, s) in acc.iter_mut().zip(sumi) {
        *a = d.mul_add(s as f32, *a);
    }
    for (i, m) in accm.iter_mut().enumerate() {
        let pair = |s: usize| mins[s] as i32 * (x.bsums[2 * s] as i32 + x.bsums[2 * s + 1] as i32);
        *m = dmin.mul_add((pair(2 * i) + pair(2 * i + 1)) as f32, *m);
    }
}

/// Q4_K or Q5_K.
pub fn dot_q4k<W: KQuant45>(w: &[W], x: &[BlockQ8K]) -> f32 {
    let (mut acc, mut accm) = ([0f32; LANES], [0f32; 4]);
    for (w, x) in w.iter().zip(x) {
        q4k_block(w, x, &mut acc, &mut accm);
    }
    reduce4(acc) + reduce4(accm)
}

/// Q6_K: four lanes of `scale · (q − 32) · x`.
fn q6k_block(w: &BlockQ6K, x: &BlockQ8K, acc: &mut [f32; LANES]) {
    let mut sumi = [0i32; LANES];
    for half in 0..2 {
        let (ql, qh) = (&w.ql[64 * half..], &w.qh[32 * half..]);
        for l in 0..32 {
            let h = qh[l];
            let q = [
                (ql[l] & 0xF) | ((h & 3) << 4),
                (ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4),
                (ql[l] >> 4) | (((h >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((h >> 6) & 3) << 4),
            ];
            for (part, &q) in q.iter().enumerate() {
                let e = 128 * half + 32 * part + l;
                sumi[lane(e)] += w.scales[e / 16] as i32 * (q as i32 - 32) * x.qs[e] as i32;
            }
        }
    }
    let d = x.d * f16_to_f32(w.d);
    for (a, s) in acc.iter_mut().zip(sumi) {
        *a = d.mul_add(s as f32, *a);
    }
}

pub fn dot_q6k(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    let mut acc = [0f32; LANES];
    for (w, x) in w.iter().zip(x) {
        q6k_block(w, x, &mut acc);
    }
    reduce4(acc)
}

/// Element `e`'s two low bits in Q2_K's and Q3_K's `qs`, and its bit in Q3_K's
/// `hmask`: byte `l`, bit `4n + j` for element `128n + 32j + l`.
#[inline]
fn low_bits(qs: &[u8; 64], hmask: &[u8; 32], e: usize) -> (u8, u8) {
    let (n, j, l) = (e / 128, (e % 128) / 32, e % 32);
    ((qs[32 * n + l] >> (2 * j)) & 3, (hmask[l] >> (4 * n + j)) & 1)
}

/// Q2_K: four lanes of `s · q · x`, four of `m · bsum` (lane `i`: groups
/// `4i..4i + 4`, what a `madd` of sixteen mins with `bsums` then one `hadd`
/// leave).
fn q2k_block(w: &BlockQ2K, x: &BlockQ8K, acc: &mut [f32; LANES], accm: &mut [f32; 4]) {
    let mut sumi = [0i32; LANES];
    for e in 0..QK_K {
        let (q, _) = low_bits(&w.qs, &[0; 32], e);
        sumi[lane(e)] += (w.scales[e / 16] & 0xF) as i32 * q as i32 * x.qs[e] as i32;
    }
    let mut summ = [0i32; 4];
    for (g, (&s, &bsum)) in w.scales.iter().zip(&x.bsums).enumerate() {
        summ[g / 4] += (s >> 4) as i32 * bsum as i32;
    }
    fold_block(acc, accm, sumi, summ, x.d * f16_to_f32(w.d), -x.d * f16_to_f32(w.dmin));
}

/// Q2_K's and Q3_K's per-block float step: `acc += d · sumi`, `accm += dm · summ`, lane by lane.
fn fold_block(acc: &mut [f32; LANES], accm: &mut [f32; 4], sumi: [i32; LANES], summ: [i32; 4], d: f32, dm: f32) {
    for (a, s) in acc.iter_mut().zip(sumi) {
        *a = d.mul_add(s as f32, *a);
    }
    for (m, s) in accm.iter_mut().zip(summ) {
        *m = dm.mul_add(s as f32, *m);
    }
}

pub fn dot_q2k(w: &[BlockQ2K], x: &[BlockQ8K]) -> f32 {
    let (mut acc, mut accm) = ([0f32; LANES], [0f32; 4]);
    for (w, x) in w.iter().zip(x) {
        q2k_block(w, x, &mut acc, &mut accm);
    }
    reduce4(acc) + reduce4(accm)
}

/// Q3_K: four lanes of `(s − 32) · q · x` with `q` as stored (0..=7), and
/// the `− 4` of every value as Q2_K's mins are: four lanes of
/// `(s − 32) · bsum` (groups `4i..4i + 4` in lane `i`), times `−4 d`. The
/// activations' block sums stand in for a second product per element.
fn q3k_block(w: &BlockQ3K, x: &BlockQ8K, acc: &mut [f32; LANES], accm: &mut [f32; 4]) {
    let scales = q3k_scales(&w.scales);
    let mut sumi = [0i32; LANES];
    for e in 0..QK_K {
        let (low, high) = low_bits(&w.qs, &w.hmask, e);
        sumi[lane(e)] += scales[e / 16] as i32 * (low | high << 2) as i32 * x.qs[e] as i32;
    }
    let mut summ = [0i32; 4];
    for (g, (&s, &bsum)) in scales.iter().zip(&x.bsums).enumerate() {
        summ[g / 4] += s as i32 * bsum as i32;
    }
    let d = x.d * f16_to_f32(w.d);
    fold_block(acc, accm, sumi, summ, d, -4.0 * d);
}

pub fn dot_q3k(w: &[BlockQ3K], x: &[BlockQ8K]) -> f32 {
    let (mut acc, mut accm) = ([0f32; LANES], [0f32; 4]);
    for (w, x) in w.iter().zip(x) {
        q3k_block(w, x, &mut acc, &mut accm);
    }
    reduce4(acc) + reduce4(accm)
}

/// A 32-element type: eight lanes (see the module doc), and the min's chain.
pub fn dot_legacy<W: Legacy>(w: &[W], x: &[BlockQ8_1]) -> f32 {
    let mut acc = [[0f32; LANES]; 2];
    let mut accm = [0f32; 2];
    for (b, (w, x)) in w.iter().zip(x).enumerate() {
        let v = legacy_values(w);
        let mut sumi = [0i32; LANES];
        for (e, (&v, &y)) in v.iter().zip(&x.qs).enumerate() {
            sumi[e / 8] += v as i32 * y as i32;
        }
        let d = f16_to_f32(w.d()) * f16_to_f32(x.d);
        for (a, s) in acc[b % 2].iter_mut().zip(sumi) {
            *a = d.mul_add(s as f32, *a);
        }
        if W::HAS_MIN {
            accm[b % 2] += f16_to_f32(w.m()) * f16_to_f32(x.s);
        }
    }
    (reduce4(acc[0]) + reduce4(acc[1])) + (accm[0] + accm[1])
}
