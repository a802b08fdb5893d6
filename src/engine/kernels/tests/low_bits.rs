//! Q2_K and Q3_K: the oracle against candle (on candle's blocks and on
//! blocks of any bits), every variant against the oracle, the matmul's rows.

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::GgmlDType;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::super::blocks::{self, BlockQ2K, BlockQ3K, BlockQ8K, QK_K};
use super::super::{scalar, Variant};
use super::{bytes_of, candle_blocks, close, matmul, random, raw_blocks, supported, to_blocks};

/// One of the two types: its blocks, candle's, where its f16 scales are.
trait Case: blocks::Plain {
    type Candle: GgmlType<VecDotType = k_quants::BlockQ8K>;
    const DTYPE: GgmlDType;
    const F16_OFFSETS: &'static [usize];
    fn oracle(w: &[Self], x: &[BlockQ8K]) -> f32;
    fn dot<const R: usize>(v: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R];
}

impl Case for BlockQ2K {
    type Candle = k_quants::BlockQ2K;
    const DTYPE: GgmlDType = GgmlDType::Q2K;
    const F16_OFFSETS: &'static [usize] = &[80, 82];
    fn oracle(w: &[Self], x: &[BlockQ8K]) -> f32 {
        scalar::dot_q2k(w, x)
    }
    fn dot<const R: usize>(v: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        v.dot_q2k(w, x)
    }
}

impl Case for BlockQ3K {
    type Candle = k_quants::BlockQ3K;
    const DTYPE: GgmlDType = GgmlDType::Q3K;
    const F16_OFFSETS: &'static [usize] = &[108];
    fn oracle(w: &[Self], x: &[BlockQ8K]) -> f32 {
        scalar::dot_q3k(w, x)
    }
    fn dot<const R: usize>(v: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        v.dot_q3k(w, x)
    }
}

/// candle's blocks as ours (same bytes, our alignment).
fn as_ours<C: GgmlType, T: blocks::Plain>(theirs: &[C]) -> Vec<T> {
    to_blocks(bytes_of(theirs))
}

/// Ours as candle's.
fn as_theirs<T: blocks::Plain, C: GgmlType>(ours: &[T]) -> Vec<C> {
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<C>());
    let mut v = vec![C::zeros(); ours.len()];
    // SAFETY: both are plain `repr(C)` blocks of the same size; `v` holds `ours.len()` of them.
    unsafe { std::ptr::copy_nonoverlapping(ours.as_ptr() as *const u8, v.as_mut_ptr() as *mut u8, size_of_val(ours)) };
    v
}

fn activations(rng: &mut StdRng, n: usize) -> Vec<BlockQ8K> {
    let mut x = vec![BlockQ8K::ZERO; n];
    blocks::quantize_q8k(&random(rng, n * QK_K), &mut x);
    x
}

fn oracle_agrees_with_candle<T: Case>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for n in [1, 3, 12] {
        let x = activations(&mut rng, n);
        let x8: Vec<k_quants::BlockQ8K> = as_theirs(&x);
        // Blocks candle made from floats, and blocks of any bits (every
        // scale and high-bit pattern a file may hold).
        let made = as_ours::<_, T>(&candle_blocks::<T::Candle>(&random(&mut rng, n * QK_K)));
        let raw = to_blocks::<T>(&raw_blocks::<T>(&mut rng, n, T::F16_OFFSETS));
        for (what, w) in [("quantized", made), ("raw", raw)] {
            let ours = T::oracle(&w, &x);
            let theirs = T::Candle::vec_dot(n * QK_K, &as_theirs::<T, T::Candle>(&w), &x8);
            assert!(close(ours, theirs), "{:?} {what} k={}: {ours} vs candle {theirs}", T::DTYPE, n * QK_K);
        }
    }
}

#[test]
fn q2k_and_q3k_oracles_agree_with_candle() {
    oracle_agrees_with_candle::<BlockQ2K>(21);
    oracle_agrees_with_candle::<BlockQ3K>(22);
}

fn variants_equal_the_oracle<T: Case>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for n in [1, 2, 7] {
        let mut xs: Vec<Vec<BlockQ8K>> = (0..4).map(|_| activations(&mut rng, n)).collect();
        // The extremes: every quant at -128 in the last block.
        xs[3][n - 1].qs = [-128; QK_K];
        xs[3][n - 1].bsums = [-2048; 16];
        let rows: [&[BlockQ8K]; 4] = std::array::from_fn(|r| &xs[r][..]);
        let w = to_blocks::<T>(&raw_blocks::<T>(&mut rng, n, T::F16_OFFSETS));
        let want = rows.map(|x| T::oracle(&w, x).to_bits());
        for v in supported() {
            for r in 0..4 {
                assert_eq!(
                    T::dot(v, &w, [rows[r]])[0].to_bits(),
                    want[r],
                    "{} {:?}, {n} blocks, row {r}",
                    v.name(),
                    T::DTYPE
                );
            }
            assert_eq!(T::dot(v, &w, rows).map(f32::to_bits), want, "{} {:?}, 4 rows at once", v.name(), T::DTYPE);
        }
    }
}

#[test]
fn q2k_and_q3k_variants_equal_the_oracle_bit_for_bit() {
    variants_equal_the_oracle::<BlockQ2K>(23);
    variants_equal_the_oracle::<BlockQ3K>(24);
}

/// Edge shapes (one block, odd rows, m = 1 and 17): each row of a batch
/// equals it alone, and the result agrees with candle's matmul.
fn matmul_case<T: Case>(seed: u64, k: usize, n: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let theirs_blocks = candle_blocks::<T::Candle>(&random(&mut rng, n * k));
    let ours = as_ours::<_, T>(&theirs_blocks);
    for m in [1, 17] {
        let lhs = random(&mut rng, m * k);
        let mut theirs = vec![0f32; m * n];
        k_quants::matmul((m, k, n), &lhs, &theirs_blocks, &mut theirs).unwrap();
        for v in supported() {
            let mut batched = vec![0f32; m * n];
            matmul(v, T::DTYPE, (m, k, n), &lhs, bytes_of(&ours), &mut batched).unwrap();
            for i in 0..m {
                let mut one = vec![0f32; n];
                matmul(v, T::DTYPE, (1, k, n), &lhs[i * k..(i + 1) * k], bytes_of(&ours), &mut one).unwrap();
                assert_eq!(one, batched[i * n..(i + 1) * n], "{} {:?} row {i} of {m}", v.name(), T::DTYPE);
            }
            for (a, b) in batched.iter().zip(&theirs) {
                assert!(close(*a, *b), "{} {:?} m={m}: {a} vs candle {b}", v.name(), T::DTYPE);
            }
        }
    }
}

#[test]
fn q2k_and_q3k_matmuls_are_row_independent_and_agree_with_candle() {
    matmul_case::<BlockQ2K>(25, QK_K, 37);
    matmul_case::<BlockQ2K>(26, 5 * QK_K, 19);
    matmul_case::<BlockQ3K>(27, QK_K, 21);
    matmul_case::<BlockQ3K>(28, 3 * QK_K, 33);
}
