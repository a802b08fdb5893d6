//! Kernels against candle (the reference) and every variant against the
//! scalar oracle, on random blocks and edge shapes.

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::GgmlDType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::blocks::{self, BlockQ4K, BlockQ6K, BlockQ8K, QK_K};
use super::*;

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn bytes_of<T>(v: &[T]) -> &[u8] {
    // SAFETY: candle's blocks are plain `repr(C)` data; the bytes borrow `v`.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// candle's blocks of `xs`, and the same bytes as ours.
fn candle_blocks<T: GgmlType>(xs: &[f32]) -> Vec<T> {
    let mut b = vec![T::zeros(); xs.len() / T::BLCK_SIZE];
    T::from_float(xs, &mut b);
    b
}

fn supported() -> impl Iterator<Item = Variant> {
    Variant::ALL.into_iter().filter(|v| v.supported())
}

#[test]
fn q8k_quantization_equals_candles() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut xs = random(&mut rng, 4 * QK_K);
    xs[QK_K..2 * QK_K].fill(0.0); // an all-zero block
    xs[2 * QK_K + 7] = 40.0; // one outlier dominates its block
    let theirs = candle_blocks::<k_quants::BlockQ8K>(&xs);
    let mut ours = vec![BlockQ8K::ZERO; 4];
    blocks::quantize_q8k(&xs, &mut ours);
    assert_eq!(bytes_of(&ours), bytes_of(&theirs));
}

/// Our scalar dot against candle's `vec_dot` on the same blocks: equal up
/// to float summation order.
fn close(ours: f32, theirs: f32) -> bool {
    (ours - theirs).abs() <= 1e-4 * (1.0 + theirs.abs())
}

#[test]
fn scalar_oracle_agrees_with_candle() {
    let mut rng = StdRng::seed_from_u64(2);
    for blocks_per_row in [1, 3, 12] {
        let k = blocks_per_row * QK_K;
        let x = random(&mut rng, k);
        let x8 = candle_blocks::<k_quants::BlockQ8K>(&x);
        let ours_x = blocks::cast::<BlockQ8K>(bytes_of(&x8), blocks_per_row).unwrap();

        let w4 = candle_blocks::<k_quants::BlockQ4K>(&random(&mut rng, k));
        let ours = scalar::dot_q4k(blocks::cast(bytes_of(&w4), blocks_per_row).unwrap(), ours_x);
        let theirs = k_quants::BlockQ4K::vec_dot(k, &w4, &x8);
        assert!(close(ours, theirs), "Q4_K k={k}: {ours} vs candle {theirs}");

        let w6 = candle_blocks::<k_quants::BlockQ6K>(&random(&mut rng, k));
        let ours = scalar::dot_q6k(blocks::cast(bytes_of(&w6), blocks_per_row).unwrap(), ours_x);
        let theirs = k_quants::BlockQ6K::vec_dot(k, &w6, &x8);
        assert!(close(ours, theirs), "Q6_K k={k}: {ours} vs candle {theirs}");
    }
}

/// Blocks of random bytes (any bit pattern a file may hold), with finite
/// f16 scales.
fn raw_blocks<T: blocks::Plain>(rng: &mut StdRng, n: usize, scale_offsets: &[usize]) -> Vec<u8> {
    let size = std::mem::size_of::<T>();
    let mut bytes: Vec<u8> = (0..n * size).map(|_| rng.random()).collect();
    for b in 0..n {
        for &off in scale_offsets {
            let s = half::f16::from_f32(rng.random_range(-0.01f32..0.01)).to_bits().to_le_bytes();
            bytes[b * size + off..b * size + off + 2].copy_from_slice(&s);
        }
    }
    bytes
}

#[test]
fn every_variant_equals_the_scalar_oracle_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(3);
    for n in [1, 2, 7] {
        // Four different activation rows, for the kernels that take several.
        let xs: Vec<Vec<BlockQ8K>> = (0..4)
            .map(|r| {
                let mut x = vec![BlockQ8K::ZERO; n];
                blocks::quantize_q8k(&random(&mut rng, n * QK_K), &mut x);
                if r == 3 {
                    // Extremes too: every quant at -128 in the last block.
                    x[n - 1].qs = [-128; QK_K];
                    x[n - 1].bsums = [-2048; 16];
                }
                x
            })
            .collect();
        let rows: [&[BlockQ8K]; 4] = std::array::from_fn(|r| &xs[r][..]);
        // Q4_K: d and dmin at bytes 0 and 2; Q6_K: d at byte 208.
        let w4 = to_blocks::<BlockQ4K>(&raw_blocks::<BlockQ4K>(&mut rng, n, &[0, 2]));
        let w6 = to_blocks::<BlockQ6K>(&raw_blocks::<BlockQ6K>(&mut rng, n, &[208]));
        let want4 = rows.map(|x| scalar::dot_q4k(&w4, x).to_bits());
        let want6 = rows.map(|x| scalar::dot_q6k(&w6, x).to_bits());
        for v in supported() {
            for r in 0..4 {
                assert_eq!(v.dot_q4k(&w4, [rows[r]])[0].to_bits(), want4[r], "{} Q4_K, {n} blocks, row {r}", v.name());
                assert_eq!(v.dot_q6k(&w6, [rows[r]])[0].to_bits(), want6[r], "{} Q6_K, {n} blocks, row {r}", v.name());
            }
            assert_eq!(v.dot_q4k(&w4, rows).map(f32::to_bits), want4, "{} Q4_K, 4 rows at once", v.name());
            assert_eq!(v.dot_q6k(&w6, rows).map(f32::to_bits), want6, "{} Q6_K, 4 rows at once", v.name());
        }
    }
}

/// Blocks copied from `bytes` (a `Vec<u8>` has no alignment to speak of).
fn to_blocks<T: blocks::Plain>(bytes: &[u8]) -> Vec<T> {
    let n = bytes.len() / std::mem::size_of::<T>();
    let mut v = Vec::<T>::with_capacity(n);
    // SAFETY: `T: Plain` is valid for any bytes; the capacity holds n blocks,
    // all written before `set_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, n * std::mem::size_of::<T>());
        v.set_len(n);
    }
    v
}

/// candle's matmul over its own copy of the blocks.
type CandleMatmul = Box<dyn Fn(usize, &[f32], &mut [f32])>;

/// The matmul on edge shapes (one block, odd rows, m = 1 and 17): each
/// element equals the row's dot product, a batch equals its rows one by one,
/// and the result agrees with candle's matmul.
#[test]
fn matmul_rows_are_independent_and_agree_with_candle() {
    let mut rng = StdRng::seed_from_u64(4);
    for (dtype, k, n) in [(GgmlDType::Q4K, QK_K, 37), (GgmlDType::Q6K, 3 * QK_K, 19), (GgmlDType::Q4K, 12 * QK_K, 33)] {
        let wf = random(&mut rng, n * k);
        let (bytes, theirs_fn): (Vec<u8>, CandleMatmul) = match dtype {
            GgmlDType::Q4K => {
                let b = candle_blocks::<k_quants::BlockQ4K>(&wf);
                let bytes = bytes_of(&b).to_vec();
                (bytes, Box::new(move |m, lhs, dst| k_quants::matmul((m, k, n), lhs, &b, dst).unwrap()))
            }
            _ => {
                let b = candle_blocks::<k_quants::BlockQ6K>(&wf);
                let bytes = bytes_of(&b).to_vec();
                (bytes, Box::new(move |m, lhs, dst| k_quants::matmul((m, k, n), lhs, &b, dst).unwrap()))
            }
        };
        // An aligned copy of the blocks, as the kernels need.
        let (q4, q6);
        let weights = if dtype == GgmlDType::Q4K {
            q4 = to_blocks::<BlockQ4K>(&bytes);
            bytes_of(&q4)
        } else {
            q6 = to_blocks::<BlockQ6K>(&bytes);
            bytes_of(&q6)
        };
        for m in [1, 17] {
            let lhs = random(&mut rng, m * k);
            for v in supported() {
                let mut batched = vec![0f32; m * n];
                matmul(v, dtype, (m, k, n), &lhs, weights, &mut batched).unwrap();
                for i in 0..m {
                    let mut one = vec![0f32; n];
                    matmul(v, dtype, (1, k, n), &lhs[i * k..(i + 1) * k], weights, &mut one).unwrap();
                    assert_eq!(one, batched[i * n..(i + 1) * n], "{} {dtype:?} row {i} of {m}", v.name());
                }
                let mut theirs = vec![0f32; m * n];
                theirs_fn(m, &lhs, &mut theirs);
                for (a, b) in batched.iter().zip(&theirs) {
                    assert!(close(*a, *b), "{} {dtype:?} m={m}: {a} vs candle {b}", v.name());
                }
            }
        }
    }
}

#[test]
fn unsupported_shapes_and_types_go_to_candle() {
    let v = Variant::Scalar;
    let mut dst = vec![0f32; 4];
    assert!(matmul(v, GgmlDType::Q4K, (1, 100, 4), &[0.0; 100], &[0; 4 * 144], &mut dst).is_none());
    assert!(matmul(v, GgmlDType::Q4_0, (1, QK_K, 4), &[0.0; QK_K], &[0; 4 * 144], &mut dst).is_none());
    // Weight bytes that do not match the shape.
    assert!(matmul(v, GgmlDType::Q4K, (1, QK_K, 4), &[0.0; QK_K], &[0; 3 * 144], &mut dst).is_none());
}

#[test]
fn the_choice_of_kernels_is_checked() {
    assert_eq!(choose(Some("scalar")), Ok(Kernels::Ours(Variant::Scalar)));
    assert_eq!(choose(Some("candle")), Ok(Kernels::Candle));
    assert!(choose(Some("sse9"))
        .unwrap_err()
        .0
        .contains("not one of scalar, avx2, avx512, avx512vnni, neon, dotprod, candle"));
    for v in Variant::ALL {
        match choose(Some(v.name())) {
            Ok(k) => assert!(v.supported() && k == Kernels::Ours(v)),
            Err(e) => assert!(!v.supported() && e.0.contains("this CPU cannot run"), "{}: {}", v.name(), e.0),
        }
    }
    // Exactly one architecture's variants run here (besides the scalar one).
    assert!(!(Variant::Avx2.supported() && Variant::Neon.supported()));
    assert_eq!(choose(None), Ok(Kernels::Ours(Variant::best())));
    assert!(Variant::Scalar.supported());
}

/// Run-time dispatch against the CPU it runs on: scripts/test-aarch64.sh
/// runs this under qemu's `-cpu cortex-a53` (NEON only) and `-cpu max`
/// (dotprod too) and says which variants each must offer.
#[test]
fn the_variants_offered_are_the_cpus() {
    let Ok(expected) = std::env::var("PHI_MOBILE_EXPECT_KERNELS") else {
        // Natively: the best variant is one this CPU has.
        assert!(Variant::best().supported());
        return;
    };
    let offered: Vec<_> = Variant::ALL.into_iter().filter(|v| v.supported()).map(|v| v.name()).collect();
    assert_eq!(offered.join(","), expected);
}
