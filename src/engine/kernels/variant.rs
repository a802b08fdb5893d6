//! The kernel variants, which of them this CPU runs, and where a variant
//! becomes its kernel: [`dispatch`] for one weight row, `pair` for two.

use std::sync::OnceLock;

#[cfg(target_arch = "aarch64")]
use super::arm;
use super::blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, BlockQ8_1, Legacy};
use super::scalar;
#[cfg(target_arch = "x86_64")]
use super::{avx512, x86};

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
    /// dotprod with ARMv8.6's `smmla` (i8mm) for a prompt's pairs of
    /// weight rows: Cortex-A510/A710/X2 and later, Apple M2/A15 and later.
    I8mm,
}

impl Variant {
    pub const ALL: [Variant; 7] = [
        Variant::Scalar,
        Variant::Avx2,
        Variant::Avx512,
        Variant::Avx512Vnni,
        Variant::Neon,
        Variant::Dotprod,
        Variant::I8mm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Scalar => "scalar",
            Variant::Avx2 => "avx2",
            Variant::Avx512 => "avx512",
            Variant::Avx512Vnni => "avx512vnni",
            Variant::Neon => "neon",
            Variant::Dotprod => "dotprod",
            Variant::I8mm => "i8mm",
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
            #[cfg(target_arch = "aarch64")]
            Variant::I8mm => Variant::Dotprod.supported() && std::arch::is_aarch64_feature_detected!("i8mm"),
            #[allow(unreachable_patterns)] // each architecture matches its own above
            _ => false,
        }
    }

    /// The fastest variant this CPU runs.
    pub fn best() -> Self {
        [Variant::I8mm, Variant::Dotprod, Variant::Neon, Variant::Avx512Vnni, Variant::Avx512, Variant::Avx2]
            .into_iter()
            .find(|v| v.supported())
            .unwrap_or(Variant::Scalar)
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Puts Q8_K activations in the order this variant's Q4_K and Q5_K
    /// kernels take them (AVX-512's: see `avx512::arrange`), once per
    /// matmul rather than once per weight row.
    pub fn arrange_q4k(self, x: &mut [BlockQ8K]) {
        #[cfg(target_arch = "x86_64")]
        if matches!(self, Variant::Avx512 | Variant::Avx512Vnni) {
            avx512::arrange(x)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = x;
    }

    /// `Σ w·x[r]` over one row of Q4_K blocks, for `R` activation rows of
    /// Q8_K blocks as [`Variant::arrange_q4k`] leaves them.
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

    /// `Σ w·x[r]` over one row of Q5_K blocks, for `R` activation rows as
    /// [`Variant::arrange_q4k`] leaves them.
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

/// Whether both weight rows and every activation row have the same number of
/// blocks, as a pair kernel reads them.
fn same_lengths<W, A>(w: [&[W]; 2], x: &[&[A]]) -> bool {
    w[1].len() == w[0].len() && x.iter().all(|x| x.len() == w[0].len())
}

/// Two weight rows against `R` activation rows: `[row 0's dots, row 1's]`,
/// exactly the two rows' single-row `dot_*` calls. The one place a pair
/// becomes a kernel: i8mm computes them together when `R` is even (a
/// prompt's tile), AVX2 and AVX-512 for Q4_K and Q5_K (sharing the activations'
/// work); every other variant makes the two calls.
macro_rules! pair {
    ($v:expr, $w:expr, $x:expr, $mmla:path, $single:ident $(, $avx2:path, $bw:path, $vnni:path)?) => {{
        let (w, x) = ($w, $x);
        assert!(same_lengths(w, &x));
        match $v {
            #[cfg(target_arch = "aarch64")]
            Variant::I8mm if x.len().is_multiple_of(2) => {
                // SAFETY: I8mm is only used once `supported()` said the CPU
                // has i8mm; R is even and the lengths are checked above.
                unsafe { $mmla(w, x) }
            }
            $(
                #[cfg(target_arch = "x86_64")]
                // SAFETY (these three): as above, for each one's features.
                Variant::Avx2 => unsafe { $avx2(w, x) },
                #[cfg(target_arch = "x86_64")]
                Variant::Avx512 => unsafe { $bw(w, x) },
                #[cfg(target_arch = "x86_64")]
                Variant::Avx512Vnni => unsafe { $vnni(w, x) },
            )?
            v => w.map(|w| v.$single(w, x)),
        }
    }};
}

impl Variant {
    /// Whether a prompt's tile calls the `dot_pair_*` methods for a weight
    /// type: only where the variant computes two weight rows at once (i8mm:
    /// every K-quant and legacy type; AVX2 and AVX-512: the types whose
    /// `pair!` has x86 kernels, `x86_pairs`). Elsewhere a pair would be two
    /// single-row calls behind one more dispatch.
    pub fn pairs_weight_rows(self, x86_pairs: bool) -> bool {
        match self {
            Variant::I8mm => true,
            Variant::Avx2 | Variant::Avx512 | Variant::Avx512Vnni => x86_pairs,
            _ => false,
        }
    }

    pub fn dot_pair_q2k<const R: usize>(self, w: [&[BlockQ2K]; 2], x: [&[BlockQ8K]; R]) -> [[f32; R]; 2] {
        pair!(self, w, x, arm::mmla::dot_pair_q2k, dot_q2k)
    }

    pub fn dot_pair_q3k<const R: usize>(self, w: [&[BlockQ3K]; 2], x: [&[BlockQ8K]; R]) -> [[f32; R]; 2] {
        pair!(self, w, x, arm::mmla::dot_pair_q3k, dot_q3k)
    }

    pub fn dot_pair_q4k<const R: usize>(self, w: [&[BlockQ4K]; 2], x: [&[BlockQ8K]; R]) -> [[f32; R]; 2] {
        pair!(
            self,
            w,
            x,
            arm::mmla::dot_pair_q4k,
            dot_q4k,
            x86::dot_pair_q4k::<BlockQ4K, R>,
            avx512::dot_pair_q4k_bw,
            avx512::dot_pair_q4k_vnni
        )
    }

    pub fn dot_pair_q5k<const R: usize>(self, w: [&[BlockQ5K]; 2], x: [&[BlockQ8K]; R]) -> [[f32; R]; 2] {
        pair!(
            self,
            w,
            x,
            arm::mmla::dot_pair_q5k,
            dot_q5k,
            x86::dot_pair_q4k::<BlockQ5K, R>,
            avx512::dot_pair_q5k_bw,
            avx512::dot_pair_q5k_vnni
        )
    }

    pub fn dot_pair_q6k<const R: usize>(self, w: [&[BlockQ6K]; 2], x: [&[BlockQ8K]; R]) -> [[f32; R]; 2] {
        pair!(self, w, x, arm::mmla::dot_pair_q6k, dot_q6k)
    }

    /// A 32-element type's two rows, against Q8_1 activations.
    pub fn dot_pair_legacy<W: Legacy, const R: usize>(self, w: [&[W]; 2], x: [&[BlockQ8_1]; R]) -> [[f32; R]; 2] {
        pair!(self, w, x, arm::mmla::dot_pair_legacy, dot_legacy)
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
            // One activation row at a time, i8mm has nothing to pair: `sdot`.
            #[cfg(target_arch = "aarch64")]
            Variant::Dotprod | Variant::I8mm => unsafe { $dotprod(w, x) },
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
