//! Q4_K and Q5_K on AVX-512, for one weight row (decode) or a prompt's
//! pair of them. A pair shares what only depends on the activations: their
//! loads, their `bsums` pair sums and their scales, each used for both
//! weight rows; the weights' unpacking is shared by every activation row as
//! before. Two activation rows share each fold to the lane model
//! ([`Sums::q4k_fold2`]) and each float step of the min term, in the layout
//! one `vphaddw` of their `bsums` gives. This CPU (Zen 4) runs a 512-bit
//! instruction as two 256-bit halves, so these per-block steps cost about
//! as much as the integer products; sharing them is what a prompt gains.

use std::arch::x86_64::*;

use super::super::blocks::{q4k_scales_mins, BlockQ4K, BlockQ5K, BlockQ8K, KQuant45};
use super::super::x86::{scales_mins, Q4kOne, Q4kPairs};
use super::{load, per_half, Bw, Sums, Vnni};

/// `vpsllvw` counts moving Q5_K's fifth bits to bit 4 (see the kernel).
const FIFTH_SHIFTS: [[u16; 32]; 2] = [per_half(4, 2), per_half(3, 1)];

/// Puts each Q8_K block's elements in the order the kernels' 64-byte
/// weight loads hold theirs: in each 128, `0..32, 64..96, 32..64, 96..128`
/// (the low nibbles of two 32-byte rows of `qs`, then their high ones), so
/// that no weight register is shuffled (8% of a block's time from L2). An
/// involution; `bsums` and `d` stay as they are.
pub fn arrange(x: &mut [BlockQ8K]) {
    for block in x {
        for chunk in block.qs.chunks_exact_mut(128) {
            let (first, second) = chunk.split_at_mut(64);
            first[32..].swap_with_slice(&mut second[..32]);
        }
    }
}

/// `Σ w[i]·x[r]` over `WR` rows of Q4_K or Q5_K blocks, for `R` activation
/// rows: `[row 0's dots, …]`. An odd `R`'s last row is folded with itself.
///
/// # Safety
/// The CPU must have AVX-512 F + BW + VL, FMA, F16C and what `P` uses;
/// every `w[i]` and `x[r]` must be as long as `w[0]`.
#[inline(always)]
pub unsafe fn dot_q4k_rows<W: KQuant45, P: Sums, const WR: usize, const R: usize>(
    w: [&[W]; WR],
    x: [&[BlockQ8K]; R],
) -> [[f32; R]; WR] {
    // SAFETY (the whole body): the caller's promise for the instructions;
    // loads stay inside the blocks' fixed-size arrays, as each offset says.
    unsafe {
        let (nibble, fifth) = (_mm512_set1_epi8(0xF), _mm512_set1_epi8(0x10));
        let fifth_shifts = [load(&FIFTH_SHIFTS[0]), load(&FIFTH_SHIFTS[1])];
        let (mut tail, mut one) = (Q4kPairs::<WR, R>::new(), Q4kOne::new());
        // Plain loops, no closures, in the block loop: a closure is a
        // function of its own without the entry point's target features,
        // and where LLVM does not inline it, every intrinsic in it becomes
        // a call (it did for one weight row: decode 13× slower).
        for b in 0..w[0].len() {
            // The 16 bytes (scales, then mins) of each row as i16.
            let mut sm16 = [_mm256_setzero_si256(); WR];
            // Q5_K's fifth bits in both halves: bit 2j of byte l is element
            // 64j + l's, bit 2j + 1 element 64j + 32 + l's.
            let mut qh = [_mm512_setzero_si512(); WR];
            for i in 0..WR {
                // In registers for one weight row; a pair's kernel has no
                // registers to spare for its constants (VNNI pairs, 4
                // activation rows: 0.87× the speed in L2), so scalar there.
                let sm = if WR == 1 {
                    scales_mins(&w[i][b])
                } else {
                    _mm_loadu_si128(q4k_scales_mins(w[i][b].scales()).as_ptr() as *const __m128i)
                };
                sm16[i] = _mm256_cvtepu8_epi16(sm);
                if W::FIFTH_BIT {
                    qh[i] = _mm512_broadcast_i64x4(_mm256_loadu_si256(w[i][b].qh().as_ptr() as *const __m256i));
                }
            }
            let mut sumi = [[_mm512_setzero_si512(); R]; WR];
            for jj in 0..2 {
                let mut quants = [[_mm512_setzero_si512(); 2]; WR];
                let mut scale = [P::q4k_scales(_mm512_castsi256_si512(sm16[0]), jj); WR];
                for i in 0..WR {
                    // qs: 128 bytes, 64 at 64jj: byte 32j + l holds elements
                    // 64j + l (low nibble) and 64j + 32 + l (high) of
                    // j = 2jj, 2jj + 1, the order `arrange` gives the activations.
                    let q = _mm512_loadu_si512(w[i][b].qs().as_ptr().add(64 * jj) as *const _);
                    quants[i] = [_mm512_and_si512(q, nibble), _mm512_and_si512(_mm512_srli_epi16::<4>(q), nibble)];
                    if W::FIFTH_BIT {
                        // Bits 4jj, 4jj + 2 (low nibbles of j = 2jj, 2jj + 1) and
                        // 4jj + 1, 4jj + 3 (high) to bit 4: after the shift right
                        // by 4jj, left by 4 and 2, then 3 and 1, per 256-bit half.
                        let h = qh[i];
                        for (q, shift) in quants[i].iter_mut().zip(fifth_shifts) {
                            *q = _mm512_or_si512(*q, _mm512_and_si512(_mm512_sllv_epi16(h, shift), fifth));
                        }
                        qh[i] = _mm512_srli_epi16::<4>(h);
                    }
                    if i > 0 {
                        scale[i] = P::q4k_scales(_mm512_castsi256_si512(sm16[i]), jj);
                    }
                }
                for r in 0..R {
                    // x.qs: 256 bytes, 64 at 128jj + 64h for `quants[h]` (arranged).
                    let qs = x[r][b].qs.as_ptr().add(128 * jj);
                    let y = [_mm512_loadu_si512(qs as *const _), _mm512_loadu_si512(qs.add(64) as *const _)];
                    for i in 0..WR {
                        sumi[i][r] = P::q4k_pair(sumi[i][r], quants[i], y, scale[i]);
                    }
                }
            }
            if WR == 1 && R == 1 {
                one.block(&w[0][b], sm16[0], &x[0][b], P::q4k_fold1(sumi[0][0]));
                continue;
            }
            // Two activation rows' sums per fold, in the pairs' layout.
            let mut sums = [[_mm256_setzero_ps(); R]; WR];
            for i in 0..WR {
                for p in 0..Q4kPairs::<WR, R>::PAIRS {
                    sums[i][p] = P::q4k_fold2(sumi[i][2 * p], sumi[i][(2 * p + 1).min(R - 1)]);
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

/// The entry points: the generic kernel compiled with each flavour's
/// instructions enabled, for one weight row and for a pair.
macro_rules! entry {
    ($one:ident, $pair:ident, $block:ty, $sums:ty, $features:literal) => {
        /// # Safety
        /// The CPU must have the enabled features; every `x[r]` as long as `w`.
        #[target_feature(enable = $features)]
        pub unsafe fn $one<const R: usize>(w: &[$block], x: [&[BlockQ8K]; R]) -> [f32; R] {
            // SAFETY: the caller's promise.
            let [dots] = unsafe { dot_q4k_rows::<$block, $sums, 1, R>([w], x) };
            dots
        }

        /// # Safety
        /// The CPU must have the enabled features; `w[1]` and every `x[r]`
        /// as long as `w[0]`.
        #[target_feature(enable = $features)]
        pub unsafe fn $pair<const R: usize>(w: [&[$block]; 2], x: [&[BlockQ8K]; R]) -> [[f32; R]; 2] {
            // SAFETY: the caller's promise.
            unsafe { dot_q4k_rows::<$block, $sums, 2, R>(w, x) }
        }
    };
}
entry!(dot_q4k_bw, dot_pair_q4k_bw, BlockQ4K, Bw, "avx512f,avx512bw,avx512vl,fma,f16c");
entry!(dot_q4k_vnni, dot_pair_q4k_vnni, BlockQ4K, Vnni, "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c");
entry!(dot_q5k_bw, dot_pair_q5k_bw, BlockQ5K, Bw, "avx512f,avx512bw,avx512vl,fma,f16c");
entry!(dot_q5k_vnni, dot_pair_q5k_vnni, BlockQ5K, Vnni, "avx512f,avx512bw,avx512vl,avx512vnni,fma,f16c");
