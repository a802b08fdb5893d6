//! candle's plain kernels on weights in their GGUF layout: the fallback for
//! the types ours do not cover yet (Q2_K, Q3_K), the baseline the
//! benchmark compares against (`PHI_MOBILE_KERNELS=candle`), and the
//! dequantization of embedding rows. These are `k_quants::matmul`, the
//! kernels candle runs when it does not repack a weight (its `QMatMul`
//! keeps a repacked second copy of each weight on x86 and dotprod CPUs).

use candle_core::quantized::k_quants::{self, GgmlType};
use candle_core::quantized::GgmlDType;

/// `bytes` as candle's blocks of type `T`, if size and alignment allow.
fn blocks<T: GgmlType>(bytes: &[u8]) -> candle_core::Result<&[T]> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size) || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        candle_core::bail!("quantized weights have an unexpected layout");
    }
    // SAFETY: size and alignment are checked above; candle's blocks are
    // `repr(C)` structs of integers and f16s (valid for any bytes), which is
    // how candle itself reads a GGUF's tensor data; the slice borrows `bytes`.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) })
}

/// Calls `$f::<BlockType>` for the dtype's block type.
macro_rules! by_type {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {{
        use candle_core::quantized::k_quants::*;
        match $dtype {
            GgmlDType::F32 => $f::<f32>($($arg),*),
            GgmlDType::F16 => $f::<half::f16>($($arg),*),
            GgmlDType::BF16 => $f::<half::bf16>($($arg),*),
            GgmlDType::Q4_0 => $f::<BlockQ4_0>($($arg),*),
            GgmlDType::Q4_1 => $f::<BlockQ4_1>($($arg),*),
            GgmlDType::Q5_0 => $f::<BlockQ5_0>($($arg),*),
            GgmlDType::Q5_1 => $f::<BlockQ5_1>($($arg),*),
            GgmlDType::Q8_0 => $f::<BlockQ8_0>($($arg),*),
            GgmlDType::Q2K => $f::<BlockQ2K>($($arg),*),
            GgmlDType::Q3K => $f::<BlockQ3K>($($arg),*),
            GgmlDType::Q4K => $f::<BlockQ4K>($($arg),*),
            GgmlDType::Q5K => $f::<BlockQ5K>($($arg),*),
            GgmlDType::Q6K => $f::<BlockQ6K>($($arg),*),
            other => candle_core::bail!("weight type {other:?} is not supported"),
        }
    }};
}

/// `dst = lhs · wᵀ` with candle's kernel for `dtype`.
pub fn matmul(
    dtype: GgmlDType,
    mkn: (usize, usize, usize),
    lhs: &[f32],
    weights: &[u8],
    dst: &mut [f32],
) -> candle_core::Result<()> {
    fn run<T: GgmlType>(
        mkn: (usize, usize, usize),
        lhs: &[f32],
        weights: &[u8],
        dst: &mut [f32],
    ) -> candle_core::Result<()> {
        k_quants::matmul::<T>(mkn, lhs, blocks::<T>(weights)?, dst)
    }
    by_type!(dtype, run, mkn, lhs, weights, dst)
}

/// Dequantizes rows `ids` of a `[rows, width]` weight into `out`
/// (`ids.len() × width`). An id past the rows is an error.
pub fn rows(dtype: GgmlDType, weights: &[u8], width: usize, ids: &[u32], out: &mut [f32]) -> candle_core::Result<()> {
    fn run<T: GgmlType>(weights: &[u8], width: usize, ids: &[u32], out: &mut [f32]) -> candle_core::Result<()> {
        let blocks = blocks::<T>(weights)?;
        if !width.is_multiple_of(T::BLCK_SIZE) || out.len() != ids.len() * width {
            candle_core::bail!("embedding: rows of {width} do not fit the output");
        }
        let per_row = width / T::BLCK_SIZE;
        for (&id, row) in ids.iter().zip(out.chunks_exact_mut(width)) {
            let Some(src) = blocks.get(id as usize * per_row..(id as usize + 1) * per_row) else {
                candle_core::bail!("token id {id} is outside the embedding");
            };
            T::to_float(src, row);
        }
        Ok(())
    }
    by_type!(dtype, run, weights, width, ids, out)
}
