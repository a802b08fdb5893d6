//! Quantized matrix × vector / matrix kernels, ours rather than candle's.
//!
//! Why our own: candle's kernels are chosen at compile time, so a phone build
//! (whose Rust targets enable only `neon`) never runs `sdot`/`smmla`, and it
//! has no i8mm path at all; and their float accumulation order differs per
//! variant, so no variant can be checked exactly against another. Here:
//! - one dispatch point, chosen once at run time ([`selected`]) with
//!   `PHI_MOBILE_KERNELS` (an unsupported choice is an error, never an
//!   illegal instruction). By default the best variant the CPU runs
//!   ([`Variant::best`]); `candle` selects candle's kernels, the baseline;
//! - every variant computes each block's integer sums exactly, in the lane
//!   model `scalar.rs` defines, and then does the same float arithmetic in
//!   the same order, so every SIMD variant is bit-identical to the scalar
//!   oracle ([`scalar`]), which is itself checked against candle's reference;
//! - a kernel takes several activation rows per weight row and unpacks the
//!   weights once for all of them (a prompt's matmul); work is split among
//!   candle's persistent worker pool, so no op spawns threads;
//! - each output element depends only on its weight row and its activation
//!   row, so a batched prompt gives exactly the token-by-token logits.
//!
//! Weights are read in their GGUF block layout ([`blocks`]); activations are
//! quantized once per input row as ggml does (Q8_K for the K-quants, Q8_1
//! for the 32-element types). Covered: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
//! Q3_K, Q4_K, Q5_K, Q6_K, and the float types ([`dense`]); other weight
//! types go to candle's (`matmul` returns `None`). Q2_K and Q3_K run their
//! AVX2 kernels on AVX-512 CPUs too (same lanes, so the same bits): their
//! blocks are small enough that a 512-bit version is left for when a
//! benchmark on such a file asks for it.

#[cfg(target_arch = "aarch64")]
mod arm;
pub mod attention;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod blocks;
pub mod candle;
pub mod dense;
mod parallel;
mod scalar;
mod variant;
#[cfg(target_arch = "x86_64")]
mod x86;

use candle_core::quantized::GgmlDType;

use blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0};
use parallel::run;
pub use variant::{selected, Kernels, Variant};

/// `dst[i, j] = Σ_k lhs[i, k] · w[j, k]` for an `n × k` weight in its GGUF
/// block layout (`weights`), `m` rows of `lhs`, giving up between weight
/// tiles of a prompt once `stop()` says so (then `dst` is incomplete: the
/// caller discards it). `None`: no kernel here for this type or shape
/// (candle's is used).
pub fn matmul_until(
    variant: Variant,
    dtype: GgmlDType,
    mkn: (usize, usize, usize),
    lhs: &[f32],
    weights: &[u8],
    dst: &mut [f32],
    stop: &(dyn Fn() -> bool + Sync),
) -> Option<()> {
    let (m, k, n) = mkn;
    let elements = n.checked_mul(k)?;
    if dst.len() != m.checked_mul(n)? {
        return None;
    }
    match dtype {
        GgmlDType::F32 => dense::matmul::<f32>(mkn, lhs, blocks::cast(weights, elements)?, dst),
        GgmlDType::F16 => dense::matmul::<half::f16>(mkn, lhs, blocks::cast(weights, elements)?, dst),
        GgmlDType::BF16 => dense::matmul::<half::bf16>(mkn, lhs, blocks::cast(weights, elements)?, dst),
        _ => matmul_shared_until(variant, dtype, (m, k), lhs, [weights], [dst], stop),
    }
}

/// Whether [`matmul_shared_until`] covers the type.
pub fn shares_input(dtype: GgmlDType) -> bool {
    use GgmlDType::*;
    matches!(dtype, Q2K | Q3K | Q4K | Q5K | Q6K | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
}

/// `P` quantized matrices of one type applied to the same input (q, k and
/// v; gate and up): the input is quantized once and all their rows are
/// split among the threads in one dispatch. Each output equals what
/// [`matmul_until`] gives for its matrix alone. `None`: no kernel here for
/// this type or shape.
pub fn matmul_shared_until<const P: usize>(
    variant: Variant,
    dtype: GgmlDType,
    mk: (usize, usize),
    lhs: &[f32],
    weights: [&[u8]; P],
    dsts: [&mut [f32]; P],
    stop: &(dyn Fn() -> bool + Sync),
) -> Option<()> {
    match dtype {
        GgmlDType::Q2K => run::<BlockQ2K, P>(variant, mk, lhs, weights, dsts, stop),
        GgmlDType::Q3K => run::<BlockQ3K, P>(variant, mk, lhs, weights, dsts, stop),
        GgmlDType::Q4K => run::<BlockQ4K, P>(variant, mk, lhs, weights, dsts, stop),
        GgmlDType::Q5K => run::<BlockQ5K, P>(variant, mk, lhs, weights, dsts, stop),
        GgmlDType::Q6K => run::<BlockQ6K, P>(variant, mk, lhs, weights, dsts, stop),
        GgmlDType::Q4_0 => run::<BlockQ4_0, P>(variant, mk, lhs, weights, dsts, stop),
        GgmlDType::Q4_1 => run::<BlockQ4_1, P>(variant, mk, lhs, weights, dsts, stop),
        GgmlDType::Q5_0 => run::<BlockQ5_0, P>(variant, mk, lhs, weights, dsts, stop),
        GgmlDType::Q5_1 => run::<BlockQ5_1, P>(variant, mk, lhs, weights, dsts, stop),
        GgmlDType::Q8_0 => run::<BlockQ8_0, P>(variant, mk, lhs, weights, dsts, stop),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
