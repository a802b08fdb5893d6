//! Quantized matrix × vector / matrix kernels, ours rather than candle's.
//!
//! Why our own: candle's kernels are chosen at compile time, so a phone build
//! (whose Rust targets enable only `neon`) never runs `sdot`/`smmla`, and it
//! has no i8mm path at all; and their float accumulation order differs per
//! variant, so no variant can be checked exactly against another. Here:
//! - one dispatch point, chosen once at run time ([`selected`]) with
//!   `PHI_MOBILE_KERNELS` (an unsupported choice is an error, never an
//!   illegal instruction). Until ours beat candle's on the benchmark, the
//!   default stays candle's;
//! - every variant computes each block's integer sums exactly and then does
//!   the same float arithmetic in the same order, so every SIMD variant is
//!   bit-identical to the scalar oracle ([`scalar`]), which is itself checked
//!   against candle's reference;
//! - each output element depends only on its weight row and its activation
//!   row, so a batched prompt gives exactly the token-by-token logits.
//!
//! Weights are read in their GGUF block layout ([`blocks`]); activations are
//! quantized once per input row to Q8_K as ggml does. Weight types without a
//! kernel here go to candle's (`matmul` returns `None`).

pub(crate) mod blocks;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;

use blocks::{BlockQ4K, BlockQ6K, BlockQ8K, QK_K};

/// A kernel family, in order of preference on its architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Portable Rust: the oracle every other variant must equal.
    Scalar,
    /// x86-64 AVX2 (+FMA).
    Avx2,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Scalar, Variant::Avx2];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Scalar => "scalar",
            Variant::Avx2 => "avx2",
        }
    }

    /// Whether this CPU can run the variant.
    pub fn supported(self) -> bool {
        match self {
            Variant::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Variant::Avx2 => false,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }

    /// `Σ w·x` over one row of Q4_K blocks and the activation's Q8_K blocks.
    pub fn dot_q4k(self, w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), x.len());
        match self {
            Variant::Scalar => scalar::dot_q4k(w, x),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a Variant other than Scalar is only used once `supported()`
            // said the CPU has its features (see `selected` and `check`).
            Variant::Avx2 => unsafe { x86::dot_q4k_avx2(w, x) },
            #[cfg(not(target_arch = "x86_64"))]
            Variant::Avx2 => unreachable!("avx2 is never selected off x86-64"),
        }
    }

    /// `Σ w·x` over one row of Q6_K blocks and the activation's Q8_K blocks.
    pub fn dot_q6k(self, w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), x.len());
        match self {
            Variant::Scalar => scalar::dot_q6k(w, x),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `dot_q4k`.
            Variant::Avx2 => unsafe { x86::dot_q6k_avx2(w, x) },
            #[cfg(not(target_arch = "x86_64"))]
            Variant::Avx2 => unreachable!("avx2 is never selected off x86-64"),
        }
    }
}

/// Why a requested variant cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedKernels(pub String);

impl std::fmt::Display for UnsupportedKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `PHI_MOBILE_KERNELS` asks for: one of our variants, or `candle` (its
/// kernels for every type: the baseline the benchmark compares against).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    Ours(Variant),
    Candle,
}

/// The kernels `requested` names; by default candle's, until ours measure
/// faster (docs/PERFORMANCE.md: today our AVX2 is 0.64× candle's prefill and
/// 0.88× its decode on Phi-3-mini).
pub fn choose(requested: Option<&str>) -> Result<Kernels, UnsupportedKernels> {
    match requested.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Kernels::Candle),
        Some("candle") => Ok(Kernels::Candle),
        Some(name) => {
            let names: Vec<_> = Variant::ALL.iter().map(|v| v.name()).chain(["candle"]).collect();
            let v = Variant::from_name(name).ok_or_else(|| {
                UnsupportedKernels(format!("PHI_MOBILE_KERNELS={name} is not one of {}", names.join(", ")))
            })?;
            if v.supported() {
                Ok(Kernels::Ours(v))
            } else {
                Err(UnsupportedKernels(format!("PHI_MOBILE_KERNELS={name}: this CPU cannot run the {name} kernels")))
            }
        }
    }
}

/// The process's kernels, chosen once.
pub fn selected() -> Result<Kernels, UnsupportedKernels> {
    static SELECTED: OnceLock<Result<Kernels, UnsupportedKernels>> = OnceLock::new();
    SELECTED.get_or_init(|| choose(std::env::var("PHI_MOBILE_KERNELS").ok().as_deref())).clone()
}

/// Activation rows quantized once, for every weight row to reuse.
fn quantize_rows(lhs: &[f32], k: usize) -> Vec<BlockQ8K> {
    let mut q = vec![BlockQ8K::ZERO; lhs.len() / QK_K];
    for (row, out) in lhs.chunks_exact(k).zip(q.chunks_exact_mut(k / QK_K)) {
        blocks::quantize_q8k(row, out);
    }
    q
}

/// Weight rows per task: a tile small enough to stay in L2 while every
/// activation row passes over it.
const ROWS_PER_TASK: usize = 16;

/// `dst[i, j] = Σ_k lhs[i, k] · w[j, k]` for an `n × k` weight in its GGUF
/// block layout (`weights`), `m` rows of `lhs`. `None`: no kernel here for
/// this type or shape (candle's is used).
pub fn matmul(
    variant: Variant,
    dtype: GgmlDType,
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    weights: &[u8],
    dst: &mut [f32],
) -> Option<()> {
    if !k.is_multiple_of(QK_K) || lhs.len() != m * k || dst.len() != m * n {
        return None;
    }
    match dtype {
        GgmlDType::Q4K => {
            let w = blocks::cast::<BlockQ4K>(weights, n * k / QK_K)?;
            run(m, k, n, lhs, dst, |row, x| variant.dot_q4k(&w[row * k / QK_K..(row + 1) * k / QK_K], x));
            Some(())
        }
        GgmlDType::Q6K => {
            let w = blocks::cast::<BlockQ6K>(weights, n * k / QK_K)?;
            run(m, k, n, lhs, dst, |row, x| variant.dot_q6k(&w[row * k / QK_K..(row + 1) * k / QK_K], x));
            Some(())
        }
        _ => None,
    }
}

/// Splits the weight rows into tiles across rayon's pool; each tile runs
/// every activation row, then the results land in `dst`.
fn run(m: usize, k: usize, n: usize, lhs: &[f32], dst: &mut [f32], dot: impl Fn(usize, &[BlockQ8K]) -> f32 + Sync) {
    use rayon::prelude::*;
    let x = quantize_rows(lhs, k);
    let per_row = k / QK_K;
    if m == 1 {
        dst.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(tile, out)| {
            for (i, o) in out.iter_mut().enumerate() {
                *o = dot(tile * ROWS_PER_TASK + i, &x);
            }
        });
        return;
    }
    let tiles: Vec<Vec<f32>> = (0..n.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|tile| {
            let rows = tile * ROWS_PER_TASK..((tile + 1) * ROWS_PER_TASK).min(n);
            let mut out = Vec::with_capacity(m * rows.len());
            for xi in x.chunks_exact(per_row) {
                out.extend(rows.clone().map(|r| dot(r, xi)));
            }
            out
        })
        .collect();
    for (tile, out) in tiles.iter().enumerate() {
        let start = tile * ROWS_PER_TASK;
        let width = out.len() / m;
        for (i, row) in out.chunks_exact(width).enumerate() {
            dst[i * n + start..i * n + start + width].copy_from_slice(row);
        }
    }
}

#[cfg(test)]
mod tests;
