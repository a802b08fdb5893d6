//! Two weight rows at once (`dot_pair_*`: i8mm's `smmla` kernels, AVX2's and
//! AVX-512's Q4_K and Q5_K, every other variant's two calls) equal the oracle's dot
//! products bit for bit, for every type, with four to one activation rows
//! (an odd count is folded with itself on x86).

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::super::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0,
};
use super::super::parallel::{Activations, Weights};
use super::super::Variant;
use super::{arranged, random, raw_blocks, supported, to_blocks};

/// `W`'s f16 fields at `f16_offsets` of each block (finite), the rest random bits.
fn case<W: Weights>(name: &str, seed: u64, f16_offsets: &[usize]) {
    let mut rng = StdRng::seed_from_u64(seed);
    for n in [1, 3] {
        let k = n * W::Act::BLOCK;
        let w: [Vec<W>; 2] = std::array::from_fn(|_| to_blocks(&raw_blocks::<W>(&mut rng, n, f16_offsets)));
        let xs: Vec<Vec<W::Act>> = (0..4)
            .map(|_| {
                let mut x = to_blocks::<W::Act>(&vec![0; n * std::mem::size_of::<W::Act>()]);
                W::Act::quantize(&random(&mut rng, k), &mut x);
                x
            })
            .collect();
        let rows: [&[W::Act]; 4] = std::array::from_fn(|r| &xs[r][..]);
        let want = [&w[0], &w[1]].map(|w| rows.map(|x| W::dot(Variant::Scalar, w, [x])[0].to_bits()));
        for v in supported() {
            let arranged = arranged::<W>(v, &xs);
            let rows: [&[W::Act]; 4] = std::array::from_fn(|r| &arranged[r][..]);
            let four = W::dot_pair(v, [&w[0], &w[1]], rows).map(|r| r.map(f32::to_bits));
            assert_eq!(four, want, "{} {name}, {n} blocks, 2 × 4 rows", v.name());
            let two = W::dot_pair(v, [&w[0], &w[1]], [rows[3], rows[1]]).map(|r| r.map(f32::to_bits));
            assert_eq!(two, want.map(|r| [r[3], r[1]]), "{} {name}, {n} blocks, 2 × 2 rows", v.name());
            let three = W::dot_pair(v, [&w[0], &w[1]], [rows[2], rows[0], rows[3]]).map(|r| r.map(f32::to_bits));
            assert_eq!(three, want.map(|r| [r[2], r[0], r[3]]), "{} {name}, {n} blocks, 2 × 3 rows", v.name());
            let one = W::dot_pair(v, [&w[0], &w[1]], [rows[1]]).map(|r| r.map(f32::to_bits));
            assert_eq!(one, want.map(|r| [r[1]]), "{} {name}, {n} blocks, 2 × 1 row", v.name());
        }
    }
}

#[test]
fn two_weight_rows_at_once_equal_the_oracle() {
    case::<BlockQ2K>("Q2_K", 60, &[80, 82]);
    case::<BlockQ3K>("Q3_K", 61, &[108]);
    case::<BlockQ4K>("Q4_K", 62, &[0, 2]);
    case::<BlockQ5K>("Q5_K", 63, &[0, 2]);
    case::<BlockQ6K>("Q6_K", 64, &[208]);
    case::<BlockQ4_0>("Q4_0", 65, &[0]);
    case::<BlockQ4_1>("Q4_1", 66, &[0, 2]);
    case::<BlockQ5_0>("Q5_0", 67, &[0]);
    case::<BlockQ5_1>("Q5_1", 68, &[0, 2]);
    case::<BlockQ8_0>("Q8_0", 69, &[0]);
}
