//! Kernels against candle (the reference) and every variant against the
//! scalar oracle, on random blocks and edge shapes.

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::GgmlDType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::blocks::{
    self, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1,
    Legacy, QK, QK_K,
};
use super::parallel::Weights;
use super::variant::choose;
use super::*;

/// [`matmul_until`] never stopped.
fn matmul(
    variant: Variant,
    dtype: GgmlDType,
    mkn: (usize, usize, usize),
    lhs: &[f32],
    weights: &[u8],
    dst: &mut [f32],
) -> Option<()> {
    matmul_until(variant, dtype, mkn, lhs, weights, dst, &|| false)
}

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

/// Copies of activation rows `xs` in the order `W`'s kernels on `v` take them.
fn arranged<W: Weights>(v: Variant, xs: &[Vec<W::Act>]) -> Vec<Vec<W::Act>> {
    xs.iter()
        .map(|x| {
            let mut x = x.clone();
            W::arrange(v, &mut x);
            x
        })
        .collect()
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
        let ours = scalar::dot_q4k::<BlockQ4K>(blocks::cast(bytes_of(&w4), blocks_per_row).unwrap(), ours_x);
        let theirs = k_quants::BlockQ4K::vec_dot(k, &w4, &x8);
        assert!(close(ours, theirs), "Q4_K k={k}: {ours} vs candle {theirs}");

        let w5 = candle_blocks::<k_quants::BlockQ5K>(&random(&mut rng, k));
        let ours = scalar::dot_q4k::<BlockQ5K>(blocks::cast(bytes_of(&w5), blocks_per_row).unwrap(), ours_x);
        let theirs = k_quants::BlockQ5K::vec_dot(k, &w5, &x8);
        assert!(close(ours, theirs), "Q5_K k={k}: {ours} vs candle {theirs}");

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
        let w5 = to_blocks::<BlockQ5K>(&raw_blocks::<BlockQ5K>(&mut rng, n, &[0, 2]));
        let w6 = to_blocks::<BlockQ6K>(&raw_blocks::<BlockQ6K>(&mut rng, n, &[208]));
        let want4 = rows.map(|x| scalar::dot_q4k(&w4, x).to_bits());
        let want5 = rows.map(|x| scalar::dot_q4k(&w5, x).to_bits());
        let want6 = rows.map(|x| scalar::dot_q6k(&w6, x).to_bits());
        for v in supported() {
            // Q4_K's and Q5_K's activations as the variant takes them.
            let arranged = arranged::<BlockQ4K>(v, &xs);
            let arranged: [&[BlockQ8K]; 4] = std::array::from_fn(|r| &arranged[r][..]);
            for r in 0..4 {
                let x = [arranged[r]];
                assert_eq!(v.dot_q4k(&w4, x)[0].to_bits(), want4[r], "{} Q4_K, {n} blocks, row {r}", v.name());
                assert_eq!(v.dot_q5k(&w5, x)[0].to_bits(), want5[r], "{} Q5_K, {n} blocks, row {r}", v.name());
                assert_eq!(v.dot_q6k(&w6, [rows[r]])[0].to_bits(), want6[r], "{} Q6_K, {n} blocks, row {r}", v.name());
            }
            assert_eq!(v.dot_q4k(&w4, arranged).map(f32::to_bits), want4, "{} Q4_K, 4 rows at once", v.name());
            assert_eq!(v.dot_q5k(&w5, arranged).map(f32::to_bits), want5, "{} Q5_K, 4 rows at once", v.name());
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
    for (dtype, k, n) in [
        (GgmlDType::Q4K, QK_K, 37),
        (GgmlDType::Q6K, 3 * QK_K, 19),
        (GgmlDType::Q4K, 12 * QK_K, 33),
        (GgmlDType::Q5K, 5 * QK_K, 21),
    ] {
        let wf = random(&mut rng, n * k);
        let (bytes, theirs_fn): (Vec<u8>, CandleMatmul) = match dtype {
            GgmlDType::Q4K => {
                let b = candle_blocks::<k_quants::BlockQ4K>(&wf);
                let bytes = bytes_of(&b).to_vec();
                (bytes, Box::new(move |m, lhs, dst| k_quants::matmul((m, k, n), lhs, &b, dst).unwrap()))
            }
            GgmlDType::Q5K => {
                let b = candle_blocks::<k_quants::BlockQ5K>(&wf);
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
        let (q4, q5, q6);
        let weights = if dtype == GgmlDType::Q4K {
            q4 = to_blocks::<BlockQ4K>(&bytes);
            bytes_of(&q4)
        } else if dtype == GgmlDType::Q5K {
            q5 = to_blocks::<BlockQ5K>(&bytes);
            bytes_of(&q5)
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
    assert!(matmul(v, GgmlDType::Q8K, (1, QK_K, 4), &[0.0; QK_K], &[0; 4 * 292], &mut dst).is_none());
    assert!(matmul(v, GgmlDType::Q4_0, (1, 48, 4), &[0.0; 48], &[0; 4 * 18], &mut dst).is_none());
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
        .contains("not one of scalar, avx2, avx512, avx512vnni, neon, dotprod, i8mm, candle"));
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

/// Our Q8_1 activations: `d` and the quants equal candle's Q8_0 and Q8_1
/// byte for byte; `s` is ggml's (`d · Σq` rounded once), which candle
/// rounds twice, so it agrees to f16 precision.
#[test]
fn q8_1_quantization_equals_candles() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut xs = random(&mut rng, 4 * QK);
    xs[QK..2 * QK].fill(0.0);
    xs[2 * QK + 3] = -40.0;
    let mut ours = vec![BlockQ8_1::ZERO; 4];
    blocks::quantize_q8_1(&xs, &mut ours);
    let q8_0 = candle_blocks::<k_quants::BlockQ8_0>(&xs);
    let q8_1 = candle_blocks::<k_quants::BlockQ8_1>(&xs);
    // candle's layouts: Q8_0 is d then qs; Q8_1 is d, s, then qs.
    let (b0, b1) = (bytes_of(&q8_0), bytes_of(&q8_1));
    for (i, o) in ours.iter().enumerate() {
        let (c0, c1) = (&b0[34 * i..34 * (i + 1)], &b1[36 * i..36 * (i + 1)]);
        assert_eq!(o.d.to_le_bytes(), c0[..2], "block {i}");
        assert_eq!(o.d.to_le_bytes(), c1[..2], "block {i}");
        assert_eq!(bytes_of(&o.qs), &c0[2..], "block {i}");
        assert_eq!(bytes_of(&o.qs), &c1[4..], "block {i}");
        let (s, theirs) = (blocks::f16_to_f32(o.s), blocks::f16_to_f32(u16::from_le_bytes([c1[2], c1[3]])));
        assert!((s - theirs).abs() <= 2e-3 * theirs.abs(), "block {i}: s {s} vs candle {theirs}");
        let sum: i32 = o.qs.iter().map(|&q| q as i32).sum();
        let amax = xs[i * QK..(i + 1) * QK].iter().fold(0f32, |a, v| a.max(v.abs()));
        assert_eq!(o.s, half::f16::from_f32(sum as f32 * (amax / 127.0)).to_bits(), "block {i}: ggml's s");
    }
}

/// Our blocks as candle's (same bytes).
fn as_candle<C: GgmlType, T: blocks::Plain>(ours: &[T]) -> Vec<C> {
    assert_eq!(std::mem::size_of::<C>(), std::mem::size_of::<T>());
    let mut v = vec![C::zeros(); ours.len()];
    // SAFETY: equal sizes (checked); both are plain `repr(C)` blocks of the
    // same GGUF layout; `v` holds `ours.len()` blocks.
    unsafe {
        std::ptr::copy_nonoverlapping(
            ours.as_ptr() as *const u8,
            v.as_mut_ptr() as *mut u8,
            std::mem::size_of_val(ours),
        )
    };
    v
}

/// One 32-element type: the oracle against candle's `vec_dot` (on candle's
/// own activations, which carry the same quants), and every variant
/// against the oracle bit for bit, one row and four rows at once.
fn legacy_case<W: Legacy + std::fmt::Debug, C: GgmlType>(name: &str, seed: u64, f16_offsets: &[usize]) {
    let mut rng = StdRng::seed_from_u64(seed);
    for n in [1, 2, 7, 12] {
        let k = n * QK;
        let w = to_blocks::<W>(&raw_blocks::<W>(&mut rng, n, f16_offsets));
        let xs: Vec<Vec<BlockQ8_1>> = (0..4)
            .map(|r| {
                let mut x = vec![BlockQ8_1::ZERO; n];
                blocks::quantize_q8_1(&random(&mut rng, k), &mut x);
                if r == 3 {
                    // The extremes of the quantizer's range.
                    x[n - 1].qs = [-127; QK];
                    x[0].qs[5] = 127;
                    for b in [0, n - 1] {
                        let sum: i32 = x[b].qs.iter().map(|&q| q as i32).sum();
                        x[b].s = half::f16::from_f32(sum as f32 * blocks::f16_to_f32(x[b].d)).to_bits();
                    }
                }
                x
            })
            .collect();
        let rows: [&[BlockQ8_1]; 4] = std::array::from_fn(|r| &xs[r][..]);
        let want = rows.map(|x| scalar::dot_legacy(&w, x));

        // candle's activations for this type (Q8_0 or Q8_1) with our quants.
        let theirs_w = as_candle::<C, W>(&w);
        let mut wf = vec![0f32; k];
        C::to_float(&theirs_w, &mut wf);
        for (r, x) in rows.iter().enumerate() {
            let mut theirs_x = vec![C::VecDotType::zeros(); n];
            let deq: Vec<f32> = x.iter().flat_map(|b| b.qs.map(|q| q as f32 * blocks::f16_to_f32(b.d))).collect();
            C::VecDotType::from_float(&deq, &mut theirs_x);
            let theirs = C::vec_dot(k, &theirs_w, &theirs_x);
            // Rounding (f16 `s`, summation order) is relative to the terms' size.
            let scale: f32 = wf.iter().zip(&deq).map(|(a, b)| (a * b).abs()).sum();
            assert!(
                (want[r] - theirs).abs() <= 2e-3 * (1e-3 + scale),
                "{name} {n} blocks row {r}: oracle {} vs candle {theirs}",
                want[r]
            );
        }
        for v in supported() {
            for r in 0..4 {
                assert_eq!(
                    v.dot_legacy(&w, [rows[r]])[0].to_bits(),
                    want[r].to_bits(),
                    "{} {name}, {n} blocks, row {r}",
                    v.name()
                );
            }
            assert_eq!(
                v.dot_legacy(&w, rows).map(f32::to_bits),
                want.map(f32::to_bits),
                "{} {name}, {n} blocks, 4 rows",
                v.name()
            );
        }
    }
}

#[test]
fn the_32_element_types_agree_with_candle_and_every_variant_with_the_oracle() {
    // f16 scales (and mins) at bytes 0 (and 2).
    legacy_case::<BlockQ4_0, k_quants::BlockQ4_0>("Q4_0", 10, &[0]);
    legacy_case::<BlockQ4_1, k_quants::BlockQ4_1>("Q4_1", 11, &[0, 2]);
    legacy_case::<BlockQ5_0, k_quants::BlockQ5_0>("Q5_0", 12, &[0]);
    legacy_case::<BlockQ5_1, k_quants::BlockQ5_1>("Q5_1", 13, &[0, 2]);
    legacy_case::<BlockQ8_0, k_quants::BlockQ8_0>("Q8_0", 14, &[0]);
}

/// The decoded values against candle's dequantization: the layouts are
/// read as ggml writes them.
#[test]
fn the_32_element_layouts_match_candles() {
    fn check<W: Legacy, C: GgmlType>(name: &str, seed: u64, f16_offsets: &[usize]) {
        let mut rng = StdRng::seed_from_u64(seed);
        let w = to_blocks::<W>(&raw_blocks::<W>(&mut rng, 3, f16_offsets));
        let mut theirs = vec![0f32; 3 * QK];
        C::to_float(&as_candle::<C, W>(&w), &mut theirs);
        for (b, w) in w.iter().enumerate() {
            let (d, m) = (blocks::f16_to_f32(w.d()), blocks::f16_to_f32(w.m()));
            for (e, &v) in blocks::legacy_values(w).iter().enumerate() {
                let ours = v as f32 * d + m;
                assert!((ours - theirs[b * QK + e]).abs() <= 1e-6, "{name} block {b} element {e}");
            }
        }
    }
    check::<BlockQ4_0, k_quants::BlockQ4_0>("Q4_0", 20, &[0]);
    check::<BlockQ4_1, k_quants::BlockQ4_1>("Q4_1", 21, &[0, 2]);
    check::<BlockQ5_0, k_quants::BlockQ5_0>("Q5_0", 22, &[0]);
    check::<BlockQ5_1, k_quants::BlockQ5_1>("Q5_1", 23, &[0, 2]);
    check::<BlockQ8_0, k_quants::BlockQ8_0>("Q8_0", 24, &[0]);
}

/// The matmul for a 32-element type: a batch equals its rows one by one (an
/// odd number of blocks per row: the AVX-512 tail), and agrees with candle's.
fn legacy_matmul_case<W: Legacy, C: GgmlType>(dtype: GgmlDType, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (k, n) = (7 * QK, 21);
    let theirs_w = candle_blocks::<C>(&random(&mut rng, n * k));
    let w = to_blocks::<W>(bytes_of(&theirs_w));
    let mut wf = vec![0f32; n * k];
    C::to_float(&theirs_w, &mut wf);
    for m in [1, 6] {
        let lhs = random(&mut rng, m * k);
        let mut theirs = vec![0f32; m * n];
        k_quants::matmul((m, k, n), &lhs, &theirs_w, &mut theirs).unwrap();
        for v in supported() {
            let mut batched = vec![0f32; m * n];
            matmul(v, dtype, (m, k, n), &lhs, bytes_of(&w), &mut batched).unwrap();
            for i in 0..m {
                let mut one = vec![0f32; n];
                matmul(v, dtype, (1, k, n), &lhs[i * k..(i + 1) * k], bytes_of(&w), &mut one).unwrap();
                assert_eq!(one, batched[i * n..(i + 1) * n], "{} {dtype:?} row {i} of {m}", v.name());
            }
            for (e, (a, b)) in batched.iter().zip(&theirs).enumerate() {
                // Rounding is relative to the terms' size, Σ|w·x|.
                let (i, j) = (e / n, e % n);
                let scale: f32 =
                    lhs[i * k..(i + 1) * k].iter().zip(&wf[j * k..(j + 1) * k]).map(|(x, w)| (x * w).abs()).sum();
                assert!((a - b).abs() <= 2e-3 * (1e-3 + scale), "{} {dtype:?} m={m}: {a} vs candle {b}", v.name());
            }
        }
    }
}

#[test]
fn the_32_element_matmuls_are_row_independent_and_agree_with_candle() {
    legacy_matmul_case::<BlockQ4_0, k_quants::BlockQ4_0>(GgmlDType::Q4_0, 30);
    legacy_matmul_case::<BlockQ4_1, k_quants::BlockQ4_1>(GgmlDType::Q4_1, 31);
    legacy_matmul_case::<BlockQ5_0, k_quants::BlockQ5_0>(GgmlDType::Q5_0, 32);
    legacy_matmul_case::<BlockQ5_1, k_quants::BlockQ5_1>(GgmlDType::Q5_1, 33);
    legacy_matmul_case::<BlockQ8_0, k_quants::BlockQ8_0>(GgmlDType::Q8_0, 34);
}

/// Matrices sharing an input (q, k, v) in one call give exactly what each
/// gives alone, for decode and for a prompt, with sizes that split the
/// rows and tiles unevenly between them.
#[test]
fn matrices_sharing_an_input_equal_each_alone() {
    let mut rng = StdRng::seed_from_u64(40);
    let k = 3 * QK_K;
    let ns = [37, 5, 20];
    let w: Vec<Vec<k_quants::BlockQ4K>> = ns.iter().map(|&n| candle_blocks(&random(&mut rng, n * k))).collect();
    for m in [1, 6] {
        let lhs = random(&mut rng, m * k);
        for v in supported() {
            let mut shared: Vec<Vec<f32>> = ns.iter().map(|&n| vec![0f32; m * n]).collect();
            let [a, b, c] = &mut shared[..] else { unreachable!() };
            let weights = [0, 1, 2].map(|p| bytes_of(&w[p]));
            matmul_shared_until(v, GgmlDType::Q4K, (m, k), &lhs, weights, [a, b, c], &|| false).unwrap();
            for p in 0..3 {
                let mut alone = vec![0f32; m * ns[p]];
                matmul(v, GgmlDType::Q4K, (m, k, ns[p]), &lhs, weights[p], &mut alone).unwrap();
                assert_eq!(shared[p], alone, "{} m={m} matrix {p}", v.name());
            }
        }
    }
    assert!(!shares_input(GgmlDType::Q8K) && !shares_input(GgmlDType::F32));
}

mod low_bits;
mod pairs;
