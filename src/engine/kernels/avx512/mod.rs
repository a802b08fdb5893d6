//! x86-64 AVX-512 kernels in the oracle's lane model (`scalar.rs`): a
//! 512-bit register holds 64 consecutive activation elements, so half the
//! instructions of AVX2 per block. Its sixteen i32 lanes of 4 bytes fold into
//! the model's four 8-byte lanes once per block (the two 256-bit halves
//! added, then paired as in AVX2): integer sums, so the fold's order does
//! not matter and the result is bit-equal to the oracle's.
//!
//! Two flavours differ only in how products reach the i32 sums ([`Sums`]):
//! AVX-512BW's `vpmaddubsw`/`vpmaddwd` + `vpaddd`, or AVX-512 VNNI's fused
//! `vpdpwssd`/`vpdpbusd` (every AVX-512 CPU since Ice Lake and Zen 4).

use std::arch::x86_64::*;

mod q4k;

pub use q4k::{
    arrange, dot_pair_q4k_bw, dot_pair_q4k_vnni, dot_pair_q5k_bw, dot_pair_q5k_vnni, dot_q4k_bw, dot_q4k_vnni,
    dot_q5k_bw, dot_q5k_vnni,
};

use super::blocks::{f16_to_f32, BlockQ6K, BlockQ8K, BlockQ8_1, Legacy};
use super::x86::{halves, legacy_values, signed};

/// Integer sums into i32 lanes, added to `acc` (non-saturating).
pub trait Sums {
    /// `acc +` adjacent i16 products `p·s`.
    ///
    /// # Safety
    /// The CPU must have the instructions the implementation uses.
    unsafe fn pair_sum(acc: __m512i, p: __m512i, s: __m512i) -> __m512i;
    /// `acc +` four adjacent u8 × i8 products; each pair of them must fit
    /// i16 (true of the weights and activations here).
    ///
    /// # Safety
    /// As above.
    unsafe fn quad_sum(acc: __m512i, a: __m512i, b: __m512i) -> __m512i;
    /// [`Sums::quad_sum`] on 256 bits.
    ///
    /// # Safety
    /// As above.
    unsafe fn quad_sum256(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;
    /// Q4_K's scales for one [`Sums::q4k_pair`].
    type Q4kScales: Copy;
    /// Q4_K's/Q5_K's scales (its 8 sub-blocks' as i16, in the low 256
    /// bits) spread as [`Sums::q4k_pair`] takes them for registers `2jj`
    /// and `2jj + 1` (sub-blocks `4jj..4jj + 4`).
    ///
    /// # Safety
    /// As above.
    unsafe fn q4k_scales(scales: __m512i, jj: usize) -> Self::Q4kScales;
    /// `acc +` the scaled products of two registers of 64 consecutive
    /// elements (`q` ≤ 31 unsigned, `y` the activations), in lanes that
    /// [`Sums::q4k_fold2`] folds into the lane model's.
    ///
    /// # Safety
    /// As above.
    unsafe fn q4k_pair(acc: __m512i, q: [__m512i; 2], y: [__m512i; 2], scales: Self::Q4kScales) -> __m512i;
    /// The lane model's four lanes of two [`Sums::q4k_pair`] accumulators
    /// `a` and `b`, interleaved as the `bsums` pair sums of two activation
    /// rows come out of one `vphaddw`: 128-bit half `h` holds `a`'s lanes
    /// `2h`, `2h + 1`, then `b`'s.
    ///
    /// # Safety
    /// As above.
    unsafe fn q4k_fold2(a: __m512i, b: __m512i) -> __m256;
    /// The lane model's four lanes of one [`Sums::q4k_pair`] accumulator.
    ///
    /// # Safety
    /// As above.
    unsafe fn q4k_fold1(a: __m512i) -> __m128;
}

/// AVX-512 F + BW.
pub struct Bw;
/// AVX-512 F + BW + VNNI.
pub struct Vnni;

impl Sums for Bw {
    type Q4kScales = [__m512i; 2];
    #[inline(always)]
    unsafe fn pair_sum(acc: __m512i, p: __m512i, s: __m512i) -> __m512i {
        // SAFETY: the caller's promise (AVX-512 F + BW).
        unsafe { _mm512_add_epi32(acc, _mm512_madd_epi16(p, s)) }
    }
    #[inline(always)]
    unsafe fn quad_sum(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: as above.
        unsafe { _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(a, b), _mm512_set1_epi16(1))) }
    }
    #[inline(always)]
    unsafe fn quad_sum256(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: as above (AVX2 is part of AVX-512).
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))) }
    }
    #[inline(always)]
    unsafe fn q4k_scales(scales: __m512i, jj: usize) -> [__m512i; 2] {
        // SAFETY: as above; the indices are 32 u16 each.
        // Not `[0, 1].map(…)`: that closure was outlined, its intrinsics calls.
        unsafe {
            [
                _mm512_permutexvar_epi16(load(&Q4K_PICK[2 * jj]), scales),
                _mm512_permutexvar_epi16(load(&Q4K_PICK[2 * jj + 1]), scales),
            ]
        }
    }
    #[inline(always)]
    unsafe fn q4k_pair(acc: __m512i, q: [__m512i; 2], y: [__m512i; 2], scales: [__m512i; 2]) -> __m512i {
        // SAFETY: as above. u8 ≤ 31 × i8 pairs fit i16, × 6-bit scales fit i32.
        unsafe {
            let acc = Self::pair_sum(acc, _mm512_maddubs_epi16(q[0], y[0]), scales[0]);
            Self::pair_sum(acc, _mm512_maddubs_epi16(q[1], y[1]), scales[1])
        }
    }
    /// [`fold_lanes`] of both: `vphaddd` pairs lanes within each half.
    #[inline(always)]
    unsafe fn q4k_fold2(a: __m512i, b: __m512i) -> __m256 {
        // SAFETY: as above.
        unsafe { _mm256_cvtepi32_ps(_mm256_hadd_epi32(add_halves(a), add_halves(b))) }
    }
    #[inline(always)]
    unsafe fn q4k_fold1(a: __m512i) -> __m128 {
        // SAFETY: as above.
        unsafe { fold_lanes(a) }
    }
}

impl Sums for Vnni {
    type Q4kScales = __m512i;
    #[inline(always)]
    unsafe fn pair_sum(acc: __m512i, p: __m512i, s: __m512i) -> __m512i {
        // SAFETY: the caller's promise (AVX-512 VNNI).
        unsafe { _mm512_dpwssd_epi32(acc, p, s) }
    }
    #[inline(always)]
    unsafe fn quad_sum(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: as above.
        unsafe { _mm512_dpbusd_epi32(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn quad_sum256(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: as above, with AVX-512 VL.
        unsafe { _mm256_dpbusd_epi32(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn q4k_scales(scales: __m512i, jj: usize) -> __m512i {
        // SAFETY: as above; the indices are 32 u16.
        unsafe { _mm512_permutexvar_epi16(load(&Q4K_PACKED_PICK[jj]), scales) }
    }
    /// One `vpdpbusd` per register gives sums of four products (≤ 4·31·128,
    /// so they fit i16), packed into one register and scaled by one
    /// `vpdpwssd`: three multiplying instructions for 128 elements where
    /// `maddubs` + `dpwssd` take four, the port every one of them needs.
    #[inline(always)]
    unsafe fn q4k_pair(acc: __m512i, q: [__m512i; 2], y: [__m512i; 2], scales: __m512i) -> __m512i {
        // SAFETY: as above.
        unsafe {
            let zero = _mm512_setzero_si512();
            let sums = _mm512_packs_epi32(_mm512_dpbusd_epi32(zero, q[0], y[0]), _mm512_dpbusd_epi32(zero, q[1], y[1]));
            _mm512_dpwssd_epi32(acc, sums, scales)
        }
    }
    /// Lane `i` of quarter `k` holds the model's lane `2 (k % 2) + i % 2`
    /// (see [`Q4K_PACKED_PICK`]).
    /// Lanes `i` and `i + 2` of each half are the same model lane.
    #[inline(always)]
    unsafe fn q4k_fold2(a: __m512i, b: __m512i) -> __m256 {
        // SAFETY: as above.
        unsafe {
            let (a, b) = (add_halves(a), add_halves(b));
            _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b)))
        }
    }
    /// Each half's lanes `i` and `i + 2` added: half `h` then holds lanes
    /// `2h`, `2h + 1`.
    #[inline(always)]
    unsafe fn q4k_fold1(a: __m512i) -> __m128 {
        // SAFETY: as above.
        unsafe {
            let a = add_halves(a);
            let a = _mm256_add_epi32(a, _mm256_shuffle_epi32::<0b11_10_11_10>(a));
            _mm_cvtepi32_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b00_00_10_00>(a)))
        }
    }
}

/// 32 u16 as a register.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[inline(always)]
unsafe fn load(idx: &[u16; 32]) -> __m512i {
    // SAFETY: 64 bytes; the caller's promise.
    unsafe { _mm512_loadu_si512(idx.as_ptr() as *const _) }
}

/// Sixteen i32 lanes of 4 bytes (two 32-element halves) as the model's four
/// f32 lanes of 8 bytes.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[inline(always)]
unsafe fn fold_lanes(v: __m512i) -> __m128 {
    // SAFETY: the caller's promise.
    unsafe {
        let v = add_halves(v);
        _mm_cvtepi32_ps(_mm_hadd_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)))
    }
}

/// A register's two 256-bit halves added.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[inline(always)]
unsafe fn add_halves(v: __m512i) -> __m256i {
    // SAFETY: the caller's promise.
    unsafe { _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)) }
}

/// The oracle's `reduce4`: `(a0+a2) + (a1+a3)`.
#[inline(always)]
fn reduce4(s: __m128) -> f32 {
    // SAFETY: SSE3, part of every CPU with AVX-512.
    unsafe {
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

/// `vpermw` indices spreading i16 scales over a register: lane `i` takes
/// scale `first + i / per` (Q6_K's `per = 8`: one per quarter).
const fn spread(first: u16, per: usize) -> [u16; 32] {
    let mut idx = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        idx[i] = first + (i / per) as u16;
        i += 1;
    }
    idx
}

/// `a` in each u16 of a register's low 256 bits, `b` in its high ones (for
/// `vpermw` indices or `vpsllvw` counts).
const fn per_half(a: u16, b: u16) -> [u16; 32] {
    let mut idx = [a; 32];
    let mut i = 16;
    while i < 32 {
        idx[i] = b;
        i += 1;
    }
    idx
}

/// Index vectors for the Q4_K scales of the registers of low and of high
/// nibbles for `jj`: sub-blocks `4jj`, `4jj + 2`, then `4jj + 1`, `4jj + 3`
/// (see `q4k::arrange`).
const Q4K_PICK: [[u16; 32]; 4] = [per_half(0, 2), per_half(1, 3), per_half(4, 6), per_half(5, 7)];

/// `vpermw` indices for Q4_K's scales after `vpackssdw` of the registers
/// of low and of high nibbles for `jj`: quarter `k` holds four sums of the
/// low register's quarter `k`, then four of the high one's; the low
/// register's halves are sub-blocks `4jj` and `4jj + 2`, the high one's
/// `4jj + 1` and `4jj + 3`.
const fn packed_spread(jj: u16) -> [u16; 32] {
    let mut idx = [0u16; 32];
    let mut p = 0;
    while p < 32 {
        idx[p] = 4 * jj + 2 * (p / 16) as u16 + ((p % 8) / 4) as u16;
        p += 1;
    }
    idx
}

/// [`packed_spread`] for both `jj`.
const Q4K_PACKED_PICK: [[u16; 32]; 2] = [packed_spread(0), packed_spread(1)];

/// Index vectors for the Q6_K scales: groups 4i..4i + 4, one per quarter.
const Q6K_PICK: [[u16; 32]; 4] = [spread(0, 8), spread(4, 8), spread(8, 8), spread(12, 8)];

/// `Σ w·x[r]` over one row of Q6_K blocks, for `R` activation rows.
///
/// # Safety
/// As for [`q4k::dot_q4k_rows`].
#[inline(always)]
pub unsafe fn dot_q6k<P: Sums, const R: usize>(w: &[BlockQ6K], x: [&[BlockQ8K]; R]) -> [f32; R] {
    // SAFETY (the whole body): as in `q4k::dot_q4k_rows`.
    unsafe {
        let (low4, low2, offset) = (_mm512_set1_epi8(0xF), _mm512_set1_epi8(3), _mm512_set1_epi8(32));
        let pick = Q6K_PICK.map(|p| load(&p));
        let mut acc = [_mm_setzero_ps(); R];
        for (b, w) in w.iter().enumerate() {
            // scales: 16 i8, as i16.
            let scales = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(_mm_loadu_si128(w.scales.as_ptr() as *const _)));
            let mut sumi = [_mm512_setzero_si512(); R];
            for half in 0..2 {
                // ql: 128 bytes, 64 at 64·half; qh: 64 bytes, 32 at 32·half.
                let ql = _mm512_loadu_si512(w.ql.as_ptr().add(64 * half) as *const _);
                let qh = _mm256_loadu_si256(w.qh.as_ptr().add(32 * half) as *const __m256i);
                // The high bits of elements 0..32 and 32..64 of this half.
                let qh = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
                let high = |h: __m512i| _mm512_slli_epi16::<4>(_mm512_and_si512(h, low2));
                let quants = [
                    _mm512_or_si512(_mm512_and_si512(ql, low4), high(qh)),
                    _mm512_or_si512(
                        _mm512_and_si512(_mm512_srli_epi16::<4>(ql), low4),
                        high(_mm512_srli_epi16::<4>(qh)),
                    ),
                ];
                for (i, q) in quants.into_iter().enumerate() {
                    // Elements 128·half + 64i.. : scale groups 8·half + 4i.., one per 16.
                    let scale = _mm512_permutexvar_epi16(pick[2 * half + i], scales);
                    for r in 0..R {
                        // x.qs: 256 bytes, 64 at 128·half + 64i.
                        let y = _mm512_loadu_si512(x[r][b].qs.as_ptr().add(128 * half + 64 * i) as *const _);
                        // As in AVX2: (q − 32)·y pairs fit i16.
                        let p = _mm512_sub_epi16(_mm512_maddubs_epi16(q, y), _mm512_maddubs_epi16(offset, y));
                        sumi[r] = P::pair_sum(sumi[r], p, scale);
                    }
                }
            }
            let wd = f16_to_f32(w.d);
            for r in 0..R {
                acc[r] = _mm_fmadd_ps(_mm_set1_ps(x[r][b].d * wd), fold_lanes(sumi[r]), acc[r]);
            }
        }
        std::array::from_fn(|r| reduce4(acc[r]))
    }
}

/// `Σ w·x[r]` over one row of 32-element blocks, for `R` activation rows:
/// two blocks per register. The accumulator holds the oracle's eight lanes
/// as `[e0 e1 o0 o1 e2 e3 o2 o3]` (e: even blocks, o: odd), the order
/// `vphaddd` leaves them in.
///
/// # Safety
/// As for [`q4k::dot_q4k_rows`]; the activations must be within ±127.
#[inline(always)]
pub unsafe fn dot_legacy<W: Legacy, S: Sums, const R: usize>(w: &[W], x: [&[BlockQ8_1]; R]) -> [f32; R] {
    // SAFETY (the whole body): as in `q4k::dot_q4k_rows`; `qs` is 32 bytes; F16C is
    // part of every CPU with AVX-512 (and enabled by the entry points).
    unsafe {
        // Lanes of d in the accumulator's order, from [d0, _, d1, _].
        let spread = _mm256_setr_epi32(0, 0, 2, 2, 0, 0, 2, 2);
        let mut acc = [_mm256_setzero_ps(); R];
        // Lanes 1 and 3: the even and odd blocks' min terms.
        let mut accm = [_mm_setzero_ps(); R];
        let pairs = w.len() / 2;
        for p in 0..pairs {
            let (w0, w1) = (&w[2 * p], &w[2 * p + 1]);
            let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(legacy_values(w0)), legacy_values(w1));
            // vpmaddubsw/vpdpbusd take one unsigned side: |w|, and y with w's sign.
            let (abs, negative) = if signed::<W>() { (_mm512_abs_epi8(v), _mm512_movepi8_mask(v)) } else { (v, 0) };
            // [d0, m0, d1, m1] of the weights, widened in one instruction.
            let wdm = _mm_cvtph_ps(quarters(w0.d(), w0.m(), w1.d(), w1.m()));
            for r in 0..R {
                let (y0, y1) = (&x[r][2 * p], &x[r][2 * p + 1]);
                let ys = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(y0.qs.as_ptr() as *const __m256i)),
                    _mm256_loadu_si256(y1.qs.as_ptr() as *const __m256i),
                );
                let ys = _mm512_mask_sub_epi8(ys, negative, _mm512_setzero_si512(), ys);
                let sum = S::quad_sum(_mm512_setzero_si512(), abs, ys);
                let lanes = _mm256_hadd_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64::<1>(sum));
                // [d0·e0, m0·s0, d1·e1, m1·s1]: the blocks' scales and min terms.
                let yds = _mm_cvtph_ps(quarters(y0.d, y0.s, y1.d, y1.s));
                let prod = _mm_mul_ps(wdm, yds);
                let d = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(prod), spread);
                acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc[r]);
                if W::HAS_MIN {
                    accm[r] = _mm_add_ps(accm[r], prod);
                }
            }
        }
        let mut tail_m = [0f32; R];
        if w.len() % 2 == 1 {
            // The last block (an even one) alone, into lanes e0..e3 only.
            let b = w.len() - 1;
            let v = legacy_values(&w[b]);
            let abs = if signed::<W>() { _mm256_sign_epi8(v, v) } else { v };
            let wd = f16_to_f32(w[b].d());
            for r in 0..R {
                let y = &x[r][b];
                let ys = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
                let ys = if signed::<W>() { _mm256_sign_epi8(ys, v) } else { ys };
                let sum = S::quad_sum256(_mm256_setzero_si256(), abs, ys);
                let lanes = _mm256_hadd_epi32(sum, _mm256_setzero_si256());
                let new = _mm256_fmadd_ps(_mm256_set1_ps(wd * f16_to_f32(y.d)), _mm256_cvtepi32_ps(lanes), acc[r]);
                acc[r] = _mm256_blend_ps::<0b0011_0011>(acc[r], new);
                if W::HAS_MIN {
                    tail_m[r] = f16_to_f32(w[b].m()) * f16_to_f32(y.s);
                }
            }
        }
        std::array::from_fn(|r| {
            // [e0+e2, e1+e3, o0+o2, o1+o3]: the oracle's reduce4 of each.
            let s = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps::<1>(acc[r]));
            let [a, b, c, d]: [f32; 4] = std::mem::transmute(s);
            let (even, odd) = (_mm_cvtss_f32(_mm_movehdup_ps(accm[r])), _mm_cvtss_f32(_mm_permute_ps::<3>(accm[r])));
            ((a + b) + (c + d)) + ((even + tail_m[r]) + odd)
        })
    }
}

/// Four f16 bit patterns, as `_mm_cvtph_ps` reads them.
#[inline(always)]
fn quarters(a: u16, b: u16, c: u16, d: u16) -> __m128i {
    // SAFETY: SSE2, part of every x86-64 CPU.
    unsafe { _mm_cvtsi64_si128((halves(a, b) as u64 | (halves(c, d) as u64) << 32) as i64) }
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
entry!(dot_q6k_bw, dot_q6k::<Bw, R>, BlockQ6K, "avx512f,avx512bw,avx512vl,fma,f16c");
entry!(dot_q6k_vnni, dot_q6k::<Vnni, R>, BlockQ6K, "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c");

/// # Safety
/// The CPU must have AVX-512 F, BW, VL; activations within ±127; every
/// `x[r]` at least as long as `w`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
pub unsafe fn dot_legacy_bw<W: Legacy, const R: usize>(w: &[W], x: [&[BlockQ8_1]; R]) -> [f32; R] {
    // SAFETY: the caller's promise.
    unsafe { dot_legacy::<W, Bw, R>(w, x) }
}

/// # Safety
/// As for [`dot_legacy_bw`], and VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c")]
pub unsafe fn dot_legacy_vnni<W: Legacy, const R: usize>(w: &[W], x: [&[BlockQ8_1]; R]) -> [f32; R] {
    // SAFETY: the caller's promise.
    unsafe { dot_legacy::<W, Vnni, R>(w, x) }
}
