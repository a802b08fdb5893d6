//! Q4_K and Q5_K on AVX2, for one weight row or a prompt's pair, and the
//! pairs' float step the AVX-512 kernels share ([`Q4kPairs`]).

use std::arch::x86_64::*;

use super::super::blocks::{f16_to_f32, BlockQ4K, BlockQ5K, BlockQ8K, KQuant45};
use super::{load, reduce4};

/// Both block types begin with `d`, `dmin` and the 12 packed scale bytes.
const _: () = assert!(std::mem::offset_of!(BlockQ4K, scales) == 4 && std::mem::offset_of!(BlockQ5K, scales) == 4);

/// `blocks::q4k_scales_mins` in a register: the eight scales, then the eight
/// mins, as bytes. Its words, from the packed words `a`, `b`, `c`:
/// `a & 0x3f…`, `(c & 0x0f…) | ((a >> 2) & 0x30…)`, `b & 0x3f…`,
/// `((c >> 4) & 0x0f…) | ((b >> 2) & 0x30…)` (the `>> 2` puts each byte's top
/// two bits at bits 4 and 5). Eight vector instructions where the scalar
/// unpacking took about twenty-five of a decode block's seventy-five
/// (Phi-3-mini's decode median 1.04×, 11 runs each alternating).
///
/// # Safety
/// The CPU must have AVX2.
#[inline(always)]
pub(in super::super) unsafe fn scales_mins<W: KQuant45>(w: &W) -> __m128i {
    // SAFETY: the caller's promise; the load is the block's first 16 bytes
    // (`KQuant45`'s two types are `repr(C)`, longer, and begin so: see the
    // assertion above).
    unsafe {
        let head = _mm_loadu_si128(w as *const W as *const __m128i);
        // Bytes 4.., 8.., 12.. are the words a, b, c.
        let low = _mm_shuffle_epi8(head, _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15));
        let low = _mm_and_si128(
            _mm_srlv_epi32(low, _mm_setr_epi32(0, 0, 0, 4)),
            _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f),
        );
        let high = _mm_shuffle_epi8(head, _mm_setr_epi8(4, 5, 6, 7, 4, 5, 6, 7, 8, 9, 10, 11, 8, 9, 10, 11));
        let high = _mm_and_si128(_mm_srli_epi32::<2>(high), _mm_setr_epi32(0, 0x3030_3030, 0, 0x3030_3030));
        _mm_or_si128(low, high)
    }
}

/// `Σ w[i]·x[r]` over `WR` rows of Q4_K or Q5_K blocks (one, or a prompt's
/// pair), for `R` activation rows.
///
/// # Safety
/// The CPU must support AVX2 and FMA (`Variant::Avx2.supported()`), and every
/// `w[i]` and `x[r]` must be as long as `w[0]`.
#[inline(always)]
unsafe fn dot_q4k_rows<W: KQuant45, const WR: usize, const R: usize>(
    w: [&[W]; WR],
    x: [&[BlockQ8K]; R],
) -> [[f32; R]; WR] {
    // SAFETY (the whole body): the caller's promise for the instructions;
    // loads stay inside the blocks' fixed-size arrays, as each offset says.
    // Plain loops, no closures: see `avx512::q4k`.
    unsafe {
        let (nibble, fifth) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(0x10));
        let (mut tail, mut one) = (Q4kPairs::<WR, R>::new(), Q4kOne::new());
        for b in 0..w[0].len() {
            let mut sm16 = [_mm256_setzero_si256(); WR];
            let mut scales = [_mm256_setzero_si256(); WR];
            // Q5_K's fifth bits: after a 16-bit shift right by 2j, bits 0 and 1
            // of each byte are its bits 2j and 2j + 1 (for elements 64j + l and
            // 64j + 32 + l); qh is 32 bytes.
            let mut qh = [_mm256_setzero_si256(); WR];
            for i in 0..WR {
                sm16[i] = _mm256_cvtepu8_epi16(scales_mins(&w[i][b]));
                scales[i] = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm16[i]));
                if W::FIFTH_BIT {
                    qh[i] = load(w[i][b].qh().as_ptr());
                }
            }
            let mut sumi = [[_mm256_setzero_si256(); R]; WR];
            for j in 0..4 {
                // Sub-block s's i16 scale (bytes 2s, 2s + 1) in every i16 lane.
                let pick_lo = _mm256_set1_epi16((((4 * j + 1) << 8) | (4 * j)) as i16);
                let pick_hi = _mm256_set1_epi16((((4 * j + 3) << 8) | (4 * j + 2)) as i16);
                let mut q = [[_mm256_setzero_si256(); 2]; WR];
                let mut sc = [[_mm256_setzero_si256(); 2]; WR];
                for i in 0..WR {
                    sc[i] = [_mm256_shuffle_epi8(scales[i], pick_lo), _mm256_shuffle_epi8(scales[i], pick_hi)];
                    // qs holds 128 bytes; 32j + 32 ≤ 128.
                    let v = load(w[i][b].qs().as_ptr().add(32 * j));
                    q[i] = [_mm256_and_si256(v, nibble), _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble)];
                    if W::FIFTH_BIT {
                        q[i][0] = _mm256_or_si256(q[i][0], _mm256_and_si256(_mm256_slli_epi16::<4>(qh[i]), fifth));
                        q[i][1] = _mm256_or_si256(q[i][1], _mm256_and_si256(_mm256_slli_epi16::<3>(qh[i]), fifth));
                        qh[i] = _mm256_srli_epi16::<2>(qh[i]);
                    }
                }
                for r in 0..R {
                    // y holds 256 bytes; 64j + 64 ≤ 256.
                    let y = x[r][b].qs.as_ptr().add(64 * j);
                    let (ylo, yhi) = (load(y as _), load(y.add(32) as _));
                    for i in 0..WR {
                        // u8 ≤ 31 × i8: a pair is at most 2·31·128 = 7 936 (no
                        // saturation); × a 6-bit scale and paired: < 2^20 per lane.
                        let plo = _mm256_madd_epi16(sc[i][0], _mm256_maddubs_epi16(q[i][0], ylo));
                        let phi = _mm256_madd_epi16(sc[i][1], _mm256_maddubs_epi16(q[i][1], yhi));
                        sumi[i][r] = _mm256_add_epi32(sumi[i][r], _mm256_add_epi32(plo, phi));
                    }
                }
            }
            if WR == 1 && R == 1 {
                // `vphaddd` pairs the model's lanes in each half: 0, 1, then 2, 3.
                let v = _mm256_hadd_epi32(sumi[0][0], sumi[0][0]);
                let v = _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b00_00_10_00>(v));
                one.block(&w[0][b], sm16[0], &x[0][b], _mm_cvtepi32_ps(v));
                continue;
            }
            // `vphaddd` of two rows' sums: the model's lanes, in the pairs' layout.
            let mut sums = [[_mm256_setzero_ps(); R]; WR];
            for i in 0..WR {
                for p in 0..Q4kPairs::<WR, R>::PAIRS {
                    let (a, c) = (sumi[i][2 * p], sumi[i][(2 * p + 1).min(R - 1)]);
                    sums[i][p] = _mm256_cvtepi32_ps(_mm256_hadd_epi32(a, c));
                }
            }
            tail.block(w, sm16, x, b, sums);
        }
        if WR == 1 && R == 1 {
            return one.dots();
        }
        tail.dots()
    }
}

/// `Σ w·x[r]` over one row of Q4_K or Q5_K blocks, for `R` activation rows.
///
/// # Safety
/// The CPU must support AVX2 and FMA (`Variant::Avx2.supported()`), and every
/// `x[r]` must be at least as long as `w`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_q4k<W: KQuant45, const R: usize>(w: &[W], x: [&[BlockQ8K]; R]) -> [f32; R] {
    // SAFETY: the caller's promise.
    let [dots] = unsafe { dot_q4k_rows::<W, 1, R>([w], x) };
    dots
}

/// Two weight rows of Q4_K or Q5_K blocks against `R` activation rows.
///
/// # Safety
/// As for [`dot_q4k`]; `w[1]` as long as `w[0]`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_pair_q4k<W: KQuant45, const R: usize>(w: [&[W]; 2], x: [&[BlockQ8K]; R]) -> [[f32; R]; 2] {
    // SAFETY: the caller's promise.
    unsafe { dot_q4k_rows::<W, 2, R>(w, x) }
}

/// The float step of Q4_K/Q5_K for `WR` weight rows against `R` activation
/// rows, two activation rows per register (shared by the AVX2 and AVX-512
/// kernels): half `h` of pair `p`'s accumulator holds row `2p`'s lanes
/// `2h`, `2h + 1`, then row `2p + 1`'s (an odd `R`'s last row is paired
/// with itself). It is the layout one `vphaddw` of two rows' `bsums` gives,
/// and one `vphaddd` of two AVX2 sum registers, so each pair's `d`, `bsums`
/// and float steps serve both rows. Per lane these are the oracle's
/// operations, so the result is its bits.
pub(in super::super) struct Q4kPairs<const WR: usize, const R: usize> {
    acc: [[__m256; R]; WR],
    accm: [[__m256; R]; WR],
}

impl<const WR: usize, const R: usize> Q4kPairs<WR, R> {
    /// Activation row pairs (only the first `PAIRS` accumulators are used).
    pub const PAIRS: usize = R.div_ceil(2);

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline(always)]
    pub unsafe fn new() -> Self {
        // SAFETY: the caller's promise.
        unsafe { Self { acc: [[_mm256_setzero_ps(); R]; WR], accm: [[_mm256_setzero_ps(); R]; WR] } }
    }

    /// Block `b`: `sums[i][p]` the folded integer sums of weight row `i`
    /// against pair `p`, `sm16[i]` its scales and mins as i16.
    ///
    /// # Safety
    /// As for [`Q4kPairs::new`]; every `w[i]` and `x[r]` longer than `b`.
    #[inline(always)]
    pub unsafe fn block<W: KQuant45>(
        &mut self,
        w: [&[W]; WR],
        sm16: [__m256i; WR],
        x: [&[BlockQ8K]; R],
        b: usize,
        sums: [[__m256; R]; WR],
    ) {
        // SAFETY: the caller's promise; bsums is 16 i16, 32 bytes.
        unsafe {
            // Each weight row's mins as `madd` takes them against a pair's
            // `bsums` pair sums (mins 0..4 twice in half 0, 4..8 twice), and
            // its two scales.
            let mut mins = [_mm256_setzero_si256(); WR];
            let mut wd = [(_mm256_setzero_ps(), _mm256_setzero_ps()); WR];
            for i in 0..WR {
                mins[i] = _mm256_permute4x64_epi64::<0b11_11_10_10>(sm16[i]);
                wd[i] = (_mm256_set1_ps(f16_to_f32(w[i][b].d())), _mm256_set1_ps(-f16_to_f32(w[i][b].dmin())));
            }
            for p in 0..Self::PAIRS {
                let (ya, yb) = (&x[2 * p][b], &x[(2 * p + 1).min(R - 1)][b]);
                let d = _mm256_blend_ps::<0b1100_1100>(_mm256_set1_ps(ya.d), _mm256_set1_ps(yb.d));
                // Adjacent pairs summed (each ≤ 2·2 048: no wrap): 0..4 of
                // `ya`, 0..4 of `yb` in half 0, 4..8 of each in half 1.
                let bsums = _mm256_hadd_epi16(load(ya.bsums.as_ptr() as _), load(yb.bsums.as_ptr() as _));
                for i in 0..WR {
                    self.acc[i][p] = _mm256_fmadd_ps(_mm256_mul_ps(d, wd[i].0), sums[i][p], self.acc[i][p]);
                    let m = _mm256_cvtepi32_ps(_mm256_madd_epi16(mins[i], bsums));
                    self.accm[i][p] = _mm256_fmadd_ps(_mm256_mul_ps(d, wd[i].1), m, self.accm[i][p]);
                }
            }
        }
    }

    /// The dot products: `[weight row][activation row]`.
    ///
    /// # Safety
    /// As for [`Q4kPairs::new`].
    #[inline(always)]
    pub unsafe fn dots(&self) -> [[f32; R]; WR] {
        // SAFETY: the caller's promise.
        unsafe {
            let mut dots = [[0f32; R]; WR];
            for ((dots, acc), accm) in dots.iter_mut().zip(&self.acc).zip(&self.accm) {
                for (r, dot) in dots.iter_mut().enumerate() {
                    *dot = reduce4(lanes(acc[r / 2], r)) + reduce4(lanes(accm[r / 2], r));
                }
            }
            dots
        }
    }
}

/// The float step of Q4_K/Q5_K for one weight row against one activation
/// row (decode), in 128 bits: [`Q4kPairs`] would fill a register's second
/// half with the same row's lanes again. The same operations per lane as
/// the oracle's, so its bits.
pub(in super::super) struct Q4kOne {
    acc: __m128,
    accm: __m128,
}

impl Q4kOne {
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline(always)]
    pub unsafe fn new() -> Self {
        // SAFETY: the caller's promise.
        unsafe { Self { acc: _mm_setzero_ps(), accm: _mm_setzero_ps() } }
    }

    /// A block: `sums` its folded integer sums (the model's four lanes),
    /// `sm16` its scales and mins as i16.
    ///
    /// # Safety
    /// As for [`Q4kOne::new`].
    #[inline(always)]
    pub unsafe fn block<W: KQuant45>(&mut self, w: &W, sm16: __m256i, x: &BlockQ8K, sums: __m128) {
        // SAFETY: the caller's promise; bsums is 16 i16, 32 bytes.
        unsafe {
            // `x.d · d` and `-x.d · dmin` at once, each as the scalar product.
            let d = _mm_cvtph_ps(_mm_cvtsi32_si128((w.d() as u32 | (w.dmin() as u32) << 16) as i32));
            let d = _mm_mul_ps(d, _mm_xor_ps(_mm_set1_ps(x.d), _mm_setr_ps(0.0, -0.0, 0.0, 0.0)));
            self.acc = _mm_fmadd_ps(_mm_permute_ps::<0>(d), sums, self.acc);
            let bsums = load(x.bsums.as_ptr() as _);
            // Adjacent pairs summed (each ≤ 2·2 048: no wrap), against mins 0..8.
            let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256::<1>(bsums));
            let m = _mm_cvtepi32_ps(_mm_madd_epi16(_mm256_extracti128_si256::<1>(sm16), pairs));
            self.accm = _mm_fmadd_ps(_mm_permute_ps::<0b01_01_01_01>(d), m, self.accm);
        }
    }

    /// The dot product, as a `WR` × `R` kernel returns it (both 1).
    ///
    /// # Safety
    /// As for [`Q4kOne::new`].
    #[inline(always)]
    pub unsafe fn dots<const WR: usize, const R: usize>(&self) -> [[f32; R]; WR] {
        let mut dots = [[0f32; R]; WR];
        // SAFETY: the caller's promise.
        dots[0][0] = unsafe { reduce4(self.acc) + reduce4(self.accm) };
        dots
    }
}

/// Activation row `r`'s four lanes of its pair's accumulator: row `2p`'s
/// are the low two of each half, row `2p + 1`'s the high two.
#[inline]
#[target_feature(enable = "avx2")]
fn lanes(v: __m256, r: usize) -> __m128 {
    let (lo, hi) = (_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    if r.is_multiple_of(2) {
        _mm_movelh_ps(lo, hi)
    } else {
        _mm_movehl_ps(hi, lo)
    }
}
