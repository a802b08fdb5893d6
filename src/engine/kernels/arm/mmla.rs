//! aarch64 i8mm kernels: `smmla` multiplies a 2×8 block of i8 by an 8×2
//! one, so one instruction sums the 8-byte lanes of the oracle's model
//! (`scalar.rs`) for two weight rows against two activation rows: 32
//! products where `sdot` gives 16. So these kernels take pairs of weight rows
//! and pairs of activation rows, a prompt's matmul (decode, with one
//! activation row, has nothing to pair and stays on `sdot`).
//!
//! The four (weight row, activation row) combinations sit in a vector's
//! lanes as `smmla` leaves them, `[w0·y0, w0·y1, w1·y0, w1·y1]`, and the
//! oracle's four lanes are four such vectors: its float steps (one fused
//! multiply-add per lane and block, then `(a0+a2) + (a1+a3)`) run on four
//! combinations at a time, in its order, so the results are its bits. The
//! instruction's intrinsic is not stable in Rust, so it is inline `asm!`.

use std::arch::aarch64::*;

use super::super::blocks::{
    f16_to_f32, q4k_scales_mins, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, BlockQ8_1, KQuant45,
    Legacy,
};
use super::{accumulate, legacy_values, load, q6k_values, LowBits};

/// `acc + a·bᵀ` for `a` two rows of 8 weights and `b` two rows of 8
/// activations: `[a0·b0, a0·b1, a1·b0, a1·b1]` added to `acc`.
///
/// # Safety
/// The CPU must have i8mm.
#[inline(always)]
unsafe fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: the caller's promise.
    unsafe { accumulate::<true>(acc, a, b) }
}

/// Sixteen bytes of two rows as `smmla`'s operands: bytes 0..8 of both
/// (the oracle's lane `2h`), then bytes 8..16 of both (lane `2h + 1`).
#[inline(always)]
fn interleave(r0: int8x16_t, r1: int8x16_t) -> [int8x16_t; 2] {
    // SAFETY: NEON is part of every aarch64 target.
    unsafe {
        let (a, b) = (vreinterpretq_s64_s8(r0), vreinterpretq_s64_s8(r1));
        [vreinterpretq_s8_s64(vzip1q_s64(a, b)), vreinterpretq_s8_s64(vzip2q_s64(a, b))]
    }
}

/// `[a, a, b, b]`: a weight row's factor in its two combinations.
#[inline(always)]
fn per_weight(a: f32, b: f32) -> float32x4_t {
    // SAFETY: NEON.
    unsafe { vcombine_f32(vdup_n_f32(a), vdup_n_f32(b)) }
}

/// `[a, b, a, b]`: an activation row's factor in its two combinations.
#[inline(always)]
fn per_activation(a: f32, b: f32) -> float32x4_t {
    // SAFETY: NEON.
    unsafe { vld1q_f32([a, b, a, b].as_ptr()) }
}

/// The oracle's `reduce4` of four lane vectors, for each combination.
#[inline(always)]
fn reduce4(a: &[float32x4_t; 4]) -> float32x4_t {
    // SAFETY: NEON.
    unsafe { vaddq_f32(vaddq_f32(a[0], a[2]), vaddq_f32(a[1], a[3])) }
}

#[inline(always)]
fn lanes(v: float32x4_t) -> [f32; 4] {
    let mut out = [0f32; 4];
    // SAFETY: NEON; `out` holds four floats.
    unsafe { vst1q_f32(out.as_mut_ptr(), v) };
    out
}

/// A 256-element block as the oracle multiplies it: sixteen chunks of 16
/// values (chunk `c`: elements `16c..16c + 16`) with one integer scale
/// each, and, for the types that have them, the sixteen groups' factors of
/// the activations' block sums (lane `i` of the oracle's: groups
/// `4i..4i + 4`), times a float factor per block.
pub trait KBlock {
    const MINS: bool;
    /// Writes the chunks' values and scales; returns the block-sum factors.
    ///
    /// # Safety
    /// NEON (every aarch64 CPU).
    unsafe fn unpack(&self, q: &mut [int8x16_t; 16], scales: &mut [i32; 16]) -> int8x16_t;
    fn d(&self) -> f32;
    /// The block sums' float factor, given the activations' `yd` and `d = yd · d(w)`.
    fn min_scale(&self, yd: f32, d: f32) -> f32;
}

/// Q4_K and Q5_K: elements `64j..64j + 32` are the low nibbles of `qs[32j..]`
/// (scale `2j`), the next 32 the high ones (scale `2j + 1`); a min per 32.
macro_rules! kquant45_block {
    ($t:ty) => {
        impl KBlock for $t {
            const MINS: bool = true;
            #[inline(always)]
            unsafe fn unpack(&self, q: &mut [int8x16_t; 16], scales: &mut [i32; 16]) -> int8x16_t {
                // SAFETY: loads stay inside qs (128 bytes) and qh (32).
                unsafe {
                    let sm = q4k_scales_mins(self.scales());
                    let (nibble, fifth) = (vdupq_n_u8(0xF), vdupq_n_u8(0x10));
                    let mut qh = [vld1q_u8(self.qh().as_ptr()), vld1q_u8(self.qh().as_ptr().add(16))];
                    for j in 0..4 {
                        for h in 0..2 {
                            let v = vld1q_u8(self.qs().as_ptr().add(32 * j + 16 * h));
                            let (mut lo, mut hi) = (vandq_u8(v, nibble), vshrq_n_u8::<4>(v));
                            if <$t as KQuant45>::FIFTH_BIT {
                                lo = vorrq_u8(lo, vandq_u8(vshlq_n_u8::<4>(qh[h]), fifth));
                                hi = vorrq_u8(hi, vandq_u8(vshlq_n_u8::<3>(qh[h]), fifth));
                                qh[h] = vshrq_n_u8::<2>(qh[h]);
                            }
                            q[4 * j + h] = vreinterpretq_s8_u8(lo);
                            q[4 * j + 2 + h] = vreinterpretq_s8_u8(hi);
                            scales[4 * j + h] = sm[2 * j] as i32;
                            scales[4 * j + 2 + h] = sm[2 * j + 1] as i32;
                        }
                    }
                    // Group g (16 elements) has its 32's min: mins 0..8 each twice.
                    let mins = vld1_u8(sm.as_ptr().add(8));
                    vreinterpretq_s8_u8(vcombine_u8(vzip1_u8(mins, mins), vzip2_u8(mins, mins)))
                }
            }
            fn d(&self) -> f32 {
                f16_to_f32(KQuant45::d(self))
            }
            fn min_scale(&self, yd: f32, _: f32) -> f32 {
                -yd * f16_to_f32(self.dmin())
            }
        }
    };
}
kquant45_block!(BlockQ4K);
kquant45_block!(BlockQ5K);

impl KBlock for BlockQ6K {
    const MINS: bool = false;
    #[inline(always)]
    unsafe fn unpack(&self, q: &mut [int8x16_t; 16], scales: &mut [i32; 16]) -> int8x16_t {
        // SAFETY: NEON; half and h are 0 or 1.
        unsafe {
            for half in 0..2 {
                for h in 0..2 {
                    for (part, v) in q6k_values(self, half, h).into_iter().enumerate() {
                        // Elements 128·half + 32·part + 16h: chunk and scale group alike.
                        let c = 8 * half + 2 * part + h;
                        q[c] = v;
                        scales[c] = self.scales[c] as i32;
                    }
                }
            }
            vdupq_n_s8(0)
        }
    }
    fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
    fn min_scale(&self, _: f32, _: f32) -> f32 {
        0.0
    }
}

/// Q2_K and Q3_K: element `128n + 32j + l` is bits `2j` of `qs[32n + l]`
/// (and bit `4n + j` of `hmask[l]`); a scale and a block-sum factor per 16.
macro_rules! low_bits_block {
    ($t:ty) => {
        impl KBlock for $t {
            const MINS: bool = true;
            #[inline(always)]
            unsafe fn unpack(&self, q: &mut [int8x16_t; 16], scales: &mut [i32; 16]) -> int8x16_t {
                // SAFETY: loads stay inside qs (64 bytes) and hmask (32).
                unsafe {
                    let (low2, one) = (vdupq_n_u8(3), vdupq_n_u8(1));
                    let s = LowBits::scales(self);
                    for h in 0..2 {
                        let mut hm = vld1q_u8(self.hmask().as_ptr().add(16 * h));
                        for n in 0..2 {
                            let mut bits = vld1q_u8(self.qs().as_ptr().add(32 * n + 16 * h));
                            for j in 0..4 {
                                let mut v = vandq_u8(bits, low2);
                                if <$t as LowBits>::HIGH_BIT {
                                    v = vorrq_u8(v, vshlq_n_u8::<2>(vandq_u8(hm, one)));
                                    hm = vshrq_n_u8::<1>(hm);
                                }
                                bits = vshrq_n_u8::<2>(bits);
                                let c = 8 * n + 2 * j + h;
                                q[c] = vreinterpretq_s8_u8(v);
                                scales[c] = s[c] as i32;
                            }
                        }
                    }
                    vld1q_s8(self.mins(&s).as_ptr())
                }
            }
            fn d(&self) -> f32 {
                f16_to_f32(LowBits::d(self))
            }
            fn min_scale(&self, yd: f32, d: f32) -> f32 {
                LowBits::min_scale(self, yd, d)
            }
        }
    };
}
low_bits_block!(BlockQ2K);
low_bits_block!(BlockQ3K);

/// The oracle's four lanes of block-sum terms, `Σ m_g · bsum_g` over groups
/// `4i..4i + 4` in lane `i`, for factors `m` and one activation block.
///
/// # Safety
/// NEON.
#[inline(always)]
unsafe fn group_sums(m: int8x16_t, y: &BlockQ8K) -> int32x4_t {
    // SAFETY: bsums is 16 i16.
    unsafe {
        let (m0, m1) = (vmovl_s8(vget_low_s8(m)), vmovl_high_s8(m));
        let (b0, b1) = (vld1q_s16(y.bsums.as_ptr()), vld1q_s16(y.bsums.as_ptr().add(8)));
        let lo = vpaddq_s32(vmull_s16(vget_low_s16(m0), vget_low_s16(b0)), vmull_high_s16(m0, b0));
        let hi = vpaddq_s32(vmull_s16(vget_low_s16(m1), vget_low_s16(b1)), vmull_high_s16(m1, b1));
        vpaddq_s32(lo, hi)
    }
}

/// `Σ w[p]·x[r]` for two rows of 256-element blocks and `R` activation rows
/// (`R` even: rows `2i` and `2i + 1` pair).
///
/// # Safety
/// The CPU must have i8mm; both weight rows and every `x[r]` are equally long.
#[inline(always)]
unsafe fn dot_kquant<W: KBlock, const R: usize>(w: [&[W]; 2], x: [&[BlockQ8K]; R]) -> [[f32; R]; 2] {
    // SAFETY (the whole body): loads stay inside the activations' 256 quants
    // (16c for c < 16); the rest is register arithmetic.
    unsafe {
        let zero = vdupq_n_s32(0);
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        // The block-sum terms: per pair of activation rows, per combination.
        let mut accm = [[vdupq_n_f32(0.0); 4]; R];
        let (mut q0, mut q1) = ([vdupq_n_s8(0); 16], [vdupq_n_s8(0); 16]);
        let (mut s0, mut s1) = ([0i32; 16], [0i32; 16]);
        for b in 0..w[0].len() {
            let (w0, w1) = (&w[0][b], &w[1][b]);
            let m = [w0.unpack(&mut q0, &mut s0), w1.unpack(&mut q1, &mut s1)];
            let wq: [[int8x16_t; 2]; 16] = std::array::from_fn(|c| interleave(q0[c], q1[c]));
            let scale: [int32x4_t; 16] = std::array::from_fn(|c| vld1q_s32([s0[c], s0[c], s1[c], s1[c]].as_ptr()));
            let wd = [w0.d(), w1.d()];
            for p in 0..R / 2 {
                let y = [&x[2 * p][b], &x[2 * p + 1][b]];
                let mut sumi = [zero; 4];
                for c in 0..16 {
                    let v = interleave(load(y[0].qs.as_ptr().add(16 * c)), load(y[1].qs.as_ptr().add(16 * c)));
                    let h = c % 2;
                    sumi[2 * h] = vmlaq_s32(sumi[2 * h], smmla(zero, wq[c][0], v[0]), scale[c]);
                    sumi[2 * h + 1] = vmlaq_s32(sumi[2 * h + 1], smmla(zero, wq[c][1], v[1]), scale[c]);
                }
                let d = vmulq_f32(per_activation(y[0].d, y[1].d), per_weight(wd[0], wd[1]));
                for (a, s) in acc[p].iter_mut().zip(sumi) {
                    *a = vfmaq_f32(*a, vcvtq_f32_s32(s), d);
                }
                if W::MINS {
                    for (k, a) in accm[p].iter_mut().enumerate() {
                        let (wr, yr) = (k / 2, k % 2);
                        let dm = [w0, w1][wr].min_scale(y[yr].d, y[yr].d * wd[wr]);
                        *a = vfmaq_f32(*a, vcvtq_f32_s32(group_sums(m[wr], y[yr])), vdupq_n_f32(dm));
                    }
                }
            }
        }
        let mut out = [[0f32; R]; 2];
        for p in 0..R / 2 {
            for (k, v) in lanes(reduce4(&acc[p])).into_iter().enumerate() {
                out[k / 2][2 * p + k % 2] = if W::MINS { v + super::reduce4(accm[p][k]) } else { v };
            }
        }
        out
    }
}

/// `Σ w[p]·x[r]` for two rows of 32-element blocks and `R` activation rows
/// (`R` even), in the oracle's eight lanes (even and odd blocks) and its
/// two chains of min terms.
///
/// # Safety
/// As for [`dot_kquant`]; the activations must be within ±127.
#[inline(always)]
unsafe fn dot_legacy<W: Legacy, const R: usize>(w: [&[W]; 2], x: [&[BlockQ8_1]; R]) -> [[f32; R]; 2] {
    // SAFETY (the whole body): y.qs is 32 bytes, read at 0 and 16.
    unsafe {
        let mut acc = [[[vdupq_n_f32(0.0); 4]; 2]; R];
        let mut accm = [[vdupq_n_f32(0.0); 2]; R];
        for b in 0..w[0].len() {
            let (w0, w1) = (&w[0][b], &w[1][b]);
            let (v0, v1) = (legacy_values(w0), legacy_values(w1));
            let wq = [interleave(v0[0], v1[0]), interleave(v0[1], v1[1])];
            let wd = per_weight(f16_to_f32(w0.d()), f16_to_f32(w1.d()));
            let wm = per_weight(f16_to_f32(w0.m()), f16_to_f32(w1.m()));
            for p in 0..R / 2 {
                let y = [&x[2 * p][b], &x[2 * p + 1][b]];
                let mut sumi = [vdupq_n_s32(0); 4];
                for c in 0..2 {
                    let v = interleave(load(y[0].qs.as_ptr().add(16 * c)), load(y[1].qs.as_ptr().add(16 * c)));
                    sumi[2 * c] = smmla(sumi[2 * c], wq[c][0], v[0]);
                    sumi[2 * c + 1] = smmla(sumi[2 * c + 1], wq[c][1], v[1]);
                }
                let d = vmulq_f32(wd, per_activation(f16_to_f32(y[0].d), f16_to_f32(y[1].d)));
                for (a, s) in acc[p][b % 2].iter_mut().zip(sumi) {
                    *a = vfmaq_f32(*a, vcvtq_f32_s32(s), d);
                }
                if W::HAS_MIN {
                    // The oracle rounds the product, then adds it: no fusing.
                    let ms = vmulq_f32(wm, per_activation(f16_to_f32(y[0].s), f16_to_f32(y[1].s)));
                    accm[p][b % 2] = vaddq_f32(accm[p][b % 2], ms);
                }
            }
        }
        let mut out = [[0f32; R]; 2];
        for p in 0..R / 2 {
            let sums = vaddq_f32(reduce4(&acc[p][0]), reduce4(&acc[p][1]));
            let total = vaddq_f32(sums, vaddq_f32(accm[p][0], accm[p][1]));
            for (k, v) in lanes(total).into_iter().enumerate() {
                out[k / 2][2 * p + k % 2] = v;
            }
        }
        out
    }
}

/// The entry points, compiled with i8mm enabled.
macro_rules! entry {
    ($name:ident, $block:ty) => {
        /// # Safety
        /// The CPU must have i8mm; `R` even; both weight rows and every `x[r]` equally long.
        #[target_feature(enable = "neon,dotprod,i8mm")]
        pub unsafe fn $name<const R: usize>(w: [&[$block]; 2], x: [&[BlockQ8K]; R]) -> [[f32; R]; 2] {
            // SAFETY: the caller's promise.
            unsafe { dot_kquant(w, x) }
        }
    };
}
entry!(dot_pair_q2k, BlockQ2K);
entry!(dot_pair_q3k, BlockQ3K);
entry!(dot_pair_q4k, BlockQ4K);
entry!(dot_pair_q5k, BlockQ5K);
entry!(dot_pair_q6k, BlockQ6K);

/// # Safety
/// As for the K-quants' entry points; activations within ±127.
#[target_feature(enable = "neon,dotprod,i8mm")]
pub unsafe fn dot_pair_legacy<W: Legacy, const R: usize>(w: [&[W]; 2], x: [&[BlockQ8_1]; R]) -> [[f32; R]; 2] {
    // SAFETY: the caller's promise.
    unsafe { dot_legacy(w, x) }
}
