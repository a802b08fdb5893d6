//! A weight matrix `[out, in]` applied as `x · wᵀ`, on the weights as loaded
//! (GGUF block layout): our kernels where they cover the type, candle's
//! plain ones otherwise (and for every type with `PHI_MOBILE_KERNELS=candle`).

use std::sync::Arc;

use candle_core::quantized::QTensor;

use super::super::error::{Error, Result};
use super::super::kernels::{self, Kernels};
use super::{check, StopCheck};

pub(crate) struct Linear {
    w: Arc<QTensor>,
    kernels: Kernels,
    /// Outputs and inputs.
    n: usize,
    k: usize,
}

impl Linear {
    pub fn new(w: Arc<QTensor>, kernels: Kernels) -> candle_core::Result<Self> {
        if !w.device().is_cpu() {
            candle_core::bail!("weights must be in CPU memory");
        }
        let (n, k) = w.shape().dims2()?;
        Ok(Self { w, kernels, n, k })
    }

    pub fn outputs(&self) -> usize {
        self.n
    }

    pub fn weights(&self) -> &QTensor {
        &self.w
    }

    /// `out[seq, n] = x[seq, k] · wᵀ`; gives up between tiles once `stop`
    /// says so (`Err(Cancelled)`).
    pub fn forward(&self, x: &[f32], out: &mut [f32], stop: StopCheck<'_>) -> Result<()> {
        let m = x.len() / self.k;
        if x.len() != m * self.k || out.len() != m * self.n {
            return Err(Error::Inference(format!("linear: input of {} for weight [{}, {}]", x.len(), self.n, self.k)));
        }
        let data = self.w.data()?;
        let std::borrow::Cow::Borrowed(bytes) = data else {
            return Err(Error::Inference("quantized weights are not in CPU memory".into()));
        };
        let mkn = (m, self.k, self.n);
        let ours = match self.kernels {
            Kernels::Ours(v) => kernels::matmul_until(v, self.w.dtype(), mkn, x, bytes, out, stop).is_some(),
            Kernels::Candle => false,
        };
        if !ours {
            kernels::candle::matmul(self.w.dtype(), mkn, x, bytes, out)?;
        }
        check(stop)
    }
}
