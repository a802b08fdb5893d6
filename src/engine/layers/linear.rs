//! A weight matrix `[out, in]` applied as `x · wᵀ`, on the weights as loaded
//! (GGUF block layout): our kernels where they cover the type, candle's
//! plain ones otherwise (and for every type with `PHI_MOBILE_KERNELS=candle`).

use super::super::error::{Error, Result};
use super::super::gguf::map::TensorBytes;
use super::super::kernels::{self, Kernels};
use super::{check, StopCheck};

pub(crate) struct Linear {
    w: TensorBytes,
    kernels: Kernels,
    /// Outputs and inputs.
    n: usize,
    k: usize,
}

impl Linear {
    pub fn new(w: TensorBytes, kernels: Kernels) -> Result<Self> {
        let (n, k) = w.dims2("a weight")?;
        Ok(Self { w, kernels, n, k })
    }

    pub fn outputs(&self) -> usize {
        self.n
    }

    pub fn inputs(&self) -> usize {
        self.k
    }

    /// `out[seq, n] = x[seq, k] · wᵀ`; gives up between tiles once `stop`
    /// says so (`Err(Cancelled)`).
    pub fn forward(&self, x: &[f32], out: &mut [f32], stop: StopCheck<'_>) -> Result<()> {
        let m = x.len() / self.k;
        if x.len() != m * self.k || out.len() != m * self.n {
            return Err(Error::Inference(format!("linear: input of {} for weight [{}, {}]", x.len(), self.n, self.k)));
        }
        let bytes = self.w.bytes();
        let mkn = (m, self.k, self.n);
        let ours = match self.kernels {
            Kernels::Ours(v) => kernels::matmul_until(v, self.w.dtype, mkn, x, bytes, out, stop).is_some(),
            Kernels::Candle => false,
        };
        if !ours {
            kernels::candle::matmul(self.w.dtype, mkn, x, bytes, out)?;
        }
        check(stop)
    }

    /// `outs[p] = x · w_pᵀ` for matrices that share the input (q, k and v;
    /// gate and up): one quantization of `x` and one dispatch where our
    /// kernels cover their (common) type, else one matrix at a time. The
    /// results are the same either way.
    pub fn forward_shared<const P: usize>(
        linears: [&Linear; P],
        x: &[f32],
        outs: [&mut [f32]; P],
        stop: StopCheck<'_>,
    ) -> Result<()> {
        let first = linears[0];
        let m = x.len() / first.k;
        let fits = linears.iter().zip(&outs).all(|(l, o)| {
            l.k == first.k && l.kernels == first.kernels && l.w.dtype == first.w.dtype && o.len() == m * l.n
        });
        if let (true, Kernels::Ours(v)) = (fits && x.len() == m * first.k, first.kernels) {
            let bytes = linears.map(|l| l.w.bytes());
            if kernels::shares_input(first.w.dtype) {
                return match kernels::matmul_shared_until(v, first.w.dtype, (m, first.k), x, bytes, outs, stop) {
                    Some(()) => check(stop),
                    None => Err(Error::Inference(format!("linear: shared input of {} does not fit", x.len()))),
                };
            }
        }
        for (l, o) in linears.iter().zip(outs) {
            l.forward(x, o, stop)?;
        }
        Ok(())
    }
}
