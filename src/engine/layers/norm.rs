//! RMS norm, row by row, with candle's arithmetic (so it equals candle's
//! `RmsNorm` bit for bit, tested).

pub(crate) struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    pub fn new(weight: Vec<f32>, eps: f32) -> Self {
        Self { weight, eps }
    }

    /// `out[r] = x[r] / rms(x[r]) · weight` for each row of `x`.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        let n = self.weight.len();
        for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let sum2: f32 = row.iter().map(|v| v * v).sum();
            let m = (sum2 / n as f32 + self.eps).sqrt();
            for ((d, s), w) in dst.iter_mut().zip(row).zip(&self.weight) {
                *d = *s / m * *w;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module, Tensor};

    #[test]
    fn equals_candles_rms_norm() {
        let (rows, n) = (40, 72);
        let x: Vec<f32> = (0..rows * n).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
        let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 9) as f32 / 8.0).collect();
        let mut ours = vec![0f32; x.len()];
        RmsNorm::new(w.clone(), 1e-5).forward(&x, &mut ours);
        let theirs = candle_nn::RmsNorm::new(Tensor::new(w, &Device::Cpu).unwrap(), 1e-5)
            .forward(&Tensor::from_vec(x, (rows, n), &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(ours, theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
}
