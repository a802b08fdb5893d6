//! aarch64 kernels in the oracle's lane model (`scalar.rs`), in two
//! flavours that differ only in how sixteen i8 × i8 products become four
//! i32 lanes of 4 bytes each ([`Dot4`]):
//! - `neon`: `smull` + pairwise adds, which every ARMv8 core has;
//! - `dotprod`: one `sdot` (ARMv8.2 dotprod: phones since ~2018). Its
//!   intrinsic is not stable in Rust, so it is inline `asm!`.
//!
//! Two such registers (32 bytes) pair into the model's four 8-byte lanes
//! with one `addp`. Like the x86 kernels, each takes `R` activation rows per
//! weight row and unpacks the weights once for all of them. i8mm's kernels,
//! which take two weight rows, are in [`mmla`].

pub mod mmla;

use std::arch::aarch64::*;
use std::arch::asm;

use super::blocks::{
    f16_to_f32, q3k_scales, q4k_scales_mins, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, BlockQ8_1,
    KQuant45, Legacy, Packing,
};

/// Sixteen signed byte products summed into four i32 lanes, lane `l`
/// holding bytes `4l..4l + 4`, added to `acc`.
pub trait Dot4 {
    /// # Safety
    /// The CPU must have the instructions the implementation uses.
    unsafe fn dot4(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// Plain NEON.
pub struct Neon;
/// ARMv8.2 `sdot`.
pub struct Dotprod;

impl Dot4 for Neon {
    #[inline(always)]
    unsafe fn dot4(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // The weights' side is within -128..127 and the activations' within
        // ±127 (Q8_1) or the weights' within ±63 (Q4_K: 0..15, Q6_K:
        // -32..31): a product is within ±16 256 and a pair fits i16; pairs
        // of pairs are widened to i32.
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vaddq_s32(acc, vpaddlq_s16(vpaddq_s16(lo, hi)))
    }
}

/// `acc` after `op acc.4s, a.16b, b.16b`, an i8 → i32 accumulating
/// instruction whose intrinsic is not stable in Rust (`sdot`, `smmla`).
///
/// # Safety
/// The CPU must have the instruction's feature.
#[inline(always)]
unsafe fn accumulate<const SMMLA: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: the instruction reads and writes registers only; the caller
    // promises the CPU has it.
    unsafe {
        if SMMLA {
            asm!("smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b", acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
                options(pure, nomem, nostack));
        } else {
            asm!("sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b", acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
                options(pure, nomem, nostack));
        }
    }
    acc
}

impl Dot4 for Dotprod {
    #[inline(always)]
    unsafe fn dot4(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        // SAFETY: the caller promises dotprod.
        unsafe { accumulate::<false>(acc, a, b) }
    }
}

/// The oracle's `reduce4`: `(a0+a2) + (a1+a3)`.
#[inline(always)]
fn reduce4(a: float32x4_t) -> f32 {
    // SAFETY: NEON is part of every aarch64 target.
    unsafe { vpadds_f32(vadd_f32(vget_low_f32(a), vget_high_f32(a))) }
}

/// 16 bytes at `p`.
///
/// # Safety
/// `p..p + 16` must be readable.
#[inline(always)]
unsafe fn load(p: *const i8) -> int8x16_t {
    // SAFETY: the caller's promise.
    unsafe { vld1q_s8(p) }
}

/// `Σ w·x[r]` over one row of Q4_K or Q5_K blocks, for `R` activation rows.
///
/// # Safety
/// The CPU must have what `D` uses (`Variant::supported()`), and every `x[r]`
/// must be at least as long as `w`.
#[inline(always)]
pub unsafe fn dot_q4k<W: KQuant45, D: Dot4, const R: usize>(w: &[W], x: [&[BlockQ8K]; R]) -> [f32; R] {
    // SAFETY (the whole body): loads stay inside the blocks' fixed-size
    // arrays, as each offset says; the rest is register arithmetic.
    unsafe {
        let (nibble, fifth) = (vdupq_n_u8(0xF), vdupq_n_u8(0x10));
        let zero = vdupq_n_s32(0);
        let mut acc = [vdupq_n_f32(0.0); R];
        let mut accm = [vdupq_n_f32(0.0); R];
        for (b, w) in w.iter().enumerate() {
            let sm = q4k_scales_mins(w.scales());
            // Q5_K's fifth bits (qh: 32 bytes, two halves), shifted right by
            // 2 per sub-block pair: bits 0 and 1 are then those of j.
            let mut qh = if W::FIFTH_BIT {
                [vld1q_u8(w.qh().as_ptr()), vld1q_u8(w.qh().as_ptr().add(16))]
            } else {
                [vdupq_n_u8(0); 2]
            };
            let mins = vmovl_u8(vld1_u8(sm.as_ptr().add(8)));
            let mins = vreinterpretq_s16_u16(mins);
            // Two accumulators: bytes 0..16 and 16..32 of each 32, paired at the end.
            let mut sumi = [[zero; 2]; R];
            for j in 0..4 {
                let (lo_scale, hi_scale) = (sm[2 * j] as i32, sm[2 * j + 1] as i32);
                // qs: 128 bytes, read at 32j and 32j + 16.
                let q = [vld1q_u8(w.qs().as_ptr().add(32 * j)), vld1q_u8(w.qs().as_ptr().add(32 * j + 16))];
                let (mut lo, mut hi) = (q.map(|q| vandq_u8(q, nibble)), q.map(|q| vshrq_n_u8::<4>(q)));
                if W::FIFTH_BIT {
                    for h in 0..2 {
                        lo[h] = vorrq_u8(lo[h], vandq_u8(vshlq_n_u8::<4>(qh[h]), fifth));
                        hi[h] = vorrq_u8(hi[h], vandq_u8(vshlq_n_u8::<3>(qh[h]), fifth));
                    }
                    qh = qh.map(|q| vshrq_n_u8::<2>(q));
                }
                let s8 = |v: [uint8x16_t; 2]| [vreinterpretq_s8_u8(v[0]), vreinterpretq_s8_u8(v[1])];
                let (lo, hi) = (s8(lo), s8(hi));
                for r in 0..R {
                    // x.qs: 256 bytes, read at 64j + 16h and 64j + 32 + 16h.
                    let y = x[r][b].qs.as_ptr().add(64 * j);
                    for h in 0..2 {
                        let plo = D::dot4(zero, lo[h], load(y.add(16 * h)));
                        let phi = D::dot4(zero, hi[h], load(y.add(32 + 16 * h)));
                        sumi[r][h] = vmlaq_n_s32(vmlaq_n_s32(sumi[r][h], plo, lo_scale), phi, hi_scale);
                    }
                }
            }
            let (wd, wdmin) = (f16_to_f32(w.d()), f16_to_f32(w.dmin()));
            for r in 0..R {
                let y = &x[r][b];
                let sum = vcvtq_f32_s32(vpaddq_s32(sumi[r][0], sumi[r][1]));
                acc[r] = vfmaq_f32(acc[r], sum, vdupq_n_f32(y.d * wd));
                // bsums: 16 i16, adjacent pairs summed, times the mins, paired.
                let pairs = vpaddq_s16(vld1q_s16(y.bsums.as_ptr()), vld1q_s16(y.bsums.as_ptr().add(8)));
                let prod = vpaddq_s32(vmull_s16(vget_low_s16(mins), vget_low_s16(pairs)), vmull_high_s16(mins, pairs));
                accm[r] = vfmaq_f32(accm[r], vcvtq_f32_s32(prod), vdupq_n_f32(-y.d * wdmin));
            }
        }
        std::array::from_fn(|r| reduce4(acc[r]) + reduce4(accm[r]))
    }
}

/// A Q6_K block's values `q − 32` at elements `128·half + 32·part + 16h`
/// (sixteen each) for `part` 0..4.
///
/// # Safety
/// NEON (every aarch64 CPU); `half` and `h` are 0 or 1.
#[inline(always)]
unsafe fn q6k_values(w: &BlockQ6K, half: usize, h: usize) -> [int8x16_t; 4] {
    // SAFETY: ql is 128 bytes, read at 64·half + 16h (+ 32); qh 64, read at 32·half + 16h.
    unsafe {
        let (low4, low2) = (vdupq_n_u8(0xF), vdupq_n_u8(3));
        let ql0 = vld1q_u8(w.ql.as_ptr().add(64 * half + 16 * h));
        let ql1 = vld1q_u8(w.ql.as_ptr().add(64 * half + 32 + 16 * h));
        let qh = vld1q_u8(w.qh.as_ptr().add(32 * half + 16 * h));
        let high = |qh: uint8x16_t| vshlq_n_u8::<4>(vandq_u8(qh, low2));
        [
            vorrq_u8(vandq_u8(ql0, low4), high(qh)),
            vorrq_u8(vandq_u8(ql1, low4), high(vshrq_n_u8::<2>(qh))),
            vorrq_u8(vshrq_n_u8::<4>(ql0), high(vshrq_n_u8::<4>(qh))),
            vorrq_u8(vshrq_n_u8::<4>(ql1), high(vshrq_n_u8::<6>(qh))),
        ]
        .map(|q| vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(32)))
    }
}

/// `Σ w·x[r]` over one row of Q6_K blocks, for `R` activation rows.
///
/// # Safety
/// As for [`dot_q4k`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `h` also offsets the loads
pub unsafe fn dot_q6k<D: Dot4, const R: usize>(w: &[BlockQ6K], x: [&[BlockQ8K]; R]) -> [f32; R] {
    // SAFETY (the whole body): as in `dot_q4k`.
    unsafe {
        let zero = vdupq_n_s32(0);
        let mut acc = [vdupq_n_f32(0.0); R];
        for (b, w) in w.iter().enumerate() {
            let mut sumi = [[zero; 2]; R];
            for half in 0..2 {
                for h in 0..2 {
                    for (part, q) in q6k_values(w, half, h).into_iter().enumerate() {
                        // The 16 elements from 128·half + 32·part + 16h: one scale group.
                        let e = 128 * half + 32 * part + 16 * h;
                        let scale = w.scales[e / 16] as i32;
                        for r in 0..R {
                            // x.qs: 256 bytes, read at e.
                            let p = D::dot4(zero, q, load(x[r][b].qs.as_ptr().add(e)));
                            sumi[r][h] = vmlaq_n_s32(sumi[r][h], p, scale);
                        }
                    }
                }
            }
            let wd = f16_to_f32(w.d);
            for r in 0..R {
                let sum = vcvtq_f32_s32(vpaddq_s32(sumi[r][0], sumi[r][1]));
                acc[r] = vfmaq_f32(acc[r], sum, vdupq_n_f32(x[r][b].d * wd));
            }
        }
        std::array::from_fn(|r| reduce4(acc[r]))
    }
}

/// `Σ w·x[r]` over one row of Q2_K or Q3_K blocks (`W`), for `R` activation
/// rows: their 2-bit fields share a layout, and both have a per-group term
/// times the activations' block sums (Q2_K's mins; Q3_K's `− 4`, see the
/// oracle); Q3_K adds a high bit and signed scales.
///
/// # Safety
/// As for [`dot_q4k`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `h` also offsets the loads
pub unsafe fn dot_low_bits<W: LowBits, D: Dot4, const R: usize>(w: &[W], x: [&[BlockQ8K]; R]) -> [f32; R] {
    // SAFETY (the whole body): as in `dot_q4k`.
    unsafe {
        let (low2, one) = (vdupq_n_u8(3), vdupq_n_u8(1));
        let zero = vdupq_n_s32(0);
        let mut acc = [vdupq_n_f32(0.0); R];
        let mut accm = [vdupq_n_f32(0.0); R];
        for (b, w) in w.iter().enumerate() {
            let scales = w.scales();
            let mut sumi = [[zero; 2]; R];
            for h in 0..2 {
                // hmask: 32 bytes at 16h; bit 0 of each byte is then bit 4n + j.
                let mut hm = if W::HIGH_BIT { vld1q_u8(w.hmask().as_ptr().add(16 * h)) } else { vdupq_n_u8(0) };
                for n in 0..2 {
                    // qs: 64 bytes at 32n + 16h.
                    let mut q = vld1q_u8(w.qs().as_ptr().add(32 * n + 16 * h));
                    for j in 0..4 {
                        let mut v = vandq_u8(q, low2);
                        if W::HIGH_BIT {
                            v = vorrq_u8(v, vshlq_n_u8::<2>(vandq_u8(hm, one)));
                            hm = vshrq_n_u8::<1>(hm);
                        }
                        q = vshrq_n_u8::<2>(q);
                        let e = 128 * n + 32 * j + 16 * h;
                        let scale = scales[e / 16] as i32;
                        for r in 0..R {
                            // x.qs: 256 bytes, read at e.
                            let p = D::dot4(zero, vreinterpretq_s8_u8(v), load(x[r][b].qs.as_ptr().add(e)));
                            sumi[r][h] = vmlaq_n_s32(sumi[r][h], p, scale);
                        }
                    }
                }
            }
            // The per-group terms' factors, as two i16 halves.
            let m = vld1q_s8(w.mins(&scales).as_ptr());
            let (m0, m1) = (vmovl_s8(vget_low_s8(m)), vmovl_high_s8(m));
            let wd = f16_to_f32(w.d());
            for r in 0..R {
                let y = &x[r][b];
                let d = y.d * wd;
                let sum = vcvtq_f32_s32(vpaddq_s32(sumi[r][0], sumi[r][1]));
                acc[r] = vfmaq_f32(acc[r], sum, vdupq_n_f32(d));
                // Groups 4i..4i + 4 in lane i, as the oracle's.
                let (b0, b1) = (vld1q_s16(y.bsums.as_ptr()), vld1q_s16(y.bsums.as_ptr().add(8)));
                let lo = vpaddq_s32(vmull_s16(vget_low_s16(m0), vget_low_s16(b0)), vmull_high_s16(m0, b0));
                let hi = vpaddq_s32(vmull_s16(vget_low_s16(m1), vget_low_s16(b1)), vmull_high_s16(m1, b1));
                accm[r] = vfmaq_f32(accm[r], vcvtq_f32_s32(vpaddq_s32(lo, hi)), vdupq_n_f32(w.min_scale(y.d, d)));
            }
        }
        std::array::from_fn(|r| reduce4(acc[r]) + reduce4(accm[r]))
    }
}

/// What [`dot_low_bits`] reads of a Q2_K or Q3_K block.
pub trait LowBits {
    const HIGH_BIT: bool;
    fn qs(&self) -> &[u8; 64];
    fn hmask(&self) -> &[u8; 32];
    /// The sixteen groups' scales as the oracle multiplies them.
    fn scales(&self) -> [i8; 16];
    fn d(&self) -> u16;
    /// The sixteen per-group factors of the block sums, given `scales()`.
    fn mins(&self, scales: &[i8; 16]) -> [i8; 16];
    /// Their float factor, given the activations' `yd` and `d = yd · d(w)`.
    fn min_scale(&self, yd: f32, d: f32) -> f32;
}

impl LowBits for BlockQ2K {
    const HIGH_BIT: bool = false;
    fn qs(&self) -> &[u8; 64] {
        &self.qs
    }
    fn hmask(&self) -> &[u8; 32] {
        &[0; 32]
    }
    fn scales(&self) -> [i8; 16] {
        self.scales.map(|s| (s & 0xF) as i8)
    }
    fn d(&self) -> u16 {
        self.d
    }
    fn mins(&self, _: &[i8; 16]) -> [i8; 16] {
        self.scales.map(|s| (s >> 4) as i8)
    }
    fn min_scale(&self, yd: f32, _: f32) -> f32 {
        -yd * f16_to_f32(self.dmin)
    }
}

impl LowBits for BlockQ3K {
    const HIGH_BIT: bool = true;
    fn qs(&self) -> &[u8; 64] {
        &self.qs
    }
    fn hmask(&self) -> &[u8; 32] {
        &self.hmask
    }
    fn scales(&self) -> [i8; 16] {
        q3k_scales(&self.scales)
    }
    fn d(&self) -> u16 {
        self.d
    }
    fn mins(&self, scales: &[i8; 16]) -> [i8; 16] {
        // Q3_K's `− 4` is weighted by the group scales themselves.
        *scales
    }
    fn min_scale(&self, _: f32, d: f32) -> f32 {
        -4.0 * d
    }
}

/// A 32-element block's values `stored − OFFSET`: elements 0..16, 16..32.
///
/// # Safety
/// NEON (every aarch64 CPU).
#[inline(always)]
unsafe fn legacy_values<W: Legacy>(w: &W) -> [int8x16_t; 2] {
    // SAFETY: qs is 16 bytes (32 for Q8_0), read within.
    unsafe {
        let qs = w.qs().as_ptr();
        let v = if W::PACKING == Packing::Bytes {
            [vld1q_u8(qs), vld1q_u8(qs.add(16))]
        } else {
            let q = vld1q_u8(qs);
            let mut v = [vandq_u8(q, vdupq_n_u8(0xF)), vshrq_n_u8::<4>(q)];
            if W::PACKING == Packing::Nibbles5 {
                // Bit e of qh into byte e: bytes take qh's byte e / 8 and test bit e % 8.
                let qh = w.qh().to_le_bytes();
                let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
                for (h, v) in v.iter_mut().enumerate() {
                    let bytes = vcombine_u8(vdup_n_u8(qh[2 * h]), vdup_n_u8(qh[2 * h + 1]));
                    *v = vorrq_u8(*v, vandq_u8(vtstq_u8(bytes, bit), vdupq_n_u8(0x10)));
                }
            }
            v
        };
        v.map(|v| vsubq_s8(vreinterpretq_s8_u8(v), vdupq_n_s8(W::OFFSET)))
    }
}

/// `Σ w·x[r]` over one row of 32-element blocks, for `R` activation rows in
/// the oracle's eight lanes (one accumulator for even blocks, one for odd).
///
/// # Safety
/// As for [`dot_q4k`]; the activations must be within ±127.
#[inline(always)]
pub unsafe fn dot_legacy<W: Legacy, D: Dot4, const R: usize>(w: &[W], x: [&[BlockQ8_1]; R]) -> [f32; R] {
    // SAFETY (the whole body): as in `dot_q4k`; y.qs is 32 bytes.
    unsafe {
        let zero = vdupq_n_s32(0);
        let mut acc = [[vdupq_n_f32(0.0); 2]; R];
        let mut accm = [[0f32; 2]; R];
        for (b, w) in w.iter().enumerate() {
            let v = legacy_values(w);
            let wd = f16_to_f32(w.d());
            for r in 0..R {
                let y = &x[r][b];
                let p0 = D::dot4(zero, v[0], load(y.qs.as_ptr()));
                let p1 = D::dot4(zero, v[1], load(y.qs.as_ptr().add(16)));
                let sum = vcvtq_f32_s32(vpaddq_s32(p0, p1));
                acc[r][b % 2] = vfmaq_f32(acc[r][b % 2], sum, vdupq_n_f32(wd * f16_to_f32(y.d)));
                if W::HAS_MIN {
                    accm[r][b % 2] += f16_to_f32(w.m()) * f16_to_f32(y.s);
                }
            }
        }
        std::array::from_fn(|r| (reduce4(acc[r][0]) + reduce4(acc[r][1])) + (accm[r][0] + accm[r][1]))
    }
}

/// The entry points: the generic kernels compiled with each flavour's
/// instructions enabled.
macro_rules! entry {
    ($name:ident, $kernel:path, $block:ty, $features:literal) => {
        /// # Safety
        /// The CPU must have the enabled features; every `x[r]` at least as long as `w`.
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const R: usize>(w: &[$block], x: [&[BlockQ8K]; R]) -> [f32; R] {
            // SAFETY: the caller's promise.
            unsafe { $kernel(w, x) }
        }
    };
}
entry!(dot_q4k_neon, dot_q4k::<BlockQ4K, Neon, R>, BlockQ4K, "neon");
entry!(dot_q4k_dotprod, dot_q4k::<BlockQ4K, Dotprod, R>, BlockQ4K, "neon,dotprod");
entry!(dot_q5k_neon, dot_q4k::<BlockQ5K, Neon, R>, BlockQ5K, "neon");
entry!(dot_q5k_dotprod, dot_q4k::<BlockQ5K, Dotprod, R>, BlockQ5K, "neon,dotprod");
entry!(dot_q2k_neon, dot_low_bits::<BlockQ2K, Neon, R>, BlockQ2K, "neon");
entry!(dot_q2k_dotprod, dot_low_bits::<BlockQ2K, Dotprod, R>, BlockQ2K, "neon,dotprod");
entry!(dot_q3k_neon, dot_low_bits::<BlockQ3K, Neon, R>, BlockQ3K, "neon");
entry!(dot_q3k_dotprod, dot_low_bits::<BlockQ3K, Dotprod, R>, BlockQ3K, "neon,dotprod");
entry!(dot_q6k_neon, dot_q6k::<Neon, R>, BlockQ6K, "neon");
entry!(dot_q6k_dotprod, dot_q6k::<Dotprod, R>, BlockQ6K, "neon,dotprod");

/// # Safety
/// NEON; activations within ±127; every `x[r]` at least as long as `w`.
#[target_feature(enable = "neon")]
pub unsafe fn dot_legacy_neon<W: Legacy, const R: usize>(w: &[W], x: [&[BlockQ8_1]; R]) -> [f32; R] {
    // SAFETY: the caller's promise.
    unsafe { dot_legacy::<W, Neon, R>(w, x) }
}

/// # Safety
/// As for [`dot_legacy_neon`], and dotprod.
#[target_feature(enable = "neon,dotprod")]
pub unsafe fn dot_legacy_dotprod<W: Legacy, const R: usize>(w: &[W], x: [&[BlockQ8_1]; R]) -> [f32; R] {
    // SAFETY: the caller's promise.
    unsafe { dot_legacy::<W, Dotprod, R>(w, x) }
}
