//! x86-64 AVX2 kernels in the oracle's lane model (`scalar.rs`): per block,
//! exact integer sums in the eight i32 lanes of a register, paired into the
//! model's four lanes, one FMA per lane, one reduction per row at the end.
//!
//! Each kernel takes `R` activation rows for one weight row: the weights'
//! unpacking (nibbles, 6-bit high bits, scales) is done once and reused by
//! every row, which is what makes a prompt cheaper per token than decoding.
//! Each row's arithmetic is the same whatever `R` is, so a batch equals its
//! rows one by one. Q4_K and Q5_K also take a prompt's pair of weight rows
//! ([`dot_pair_q4k`]), which share the activations' loads and float steps
//! ([`Q4kPairs`], used by the AVX-512 kernels too): 1.25–1.30× the prefill.

mod q4k;

pub use q4k::{dot_pair_q4k, dot_q4k};
pub(super) use q4k::{scales_mins, Q4kOne, Q4kPairs};

use std::arch::x86_64::*;

use super::blocks::{f16_to_f32, q3k_scale_words, BlockQ2K, BlockQ3K, BlockQ6K, BlockQ8K, BlockQ8_1, Legacy, Packing};

/// Eight i32 lanes of 4 bytes each, as the model's four lanes of 8 bytes.
#[inline]
#[target_feature(enable = "avx2")]
fn pair_lanes(v: __m256i) -> __m128 {
    _mm_cvtepi32_ps(_mm_hadd_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)))
}

/// The oracle's `reduce4`: `(a0+a2) + (a1+a3)`.
#[inline]
#[target_feature(enable = "avx2")]
fn reduce4(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// 32 bytes at `p`.
///
/// # Safety
/// `p..p + 32` must be readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load(p: *const u8) -> __m256i {
    // SAFETY: the caller's promise; unaligned loads have no other requirement.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// `Σ w·x[r]` over one row of Q6_K blocks, for `R` activation rows.
///
/// # Safety
/// As for [`dot_q4k`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q6k<const R: usize>(w: &[BlockQ6K], x: [&[BlockQ8K]; R]) -> [f32; R] {
    let (low4, low2, offset) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(3), _mm256_set1_epi8(32));
    let mut acc = [_mm_setzero_ps(); R];
    for (b, w) in w.iter().enumerate() {
        // SAFETY: scales is 16 bytes.
        let scales =
            widen_scales(_mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(w.scales.as_ptr() as *const __m128i) }));
        let mut sumi = [_mm256_setzero_si256(); R];
        for half in 0..2 {
            // SAFETY: ql (128 bytes) at 64h and 64h + 32, qh (64) at 32h.
            let (ql0, ql1, qh) = unsafe {
                (
                    load(w.ql.as_ptr().add(64 * half)),
                    load(w.ql.as_ptr().add(64 * half + 32)),
                    load(w.qh.as_ptr().add(32 * half)),
                )
            };
            let high = |h: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(h, low2));
            let quants = [
                _mm256_or_si256(_mm256_and_si256(ql0, low4), high(qh)),
                _mm256_or_si256(_mm256_and_si256(ql1, low4), high(_mm256_srli_epi16::<2>(qh))),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low4), high(_mm256_srli_epi16::<4>(qh))),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low4), high(_mm256_srli_epi16::<6>(qh))),
            ];
            for (part, q) in quants.into_iter().enumerate() {
                let scale = group_scales(&scales, 8 * half + 2 * part);
                for r in 0..R {
                    // SAFETY: x.qs holds 256 bytes; 128h + 32p + 32 ≤ 256.
                    let y = unsafe { load(x[r][b].qs.as_ptr().add(128 * half + 32 * part) as _) };
                    // q ≤ 63: a pair of q·y is within ±16 128, of 32·y within
                    // ±8 192, so their difference fits i16; × an i8 scale and
                    // paired: < 2^23 per lane.
                    let p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, y), _mm256_maddubs_epi16(offset, y));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, scale));
                }
            }
        }
        let wd = f16_to_f32(w.d);
        for r in 0..R {
            acc[r] = _mm_fmadd_ps(_mm_set1_ps(x[r][b].d * wd), pair_lanes(sumi[r]), acc[r]);
        }
    }
    std::array::from_fn(|r| reduce4(acc[r]))
}

/// Sixteen group scales, already widened to i16 (`all`), as two registers:
/// groups 0..8 in both 128-bit halves of the first, 8..16 of the second.
#[inline]
#[target_feature(enable = "avx2")]
fn widen_scales(all: __m256i) -> [__m256i; 2] {
    [_mm256_permute2x128_si256::<0x00>(all, all), _mm256_permute2x128_si256::<0x11>(all, all)]
}

/// The scales of groups `g` (even) and `g + 1`, 16 elements each (the two
/// 128-bit halves of 32 elements), from [`widen_scales`]: `g`'s in the low
/// eight i16 lanes. One in-lane shuffle.
#[inline]
#[target_feature(enable = "avx2")]
fn group_scales(wide: &[__m256i; 2], g: usize) -> __m256i {
    let lane = |i: usize| (((2 * i + 1) << 8) | (2 * i)) as i16;
    let i = g % 8;
    _mm256_shuffle_epi8(wide[g / 8], _mm256_set_m128i(_mm_set1_epi16(lane(i + 1)), _mm_set1_epi16(lane(i))))
}

/// A block's integer sums (`sumi`: eight i32 lanes of 4 bytes) and its
/// block-sum term (`prod`: eight lanes of two groups) as the oracle's lanes
/// in one register, `[S0 S1 M0 M1 | S2 S3 M2 M3]` from one `hadd`, times
/// `d` and `dm`, added to `acc`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn fold_with_sums(acc: __m256, sumi: __m256i, prod: __m256i, d: f32, dm: f32) -> __m256 {
    let factors = _mm256_blend_ps::<0b1100_1100>(_mm256_set1_ps(d), _mm256_set1_ps(dm));
    _mm256_fmadd_ps(factors, _mm256_cvtepi32_ps(_mm256_hadd_epi32(sumi, prod)), acc)
}

/// The oracle's `reduce4(S) + reduce4(M)` of a [`fold_with_sums`] accumulator.
#[inline]
#[target_feature(enable = "avx2")]
fn reduce_with_sums(acc: __m256) -> f32 {
    // [S0+S2, S1+S3, M0+M2, M1+M3], then (t0 + t1) + (t2 + t3).
    let t = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
    let pairs = _mm_add_ps(t, _mm_movehdup_ps(t));
    _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehl_ps(pairs, pairs)))
}

/// `Σ w·x[r]` over one row of Q2_K blocks, for `R` activation rows.
///
/// # Safety
/// As for [`dot_q4k`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q2k<const R: usize>(w: &[BlockQ2K], x: [&[BlockQ8K]; R]) -> [f32; R] {
    let (low2, low4) = (_mm256_set1_epi8(3), _mm_set1_epi8(0xF));
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, w) in w.iter().enumerate() {
        // SAFETY: scales is 16 bytes.
        let sm = unsafe { _mm_loadu_si128(w.scales.as_ptr() as *const __m128i) };
        let scales = widen_scales(_mm256_cvtepu8_epi16(_mm_and_si128(sm, low4)));
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sm), low4));
        let mut sumi = [_mm256_setzero_si256(); R];
        for n in 0..2 {
            // SAFETY: qs holds 64 bytes; 32n + 32 ≤ 64.
            let mut q = unsafe { load(w.qs.as_ptr().add(32 * n)) };
            for j in 0..4 {
                // Bits 2j, 2j + 1 of each byte (a 16-bit shift moves none
                // across bytes that the mask keeps).
                let v = _mm256_and_si256(q, low2);
                q = _mm256_srli_epi16::<2>(q);
                let scale = group_scales(&scales, 8 * n + 2 * j);
                for r in 0..R {
                    // SAFETY: x.qs holds 256 bytes; 128n + 32j + 32 ≤ 256.
                    let y = unsafe { load(x[r][b].qs.as_ptr().add(128 * n + 32 * j) as _) };
                    // q ≤ 3: a pair is within ±768; × a 4-bit scale: < 2^14.
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(v, y), scale));
                }
            }
        }
        let (wd, wdmin) = (f16_to_f32(w.d), f16_to_f32(w.dmin));
        for r in 0..R {
            let y = &x[r][b];
            // SAFETY: bsums is 16 i16, 32 bytes.
            let bsums = unsafe { load(y.bsums.as_ptr() as *const u8) };
            // m ≤ 15 and |bsum| ≤ 2 048: exact in i32.
            let prod = _mm256_madd_epi16(mins, bsums);
            acc[r] = fold_with_sums(acc[r], sumi[r], prod, y.d * wd, -y.d * wdmin);
        }
    }
    std::array::from_fn(|r| reduce_with_sums(acc[r]))
}

/// `Σ w·x[r]` over one row of Q3_K blocks, for `R` activation rows: the
/// stored `q + 4` (0..=7) through `maddubs`, and the `− 4` from the
/// activations' block sums once per block (the oracle's min-like lanes).
///
/// # Safety
/// As for [`dot_q4k`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q3k<const R: usize>(w: &[BlockQ3K], x: [&[BlockQ8K]; R]) -> [f32; R] {
    let (low2, one) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, w) in w.iter().enumerate() {
        let [s0, s1, s2, s3] = q3k_scale_words(&w.scales).map(|s| s as i32);
        let signed = _mm_sub_epi8(_mm_setr_epi32(s0, s1, s2, s3), _mm_set1_epi8(32));
        let all = _mm256_cvtepi8_epi16(signed);
        let scales = widen_scales(all);
        // SAFETY: hmask is 32 bytes.
        let mut hm = unsafe { load(w.hmask.as_ptr()) };
        let mut sumi = [_mm256_setzero_si256(); R];
        for n in 0..2 {
            // SAFETY: qs holds 64 bytes; 32n + 32 ≤ 64.
            let mut q = unsafe { load(w.qs.as_ptr().add(32 * n)) };
            for j in 0..4 {
                // Bit 0 of each byte of hm is now bit 4n + j of the stored one.
                let v = _mm256_or_si256(_mm256_and_si256(q, low2), _mm256_slli_epi16::<2>(_mm256_and_si256(hm, one)));
                q = _mm256_srli_epi16::<2>(q);
                hm = _mm256_srli_epi16::<1>(hm);
                let scale = group_scales(&scales, 8 * n + 2 * j);
                for r in 0..R {
                    // SAFETY: x.qs holds 256 bytes; 128n + 32j + 32 ≤ 256.
                    let y = unsafe { load(x[r][b].qs.as_ptr().add(128 * n + 32 * j) as _) };
                    // Pairs of q·y within ±1 792; × a 6-bit scale and paired: < 2^18 per lane.
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(v, y), scale));
                }
            }
        }
        let wd = f16_to_f32(w.d);
        for r in 0..R {
            let y = &x[r][b];
            let d = y.d * wd;
            // SAFETY: bsums is 16 i16, 32 bytes.
            let bsums = unsafe { load(y.bsums.as_ptr() as *const u8) };
            // |s| ≤ 32 and |bsum| ≤ 2 048: exact in i32.
            let prod = _mm256_madd_epi16(all, bsums);
            acc[r] = fold_with_sums(acc[r], sumi[r], prod, d, -4.0 * d);
        }
    }
    std::array::from_fn(|r| reduce_with_sums(acc[r]))
}

/// A 32-element block's values `stored − OFFSET` as 32 bytes, element order.
///
/// # Safety
/// The CPU must support AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn legacy_values<W: Legacy>(w: &W) -> __m256i {
    if W::PACKING == Packing::Bytes {
        // SAFETY: Q8_0's qs is 32 bytes.
        return unsafe { load(w.qs().as_ptr()) };
    }
    // SAFETY: the nibbles are 16 bytes.
    let q = unsafe { _mm_loadu_si128(w.qs().as_ptr() as *const __m128i) };
    // Elements 0..16 are the low nibbles, 16..32 the high ones.
    let mut v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(q), q), _mm256_set1_epi8(0xF));
    if W::PACKING == Packing::Nibbles5 {
        // Bit e of qh into byte e: each byte takes qh's byte e / 8, then
        // tests its bit e % 8.
        let bytes = _mm256_shuffle_epi8(
            _mm256_set1_epi32(w.qh() as i32),
            _mm256_setr_epi64x(0, 0x0101_0101_0101_0101, 0x0202_0202_0202_0202, 0x0303_0303_0303_0303),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
        v = _mm256_or_si256(v, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
    }
    _mm256_sub_epi8(v, _mm256_set1_epi8(W::OFFSET))
}

/// Whether a 32-element type's values can be negative (then products go
/// through `sign`, as `maddubs` takes one unsigned side).
pub const fn signed<W: Legacy>() -> bool {
    W::OFFSET != 0 || matches!(W::PACKING, Packing::Bytes)
}

/// `Σ w·x[r]` over one row of 32-element blocks, for `R` activation rows in
/// the oracle's eight lanes (two accumulators: even and odd blocks).
///
/// # Safety
/// As for [`dot_q4k`]; the activations must be within ±127 (as
/// `quantize_q8_1` makes them).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_legacy<W: Legacy, const R: usize>(w: &[W], x: [&[BlockQ8_1]; R]) -> [f32; R] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm_setzero_ps(); 2]; R];
    // Lane 1 of each: the even and odd blocks' min terms.
    let mut accm = [[_mm_setzero_ps(); 2]; R];
    for (b, w) in w.iter().enumerate() {
        // SAFETY: the caller's promise (AVX2).
        let v = unsafe { legacy_values(w) };
        let abs = if signed::<W>() { _mm256_sign_epi8(v, v) } else { v };
        // [d, m] of the weight block, widened in one instruction.
        let wdm = _mm_cvtph_ps(_mm_cvtsi32_si128(halves(w.d(), w.m()) as i32));
        for r in 0..R {
            let y = &x[r][b];
            // SAFETY: qs is 32 bytes.
            let ys = unsafe { load(y.qs.as_ptr() as *const u8) };
            let ys = if signed::<W>() { _mm256_sign_epi8(ys, v) } else { ys };
            // |w| ≤ 128 and |y| ≤ 127: a pair is within ±32 512, no saturation.
            let sum = _mm256_madd_epi16(_mm256_maddubs_epi16(abs, ys), ones);
            // [d·e, m·s]: the block's scale and min term.
            let prod = _mm_mul_ps(wdm, _mm_cvtph_ps(_mm_cvtsi32_si128(halves(y.d, y.s) as i32)));
            let d = _mm_permute_ps::<0>(prod);
            acc[r][b % 2] = _mm_fmadd_ps(d, pair_lanes(sum), acc[r][b % 2]);
            if W::HAS_MIN {
                accm[r][b % 2] = _mm_add_ps(accm[r][b % 2], prod);
            }
        }
    }
    std::array::from_fn(|r| {
        let [even, odd] = accm[r].map(|m| _mm_cvtss_f32(_mm_movehdup_ps(m)));
        (reduce4(acc[r][0]) + reduce4(acc[r][1])) + (even + odd)
    })
}

/// Two f16 bit patterns side by side, as `_mm_cvtph_ps` reads them.
#[inline(always)]
pub fn halves(lo: u16, hi: u16) -> u32 {
    lo as u32 | (hi as u32) << 16
}
