//! x86-64 AVX2 kernels. Integer sums per block in SIMD (exact: no lane can
//! overflow, see each comment), then the scalar oracle's float step.

use std::arch::x86_64::*;

use super::blocks::{q4k_scale_min, BlockQ4K, BlockQ6K, BlockQ8K};
use super::scalar;

/// Sum of the eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// # Safety
/// The CPU must support AVX2 and FMA (`Variant::Avx2.supported()`).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q4k_avx2(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
    let nibble = _mm256_set1_epi8(0xF);
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let mut acc = _mm256_setzero_si256();
        for j in 0..4 {
            let (lo_scale, _) = q4k_scale_min(2 * j, &w.scales);
            let (hi_scale, _) = q4k_scale_min(2 * j + 1, &w.scales);
            // SAFETY: each load reads 32 bytes inside a fixed-size array of
            // the block (qs: 128, x.qs: 256), at offsets 32j, 64j, 64j + 32.
            let (q, ylo, yhi) = unsafe {
                (
                    _mm256_loadu_si256(w.qs.as_ptr().add(32 * j) as *const __m256i),
                    _mm256_loadu_si256(x.qs.as_ptr().add(64 * j) as *const __m256i),
                    _mm256_loadu_si256(x.qs.as_ptr().add(64 * j + 32) as *const __m256i),
                )
            };
            let lo = _mm256_and_si256(q, nibble);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), nibble);
            // u8 ≤ 15 × i8: a pair sums to at most 2·15·128 = 3 840, no
            // saturation; × a 6-bit scale and paired again: < 2^19 per lane.
            let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ylo), _mm256_set1_epi16(lo_scale as i16));
            let phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, yhi), _mm256_set1_epi16(hi_scale as i16));
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(plo, phi));
        }
        sum += scalar::q4k_block(w, x, hsum_i32(acc), scalar::q4k_mins(w, x));
    }
    sum
}

/// # Safety
/// The CPU must support AVX2 and FMA (`Variant::Avx2.supported()`).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q6k_avx2(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    let low4 = _mm256_set1_epi8(0xF);
    let low2 = _mm256_set1_epi8(3);
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let mut acc = _mm256_setzero_si256();
        for half in 0..2 {
            // SAFETY: 32-byte loads inside the block's arrays: ql (128) at
            // 64h and 64h + 32, qh (64) at 32h, x.qs (256) at 128h + 32p.
            let (ql0, ql1, qh) = unsafe {
                (
                    _mm256_loadu_si256(w.ql.as_ptr().add(64 * half) as *const __m256i),
                    _mm256_loadu_si256(w.ql.as_ptr().add(64 * half + 32) as *const __m256i),
                    _mm256_loadu_si256(w.qh.as_ptr().add(32 * half) as *const __m256i),
                )
            };
            let high = |shift: i32| -> __m256i {
                let h = match shift {
                    0 => qh,
                    2 => _mm256_srli_epi16::<2>(qh),
                    4 => _mm256_srli_epi16::<4>(qh),
                    _ => _mm256_srli_epi16::<6>(qh),
                };
                _mm256_slli_epi16::<4>(_mm256_and_si256(h, low2))
            };
            let quants = [
                _mm256_or_si256(_mm256_and_si256(ql0, low4), high(0)),
                _mm256_or_si256(_mm256_and_si256(ql1, low4), high(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low4), high(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low4), high(6)),
            ];
            for (part, q) in quants.into_iter().enumerate() {
                // SAFETY: see above.
                let y = unsafe { _mm256_loadu_si256(x.qs.as_ptr().add(128 * half + 32 * part) as *const __m256i) };
                let g = 8 * half + 2 * part;
                // The low 128 bits are the first group of 16, the high ones the second.
                let scales =
                    _mm256_setr_m128i(_mm_set1_epi16(w.scales[g] as i16), _mm_set1_epi16(w.scales[g + 1] as i16));
                // u8 ≤ 63 × i8: a pair sums to at most 2·63·128 = 16 128, no
                // saturation; × an i8 scale and paired again: < 2^22 per lane.
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), scales));
            }
        }
        sum += scalar::q6k_block(w, x, hsum_i32(acc) - scalar::q6k_offset(w, x));
    }
    sum
}
