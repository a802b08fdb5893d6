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
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;

use blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1, Legacy, QK, QK_K,
};

/// A kernel family, in order of preference on its architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Portable Rust: the oracle every other variant must equal.
    Scalar,
    /// x86-64 AVX2 (+FMA, F16C: every AVX2 CPU has them).
    Avx2,
    /// x86-64 AVX-512 F + BW (+VL, FMA): Skylake-X and later.
    Avx512,
    /// AVX-512 with VNNI's fused `vpdpwssd`: Ice Lake, Zen 4 and later.
    Avx512Vnni,
    /// aarch64 NEON, which every ARMv8 core has.
    Neon,
    /// aarch64 NEON with ARMv8.2's `sdot`.
    Dotprod,
}

impl Variant {
    pub const ALL: [Variant; 6] =
        [Variant::Scalar, Variant::Avx2, Variant::Avx512, Variant::Avx512Vnni, Variant::Neon, Variant::Dotprod];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Scalar => "scalar",
            Variant::Avx2 => "avx2",
            Variant::Avx512 => "avx512",
            Variant::Avx512Vnni => "avx512vnni",
            Variant::Neon => "neon",
            Variant::Dotprod => "dotprod",
        }
    }

    /// Whether this CPU can run the variant.
    pub fn supported(self) -> bool {
        match self {
            Variant::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512 => {
                // AVX2 too: the Q2_K and Q3_K kernels are AVX2's.
                Variant::Avx2.supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512Vnni => Variant::Avx512.supported() && std::arch::is_x86_feature_detected!("avx512vnni"),
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Variant::Dotprod => {
                std::arch::is_aarch64_feature_detected!("neon") && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)] // each architecture matches its own above
            _ => false,
        }
    }

    /// The fastest variant this CPU runs.
    pub fn best() -> Self {
        [Variant::Dotprod, Variant::Neon, Variant::Avx512Vnni, Variant::Avx512, Variant::Avx2]
            .into_iter()
            .find(|v| v.supported())
            .unwrap_or(Variant::Scalar)
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }

    /// `Σ w·x[r]` over one row of Q4_K blocks, for `R` activation rows of
    /// Q8_K blocks.
    pub fn dot_q4k<const R: usize>(self, w: &[BlockQ4K], x: [&[BlockQ8K]; R]) -> [f32; R] {
        dispatch!(
            self,
            w,
            x,
            scalar::dot_q4k,
            x86::dot_q4k::<BlockQ4K, R>,
            avx512::dot_q4k_bw,
            avx512::dot_q4k_vnni,
            arm::dot_q4k_neon,
            arm::dot_q4k_dotprod
        )
    }

    /// `Σ w·x[r]` over one row of Q5_K blocks, for `R` activation rows.
    pub fn dot_q5k<const R: usize>(self, w: &[BlockQ5K], x: [&[BlockQ8K]; R]) -> [f32; R] {
        dispatch!(
            self,
            w,
            x,
            scalar::dot_q4k,
            x86::dot_q4k::<BlockQ5K, R>,
            avx512::dot_q5k_bw,
            avx512::dot_q5k_vnni,
            arm::dot_q5k_neon,
            arm::dot_q5k_dotprod
        )
    }

    /// `Σ w·x[r]` over one row of Q2_K blocks, for `R` activation rows.
    pub fn dot_q2k<const R: usize>(self, w: &[BlockQ2K], x: [&[BlockQ8K]; R]) -> [f32; R] {
        dispatch!(
            self,
            w,
            x,
            scalar::dot_q2k,
            x86::dot_q2k,
            x86::dot_q2k,
            x86::dot_q2k,
            arm::dot_q2k_neon,
            arm::dot_q2k_dotprod
        )
    }

    /// `Σ w·x[r]` over one row of Q3_K blocks, for `R` activation rows.
    pub fn dot_q3k<const R: usize>(self, w: &[BlockQ3K], x: [&[BlockQ8K]; R]) -> [f32; R] {
        dispatch!(
            self,
            w,
            x,
            scalar::dot_q3k,
            x86::dot_q3k,
            x86::dot_q3k,
            x86::dot_q3k,
            arm::dot_q3k_neon,
            arm::dot_q3k_dotprod
        )
    }

    /// `Σ w·x[r]` over one row of Q6_K blocks, for `R` activation rows.
    pub fn dot_q6k<const R: usize>(self, w: &[BlockQ6K], x: [&[BlockQ8K]; R]) -> [f32; R] {
        dispatch!(
            self,
            w,
            x,
            scalar::dot_q6k,
            x86::dot_q6k,
            avx512::dot_q6k_bw,
            avx512::dot_q6k_vnni,
            arm::dot_q6k_neon,
            arm::dot_q6k_dotprod
        )
    }

    /// `Σ w·x[r]` over one row of a 32-element type's blocks, for `R`
    /// activation rows of Q8_1 blocks (from `quantize_q8_1`: within ±127).
    pub fn dot_legacy<W: Legacy, const R: usize>(self, w: &[W], x: [&[BlockQ8_1]; R]) -> [f32; R] {
        dispatch!(
            self,
            w,
            x,
            scalar::dot_legacy::<W>,
            x86::dot_legacy::<W, R>,
            avx512::dot_legacy_bw::<W, R>,
            avx512::dot_legacy_vnni::<W, R>,
            arm::dot_legacy_neon::<W, R>,
            arm::dot_legacy_dotprod::<W, R>
        )
    }
}

/// The one place a variant becomes its kernel: checks the lengths the
/// kernels rely on, then calls the variant's entry point.
macro_rules! dispatch {
    ($v:expr, $w:expr, $x:expr, $scalar:path, $avx2:path, $avx512:path, $vnni:path, $neon:path, $dotprod:path) => {{
        let (w, x) = ($w, $x);
        assert!(x.iter().all(|x| x.len() == w.len()));
        // SAFETY (each arm): a Variant other than Scalar is only used once
        // `supported()` said the CPU has its features (see `choose`); the
        // lengths are checked above.
        match $v {
            Variant::Scalar => x.map(|x| $scalar(w, x)),
            #[cfg(target_arch = "x86_64")]
            Variant::Avx2 => unsafe { $avx2(w, x) },
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512 => unsafe { $avx512(w, x) },
            #[cfg(target_arch = "x86_64")]
            Variant::Avx512Vnni => unsafe { $vnni(w, x) },
            #[cfg(target_arch = "aarch64")]
            Variant::Neon => unsafe { $neon(w, x) },
            #[cfg(target_arch = "aarch64")]
            Variant::Dotprod => unsafe { $dotprod(w, x) },
            #[allow(unreachable_patterns)]
            v => unreachable!("{} is never selected on this architecture", v.name()),
        }
    }};
}
use dispatch;

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

/// The kernels `requested` names; by default ours, the best variant this CPU
/// runs (docs/PERFORMANCE.md: on Phi-3-mini our AVX2 is 1.45× candle's
/// prefill and 1.06× its decode). `candle` stays selectable as the baseline.
pub fn choose(requested: Option<&str>) -> Result<Kernels, UnsupportedKernels> {
    match requested.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Kernels::Ours(Variant::best())),
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

/// Weight rows per work item of a prompt: a tile that stays in L2 while
/// every activation row passes over it.
const ROWS_PER_TILE: usize = 16;

/// Runs of weight rows each thread takes in a decode matmul (see `run`).
const DECODE_RUNS_PER_THREAD: usize = 2;

/// Activation rows per kernel call: the weights' unpacking is shared by them.
const ROWS_PER_CALL: usize = 4;

/// Activation blocks: how a row is quantized, and a per-thread buffer of
/// them reused across calls (no allocation per matmul).
trait Activations: blocks::Plain + Sync + 'static {
    /// Elements per block.
    const BLOCK: usize;
    fn quantize(row: &[f32], out: &mut [Self]);
    fn with_buffer<T>(len: usize, f: impl FnOnce(&mut [Self]) -> T) -> T;
}

/// `f` on the first `len` blocks of this thread's buffer `key`.
fn with_buffer<A: Copy, T>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<A>>>,
    zero: A,
    len: usize,
    f: impl FnOnce(&mut [A]) -> T,
) -> T {
    key.with_borrow_mut(|buf| {
        buf.clear();
        buf.resize(len, zero);
        f(buf)
    })
}

impl Activations for BlockQ8K {
    const BLOCK: usize = QK_K;
    fn quantize(row: &[f32], out: &mut [Self]) {
        blocks::quantize_q8k(row, out)
    }
    fn with_buffer<T>(len: usize, f: impl FnOnce(&mut [Self]) -> T) -> T {
        thread_local!(static BUF: std::cell::RefCell<Vec<BlockQ8K>> = const { std::cell::RefCell::new(Vec::new()) });
        with_buffer(&BUF, BlockQ8K::ZERO, len, f)
    }
}

impl Activations for BlockQ8_1 {
    const BLOCK: usize = QK;
    fn quantize(row: &[f32], out: &mut [Self]) {
        blocks::quantize_q8_1(row, out)
    }
    fn with_buffer<T>(len: usize, f: impl FnOnce(&mut [Self]) -> T) -> T {
        thread_local!(static BUF: std::cell::RefCell<Vec<BlockQ8_1>> = const { std::cell::RefCell::new(Vec::new()) });
        with_buffer(&BUF, BlockQ8_1::ZERO, len, f)
    }
}

/// A weight type our kernels cover: its block, its activations' block (of
/// the same length) and its dot product.
trait Weights: blocks::Plain + Sync {
    type Act: Activations;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[Self::Act]; R]) -> [f32; R];
}

impl Weights for BlockQ2K {
    type Act = BlockQ8K;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        variant.dot_q2k(w, x)
    }
}

impl Weights for BlockQ3K {
    type Act = BlockQ8K;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        variant.dot_q3k(w, x)
    }
}

impl Weights for BlockQ4K {
    type Act = BlockQ8K;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        variant.dot_q4k(w, x)
    }
}

impl Weights for BlockQ5K {
    type Act = BlockQ8K;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        variant.dot_q5k(w, x)
    }
}

impl Weights for BlockQ6K {
    type Act = BlockQ8K;
    fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8K]; R]) -> [f32; R] {
        variant.dot_q6k(w, x)
    }
}

macro_rules! legacy_weights {
    ($($t:ty),*) => {$(
        impl Weights for $t {
            type Act = BlockQ8_1;
            fn dot<const R: usize>(variant: Variant, w: &[Self], x: [&[BlockQ8_1]; R]) -> [f32; R] {
                variant.dot_legacy(w, x)
            }
        }
    )*};
}
legacy_weights!(BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0);

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

/// `dst`, written from several threads at elements no two work items share.
struct Output {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: `Output` is only written through `set`, whose callers write
// disjoint elements (each (row, column) belongs to exactly one work item).
unsafe impl Sync for Output {}

impl Output {
    /// # Safety
    /// No other thread may write element `i` during the matmul.
    unsafe fn set(&self, i: usize, v: f32) {
        assert!(i < self.len);
        // SAFETY: in bounds (checked); exclusive by the caller's promise; the
        // matmul borrows `dst` mutably for as long as `Output` lives.
        unsafe { *self.ptr.add(i) = v }
    }
}

/// Quantizes the activations once (into a per-thread buffer reused across
/// calls), then splits the weight rows of all `P` matrices (which share the
/// input: q, k and v, or gate and up) among candle's persistent worker pool
/// in one dispatch (the one its own ops use: a second pool would spin
/// against it). `None` if the shapes do not fit `W`'s blocks.
fn run<W: Weights, const P: usize>(
    variant: Variant,
    (m, k): (usize, usize),
    lhs: &[f32],
    weights: [&[u8]; P],
    dsts: [&mut [f32]; P],
    stop: &(dyn Fn() -> bool + Sync),
) -> Option<()> {
    let block = W::Act::BLOCK;
    if m == 0 || !k.is_multiple_of(block) || lhs.len() != m.checked_mul(k)? {
        return None;
    }
    let per_row = k / block;
    // Each matrix: its blocks, its outputs (rows of weights) and where its
    // rows and tiles start in the concatenation of all of them.
    let ns: [usize; P] = std::array::from_fn(|p| dsts[p].len() / m);
    let mut w: [&[W]; P] = [&[]; P];
    for p in 0..P {
        if dsts[p].len() != m * ns[p] {
            return None;
        }
        w[p] = blocks::cast(weights[p], ns[p].checked_mul(per_row)?)?;
    }
    let outs: [Output; P] = dsts.map(|d| Output { ptr: d.as_mut_ptr(), len: d.len() });
    let starts = |size: &dyn Fn(usize) -> usize| -> [usize; P] {
        let mut at = 0;
        std::array::from_fn(|p| {
            let first = at;
            at += size(p);
            first
        })
    };
    let row_start = starts(&|p| ns[p]);
    let tile_start = starts(&|p| ns[p].div_ceil(ROWS_PER_TILE));
    let (rows_total, tiles_total) = (ns.iter().sum::<usize>(), ns.iter().map(|n| n.div_ceil(ROWS_PER_TILE)).sum());
    // The matrix that concatenated index `c` falls in, given where each starts.
    let part = |c: usize, start: &[usize; P]| (0..P).rev().find(|&p| start[p] <= c).unwrap_or(0);
    W::Act::with_buffer(m * per_row, |x| {
        for (row, out) in lhs.chunks_exact(k).zip(x.chunks_exact_mut(per_row)) {
            W::Act::quantize(row, out);
        }
        let x: &[W::Act] = x;
        let weight_row = |p: usize, j: usize| &w[p][j * per_row..(j + 1) * per_row];
        let act_row = |i: usize| &x[i * per_row..(i + 1) * per_row];
        let pool = candle_core::utils::barrier_pool();
        if m == 1 {
            // Two contiguous runs of rows per thread, from a shared cursor:
            // each thread streams its weights in long runs, which the
            // hardware prefetcher follows (the pool's default of eight small
            // chunks per thread interleaved the threads' reads, and SmolLM2's
            // decode was no faster on two threads than on one), and a thread
            // slowed by the OS still hands its second run to the other.
            let chunk = rows_total.div_ceil((pool.n_workers() + 1) * DECODE_RUNS_PER_THREAD);
            let cursor = std::sync::atomic::AtomicUsize::new(0);
            pool.execute(|_| loop {
                let first = cursor.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
                if first >= rows_total {
                    break;
                }
                for c in first..(first + chunk).min(rows_total) {
                    let p = part(c, &row_start);
                    let j = c - row_start[p];
                    let [v] = W::dot(variant, weight_row(p, j), [x]);
                    // SAFETY: output j of matrix p's only row belongs to this item.
                    unsafe { outs[p].set(j, v) };
                }
            });
            return;
        }
        pool.execute_chunked(tiles_total, |tiles| {
            for tile in tiles {
                if stop() {
                    return;
                }
                let p = part(tile, &tile_start);
                let (n, out, tile) = (ns[p], &outs[p], tile - tile_start[p]);
                let cols = tile * ROWS_PER_TILE..((tile + 1) * ROWS_PER_TILE).min(n);
                let mut i = 0;
                while i + ROWS_PER_CALL <= m {
                    let rows: [&[W::Act]; ROWS_PER_CALL] = std::array::from_fn(|r| act_row(i + r));
                    for j in cols.clone() {
                        for (r, v) in W::dot(variant, weight_row(p, j), rows).into_iter().enumerate() {
                            // SAFETY: the columns of this tile belong to this item.
                            unsafe { out.set((i + r) * n + j, v) };
                        }
                    }
                    i += ROWS_PER_CALL;
                }
                for i in i..m {
                    for j in cols.clone() {
                        let [v] = W::dot(variant, weight_row(p, j), [act_row(i)]);
                        // SAFETY: as above.
                        unsafe { out.set(i * n + j, v) };
                    }
                }
            }
        });
    });
    Some(())
}

#[cfg(test)]
mod tests;
